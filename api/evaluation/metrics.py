"""Ranking metrics over a run (nDCG@10, MRR@10, Recall@1/@10 with binary relevance) and a table printer."""

from __future__ import annotations

import math
from collections.abc import Iterable

from api.evaluation.types import EvalQuery

Run = dict[str, list[tuple[str, float]]]
METRICS = ("ndcg@10", "mrr@10", "recall@1", "recall@10")


def _ranked_ids(ranking: Iterable[tuple[str, float]]) -> list[str]:
    """doc_ids in rank order, each kept at its best (first) rank."""
    seen: set[str] = set()
    ids = []
    for doc_id, _score in ranking:
        if doc_id not in seen:
            seen.add(doc_id)
            ids.append(doc_id)
    return ids


def query_metrics(ranking: list[tuple[str, float]], relevant: set[str]) -> dict[str, float]:
    """Metrics of one ranked list (best first) against its non-empty set of relevant doc_ids."""
    ids = _ranked_ids(ranking)
    top10 = ids[:10]
    hits = [i for i, doc_id in enumerate(top10) if doc_id in relevant]
    dcg = sum(1.0 / math.log2(i + 2) for i in hits)
    idcg = sum(1.0 / math.log2(i + 2) for i in range(min(len(relevant), 10)))
    return {
        "ndcg@10": dcg / idcg,
        "mrr@10": 1.0 / (hits[0] + 1) if hits else 0.0,
        "recall@1": len(relevant.intersection(ids[:1])) / len(relevant),
        "recall@10": len(relevant.intersection(top10)) / len(relevant),
    }


def evaluate_run(
    run: dict[str, list[tuple[str, float]]], qrels: dict[str, set[str]], queries: list[EvalQuery]
) -> dict[str, dict[str, float]]:
    """Mean metrics over ``queries``, for "all" and for each bucket (sorted), each with its query count "n".

    ``run`` maps qid -> ranked ``(doc_id, score)`` best first; a doc_id listed twice counts at its first rank.
    Queries missing from ``run`` score 0. Every query needs at least one relevant doc in ``qrels``.
    """
    per_query: list[tuple[str, dict[str, float]]] = []
    for q in queries:
        relevant = qrels.get(q.qid)
        if not relevant:
            raise ValueError(f"query {q.qid!r} has no relevant documents in qrels")
        per_query.append((q.bucket, query_metrics(run.get(q.qid, []), relevant)))
    groups = ["all", *sorted({bucket for bucket, _ in per_query})]
    result: dict[str, dict[str, float]] = {}
    for group in groups:
        members = [m for bucket, m in per_query if group in ("all", bucket)]
        n = len(members)
        result[group] = {k: (sum(m[k] for m in members) / n if n else 0.0) for k in METRICS} | {"n": n}
    return result


def _cell(value: object) -> str:
    text = f"{value:.3f}" if isinstance(value, float) else str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def format_table(rows: list[dict]) -> str:
    """A markdown table: columns are the first row's keys in order; floats to 3 decimals; missing cells blank."""
    if not rows:
        return ""
    columns = list(rows[0])
    lines = [
        "| " + " | ".join(_cell(c) for c in columns) + " |",
        "|" + "|".join("---" for _ in columns) + "|",
    ]
    lines += ["| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)
