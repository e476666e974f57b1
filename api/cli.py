"""The ``longvec`` command line: index, search, serve, info, eval.

Heavy imports (torch, faiss, tree-sitter) happen inside the commands, so ``longvec --help`` is instant.
Bad input exits with status 2 and a one-line message; nothing already stored is touched.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TextIO


def _add_collection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", required=True, type=Path, help="collection directory")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="longvec", description="Index and search long code and long text.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="add or update documents (JSONL and/or files and directories)")
    _add_collection(p)
    p.add_argument("--input", type=Path, help='JSONL of {"id", "text", "path"?, "language"?, "metadata"?}')
    p.add_argument("paths", nargs="*", type=Path, help="files or directories to walk recursively")
    p.add_argument("--include", action="append", metavar="GLOB", help="only walk files matching (repeatable)")
    p.add_argument("--exclude", action="append", metavar="GLOB", help="skip files matching (repeatable)")
    p.add_argument("--strategy", choices=("chunk", "truncate"), help="chunk (default) or truncate (baseline)")
    p.add_argument("--model", help="model path or hub name (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--max-tokens", type=int, help="chunk budget in model tokens (default: the model's limit)")
    p.add_argument("--overlap-tokens", type=int, help="text chunk overlap in tokens (default 0)")
    p.add_argument("--batch-docs", type=int, default=32, help="documents per transaction")
    p.add_argument("--allow-download", action="store_true", help="let a hub model be downloaded")

    p = sub.add_parser("search", help="search a collection")
    _add_collection(p)
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--query", help="one query text")
    q.add_argument("--queries", type=Path, help='JSONL of {"qid", "text"}')
    p.add_argument("--k", type=int, default=10, help="documents per query")
    p.add_argument("--output", type=Path, help="write JSON lines here instead of stdout")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout (default for --queries)")

    p = sub.add_parser("serve", help="serve the REST API")
    _add_collection(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)

    p = sub.add_parser("info", help="print a collection's manifest and counts as JSON")
    _add_collection(p)

    p = sub.add_parser("eval", help="measure retrieval quality against baselines on built-in datasets")
    p.add_argument("--datasets", default="code,pydoc,passkey,needle", help="comma-separated dataset names")
    p.add_argument(
        "--systems",
        nargs="+",
        metavar="SPEC",
        help="KIND[:key=value,...] with KIND in chunk, truncate, st, windows, bm25 (default: all baselines)",
    )
    p.add_argument("--small", action="store_true", help="smoke-sized datasets (seconds, for tests)")
    p.add_argument("--lengths", help="synthetic lengths to run, e.g. 256,512,1024 (default: all)")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "longvec" / "eval")
    p.add_argument("--model", help="model path or hub name (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--output", type=Path, help="write all results as JSON here")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_model_loading()
    from embedder import ModelLoadError
    from index import LongvecError

    handler: Callable[[argparse.Namespace], int] = COMMANDS[args.command]
    try:
        return handler(args)
    except (LongvecError, ModelLoadError, ValueError, OSError) as exc:
        print(f"longvec {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _quiet_model_loading() -> None:
    """No weight-loading progress bars in command output."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()


def cmd_index(args: argparse.Namespace) -> int:
    from index import Collection
    from index.sources import WalkStats, read_jsonl, walk_paths

    if args.input is None and not args.paths:
        raise ValueError("nothing to index: give --input FILE and/or PATHs")
    if args.input is not None:
        for _ in read_jsonl(args.input):  # validate every line before writing anything
            pass
    stats = WalkStats()

    def documents() -> Iterator[Any]:
        if args.input is not None:
            yield from read_jsonl(args.input)
        if args.paths:
            yield from walk_paths(args.paths, stats, include=args.include, exclude=args.exclude)

    from embedder import EmbedderConfig

    config = EmbedderConfig(allow_download=args.allow_download)
    start = time.perf_counter()
    with Collection.open_or_create(
        args.collection,
        model=args.model,
        strategy=args.strategy,
        max_tokens=args.max_tokens,
        overlap_tokens=args.overlap_tokens,
        embedder_config=config,
    ) as collection:
        bar = _progress()
        result = collection.add(documents(), batch_docs=args.batch_docs, on_batch=bar)
        bar.close()
    seconds = time.perf_counter() - start
    skipped = stats.skipped_binary + stats.skipped_large
    print(
        f"indexed docs={result.added + result.updated} (added {result.added}, updated {result.updated}, "
        f"unchanged {result.unchanged}, skipped files {skipped}) chunks={result.chunks} "
        f"tokens={result.tokens} seconds={seconds:.1f}"
    )
    return 0


class _progress:
    """A tqdm bar on a TTY, silent otherwise; called with each batch's AddResult."""

    def __init__(self) -> None:
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(unit="doc", desc="indexing", file=sys.stderr)

    def __call__(self, result: Any) -> None:
        if self._bar is not None:
            self._bar.update(result.added + result.updated + result.unchanged)
            self._bar.set_postfix(chunks=result.chunks)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def read_queries(path: Path) -> list[tuple[str, str]]:
    """``(qid, text)`` pairs from JSONL ``{"qid", "text"}``; errors name the line."""
    out = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: {exc}") from None
            if not isinstance(rec, dict) or not isinstance(rec.get("text"), str) or "qid" not in rec:
                raise ValueError(f'{path}:{lineno}: expected {{"qid", "text"}}')
            out.append((str(rec["qid"]), rec["text"]))
    return out


def cmd_search(args: argparse.Namespace) -> int:
    from index import Collection

    queries = [("q", args.query)] if args.query is not None else read_queries(args.queries)
    with Collection.open(args.collection, readonly=True) as collection:
        results = collection.search_many([t for _, t in queries], k=args.k) if queries else []
    as_json = args.json or args.queries is not None or args.output is not None
    out: IO[str] = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        for (qid, text), hits in zip(queries, results, strict=True):
            if as_json:
                out.write(json.dumps({"qid": qid, "hits": [_hit_json(h) for h in hits]}) + "\n")
            else:
                _print_hits(text, hits, out)
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _hit_json(hit: Any) -> dict[str, Any]:
    chunks = [{"start": c.start, "end": c.end, "score": round(c.score, 6)} for c in hit.chunks]
    return {"doc_id": hit.doc_id, "score": round(hit.score, 6), "chunks": chunks}


def _print_hits(query: str, hits: list[Any], out: TextIO) -> None:
    out.write(f"query: {query}\n")
    for rank, h in enumerate(hits, 1):
        best = h.chunks[0]
        where = f" {best.symbol}" if best.symbol else ""
        out.write(f"{rank:3d}. {h.score:.4f}  {h.doc_id}  [{best.start}:{best.end}]{where}\n")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from index import Collection

    collection = Collection.open(args.collection)
    print(f"serving {args.collection} on http://{args.host}:{args.port} (POST /search, GET /info)", flush=True)
    uvicorn.run(create_app(collection), host=args.host, port=args.port, log_level="info")
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from index import Collection

    with Collection.open(args.collection, readonly=True) as collection:
        print(json.dumps(collection.info(), indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from api.evaluation import DATASET_NAMES
    from api.evaluation.report import render, run_eval, write_results
    from api.evaluation.systems import DEFAULT_SYSTEMS, SystemSpec

    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    unknown = sorted(set(datasets) - set(DATASET_NAMES))
    if unknown or not datasets:
        raise ValueError(f"unknown datasets {unknown}; choose from {DATASET_NAMES}")
    systems = [SystemSpec.parse(s) for s in (args.systems or DEFAULT_SYSTEMS)]
    try:
        lengths = {int(x) for x in args.lengths.split(",")} if args.lengths else None
    except ValueError:
        raise ValueError(f"--lengths must be comma-separated integers, got {args.lengths!r}") from None
    results = run_eval(datasets, systems, cache_dir=args.cache_dir, small=args.small, lengths=lengths, model=args.model)
    print(render(results))
    if args.output is not None:
        write_results(args.output, results, ["longvec", *sys.argv[1:]])
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "index": cmd_index,
    "search": cmd_search,
    "serve": cmd_serve,
    "info": cmd_info,
    "eval": cmd_eval,
}

if __name__ == "__main__":
    sys.exit(main())
