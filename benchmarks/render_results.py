"""Render the markdown tables of docs/BENCHMARKS.md from `longvec eval --output` JSON files.

Usage: python benchmarks/render_results.py [--pivot] benchmarks/results/eval-2026-11-30.json [more.json ...]

``--pivot`` prints one compact table instead: a row per system, nDCG@10 per pool and bucket side by side.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from longvec.evaluation.metrics import format_table
from longvec.evaluation.report import SYNTHETIC, pivot_rows, render
from longvec.evaluation.runner import SystemResult


def load(path: Path) -> tuple[dict, list[SystemResult]]:
    data = json.loads(path.read_text())
    results = []
    for r in data["results"]:
        r.pop("tokens_per_second", None)
        r.setdefault("synthetic", r["dataset"].split("-")[0] in SYNTHETIC)  # files written before the field
        results.append(SystemResult(**r))
    return data["meta"], results


if __name__ == "__main__":
    pivot = "--pivot" in sys.argv[1:]
    for arg in [a for a in sys.argv[1:] if a != "--pivot"]:
        meta, results = load(Path(arg))
        print(f"<!-- {arg}: {meta['command']} | {meta['date']} | {meta['machine']} -->\n")
        print(format_table(pivot_rows(results)) if pivot else render(results))
