"""One entry point for any document: picks the code or text chunker from the language or file path."""

from __future__ import annotations

from dataclasses import dataclass, replace

from longvec.chunking.budget import TokenCounter
from longvec.chunking.code import CodeChunker
from longvec.chunking.context import context_reserve, with_context
from longvec.chunking.languages import CODE_LANGUAGES, KNOWN_CODE_LANGUAGES, language_for_path, normalize_language
from longvec.chunking.text import TextChunker
from longvec.chunking.types import Chunk

# Bump whenever a change to any chunker changes the chunks it makes for some input: stored documents are
# re-chunked when they are indexed again (their content hash includes this).
CHUNKER_VERSION = "3"
# A chunk with fewer content tokens than this (a closing bracket, a lone ``</UL>``, ``import os``) is a fragment:
# embedded alone it carries no retrievable meaning, yet under max-sim it can outrank a document's real content.
# Under small budgets the bar is a sixteenth of the budget instead (see ``fragment_tokens``).
MIN_CHUNK_TOKENS = 8


@dataclass(frozen=True)
class Chunker:
    """Routes a document to the right chunker.

    An explicit ``language`` wins over the one implied by ``path``'s extension. Languages with a bundled
    tree-sitter grammar go to ``CodeChunker``; other known code languages to the text chunker with kind
    ``"code"``; everything else to the text chunker with kind ``"text"``. ``overlap_tokens`` applies to
    text chunking only (AST chunks never overlap). ``code_context`` gives AST chunks the signatures of the
    definitions they are part of as embedded context (``chunking.context``); their spans are then packed to
    ``max_tokens - context_reserve(max_tokens)`` tokens, leaving the context room.
    """

    counter: TokenCounter
    max_tokens: int
    overlap_tokens: int = 0
    code_context: bool = True

    def __post_init__(self) -> None:
        # Validate eagerly with the same messages as the chunkers themselves.
        TextChunker(self.counter, self.max_tokens, self.overlap_tokens)

    def chunk(self, doc_id: str, text: str, *, path: str | None = None, language: str | None = None) -> list[Chunk]:
        """Chunks of ``text``; ``language`` (``py`` -> ``python``) or else ``path`` picks the chunker."""
        lang = normalize_language(language) if language else (language_for_path(path) if path else None)
        if lang in CODE_LANGUAGES:
            budget = self.max_tokens - (context_reserve(self.max_tokens) if self.code_context else 0)
            chunks = CodeChunker(self.counter, budget).chunk(doc_id, text, lang)
        else:
            text_chunker = TextChunker(self.counter, self.max_tokens, self.overlap_tokens)
            kind = "code" if lang in KNOWN_CODE_LANGUAGES else "text"
            chunks = text_chunker.chunk(doc_id, text, kind=kind, language=lang)
        chunks = merge_fragments(chunks, text, self.counter, self.max_tokens)
        if self.code_context and lang in CODE_LANGUAGES:
            chunks = with_context(chunks, self.counter, self.max_tokens)
        return chunks


def merge_fragments(chunks: list[Chunk], text: str, counter: TokenCounter, max_tokens: int) -> list[Chunk]:
    """``chunks`` with every fragment (under ``fragment_tokens(max_tokens)`` content tokens) merged into a
    neighbour.

    A fragment joins the chunk before it, even past ``max_tokens``: the packer only cut it off because it did
    not fit, and a model truncates from the end, so at most the fragment's own few tokens go unseen and none
    of the previous chunk's; never by a fragment's worth or more, so fragments in a row do not pile up. A
    leading fragment joins the next chunk only if both fit in ``max_tokens`` (there, truncation would cut real
    content); otherwise a fragment stays, as does a document that is one fragment.
    """
    chunks, out, least = list(chunks), [], fragment_tokens(max_tokens)
    for i, chunk in enumerate(chunks):
        if chunk.n_tokens - counter.n_special >= least:
            out.append(chunk)
        elif (
            out and (joined := _joined(out[-1], out[-1].start, chunk.end, text, counter)).n_tokens < max_tokens + least
        ):
            out[-1] = joined  # past the budget by less than one fragment: several in a row do not pile up
        elif (
            i + 1 < len(chunks)
            and (merged := _joined(chunks[i + 1], chunk.start, chunks[i + 1].end, text, counter)).n_tokens <= max_tokens
        ):
            chunks[i + 1] = merged
        else:
            out.append(chunk)
    return [replace(c, chunk_id=k) for k, c in enumerate(out)] if len(out) < len(chunks) else out


def fragment_tokens(max_tokens: int) -> int:
    """The fewest content tokens a chunk has without being a fragment."""
    return min(MIN_CHUNK_TOKENS, max_tokens // 16)


def _joined(chunk: Chunk, start: int, end: int, text: str, counter: TokenCounter) -> Chunk:
    return replace(chunk, start=start, end=end, text=text[start:end], n_tokens=counter.count(text[start:end]))
