"""A searchable collection on disk: the add / delete / search use cases over store, vectors and embedder.

Layout of a collection directory::

    manifest.json             model, dims, prompts, strategy, chunker settings, versions (checked on open)
    store.sqlite              documents, chunks, vectors (source of truth; one transaction per write batch)
    vectors-<gen>.faiss       FAISS index over chunk vectors (flat, HNSW, IVF or SQ8), a cache of the store ...
    vectors-<gen>.dead.npy    ... HNSW's tombstones (ids deleted but still in the graph), if any ...
    vectors.json              ... and the stamp naming them with the store generation and sequence they reflect
    writer.lock               held by the single writer process
"""

from __future__ import annotations

import json
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from longvec.chunking import CHUNKER_VERSION, Chunk
from longvec.embedder import (
    EmbedderConfig,
    Encoder,
    aggregate,
    allowed_dims,
    load_embedder,
    long_context,
    normalize,
)
from longvec.embedder.calibration import (
    Calibration,
    fit_adapter,
    fit_prefix_map,
    fit_rotation,
    prefix_of,
)
from longvec.index.encoding import (
    DocumentEncoder,
    check_embedder,
    encoding_differences,
    make_chunker,
    manifest_config,
    model_depth,
    token_counter,
)
from longvec.index.errors import (
    CollectionClosedError,
    CollectionExistsError,
    CollectionNotFoundError,
    DocumentNotFoundError,
    InvalidInputError,
    ModelMismatchError,
    UnsupportedShapeError,
)
from longvec.index.lexical import (
    DEFAULT_FUSION,
    DEFAULT_SEARCH_MODE,
    DEFAULT_WEIGHTS,
    Fusion,
    SearchMode,
    document_terms,
    match_expression,
    resolve_weights,
)
from longvec.index.locks import take_writer_lock
from longvec.index.manifest import ELASTIC_FORMAT_VERSION, FORMAT_VERSION, Manifest, Strategy, longvec_version, now_iso
from longvec.index.search import (
    FUNNEL_OVERSAMPLE,
    MAX_K,
    Channels,
    check_channels,
    check_funnel,
    check_search,
    rank,
    rank_funnel,
    rank_fused,
)
from longvec.index.store import DocumentWrite, Store, StoredDocument
from longvec.index.sync import AGG_MODES, AggMode, SnapshotTooOld, VectorCache, View
from longvec.index.types import DOC_SYMBOL, AddResult, Document, Hit
from longvec.index.vectors import INDEX_TYPES, gpu_count

# Settings fixed when a collection is built (giving other values for an existing one is an error).
# A writer saves the FAISS index once this many chunks (or 5% of the collection, if more) changed since its last save.
SAVE_AFTER_CHUNKS = 20_000
_BUILD_SETTINGS = (
    "strategy",
    "max_tokens",
    "overlap_tokens",
    "code_context",
    "path_context",
    "doc_vector",
    "split_tokens",
    "layers",
)
# Chunks encoded (at every depth) to fit the adapters, and stored vectors read to fit the rotation, by default.
CALIBRATION_SAMPLE = 2048
ROTATION_SAMPLE = 50_000


_SEARCH_DEFAULTS = ("search_mode", "fusion", "alpha", "text_alpha")


# A stored document's (content_hash, path, language, metadata_json), as Store.hashes gives it.
_Row = tuple[str, str | None, str | None, str]
# Batches an add may have read and chunked ahead of the one being written (bounds the memory they hold).
_PIPELINE_DEPTH = 2
_T = TypeVar("_T")


@dataclass(frozen=True)
class EncodedDocument:
    """A document with the chunks and model-space vectors a :class:`DocumentEncoder` made of it elsewhere (another
    process or machine), for :meth:`Collection.add_encoded`; ``chunks`` and ``vectors`` are ``None`` where that
    encoder skipped it (unchanged, as far as it knew)."""

    doc: Document
    chunks: list[Chunk] | None = None
    vectors: np.ndarray | None = None


@dataclass
class _Prepared:
    """One batch of :meth:`Collection.add` after its first stage."""

    result: AddResult = field(default_factory=AddResult)
    to_embed: list[tuple[Document, str, list[Chunk]]] = field(default_factory=list)
    given: dict[int, np.ndarray] = field(default_factory=dict)  # model-space vectors of to_embed[i], encoded before
    field_updates: list[Document] = field(default_factory=list)
    rows: dict[str, _Row] = field(default_factory=dict)  # what this batch writes, per doc_id


def _whole(doc_id: str, text: str, n_tokens: int) -> Chunk:
    """All of ``text`` as one chunk (of ``n_tokens`` tokens)."""
    return Chunk(doc_id, 0, 0, len(text), text, n_tokens, "text")


def _batched(items: Iterable[_T], n: int) -> Iterator[list[_T]]:
    it = iter(items)
    while batch := list(islice(it, n)):
        yield batch


def _native_axes(embedder: Any) -> frozenset[str]:
    """What ``embedder``'s model was trained to be elastic in (none for an embedder that does not say)."""
    return frozenset(getattr(embedder, "native_axes", ()))


class Collection:
    """Open with :meth:`create`, :meth:`open` or :meth:`open_or_create`; use as a context manager.

    Thread-safe: searches and writes are serialised by one lock around the store and the FAISS index
    (FAISS indexes must not be searched while they are modified); encoding runs outside the lock. Any
    number of read-only instances, in any processes, may search beside the one writer: each search sees
    the store as of one committed generation, and every write committed before it started.
    """

    def __init__(self, root: Path, manifest: Manifest, embedder: Encoder, *, readonly: bool) -> None:
        self.root, self.manifest, self.embedder, self.readonly = root, manifest, embedder, readonly
        self.encoding = DocumentEncoder(manifest, embedder)
        self.counter = self.encoding.counter
        self._lock = threading.RLock()
        self._lock_file = None if readonly else take_writer_lock(root)
        try:
            self._store = Store(root / "store.sqlite", readonly=readonly)
        except BaseException:
            self._release_writer_lock()
            raise
        # full chunk vectors: saved, loaded, caught up, in the structure the manifest asks for
        self._vectors = VectorCache(root, manifest.dim, wanted=manifest.index_type, writer=not readonly)
        self._views: dict[View, VectorCache] = {self._vectors.view: self._vectors}  # others built on first use
        self._calibration: tuple[str, Calibration] | None = None  # (store meta it was loaded for, calibration)
        # Held by add and calibrate: a calibration never changes the vector space under a running add.
        self._space = threading.Lock()
        self._closed = False

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
        code_context: bool = True,
        path_context: bool = True,
        doc_vector: bool = False,
        split_tokens: int | None = None,
        layers: int | None = None,
        search_mode: SearchMode = DEFAULT_SEARCH_MODE,
        fusion: Fusion = DEFAULT_FUSION,
        alpha: float | None = None,
        text_alpha: float | None = None,
        index_type: str = "auto",
        embedder_config: EmbedderConfig | None = None,
        embedder: Encoder | None = None,
    ) -> Collection:
        """A new collection at ``root``; ``embedder`` (already loaded) wins over ``model``/``embedder_config``.

        ``code_context``: code chunks are embedded with the signatures of the definitions they belong to;
        ``path_context``: and with their document's file path first (``Document.source_path``; none without).
        ``doc_vector``: a document of several chunks also gets one vector of its first ``max_tokens`` tokens
        (one more chunk, searched with the others: a document scores as its best), so a document read whole
        competes as itself beside its parts.
        ``split_tokens``: a document that does not fit one chunk of ``max_tokens`` is chunked at this smaller
        budget instead (one that fits stays whole; ``None``: every document is chunked at ``max_tokens``).
        ``layers``: documents are encoded with the model's first that many transformer layers (cheaper
        indexing; ``None``: all); queries then run at that depth too, or at any depth once calibrated
        (:meth:`calibrate`).
        ``search_mode``, ``fusion`` and ``alpha`` are the defaults of :meth:`search_many`; ``text_alpha`` weighs
        the dense channel of prose chunks instead of ``alpha``. Given neither weight, code chunks are fused at
        ``DEFAULT_ALPHA`` and prose at ``DEFAULT_TEXT_ALPHA``; given only ``alpha``, every chunk at ``alpha``.
        ``index_type``: the FAISS structure of the chunk vectors (``auto``, ``flat``, ``hnsw``, ``ivf``, ``ivfpq``,
        ``sq8``; see
        ``index.vectors``), changeable later by :meth:`set_index_type` without re-embedding.
        """
        root = Path(root)
        if index_type not in INDEX_TYPES:
            raise InvalidInputError(f"index type {index_type!r} not in {INDEX_TYPES}")
        if (root / "manifest.json").exists():
            raise CollectionExistsError(f"a collection already exists at {root}")
        if embedder is None:
            base = embedder_config or EmbedderConfig()
            if model:
                base = replace(base, model=model)
            embedder = load_embedder(replace(base, max_tokens=max_tokens))
        elif max_tokens is not None and max_tokens != embedder.max_tokens:
            raise InvalidInputError(f"max_tokens {max_tokens} differs from the embedder's {embedder.max_tokens}")
        # settings checked before any write
        make_chunker(token_counter(embedder), embedder.max_tokens, overlap_tokens, split_tokens=split_tokens)
        if strategy == "truncate" and split_tokens is not None:
            raise InvalidInputError("the truncate strategy keeps one window per document: split_tokens cannot be set")
        extended = getattr(embedder, "long_context", {}).get("extend_to")
        if strategy == "extend" and extended != embedder.max_tokens:
            raise InvalidInputError(
                "the extend strategy reads documents whole with an extended encoder, up to its new length: give "
                "that length (extend_to in EmbedderConfig, --extend-to N) and no smaller max_tokens"
                if extended is None
                else f"the extend strategy chunks at the extended length {extended}, not max_tokens "
                f"{embedder.max_tokens}: drop max_tokens or use the chunk strategy"
            )
        alpha, text_alpha = resolve_weights(alpha, text_alpha, DEFAULT_WEIGHTS)
        check_channels(search_mode, fusion, alpha, text_alpha)
        if layers is not None:
            if strategy == "late":
                raise InvalidInputError("the late strategy reads token states of the whole model: layers cannot be set")
            layers = model_depth(embedder, layers)
            layers = None if layers == model_depth(embedder) else layers
        manifest = Manifest(
            model=embedder.model_id,
            model_fingerprint=embedder.fingerprint,
            dim=embedder.dim,
            strategy=strategy,
            max_tokens=embedder.max_tokens,
            overlap_tokens=overlap_tokens,
            code_context=code_context,
            path_context=path_context and code_context,  # the path rides in the code context
            doc_vector=doc_vector,
            split_tokens=split_tokens,
            search_mode=search_mode,
            fusion=fusion,
            alpha=alpha,
            text_alpha=text_alpha,
            document_prompt=embedder.document_prompt,
            query_prompt=embedder.query_prompt,
            encoder=dict(getattr(embedder, "long_context", {})),
            layers=layers,
            index_type=index_type,
            # older longvecs read only FORMAT_VERSION, and would chunk new documents without split_tokens
            format_version=FORMAT_VERSION if layers is None and split_tokens is None else ELASTIC_FORMAT_VERSION,
            chunker_version=CHUNKER_VERSION,
            longvec_version=longvec_version(),
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
        """The collection at ``root``; :class:`ModelMismatchError` if the embedder differs from its manifest.

        Without ``embedder``, the manifest's model is loaded with the manifest's token limit and prompts
        (``model`` and ``embedder_config`` override them, and are then checked like a given embedder).
        """
        root = Path(root)
        if not (root / "manifest.json").exists():
            raise CollectionNotFoundError(f"no collection at {root} (create one with `longvec index`)")
        manifest = Manifest.load(root / "manifest.json")
        if embedder is None:
            base = embedder_config or EmbedderConfig()
            asked = long_context(base)
            if asked and asked != manifest.encoder:
                raise ModelMismatchError(
                    f"collection at {root} was built with long-context settings {manifest.encoder or 'none'}; "
                    f"got {asked} (use a new --collection directory)"
                )
            embedder = load_embedder(manifest_config(manifest, base, model))
        check_embedder(manifest, embedder)
        return cls(root, manifest, embedder, readonly=readonly)

    @staticmethod
    def check_writable(root: str | Path) -> None:
        """Raise what :meth:`open` for writing would raise about ``root`` itself, without loading a model: no
        collection there (:class:`CollectionNotFoundError`), or another process writing it
        (:class:`CollectionLockedError`)."""
        root = Path(root)
        if not (root / "manifest.json").exists():
            raise CollectionNotFoundError(f"no collection at {root} (create one with `longvec index`)")
        take_writer_lock(root).close()

    @classmethod
    def open_or_create(cls, root: str | Path, **kwargs: Any) -> Collection:
        """Open ``root``; create it if absent. Build settings given for an existing one must match its
        manifest; search defaults given (``search_mode``, ``fusion``, ``alpha``, ``text_alpha``) replace the stored
        ones (as :meth:`set_search_defaults` does)."""
        root = Path(root)
        if not (root / "manifest.json").exists():
            return cls.create(root, **{k: v for k, v in kwargs.items() if v is not None})
        wanted = {k: kwargs.pop(k, None) for k in _BUILD_SETTINGS}
        search = {k: v for k in _SEARCH_DEFAULTS if (v := kwargs.pop(k, None)) is not None}
        index_type = kwargs.pop("index_type", None)
        collection = cls.open(root, **kwargs)
        m = collection.manifest
        if wanted["layers"] is not None and wanted["layers"] == getattr(collection.embedder, "layers", None):
            wanted["layers"] = None  # the full depth is stored as None
        stored = {k: getattr(m, k) for k in wanted}
        differ = {k: v for k, v in wanted.items() if v is not None and v != stored[k]}
        if differ:
            collection.close()
            raise ModelMismatchError(
                f"collection at {root} was built with {stored}; got {differ} (use a new --collection directory)"
            )
        try:
            weights = resolve_weights(search.get("alpha"), search.get("text_alpha"), (m.alpha, m.text_alpha))
            if any(getattr(m, k) != v for k, v in search.items()) or weights != (m.alpha, m.text_alpha):
                collection.set_search_defaults(**search)
            if index_type is not None and index_type != m.index_type:
                collection.set_index_type(index_type)
        except BaseException:
            collection.close()
            raise
        return collection

    def set_search_defaults(
        self,
        *,
        search_mode: SearchMode | None = None,
        fusion: Fusion | None = None,
        alpha: float | None = None,
        text_alpha: float | None = None,
    ) -> None:
        """Change the collection's default search mode, fusion and weights (rewrites the manifest atomically;
        readers pick the change up when they next open the collection). An ``alpha`` given without a
        ``text_alpha`` weighs every chunk, prose included, as it does at creation."""
        self._check_writable()
        m = self.manifest
        alpha, text_alpha = resolve_weights(alpha, text_alpha, (m.alpha, m.text_alpha))
        new = replace(
            m,
            search_mode=search_mode if search_mode is not None else m.search_mode,
            fusion=fusion if fusion is not None else m.fusion,
            alpha=alpha,
            text_alpha=text_alpha,
        )
        check_channels(new.search_mode, new.fusion, new.alpha, new.text_alpha)
        new.save(self.root / "manifest.json")
        self.manifest = new

    def set_index_type(self, index_type: str) -> dict[str, Any]:
        """Rebuild the chunk vectors' FAISS index as ``index_type`` from the stored vectors (no re-embedding),
        save it, and record the type in the manifest; returns :meth:`index_info`. Readers opened before keep
        what they hold until their next open (or load the saved index when theirs goes stale)."""
        self._check_writable()
        new = replace(self.manifest, index_type=index_type)  # the manifest checks the type
        with self._lock:
            previous, self._vectors.wanted = self._vectors.wanted, index_type
            try:
                with self._store.snapshot() as state:
                    self._vectors.rebuild(self._store, state)
                self._vectors.save(self._store)
            except BaseException:
                self._vectors.wanted = previous
                raise
            new.save(self.root / "manifest.json")
            self.manifest = new
        return self.index_info()

    def index_info(self) -> dict[str, Any]:
        """The chunk vectors' FAISS index as built (loading or building it if need be): the type asked for,
        the structure it resolved to, its vectors and search effort."""
        self._check_open()
        with self._lock, self._store.snapshot() as state:
            index = self._vectors.current(self._store, state)
            return {
                "index_type": self.manifest.index_type,
                "built": index.kind,
                "vectors": index.ntotal,
                "trained_on": index.trained_on,
                **index.search_settings(),
            }

    # -- writing ---------------------------------------------------------------------------------------

    def chunk(self, doc: Document) -> list[Chunk]:
        """The chunks ``doc`` is stored as under this collection's strategy."""
        return self.encoding.chunk(doc)

    def embed(
        self, texts: Sequence[str], *, dim: int | None = None, long_inputs: str = "chunk", as_queries: bool = False
    ) -> tuple[np.ndarray, list[int]]:
        """Unit vectors of ``texts`` as this collection compares them (its model, depth and calibration; cut to
        the Matryoshka prefix ``dim`` and re-normalised), and each text's token count.

        Texts are embedded as documents (as queries with ``as_queries``). A document longer than the model's window
        is never silently truncated: with ``long_inputs="chunk"`` it is chunked as the collection chunks documents
        and its chunk vectors averaged (weighted by their tokens); with ``"reject"`` it raises
        :class:`InvalidInputError`. A query longer than the window is always an error.
        """
        self._check_open()
        if long_inputs not in ("chunk", "reject"):
            raise InvalidInputError(f"long_inputs must be 'chunk' or 'reject', got {long_inputs!r}")
        dim = self.manifest.dim if dim is None else dim
        if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= self.manifest.dim:
            raise InvalidInputError(f"dimensions must be in [1, {self.manifest.dim}], got {dim!r}")
        texts = list(texts)
        counts = self.counter.count_many(texts)
        window = self.embedder.max_tokens
        too_long = [i for i, n in enumerate(counts) if n > window]
        if too_long and (as_queries or long_inputs == "reject"):
            i = too_long[0]
            raise InvalidInputError(
                f"input {i} has {counts[i]} tokens, over the model's {window}: shorten it"
                + ("" if as_queries else ", or let the server chunk long inputs")
            )
        out = np.zeros((len(texts), self.manifest.dim), np.float32)
        short = [i for i, n in enumerate(counts) if n <= window]
        if short:
            if as_queries:
                depth = self._query_depth(None)
                layers = {"layers": depth} if depth is not None else {}
                raw = self.embedder.encode_queries([texts[i] for i in short], **layers)
                out[short] = self._query_vectors(raw, depth, self.manifest.dim)
            else:
                whole = [
                    (Document(f"input-{i}", texts[i]), "", [_whole(f"input-{i}", texts[i], counts[i])]) for i in short
                ]
                out[short] = self._embed(whole)
        for i in too_long:
            doc = Document(f"input-{i}", texts[i])
            chunks = [c for c in self.chunk(doc) if c.symbol != DOC_SYMBOL]
            vectors = self._embed([(doc, "", chunks)])
            out[i] = aggregate(vectors, "weighted", np.array([c.n_tokens for c in chunks], np.float32))
        return self._prefix(out, dim) if dim < self.manifest.dim else out, counts

    def add(
        self,
        docs: Iterable[Document],
        *,
        batch_docs: int = 32,
        on_batch: Callable[[AddResult], None] | None = None,
    ) -> AddResult:
        """Upsert documents by ``doc_id``; unchanged ones (same content hash) are skipped, and so are empty
        ones (nothing but whitespace: they could never be found), counted as ``empty`` (a stored document of
        that id is left as it is; :meth:`delete` removes it).

        Each batch of ``batch_docs`` documents is one store transaction: once ``add`` returns (or ``on_batch``
        is called, in the caller's thread, in batch order) those documents are durable, and a crash leaves every
        document either fully written or untouched. If a batch fails, the batches before it stay written and
        none after it is; if reading ``docs`` fails, every whole batch read before it is written first.

        The batches run as a pipeline of three stages, each in order: this thread reads and chunks batch
        ``k + 2`` while an encode thread embeds batch ``k + 1`` and a write thread stores batch ``k`` (term
        extraction and the SQLite transaction), so the model is not left waiting on chunking or on disk.
        """
        return self._add(((d, None) for d in docs), batch_docs, on_batch)

    def add_encoded(
        self,
        docs: Iterable[EncodedDocument],
        *,
        encoding: dict[str, Any],
        batch_docs: int = 32,
        on_batch: Callable[[AddResult], None] | None = None,
    ) -> AddResult:
        """:meth:`add` for documents already chunked and encoded by a :class:`DocumentEncoder` whose ``info()`` is
        ``encoding`` (:class:`ModelMismatchError` unless it is this collection's): the same decisions (added,
        updated, unchanged, empty; last one wins), transactions and lexical terms as :meth:`add`, with the given
        vectors mapped into the stored space as this collection's own. A document given without chunks, or whose
        chunks do not fit its text, is chunked and encoded here."""
        mine = self.encoding.info()
        if differ := encoding_differences(encoding, mine):
            raise ModelMismatchError(
                f"vectors were made with {', '.join(f'{k}={encoding.get(k)!r}' for k in differ)}; the collection at "
                f"{self.root} has {', '.join(f'{k}={mine.get(k)!r}' for k in differ)}"
            )
        return self._add(((e.doc, self._checked(e)) for e in docs), batch_docs, on_batch)

    def _checked(self, item: EncodedDocument) -> tuple[list[Chunk], np.ndarray] | None:
        """``item``'s chunks and vectors if they are whole and belong to its text, else ``None`` (re-encode it)."""
        chunks, vectors, doc = item.chunks, item.vectors, item.doc
        if chunks is None or vectors is None:
            return None
        whole = (
            vectors.shape == (len(chunks), self.manifest.dim)
            and [c.chunk_id for c in chunks] == list(range(len(chunks)))
            and all(c.doc_id == doc.doc_id and doc.text[c.start : c.end] == c.text for c in chunks)
        )
        return (chunks, np.asarray(vectors, np.float32)) if whole else None

    def _add(
        self,
        docs: Iterable[tuple[Document, tuple[list[Chunk], np.ndarray] | None]],
        batch_docs: int,
        on_batch: Callable[[AddResult], None] | None,
    ) -> AddResult:
        """:meth:`add` and :meth:`add_encoded`: documents, each with its chunks and model-space vectors where they
        were encoded elsewhere (else ``None``), through the pipeline under the space lock; the index saved if due."""
        self._check_writable()
        if batch_docs < 1:
            raise InvalidInputError(f"batch_docs must be positive, got {batch_docs}")
        with self._space:
            result = self._pipeline(docs, batch_docs, on_batch)
        self._save_if_due()
        return result

    def _pipeline(
        self,
        docs: Iterable[tuple[Document, tuple[list[Chunk], np.ndarray] | None]],
        batch_docs: int,
        on_batch: Callable[[AddResult], None] | None,
    ) -> AddResult:
        total = AddResult()
        # Rows of documents prepared but not yet written, as the store will have them: a later batch compares
        # against these, not the store, so a document repeated across batches is decided as if run one by one.
        inflight: dict[str, _Row] = {}
        pending: deque[tuple[Future[AddResult], Future[np.ndarray], dict[str, _Row]]] = deque()

        def finish() -> None:
            written, _, rows = pending.popleft()
            result = written.result()
            for doc_id, row in rows.items():
                if inflight.get(doc_id) is row:
                    del inflight[doc_id]
            total.merge(result)
            if on_batch is not None:
                on_batch(result)

        with (
            ThreadPoolExecutor(1, thread_name_prefix="longvec-encode") as encoder,
            ThreadPoolExecutor(1, thread_name_prefix="longvec-write") as writer,
        ):
            failed = False
            try:
                previous: Future[AddResult] | None = None
                batches = _batched(docs, batch_docs)
                while True:
                    try:
                        batch = next(batches, None)
                        if batch is None:
                            break
                        prepared = self._prepare(batch, inflight)
                    except Exception:
                        # the input failed (a bad record, a document that cannot be chunked): the batches read
                        # before it are whole, so they are written, as they would be had they been read one by one
                        while pending:
                            finish()
                        raise
                    encoded = encoder.submit(self._embed, prepared.to_embed, prepared.given)
                    previous = writer.submit(self._write, prepared, encoded, previous)
                    pending.append((previous, encoded, prepared.rows))
                    while len(pending) > _PIPELINE_DEPTH or (pending and pending[0][0].done()):
                        finish()
                while pending:
                    finish()
            except BaseException:
                for written, encoded, _ in pending:  # what has not started will not; running stages end
                    written.cancel()
                    encoded.cancel()
                failed = True
                raise
            finally:
                if failed:
                    encoder.shutdown(wait=True)
                    writer.shutdown(wait=True)
                    # batches the write stage committed before the failure are reported, in order
                    while pending and pending[0][0].done() and not pending[0][0].cancelled():
                        if pending[0][0].exception() is not None:
                            break
                        finish()
        return total

    def _prepare(
        self, batch: list[tuple[Document, tuple[list[Chunk], np.ndarray] | None]], inflight: dict[str, _Row]
    ) -> _Prepared:
        """Stage one of :meth:`add`: which documents of ``batch`` change, and the chunks of those whose content
        does (given ones as given); ``inflight`` (rows of earlier batches not yet written) is updated with this
        batch's."""
        out = _Prepared()
        given = {d.doc_id: pre for d, pre in batch}
        latest = {d.doc_id: d for d, _ in batch}  # last one wins inside a batch
        for doc_id in [d for d, doc in latest.items() if not doc.text.strip()]:
            del latest[doc_id]
            out.result.empty += 1
        with self._lock:
            stored = self._store.hashes(list(latest))
        stored.update((doc_id, inflight[doc_id]) for doc_id in latest if doc_id in inflight)
        for doc in latest.values():
            h = self.encoding.content_hash(doc)
            row = (h, doc.path, doc.effective_language, json.dumps(doc.metadata, sort_keys=True))
            old = stored.get(doc.doc_id)
            if old is not None and old[0] == h:
                if (old[1], old[3]) != (row[1], row[3]):
                    out.field_updates.append(doc)
                    out.rows[doc.doc_id] = inflight[doc.doc_id] = row
                out.result.unchanged += 1
                continue
            pre = given[doc.doc_id]
            if pre is not None:
                out.given[len(out.to_embed)] = pre[1]
            out.to_embed.append((doc, h, pre[0] if pre is not None else self.chunk(doc)))
            out.rows[doc.doc_id] = inflight[doc.doc_id] = row
            if old is not None:
                out.result.updated += 1
            else:
                out.result.added += 1
        return out

    def _write(self, prepared: _Prepared, encoded: Future[np.ndarray], previous: Future[AddResult] | None) -> AddResult:
        """Stage three of :meth:`add`: store ``prepared`` with its vectors in one transaction, after the batch
        before it (``previous``) is stored; raises, writing nothing, if that one failed."""
        if previous is not None:
            previous.result()
        vectors = encoded.result()
        result, writes, offset = prepared.result, [], 0
        for doc, h, chunks in prepared.to_embed:
            part = vectors[offset : offset + len(chunks)]
            offset += len(chunks)
            # a document vector's window repeats its chunks' terms: none
            terms = [document_terms(c.embed_text) if c.symbol != DOC_SYMBOL else "" for c in chunks]
            writes.append(
                DocumentWrite(
                    doc.doc_id, doc.text, h, doc.path, doc.effective_language, doc.metadata, chunks, part, terms
                )
            )
            result.chunks += len(chunks)
            result.tokens += sum(c.n_tokens for c in chunks if c.symbol != DOC_SYMBOL)  # its text, counted once
        if not writes and not prepared.field_updates:
            return result
        with self._lock, self._store.transaction() as db:
            for doc in prepared.field_updates:
                self._store.update_fields(db, doc.doc_id, doc.path, doc.metadata)
            for w in writes:
                self._store.delete(db, w.doc_id)
                self._store.write(db, w)
        return result

    def _embed(
        self, to_embed: list[tuple[Document, str, list[Chunk]]], given: dict[int, np.ndarray] | None = None
    ) -> np.ndarray:
        """The stored-space chunk vectors of ``to_embed``'s documents, in order: ``given[i]`` for document ``i``
        where given (model-space vectors), else encoded now (``DocumentEncoder.encode``)."""
        given = given or {}
        todo = [(doc, chunks) for i, (doc, _, chunks) in enumerate(to_embed) if i not in given]
        raw = self.encoding.encode(todo) if todo else np.zeros((0, self.manifest.dim), np.float32)
        parts, offset = [], 0
        for i, (_, _, chunks) in enumerate(to_embed):
            if i in given:
                parts.append(given[i])
            else:
                parts.append(raw[offset : offset + len(chunks)])
                offset += len(chunks)
        vectors = np.concatenate(parts) if parts else np.zeros((0, self.manifest.dim), np.float32)
        calibration = self._current_calibration()
        if calibration is None or not len(vectors):
            return vectors
        if self.manifest.strategy == "late":
            return calibration.rotate(vectors)
        return self._stored_space(vectors, model_depth(self.embedder, self.manifest.layers), calibration)

    # -- 2D Matryoshka: depths and calibration ---------------------------------------------------------

    def _current_calibration(self) -> Calibration | None:
        """The calibration the stored vectors are in (the store's record of it, read now: a writer in another
        process may have re-calibrated), loaded once per change."""
        with self._lock:
            meta = self._store.meta("calibration")
        if meta is None:
            self._calibration = None
            return None
        loaded = self._calibration
        if loaded is None or loaded[0] != meta:
            loaded = (meta, Calibration.load(self.root / json.loads(meta)["file"]))
            self._calibration = loaded
        return loaded[1]

    def _query_depth(self, layers: int | None) -> int | None:
        """The depth queries are encoded at (``None``: an embedder without depths), checked against what the
        stored vectors can be compared with."""
        if layers is None and self.manifest.layers is None:
            return None
        if not getattr(self.embedder, "layers", None):
            raise InvalidInputError("this collection's embedder has no layer choice")
        depth = model_depth(self.embedder, layers if layers is not None else self.manifest.layers)
        stored = model_depth(self.embedder, self.manifest.layers)
        if depth != stored and "layers" not in _native_axes(self.embedder):  # a 2D-trained model's depths agree
            calibration = self._current_calibration()
            if calibration is None or depth not in calibration.depths():
                raise UnsupportedShapeError(
                    f"queries at {depth} layers cannot be compared with documents encoded at {stored}: calibrate the "
                    f"collection first (`longvec calibrate`), or search with layers {stored}"
                )
        return depth

    def _query_vectors(self, raw: np.ndarray, depth: int | None, dim: int) -> np.ndarray:
        """Query vectors in the stored vectors' space (calibrated where the collection is), cut to ``dim``."""
        calibration = self._current_calibration()
        if calibration is not None:
            raw = self._stored_space(raw, depth if depth is not None else calibration.layers, calibration)
        return self._prefix(raw, dim)

    def _stored_space(self, vectors: np.ndarray, depth: int, calibration: Calibration | None) -> np.ndarray:
        """Depth-``depth`` unit vectors in the stored vectors' space: through ``calibration`` (its adapter for that
        depth, then its rotation); a model trained elastic in layers needs no adapter at any depth."""
        if calibration is None:
            return vectors
        if depth not in calibration.depths() and "layers" in _native_axes(self.embedder):
            return calibration.rotate(vectors)
        return calibration.apply(vectors, depth)

    def _prefix(self, vectors: np.ndarray, dim: int) -> np.ndarray:
        """``dim``-prefixes of vectors in the stored space, as the calibration cuts them (``calibration.prefix_of``)."""
        calibration = self._current_calibration()
        return prefix_of(vectors, dim, calibration.prefix_map if calibration is not None else None)

    def calibrate(
        self,
        *,
        sample: int = CALIBRATION_SAMPLE,
        rotation: bool | None = None,
        adapters: bool | None = None,
        prefix_map: bool | None = None,
        seed: int = 0,
    ) -> dict[str, Any]:
        """Make Matryoshka prefixes and shallow depths of this collection's model usable (``embedder.calibration``):

        - ``adapters``: encode about ``sample`` chunks of randomly chosen stored documents at every depth and fit
          one affine map per depth into the full model's space (queries and documents at any depth then compare
          with the stored vectors);
        - ``rotation``: the principal axes of (up to ``ROTATION_SAMPLE``) stored vectors, so that each prefix
          keeps the most variance; the stored vectors are rotated in place (full-length scores do not change);
        - ``prefix_map``: a small residual MLP trained on the same (rotated) stored vectors to keep prefixes'
          cosines close to full-length ones; used for searches below the stored size only (stored vectors and
          full-length scores are as the rotation leaves them).

        Each is on (``None``) unless the model was trained to be elastic on its axis (``embedder.native_axes``:
        dimensions for the rotation and the prefix map, layers for the adapters); ``True`` forces it.
        The calibration file is written first and recorded in the store in the same transaction that rewrites the
        vectors, so a crash leaves either the old state or the new one. Calibrating again refits all (documents
        encoded at a shallow depth keep the adapter they were stored with). Returns what was fitted.
        """
        self._check_writable()
        native = _native_axes(self.embedder)
        rotation = "dims" not in native if rotation is None else rotation
        prefix_map = "dims" not in native if prefix_map is None else prefix_map
        adapters = "layers" not in native if adapters is None else adapters
        if not (rotation or adapters or prefix_map):
            trained = (
                f" (the model is trained elastic in {' and '.join(sorted(native))}: use it as is)" if native else ""
            )
            raise InvalidInputError(f"nothing to calibrate: rotation, adapters and prefix map are all off{trained}")
        if sample < 2:
            raise InvalidInputError(f"sample must be at least 2, got {sample}")
        if not getattr(self.embedder, "layers", None):
            raise InvalidInputError("this collection's embedder has no layer choice to calibrate")
        if self.manifest.strategy == "late":
            adapters = False  # late vectors are pooled from whole documents: per-chunk adapters would not map them
        with self._space:
            old = self._current_calibration()
            with self._lock:
                previous = self._store.meta("calibration")
            full = model_depth(self.embedder)
            stored_depth = model_depth(self.embedder, self.manifest.layers)
            space = old.base if old is not None else stored_depth  # of the stored vectors, rotation undone
            base = full if adapters or space == full else space  # of the new calibration
            fitted: dict[int, tuple[np.ndarray, np.ndarray]] = {}
            texts = self._sample_texts(sample, seed) if adapters else []
            if texts:
                target = self.embedder.encode_documents(texts)
                for k in range(1, full):
                    fitted[k] = fit_adapter(self.embedder.encode_documents(texts, layers=k), target)
            if old is not None and stored_depth in old.adapters:
                fitted[stored_depth] = old.adapters[stored_depth]  # the stored documents were mapped with it
            kept = fitted if adapters else {k: v for k, v in fitted.items() if k == stored_depth}
            bridge = Calibration(self.manifest.dim, full, None, fitted) if space != base else None

            def model_space(stored: np.ndarray) -> np.ndarray:
                v = stored if old is None or old.rotation is None else normalize(stored @ old.rotation.T)
                return v if bridge is None else bridge.to_model_space(v, space)

            with self._lock, self._store.snapshot():
                counts = self._store.counts()
                if counts["chunks"] < 2:
                    raise InvalidInputError("nothing to calibrate: the collection has fewer than 2 chunks")
                step = max(1, counts["chunks"] // ROTATION_SAMPLE)
                seen = np.concatenate([model_space(v[::step]) for _, v in self._store.iter_vectors(self.manifest.dim)])
            new = Calibration(self.manifest.dim, full, fit_rotation(seen) if rotation else None, kept, base)
            if prefix_map:
                new.prefix_map = fit_prefix_map(new.rotate(seen), seed=seed)
            if new.rotation is None and not kept and new.prefix_map is None:
                raise InvalidInputError(
                    "nothing to calibrate: no prefix map beat plain prefixes on held-out chunks (or the collection "
                    "has too few chunks for one)"
                )
            name = f"calibration-{uuid.uuid4().hex[:12]}.npz"
            new.save(self.root / name)
            if self.manifest.format_version < ELASTIC_FORMAT_VERSION:  # older longvecs must refuse it from now on
                self.manifest = replace(self.manifest, format_version=ELASTIC_FORMAT_VERSION)
                self.manifest.save(self.root / "manifest.json")
            record = {
                "file": name,
                "version": new.version,
                "rotation": rotation,
                "adapters": sorted(kept),
                "prefix_map": new.prefix_map is not None,
                "base": base,
                "sample": len(texts),
                "chunks": counts["chunks"],
                "created": now_iso(),
            }
            with self._lock, self._store.transaction() as db:
                self._store.rewrite_vectors(db, self.manifest.dim, lambda v: new.rotate(model_space(v)))
                self._store.set_meta(db, "calibration", json.dumps(record, sort_keys=True))
            # Readers whose snapshot began before this commit may still load the previous file: keep it, drop older.
            keep = {name, json.loads(previous)["file"]} if previous else {name}
            for stale in self.root.glob("calibration-*.npz"):
                if stale.name not in keep:
                    stale.unlink(missing_ok=True)
            with self._lock:
                self._views = {self._vectors.view: self._vectors}  # derived views rebuild from the new vectors
            self.flush()
        return record

    def _sample_texts(self, sample: int, seed: int) -> list[str]:
        """Embedded texts of about ``sample`` chunks of randomly chosen stored documents (re-chunked as stored)."""
        rng = random.Random(seed)
        ids = self.doc_ids()
        rng.shuffle(ids)
        texts: list[str] = []
        for doc_id in ids:
            stored = self.get(doc_id)
            doc = Document(doc_id, stored.text, path=stored.path, language=stored.language)
            texts += [c.embed_text for c in self.chunk(doc)]
            if len(texts) >= sample:
                break
        return texts[:sample]

    def delete(self, doc_id: str) -> None:
        """Remove ``doc_id`` and its chunks; :class:`DocumentNotFoundError` if it is not stored."""
        self._check_writable()
        with self._lock, self._store.transaction() as db:
            if self._store.document(doc_id) is None:
                raise DocumentNotFoundError(f"no document {doc_id!r}")
            self._store.delete(db, doc_id)
        self._save_if_due()

    def delete_many(self, doc_ids: Iterable[str]) -> int:
        """Remove every stored document among ``doc_ids`` in one transaction; returns how many were stored."""
        self._check_writable()
        wanted = list(dict.fromkeys(doc_ids))
        with self._lock, self._store.transaction() as db:
            present = self._store.hashes(wanted)
            stored = [d for d in wanted if d in present]
            for doc_id in stored:
                self._store.delete(db, doc_id)
        self._save_if_due()
        return len(stored)

    def plan(self, docs: Iterable[Document]) -> AddResult:
        """What :meth:`add` would do with ``docs`` (added, updated, unchanged), without chunking or writing."""
        self._check_open()
        result = AddResult()
        for batch in _batched(docs, 500):
            latest = {d.doc_id: d for d in batch}
            with self._lock:
                stored = self._store.hashes(list(latest))
            for doc in latest.values():
                old = stored.get(doc.doc_id)
                if old is None:
                    result.added += 1
                elif old[0] == self.encoding.content_hash(doc):
                    result.unchanged += 1
                else:
                    result.updated += 1
        return result

    def _save_if_due(self) -> None:
        """Writers save the index once it was rebuilt, or once :data:`SAVE_AFTER_CHUNKS` chunks (or 5% of the
        collection, if more) changed since the last save: other processes then open it with little to replay,
        and never rebuild a structure the writer already rebuilt."""
        if self.readonly:
            return
        with self._lock:
            due = self._vectors.rebuilt
            if not due:
                due = self._vectors.unsaved(self._store) >= max(SAVE_AFTER_CHUNKS, self._store.counts()["chunks"] // 20)
        if due:
            self.flush()

    def flush(self) -> None:
        """Save the FAISS index at the store's generation, unless the saved one is already that.

        The store itself is always durable; the saved index only spares the next open a rebuild.
        """
        if self.readonly:
            return
        with self._lock:
            self._vectors.save(self._store)

    # -- reading ---------------------------------------------------------------------------------------

    def doc_ids(self, prefix: str = "", *, walked: bool = False) -> list[str]:
        """Stored doc_ids that start with ``prefix`` (all with ``""``), sorted; with ``walked``, only the
        documents a directory walk stored (not those given as JSONL or through the API)."""
        self._check_open()
        with self._lock:
            return self._store.doc_ids(prefix, walked=walked)

    def content_hashes(self) -> dict[str, str]:
        """``doc_id -> content hash`` of every stored document: a document whose
        ``collection.encoding.content_hash(doc)`` equals its stored hash is left unchanged by :meth:`add` (so an
        encoder elsewhere need not encode it)."""
        self._check_open()
        with self._lock:
            return self._store.content_hashes()

    def get(self, doc_id: str) -> StoredDocument:
        self._check_open()
        with self._lock:
            doc = self._store.document(doc_id)
        if doc is None:
            raise DocumentNotFoundError(f"no document {doc_id!r}")
        return doc

    def search(self, query: str, k: int = 10, **options: Any) -> list[Hit]:
        """Top-``k`` documents for one query; ``options`` as for :meth:`search_many`."""
        return self.search_many([query], k, **options)[0]

    def search_many(
        self,
        queries: list[str],
        k: int = 10,
        *,
        chunks_per_doc: int = 3,
        dim: int | None = None,
        agg: AggMode = "maxsim",
        mode: SearchMode | None = None,
        fusion: Fusion | None = None,
        alpha: float | None = None,
        text_alpha: float | None = None,
        layers: int | None = None,
        funnel: int | str | None = None,
        oversample: int | None = None,
        proximity: bool | None = None,
    ) -> list[list[Hit]]:
        """Top-``k`` documents per query.

        ``mode`` picks the channels (default: the collection's ``search_mode``): ``dense`` (the embeddings),
        ``lexical`` (BM25 over code-aware terms, see ``index.lexical``) or ``hybrid`` (both, fused per chunk
        by ``fusion`` -- ``rrf``, ``convex``, ``zscore``, ``adaptive`` or ``pnorm`` -- with weight ``alpha`` on the
        dense channel, ``text_alpha`` for prose chunks; an ``alpha`` given alone weighs every chunk). The lexical
        channel scores a chunk by BM25 plus term proximity (how close together it holds different query terms,
        ``lexical.proximity``); ``proximity=False`` scores by BM25 alone. A document scores as its best chunk and
        comes back with its best chunks' spans. In dense mode, ``agg`` ``mean``, ``max`` and ``weighted`` (by token
        count) instead score one vector per document aggregated from its chunk vectors, with no spans. ``dim``
        searches a Matryoshka prefix of the vectors (see ``info()["dims"]``), re-normalised. Views other than the
        full chunk vectors are built in memory on their first search. ``layers`` encodes the queries with that many
        transformer layers (default: the depth the documents were encoded at; another depth needs a calibrated
        collection, see :meth:`calibrate`).
        ``funnel`` (a dense chunk search; the default mode then is dense) shortlists the best ``oversample * k``
        documents (``oversample`` default 4) by that short prefix of the vectors (or by their sign bits with
        ``"binary"``), then ranks them by all their chunks at ``dim``, read from the store
        (``search.rank_funnel``): no index of the ``dim`` view is built for it, only the shortlist's.
        """
        view, channels = check_search(
            self.manifest, queries, k, chunks_per_doc, dim, agg, mode, fusion, alpha, funnel, text_alpha, proximity
        )
        short = check_funnel(view, channels, funnel, oversample, k)
        hits = self._search(queries, k, chunks_per_doc, view, channels, layers, short, oversample)
        if self._vectors.rebuilt:  # this search rebuilt the structure (grown, gone stale): save it for others
            self._save_if_due()
        return hits

    def _search(
        self,
        queries: list[str],
        k: int,
        chunks_per_doc: int,
        view: View,
        channels: Channels,
        layers: int | None,
        short: View | None,
        oversample: int | None,
    ) -> list[list[Hit]]:
        self._check_open()
        if channels.mode != "dense" and not self._store.has_lexical():
            raise InvalidInputError(
                f"collection at {self.root} has no lexical index yet (made by an older longvec): open it for "
                "writing once (`longvec index` or `longvec serve`) to build it, or search with mode 'dense'"
            )
        depth = self._query_depth(layers) if channels.mode != "lexical" else None
        raw = None
        if channels.mode != "lexical":
            raw = self.embedder.encode_queries(queries, **({"layers": depth} if depth is not None else {}))
        with self._lock:
            searched = short or view
            cache = self._views.get(searched) or self._views.setdefault(
                searched,
                VectorCache(
                    self.root, self.manifest.dim, searched, self._prefix, wanted="binary" if searched.binary else "flat"
                ),
            )
            for attempt in range(3):
                try:
                    with self._store.snapshot() as state:
                        qv = None if raw is None else self._query_vectors(raw, depth, view.dim)
                        if channels.mode == "lexical":
                            return self._rank_fused(None, None, queries, k, channels, chunks_per_doc, state.seq)
                        index = cache.current(self._store, state, may_retry=attempt < 2)
                        if short is not None:
                            assert raw is not None and qv is not None
                            return rank_funnel(
                                index,
                                self._query_vectors(raw, depth, short.dim),
                                qv,
                                k,
                                oversample=oversample or FUNNEL_OVERSAMPLE,
                                chunks_per_doc=chunks_per_doc,
                                max_id=state.seq,
                                lookup=self._store.chunk_rows,
                                ranges=self._store.chunk_ranges,
                                range_vectors=partial(self._range_vectors, dim=view.dim, max_id=state.seq),
                            )
                        if channels.mode == "hybrid":
                            return self._rank_fused(
                                index, qv, queries, k, channels, chunks_per_doc, state.seq, view.dim
                            )
                        return rank(
                            index,
                            qv,
                            k,
                            chunks_per_doc=0 if view.per_document else chunks_per_doc,
                            max_id=state.seq,
                            lookup=self._store.chunk_rows,
                            ranges=self._store.chunk_ranges,
                        )
                except SnapshotTooOld:  # a writer saved a newer index meanwhile: look again
                    continue
        raise AssertionError("unreachable: the last attempt rebuilds instead of retrying")

    def _range_vectors(
        self, ranges: list[tuple[int, int]], *, dim: int, max_id: int
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The stored chunks with ids in ``ranges`` (up to ``max_id``) in batches: ``(ids, vectors cut to dim as
        views cut them)``."""
        for ids, vectors in self._store.range_vectors(ranges, self.manifest.dim, max_id):
            yield ids, self._prefix(vectors, dim)

    def _rank_fused(
        self,
        index: Any,
        qv: np.ndarray | None,
        queries: list[str],
        k: int,
        channels: Channels,
        chunks_per_doc: int,
        max_id: int,
        dim: int | None = None,
    ) -> list[list[Hit]]:
        """Lexical or hybrid ranking, inside the caller's store snapshot (both channels see one generation);
        ``dim`` is the dense view's, for scoring stored chunk vectors the dense shortlist left out."""

        def dense_scores(query: np.ndarray, ids: Sequence[int]) -> np.ndarray:
            return self._prefix(self._store.vectors(ids, self.manifest.dim), dim or self.manifest.dim) @ query

        return rank_fused(
            index,
            qv,
            [match_expression(q) for q in queries],
            k,
            channels=channels,
            chunks_per_doc=chunks_per_doc,
            max_id=max_id,
            lexical=self._store.lexical_search,
            lexical_scores=self._store.lexical_scores,
            proximity=self._store.proximity_scores,
            dense_scores=dense_scores,
            lookup=self._store.chunk_rows,
            ranges=self._store.chunk_ranges,
            doc_vectors=self.manifest.doc_vector,
        )

    def chunk_vectors(self) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
        """Every stored chunk vector: ``(doc_ids, row_doc, vectors, n_tokens)``.

        Row ``i`` of ``vectors`` belongs to document ``doc_ids[row_doc[i]]`` and has ``n_tokens[i]`` tokens
        (the weights of a length-weighted aggregation). For experiments and exports.
        """
        with self._lock, self._store.snapshot():
            _, row_ids, tokens, vectors = self._store.chunk_table(self.manifest.dim)
        doc_ids = list(dict.fromkeys(row_ids))
        position = {d: i for i, d in enumerate(doc_ids)}
        row_doc = np.fromiter((position[d] for d in row_ids), dtype=np.int64, count=len(row_ids))
        return doc_ids, row_doc, vectors, tokens

    def counts(self) -> dict[str, int]:
        """``documents`` and ``chunks`` stored now."""
        self._check_open()
        with self._lock, self._store.snapshot():
            return self._store.counts()

    def decode_tokens(self, ids: Sequence[int]) -> str:
        """The text of token ``ids`` of this collection's model (:class:`InvalidInputError` for an id outside its
        vocabulary)."""
        self._check_open()
        size = self.counter.vocab_size
        bad = [i for i in ids if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < size]
        if bad or not ids:
            raise InvalidInputError(f"token ids must be in [0, {size}) and not empty, got {bad[:3] or 'none'}")
        text = self.counter.decode(list(ids))
        if not text.strip():
            raise InvalidInputError("the token ids decode to no text (only special tokens)")
        return text

    def info(self) -> dict[str, Any]:
        """Manifest, counts and limits, read from the store (no index is loaded)."""
        self._check_open()
        with self._lock, self._store.snapshot():
            counts = self._store.counts()
        m = self.manifest
        gpus = gpu_count()
        return {
            "collection": str(self.root),
            "model": m.model,
            "model_fingerprint": m.model_fingerprint,
            "dim": m.dim,
            "dims": list(allowed_dims(m.dim)),
            "aggregations": list(AGG_MODES),
            "strategy": m.strategy,
            "max_tokens": m.max_tokens,
            "overlap_tokens": m.overlap_tokens,
            "encoder": m.encoder,
            "layers": model_depth(self.embedder, m.layers) if getattr(self.embedder, "layers", None) else None,
            "model_layers": getattr(self.embedder, "layers", None),
            "native_matryoshka": sorted(_native_axes(self.embedder)),
            "calibration": json.loads(meta) if (meta := self._store.meta("calibration")) else None,
            "code_context": m.code_context,
            "path_context": m.path_context,
            "doc_vector": m.doc_vector,
            "split_tokens": m.split_tokens,
            "search_mode": m.search_mode,
            "fusion": m.fusion,
            "alpha": m.alpha,
            "text_alpha": m.text_alpha,
            "lexical_index": self._store.has_lexical(),
            "index_type": m.index_type,
            "document_prompt": m.document_prompt,
            "query_prompt": m.query_prompt,
            "chunker_version": m.chunker_version,
            "longvec_version": longvec_version(),
            "created_by": m.longvec_version,
            "created": m.created,
            "gpu": gpus > 0,
            "gpus": gpus,
            "limits": {"max_k": MAX_K},
            **counts,
        }

    # -- lifecycle -------------------------------------------------------------------------------------

    def close(self) -> None:
        """Save the index (writers), close the store, release the writer lock. Closing twice is a no-op. Waits for
        an add or a calibration running in another thread to finish, and for the searches holding the lock."""
        with self._space, self._lock:
            if self._closed:
                return
            try:
                self.flush()
            finally:
                self._closed = True
                self._store.close()
                self._release_writer_lock()

    def __enter__(self) -> Collection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_open(self) -> None:
        if self._closed:
            raise CollectionClosedError(f"collection at {self.root} is closed")

    def _check_writable(self) -> None:
        self._check_open()
        if self.readonly:
            raise InvalidInputError(f"collection at {self.root} was opened read-only")

    def _release_writer_lock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()
            self._lock_file = None
