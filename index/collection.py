"""A searchable collection on disk: the add / delete / search use cases over store, vectors and embedder.

Layout of a collection directory::

    manifest.json    model, dims, strategy, chunker settings, versions (checked on every open)
    store.sqlite     documents, chunks, vectors (source of truth; one transaction per write batch)
    vectors.faiss    FAISS index over chunk vectors (+ vectors.json: the store generation it reflects)
    writer.lock      held by the single writer process
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np

from chunking import Chunk, Chunker, first_window, language_for_path
from chunking.types import spans_to_chunks
from embedder import EmbedderConfig, Encoder, allowed_dims, load_embedder
from index.errors import (
    CollectionExistsError,
    CollectionLockedError,
    CollectionNotFoundError,
    DocumentNotFoundError,
    InvalidInputError,
    ModelMismatchError,
)
from index.manifest import Manifest, Strategy, now_iso
from index.store import DocumentWrite, Store, StoredDocument
from index.vectors import VectorIndex, gpu_count

MAX_K = 1000
VERSION = "0.1.0"


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

    def content_hash(self) -> str:
        """What decides re-embedding: the text and the language it is chunked as."""
        h = hashlib.sha256((self.effective_language or "").encode())
        h.update(b"\0")
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


@dataclass
class AddResult:
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    chunks: int = 0
    tokens: int = 0

    def merge(self, other: AddResult) -> None:
        for name in ("added", "updated", "unchanged", "chunks", "tokens"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


def check_utf8(text: str, what: str) -> None:
    """Reject strings that cannot be encoded as UTF-8 (lone surrogates), which the tokenizer cannot take."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidInputError(f"{what} is not valid Unicode ({exc.reason} at position {exc.start})") from None


def _batched(items: Iterable[Document], n: int) -> Iterator[list[Document]]:
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch


class Collection:
    """Open with :meth:`create`, :meth:`open` or :meth:`open_or_create`; use as a context manager.

    Thread-safe: searches and writes are serialised by one lock around the store and the FAISS index
    (FAISS indexes must not be searched while they are modified); encoding runs outside the lock.
    """

    def __init__(self, root: Path, manifest: Manifest, embedder: Encoder, *, readonly: bool) -> None:
        self.root, self.manifest, self.embedder, self.readonly = root, manifest, embedder, readonly
        self._lock = threading.RLock()
        self._lock_file = None if readonly else _take_writer_lock(root)
        self._vectors_stale = False
        try:
            self._store = Store(root / "store.sqlite", readonly=readonly)
            self._vectors = self._load_vectors()
        except BaseException:
            if self._lock_file is not None:
                self._lock_file.close()
            raise
        self._chunker = Chunker(embedder.counter, manifest.max_tokens, manifest.overlap_tokens)

    # -- opening ---------------------------------------------------------------------------------------

    @classmethod
    def create(
        cls,
        root: str | Path,
        *,
        model: str | None = None,
        strategy: Strategy = "chunk",
        max_tokens: int | None = None,
        overlap_tokens: int = 0,
        embedder_config: EmbedderConfig | None = None,
        embedder: Encoder | None = None,
    ) -> Collection:
        """A new collection at ``root``; ``embedder`` (already loaded) wins over ``model``/``embedder_config``."""
        root = Path(root)
        if (root / "manifest.json").exists():
            raise CollectionExistsError(f"a collection already exists at {root}")
        if embedder is None:
            base = embedder_config or EmbedderConfig()
            if model:
                base = replace(base, model=model)
            embedder = load_embedder(replace(base, max_tokens=max_tokens))
        elif max_tokens is not None and max_tokens != embedder.max_tokens:
            raise InvalidInputError(f"max_tokens {max_tokens} differs from the embedder's {embedder.max_tokens}")
        manifest = Manifest(
            model=embedder.model_id,
            model_fingerprint=embedder.fingerprint,
            dim=embedder.dim,
            strategy=strategy,
            max_tokens=embedder.max_tokens,
            overlap_tokens=overlap_tokens,
            longvec_version=VERSION,
            created=now_iso(),
        )
        root.mkdir(parents=True, exist_ok=True)
        collection = cls(root, manifest, embedder, readonly=False)
        manifest.save(root / "manifest.json")
        return collection

    @classmethod
    def open(
        cls,
        root: str | Path,
        *,
        model: str | None = None,
        readonly: bool = False,
        embedder_config: EmbedderConfig | None = None,
        embedder: Encoder | None = None,
    ) -> Collection:
        """The collection at ``root``; :class:`ModelMismatchError` if the embedder differs from its manifest."""
        root = Path(root)
        if not (root / "manifest.json").exists():
            raise CollectionNotFoundError(f"no collection at {root} (create one with `longvec index`)")
        manifest = Manifest.load(root / "manifest.json")
        if embedder is None:
            base = embedder_config or EmbedderConfig()
            config = replace(base, model=model or manifest.model, max_tokens=manifest.max_tokens)
            embedder = load_embedder(config)
        manifest.check(model_fingerprint=embedder.fingerprint, dim=embedder.dim, model=embedder.model_id)
        return cls(root, manifest, embedder, readonly=readonly)

    @classmethod
    def open_or_create(cls, root: str | Path, **kwargs: Any) -> Collection:
        """Open ``root``; create it if absent. Settings given for an existing one must match its manifest."""
        root = Path(root)
        if not (root / "manifest.json").exists():
            return cls.create(root, **{k: v for k, v in kwargs.items() if v is not None})
        wanted = {k: kwargs.pop(k, None) for k in ("strategy", "max_tokens", "overlap_tokens")}
        collection = cls.open(root, **kwargs)
        m = collection.manifest
        stored = {"strategy": m.strategy, "max_tokens": m.max_tokens, "overlap_tokens": m.overlap_tokens}
        differ = {k: v for k, v in wanted.items() if v is not None and v != stored[k]}
        if differ:
            collection.close()
            raise ModelMismatchError(
                f"collection at {root} was built with {stored}; got {differ} (use a new --collection directory)"
            )
        return collection

    def _load_vectors(self) -> VectorIndex:
        generation = self._store.generation()
        path = self.root / "vectors.faiss"
        loaded = VectorIndex.load(path, generation, self.manifest.dim)
        if loaded is not None:
            return loaded
        index = self._rebuild_vectors()
        if not self.readonly:
            index.save(path, generation)
        return index

    def _rebuild_vectors(self) -> VectorIndex:
        index = VectorIndex(self.manifest.dim)
        ids, vectors = self._store.all_vectors(self.manifest.dim)
        index.add(ids, vectors)
        return index

    # -- writing ---------------------------------------------------------------------------------------

    def chunk(self, doc: Document) -> list[Chunk]:
        """The chunks ``doc`` is stored as under this collection's strategy."""
        language = doc.effective_language
        if self.manifest.strategy == "truncate":
            counter = self.embedder.counter
            first = first_window(counter, doc.text, self.manifest.max_tokens)  # tokenises only a prefix
            spans = [] if first is None else [first]
            counts = counter.count_many([doc.text[s.start : s.end] for s in spans])
            kind = "code" if language else "text"
            return spans_to_chunks(doc.doc_id, doc.text, spans, counts, kind, language)
        return self._chunker.chunk(doc.doc_id, doc.text, path=doc.path, language=language)

    def add(
        self,
        docs: Iterable[Document],
        *,
        batch_docs: int = 32,
        on_batch: Callable[[AddResult], None] | None = None,
    ) -> AddResult:
        """Upsert documents by ``doc_id``; unchanged ones (same content hash) are skipped.

        Each batch is one store transaction: once ``add`` returns (or ``on_batch`` is called) those
        documents are durable, and a crash leaves every document either fully written or untouched.
        """
        self._check_writable()
        total = AddResult()
        for batch in _batched(docs, batch_docs):
            result = self._add_batch(batch)
            total.merge(result)
            if on_batch is not None:
                on_batch(result)
        return total

    def _add_batch(self, batch: list[Document]) -> AddResult:
        latest = {d.doc_id: d for d in batch}  # last one wins inside a batch
        with self._lock:
            stored = self._store.hashes(list(latest))
        result, to_embed, field_updates = AddResult(), [], []
        for doc in latest.values():
            h = doc.content_hash()
            old = stored.get(doc.doc_id)
            if old is not None and old[0] == h:
                if (old[1], old[3]) != (doc.path, json.dumps(doc.metadata, sort_keys=True)):
                    field_updates.append(doc)
                result.unchanged += 1
                continue
            to_embed.append((doc, h, self.chunk(doc)))
        texts = [c.text for _, _, chunks in to_embed for c in chunks]
        vectors = self.embedder.encode_documents(texts)
        writes, offset = [], 0
        for doc, h, chunks in to_embed:
            part = vectors[offset : offset + len(chunks)]
            offset += len(chunks)
            writes.append(
                DocumentWrite(doc.doc_id, doc.text, h, doc.path, doc.effective_language, doc.metadata, chunks, part)
            )
            result.chunks += len(chunks)
            result.tokens += sum(c.n_tokens for c in chunks)
            if doc.doc_id in stored:
                result.updated += 1
            else:
                result.added += 1
        if not writes and not field_updates:
            return result
        with self._lock:
            removed: list[int] = []
            added: list[tuple[list[int], np.ndarray]] = []
            with self._store.transaction() as db:
                for doc in field_updates:
                    self._store.update_fields(db, doc.doc_id, doc.path, doc.metadata)
                for w in writes:
                    removed += self._store.delete(db, w.doc_id)
                    added.append((self._store.write(db, w), w.vectors))
            with self._updating_vectors():
                self._vectors.remove(removed)
                for ids, vecs in added:
                    self._vectors.add(np.asarray(ids, dtype=np.int64), vecs)
        return result

    def delete(self, doc_id: str) -> None:
        """Remove ``doc_id`` and its chunks; :class:`DocumentNotFoundError` if it is not stored."""
        self._check_writable()
        with self._lock:
            if self._store.document(doc_id) is None:
                raise DocumentNotFoundError(f"no document {doc_id!r}")
            with self._store.transaction() as db:
                removed = self._store.delete(db, doc_id)
            with self._updating_vectors():
                self._vectors.remove(removed)

    @contextmanager
    def _updating_vectors(self) -> Iterator[None]:
        """Apply a committed change to FAISS; if that is interrupted, rebuild from the store before next use.

        The store has already committed, so an index left half-updated must never be searched or saved
        under the store's generation (it would be taken as fresh on the next open).
        """
        try:
            yield
        except BaseException:
            self._vectors_stale = True
            raise

    def _fresh_vectors(self) -> VectorIndex:
        """The FAISS index, rebuilt from the store first if an update to it was interrupted."""
        if self._vectors_stale:
            self._vectors = self._rebuild_vectors()
            self._vectors_stale = False
        return self._vectors

    def flush(self) -> None:
        """Persist the FAISS index with the store generation it reflects (the store itself is always durable)."""
        if self.readonly:
            return
        with self._lock:
            self._fresh_vectors().save(self.root / "vectors.faiss", self._store.generation())

    # -- reading ---------------------------------------------------------------------------------------

    def get(self, doc_id: str) -> StoredDocument:
        with self._lock:
            doc = self._store.document(doc_id)
        if doc is None:
            raise DocumentNotFoundError(f"no document {doc_id!r}")
        return doc

    def search(self, query: str, k: int = 10, *, chunks_per_doc: int = 3) -> list[Hit]:
        return self.search_many([query], k, chunks_per_doc=chunks_per_doc)[0]

    def search_many(self, queries: list[str], k: int = 10, *, chunks_per_doc: int = 3) -> list[list[Hit]]:
        """Top-``k`` documents per query; a document scores as its best chunk (max-sim)."""
        if not 1 <= k <= MAX_K:
            raise InvalidInputError(f"k must be in [1, {MAX_K}], got {k}")
        for q in queries:
            if not isinstance(q, str) or not q.strip():
                raise InvalidInputError("query must be a non-empty string")
            check_utf8(q, "query")
        qv = self.embedder.encode_queries(queries)
        with self._lock:
            return self._rank(qv, k, chunks_per_doc)

    def _rank(self, qv: np.ndarray, k: int, chunks_per_doc: int) -> list[list[Hit]]:
        n = self._fresh_vectors().ntotal
        if n == 0:
            return [[] for _ in range(len(qv))]
        fetch = min(n, max(4 * k, 64))
        while True:
            scores, ids = self._vectors.search(qv, fetch)
            rows = self._store.chunk_rows(np.unique(ids[ids >= 0]).tolist())
            enough = all(len({rows[i].doc_id for i in row if i >= 0}) >= k for row in ids)
            if enough or fetch >= n:
                break
            fetch = min(n, fetch * 4)
        results = []
        for srow, irow in zip(scores, ids, strict=True):
            hits: dict[str, list[ChunkHit]] = {}
            for s, i in zip(srow, irow, strict=True):
                if i < 0:
                    continue
                r = rows[int(i)]
                bucket = hits.setdefault(r.doc_id, [])
                if len(bucket) < chunks_per_doc:
                    bucket.append(ChunkHit(r.chunk_id, r.start, r.end, float(s), r.symbol))
            ranked = sorted(hits.items(), key=lambda kv: -kv[1][0].score)[:k]
            results.append([Hit(doc_id, chunks[0].score, chunks) for doc_id, chunks in ranked])
        return results

    def chunk_vectors(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Every stored chunk vector: ``(doc_ids, row_doc, vectors, n_tokens)``.

        Row ``i`` of ``vectors`` belongs to document ``doc_ids[row_doc[i]]`` and has ``n_tokens[i]`` tokens
        (the weights of a length-weighted aggregation). For experiments and exports.
        """
        with self._lock:
            _, row_ids, tokens, vectors = self._store.chunk_table(self.manifest.dim)
        doc_ids = list(dict.fromkeys(row_ids))
        position = {d: i for i, d in enumerate(doc_ids)}
        row_doc = np.fromiter((position[d] for d in row_ids), dtype=np.int64, count=len(row_ids))
        return doc_ids, row_doc, vectors, tokens

    def info(self) -> dict[str, Any]:
        with self._lock:
            counts = self._store.counts()
        m = self.manifest
        return {
            "collection": str(self.root),
            "model": m.model,
            "model_fingerprint": m.model_fingerprint,
            "dim": m.dim,
            "dims": list(allowed_dims(m.dim)),
            "strategy": m.strategy,
            "max_tokens": m.max_tokens,
            "overlap_tokens": m.overlap_tokens,
            "longvec_version": m.longvec_version,
            "created": m.created,
            "gpu": self._vectors.use_gpu,
            "gpus": gpu_count(),
            "limits": {"max_k": MAX_K},
            **counts,
        }

    # -- lifecycle -------------------------------------------------------------------------------------

    def close(self) -> None:
        self.flush()
        self._store.close()
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_writable(self) -> None:
        if self.readonly:
            raise InvalidInputError(f"collection at {self.root} was opened read-only")


def _take_writer_lock(root: Path) -> Any:
    f = open(root / "writer.lock", "a+")  # noqa: SIM115 - held for the collection's lifetime
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        raise CollectionLockedError(
            f"collection at {root} is open for writing in another process (pid in {root / 'writer.lock'})"
        ) from None
    f.seek(0)
    f.truncate()
    f.write(str(os.getpid()))
    f.flush()
    return f
