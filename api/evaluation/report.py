"""``longvec eval``: build the pools, run every system on each, print tables and write JSON results."""

from __future__ import annotations

import json
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from api.evaluation.datasets import load_dataset
from api.evaluation.metrics import format_table
from api.evaluation.runner import Runner, SystemResult
from api.evaluation.systems import SystemSpec
from api.evaluation.types import Dataset

SYNTHETIC = ("passkey", "needle")


def select_pools(pools: list[Dataset], lengths: set[int] | None) -> list[Dataset]:
    """Synthetic pools are named ``task-<length>``; keep those whose length is in ``lengths``."""
    if not lengths:
        return pools
    return [p for p in pools if "-" not in p.name or int(p.name.rsplit("-", 1)[1]) in lengths]


def run_eval(
    datasets: list[str],
    systems: list[SystemSpec],
    *,
    cache_dir: Path,
    small: bool = False,
    lengths: set[int] | None = None,
    model: str | None = None,
    log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
) -> list[SystemResult]:
    runner = Runner(model=model)
    counter = runner.encoder(256).counter
    results = []
    for name in datasets:
        start = time.perf_counter()
        pools = select_pools(load_dataset(name, cache_dir, counter, small=small), lengths)
        log(f"[eval] {name}: {len(pools)} pool(s) ready in {time.perf_counter() - start:.0f}s")
        for pool in pools:
            for spec in systems:
                result = runner.run(spec, pool)
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
        if r.dataset.split("-")[0] in SYNTHETIC:
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
                    "n": int(m["n"]),
                }
            )
    order = {"all": 0}
    return sorted(rows, key=lambda x: (x["dataset"], order.get(str(x["bucket"]), 1), x["bucket"]))


def synthetic_rows(results: list[SystemResult]) -> list[dict[str, object]]:
    """acc@1 per (task, system) across lengths, with the average over lengths."""
    table: dict[tuple[str, str], dict[str, object]] = {}
    for r in results:
        task, _, length = r.dataset.partition("-")
        if task not in SYNTHETIC:
            continue
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


def render(results: list[SystemResult]) -> str:
    parts = []
    for title, rows in (
        ("Retrieval quality", quality_rows(results)),
        ("Synthetic long-context tasks (acc@1 by document length in tokens)", synthetic_rows(results)),
        ("Cost", cost_rows(results)),
    ):
        if rows:
            parts.append(f"### {title}\n\n{format_table(rows)}\n")
    return "\n".join(parts)


def write_results(path: Path, results: list[SystemResult], argv: list[str]) -> None:
    meta = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(argv),
        "python": sys.version.split()[0],
        "machine": platform.platform(),
    }
    data = {"meta": meta, "results": [asdict(r) | {"tokens_per_second": r.tokens_per_second} for r in results]}
    path.write_text(json.dumps(data, indent=1))
