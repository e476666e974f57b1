"""2D Matryoshka grid: nDCG@10 by encoder depth (layers) and dimensions, raw against calibrated, on the product path.

    python benchmarks/matryoshka2d.py [--datasets code,pydoc] [--layers 1,2,3,4,5,6] [--dims 32,64,128,192,256,384]
                                      [--sample 2048] [--max-queries 400] [--model DIR]
                                      [--variants raw,pca,map,calibrated]
                                      [--output FILE.json]

For each dataset (the eval suite's cached pools, built by ``longvec eval`` first) and each depth ``k``, a collection
is built with ``Collection.create(layers=k)`` (documents and queries both encoded with the model's first ``k``
layers, dense search, chunk strategy and every other setting at its default) and searched at each prefix size
``dim`` (``search_many(dim=...)``), three ways, in this order on the same collection:

- ``raw``: no calibration: the first ``dim`` coordinates of the depth-``k`` vectors, re-normalised;
- ``pca``: ``calibrate(adapters=False, prefix_map=False)``: the stored vectors rotated onto their principal axes;
- ``map``: ``calibrate(adapters=False)``: the rotation refitted, and prefixes cut through the prefix map fitted on
  the rotated vectors (kept only if it beats plain prefixes on held-out vectors);
- ``calibrated``: ``calibrate()``: depth-``k`` vectors mapped by a ridge adapter into the full model's space
  (fitted on ``--sample`` chunks of the collection), then rotated, and prefixes cut through the prefix map.

``--model`` evaluates another model (e.g. one from ``longvec train``: ``benchmarks/train_2d.py``); a model trained
for both axes is used as it is, so only the ``raw`` variant is meaningful for it (``--variants raw``).

Also printed: encode tokens/s per depth (the collection build's chunk tokens over its ``add`` time) and bytes per
float32 vector per dim. nDCG@10 over all queries of the pool (``--max-queries``: the first N, for time).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from longvec.embedder import EmbedderConfig, load_embedder
from longvec.evaluation.metrics import evaluate_run
from longvec.index import Collection, Document

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers beside this script
from _results import eval_pools, write_results  # noqa: E402

VARIANTS = ("raw", "pca", "map", "calibrated")


def grid(
    pool: Any, embedder: Any, depths: list[int], dims: list[int], sample: int, max_queries: int, variants: list[str]
) -> list[dict]:
    queries = pool.queries[:max_queries]
    texts = [q.text for q in queries]
    docs = [Document(d.doc_id, d.text, path=d.path, language=d.language) for d in pool.docs]
    rows = []
    for depth in depths:
        root = Path(tempfile.mkdtemp(prefix="m2d-"))
        try:
            with Collection.create(root / "c", embedder=embedder, layers=depth, search_mode="dense") as c:
                start = time.perf_counter()
                added = c.add(docs)
                seconds = time.perf_counter() - start
                print(f"  {pool.name} layers {depth}: {added.tokens} tokens in {seconds:.0f}s", file=sys.stderr)
                for variant in variants:
                    if variant == "pca":
                        c.calibrate(rotation=True, adapters=False, prefix_map=False)
                    elif variant == "map":
                        c.calibrate(rotation=True, adapters=False, prefix_map=True)
                    elif variant == "calibrated":
                        c.calibrate(sample=sample, rotation=True, adapters=True, prefix_map=True)
                    for dim in dims:
                        hits = c.search_many(texts, 10, dim=dim)
                        run = {q.qid: [(h.doc_id, h.score) for h in hs] for q, hs in zip(queries, hits, strict=True)}
                        means, _ = evaluate_run(run, pool.qrels, queries)
                        rows.append(
                            {
                                "dataset": pool.name,
                                "layers": depth,
                                "dim": dim,
                                "variant": variant,
                                "ndcg@10": means["all"]["ndcg@10"],
                                "queries": len(queries),
                                "add_tokens_per_s": added.tokens / seconds,
                            }
                        )
        finally:
            shutil.rmtree(root, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="code,pydoc")
    ap.add_argument("--layers", default="1,2,3,4,5,6")
    ap.add_argument("--dims", default="32,64,128,192,256,384")
    ap.add_argument("--sample", type=int, default=2048)
    ap.add_argument("--max-queries", type=int, default=400)
    ap.add_argument("--model", help="the model to evaluate (default: longvec's default)")
    ap.add_argument("--variants", default="raw,pca,map,calibrated")
    ap.add_argument("--output", type=Path)
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    if not set(variants) <= set(VARIANTS) or variants != sorted(variants, key=VARIANTS.index):
        raise SystemExit(f"--variants: some of {', '.join(VARIANTS)}, in this order (each recalibrates the last)")
    depths = [int(x) for x in args.layers.split(",")]
    dims = [int(x) for x in args.dims.split(",")]
    embedder = load_embedder(EmbedderConfig(**({"model": args.model} if args.model else {})))
    rows: list[dict] = []
    for pool in eval_pools(args.datasets):
        rows += grid(pool, embedder, depths, dims, args.sample, args.max_queries, variants)
    print(f"{'dataset':<10} {'layers':>6} {'variant':<11} " + " ".join(f"{d:>7}" for d in dims) + "   tok/s")
    for key in sorted({(r["dataset"], r["layers"], r["variant"]) for r in rows}):
        cells = {r["dim"]: r for r in rows if (r["dataset"], r["layers"], r["variant"]) == key}
        line = " ".join(f"{cells[d]['ndcg@10']:>7.3f}" for d in dims)
        print(f"{key[0]:<10} {key[1]:>6} {key[2]:<11} {line}   {cells[dims[0]]['add_tokens_per_s']:.0f}")
    print("bytes per vector (float32): " + ", ".join(f"{d}: {4 * d}" for d in dims))
    write_results(
        args.output,
        "matryoshka2d.py",
        argv,
        rows,
        engine=embedder.engine_report.get("backend"),
        model=args.model or "default",
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
