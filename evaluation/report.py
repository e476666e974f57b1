"""``longvec eval``: build the pools, run every system on each, print tables, write results and run files."""

from __future__ import annotations

import json
import platform
import re
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from pathlib import Path

from longvec.embedder import Backend, Precision, check_dim
from longvec.evaluation.datasets import load_dataset
from longvec.evaluation.metrics import format_table, paired_test
from longvec.evaluation.runner import Runner, SystemResult
from longvec.evaluation.systems import SystemSpec
from longvec.evaluation.types import Dataset
from longvec.index import InvalidInputError

SYNTHETIC = ("passkey", "needle")
_WHITESPACE = re.compile(r"\s")


def select_pools(pools: list[Dataset], lengths: set[int] | None) -> list[Dataset]:
    """Synthetic pools are named ``task-<length>``; keep those whose length is in ``lengths``."""
    if not lengths:
        return pools
    return [p for p in pools if int(p.name.rsplit("-", 1)[1]) in lengths]


def _unique(pool: Dataset, taken: set[str]) -> Dataset:
    """``pool``, renamed ``name-2``, ``name-3``, ... if another pool of the run has its name."""
    name, i = pool.name or "beir", 1
    while name in taken:
        i += 1
        name = f"{pool.name or 'beir'}-{i}"
    taken.add(name)
    return pool if name == pool.name else replace(pool, name=name)


def run_eval(
    datasets: list[str],
    systems: list[SystemSpec],
    *,
    cache_dir: Path,
    small: bool = False,
    seed: int = 0,
    lengths: set[int] | None = None,
    model: str | None = None,
    precision: Precision = "auto",
    backend: Backend = "auto",
    extra_pools: list[Dataset] | None = None,
    k: int = 100,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> list[SystemResult]:
    """Every system on every pool of ``datasets`` (built-in names) and of ``extra_pools`` (e.g. BEIR sets).

    ``seed`` draws another sample of the built-in datasets (fresh needles and haystacks, other functions and
    queries from the same sources): a check that a setting chosen on seed 0 holds on queries it was not chosen
    on. ``lengths`` selects the synthetic pools' lengths; pools are renamed where two would share a name.
    """
    runner = Runner(model=model, k=k, precision=precision, backend=backend)
    counter = runner.encoder(256).counter
    for spec in systems:  # a bad dim fails now, not after a corpus has been indexed
        if spec.dense:
            check_dim(spec.dim, runner.encoder(spec.max_tokens, spec.encoder_settings).dim)
    results = []
    taken: set[str] = set()
    groups = [
        (name, lambda name=name: load_dataset(name, cache_dir, counter, small=small, seed=seed)) for name in datasets
    ]
    groups += [(pool.name, lambda pool=pool: [pool]) for pool in extra_pools or []]
    for i, (name, load) in enumerate(groups):
        start = time.perf_counter()
        synthetic = i < len(datasets) and name in SYNTHETIC
        pools = [_unique(p, taken) for p in (select_pools(load(), lengths) if synthetic else load())]
        log(f"[eval] {name}: {len(pools)} pool(s) ready in {time.perf_counter() - start:.0f}s")
        for pool in pools:
            for spec in systems:
                result = runner.run(spec, pool)
                result.synthetic = synthetic
                results.append(result)
                log(
                    f"[eval] {pool.name:14s} {spec.name:28s} ndcg@10={result.metrics['all']['ndcg@10']:.3f} "
                    f"r@1={result.metrics['all']['recall@1']:.3f} ({result.seconds:.0f}s)"
                )
    return results


def quality_rows(results: list[SystemResult]) -> list[dict[str, object]]:
    """One row per (non-synthetic pool, bucket, system)."""
    rows = []
    for r in results:
        if r.synthetic:
            continue
        for bucket, m in r.metrics.items():
            rows.append(
                {
                    "dataset": r.dataset,
                    "bucket": bucket,
                    "system": r.system,
                    "nDCG@10": m["ndcg@10"],
                    "MRR@10": m["mrr@10"],
                    "R@1": m["recall@1"],
                    "R@10": m["recall@10"],
                    "R@100": m.get("recall@100", ""),  # blank in results written before it was measured
                    "n": int(m["n"]),
                }
            )
    order = {"all": 0}
    return sorted(rows, key=lambda x: (x["dataset"], order.get(str(x["bucket"]), 1), x["bucket"]))


def pivot_rows(results: list[SystemResult], metric: str = "ndcg@10") -> list[dict[str, object]]:
    """One row per system, one column per (non-synthetic pool, bucket): ``metric`` side by side, with the
    bucket's size in the column name."""
    table: dict[str, dict[str, object]] = {}
    for r in results:
        if r.synthetic:
            continue
        row = table.setdefault(r.system, {"system": r.system})
        for bucket, m in sorted(r.metrics.items(), key=lambda item: (item[0] != "all", item[0])):
            row[f"{r.dataset} {bucket} (n={int(m['n'])})"] = m[metric]
    return list(table.values())


def synthetic_rows(results: list[SystemResult]) -> list[dict[str, object]]:
    """acc@1 per (task, system) across lengths, with the average over lengths."""
    table: dict[tuple[str, str], dict[str, object]] = {}
    for r in results:
        if not r.synthetic:
            continue
        task, _, length = r.dataset.rpartition("-")
        row = table.setdefault((task, r.system), {"task": task, "system": r.system})
        row[length] = r.metrics["all"]["recall@1"]
    for row in table.values():
        accs = [v for k, v in row.items() if k.isdigit() and isinstance(v, float)]
        row["avg"] = sum(accs) / len(accs) if accs else 0.0
    return list(table.values())


def cost_rows(results: list[SystemResult]) -> list[dict[str, object]]:
    rows = []
    for r in results:
        rows.append(
            {
                "dataset": r.dataset,
                "system": r.system,
                "encoded tokens": r.encode_tokens,
                "encode tok/s": round(r.tokens_per_second),
                "index MB": r.index_bytes / 1e6,
                "seconds": round(r.seconds, 1),
            }
        )
    return rows


def significance_rows(results: list[SystemResult], metric: str = "ndcg@10") -> list[dict[str, object]]:
    """Each system against the first one run on the same pool: mean difference in ``metric`` per query and
    the p-value of a paired two-sided t-test (non-synthetic pools)."""
    rows = []
    first: dict[str, SystemResult] = {}
    for r in results:
        if r.synthetic:
            continue
        ref = first.setdefault(r.dataset, r)
        if ref is r:
            continue
        base = {q: m[metric] for q, m in ref.per_query.items()}
        delta, p = paired_test(base, {q: m[metric] for q, m in r.per_query.items()})
        rows.append(
            {"dataset": r.dataset, "system": r.system, "vs": ref.system, f"Δ {metric}": delta, "p": p, "n": len(base)}
        )
    return rows


def render(results: list[SystemResult]) -> str:
    parts = []
    for title, rows in (
        ("Retrieval quality", quality_rows(results)),
        ("Paired t-test against the first system (nDCG@10 per query)", significance_rows(results)),
        ("Synthetic long-context tasks (acc@1 by document length in tokens)", synthetic_rows(results)),
        ("Cost", cost_rows(results)),
    ):
        if rows:
            parts.append(f"### {title}\n\n{format_table(rows)}\n")
    return "\n".join(parts)


def write_results(path: Path, results: list[SystemResult], argv: list[str], *, seed: int = 0) -> None:
    """``results`` as JSON (per-query metrics, no rankings) with the command, the datasets' ``seed`` and the machine."""
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(argv),
        "seed": seed,
        "python": sys.version.split()[0],
        "machine": platform.platform(),
    }
    rows = [
        {k: v for k, v in asdict(r).items() if k != "run"} | {"tokens_per_second": r.tokens_per_second} for r in results
    ]
    path.write_text(json.dumps({"meta": meta, "results": rows}, indent=1))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=-]+", "_", text).strip("_")


def write_runs(directory: Path, results: list[SystemResult]) -> list[Path]:
    """Each result's ranking as ``<pool>__<system>.trec`` (``qid Q0 doc_id rank score tag``, for trec_eval,
    ir-measures, ranx) and ``.jsonl`` (``{"qid", "hits": [{"doc_id", "score"}]}``, as ``longvec search``).

    The TREC score column is rank-derived (n, n-1, ..., 1): those tools re-sort by score and break ties by
    doc_id, so the systems' own scores, which can tie, would not reproduce the reported metrics; the JSONL
    keeps them. Ids holding whitespace cannot be written in the TREC format: an error, before any file.
    """
    for r in results:
        for qid, ranking in r.run.items():
            for text in (qid, *(d for d, _ in ranking)):
                if _WHITESPACE.search(text):
                    raise InvalidInputError(f"cannot write a TREC run: id {text!r} in {r.dataset} holds whitespace")
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for r in results:
        stem = f"{_slug(r.dataset)}__{_slug(r.system)}"  # names hold dots ("alpha 0.7"): no with_suffix
        trec_path, jsonl_path = directory / f"{stem}.trec", directory / f"{stem}.jsonl"
        tag = _slug(r.system)
        with open(trec_path, "w", encoding="utf-8") as trec:
            for qid, ranking in r.run.items():
                for rank, (doc_id, _score) in enumerate(ranking, 1):
                    trec.write(f"{qid} Q0 {doc_id} {rank} {len(ranking) - rank + 1} {tag}\n")
        with open(jsonl_path, "w", encoding="utf-8") as jsonl:
            for qid, ranking in r.run.items():
                hits = [{"doc_id": d, "score": s} for d, s in ranking]
                jsonl.write(json.dumps({"qid": qid, "hits": hits}) + "\n")
        written += [trec_path, jsonl_path]
    return written
