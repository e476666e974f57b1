"""The chunk record shared by every chunker, the index and the API."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

ChunkKind = Literal["code", "text"]


@dataclass(frozen=True, slots=True)
class Chunk:
    """A contiguous span of a document: ``document_text[start:end] == text``.

    ``chunk_id`` is the chunk's ordinal inside its document (0, 1, ...). ``symbol`` is the enclosing
    definition path for code (``Class.method``), ``None`` for text or top-level code. ``context`` is text
    embedded before the chunk but not part of its span (the signature of the function a body piece belongs
    to; see ``chunking.context``). ``n_tokens`` is the length of :attr:`embed_text` in the embedder's
    tokenizer, special tokens included.
    """

    doc_id: str
    chunk_id: int
    start: int
    end: int
    text: str
    n_tokens: int
    kind: ChunkKind
    language: str | None = None
    symbol: str | None = None
    context: str = ""

    @property
    def embed_text(self) -> str:
        """What the embedder encodes for this chunk: ``context``, a newline, then ``text``."""
        return f"{self.context}\n{self.text}" if self.context else self.text


@dataclass(frozen=True, slots=True)
class Span:
    """A half-open character range with an optional symbol path, produced before ids are assigned."""

    start: int
    end: int
    symbol: str | None = None


def spans_to_chunks(
    doc_id: str,
    text: str,
    spans: list[Span],
    counts: list[int],
    kind: ChunkKind,
    language: str | None,
) -> list[Chunk]:
    """Number spans in order and attach their text; ``counts[i]`` is the token count of span ``i``."""
    return [
        Chunk(doc_id, i, s.start, s.end, text[s.start : s.end], n, kind, language, s.symbol)
        for i, (s, n) in enumerate(zip(spans, counts, strict=True))
    ]
