"""Helpers shared by the benchmark scripts that read the eval suite's cached pools and write a results JSON.
Imported by the scripts beside it (``from _results import eval_pools, write_results``)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from longvec.evaluation.datasets import cache_path, read_cache

CACHE = Path.home() / ".cache" / "longvec" / "eval"


def _commit() -> str | None:
    """The checkout's commit, ``-dirty`` when the working tree has changes (the code that ran may not be the
    commit's)."""
    run = subprocess.run(["git", "describe", "--always", "--dirty"], capture_output=True, text=True, check=False)
    return run.stdout.strip() or None


COMMIT_AT_START = _commit()  # read when a script imports this module, before it runs for minutes


def eval_pools(names: str) -> Iterator[Any]:
    """The pools of the comma-separated cached datasets ``names`` (built by ``longvec eval --datasets NAME``)."""
    for name in names.split(","):
        path = cache_path(CACHE, name)
        if not path.exists():
            raise SystemExit(f"{path} missing: run `longvec eval --datasets {name}` once to build it")
        yield from read_cache(path)[1]


def write_results(path: Path | None, script: str, argv: list[str] | None, rows: list[dict], **extra: Any) -> None:
    """``rows`` with the date, the exact command, the commit the run started at and the machine, as JSON at
    ``path`` (if given)."""
    if path is None:
        return
    out = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join([f"python benchmarks/{script}", *(argv if argv is not None else sys.argv[1:])]),
        "commit": COMMIT_AT_START,
        "machine": platform.platform(),
        **extra,
        "rows": rows,
    }
    path.write_text(json.dumps(out, indent=1))
