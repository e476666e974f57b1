"""What a calibration costs next to indexing: ``Collection.add`` of the code pool, then ``calibrate()``.

    python benchmarks/calibration_cost.py [--sample 2048]

Builds a collection of the eval suite's code pool (the cached ``code`` dataset: run ``longvec eval --datasets code``
once) with the default embedder, times ``add`` and then ``calibrate(sample=...)`` (adapters for every depth and the
rotation, every stored vector rewritten), and prints both. OpenVINO's shallow models are converted on first use and
cached under ``~/.cache/longvec/engine``: the first run on a machine includes those conversions.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from longvec.embedder import EmbedderConfig, load_embedder
from longvec.evaluation.datasets import cache_path, read_cache
from longvec.index import Collection, Document


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sample", type=int, default=2048)
    args = ap.parse_args(argv)
    path = cache_path(Path.home() / ".cache" / "longvec" / "eval", "code")
    if not path.exists():
        raise SystemExit(f"{path} missing: run `longvec eval --datasets code` once to build it")
    pool = read_cache(path)[1][0]
    embedder = load_embedder(EmbedderConfig())
    root = Path(tempfile.mkdtemp(prefix="calibration-cost-"))
    try:
        with Collection.create(root / "c", embedder=embedder) as c:
            start = time.perf_counter()
            added = c.add(Document(d.doc_id, d.text, path=d.path, language=d.language) for d in pool.docs)
            add = time.perf_counter() - start
            start = time.perf_counter()
            record = c.calibrate(sample=args.sample)
            calibrate = time.perf_counter() - start
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"add: {added.chunks} chunks, {added.tokens} tokens in {add:.1f} s; calibrate (sample {record['sample']}, "
        f"adapters {record['adapters']}, rotation {record['rotation']}) in {calibrate:.1f} s "
        f"({calibrate / add:.2f}x the add)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
