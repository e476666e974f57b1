"""Ranking metrics from ir-measures (pytrec_eval underneath), paired significance tests, a table printer.

Relevance is graded (BEIR's qrels); nDCG uses trec_eval's linear gains, and a document counts as relevant
for RR and recall when its grade is above 0. Every query of the evaluated set is scored: one missing from
the run scores 0, and so does one with no relevant document (as pytrec_eval does). A ranked list is scored
in the order given (scores are replaced by ranks, so ties cannot be reordered by document id).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import ir_measures
from ir_measures import RR, R, nDCG

from longvec.evaluation.types import EvalQuery
from longvec.index import InvalidInputError

Run = dict[str, list[tuple[str, float]]]
Qrels = Mapping[str, Mapping[str, int] | set[str]]
METRICS = ("ndcg@10", "mrr@10", "recall@1", "recall@10", "recall@100")
_MEASURES = {"ndcg@10": nDCG @ 10, "mrr@10": RR @ 10, "recall@1": R @ 1, "recall@10": R @ 10, "recall@100": R @ 100}
_NAMES = {measure: name for name, measure in _MEASURES.items()}


def graded(relevant: Mapping[str, int] | set[str]) -> dict[str, int]:
    """``doc_id -> grade``; a plain set of relevant doc_ids is grade 1 each."""
    return {d: 1 for d in relevant} if isinstance(relevant, set) else {d: int(g) for d, g in relevant.items()}


def ranked_ids(ranking: Iterable[tuple[str, float]]) -> list[str]:
    """doc_ids in rank order, each kept at its best (first) rank."""
    return list(dict.fromkeys(doc_id for doc_id, _score in ranking))


def per_query_metrics(run: Run, qrels: Qrels, qids: list[str]) -> dict[str, dict[str, float]]:
    """``qid -> metric -> value`` for every qid in ``qids`` (each needs judgements in ``qrels``)."""
    missing = [q for q in qids if q not in qrels]
    if missing:
        raise InvalidInputError(f"{len(missing)} queries have no judgements in qrels, e.g. {missing[0]!r}")
    judged = [ir_measures.Qrel(q, d, g) for q in qids for d, g in graded(qrels[q]).items()]
    scored = [
        ir_measures.ScoredDoc(q, doc_id, float(-rank))
        for q in qids
        for rank, doc_id in enumerate(ranked_ids(run.get(q, [])))
    ]
    out = {q: dict.fromkeys(METRICS, 0.0) for q in qids}
    for m in ir_measures.iter_calc(list(_MEASURES.values()), judged, scored):
        out[m.query_id][_NAMES[m.measure]] = float(m.value)
    return out


def evaluate_run(
    run: Run, qrels: Qrels, queries: list[EvalQuery]
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, float]]]:
    """Mean metrics over ``queries`` for "all" and for each other bucket (sorted), each with its query count
    "n"; and the per-query metrics they average."""
    per_query = per_query_metrics(run, qrels, [q.qid for q in queries])
    groups = ["all", *sorted({q.bucket for q in queries} - {"all"})]
    means: dict[str, dict[str, float]] = {}
    for group in groups:
        members = [per_query[q.qid] for q in queries if group in ("all", q.bucket)]
        n = len(members)
        means[group] = {k: (sum(m[k] for m in members) / n if n else 0.0) for k in METRICS} | {"n": n}
    return means, per_query


def paired_test(a: Mapping[str, float], b: Mapping[str, float]) -> tuple[float, float]:
    """Mean difference ``b - a`` over the queries both score, and the two-sided p-value of a paired t-test."""
    from scipy.stats import ttest_rel

    qids = sorted(set(a) & set(b))
    if not qids:
        return 0.0, math.nan
    x, y = [a[q] for q in qids], [b[q] for q in qids]
    delta = sum(y) / len(y) - sum(x) / len(x)
    if all(u == v for u, v in zip(x, y, strict=True)):
        return 0.0, 1.0  # identical per query: no difference to test
    return delta, float(ttest_rel(y, x).pvalue)


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
