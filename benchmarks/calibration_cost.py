"""What a calibration costs next to indexing: ``Collection.add`` of the code pool, then ``calibrate()``.

    python benchmarks/calibration_cost.py [--sample 2048] [--output FILE.json]

Builds a collection of the eval suite's code pool (the cached ``code`` dataset: run ``longvec eval --datasets code``
once) with the default embedder, times ``add`` and then ``calibrate(sample=...)`` (adapters for every depth, the
rotation and the prefix map, every stored vector rewritten), and prints both, with the prefix map's share (two
more rotation-only calibrations, with and without the map). OpenVINO's shallow models are converted on first use
and cached under ``~/.cache/longvec/engine``: the first run on a machine includes those conversions.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

from longvec.embedder import EmbedderConfig, load_embedder
from longvec.index import Collection, Document

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers beside this script
from _results import eval_pools, write_results  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sample", type=int, default=2048)
    ap.add_argument("--output", type=Path, help="also write the figures here as JSON")
    args = ap.parse_args(argv)
    pool = next(eval_pools("code"))
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
        f"{calibrate:.1f} s ({calibrate / add:.2f}x the add); rotation-only calibrations {without_map:.1f} s without "
        f"the prefix map, {without_map + prefix_map:.1f} s with it: the map's share {prefix_map:.1f} s"
    )
    row = {
        "chunks": added.chunks,
        "tokens": added.tokens,
        "add_s": add,
        "calibrate_s": calibrate,
        "calibrate_over_add": calibrate / add,
        "rotation_only_s": without_map,
        "rotation_and_map_s": without_map + prefix_map,
        "prefix_map_s": prefix_map,
        "record": {k: record[k] for k in ("sample", "adapters", "rotation", "prefix_map")},
    }
    write_results(args.output, "calibration_cost.py", argv, [row])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
