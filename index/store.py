"""SQLite store of documents, chunks and their vectors: the collection's source of truth.

Every write is one transaction (WAL journal, ``synchronous=FULL``): after a crash a document is either
fully present, with all its chunks and vectors, or absent. Chunk row ids come from AUTOINCREMENT, so an
id is never reused and can key the FAISS index.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from chunking.types import Chunk

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    path TEXT,
    language TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    text TEXT NOT NULL,
    n_chunks INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    chunk_id INTEGER NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL,
    kind TEXT NOT NULL,
    language TEXT,
    symbol TEXT,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(doc_id);
"""


@dataclass(frozen=True)
class StoredDocument:
    doc_id: str
    text: str
    content_hash: str
    path: str | None
    language: str | None
    metadata: dict[str, Any]
    n_chunks: int
    n_tokens: int


@dataclass(frozen=True)
class ChunkRow:
    id: int
    doc_id: str
    chunk_id: int
    start: int
    end: int
    symbol: str | None


@dataclass(frozen=True)
class DocumentWrite:
    """One document with its chunks and their vectors (row ``i`` of ``vectors`` belongs to ``chunks[i]``)."""

    doc_id: str
    text: str
    content_hash: str
    path: str | None
    language: str | None
    metadata: dict[str, Any]
    chunks: Sequence[Chunk]
    vectors: np.ndarray


class Store:
    """Documents, chunks and vectors in one SQLite file. Not thread-safe: callers hold the collection lock."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        uri = f"file:{path}?mode={'ro' if readonly else 'rwc'}"
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA foreign_keys = ON")
        if not readonly:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error); bumps the generation counter."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
            self._db.execute(
                "INSERT INTO meta(key, value) VALUES ('generation', '1') "
                "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + 1"
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def generation(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        return int(row[0]) if row else 0

    def hashes(self, doc_ids: Sequence[str]) -> dict[str, tuple[str, str | None, str | None, str]]:
        """``doc_id -> (content_hash, path, language, metadata_json)`` for the stored ones among ``doc_ids``."""
        out = {}
        for i in range(0, len(doc_ids), 500):
            part = list(doc_ids[i : i + 500])
            marks = ",".join("?" * len(part))
            sql = f"SELECT doc_id, content_hash, path, language, metadata FROM documents WHERE doc_id IN ({marks})"
            for doc_id, h, path, lang, meta in self._db.execute(sql, part):
                out[doc_id] = (h, path, lang, meta)
        return out

    def chunk_ids(self, doc_ids: Sequence[str]) -> list[int]:
        ids: list[int] = []
        for i in range(0, len(doc_ids), 500):
            part = list(doc_ids[i : i + 500])
            marks = ",".join("?" * len(part))
            ids += [r[0] for r in self._db.execute(f"SELECT id FROM chunks WHERE doc_id IN ({marks})", part)]
        return ids

    def write(self, db: sqlite3.Connection, doc: DocumentWrite) -> list[int]:
        """Insert ``doc`` (inside an open transaction, after :meth:`delete`); returns the new chunk row ids."""
        db.execute(
            "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                doc.doc_id,
                doc.content_hash,
                doc.path,
                doc.language,
                json.dumps(doc.metadata, sort_keys=True),
                doc.text,
                len(doc.chunks),
                sum(c.n_tokens for c in doc.chunks),
            ),
        )
        ids = []
        vectors = np.ascontiguousarray(doc.vectors, dtype=np.float32)
        for c, v in zip(doc.chunks, vectors, strict=True):
            cur = db.execute(
                'INSERT INTO chunks (doc_id, chunk_id, start, "end", n_tokens, kind, language, symbol, vector) '
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    doc.doc_id,
                    c.chunk_id,
                    c.start,
                    c.end,
                    c.n_tokens,
                    c.kind,
                    c.language,
                    c.symbol,
                    v.tobytes(),
                ),
            )
            ids.append(int(cur.lastrowid))  # type: ignore[arg-type]
        return ids

    def update_fields(self, db: sqlite3.Connection, doc_id: str, path: str | None, metadata: dict[str, Any]) -> None:
        db.execute(
            "UPDATE documents SET path = ?, metadata = ? WHERE doc_id = ?",
            (path, json.dumps(metadata, sort_keys=True), doc_id),
        )

    def delete(self, db: sqlite3.Connection, doc_id: str) -> list[int]:
        """Delete ``doc_id`` and its chunks (inside an open transaction); returns the removed chunk ids."""
        ids = [r[0] for r in db.execute("SELECT id FROM chunks WHERE doc_id = ?", (doc_id,))]
        db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
        return ids

    def document(self, doc_id: str) -> StoredDocument | None:
        row = self._db.execute(
            "SELECT doc_id, text, content_hash, path, language, metadata, n_chunks, n_tokens "
            "FROM documents WHERE doc_id = ?",
            (doc_id,),
        ).fetchone()
        if row is None:
            return None
        return StoredDocument(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7])

    def chunk_rows(self, ids: Sequence[int]) -> dict[int, ChunkRow]:
        out = {}
        for i in range(0, len(ids), 500):
            part = [int(x) for x in ids[i : i + 500]]
            marks = ",".join("?" * len(part))
            sql = f'SELECT id, doc_id, chunk_id, start, "end", symbol FROM chunks WHERE id IN ({marks})'
            for row in self._db.execute(sql, part):
                out[row[0]] = ChunkRow(*row)
        return out

    def all_vectors(self, dim: int) -> tuple[np.ndarray, np.ndarray]:
        """``(ids, vectors)`` of every chunk, in id order, for rebuilding the vector index."""
        ids, _, _, vectors = self.chunk_table(dim)
        return ids, vectors

    def chunk_table(self, dim: int) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
        """``(id, doc_id, n_tokens, vector)`` of every chunk as columns, in id order."""
        rows = self._db.execute("SELECT id, doc_id, n_tokens, vector FROM chunks ORDER BY id").fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        tokens = np.fromiter((r[2] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(r[3] for r in rows), dtype=np.float32).reshape(len(rows), dim)
        return ids, [r[1] for r in rows], tokens, vectors

    def counts(self) -> dict[str, int]:
        docs, tokens = self._db.execute("SELECT COUNT(*), COALESCE(SUM(n_tokens), 0) FROM documents").fetchone()
        (chunks,) = self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()
        return {"documents": int(docs), "chunks": int(chunks), "tokens": int(tokens)}
