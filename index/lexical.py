"""The lexical channel: code-aware terms indexed in SQLite FTS5 (BM25), and its fusion with the dense channel.

Terms. Every chunk and every query goes through one tokenizer, so the two always agree whatever the chunk's
kind: word runs (``\\w+``) are split into identifier parts on snake_case, camelCase, acronym and digit
boundaries, and a multi-part word is also kept whole (``BigInteger.gcd`` -> ``biginteger big integer gcd``;
``read_sensor2`` -> ``readsensor2 read sensor 2``), all lowercased; English stopwords and one-letter parts
are dropped. FTS5's ``porter`` tokenizer then stems what is stored and what is searched the same way.

Queries. A query becomes an OR of its distinct terms, each quoted as an FTS5 string, so no user text is ever
read as FTS5 query syntax (``AND``, ``NEAR``, ``*``, ``col:``, quotes): a search for ``"foo`` or ``a AND``
is a search for those words.

Scores. A chunk's lexical score is FTS5's BM25 plus, by default, its term proximity (:func:`proximity`,
Büttcher, Clarke and Lushman, SIGIR 2006): how close together it holds different query terms. BM25 alone
cannot tell "the velvet telescope of Dubrovnik" from a chunk with "velvet", "telescope" and "Dubrovnik" in three
unrelated sentences; proximity can. The shortlist is chosen by BM25 and ranked by both (``index.search``).

Fusion, per chunk, then to documents (a document scores as its best fused chunk, so a hit still points at the span
that matched): ``rrf`` adds ``w / (RRF_K + rank)`` over the channels a chunk appears in (Cormack et al., k = 60),
with weight ``alpha`` on the dense channel and ``1 - alpha`` on the lexical one; ``convex`` adds ``alpha * dense +
(1 - alpha) * lexical`` over scores min-max normalised within each channel's candidates (0 for a chunk the channel
did not return); ``zscore`` adds the same over scores standardised within each channel's candidates (mean 0,
standard deviation 1), so a channel with one candidate far above the rest (a rare exact term: a name, a pass key,
an identifier) speaks louder than one whose scores are all alike, where min-max would stretch either to [0, 1];
``pnorm`` takes the same weighted standardised scores and combines a chunk's two by their p-norm (p =
:data:`PNORM_P`) where they are positive, adding negative ones as they are: a soft OR, after the p-norm model of
extended Boolean retrieval (Salton, Fox and Wu, 1983): two equal positive parts b count 2^(1/p) b instead of 2b, so
one channel that singles a chunk out can outweigh two that place another one fairly high (a needle the lexical
channel finds by its rare words, against a near twin the dense channel likes as well); p = 1 is ``zscore``.
``adaptive`` is ``zscore`` with the weights set per query: each channel's ``alpha`` (or ``1 - alpha``) is
multiplied by its margin, how far its best document stands above its second best (in standard deviations), so the
channel that singles out one document decides more. A collection can weigh prose chunks (kind ``text``) with
their own ``text_alpha``: a chunk's weights are those of its kind, wherever it is fused. Search scores every
candidate in both channels before fusing (``index.search.rank_fused``), so "did not return" only happens to direct
callers of :func:`fuse`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from itertools import pairwise
from typing import Any, Literal, TypeVar

K = TypeVar("K", int, tuple[str, int])  # what fusion keys chunks by: a chunk id, or (doc_id, chunk ordinal)
SearchMode = Literal["dense", "lexical", "hybrid"]
SEARCH_MODES: tuple[SearchMode, ...] = ("dense", "lexical", "hybrid")
Fusion = Literal["rrf", "convex", "zscore", "adaptive", "pnorm"]
FUSIONS: tuple[Fusion, ...] = ("rrf", "convex", "zscore", "adaptive", "pnorm")
RRF_K = 60
# zscore: the least standard deviation of each channel's candidate scores, in its own units (dense: cosine,
# lexical: FTS5 BM25). A match on terms in over half the chunks scores ~1e-6 (FTS5 floors their idf), and
# standardising 1e-6 against zeros would make it as loud as a rare name; a cosine spread of 0.01 or a BM25
# spread of 0.1 is what one weak term or rounding gives, far below a discriminating match (BM25 ~5-15).
Z_MIN_STD = (0.01, 0.1)
# pnorm: the exponent that combines the channels' weighted standardised scores (1 would be zscore's sum). It is part
# of the fusion's definition, which collections store by name: another exponent would need another name.
PNORM_P = 1.5
# adaptive: the least margin a channel is credited with (in standard deviations), so a channel whose best document
# does not stand out still counts a little.
MIN_MARGIN = 0.1
# What a new collection searches with unless told otherwise (chosen on the eval suite: docs/BENCHMARKS.md). pnorm
# against zscore at the same weights: needles ranked first 0.950 -> 0.985 (acc@1), Python code +0.009 nDCG@10, pydoc
# -0.010 (summary queries), C++ -0.005, Go and TypeScript within noise ("The pnorm fusion").
DEFAULT_SEARCH_MODE: SearchMode = "hybrid"
DEFAULT_FUSION: Fusion = "pnorm"
DEFAULT_ALPHA = 0.7
# ... and the dense weight of prose chunks (kind "text"): exact words decide more on long text (BM25 is as good as
# the dense channel on deep pydoc queries and finds nearly every pass key and needle). Of 0.5, 0.4 and 0.3, the
# highest dense weight that finds 95% of pass keys and needles, and keeps hybrid above each channel alone on
# both pydoc buckets (docs/BENCHMARKS.md, "Prose at 0.4").
DEFAULT_TEXT_ALPHA = 0.4
DEFAULT_WEIGHTS = (DEFAULT_ALPHA, DEFAULT_TEXT_ALPHA)
# The most distinct terms a query searches with (a pasted page of text stays one bounded query).
MAX_QUERY_TERMS = 64
# FTS5 table options: the porter stemmer over unicode61; ``detail=column`` stores no positions (bm25() counts a
# matched row's terms again from its stored text).
FTS_TOKENIZE = "porter unicode61 remove_diacritics 2"
# FTS5's bm25() constants k1 and b (its defaults, which longvec keeps): one term adds less than idf * (k1 + 1) to
# any row.
BM25_K1 = 1.2
BM25_B = 0.75
# Below this many (term, chunk) matches a query's lexical shortlist scores every match: bounding and pruning them
# costs more than it saves (``Store.lexical_search``).
PRUNE_MIN_MATCHES = 2048

_WORD = re.compile(r"\w+")
_BOUNDARY = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])")
# The classic English stopword list (Lucene's, also bm25s's STOPWORDS_EN; a test keeps them equal), written out
# so that importing the index does not import bm25s and scipy.
STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these "
    "they this to was will with".split()
)
_STOP = STOPWORDS


def terms(text: str) -> list[str]:
    """The lexical terms of ``text``, in order (see the module docstring)."""
    out: list[str] = []
    for match in _WORD.finditer(text):
        word = match.group()
        parts = [p.lower() for piece in word.split("_") if piece for p in _BOUNDARY.split(piece) if p]
        if len(parts) > 1:
            whole = "".join(parts)
            if whole not in _STOP:
                out.append(whole)
        out.extend(p for p in parts if p not in _STOP and (len(p) > 1 or p.isdigit()))
    return out


def resolve_weights(
    alpha: float | None, text_alpha: float | None, fallback: tuple[float, float | None]
) -> tuple[float, float | None]:
    """The dense weights ``(alpha, text_alpha)`` that given ones resolve to, by the rule every surface follows
    (collection defaults, their updates, requests, eval systems): neither given, ``fallback``; ``alpha`` alone,
    that weight for every chunk (``text_alpha`` None); ``text_alpha`` given, prose at it and code at ``alpha``
    or else the fallback's."""
    if alpha is None and text_alpha is None:
        return fallback
    return (fallback[0] if alpha is None else alpha), text_alpha


def document_terms(text: str) -> str:
    """What the FTS5 table stores for a chunk: its terms, space-separated."""
    return " ".join(terms(text))


def match_expression(query: str) -> str | None:
    """The FTS5 ``MATCH`` expression of ``query``: its distinct terms, each quoted, joined by ``OR``;
    ``None`` if it has no terms (only stopwords or punctuation)."""
    distinct = list(dict.fromkeys(terms(query)))[:MAX_QUERY_TERMS]
    if not distinct:
        return None
    return " OR ".join('"' + t.replace('"', '""') + '"' for t in distinct)


def phrases(expression: str) -> list[str]:
    """The quoted terms a :func:`match_expression` is the ``OR`` of (a term has no space, so none is split)."""
    return expression.split(" OR ")


def bm25_idf(rows: int, hits: int) -> float:
    """FTS5's bm25() weight of a term found in ``hits`` of ``rows`` rows (floored at 1e-6, as FTS5 does for a
    term in over half the rows)."""
    idf = math.log((rows - hits + 0.5) / (hits + 0.5))
    return idf if idf > 0 else 1e-6


def unquoted(expression: str) -> list[str]:
    """The terms a :func:`match_expression` searches for, as :func:`terms` gave them."""
    return [t[1:-1].replace('""', '"') for t in phrases(expression)]


def proximity(weights: Mapping[str, float], sequence: Iterable[str]) -> float:
    """How close together a chunk holds different query terms: the term-proximity score of Büttcher, Clarke and
    Lushman (SIGIR 2006), added to a chunk's BM25 score. ``weights`` maps each query term to its BM25 idf;
    ``sequence`` is the chunk's terms in order (as :func:`terms` writes them: not stemmed).

    Each occurrence of a query term is paired with the query-term occurrence just before it, if that is another
    term, ``d`` terms back: each of the two accumulates the other's weight over ``d**2``. Each term's total then
    counts as a BM25 term frequency would (``acc * (k1 + 1) / (acc + k1)``, saturating), weighted by its idf
    capped at 1, so a term adds at most ``k1 + 1`` = 2.2. Chunk length is not normalised: chunks are cut to one
    token budget, and BM25 already normalises its part. Query words side by side in a chunk ("velvet telescope")
    score high, words far apart nearly nothing, one word alone nothing; the parts of one identifier are terms side
    by side too (``readConfig`` is ``readconfig read config``), so an identifier the query names adds its parts'
    proximity wherever it is written whole."""
    found = [(position, term) for position, term in enumerate(sequence) if term in weights]
    acc: dict[str, float] = {}
    for (at, last), (position, term) in pairwise(found):
        if last != term:
            d2 = float((position - at) ** 2)
            acc[term] = acc.get(term, 0.0) + weights[last] / d2
            acc[last] = acc.get(last, 0.0) + weights[term] / d2
    return math.fsum(min(1.0, weights[t]) * a * (BM25_K1 + 1) / (a + BM25_K1) for t, a in acc.items())


def fuse(
    dense: Iterable[tuple[K, float]],
    lexical: Iterable[tuple[K, float]],
    *,
    fusion: Fusion = "rrf",
    alpha: float = 0.5,
    documents: Mapping[K, str] | None = None,
    alphas: Mapping[K, float] | None = None,
) -> list[tuple[K, float]]:
    """Keys (chunks) with fused scores, best first, ties by key. Each input is one channel's ``(key, score)``
    list, best first; ``alpha`` weighs the dense channel, ``1 - alpha`` the lexical one, for every key not in
    ``alphas`` (a key's own dense weight: the weight of its chunk's kind). Non-finite scores are dropped.
    ``documents`` maps each key to its document (``adaptive`` reads margins between documents; without it, every
    key is its own document)."""
    channels: list[list[tuple[K, float]]] = []
    margins: list[float] = []
    for channel, floor in ((dense, Z_MIN_STD[0]), (lexical, Z_MIN_STD[1])):
        ranked = [(key, s) for key, s in channel if math.isfinite(s)]
        if fusion == "rrf":
            normalised = [(key, 1.0 / (RRF_K + rank)) for rank, (key, _) in enumerate(ranked, 1)]
        elif fusion == "convex":
            normalised = _min_max(ranked)
        else:  # zscore, adaptive, pnorm
            normalised = _z_scores(ranked, floor)
        channels.append(normalised)
        margins.append(max(_margin(normalised, documents or {}), MIN_MARGIN) if fusion == "adaptive" else 0.0)

    def weights(key: K) -> tuple[float, float]:
        a = alphas.get(key, alpha) if alphas else alpha
        if fusion != "adaptive":
            return a, 1.0 - a
        dense_weight, lexical_weight = a * margins[0], (1.0 - a) * margins[1]
        total = dense_weight + lexical_weight  # the margin-scaled weights, summing to 1 again
        return (dense_weight / total, lexical_weight / total) if total > 0 else (0.0, 0.0)

    fused: dict[K, float] = {}
    if fusion == "pnorm":
        dense_z, lexical_z = (dict(normalised) for normalised in channels)
        for key in dense_z.keys() | lexical_z.keys():
            w = weights(key)
            fused[key] = _soft_or(w[0] * dense_z.get(key, 0.0), w[1] * lexical_z.get(key, 0.0))
    else:
        for c, normalised in enumerate(channels):
            for key, s in normalised:
                fused[key] = fused.get(key, 0.0) + weights(key)[c] * s
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def _soft_or(x: float, y: float) -> float:
    """Two channels' weighted evidence combined as ``pnorm`` does: the :data:`PNORM_P`-norm of their positive
    parts, plus their negative parts as they are (for p = 1, exactly ``x + y``)."""
    if x > 0.0 and y > 0.0:
        return (x**PNORM_P + y**PNORM_P) ** (1.0 / PNORM_P)
    return x + y  # at most one positive part: its norm is itself


def _margin(scores: list[tuple[K, float]], documents: Mapping[K, Any]) -> float:
    """How far the best document's best score stands above the second best document's (the best score itself when
    there is one document; 0 with none)."""
    best: dict[Any, float] = {}
    for key, s in scores:
        doc = documents.get(key, key)
        best[doc] = max(best.get(doc, -math.inf), s)
    top = sorted(best.values(), reverse=True)[:2]
    return top[0] - top[1] if len(top) == 2 else (top[0] if top else 0.0)


def _min_max(channel: list[tuple[K, float]]) -> list[tuple[K, float]]:
    """Scores mapped onto [0, 1] within the channel's candidates; all 1 when they are equal (to rounding:
    FTS5 gives terms found in over half the rows a near-zero weight, whose noise must not be stretched)."""
    if not channel:
        return []
    scores = [s for _, s in channel]
    lo, hi = min(scores), max(scores)
    span = hi - lo
    if span <= 1e-9 * max(1.0, abs(hi)):
        return [(key, 1.0) for key, _ in channel]
    return [(key, (s - lo) / span) for key, s in channel]


def _z_scores(channel: list[tuple[K, float]], floor: float = 0.0) -> list[tuple[K, float]]:
    """Scores standardised within the channel's candidates (mean 0, standard deviation 1); all 0 when they
    are equal to rounding. A candidate far above the rest (a rare exact term) keeps its distance. The
    standard deviation is taken as at least ``floor``: a spread smaller than that is noise in the channel's
    own units, which standardising would blow up into evidence."""
    if not channel:
        return []
    scores = [s for _, s in channel]
    mean = math.fsum(scores) / len(scores)
    std = max(math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / len(scores)), floor)
    if std <= 1e-9 * max(1.0, abs(mean)):
        return [(key, 0.0) for key, _ in channel]
    return [(key, (s - mean) / std) for key, s in channel]
