"""The records of the collection layer: input documents, search hits, add results."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Any

from longvec.chunking import language_for_path
from longvec.index.errors import InvalidInputError

# The symbol of a document's own vector (a collection's ``doc_vector``): no code symbol can be spelled so.
DOC_SYMBOL = "<document>"


def check_utf8(text: str, what: str) -> None:
    """Reject strings that cannot be encoded as UTF-8 (lone surrogates), which the tokenizer cannot take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"{what} is not valid Unicode ({exc.reason} at position {exc.start})") from None


@dataclass(frozen=True)
class Document:
    """An input document. ``language`` overrides detection from the extension of ``path`` (else ``doc_id``)."""

    doc_id: str
    text: str
    path: str | None = None
    language: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.doc_id, str) or not self.doc_id:
            raise InvalidInputError("doc_id must be a non-empty string")
        if not isinstance(self.text, str):
            raise InvalidInputError(f"text of {self.doc_id!r} must be a string")
        if not isinstance(self.metadata, dict):
            raise InvalidInputError(f"metadata of {self.doc_id!r} must be an object")
        check_utf8(self.doc_id, "doc_id")
        check_utf8(self.text, f"text of {self.doc_id!r}")
        try:
            json.dumps(self.metadata)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"metadata of {self.doc_id!r} is not JSON-serialisable: {exc}") from None

    @property
    def effective_language(self) -> str | None:
        return self.language or language_for_path(self.path or self.doc_id)

    @property
    def source_path(self) -> str | None:
        """The document's file path: ``path``, else ``doc_id`` where it names a file of a known language
        (``src/app.py``, as directory walks and many JSONL exports name documents)."""
        return self.path or (self.doc_id if language_for_path(self.doc_id) else None)

    def content_hash(self, chunker_version: str) -> str:
        """What decides re-embedding: the text, the language it is chunked as and the chunker's version
        (so re-indexing after a chunker change re-chunks the document instead of skipping it)."""
        h = hashlib.sha256(f"{chunker_version}\0{self.effective_language or ''}\0".encode())
        h.update(self.text.encode("utf-8"))
        return h.hexdigest()


@dataclass(frozen=True)
class ChunkHit:
    chunk_id: int
    start: int
    end: int
    score: float
    symbol: str | None = None


@dataclass(frozen=True)
class Hit:
    """A document's score (its best chunk's) and its best chunks' spans, best first."""

    doc_id: str
    score: float
    chunks: list[ChunkHit]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form shared by the CLI and the REST API."""
        return asdict(self)


@dataclass
class AddResult:
    """Counts of one ``add``: ``empty`` documents (no text but whitespace) are skipped, not stored."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    empty: int = 0
    chunks: int = 0
    tokens: int = 0

    def merge(self, other: AddResult) -> None:
        for name in ("added", "updated", "unchanged", "empty", "chunks", "tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
