"""Ranking documents by their chunks: a document scores as its best chunk (max-sim), with bounded work.

A first FAISS search fetches a few times ``k`` chunks for every query of a batch. A query whose fetch held
fewer than ``k`` distinct documents (one document owns most of its nearest chunks) goes on alone: each
further round excludes every document it has already found, via a bitmap over chunk ids, so it only ever
fetches chunks of new documents. The ranking stays exact: a document first seen in a later round scores
below the last chunk of the round before, so below every document already found. Work per query is at
most one search per document returned, each of at most :data:`MAX_FETCH` chunks, whatever the other
queries of the batch or the sizes of the documents.

A hit's chunk list holds its document's best chunks among those fetched (up to ``chunks_per_doc``): its
first chunk is always the document's best, later ones may be missing when they ranked beyond the fetch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from longvec.embedder import InvalidSettingError, check_dim
from longvec.index.errors import InvalidInputError, UnsupportedShapeError
from longvec.index.lexical import FUSIONS, SEARCH_MODES, Fusion, SearchMode, fuse, resolve_weights
from longvec.index.manifest import Manifest
from longvec.index.store import ChunkRow
from longvec.index.sync import AGG_MODES, AggMode, View
from longvec.index.types import DOC_SYMBOL, ChunkHit, Hit, check_utf8
from longvec.index.vectors import VectorIndex

MAX_K = 1000
MIN_FETCH = 64
MAX_FETCH = 4096

Lookup = Callable[[Sequence[int]], dict[int, ChunkRow]]
Ranges = Callable[[Sequence[str]], list[tuple[int, int]]]
Lexical = Callable[[str, int, int], list[tuple[int, float]]]  # expression, limit, per document -> best chunks
LexicalScores = Callable[[str, Sequence[int]], dict[int, float]]  # expression, chunk ids -> BM25 where matched
Proximity = Callable[[str, Sequence[int]], dict[int, float]]  # expression, chunk ids -> term proximity where > 0
DenseScores = Callable[[np.ndarray, Sequence[int]], np.ndarray]  # query vector, chunk ids -> inner products
RangeVectors = Callable[[list[tuple[int, int]]], Iterable[tuple[np.ndarray, np.ndarray]]]  # id ranges -> batches


@dataclass(frozen=True)
class Channels:
    """Which channels a search reads and how it fuses them (``alpha`` weighs the dense one; ``text_alpha``, when
    set, instead of ``alpha`` for prose chunks; ``proximity``: the lexical channel adds term proximity to BM25)."""

    mode: SearchMode
    fusion: Fusion
    alpha: float
    text_alpha: float | None = None
    proximity: bool = True


def check_channels(
    mode: str, fusion: str, alpha: float, text_alpha: float | None = None, proximity: bool = True
) -> None:
    """:class:`InvalidInputError` unless ``mode``, ``fusion``, ``alpha``, ``text_alpha`` (``None``: ``alpha``
    for every chunk) and ``proximity`` are valid search settings."""
    if not isinstance(proximity, bool):
        raise InvalidInputError(f"proximity must be true or false, got {proximity!r}")
    if mode not in SEARCH_MODES:
        raise InvalidInputError(f"mode {mode!r} not in {SEARCH_MODES}")
    if fusion not in FUSIONS:
        raise InvalidInputError(f"fusion {fusion!r} not in {FUSIONS}")
    for name, weight in (("alpha", alpha), ("text_alpha", alpha if text_alpha is None else text_alpha)):
        if isinstance(weight, bool) or not (isinstance(weight, int | float) and 0.0 <= weight <= 1.0):
            raise InvalidInputError(f"{name} must be in [0, 1], got {weight!r}")


FUNNEL_OVERSAMPLE = 4  # documents shortlisted per document asked for, by default
MAX_OVERSAMPLE = 64
MAX_SHORTLIST = 4096  # documents a funnel shortlists per query, at most: the rescoring reads all their chunks


def check_funnel(
    view: View, channels: Channels, funnel: int | str | None, oversample: int | None, k: int
) -> View | None:
    """The view a funnel search shortlists with (``None``: no funnel), checked against the search's ``view``:
    ``funnel`` a Matryoshka prefix size shorter than the view's, or ``"binary"`` (the sign bits of the view's
    vectors); dense chunk search; ``oversample`` (default :data:`FUNNEL_OVERSAMPLE`) in [1, MAX_OVERSAMPLE] with
    ``oversample * k`` <= :data:`MAX_SHORTLIST`."""
    if funnel is None:
        if oversample is not None:
            raise InvalidInputError("oversample sets a funnel's shortlist: give a funnel too")
        return None
    if channels.mode != "dense" or view.per_document:
        raise InvalidInputError("a funnel shortlists chunks for dense search: it needs mode 'dense' and agg 'maxsim'")
    oversample = FUNNEL_OVERSAMPLE if oversample is None else oversample
    if isinstance(oversample, bool) or not isinstance(oversample, int) or not 1 <= oversample <= MAX_OVERSAMPLE:
        raise InvalidInputError(f"oversample must be an integer in [1, {MAX_OVERSAMPLE}], got {oversample!r}")
    if oversample * k > MAX_SHORTLIST:
        raise InvalidInputError(
            f"a funnel shortlists oversample * k = {oversample * k} documents, more than {MAX_SHORTLIST}: "
            "lower oversample or k"
        )
    if funnel == "binary":
        if view.dim % 8:
            raise UnsupportedShapeError(f"a binary funnel needs a multiple of 8 dims, got {view.dim}")
        return View(view.dim, binary=True)
    try:
        short = check_dim(funnel, view.dim)  # type: ignore[arg-type]
    except InvalidSettingError as exc:
        raise UnsupportedShapeError(f"funnel: {exc} (or 'binary')") from None
    if short >= view.dim:
        raise UnsupportedShapeError(f"funnel {funnel} must be shorter than the dims searched ({view.dim})")
    return View(short)


def check_search(
    manifest: Manifest,
    queries: list[str],
    k: int,
    chunks_per_doc: int,
    dim: int | None,
    agg: AggMode,
    mode: SearchMode | None = None,
    fusion: Fusion | None = None,
    alpha: float | None = None,
    funnel: int | str | None = None,
    text_alpha: float | None = None,
    proximity: bool | None = None,
) -> tuple[View, Channels]:
    """The view and channels a search with these arguments reads (``None``: the collection's defaults);
    :class:`InvalidInputError` (or ``InvalidSettingError`` for ``dim``) for bad ones. Needs only the
    manifest, so surfaces can check before loading a model. Aggregated document vectors (``agg`` other than
    ``maxsim``) and a ``funnel`` are dense searches: without a ``mode`` they search densely whatever the
    collection's default mode. Weights follow the collection's rule: an ``alpha`` given alone weighs every chunk,
    prose included; a ``text_alpha`` given weighs prose chunks (code then at ``alpha`` or the collection's); given
    neither, the collection's own weights. ``proximity`` (default on) adds term proximity to the lexical channel's
    BM25."""
    if mode is None and (agg != "maxsim" or funnel is not None):
        mode = "dense"
    channels = Channels(
        mode if mode is not None else manifest.search_mode,
        fusion if fusion is not None else manifest.fusion,
        *resolve_weights(alpha, text_alpha, (manifest.alpha, manifest.text_alpha)),
        True if proximity is None else proximity,
    )
    check_channels(channels.mode, channels.fusion, channels.alpha, channels.text_alpha, channels.proximity)
    if channels.mode != "dense" and agg != "maxsim":
        raise InvalidInputError(f"mode {channels.mode!r} ranks chunks: it needs agg 'maxsim', got {agg!r}")
    if manifest.doc_vector and agg != "maxsim":
        raise InvalidInputError(
            f"agg {agg!r} would fold a document's own vector (doc_vector) in with its chunks: use 'maxsim'"
        )
    if not 1 <= k <= MAX_K:
        raise InvalidInputError(f"k must be in [1, {MAX_K}], got {k}")
    if chunks_per_doc < 1:
        raise InvalidInputError(f"chunks_per_doc must be at least 1, got {chunks_per_doc}")
    if agg not in AGG_MODES:
        raise InvalidInputError(f"agg {agg!r} not in {AGG_MODES}")
    try:
        view = View(check_dim(dim, manifest.dim), agg)
    except InvalidSettingError as exc:
        raise UnsupportedShapeError(str(exc)) from None
    for q in queries:
        if not isinstance(q, str) or not q.strip():
            raise InvalidInputError("query must be a non-empty string")
        check_utf8(q, "query")
    return view, channels


class _Ranking:
    """One query's documents in score order, each with up to ``chunks_per_doc`` of its best chunks."""

    def __init__(self, k: int, chunks_per_doc: int) -> None:
        self.k, self.chunks_per_doc = k, chunks_per_doc
        self.docs: dict[str, list[ChunkHit]] = {}  # insertion order is score order
        self.scores: dict[str, float] = {}
        self.ids: dict[str, list[int]] = {}  # the chunks' row ids, parallel to ``docs``

    def take(self, scores: np.ndarray, ids: np.ndarray, rows: dict[int, ChunkRow]) -> list[str]:
        """Add a fetch (best first) to the ranking; returns the documents it found that were new."""
        new = []
        for s, i in zip(scores, ids, strict=True):
            if i < 0:
                break
            r = rows[int(i)]
            chunks = self.docs.get(r.doc_id)
            if chunks is None:
                if len(self.docs) == self.k:
                    continue  # ranked below the first k documents
                chunks = self.docs[r.doc_id] = []
                self.scores[r.doc_id], self.ids[r.doc_id] = float(s), []
                new.append(r.doc_id)
            if len(chunks) < self.chunks_per_doc:
                chunks.append(ChunkHit(r.chunk_id, r.start, r.end, float(s), r.symbol))
                self.ids[r.doc_id].append(int(i))
        return new

    @property
    def full(self) -> bool:
        return len(self.docs) >= self.k

    def hits(self) -> list[Hit]:
        return [Hit(doc_id, self.scores[doc_id], chunks) for doc_id, chunks in self.docs.items()]


def rank(
    index: VectorIndex,
    queries: np.ndarray,
    k: int,
    *,
    chunks_per_doc: int,
    max_id: int,
    lookup: Lookup,
    ranges: Ranges,
) -> list[list[Hit]]:
    """The top ``k`` documents per row of ``queries``; ``lookup`` maps chunk ids to rows, ``ranges`` gives
    each document's chunk id range (for excluding it), ``max_id`` bounds the chunk ids.

    ``chunks_per_doc=0`` is for an index of one vector per document (keyed by its first chunk id): the hits
    then carry no chunk spans, and no exclusion round is ever needed.
    """
    rankings = _rank(index, queries, k, chunks_per_doc=chunks_per_doc, max_id=max_id, lookup=lookup, ranges=ranges)
    return [ranking.hits() for ranking in rankings]


def _rank(
    index: VectorIndex,
    queries: np.ndarray,
    k: int,
    *,
    chunks_per_doc: int,
    max_id: int,
    lookup: Lookup,
    ranges: Ranges,
) -> list[_Ranking]:
    """:func:`rank`'s rankings, which also know their chunks' row ids."""
    n = index.ntotal
    if n == 0:
        return [_Ranking(k, chunks_per_doc) for _ in range(len(queries))]
    fetch = min(n, max(4 * k, MIN_FETCH), MAX_FETCH)
    scores, ids = index.search(queries, fetch)
    rows = lookup(np.unique(ids[ids >= 0]).tolist())
    results = []
    for q in range(len(queries)):
        ranking = _Ranking(k, chunks_per_doc)
        new = ranking.take(scores[q], ids[q], rows)
        exhausted = int((ids[q] >= 0).sum()) < fetch or fetch >= n
        size, allowed = fetch, None
        while not ranking.full and not exhausted:
            if allowed is None:
                allowed = np.ones(max_id + 1, dtype=bool)
            for first, last in ranges(new):  # exclude what this query has found so far
                allowed[first : last + 1] = False
            size = min(2 * size, MAX_FETCH)
            s, i = index.search(queries[q : q + 1], size, allowed=np.packbits(allowed, bitorder="little"))
            got = i[0][i[0] >= 0]
            new = ranking.take(s[0], i[0], lookup(got.tolist()))
            exhausted = len(got) < size
        results.append(ranking)
    return results


def rank_funnel(
    index: VectorIndex,
    short_queries: np.ndarray,
    queries: np.ndarray,
    k: int,
    *,
    oversample: int,
    chunks_per_doc: int,
    max_id: int,
    lookup: Lookup,
    ranges: Ranges,
    range_vectors: RangeVectors,
) -> list[list[Hit]]:
    """Funnel search: the best ``oversample * k`` documents per query by their best chunk in ``index`` (a short
    Matryoshka prefix of the chunk vectors, searched with ``short_queries``), then *every* chunk of those documents
    rescored with ``queries`` against ``range_vectors`` (the longer vectors, read in batches by chunk id range),
    and documents ranked by their best rescored chunk: a document whose best chunk the shortlist missed still
    scores by it. Memory per query is one batch of vectors plus ``chunks_per_doc`` scores per shortlisted
    document; rows are looked up only for the chunks returned."""
    shortlists = _rank(
        index, short_queries, oversample * k, chunks_per_doc=1, max_id=max_id, lookup=lookup, ranges=ranges
    )
    results = []
    for query, shortlist in zip(queries, shortlists, strict=True):
        spans = sorted(ranges(list(shortlist.docs)))
        ids, scores, docs = _best_chunks(query, spans, range_vectors(spans), chunks_per_doc)
        top_docs = docs[_first_of_each(docs)][:k]  # entries are best first, so documents come in rank order
        keep = np.isin(docs, top_docs)
        ranking = _Ranking(k, chunks_per_doc)
        ranking.take(scores[keep], ids[keep], lookup(ids[keep].tolist()))
        results.append(ranking.hits())
    return results


def _best_chunks(
    query: np.ndarray, spans: list[tuple[int, int]], batches: Iterable[tuple[np.ndarray, np.ndarray]], per_doc: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(ids, scores, docs)`` of the best ``per_doc`` chunks of each document (its index in the sorted,
    disjoint chunk id ``spans``) by inner product with ``query``, best first (ties by chunk id)."""
    starts = np.array([first for first, _ in spans], dtype=np.int64)
    kept: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for ids, vectors in batches:
        scores = (vectors @ query).astype(np.float32)
        kept.append(_top_per_doc(ids, scores, np.searchsorted(starts, ids, side="right") - 1, per_doc))
    if not kept:
        return np.zeros(0, np.int64), np.zeros(0, np.float32), np.zeros(0, np.int64)
    ids, scores, docs = (np.concatenate(parts) for parts in zip(*kept, strict=True))
    ids, scores, docs = _top_per_doc(ids, scores, docs, per_doc)  # a document split across batches
    order = np.lexsort((ids, -scores))
    return ids[order], scores[order], docs[order]


def _top_per_doc(
    ids: np.ndarray, scores: np.ndarray, docs: np.ndarray, per_doc: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entries among the best ``per_doc`` of their document (ties by id)."""
    order = np.lexsort((ids, -scores, docs))
    ids, scores, docs = ids[order], scores[order], docs[order]
    first = np.zeros(len(docs), dtype=np.int64)
    starts = _first_of_each(docs)
    first[starts] = starts
    rank_in_doc = np.arange(len(docs)) - np.maximum.accumulate(first)
    keep = rank_in_doc < per_doc
    return ids[keep], scores[keep], docs[keep]


def _first_of_each(values: np.ndarray) -> np.ndarray:
    """Positions of the first occurrence of each value of ``values``, in order of position."""
    _, first = np.unique(values, return_index=True)
    return np.sort(first)


def rank_fused(
    index: VectorIndex | None,
    queries: np.ndarray | None,
    expressions: list[str | None],
    k: int,
    *,
    channels: Channels,
    chunks_per_doc: int,
    max_id: int,
    lexical: Lexical,
    lexical_scores: LexicalScores,
    dense_scores: DenseScores,
    lookup: Lookup,
    ranges: Ranges,
    doc_vectors: bool = False,
    proximity: Proximity | None = None,
) -> list[list[Hit]]:
    """The top ``k`` documents per query from fused chunk rankings (``channels.mode`` lexical or hybrid).

    Each channel shortlists the best chunks of its best ``2k`` documents (at least 20), a few per document, so
    one document with many matching chunks cannot crowd the others out: the dense side through :func:`rank`
    (exclusion rounds), the lexical side capped per document in SQL. Every shortlisted chunk is then scored in
    both channels -- ``dense_scores`` (query vector . chunk vector) for the lexical side's picks,
    ``lexical_scores`` (BM25; 0 when no term matches) for the dense side's -- so a chunk one channel ranks
    first is never fused as a zero just because the other channel's shortlist cut it. Chunks are fused
    (``lexical.fuse``, each chunk at its kind's weights) and a document scores as its best fused chunk.
    ``expressions`` are the queries' FTS5 expressions (``None``: no terms, so no lexical side); ``index``/``queries``
    are the dense side (``None`` in lexical mode).

    ``proximity`` (with ``channels.proximity``): every lexical candidate's BM25 gains its term proximity
    (``lexical.proximity``) before fusion: the lexical shortlist is chosen by BM25, then ranked by both.

    ``doc_vectors``: the documents carry a vector of their own (``doc_vector``, stored as the document's last
    chunk, with no terms: its text repeats its chunks'). In hybrid mode every candidate document's own vector then
    joins the fusion, scored densely by that vector and, by a score fusion, lexically as the document's best
    candidate chunk (:func:`_add_document_vectors`), so it is not fused as a document that no term matched.
    """
    per_doc = max(chunks_per_doc, 2)
    docs = min(max(2 * k, 20), MAX_K)
    hybrid = channels.mode == "hybrid" and index is not None and queries is not None
    rankings: list[_Ranking | None] = [None] * len(expressions)
    if hybrid:
        assert index is not None and queries is not None
        rankings = list(
            _rank(index, queries, docs, chunks_per_doc=per_doc, max_id=max_id, lookup=lookup, ranges=ranges)
        )
    results = []
    for q, (expression, ranking) in enumerate(zip(expressions, rankings, strict=True)):
        lex = dict(lexical(expression, docs * per_doc, per_doc)) if expression is not None else {}
        near = proximity if channels.proximity and expression is not None else None
        if ranking is None:
            if near is not None:
                _add_proximity(lex, near(expression, list(lex)))
            fused = _best_first(lex)
            rows = lookup([i for i, _ in fused])
        else:
            assert queries is not None
            dense = {i: c.score for d, ids in ranking.ids.items() for i, c in zip(ids, ranking.docs[d], strict=True)}
            only_lexical = [i for i in lex if i not in dense]
            if only_lexical:
                dense.update(zip(only_lexical, dense_scores(queries[q], only_lexical).tolist(), strict=True))
            only_dense = [i for i in dense if i not in lex]
            if expression is not None and only_dense:
                found = lexical_scores(expression, only_dense)
                lex.update(found)
                if channels.fusion != "rrf":  # a score fusion reads "no term matched" as BM25 0; a rank has none
                    lex.update((i, 0.0) for i in only_dense if i not in found)
            if near is not None:
                _add_proximity(lex, near(expression, [i for i, s in lex.items() if s > 0]))
            rows = lookup(list(dense.keys() | lex.keys()))
            if doc_vectors:
                _add_document_vectors(
                    queries[q], dense, lex if channels.fusion != "rrf" else None, rows,
                    dense_scores=dense_scores, lookup=lookup, ranges=ranges,
                )  # fmt: skip
            documents = {i: r.doc_id for i, r in rows.items()}
            alphas = None
            if channels.text_alpha is not None:
                alphas = {i: channels.text_alpha for i, r in rows.items() if r.kind == "text"}
            fused = fuse(
                _best_first(dense), _best_first(lex), fusion=channels.fusion, alpha=channels.alpha,
                documents=documents, alphas=alphas,
            )  # fmt: skip
        ranked: dict[str, list[ChunkHit]] = {}
        for i, score in fused:
            r = rows[i]
            chunks = ranked.get(r.doc_id)
            if chunks is None:
                if len(ranked) == k:
                    continue
                chunks = ranked[r.doc_id] = []
            if len(chunks) < chunks_per_doc:
                chunks.append(ChunkHit(r.chunk_id, r.start, r.end, float(score), r.symbol))
        results.append([Hit(doc_id, chunks[0].score, chunks) for doc_id, chunks in ranked.items()])
    return results


def _add_document_vectors(
    query: np.ndarray,
    dense: dict[int, float],
    lex: dict[int, float] | None,
    rows: dict[int, ChunkRow],
    *,
    dense_scores: DenseScores,
    lookup: Lookup,
    ranges: Ranges,
) -> None:
    """Add the own vector (``DOC_SYMBOL``, its last chunk) of every document among ``rows`` to the candidates, in
    place, with its dense score. ``lex`` (a score fusion's lexical scores, every candidate scored; ``None``: leave
    the lexical side alone) gives it its document's best lexical score among the candidates: the document's best
    chunk by BM25 when the lexical shortlist holds the document (it keeps each document's best chunks by BM25;
    with term proximity added, a chunk of the document outside the shortlist could score higher), and otherwise
    a chunk the dense side brought, where the document's best BM25 is no higher than the shortlist's last. No
    query is made for it: the candidates already carry what fusion needs."""
    spans = ranges(sorted({r.doc_id for r in rows.values()}))
    lasts = lookup([last for first, last in spans if last > first])
    own = [i for i, r in lasts.items() if r.symbol == DOC_SYMBOL]
    if not own:
        return
    rows.update((i, lasts[i]) for i in own)
    unscored = [i for i in own if i not in dense]
    if unscored:
        dense.update(zip(unscored, dense_scores(query, unscored).tolist(), strict=True))
    if lex is None:
        return
    best: dict[str, float] = {}
    for i, s in lex.items():
        doc = rows[i].doc_id
        best[doc] = max(best.get(doc, s), s)
    for i in own:
        if rows[i].doc_id in best:  # absent only when the query has no terms: then no chunk has a lexical score
            lex[i] = best[rows[i].doc_id]


def _add_proximity(lex: dict[int, float], near: dict[int, float]) -> None:
    """Each chunk's term proximity added to its lexical score, in place."""
    for i, score in near.items():
        if i in lex:
            lex[i] += score


def _best_first(scores: dict[int, float]) -> list[tuple[int, float]]:
    return sorted(scores.items(), key=lambda item: (-item[1], item[0]))
