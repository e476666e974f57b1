"""What a calibration costs next to indexing: ``Collection.add`` of the code pool, then ``calibrate()``.

    python benchmarks/calibration_cost.py [--sample 2048]

Builds a collection of the eval suite's code pool (the cached ``code`` dataset: run ``longvec eval --datasets code``
once) with the default embedder, times ``add`` and then ``calibrate(sample=...)`` (adapters for every depth, the
rotation and the prefix map, every stored vector rewritten), and prints both, with the prefix map's share (two
more rotation-only calibrations, with and without the map). OpenVINO's shallow models are converted on first use
and cached under ``~/.cache/longvec/engine``: the first run on a machine includes those conversions.
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
            # the prefix map alone, refitted on the same rotated vectors (adapters off: their encoding is the rest)
            start = time.perf_counter()
            c.calibrate(adapters=False, rotation=True, prefix_map=False)
            without_map = time.perf_counter() - start
            start = time.perf_counter()
            c.calibrate(adapters=False, rotation=True, prefix_map=True)
            prefix_map = time.perf_counter() - start - without_map
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(
        f"add: {added.chunks} chunks, {added.tokens} tokens in {add:.1f} s; calibrate (sample {record['sample']}, "
        f"adapters {record['adapters']}, rotation {record['rotation']}, prefix map {record['prefix_map']}) in "
        f"{calibrate:.1f} s ({calibrate / add:.2f}x the add), of which the prefix map about {prefix_map:.1f} s"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
