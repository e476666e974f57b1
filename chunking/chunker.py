"""One entry point for any document: picks the code or text chunker from the language or file path."""

from __future__ import annotations

from dataclasses import dataclass

from chunking.budget import TokenCounter
from chunking.code import CodeChunker
from chunking.languages import CODE_LANGUAGES, KNOWN_CODE_LANGUAGES, language_for_path, normalize_language
from chunking.text import TextChunker
from chunking.types import Chunk

# Bump whenever a change to any chunker changes the chunks it makes for some input: stored documents are
# re-chunked when they are indexed again (their content hash includes this).
CHUNKER_VERSION = "2"


@dataclass(frozen=True)
class Chunker:
    """Routes a document to the right chunker.

    An explicit ``language`` wins over the one implied by ``path``'s extension. Languages with a bundled
    tree-sitter grammar go to ``CodeChunker``; other known code languages to the text chunker with kind
    ``"code"``; everything else to the text chunker with kind ``"text"``. ``overlap_tokens`` applies to
    text chunking only (AST chunks never overlap).
    """

    counter: TokenCounter
    max_tokens: int
    overlap_tokens: int = 0

    def __post_init__(self) -> None:
        # Validate eagerly with the same messages as the chunkers themselves.
        TextChunker(self.counter, self.max_tokens, self.overlap_tokens)

    def chunk(self, doc_id: str, text: str, *, path: str | None = None, language: str | None = None) -> list[Chunk]:
        """Chunks of ``text``; ``language`` (``py`` -> ``python``) or else ``path`` picks the chunker."""
        lang = normalize_language(language) if language else (language_for_path(path) if path else None)
        if lang in CODE_LANGUAGES:
            return CodeChunker(self.counter, self.max_tokens).chunk(doc_id, text, lang)
        text_chunker = TextChunker(self.counter, self.max_tokens, self.overlap_tokens)
        kind = "code" if lang in KNOWN_CODE_LANGUAGES else "text"
        return text_chunker.chunk(doc_id, text, kind=kind, language=lang)
