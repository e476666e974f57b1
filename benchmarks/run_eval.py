"""The full evaluation table of docs/BENCHMARKS.md: every dataset, every baseline, longvec chunk and truncate.

Usage: python benchmarks/run_eval.py [extra `longvec eval` flags]
Writes benchmarks/results/eval-<date>.json and prints the markdown tables (about an hour on 2 CPU cores).
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

from longvec.api.cli import main

if __name__ == "__main__":
    out = Path(__file__).parent / "results" / f"eval-{datetime.now(UTC):%Y-%m-%d}.json"
    out.parent.mkdir(exist_ok=True)
    sys.exit(main(["eval", "--output", str(out), *sys.argv[1:]]))
