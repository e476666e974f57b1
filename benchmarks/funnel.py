"""Funnel search against exact search: retrieval quality, agreement and query time, on the product path.

    python benchmarks/funnel.py [--datasets code,pydoc] [--funnels 32,64,128,binary] [--oversample 2,4,8]
                                [--structures hnsw,ivf,sq8]
                                [--max-queries 400] [--output FILE.json]

For each dataset (the eval suite's cached pools: run ``longvec eval`` once), a collection is built with the default
embedder (dense search, every setting default) and calibrated as ``longvec index`` calibrates it (``calibrate()``:
rotation, prefix map, layer adapters). Then the same queries are searched exactly (``search_many``) and through
each funnel (``search_many(funnel=D, oversample=N)``), with the query vectors encoded once beforehand so that the
times are search only. Printed per row: nDCG@10 (``evaluation.metrics``), recall@10 of the exact top-10 documents,
and milliseconds per query (the batch's wall time / queries, best of 3, after a warm-up search that builds the
prefix view). The collections here are small (thousands of chunks): the funnel's memory and speed case is at
millions of chunks, where exact flat search is the bottleneck; these figures check its quality. ``--structures``
adds rows of the whole search on another FAISS structure (``Collection.set_index_type``, rebuilt from the store):
the end-to-end quality of an approximate index against exact search.
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


class _Cached:
    """The embedder with the benchmark's query vectors encoded once (search timing without encoding)."""

    def __init__(self, embedder: Any, texts: list[str]) -> None:
        self._embedder, self._texts = embedder, texts
        self._vectors = embedder.encode_queries(texts)

    def encode_queries(self, texts: list[str], **kwargs: Any) -> Any:
        if texts == self._texts and not kwargs:
            return self._vectors
        return self._embedder.encode_queries(texts, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedder, name)


def _timed(c: Collection, texts: list[str], **options: Any) -> tuple[list, float]:
    c.search_many(texts[:5], 10, **options)  # warm-up: builds the view
    best, hits = float("inf"), []
    for _ in range(3):
        start = time.perf_counter()
        hits = c.search_many(texts, 10, **options)
        best = min(best, time.perf_counter() - start)
    return hits, 1000 * best / len(texts)


def run(
    pool: Any,
    embedder: Any,
    funnels: list[int | str],
    oversamples: list[int],
    max_queries: int,
    structures: list[str],
) -> list[dict]:
    queries = pool.queries[:max_queries]
    texts = [q.text for q in queries]
    docs = [Document(d.doc_id, d.text, path=d.path, language=d.language) for d in pool.docs]
    root = Path(tempfile.mkdtemp(prefix="funnel-"))
    rows = []
    try:
        with Collection.create(root / "c", embedder=embedder, search_mode="dense") as c:
            c.add(docs)
            record = c.calibrate()
            c.embedder = _Cached(embedder, texts)  # type: ignore[misc]
            exact, exact_ms = _timed(c, texts)
            settings: list[dict[str, Any]] = [{}] + [
                {"funnel": f, "oversample": n} for f in funnels for n in oversamples
            ]
            settings += [{"index_type": s} for s in structures]
            for options in settings:
                if "index_type" in options:  # the whole search on another structure, rebuilt from the store
                    c.set_index_type(options["index_type"])
                    hits, ms = _timed(c, texts)
                    c.set_index_type("flat")
                else:
                    hits, ms = (exact, exact_ms) if not options else _timed(c, texts, **options)
                run_ = {q.qid: [(h.doc_id, h.score) for h in hs] for q, hs in zip(queries, hits, strict=True)}
                means, _ = evaluate_run(run_, pool.qrels, queries)
                recall = sum(
                    len({h.doc_id for h in got} & {h.doc_id for h in want}) / max(1, len(want))
                    for got, want in zip(hits, exact, strict=True)
                ) / len(queries)
                rows.append(
                    {
                        "dataset": pool.name,
                        "funnel": options.get("funnel"),
                        "oversample": options.get("oversample"),
                        "index_type": options.get("index_type", "flat"),
                        "ndcg@10": means["all"]["ndcg@10"],
                        "recall@10_vs_exact": recall,
                        "ms_per_query": ms,
                        "chunks": c.info()["chunks"],
                        "prefix_map": record["prefix_map"],
                    }
                )
                print(f"  {rows[-1]}", file=sys.stderr)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--datasets", default="code,pydoc")
    ap.add_argument("--funnels", default="32,64,128,binary", help="comma-separated; empty: none")
    ap.add_argument("--structures", default="", help="also search whole on these index types (hnsw,ivf,sq8)")
    ap.add_argument("--oversample", default="2,4,8")
    ap.add_argument("--max-queries", type=int, default=400)
    ap.add_argument("--output", type=Path)
    args = ap.parse_args(argv)
    funnels: list[int | str] = [x if x == "binary" else int(x) for x in args.funnels.split(",") if x]
    structures = [x for x in args.structures.split(",") if x]
    oversamples = [int(x) for x in args.oversample.split(",")]
    embedder = load_embedder(EmbedderConfig())
    rows: list[dict] = []
    for pool in eval_pools(args.datasets):
        rows += run(pool, embedder, funnels, oversamples, args.max_queries, structures)
    print(f"{'dataset':<8} {'funnel':>6} {'over':>4} {'nDCG@10':>8} {'recall':>7} {'ms/q':>7}")
    for r in rows:
        funnel = r["index_type"] if r["funnel"] is None else str(r["funnel"])
        over = "" if r["oversample"] is None else str(r["oversample"])
        print(
            f"{r['dataset']:<8} {funnel:>6} {over:>4} {r['ndcg@10']:>8.3f} {r['recall@10_vs_exact']:>7.3f} "
            f"{r['ms_per_query']:>7.2f}"
        )
    write_results(args.output, "funnel.py", argv, rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
