"""The lexical channel: code-aware terms indexed in SQLite FTS5 (BM25), and its fusion with the dense channel.

Terms. Every chunk and every query goes through one tokenizer, so the two always agree whatever the chunk's
kind: word runs (``\\w+``) are split into identifier parts on snake_case, camelCase, acronym and digit
boundaries, and a multi-part word is also kept whole (``BigInteger.gcd`` -> ``biginteger big integer gcd``;
``read_sensor2`` -> ``readsensor2 read sensor 2``), all lowercased; English stopwords and one-letter parts
are dropped. FTS5's ``porter`` tokenizer then stems what is stored and what is searched the same way.

Queries. A query becomes an OR of its distinct terms, each quoted as an FTS5 string, so no user text is ever
read as FTS5 query syntax (``AND``, ``NEAR``, ``*``, ``col:``, quotes): a search for ``"foo`` or ``a AND``
is a search for those words.

Fusion, per chunk, then to documents (a document scores as its best fused chunk, so a hit still points at
the span that matched): ``rrf`` adds ``w / (RRF_K + rank)`` over the channels a chunk appears in (Cormack et
al., k = 60), with weight ``alpha`` on the dense channel and ``1 - alpha`` on the lexical one; ``convex``
adds ``alpha * dense + (1 - alpha) * lexical`` over scores min-max normalised within each channel's
candidates (0 for a chunk the channel did not return).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal

from bm25s.stopwords import STOPWORDS_EN

SearchMode = Literal["dense", "lexical", "hybrid"]
SEARCH_MODES: tuple[SearchMode, ...] = ("dense", "lexical", "hybrid")
Fusion = Literal["rrf", "convex"]
FUSIONS: tuple[Fusion, ...] = ("rrf", "convex")
RRF_K = 60
# What a new collection searches with unless told otherwise (chosen on the eval suite: docs/BENCHMARKS.md).
DEFAULT_SEARCH_MODE: SearchMode = "dense"
DEFAULT_FUSION: Fusion = "rrf"
DEFAULT_ALPHA = 0.5
# The most distinct terms a query searches with (a pasted page of text stays one bounded query).
MAX_QUERY_TERMS = 64
# FTS5 table options: the porter stemmer over unicode61; per-column term counts are all BM25 needs.
FTS_TOKENIZE = "porter unicode61 remove_diacritics 2"

_WORD = re.compile(r"\w+")
_BOUNDARY = re.compile(r"(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])|(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])")
_STOP = frozenset(STOPWORDS_EN)


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


def fuse(
    dense: Iterable[tuple[int, float]],
    lexical: Iterable[tuple[int, float]],
    *,
    fusion: Fusion = "rrf",
    alpha: float = 0.5,
) -> list[tuple[int, float]]:
    """Chunk ids with fused scores, best first. Each input is one channel's ``(chunk id, score)`` list, best
    first; ``alpha`` weighs the dense channel, ``1 - alpha`` the lexical one."""
    weights = (alpha, 1.0 - alpha)
    fused: dict[int, float] = {}
    for weight, channel in zip(weights, (list(dense), list(lexical)), strict=True):
        if fusion == "rrf":
            contributions = [(i, weight / (RRF_K + rank)) for rank, (i, _) in enumerate(channel, 1)]
        else:
            contributions = [(i, weight * s) for i, s in _min_max(channel)]
        for i, s in contributions:
            fused[i] = fused.get(i, 0.0) + s
    return sorted(fused.items(), key=lambda item: (-item[1], item[0]))


def _min_max(channel: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Scores mapped onto [0, 1] within the channel's candidates (all 1 when they are equal)."""
    if not channel:
        return []
    scores = [s for _, s in channel]
    lo, hi = min(scores), max(scores)
    span = hi - lo
    return [(i, (s - lo) / span if span > 0 else 1.0) for i, s in channel]
