"""How well ``chunking.detect_language`` reads a document's language from its text alone, and what it costs.

    python benchmarks/detect_language.py [--per-set 200] [--output PATH]

Sets: the code and prose pools ``longvec eval`` builds (its cache, ``~/.cache/longvec/eval``: run an eval first;
a missing pool is skipped and said so), plus files that ship with this machine: the standard library's ``.py``
modules, C headers under ``/usr/include``, and site-packages' ``.md``, ``.rst`` and ``.json`` files (over 1,000
characters each). Up to ``--per-set`` documents per set, drawn with a fixed seed.

For each set: the share of documents read as code (any grammar), the share read as the set's own language (code
pools: C read for C++ and JavaScript or TSX for TypeScript count as right), the languages found, and the mean and
largest milliseconds per document. Printed, then one JSON object (also written to ``--output``). Nothing is
asserted.
"""

from __future__ import annotations

import argparse
import glob
import json
import random
import sys
import sysconfig
import time
from collections import Counter
from pathlib import Path
from typing import Any

from longvec.chunking import detect_language
from longvec.evaluation.datasets import cache_path, read_cache

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers beside this script
from _results import CACHE, write_results  # noqa: E402

POOLS = {"code": "python", "code-go": "go", "code-cpp": "cpp", "code-ts": "typescript", "pydoc": None}
SYNTHETIC = ("needle", "passkey")
CLOSE = {"cpp": {"c"}, "typescript": {"javascript", "tsx"}}


def _pool(name: str) -> list[str] | None:
    path = cache_path(CACHE, name)
    if not path.exists():
        return None
    _, pools = read_cache(path)
    return [d.text for pool in pools for d in pool.docs]


def _files(pattern: str) -> list[str]:
    out = []
    for name in sorted(glob.glob(pattern, recursive=True)):
        try:
            text = Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
        if len(text) > 1000:
            out.append(text)
    return out


def measure(texts: list[str], truth: str | None) -> dict[str, Any]:
    found: list[str | None] = []
    ms: list[float] = []
    for text in texts:
        start = time.perf_counter()
        found.append(detect_language(text))
        ms.append((time.perf_counter() - start) * 1000)
    out: dict[str, Any] = {
        "documents": len(texts),
        "read_as_code": round(sum(f is not None for f in found) / len(texts), 3),
        "languages": dict(Counter(f or "prose" for f in found).most_common()),
        "mean_ms": round(sum(ms) / len(ms), 2),
        "max_ms": round(max(ms), 2),
    }
    if truth is not None:
        right = sum(f == truth or f in CLOSE.get(truth, ()) for f in found)
        out["read_as_its_language"] = round(right / len(texts), 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-set", type=int, default=200, help="documents per set (default 200)")
    parser.add_argument("--output", type=Path, help="also write the JSON object here")
    args = parser.parse_args(argv)
    rng = random.Random(0)
    paths = sysconfig.get_paths()
    sets: dict[str, tuple[list[str] | None, str | None]] = {}
    for name, truth in POOLS.items():
        sets[name] = (_pool(name), truth)
    for name in SYNTHETIC:
        sets[name] = (_pool(name), None)
    sets["stdlib .py"] = (_files(paths["stdlib"] + "/*.py"), "python")
    sets["/usr/include .h"] = (_files("/usr/include/*.h"), None)
    for ext in ("md", "rst", "json"):
        sets[f"site-packages .{ext}"] = (_files(f"{paths['purelib']}/**/*.{ext}"), None)
    results: dict[str, Any] = {}
    for name, (texts, truth) in sets.items():
        if not texts:
            print(f"{name}: skipped (no documents: run `longvec eval` to build the pools)")
            continue
        picked = rng.sample(texts, min(args.per_set, len(texts)))
        results[name] = measure(picked, truth)
        r = results[name]
        own = f", as its language {r['read_as_its_language']:.1%}" if truth else ""
        print(
            f"{name}: {r['documents']} docs, read as code {r['read_as_code']:.1%}{own}; "
            f"{r['mean_ms']} ms mean, {r['max_ms']} ms max; {r['languages']}"
        )
    rows = [{"set": name, **r} for name, r in results.items()]
    print(json.dumps(rows))
    write_results(args.output, "detect_language.py", argv, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
