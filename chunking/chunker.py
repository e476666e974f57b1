"""One entry point for any document: picks the code or text chunker from the language or file path."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace

from longvec.chunking.budget import TokenCounter
from longvec.chunking.code import CodeChunker
from longvec.chunking.context import context_reserve, with_context
from longvec.chunking.languages import CODE_LANGUAGES, KNOWN_CODE_LANGUAGES, language_for_path, normalize_language
from longvec.chunking.text import PIECE_CHARS, TextChunker
from longvec.chunking.types import Chunk

# Bump whenever a change to any chunker changes the chunks it makes for some input: stored documents are
# re-chunked when they are indexed again (their content hash includes this).
CHUNKER_VERSION = "5"
# A chunk with fewer content tokens than this (a closing bracket, a lone ``</UL>``, ``import os``) is a fragment:
# embedded alone it carries no retrievable meaning, yet under max-sim it can outrank a document's real content.
# Under small budgets the bar is a sixteenth of the budget instead (see ``fragment_tokens``).
MIN_CHUNK_TOKENS = 8


@dataclass(frozen=True)
class Chunker:
    """Routes a document to the right chunker.

    An explicit ``language`` wins over the one implied by ``path``'s extension. Languages with a bundled
    tree-sitter grammar go to ``CodeChunker``; other known code languages to the text chunker with kind
    ``"code"``; everything else to the text chunker with kind ``"text"``. ``overlap_tokens`` > 0 repeats
    up to that many tokens of a chunk's end at the start of the next: whole segments in text, and in code whole
    lines, only between pieces of one split definition (AST chunks of different definitions never overlap;
    code is then packed that many tokens short, leaving the overlap room). ``code_context`` gives AST chunks
    the signatures of the definitions they are part of as embedded context (``chunking.context``); their spans
    are then packed to ``max_tokens - context_reserve(max_tokens)`` tokens, leaving the context room;
    ``path_context`` puts the ``path`` given to :meth:`chunk` first in that context.

    ``split_tokens`` (below ``max_tokens``) is the budget of a document that does not fit one chunk of
    ``max_tokens``: such a document is cut again, into chunks of at most ``split_tokens``. A document that fits
    stays whole (one vector of all of it); a long one is searched by pieces small enough to say one thing each.
    """

    counter: TokenCounter
    max_tokens: int
    overlap_tokens: int = 0
    code_context: bool = True
    path_context: bool = False
    split_tokens: int | None = None

    def __post_init__(self) -> None:
        # Validate eagerly with the same messages as the chunkers themselves.
        TextChunker(self.counter, self.max_tokens, self.overlap_tokens)
        if self.split_tokens is not None:
            if not self.split_tokens < self.max_tokens:
                raise ValueError(f"split_tokens ({self.split_tokens}) must be below max_tokens ({self.max_tokens})")
            TextChunker(self.counter, self.split_tokens, self.overlap_tokens)

    def chunk(self, doc_id: str, text: str, *, path: str | None = None, language: str | None = None) -> list[Chunk]:
        """Chunks of ``text``; ``language`` (``py`` -> ``python``) or else ``path`` picks the chunker."""
        lang = normalize_language(language) if language else (language_for_path(path) if path else None)
        chunks = self._chunk(doc_id, text, path, lang, self.max_tokens)
        if self.split_tokens is not None and len(chunks) > 1:
            chunks = self._chunk(doc_id, text, path, lang, self.split_tokens)
        return chunks

    def _chunk(self, doc_id: str, text: str, path: str | None, lang: str | None, max_tokens: int) -> list[Chunk]:
        if lang in CODE_LANGUAGES:
            budget = max_tokens - (context_reserve(max_tokens) if self.code_context else 0)
            chunks = CodeChunker(self.counter, budget - self.overlap_tokens).chunk(doc_id, text, lang)
            if self.overlap_tokens:
                chunks = overlap_pieces(chunks, text, self.counter, self.overlap_tokens, budget)
        else:
            text_chunker = TextChunker(self.counter, max_tokens, self.overlap_tokens)
            kind = "code" if lang in KNOWN_CODE_LANGUAGES else "text"
            chunks = text_chunker.chunk(doc_id, text, kind=kind, language=lang)
        chunks = merge_fragments(chunks, text, self.counter, max_tokens)
        if self.code_context and lang in CODE_LANGUAGES:
            chunks = with_context(chunks, self.counter, max_tokens, path if self.path_context else None)
        return chunks


def merge_fragments(chunks: list[Chunk], text: str, counter: TokenCounter, max_tokens: int) -> list[Chunk]:
    """``chunks`` with every fragment (under ``fragment_tokens(max_tokens)`` content tokens) merged into a
    neighbour.

    A fragment joins the chunk before it, even past ``max_tokens``: the packer only cut it off because it did
    not fit, and a model truncates from the end, so at most the fragment's own few tokens go unseen and none
    of the previous chunk's; never by a fragment's worth or more, so fragments in a row do not pile up. A
    leading fragment joins the next chunk only if both fit in ``max_tokens`` (there, truncation would cut real
    content); otherwise a fragment stays, as does a document that is one fragment. No join spans more than
    ``PIECE_CHARS`` characters: the packer's own bound, and what keeps a run of fragments of few tokens and many
    characters each (megabytes of one unknown "word") from being re-counted as one ever longer text.
    """
    chunks, out, least = list(chunks), [], fragment_tokens(max_tokens)
    for i, chunk in enumerate(chunks):
        if chunk.n_tokens - counter.n_special >= least:
            out.append(chunk)
        elif (
            out
            and chunk.end - out[-1].start <= PIECE_CHARS
            and (joined := _joined(out[-1], out[-1].start, chunk.end, text, counter)).n_tokens < max_tokens + least
        ):
            out[-1] = joined  # past the budget by less than one fragment: several in a row do not pile up
        elif (
            i + 1 < len(chunks)
            and chunks[i + 1].end - chunk.start <= PIECE_CHARS
            and (merged := _joined(chunks[i + 1], chunk.start, chunks[i + 1].end, text, counter)).n_tokens <= max_tokens
        ):
            chunks[i + 1] = merged
        else:
            out.append(chunk)
    return [replace(c, chunk_id=k) for k, c in enumerate(out)] if len(out) < len(chunks) else out


def overlap_pieces(
    chunks: list[Chunk], text: str, counter: TokenCounter, overlap_tokens: int, max_tokens: int
) -> list[Chunk]:
    """``chunks`` of one code document where each piece of a split definition (same symbol as the chunk before
    it) also starts with the last whole lines of the piece before: at most ``overlap_tokens`` content tokens
    of them, and no more than keep the chunk within ``max_tokens``. The chunk's ``start`` moves back over them."""
    out = list(chunks)
    for i in range(1, len(out)):
        prev, chunk = chunks[i - 1], out[i]
        if chunk.symbol is None or chunk.symbol != prev.symbol:
            continue
        start = chunk.start
        for line_start in _line_starts_back(text, prev.start, chunk.start):
            carried = counter.count(text[line_start : chunk.start]) - counter.n_special
            if carried > overlap_tokens or counter.count(text[line_start : chunk.end]) > max_tokens:
                break
            start = line_start
        if start < chunk.start:
            out[i] = _joined(chunk, start, chunk.end, text, counter)
    return out


def _line_starts_back(text: str, lo: int, hi: int) -> Iterator[int]:
    """Where each non-blank line before ``hi`` (and after ``lo``) starts, its indentation skipped, nearest
    ``hi`` first; the line ``hi`` falls in counts from its start to ``hi``."""
    end, pos = hi, text.rfind("\n", lo, hi)
    while pos >= lo:
        line = text[pos + 1 : end]
        if line.strip():
            yield pos + 1 + len(line) - len(line.lstrip())
        end, pos = pos, text.rfind("\n", lo, pos)


def fragment_tokens(max_tokens: int) -> int:
    """The fewest content tokens a chunk has without being a fragment."""
    return min(MIN_CHUNK_TOKENS, max_tokens // 16)


def _joined(chunk: Chunk, start: int, end: int, text: str, counter: TokenCounter) -> Chunk:
    return replace(chunk, start=start, end=end, text=text[start:end], n_tokens=counter.count(text[start:end]))
