"""Keeping the FAISS index in step with the store, in any process, without rebuilding it.

Every search runs inside a store snapshot and first brings the index to that snapshot's generation: an
index at an older generation adds the chunks with ids above its sequence number and drops the chunk ids
tombstoned since; one with no usable past (first use, pruned tombstones, an interrupted update) starts
from the saved file and catches up from there, or is rebuilt from the store in bounded batches. So a
reader opened beside a writer sees each committed write on its next search, and never a chunk id the
store no longer has.

Besides the full chunk vectors (the saved index), a collection can search other views (:class:`View`) of the same
store, built in memory on first use and kept in step the same way: Matryoshka prefixes of the chunk
vectors, and one aggregated vector per document. A document's vector is keyed by its first chunk id, so it
is added with the document's chunks and dropped with their tombstones.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from longvec.embedder import AGGREGATIONS, Aggregation, aggregate, truncate
from longvec.index.store import Store, StoreState
from longvec.index.vectors import VectorIndex, read_stamp, resolve_kind, train_size

AggMode = Literal["maxsim", "mean", "max", "weighted"]
AGG_MODES: tuple[AggMode, ...] = ("maxsim", *AGGREGATIONS)
# How a view cuts stored vectors to its ``dim`` (re-normalised): plain truncation, or a calibrated prefix map.
Prefix = Callable[[np.ndarray, int], np.ndarray]


def _truncated(vectors: np.ndarray, dim: int) -> np.ndarray:
    return truncate(vectors, dim) if dim < vectors.shape[-1] else vectors


@dataclass(frozen=True)
class View:
    """What an index holds: chunk vectors cut to ``dim`` (``maxsim``: a document scores as its best chunk),
    or one vector per document aggregated from them (``mean``, ``max``, ``weighted`` by token count), or with
    ``binary`` the sign bits of the chunk vectors cut to ``dim``."""

    dim: int
    agg: AggMode = "maxsim"
    binary: bool = False  # the chunk vectors' sign bits (a funnel's shortlist), searched by Hamming distance

    @property
    def per_document(self) -> bool:
        return self.agg != "maxsim"


def _rows(
    store: Store, full_dim: int, view: View, after: int, prefix: Prefix = _truncated
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``(ids, vectors)`` for ``view`` from the chunks with id > ``after``, a store batch at a time."""
    if not view.per_document:
        for ids, vectors in store.iter_vectors(full_dim, after=after):
            yield ids, prefix(vectors, view.dim)
        return
    how: Aggregation = view.agg  # type: ignore[assignment]
    carry: tuple[np.ndarray, list[str], np.ndarray, np.ndarray] | None = None
    for batch in store.iter_chunks(full_dim, after=after):
        ids, doc_ids, tokens, vectors = batch if carry is None else _join(carry, batch)
        # A document's chunks are contiguous: group runs of one doc_id; the last run may go on in the next batch.
        starts = [0] + [i for i in range(1, len(doc_ids)) if doc_ids[i] != doc_ids[i - 1]]
        carry = (ids[starts[-1] :], doc_ids[starts[-1] :], tokens[starts[-1] :], vectors[starts[-1] :])
        if len(starts) > 1:
            yield _aggregated(ids, tokens, prefix(vectors, view.dim), starts, how)
    if carry is not None:
        ids, _, tokens, vectors = carry
        yield _aggregated(ids, tokens, prefix(vectors, view.dim), [0, len(ids)], how)


def _join(a: tuple, b: tuple) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
    return np.concatenate([a[0], b[0]]), [*a[1], *b[1]], np.concatenate([a[2], b[2]]), np.vstack([a[3], b[3]])


def _aggregated(
    ids: np.ndarray, tokens: np.ndarray, vectors: np.ndarray, bounds: list[int], how: Aggregation
) -> tuple[np.ndarray, np.ndarray]:
    """One vector per run ``bounds[i]:bounds[i + 1]`` of ``vectors`` (cut to the view's size), keyed by the run's
    first chunk id."""
    runs = list(zip(bounds[:-1], bounds[1:], strict=True))
    out = np.stack([aggregate(vectors[a:b], how, tokens[a:b]) for a, b in runs])
    return np.asarray([ids[a] for a, _ in runs], dtype=np.int64), out


class SnapshotTooOld(Exception):
    """The saved index is newer than the caller's snapshot: take a new snapshot and ask again."""


class VectorCache:
    """One view's FAISS index and the store generation it reflects (``None``: unknown, reload).

    Only the full chunk view is saved and loaded (``root``); others are rebuilt in memory on first use. ``prefix``
    cuts stored vectors to a shorter view's size (read when rows are added, so it must follow the store: a
    collection's calibration changes only together with every stored vector, which makes every view rebuild).
    ``wanted`` is the FAISS structure the collection asks for (``vectors.INDEX_TYPES``; views other than the full
    one are flat): a loaded or caught-up index of another structure than it resolves to, or one gone stale
    (``VectorIndex.stale``), is rebuilt from the store.
    """

    def __init__(
        self,
        root: Path,
        dim: int,
        view: View | None = None,
        prefix: Prefix = _truncated,
        wanted: str = "flat",
        *,
        writer: bool = False,
    ) -> None:
        self.root, self.full_dim, self.prefix, self.wanted, self.writer = root, dim, prefix, wanted, writer
        self.view = view or View(dim)
        self.saved = self.view == View(dim)
        self.index: VectorIndex | None = None
        self.generation: int | None = None
        self.seq = 0
        self.rebuilt = False  # a writer rebuilt the structure since it last saved: save soon

    def current(self, store: Store, state: StoreState, *, may_retry: bool = False) -> VectorIndex:
        """The index as of ``state`` (call inside the store snapshot that ``state`` came from).

        With ``may_retry``, raises :class:`SnapshotTooOld` instead of rebuilding from the store when the saved
        index is newer than ``state`` (a writer saved after the snapshot began).
        """
        if self.index is None or self.generation != state.generation:
            if self.index is None or self.generation is None or self.generation < state.tombstones_from:
                self._start(store, state, may_retry)
            if self.generation != state.generation:
                self._catch_up(store, state)
            assert self.index is not None
            if self._misbuilt(self.index):
                self._restart(store, state)
        assert self.index is not None
        if self.index.kind == "ivfpq":  # its candidates are rescored with the stored vectors (read in the snapshot)
            self.index.exact = lambda ids: self.prefix(store.vectors(ids.tolist(), self.full_dim), self.view.dim)
        return self.index

    def _misbuilt(self, index: VectorIndex) -> bool:
        """Whether ``index`` must be rebuilt: gone stale, or (in the writer, which decides the structure) not
        the structure the collection asks for at its size. Readers use whatever structure the writer saved."""
        if index.stale():
            return True
        return self.writer and resolve_kind(self.wanted, index.ntotal, index.kind) != index.kind

    def _restart(self, store: Store, state: StoreState) -> None:
        """Replace a misbuilt index: in a reader by the saved one if that is fit (its writer may have rebuilt it
        already), else by a rebuild from the store (a writer's saved index is never newer than its own)."""
        loaded = VectorIndex.load(self.root, self.full_dim) if self.saved and not self.writer else None
        if loaded is not None and state.tombstones_from <= loaded[1].generation <= state.generation:
            index, generation, seq = self.index, self.generation, self.seq
            self.index, self.generation, self.seq = loaded[0], loaded[1].generation, loaded[1].seq
            if self.generation != state.generation:
                self._catch_up(store, state)
            assert self.index is not None
            if not self._misbuilt(self.index):
                return
            self.index, self.generation, self.seq = index, generation, seq
        self.rebuild(store, state)

    def _start(self, store: Store, state: StoreState, may_retry: bool) -> None:
        """Load the saved index if it can catch up to ``state``, else rebuild from the store."""
        self.index, self.generation = None, None
        loaded = VectorIndex.load(self.root, self.full_dim) if self.saved else None
        if loaded is not None and state.tombstones_from <= loaded[1].generation <= state.generation:
            self.index, self.generation, self.seq = loaded[0], loaded[1].generation, loaded[1].seq
            return
        if loaded is not None and loaded[1].generation > state.generation and may_retry:
            raise SnapshotTooOld
        stamp = read_stamp(self.root) if self.saved else None
        self.rebuild(store, state, current=stamp.kind if stamp is not None else None)

    def rebuild(self, store: Store, state: StoreState, *, current: str | None = None) -> None:
        """Build the index from the store as of ``state``, in the structure ``wanted`` resolves to for its size
        (trained ones on a random sample of the stored vectors first); ``current`` is the structure it replaces
        (default: the one held), for :func:`resolve_kind`'s hysteresis."""
        if current is None and self.index is not None:
            current = self.index.kind
        self.index, self.generation = None, None
        n = store.counts()["chunks"] if not self.view.per_document else 0
        kind = resolve_kind(self.wanted, n, current) if not self.view.per_document else "flat"
        index = VectorIndex(self.view.dim, kind=kind)
        if sample := train_size(kind, n):
            index.train(self.prefix(store.sample_vectors(sample, self.full_dim), self.view.dim), n)
        for ids, vectors in _rows(store, self.full_dim, self.view, 0, self.prefix):
            index.add(ids, vectors)
        self.index, self.generation, self.seq = index, state.generation, state.seq
        self.rebuilt = self.writer and self.saved

    def unsaved(self, store: Store) -> int:
        """Chunks added or removed since the saved index (all of them when none is saved). Writers only."""
        stamp = read_stamp(self.root)
        state = store.state()
        if stamp is None:
            return store.counts()["chunks"]
        return max(0, state.seq - stamp.seq) + len(store.removed_since(stamp.generation))

    def _catch_up(self, store: Store, state: StoreState) -> None:
        assert self.index is not None and self.generation is not None
        since, index = self.generation, self.index
        self.generation = None  # if this is interrupted, the next call starts over
        # Removals first: FAISS shrinks its storage in place, so additions up to that size need no new buffer
        # (growing it reallocates: a transient copy of every vector).
        index.remove(store.removed_since(since))
        for ids, vectors in _rows(store, self.full_dim, self.view, self.seq, self.prefix):
            index.add(ids, vectors)
        self.generation, self.seq = state.generation, state.seq

    def save(self, store: Store) -> None:
        """Persist the index at the store's generation (skipped if the saved one is already that, intact),
        then prune the tombstones it makes unnecessary. Writers only."""
        assert self.saved, "only the full chunk view is saved"
        with store.snapshot() as state:
            stamp = read_stamp(self.root)
            held = self.index if self.generation == state.generation else None
            if (
                stamp is not None
                and stamp.generation == state.generation
                and stamp.intact(self.root)
                and (held is None or (stamp.kind, stamp.trained_on) == (held.kind, held.trained_on))
            ):
                return  # saved already (a structure rebuilt at the same generation is saved again)
            self.current(store, state).save(self.root, state.generation, state.seq)
            self.rebuilt = False
        store.prune_removed(state.generation)
