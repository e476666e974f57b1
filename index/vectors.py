"""The FAISS index over chunk vectors: one interface over several FAISS structures, GPU FAISS where it helps.

Structures (``kind``): ``flat`` (exact inner product), ``hnsw`` (graph, approximate; FAISS cannot remove from
it, so removed ids are tombstones filtered out of every search until a rebuild), ``ivf`` (inverted lists over
k-means cells, approximate, trained on a sample), ``ivfpq`` (the same cells holding product-quantised codes of
one byte per :data:`PQ_DIMS_PER_BYTE` dims, 32x smaller than float32; the candidates its approximate scores find
are rescored exactly with the stored vectors, see :attr:`VectorIndex.exact`) and ``sq8`` (exact scan over 8-bit
scalar-quantised vectors, 4x smaller, trained on a sample for each coordinate's range); ``binary`` (one sign bit
per coordinate, 32x smaller, searched by Hamming distance) serves only as a funnel's shortlist. ``auto``
resolves to ``flat`` below :data:`AUTO_HNSW_FROM` vectors and ``hnsw`` from there (:func:`resolve_kind`). A
trained structure on too few vectors to train is built as ``flat`` until there are enough, and retrained once the
collection has grown :data:`RETRAIN_GROWTH` times past its training size (:meth:`VectorIndex.stale`).

The index is a cache of the SQLite store. It is saved as ``vectors-<generation>.faiss`` (with HNSW's tombstones
in ``vectors-<generation>.dead.npy``) beside a stamp, ``vectors.json``, naming those files with the store
generation and chunk sequence number they reflect; the stamp is replaced only after the files are complete and
fsynced, so a reader never pairs a stamp with the wrong file, and opening after a crash replays only the store's
writes after the stamp's sequence number (``sync.VectorCache``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

GPU_MAX_K = 2048  # GPU FAISS's largest k; larger searches run on the CPU copy
STAMP = "vectors.json"
log = logging.getLogger("longvec.index")

IndexKind = Literal["flat", "hnsw", "ivf", "ivfpq", "sq8", "binary"]
INDEX_KINDS: tuple[IndexKind, ...] = ("flat", "hnsw", "ivf", "ivfpq", "sq8", "binary")
# What a collection may ask for; ``binary`` (sign bits, Hamming distance) only shortlists a funnel search.
INDEX_TYPES: tuple[str, ...] = ("auto", "flat", "hnsw", "ivf", "ivfpq", "sq8")
IVF_KINDS = ("ivf", "ivfpq")
TRAINED_KINDS = ("ivf", "ivfpq", "sq8")
AUTO_HNSW_FROM = 250_000  # auto: exact flat search below this many vectors, HNSW from it (and down to half)
HNSW_M = 32  # graph degree: recall and memory (4 * 2 * M bytes of links per vector) grow with it
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 256  # the search beam (at least k): recall@10 0.974 at 100k real vectors, 0.946 at 128
HNSW_MAX_EF = 16_384  # the widest beam a search that came back short (filtered ids) is retried with
HNSW_REBUILD_DEAD = 0.25  # rebuild a graph once this share of its vectors are tombstones
IVF_POINTS_PER_LIST = 64  # training points per k-means cell (FAISS warns below 39)
IVF_MIN_VECTORS = 1_000  # fewer: built as flat until there are this many
IVF_PROBE_SHARE = 8  # cells searched: nlist / 8 (at least 8): recall@10 0.957 at 100k real vectors, 0.917 at / 16
SQ_MIN_VECTORS = 1_000
PQ_DIMS_PER_BYTE = 8  # product quantiser: one 8-bit code (256 centroids) per 8 dims
PQ_TRAIN_POINTS = 40 * 256  # training points a product quantiser needs at least (FAISS warns below 39 * 256)
IVFPQ_MIN_VECTORS = PQ_TRAIN_POINTS
OPQ_TRAIN_POINTS = 25_600  # the OPQ rotation learns from this many of the training sample (its cost grows with it)
OPQ_ITERATIONS = 10  # alternations of rotation and codebooks: 100k real vectors build in 54 s (31 s without OPQ)
PQ_REFINE = 10  # an IVF-PQ search rescores this many times k candidates exactly: recall@10 0.966 (0.931 at 4)
PQ_REFINE_MAX = 8192  # ... but at most this many per query (large k): one query's candidates are read at a time
TRAIN_SAMPLE = 100_000  # vectors a scalar quantiser learns its ranges from, at most
RETRAIN_GROWTH = 4  # retrain once a collection holds this many times the vectors it was trained on


def _faiss() -> Any:
    import faiss

    return faiss


def gpu_count() -> int:
    faiss = _faiss()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


_GPU_LOCK = threading.Lock()  # FAISS GPU resources are not safe to use from several threads at once


@cache
def _gpu_resources(device: int) -> Any:
    """One ``StandardGpuResources`` per GPU for the process (each holds scratch memory and CUDA streams); use it
    under :data:`_GPU_LOCK`."""
    return _faiss().StandardGpuResources()


@cache
def _binary_rotation(dim: int) -> np.ndarray:
    """A fixed random orthogonal ``(dim, dim)`` matrix: it spreads variance evenly over the coordinates before
    their signs are taken (on principal axes, as calibrated vectors are, trailing signs would be noise)."""
    q, r = np.linalg.qr(np.random.default_rng(20261201).standard_normal((dim, dim)))
    return np.ascontiguousarray(q * np.sign(np.diag(r)), dtype=np.float32)


def resolve_kind(wanted: str, n: int, current: str | None = None) -> IndexKind:
    """The structure to build for ``n`` vectors when a collection asks for ``wanted`` (``auto`` or a kind);
    ``current`` is what is built now: a switch back happens only below half the threshold that switched (auto's
    HNSW threshold, a trained kind's minimum), so that a collection hovering around it does not rebuild back
    and forth."""
    if wanted == "auto":
        if n >= AUTO_HNSW_FROM or (current == "hnsw" and n >= AUTO_HNSW_FROM // 2):
            return "hnsw"
        return "flat"
    if wanted not in INDEX_KINDS:
        raise ValueError(f"index type {wanted!r} not in {INDEX_TYPES}")
    minimum = {"ivf": IVF_MIN_VECTORS, "ivfpq": IVFPQ_MIN_VECTORS, "sq8": SQ_MIN_VECTORS}.get(wanted, 0)
    if n < (minimum // 2 if current == wanted else minimum):
        return "flat"  # too few vectors to train on: exact until there are enough
    return wanted  # type: ignore[return-value]


def ivf_lists(n: int) -> int:
    """k-means cells for ``n`` vectors: about 4 sqrt(n), with at least :data:`IVF_POINTS_PER_LIST` points each."""
    return int(max(1, min(4 * np.sqrt(n), n // IVF_POINTS_PER_LIST)))


def train_size(kind: str, n: int) -> int:
    """How many of a collection's ``n`` vectors to train a ``kind`` on (0: it needs no training)."""
    if kind == "ivf":
        return min(n, IVF_POINTS_PER_LIST * ivf_lists(n))
    if kind == "ivfpq":
        return min(n, max(IVF_POINTS_PER_LIST * ivf_lists(n), PQ_TRAIN_POINTS))
    return min(n, TRAIN_SAMPLE) if kind in ("sq8", "binary") else 0


def pq_bytes(dim: int) -> int:
    """Bytes of an IVF-PQ code for ``dim``-dim vectors: one per :data:`PQ_DIMS_PER_BYTE` dims, rounded to a
    divisor of ``dim`` (each sub-quantiser takes an equal slice)."""
    m = max(1, dim // PQ_DIMS_PER_BYTE)
    while dim % m:
        m -= 1
    return m


@dataclass(frozen=True)
class Stamp:
    """What a saved index reflects: the store's ``generation`` and its chunk sequence number ``seq``;
    ``size`` is the file's length in bytes (a truncated file does not pass for the saved one). ``kind`` and
    ``trained_on`` describe the structure; ``dead`` names HNSW's tombstone file (empty: none)."""

    file: str
    generation: int
    seq: int
    ntotal: int
    dim: int
    size: int
    kind: str = "flat"
    trained_on: int = 0
    dead: str = ""

    def intact(self, directory: Path) -> bool:
        """Whether the files the stamp names are there (the index with the size it was saved with)."""
        try:
            ok = (directory / self.file).stat().st_size == self.size
            return ok and (not self.dead or (directory / self.dead).exists())
        except FileNotFoundError:
            return False


def _new_cpu(kind: IndexKind, dim: int, trained_on: int) -> Any:
    faiss = _faiss()
    if kind == "binary":
        return faiss.IndexBinaryIDMap2(faiss.IndexBinaryFlat(dim))
    if kind == "flat":
        return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
    if kind == "hnsw":
        graph = faiss.IndexHNSWFlat(dim, HNSW_M, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
        return faiss.IndexIDMap2(graph)
    if kind == "ivf":
        nlist = ivf_lists(trained_on)
        return faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
    if kind == "ivfpq":
        m = pq_bytes(dim)
        # OPQ: a learned rotation that balances the variance the sub-quantisers get (calibrated vectors put most of
        # it in their first coordinates, which one byte cannot code): recall@10 0.93 against 0.79 without it on
        # 100k real vectors (4x k rescored)
        rotation = faiss.OPQMatrix(dim, m)
        rotation.max_train_points, rotation.niter = OPQ_TRAIN_POINTS, OPQ_ITERATIONS
        codes = faiss.IndexIVFPQ(faiss.IndexFlatIP(dim), dim, ivf_lists(trained_on), m, 8, faiss.METRIC_INNER_PRODUCT)
        index = faiss.IndexPreTransform(rotation, codes)
        index.own_fields = True  # SWIG: the rotation and the codes live as long as the wrapper
        rotation.this.disown(), codes.this.disown()
        return index
    sq = faiss.IndexScalarQuantizer(dim, faiss.ScalarQuantizer.QT_8bit, faiss.METRIC_INNER_PRODUCT)
    sq.sq.rangestat = faiss.ScalarQuantizer.RS_minmax
    sq.sq.rangestat_arg = 0.1  # each coordinate's sample range widened by 10% either side: room for later vectors
    return faiss.IndexIDMap2(sq)


class VectorIndex:
    """Chunk vectors keyed by chunk row id, in the FAISS structure ``kind``. Trained kinds (``ivf``, ``ivfpq``,
    ``sq8``) need :meth:`train` before the first :meth:`add` (``binary`` may be trained: its codes are then centred
    on the sample's mean). Not thread-safe: callers hold the collection lock.

    ``exact`` (``ivfpq``): a function giving the float vectors of chunk ids (the owner reads them from the store);
    with it, a search takes :data:`PQ_REFINE` times ``k`` candidates by the codes' approximate scores and ranks
    them by their exact inner products (FAISS's ``IndexRefine``, with the full vectors on disk instead of in
    memory). Without it, scores are the codes' approximations."""

    def __init__(self, dim: int, *, kind: IndexKind = "flat", use_gpu: bool | None = None, trained_on: int = 0) -> None:
        if kind not in INDEX_KINDS:
            raise ValueError(f"index kind {kind!r} not in {INDEX_KINDS}")
        if kind == "binary" and dim % 8:
            raise ValueError(f"binary codes need a multiple of 8 dims, got {dim}")
        self.dim, self.kind = dim, kind
        self.trained_on = trained_on
        self._cpu = _new_cpu(kind, dim, trained_on) if kind not in IVF_KINDS or trained_on else None
        # GPU FAISS has flat, IVF and binary structures; HNSW and the flat scalar quantiser search on the CPU.
        self.use_gpu = (gpu_count() > 0 if use_gpu is None else use_gpu) and kind in ("flat", *IVF_KINDS, "binary")
        self._gpu: Any = None  # GPU copy for search: extended by adds, dropped by removals
        self._gpu_ids: np.ndarray | None = None  # flat / binary: the id of each GPU row
        self._center = np.zeros(dim, np.float32)  # binary: subtracted before the signs are taken
        self._present = np.zeros(0, dtype=bool)  # hnsw: which ids the graph holds alive, by id
        self._n_dead = 0  # hnsw: tombstones (vectors in the graph, removed from the collection)
        self._alive: np.ndarray | None = None  # hnsw with tombstones: _present packed, cached for searches
        self.exact: Callable[[np.ndarray], np.ndarray] | None = None  # ivfpq: float vectors by id, for rescoring

    @property
    def trained(self) -> bool:
        return self._cpu is not None and bool(self._cpu.is_trained)

    @property
    def ntotal(self) -> int:
        """Live vectors (tombstones not counted)."""
        return (int(self._cpu.ntotal) if self._cpu is not None else 0) - self._n_dead

    def train(self, sample: np.ndarray, n: int) -> None:
        """Fit a trained kind's parameters (IVF cells, SQ ranges, the binary codes' centre) on ``sample`` of a
        collection of ``n`` vectors (see :func:`train_size`); no-op for the others. Call before any add."""
        if self.kind not in (*TRAINED_KINDS, "binary"):
            return
        sample = np.ascontiguousarray(sample, dtype=np.float32)
        self.trained_on = n
        self._cpu = _new_cpu(self.kind, self.dim, n)
        if self.kind == "binary":
            self._center = sample.mean(axis=0).astype(np.float32) if len(sample) else self._center
            return
        if self.kind in IVF_KINDS:
            self._ivf().cp.seed = 1234  # k-means is deterministic for a sample
        self._cpu.train(sample)
        self._gpu = None

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if not len(ids):
            return
        if not self.trained:
            raise RuntimeError(f"a {self.kind} index must be trained before vectors are added")
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        codes = self._codes(vectors)
        self._cpu.add_with_ids(codes, ids)
        if self.kind == "hnsw":
            if len(self._present) <= int(ids.max()):
                self._present = np.concatenate([self._present, np.zeros(int(ids.max()) + 1 - len(self._present), bool)])
            self._present[ids] = True
            self._alive = None
        if self._gpu is not None:  # keep the GPU copy in step rather than copying everything again
            with _GPU_LOCK:
                if self._gpu_ids is None:
                    self._gpu.add_with_ids(codes, ids)
                else:
                    self._gpu.add(codes)
                    self._gpu_ids = np.concatenate([self._gpu_ids, ids])

    def remove(self, ids: list[int] | np.ndarray) -> None:
        """Drop ``ids`` (ids not in the index are ignored); HNSW marks them as tombstones (O(len(ids)))."""
        if not len(ids) or self._cpu is None:
            return
        ids = np.unique(np.ascontiguousarray(ids, dtype=np.int64))
        if self.kind == "hnsw":
            live = ids[(ids >= 0) & (ids < len(self._present))]
            live = live[self._present[live]]
            self._present[live] = False
            self._n_dead += len(live)
            self._alive = None
            return  # the graph itself is unchanged: its GPU-less search filters the tombstones
        self._cpu.remove_ids(ids)
        self._gpu = None

    def stale(self) -> bool:
        """Whether the structure should be rebuilt: a graph whose tombstones passed :data:`HNSW_REBUILD_DEAD`, or a
        trained structure holding :data:`RETRAIN_GROWTH` times the vectors it was trained on."""
        total = self.ntotal + self._n_dead
        if self.kind == "hnsw":
            return total > 0 and self._n_dead > HNSW_REBUILD_DEAD * total
        return self.kind in TRAINED_KINDS and self.ntotal > RETRAIN_GROWTH * max(self.trained_on, 1)

    def _ids(self) -> np.ndarray:
        return _faiss().vector_to_array(self._cpu.id_map).astype(np.int64)

    def search(
        self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` per query row; missing slots have id -1, and only when fewer than ``k``
        allowed vectors exist (approximate structures that come back short are searched again with twice the
        effort, up to an exhaustive search).

        ``allowed`` is a bitmap over ids (``np.packbits(..., bitorder="little")``: bit ``i`` set = id ``i``
        may be returned); searches with it run on the CPU index.
        """
        k = max(1, min(k, self.ntotal))
        if self.ntotal == 0:
            return np.full((len(queries), 1), -np.inf, np.float32), np.full((len(queries), 1), -1, np.int64)
        if self.kind == "ivfpq" and self.exact is not None:
            return self._refined(queries, k, allowed)
        return self._search(queries, k, allowed)

    def _refined(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """IVF-PQ: :data:`PQ_REFINE` times ``k`` candidates by the codes (at most :data:`PQ_REFINE_MAX`, at least
        ``k``), ranked by exact inner products with their float vectors (read through :attr:`exact` one query at
        a time, so memory stays at one query's candidates); the top ``k`` of them."""
        assert self.exact is not None
        fetch = min(self.ntotal, max(k, min(PQ_REFINE * k, PQ_REFINE_MAX)))
        _, candidates = self._search(queries, fetch, allowed)
        scores = np.full((len(queries), k), -np.inf, np.float32)
        ids = np.full((len(queries), k), -1, np.int64)
        for q, row in enumerate(candidates):
            found = row[row >= 0]
            if not len(found):
                continue
            exact = self.exact(found) @ np.asarray(queries[q], np.float32)
            order = np.argsort(-exact, kind="stable")[:k]
            scores[q, : len(order)], ids[q, : len(order)] = exact[order], found[order]
        return scores, ids

    def _search(self, queries: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        codes = self._codes(queries)
        if self._n_dead:
            alive = self._alive_bitmap()
            allowed = alive if allowed is None else _and(allowed, alive)
        found = self._gpu_search(codes, k) if allowed is None and self.use_gpu and k <= GPU_MAX_K else None
        if found is not None:
            scores, ids = found
        else:
            scores, ids = self._cpu.search(codes, k, params=self._params(k, allowed))
        effort, most = self._effort(k), self._most_effort()
        while effort < most and (short := np.flatnonzero((ids < 0).any(axis=1))).size:
            effort = min(2 * effort, most)  # came back short (IVF cells, filtered graph): widen, on the CPU
            scores[short], ids[short] = self._cpu.search(codes[short], k, params=self._params(k, allowed, effort))
        if self.kind == "binary":  # Hamming distance h of d bits -> the inner product of the +-1 codes, over d
            scores = (self.dim - 2.0 * scores.astype(np.float32)) / self.dim
        return scores, ids

    def _gpu_search(self, codes: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray] | None:
        """The search on the GPU copy (made on first use), or ``None`` if the structure stays on the CPU."""
        with _GPU_LOCK:
            if self._gpu is None:
                self._to_gpu()
            if self._gpu is None:
                return None
            scores, pos = self._gpu.search(codes, k)
        ids = pos if self._gpu_ids is None else np.where(pos >= 0, self._gpu_ids[np.maximum(pos, 0)], -1)
        return scores, ids

    def _codes(self, vectors: np.ndarray) -> np.ndarray:
        """What the structure stores for ``vectors``: float32 rows, or for ``binary`` the signs of the centred,
        randomly rotated rows, packed."""
        if self.kind == "binary":
            spread = (np.asarray(vectors, np.float32) - self._center) @ _binary_rotation(self.dim)
            return np.packbits(spread > 0, axis=1)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def _effort(self, k: int) -> int:
        """The search effort of an approximate kind: HNSW's beam, IVF's cells probed (0: exact kinds)."""
        if self.kind == "hnsw":
            return max(HNSW_EF_SEARCH, k)
        return self.nprobe if self.kind in IVF_KINDS else 0

    def _most_effort(self) -> int:
        """The effort at which a search that came back short stops widening: every IVF cell (exhaustive), an HNSW
        beam of the whole graph up to :data:`HNSW_MAX_EF` (beyond, a short result stands)."""
        if self.kind == "hnsw":
            return min(int(self._cpu.ntotal), HNSW_MAX_EF)
        return int(self._ivf().nlist) if self.kind in IVF_KINDS else 0

    def _params(self, k: int, allowed: np.ndarray | None, effort: int | None = None) -> Any:
        """FAISS search parameters: the kind's search effort, and the ``allowed`` bitmap as an id selector."""
        faiss = _faiss()
        effort = effort or self._effort(k)
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=effort)
        elif self.kind in IVF_KINDS:
            params = faiss.SearchParametersIVF(nprobe=effort)
        else:
            params = faiss.SearchParameters()
        if allowed is not None:
            bitmap = np.ascontiguousarray(allowed, dtype=np.uint8)
            selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))  # length in bytes
            selector.bitmap_ref = bitmap  # keeps the array alive as long as the selector
            params.sel = selector
            params.selector_ref = selector
        return params

    def search_settings(self) -> dict[str, int]:
        """The search effort of approximate kinds (HNSW's beam, IVF's cells searched of all), for reports."""
        if self.kind == "hnsw":
            return {"ef_search": HNSW_EF_SEARCH, "hnsw_m": HNSW_M, "tombstones": self._n_dead}
        if self.kind in IVF_KINDS and self._cpu is not None:
            return {"nprobe": self.nprobe, "nlist": int(self._ivf().nlist)}
        return {}

    @property
    def nprobe(self) -> int:
        """IVF cells probed: an eighth of them, at least 8 (all of them when there are fewer)."""
        if self.kind not in IVF_KINDS or self._cpu is None:
            return 0
        nlist = int(self._ivf().nlist)
        return min(nlist, max(8, nlist // IVF_PROBE_SHARE))

    def _ivf(self) -> Any:
        """The IVF structure inside an ``ivf`` / ``ivfpq`` index (behind IVF-PQ's rotation)."""
        return _faiss().extract_index_ivf(self._cpu)

    def _alive_bitmap(self) -> np.ndarray:
        if self._alive is None:
            self._alive = np.packbits(self._present, bitorder="little")
        return self._alive

    def _to_gpu(self) -> None:
        """A GPU copy for search on GPU 0 (one resource object per GPU for the process; callers hold
        :data:`_GPU_LOCK`): IVF through ``index_cpu_to_gpu`` (it keeps the ids), flat and binary as their stored
        rows with the ids mapped back."""
        faiss = _faiss()
        resources = _gpu_resources(0)
        if self.kind in IVF_KINDS:
            options = faiss.GpuClonerOptions()
            # IVF-PQ: float16 lookup tables (codes of 48+ bytes need them to fit GPU shared memory); for IVF-Flat
            # the same flag would store the vectors in float16, so it stays off there
            options.useFloat16 = self.kind == "ivfpq"
            try:
                gpu = faiss.index_cpu_to_gpu(resources, 0, self._cpu, options)
            except RuntimeError as exc:  # e.g. a PQ code size GPU FAISS has no kernel for: search on the CPU
                log.warning("%s index stays on the CPU: %s", self.kind, exc)
                self.use_gpu = False
                self._gpu = None
                return
            faiss.extract_index_ivf(gpu).nprobe = self.nprobe  # behind IVF-PQ's rotation, the IVF part
            self._gpu, self._gpu_ids = gpu, None
            return
        n = int(self._cpu.ntotal)
        if self.kind == "binary":
            gpu = faiss.GpuIndexBinaryFlat(resources, self.dim)
            rows = self._cpu.index.reconstruct_n(0, n) if n else np.zeros((0, self.dim // 8), np.uint8)
        else:
            gpu = faiss.GpuIndexFlatIP(resources, self.dim)
            rows = self._cpu.index.reconstruct_n(0, n) if n else np.zeros((0, self.dim), np.float32)
        gpu.add(np.ascontiguousarray(rows))
        self._gpu, self._gpu_ids = gpu, self._ids()

    def save(self, directory: Path, generation: int, seq: int) -> None:
        """Write the CPU index (and HNSW's tombstones beside it) under names no earlier save used, fsync them and
        the directory, then point the stamp at them; older files go. A crash at any point leaves the stamp
        naming complete files. Binary codes are built in memory only."""
        if self.kind == "binary":
            raise ValueError("binary shortlists are built in memory, not saved")
        faiss = _faiss()
        tag = f"vectors-{generation}-{uuid.uuid4().hex[:8]}"
        name, dead = f"{tag}.faiss", (f"{tag}.dead.npy" if self._n_dead else "")
        tmp = directory / (name + ".tmp")
        faiss.write_index(self._cpu if self._cpu is not None else _new_cpu("flat", self.dim, 0), str(tmp))
        _fsync_file(tmp)
        os.replace(tmp, directory / name)
        if dead:
            tmp = directory / (dead + ".tmp")
            with open(tmp, "wb") as f:
                np.save(f, np.flatnonzero(self._tombstones()).astype(np.int64))
            _fsync_file(tmp)
            os.replace(tmp, directory / dead)
        fsync_dir(directory)  # the files' renames are durable before the stamp names them
        stamp = Stamp(
            name,
            generation,
            seq,
            self.ntotal,
            self.dim,
            (directory / name).stat().st_size,
            self.kind if self._cpu is not None else "flat",
            self.trained_on,
            dead,
        )
        write_json_atomic(directory / STAMP, asdict(stamp))
        for old in directory.glob("vectors-*"):  # older saves and interrupted ones
            if old.name not in (name, dead, STAMP):
                old.unlink(missing_ok=True)

    def _tombstones(self) -> np.ndarray:
        """HNSW: a bool array over ids, set where the graph holds a vector the collection removed."""
        ids = self._ids()
        dead = np.zeros(int(ids.max(initial=-1)) + 1, dtype=bool)
        dead[ids] = True
        dead[: len(self._present)] &= ~self._present[: len(dead)]
        return dead

    @classmethod
    def load(cls, directory: Path, dim: int) -> tuple[VectorIndex, Stamp] | None:
        """The saved index and its stamp, or ``None`` if there is none usable (the caller rebuilds it).

        The index is a cache: a missing, damaged or mismatching file is logged and ignored, never an error; a
        save that replaced the files while they were read is read again.
        """
        for _ in range(3):  # a writer may replace the files between reading the stamp and opening them
            stamp = read_stamp(directory)
            if stamp is None or stamp.dim != dim or stamp.kind not in INDEX_KINDS or stamp.kind == "binary":
                return None
            if not stamp.intact(directory):
                continue
            try:
                cpu = _faiss().read_index(str(directory / stamp.file))
                dead = np.load(directory / stamp.dead) if stamp.dead else np.zeros(0, np.int64)
            except (RuntimeError, OSError, ValueError) as exc:
                if read_stamp(directory) != stamp:
                    continue  # a newer save replaced them meanwhile
                log.warning("saved index %s is unreadable, rebuilding it: %s", directory / stamp.file, exc)
                return None
            if cpu.ntotal - len(dead) != stamp.ntotal or cpu.d != dim:
                log.warning("saved index %s does not match its stamp, rebuilding it", directory / stamp.file)
                return None
            index = cls(dim, kind=stamp.kind, trained_on=stamp.trained_on)  # type: ignore[arg-type]
            index._cpu = cpu
            if index.kind == "hnsw":
                ids = index._ids()
                index._present = np.zeros(int(ids.max(initial=-1)) + 1, dtype=bool)
                index._present[ids] = True
                index._present[dead] = False
                index._n_dead = len(dead)
            return index, stamp
        return None


def _and(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise and of two packed bitmaps of different lengths (missing bytes are zero)."""
    n = min(len(a), len(b))
    return np.ascontiguousarray(a[:n] & b[:n])


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def read_stamp(directory: Path) -> Stamp | None:
    try:
        data = json.loads((directory / STAMP).read_text())
        return Stamp(**data)
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``path`` via a temporary file, fsync, rename, and fsync the directory so the rename survives."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
