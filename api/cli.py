"""The ``longvec`` command line: index, search, serve, info, eval.

Heavy imports (torch, faiss, tree-sitter) happen inside the commands, so ``longvec --help`` is instant.
Bad input exits with status 2 and a one-line message; nothing already stored is touched.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, TextIO


def _add_collection(p: argparse.ArgumentParser) -> None:
    p.add_argument("--collection", required=True, type=Path, help="collection directory")


def _add_target(p: argparse.ArgumentParser) -> None:
    """A collection directory, or the URL of a `longvec serve` that holds it (writes go through the server)."""
    target = p.add_mutually_exclusive_group(required=True)
    target.add_argument("--collection", type=Path, help="collection directory")
    target.add_argument("--server", metavar="URL", help="send the writes to a running `longvec serve` at URL")


def _add_channels(p: argparse.ArgumentParser, what: str = "") -> None:
    """The search channel options (for `search`, default: the collection's own, see `longvec info`)."""
    p.add_argument("--mode", choices=("dense", "lexical", "hybrid"), help=f"{what}dense, lexical (BM25) or hybrid")
    p.add_argument(
        "--fusion",
        choices=("rrf", "convex", "zscore", "adaptive", "pnorm"),
        help=f"{what}hybrid fusion: reciprocal rank, min-max scores, standardised scores (zscore: summed; pnorm, "
        "the default of new collections: positive ones combined by their 1.5-norm, so one channel that singles a "
        "chunk out can outweigh two that place another chunk fairly high), or standardised scores weighted per "
        "query by how far each channel's best document stands out",
    )
    p.add_argument(
        "--alpha",
        type=float,
        help=f"{what}hybrid: weight of the dense channel in [0, 1] (given alone: for every chunk, prose included)",
    )
    p.add_argument(
        "--text-alpha",
        type=float,
        help=f"{what}hybrid: weight of the dense channel for prose chunks (a new collection: 0.4; code: 0.7)",
    )


def _funnel(value: str) -> int | str:
    """``--funnel``: a prefix size, or ``binary``."""
    if value == "binary":
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a prefix size or 'binary', got {value!r}") from None


def _add_index_type(p: argparse.ArgumentParser, when: str, *, required: bool = False) -> None:
    p.add_argument(
        "--index-type",
        choices=("auto", "flat", "hnsw", "ivf", "ivfpq", "sq8"),  # index.vectors.INDEX_TYPES (a test checks)
        required=required,
        help="FAISS structure of the chunk vectors: auto (flat exact search below 250k vectors, HNSW above), flat, "
        f"hnsw, ivf, ivfpq (product-quantised codes, 32x smaller, rescored with the stored vectors) or sq8 (8-bit "
        f"scalar quantised) {when}",
    )


# Chunks at which `longvec index` calibrates a collection by itself (fewer give adapters too few samples).
AUTO_CALIBRATE_CHUNKS = 1000


def _add_engine(p: argparse.ArgumentParser, *, device: bool = True) -> None:
    """Where and at what precision the model encodes (vectors stay comparable: not a collection setting)."""
    if device:
        p.add_argument("--device", help="auto (default: CUDA when present, else CPU), cpu, cuda, cuda:N")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16", "fp16"),
        help="encode precision; auto (default): a low precision only where this machine runs it faster within the "
        "parity gate",
    )
    p.add_argument(
        "--backend",
        choices=("auto", "torch", "openvino"),
        help="encode backend; auto (default): the fastest within the parity gate (openvino needs longvec[openvino])",
    )
    if device:
        p.add_argument(
            "--threads",
            type=_positive_int,
            help="CPU threads for the model (default: the CPUs this process may use, container quotas included)",
        )


def _add_ray(p: argparse.ArgumentParser) -> None:
    """``index --engine ray``: chunk and encode on a Ray cluster (``index.ray_engine``), store here."""
    g = p.add_argument_group("distributed indexing (--engine ray; needs longvec[ray], see docs/SCALING.md)")
    g.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local (default): encode in this process; ray: encode on a Ray cluster's actor pool, then store here",
    )
    g.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="the cluster to join: auto (the running one) or ray://host:port (default: RAY_ADDRESS, else start a "
        "local Ray instance)",
    )
    g.add_argument("--workers", type=_positive_int, help="encoding actors (default: as many as the cluster fits)")
    g.add_argument("--cpus-per-worker", type=_positive_float, default=1.0, help="CPUs per actor (default 1)")
    g.add_argument(
        "--gpus-per-worker", type=_non_negative_float, default=0.0, help="GPUs per actor, e.g. 1 or 0.5 (default 0)"
    )
    g.add_argument(
        "--shards",
        type=Path,
        metavar="DIR",
        help="where actors write their parquet shards, on a filesystem every node sees (default: "
        "COLLECTION.ray-shards beside the collection); a rerun of a stopped job resumes from them",
    )
    g.add_argument("--keep-shards", action="store_true", help="keep the shards once the collection holds them")
    g.add_argument(
        "--part-mb", type=_positive_float, default=1.0, help="input per part (one actor call, one shard; default 1)"
    )
    g.add_argument("--retries", type=int, default=3, help="tries again for a failed part or a lost actor (default 3)")


def _positive_int(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return n


def _non_negative_int(value: str) -> int:
    n = int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return n


def _non_negative_float(value: str) -> float:
    x = float(value)
    if not x >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return x


def _positive_float(value: str) -> float:
    x = float(value)
    if not x > 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value}")
    return x


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="longvec", description="Index and search long code and long text.")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("index", help="add or update documents (JSONL and/or files and directories)")
    _add_target(p)
    p.add_argument(
        "--input",
        type=Path,
        help='JSONL of {"id", "text", "path"?, "language"?, "metadata"?} (or BEIR corpus lines); a file named '
        "*.parquet is read as parquet with those columns (needs longvec[ray])",
    )
    p.add_argument("paths", nargs="*", type=Path, help="files or directories to walk recursively")
    _add_engine(p)
    _add_ray(p)
    p.add_argument("--include", action="append", metavar="GLOB", help="only walk files matching (repeatable)")
    p.add_argument("--exclude", action="append", metavar="GLOB", help="skip files matching (repeatable)")
    p.add_argument(
        "--strategy",
        choices=("chunk", "truncate", "late", "extend"),
        help="chunk (default), truncate (baseline), late (chunk vectors pooled from the whole document's "
        "token states: late chunking) or extend (with --extend-to N: a document of up to N tokens is one vector "
        "of the extended encoder, a longer one is chunked at N)",
    )
    p.add_argument("--model", help="model path or hub name (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--max-tokens", type=int, help="chunk budget in model tokens (default: the model's limit)")
    p.add_argument(
        "--overlap-tokens",
        type=int,
        help="tokens a chunk repeats from the one before: whole text segments, or in code whole lines "
        "of the same split definition (default 0)",
    )
    p.add_argument(
        "--no-code-context",
        dest="code_context",
        action="store_const",
        const=False,
        help="embed code chunks without the signatures of the definitions they belong to (new collections)",
    )
    p.add_argument(
        "--no-path-context",
        dest="path_context",
        action="store_const",
        const=False,
        help="embed code chunks without their file path as the first line of their context (new collections)",
    )
    p.add_argument(
        "--doc-vector",
        action="store_const",
        const=True,
        help="also give each document of several chunks one vector of its first --max-tokens tokens (new collections)",
    )
    p.add_argument(
        "--split-tokens",
        type=int,
        metavar="N",
        help="chunk a document that does not fit one --max-tokens chunk at N tokens instead; one that fits stays "
        "whole (new collections)",
    )
    _add_channels(p, "the new collection's default: ")
    p.add_argument(
        "--layers",
        type=_positive_int,
        help="encode documents with the model's first N transformer layers (new collections; default: all)",
    )
    p.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help=f"skip the automatic calibration (run once a collection has {AUTO_CALIBRATE_CHUNKS} chunks, again "
        "when it has grown 4x; see `longvec calibrate`)",
    )
    _add_index_type(p, "(new collections: auto; given for an existing one, its index is rebuilt as that type)")
    p.add_argument("--batch-docs", type=_positive_int, default=32, help="documents per transaction")
    p.add_argument(
        "--prune", action="store_true", help="delete walked files of these directories that are gone from disk"
    )
    p.add_argument("--dry-run", action="store_true", help="print what would change; write nothing")
    p.add_argument("--query-prefix", default="", help='text put before every query (e.g. "query: ")')
    p.add_argument("--document-prefix", default="", help='text put before every document (e.g. "passage: ")')
    p.add_argument("--allow-download", action="store_true", help="let a hub model be downloaded")
    p.add_argument(
        "--extend-to",
        type=int,
        metavar="N",
        help="read inputs up to N tokens: interpolate a BERT-family model's position table (new collections; "
        "documents up to N tokens then get one vector, longer ones are chunked at N)",
    )
    p.add_argument(
        "--positions",
        choices=("keep", "linear", "group"),
        help="with --extend-to: keep the trained rows and stretch the rest (default; NTK-aware for rotary models), "
        "stretch all, or group (grouped rows; SelfExtend for rotary models)",
    )
    p.add_argument("--temperature", type=float, help="TempScale: divide attention logits by this (< 1 sharpens)")
    p.add_argument(
        "--length-scaled", action="store_true", default=None, help="scale attention logits by ln n / ln trained"
    )

    p = sub.add_parser("delete", help="delete documents by id or id prefix")
    _add_target(p)
    p.add_argument("ids", nargs="*", metavar="ID", help="doc_ids to delete")
    p.add_argument("--prefix", help="delete every document whose doc_id starts with this (e.g. projA/old/)")
    p.add_argument("--dry-run", action="store_true", help="print what would be deleted; delete nothing")

    p = sub.add_parser("search", help="search a collection")
    _add_collection(p)
    q = p.add_mutually_exclusive_group(required=True)
    q.add_argument("--query", help="one query text")
    q.add_argument("--queries", type=Path, help='JSONL of {"qid", "text"}')
    p.add_argument("--k", type=int, default=10, help="documents per query")
    p.add_argument("--dim", type=int, help="search a Matryoshka prefix of the vectors (see `longvec info`)")
    p.add_argument(
        "--layers",
        type=_positive_int,
        help="encode queries with the model's first N layers (default: the collection's; others once calibrated)",
    )
    p.add_argument(
        "--agg",
        choices=("maxsim", "mean", "max", "weighted"),
        default="maxsim",
        help="maxsim: a document scores as its best chunk (default); else one aggregated vector per document",
    )
    p.add_argument(
        "--funnel",
        type=_funnel,
        metavar="D|binary",
        help="shortlist documents by a D-dim prefix (or the vectors' sign bits: binary), then rank them by all "
        "their chunks at --dim (dense search)",
    )
    p.add_argument(
        "--oversample",
        type=int,
        help="funnel: documents shortlisted per document asked for (default 4, at most 64; oversample x k at "
        "most 4096; checked by the search)",
    )
    _add_channels(p)
    p.add_argument(
        "--no-proximity",
        dest="proximity",
        action="store_false",
        default=None,
        help="lexical and hybrid: score the lexical channel by BM25 alone, without term proximity",
    )
    p.add_argument("--output", type=Path, help="write JSON lines here instead of stdout")
    p.add_argument("--json", action="store_true", help="JSON lines on stdout (default for --queries)")
    _add_engine(p)

    p = sub.add_parser(
        "serve",
        help="serve the REST API, OpenAI-style /v1/embeddings and a search page (API keys from LONGVEC_READ_KEY, "
        "LONGVEC_WRITE_KEY or LONGVEC_API_KEY, or the key files)",
    )
    served = p.add_mutually_exclusive_group(required=True)
    served.add_argument("--collection", type=Path, help="the collection directory to serve")
    served.add_argument(
        "--data-root",
        type=Path,
        help="serve every collection in this directory, at /collections/NAME/ (NAME: a subdirectory)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--read-key-file", type=Path, help="API keys that may search and read, one per line")
    p.add_argument("--write-key-file", type=Path, help="API keys that may also add and delete, one per line")
    p.add_argument("--max-body-mb", type=_positive_int, default=64, help="largest request body (default 64 MiB)")
    p.add_argument(
        "--max-in-flight", type=_positive_int, default=64, help="requests handled at once; more get 429 (default 64)"
    )
    p.add_argument(
        "--max-queue", type=_positive_int, default=256, help="query encodes waiting for the model; more get 429"
    )
    p.add_argument(
        "--long-inputs",
        choices=("chunk", "reject"),
        default="chunk",
        help="/v1/embeddings inputs longer than the model's window: chunked and averaged (default), or refused",
    )
    p.add_argument(
        "--drain-seconds", type=_positive_int, default=30, help="on SIGTERM, how long in-flight requests may finish"
    )
    p.add_argument("--root-path", default="", help="the path prefix a reverse proxy serves the API under")
    _add_engine(p)

    p = sub.add_parser("info", help="print a collection's manifest and counts as JSON")
    _add_collection(p)

    p = sub.add_parser(
        "reindex", help="rebuild the collection's vector index as another FAISS type from its stored vectors"
    )
    _add_collection(p)
    _add_index_type(p, "(required)", required=True)
    _add_engine(p)

    p = sub.add_parser(
        "calibrate",
        help="fit a rotation and a prefix map (better Matryoshka prefixes) and per-layer adapters (shallow queries) "
        "on the collection",
    )
    _add_collection(p)
    p.add_argument("--sample", type=_positive_int, default=2048, help="chunks encoded at every depth for the adapters")
    for name, what in (("rotation", "rotation"), ("adapters", "layer adapters"), ("prefix-map", "prefix map")):
        p.add_argument(
            f"--no-{name}",
            dest=name.replace("-", "_"),
            action="store_const",
            const=False,
            help=f"fit no {what} (default: fitted unless the model is trained elastic on that axis)",
        )
    _add_engine(p)

    p = sub.add_parser(
        "train",
        help="fine-tune a model to be elastic in dims and layers (Matryoshka2dLoss) on your pairs or mined ones",
        description="Fine-tune a sentence-transformers model with Matryoshka2dLoss (or MatryoshkaLoss) on pairs "
        "from --pairs, or mined from --collection / --input / PATHs (doc comment -> code, heading -> section, first "
        "sentence -> rest of a paragraph). Needs `pip install longvec[train]`; uses the GPU when torch sees one.",
    )
    p.add_argument("--output", type=Path, required=True, help="new directory for the trained model")
    p.add_argument("--model", help="model to start from (default: the collection's with --collection, else default)")
    p.add_argument("--pairs", type=Path, help='JSONL of {"anchor": ..., "positive": ...} pairs')
    p.add_argument("--collection", type=Path, help="mine pairs from this collection's documents")
    p.add_argument("--input", type=Path, help="mine pairs from this JSONL of documents (as `longvec index` reads)")
    p.add_argument("paths", nargs="*", type=Path, help="mine pairs from these files and directories")
    p.add_argument("--loss", choices=("2d", "dims"), default="2d", help="2d: dims and layers (default); dims only")
    p.add_argument("--epochs", type=_positive_float, default=1.0)
    p.add_argument("--max-steps", type=_positive_int, help="stop after N optimiser steps (overrides --epochs)")
    p.add_argument("--batch-size", type=_positive_int, default=32, help="pairs per step (in-batch negatives)")
    p.add_argument("--learning-rate", type=_positive_float, default=2e-5)
    p.add_argument("--max-pairs", type=_positive_int, help="train on a random sample of at most N mined pairs")
    p.add_argument("--max-seq-length", type=_positive_int, default=128, help="tokens per text while training")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", help="auto (default: CUDA when present, else CPU), cpu, cuda, cuda:N")
    p.add_argument("--allow-download", action="store_true", help="let the starting model come from the hub")

    p = sub.add_parser("eval", help="measure retrieval quality against baselines (built-in or BEIR-format data)")
    p.add_argument(
        "--datasets",
        help="comma-separated built-in datasets: code, pydoc, passkey, needle (the default: all four, or none with "
        "--beir), code-go, code-ts, code-cpp (need `make eval-sources`)",
    )
    p.add_argument("--beir", type=Path, action="append", metavar="DIR", help="a BEIR-format test set (repeatable)")
    p.add_argument("--split", default="test", help="the BEIR qrels split to evaluate (qrels/SPLIT.tsv)")
    p.add_argument(
        "--systems",
        nargs="+",
        metavar="SPEC",
        help="KIND[:key=value,...] with KIND in chunk, truncate, st, windows, sts, bm25 (default: all of them)",
    )
    p.add_argument("--small", action="store_true", help="smoke-sized datasets (seconds, for tests)")
    p.add_argument(
        "--seed",
        type=_non_negative_int,
        default=0,
        help="draw another sample of the built-in datasets (default 0, the one docs/BENCHMARKS.md reports; "
        "--beir sets are read as they are)",
    )
    p.add_argument("--lengths", help="synthetic lengths to run, e.g. 256,512,1024 (default: all)")
    p.add_argument("--cache-dir", type=Path, default=Path.home() / ".cache" / "longvec" / "eval")
    p.add_argument("--model", help="model path or hub name (default: the packaged all-MiniLM-L6-v2)")
    p.add_argument("--output", type=Path, help="write all results (with per-query metrics) as JSON here")
    p.add_argument("--runs", type=Path, metavar="DIR", help="write each system's ranking as TREC and JSONL runs")
    p.add_argument("--k", type=int, default=100, help="documents ranked per query (default 100, for recall@100)")
    _add_engine(p, device=False)  # every system's (a spec's precision= / backend= wins)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_model_loading()
    from longvec.embedder import InvalidSettingError, ModelLoadError
    from longvec.index import LongvecError
    from longvec.index.errors import RayRunError

    handler: Callable[[argparse.Namespace], int] = COMMANDS[args.command]
    try:
        return handler(args)
    except (LongvecError, ModelLoadError, InvalidSettingError, OSError) as exc:
        print(f"longvec {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RayRunError as exc:  # the cluster failed, not the input
        print(f"longvec {args.command}: error: {exc}", file=sys.stderr)
        return 1


def _quiet_model_loading() -> None:
    """No weight-loading progress bars in command output."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()


def cmd_index(args: argparse.Namespace) -> int:
    from longvec.index import Collection, InvalidInputError
    from longvec.index.sources import WalkStats, parquet_rows, read_documents, vanished, walk_paths, walk_roots

    if args.input is None and not args.paths:
        raise InvalidInputError("nothing to index: give --input FILE and/or PATHs")
    if args.engine == "ray" and args.server is not None:
        raise InvalidInputError("--engine ray builds a collection here: it cannot be used with --server")
    if args.retries < 0:
        raise InvalidInputError(f"--retries must be 0 or more, got {args.retries}")
    if args.prune and not any(Path(p).is_dir() for p in args.paths):
        raise InvalidInputError("--prune needs at least one directory to walk")
    # Every source is checked before the first write: bad input changes nothing stored.
    # (--engine ray: the parts are planned before the collection is opened, and read by the actors.)
    stats = WalkStats()
    ray = args.engine == "ray" and not args.dry_run
    walked = args.paths and not ray
    files = walk_paths(args.paths, stats, include=args.include, exclude=args.exclude) if walked else iter(())
    prune_roots = walk_roots([p for p in args.paths if Path(p).is_dir()]) if args.prune else []
    total = stats.listed
    if args.input is not None and not ray:
        parquet = str(args.input).endswith(".parquet")  # its footer counts the rows
        total += parquet_rows(args.input) if parquet else sum(1 for _ in read_documents(args.input))

    def documents() -> Iterator[Any]:
        if args.input is not None:
            yield from read_documents(args.input)
        yield from files

    if args.server is not None:
        return _index_via_server(args, documents(), prune_roots, stats.skipped, total)

    from longvec.embedder import EmbedderConfig

    long_context = {
        k: v
        for k, v in (
            ("extend_to", args.extend_to),
            ("positions", args.positions),
            ("temperature", args.temperature),
            ("length_scaled", args.length_scaled),
        )
        if v is not None
    }
    config = EmbedderConfig(
        **_engine_settings(args),
        allow_download=args.allow_download,
        query_prefix=args.query_prefix,
        document_prefix=args.document_prefix,
        **long_context,
    )
    if args.dry_run:
        return _index_dry_run(args, documents(), prune_roots, stats.skipped)
    parts = _ray_parts(args) if ray else None
    start = time.perf_counter()
    first = _first_run(args.collection)
    collection = Collection.open_or_create(
        args.collection,
        model=args.model,
        strategy=args.strategy,
        max_tokens=args.max_tokens,
        overlap_tokens=args.overlap_tokens,
        code_context=args.code_context,
        path_context=args.path_context,
        doc_vector=args.doc_vector,
        split_tokens=args.split_tokens,
        layers=args.layers,
        search_mode=args.mode,
        fusion=args.fusion,
        alpha=args.alpha,
        text_alpha=args.text_alpha,
        index_type=args.index_type,
        embedder_config=config,
    )
    first.created = first.first  # this process made it (another one racing to create it fails above)
    indexed = False
    try:
        with collection:
            if parts is not None:
                result, run = _index_with_ray(args, collection, parts, config)
                skipped = run.skipped_files  # binary, large and vanished files, as the actors counted them
            else:
                bar = _progress(total)
                result = collection.add(documents(), batch_docs=args.batch_docs, on_batch=bar)
                bar.close()
                skipped = stats.skipped  # counted as the walk read the files
            pruned = 0
            for root in prune_roots:
                pruned += collection.delete_many(vanished([root], collection.doc_ids(root.prefix, walked=True)))
            indexed = True
            if args.calibrate and _calibration_due(info := collection.info()):
                _auto_calibrate(collection, info)
    except BaseException:
        if not indexed:
            first.undo()  # a failed first run leaves no collection behind, so no settings are fixed by it
        raise
    _print_index_summary(args, result, skipped, pruned, time.perf_counter() - start)
    return 0


def _ray_parts(args: argparse.Namespace) -> list[Any]:
    """``index --engine ray``: the inputs cut into parts (checked now: a missing path fails before anything else)."""
    try:
        from longvec.index.ray_engine import plan_parts
    except ImportError:
        from longvec.index import InvalidInputError

        raise InvalidInputError("--engine ray needs Ray and pyarrow: pip install 'longvec[ray]'") from None
    inputs = [args.input] if args.input is not None else []
    part_bytes = max(1, int(args.part_mb * (1 << 20)))
    return plan_parts(inputs, args.paths, include=args.include, exclude=args.exclude, part_bytes=part_bytes)


def _index_with_ray(args: argparse.Namespace, collection: Any, parts: list[Any], config: Any) -> tuple[Any, Any]:
    """Encode ``parts`` on the Ray cluster, then store them in ``collection``; progress on stderr."""
    from longvec.index.ray_engine import index_with_ray

    encoded = [0]

    def on_part(row: dict[str, Any]) -> None:
        encoded[0] += 1
        print(
            f"encoded part {encoded[0]}/{len(parts)}: {row['docs']} docs, {row['chunks']} chunks in "
            f"{row['seconds']:.1f}s" + (f" ({row['tries']} tries)" if row["tries"] > 1 else ""),
            file=sys.stderr,
            flush=True,
        )

    bar = _progress()
    result, run = index_with_ray(
        collection,
        parts=parts,
        config=config,
        address=args.ray_address,
        workers=args.workers,
        cpus_per_worker=args.cpus_per_worker,
        gpus_per_worker=args.gpus_per_worker,
        shard_dir=args.shards,
        keep_shards=args.keep_shards,
        retries=args.retries,
        batch_docs=args.batch_docs,
        on_batch=bar,
        on_part=on_part,
        model=args.model,
    )
    bar.close()
    print(
        f"ray: parts={run.parts} (resumed {run.resumed}, encoded {run.encoded}, retried {run.retried}) "
        f"workers={run.workers} encode_seconds={run.encode_seconds:.1f} store_seconds={run.store_seconds:.1f}",
        file=sys.stderr,
    )
    return result, run


# Collection settings are fixed by the server's collection: giving them with --server is a mistake.
_SERVER_FIXED = {
    "model": "--model",
    "strategy": "--strategy",
    "max_tokens": "--max-tokens",
    "overlap_tokens": "--overlap-tokens",
    "code_context": "--no-code-context",
    "path_context": "--no-path-context",
    "doc_vector": "--doc-vector",
    "split_tokens": "--split-tokens",
    "mode": "--mode",
    "fusion": "--fusion",
    "alpha": "--alpha",
    "text_alpha": "--text-alpha",
    "query_prefix": "--query-prefix",
    "document_prefix": "--document-prefix",
    "extend_to": "--extend-to",
    "positions": "--positions",
    "temperature": "--temperature",
    "length_scaled": "--length-scaled",
    "device": "--device",
    "precision": "--precision",
    "backend": "--backend",
    "threads": "--threads",
    "layers": "--layers",
    "index_type": "--index-type",
}


def _index_via_server(
    args: argparse.Namespace, docs: Iterator[Any], prune_roots: list[Any], skipped: int, total: int
) -> int:
    """``index --server URL``: the same inputs, sent to ``POST /documents`` in batches; prune via the server."""
    from longvec.api.client import Server, batches
    from longvec.api.schemas import MAX_DOCS_PER_REQUEST
    from longvec.index import AddResult, InvalidInputError
    from longvec.index.sources import vanished

    fixed = [flag for name, flag in _SERVER_FIXED.items() if getattr(args, name) not in (None, "")]
    if fixed or args.dry_run or args.allow_download:
        extra = fixed + ["--dry-run"] * args.dry_run + ["--allow-download"] * args.allow_download
        raise InvalidInputError(f"{', '.join(extra)} cannot be used with --server (the server's collection decides)")
    server = Server(args.server)
    server.info()  # reachable, before any work
    start = time.perf_counter()
    result, bar = AddResult(), _progress(total)
    for batch in batches(docs, max_docs=min(args.batch_docs, MAX_DOCS_PER_REQUEST)):
        done = server.add(batch)
        result.merge(done)
        bar(done)
    bar.close()
    pruned = 0
    for root in prune_roots:
        pruned += server.delete_many(vanished([root], server.doc_ids(root.prefix, walked=True)))
    _print_index_summary(args, result, skipped, pruned, time.perf_counter() - start)
    return 0


def _print_index_summary(args: argparse.Namespace, result: Any, skipped: int, pruned: int, seconds: float) -> None:
    print(
        f"indexed docs={result.added + result.updated} (added {result.added}, updated {result.updated}, "
        f"unchanged {result.unchanged}, empty {result.empty}, skipped files {skipped}"
        + (f", pruned {pruned}" if args.prune else "")
        + f") chunks={result.chunks} tokens={result.tokens} seconds={seconds:.1f}"
    )


def _index_dry_run(args: argparse.Namespace, docs: Iterator[Any], prune_roots: list[Any], skipped: int) -> int:
    """``index --dry-run``: compare the inputs with what is stored; print the counts and the ids to prune."""
    from longvec.index import Collection
    from longvec.index.sources import vanished

    if not (args.collection / "manifest.json").exists():
        n = sum(1 for _ in docs)
        print(f"dry run: no collection at {args.collection} yet; would create it and add {n} documents")
        return 0
    with Collection.open(args.collection, model=args.model, readonly=True) as collection:
        plan = collection.plan(docs)
        gone = [d for root in prune_roots for d in vanished([root], collection.doc_ids(root.prefix, walked=True))]
    for doc_id in gone:
        print(f"would prune {doc_id}")
    print(
        f"dry run: would add {plan.added}, update {plan.updated}, leave {plan.unchanged} unchanged"
        + (f", prune {len(gone)}" if args.prune else "")
        + f" (skipped files {skipped}); nothing was written"
    )
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from longvec.index import Collection, InvalidInputError

    if not args.ids and not args.prefix:
        raise InvalidInputError("nothing to delete: give doc_ids and/or --prefix")
    if args.server is not None:
        from longvec.api.client import Server

        server = Server(args.server)
        return _delete(args, server.doc_ids, server.delete_many)
    with Collection.open(args.collection, readonly=args.dry_run) as collection:
        return _delete(args, collection.doc_ids, collection.delete_many)


def _delete(
    args: argparse.Namespace, doc_ids: Callable[..., list[str]], delete_many: Callable[[list[str]], int]
) -> int:
    targets = list(dict.fromkeys([*args.ids, *(doc_ids(args.prefix) if args.prefix else [])]))
    if args.dry_run:
        present = set(doc_ids())
        for doc_id in targets:
            print(f"would delete {doc_id}" if doc_id in present else f"not stored: {doc_id}")
        print(f"dry run: would delete {sum(d in present for d in targets)}; nothing was written")
        return 0
    deleted = delete_many(targets)
    print(f"deleted {deleted} of {len(targets)} (the others were not stored)")
    return 0


class _first_run:
    """What a first ``index`` run creates, so that :meth:`undo` can remove exactly that if it fails."""

    FILES = ("manifest.json", "store.sqlite", "store.sqlite-wal", "store.sqlite-shm", "writer.lock", "vectors.json")

    def __init__(self, root: Path) -> None:
        self.root, self.existed = root, root.exists()
        self.first = not (root / "manifest.json").exists()
        self.created = False

    def undo(self) -> None:
        """Remove the collection if this run created it (never one that another process made or had)."""
        if not self.created:
            return
        for name in self.FILES:
            (self.root / name).unlink(missing_ok=True)
        for path in self.root.glob("vectors-*.faiss*"):
            path.unlink(missing_ok=True)
        if not self.existed:
            shutil.rmtree(self.root, ignore_errors=True)


class _progress:
    """Called with each batch's AddResult: a tqdm bar on a terminal (docs/s, chunks, tokens/s); elsewhere a log
    line every few seconds (documents done of ``total``, chunks, tokens/s, time left), so long jobs in CI or cron
    are not silent."""

    EVERY = 5.0

    def __init__(self, total: int | None = None) -> None:
        self.total, self.docs, self.chunks, self.tokens = total, 0, 0, 0
        self._start = self._last = time.monotonic()
        self._bar = None
        if sys.stderr.isatty():
            from tqdm import tqdm

            self._bar = tqdm(total=total, unit="doc", desc="indexing", file=sys.stderr)

    def __call__(self, result: Any) -> None:
        done = result.added + result.updated + result.unchanged + result.empty
        self.docs, self.chunks, self.tokens = self.docs + done, self.chunks + result.chunks, self.tokens + result.tokens
        if self._bar is not None:
            self._bar.update(done)
            elapsed = max(time.monotonic() - self._start, 1e-9)
            self._bar.set_postfix(chunks=self.chunks, tok_s=f"{self.tokens / elapsed:.0f}")
        elif time.monotonic() - self._last >= self.EVERY:
            self._last = time.monotonic()
            print(self.line(), file=sys.stderr, flush=True)

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        of = f"/{self.total}" if self.total else ""
        eta = ""
        if self.total and self.docs:
            eta = f", ~{(self.total - self.docs) * elapsed / self.docs:.0f}s left"
        return (
            f"indexing: {self.docs}{of} docs, {self.chunks} chunks, {self.tokens / elapsed:.0f} tok/s, "
            f"{elapsed:.0f}s{eta}"
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def read_queries(path: Path) -> list[tuple[str, str]]:
    """``(qid, text)`` pairs from JSONL ``{"qid", "text"}`` (or BEIR queries, ``{"_id", "text"}``); errors
    name the line."""
    from longvec.index import InvalidInputError
    from longvec.index.sources import jsonl_records

    out: list[tuple[str, str]] = []
    lines: dict[str, int] = {}
    for lineno, rec in jsonl_records(path):
        qid = rec.get("qid", rec.get("_id")) if isinstance(rec, dict) else None  # "_id": BEIR queries
        if qid is None or not isinstance(rec.get("text"), str):
            raise InvalidInputError(f'{path}:{lineno}: expected {{"qid", "text"}} (or BEIR\'s {{"_id", "text"}})')
        qid = str(qid)
        if not rec["text"].strip():
            raise InvalidInputError(f"{path}:{lineno}: query {qid!r} has no text")
        if (first := lines.setdefault(qid, lineno)) != lineno:  # the output keys results by qid
            raise InvalidInputError(f"{path}:{lineno}: query id {qid!r} repeats line {first}")
        out.append((qid, rec["text"]))
    return out


def cmd_search(args: argparse.Namespace) -> int:
    from longvec.index import Collection, CollectionNotFoundError, Manifest, check_funnel, check_search

    queries = [("q", args.query)] if args.query is not None else read_queries(args.queries)
    if not (args.collection / "manifest.json").exists():
        raise CollectionNotFoundError(f"no collection at {args.collection} (create one with `longvec index`)")
    # Arguments are checked before the model loads: a typo costs no seconds.
    channels = {"mode": args.mode, "fusion": args.fusion, "alpha": args.alpha, "text_alpha": args.text_alpha}
    manifest = Manifest.load(args.collection / "manifest.json")
    view, checked = check_search(
        manifest,
        [t for _, t in queries],
        args.k,
        1,
        args.dim,
        args.agg,
        **channels,
        funnel=args.funnel,
        proximity=args.proximity,
    )
    check_funnel(view, checked, args.funnel, args.oversample, args.k)
    with Collection.open(args.collection, readonly=True, embedder_config=_engine_config(args)) as collection:
        texts = [t for _, t in queries]
        options = {"k": args.k, "dim": args.dim, "agg": args.agg, "layers": args.layers, **channels}
        options |= {"funnel": args.funnel, "oversample": args.oversample, "proximity": args.proximity}
        results = collection.search_many(texts, **options) if queries else []
    as_json = args.json or args.queries is not None or args.output is not None
    out: IO[str] = open(args.output, "w", encoding="utf-8") if args.output else sys.stdout  # noqa: SIM115
    try:
        for (qid, text), hits in zip(queries, results, strict=True):
            if as_json:
                out.write(json.dumps({"qid": qid, "hits": [h.to_dict() for h in hits]}) + "\n")
            else:
                _print_hits(text, hits, out)
    finally:
        if out is not sys.stdout:
            out.close()
    return 0


def _print_hits(query: str, hits: list[Any], out: TextIO) -> None:
    out.write(f"query: {query}\n")
    for rank, h in enumerate(hits, 1):
        where = ""
        if h.chunks:  # aggregated scoring has no chunk spans
            best = h.chunks[0]
            where = f"  [{best.start}:{best.end}]" + (f" {best.symbol}" if best.symbol else "")
        out.write(f"{rank:3d}. {h.score:.4f}  {h.doc_id}{where}\n")


def _engine_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``_add_engine`` flags as ``EmbedderConfig`` fields, ``auto`` where not given (they default to None so
    that ``--server`` can tell given flags apart)."""
    names = ("device", "precision", "backend") if hasattr(args, "device") else ("precision", "backend")
    out: dict[str, Any] = {name: getattr(args, name) or "auto" for name in names}
    if getattr(args, "threads", None) is not None:
        out["threads"] = args.threads
    return out


def _engine_config(args: argparse.Namespace) -> Any:
    from longvec.embedder import EmbedderConfig

    return EmbedderConfig(**_engine_settings(args))


def cmd_serve(args: argparse.Namespace) -> int:
    import logging.config

    import uvicorn

    from longvec.api.app import create_app
    from longvec.api.service import ServiceSettings, json_logging
    from longvec.index import Collection, InvalidInputError

    if args.collection is not None:  # exit 2 now, not after the server started, if it cannot be opened
        Collection.check_writable(args.collection)
    elif not args.data_root.is_dir():
        raise InvalidInputError(f"--data-root {args.data_root} is not a directory")
    else:
        for child in sorted(args.data_root.iterdir()):
            if (child / "manifest.json").is_file():
                Collection.check_writable(child)
    try:
        settings = ServiceSettings.from_env(
            read_key_file=args.read_key_file,
            write_key_file=args.write_key_file,
            max_body_bytes=args.max_body_mb * 1024 * 1024,
            max_in_flight=args.max_in_flight,
            max_queue=args.max_queue,
            long_inputs=args.long_inputs,
        )
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    logging.config.dictConfig(json_logging())
    config = _engine_config(args)
    server: uvicorn.Server | None = None

    def stopping_on_error(open_one: Callable[..., Collection]) -> Callable[..., Collection]:
        def opened(*args: Any, **kwargs: Any) -> Collection:
            try:
                return open_one(*args, **kwargs)
            except BaseException:
                if server is not None and not app.state.longvec.loaded:
                    server.should_exit = True  # a startup load failed: stop, and exit 2 below
                raise

        return opened

    def open_at(path: Path, embedder: Any = None) -> Collection:
        return Collection.open(path, embedder=embedder, embedder_config=None if embedder is not None else config)

    if args.collection is not None:
        app = create_app(
            open_collection=stopping_on_error(lambda: open_at(args.collection)),
            settings=settings,
        )
    else:
        app = create_app(data_root=args.data_root, open_at=stopping_on_error(open_at), settings=settings)
    server = uvicorn.Server(
        uvicorn.Config(
            app,
            host=args.host,
            port=args.port,
            log_config=None,  # json_logging() above
            access_log=False,  # the app logs each request with its id
            timeout_graceful_shutdown=args.drain_seconds,
            root_path=args.root_path,
        )
    )
    auth = "on" if settings.auth else "off"
    where = args.collection if args.collection is not None else f"the collections in {args.data_root}"
    at = "/" if args.collection is not None else "/collections/NAME/"
    print(
        f"serving {where} on http://{args.host}:{args.port} (search page {at}, POST {at}search, "
        f"POST {at}v1/embeddings; /readyz, /metrics; API keys {auth})",
        flush=True,
    )
    server.run()
    error = app.state.longvec.error
    if error is not None and not app.state.longvec.loaded:
        print(f"longvec serve: error: {error}", file=sys.stderr)
        return 2
    return 0


def _calibration_due(info: dict[str, Any]) -> bool:
    """Whether `longvec index` calibrates now: at AUTO_CALIBRATE_CHUNKS chunks, and again at 4x the chunks of the last
    calibration (an embedder without layers, like a test double, is never calibrated)."""
    if info.get("model_layers") is None or info["chunks"] < AUTO_CALIBRATE_CHUNKS:
        return False
    shallow = info["layers"] != info["model_layers"]
    native = set(info.get("native_matryoshka", ()))
    if "dims" in native and ("layers" in native or shallow):
        return False  # what is left to fit, the model was trained for
    last = info.get("calibration")
    return last is None or info["chunks"] >= 4 * int(last.get("chunks", 0))


def _auto_calibrate(collection: Any, info: dict[str, Any]) -> None:
    """`longvec index`'s own calibration: a failure leaves the collection as it was (one transaction) and is a
    warning, not a failed index run. A collection built with fewer layers gets its own space rotated only (its
    documents keep the vectors their depth gave; `longvec calibrate` maps them into the full model's)."""
    shallow = info["layers"] != info["model_layers"]
    print("calibrating (see `longvec calibrate`; --no-calibrate skips it)...", file=sys.stderr)
    try:
        collection.calibrate(adapters=False if shallow else None)
    except Exception as exc:
        print(f"longvec index: warning: calibration skipped: {exc}", file=sys.stderr)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from longvec.index import Collection

    with Collection.open(args.collection, embedder_config=_engine_config(args)) as collection:
        record = collection.calibrate(
            sample=args.sample, rotation=args.rotation, adapters=args.adapters, prefix_map=args.prefix_map
        )
    print(json.dumps(record, indent=2))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from longvec.embedder.train import TrainSettings, check_training_extra, load_for_training, train
    from longvec.index import InvalidInputError
    from longvec.index.sources import WalkStats, read_jsonl, walk_paths
    from longvec.index.training import collection_documents, mined_pairs, read_pairs

    sources = [args.pairs is not None, args.collection is not None, args.input is not None or bool(args.paths)]
    if sum(sources) != 1:
        raise InvalidInputError("give one source of pairs: --pairs FILE, --collection DIR, or --input FILE / PATHs")
    if args.pairs is not None and args.max_pairs is not None:
        raise InvalidInputError("--max-pairs samples mined pairs: with --pairs, give the pairs you want trained on")
    check_training_extra()  # before a model loads
    if args.output.exists() and (not args.output.is_dir() or any(args.output.iterdir())):
        raise InvalidInputError(f"{args.output} exists and is not an empty directory: choose a new --output")
    model = args.model
    if args.pairs is not None:
        pairs = read_pairs(args.pairs)
        origin = str(args.pairs)
    else:
        if args.collection is not None:
            built_with, docs = collection_documents(args.collection)
            model = model or built_with
            mined = mined_pairs(docs, max_pairs=args.max_pairs, seed=args.seed)
            origin = f"mined from collection {args.collection}"
        else:
            stats = WalkStats()
            files = walk_paths(args.paths, stats) if args.paths else iter(())
            docs = [*(read_jsonl(args.input) if args.input is not None else ()), *files]
            mined = mined_pairs(docs, max_pairs=args.max_pairs, seed=args.seed)
            origin = f"mined from {len(docs)} documents"
        kinds = Counter(p.kind for p in mined)
        print(f"{len(mined)} pairs {origin}: {dict(sorted(kinds.items()))}", file=sys.stderr)
        if len(mined) < 2:
            raise InvalidInputError(
                f"only {len(mined)} pairs could be mined ({origin}): give your own with --pairs FILE.jsonl"
            )
        pairs = [(p.anchor, p.positive) for p in mined]
    settings = TrainSettings(
        loss=args.loss,
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        max_steps=args.max_steps,
        max_seq_length=args.max_seq_length,
        seed=args.seed,
    )
    st = load_for_training(model, allow_download=args.allow_download, device=args.device or "auto")
    print(f"training on {len(pairs)} pairs ({args.loss} loss)...", file=sys.stderr)
    with contextlib.redirect_stdout(sys.stderr):  # the trainer prints its progress: stdout is the record
        record = train(st, pairs, args.output, settings, base_model=model or "default", source=origin)
    print(json.dumps({"output": str(args.output), **record}, indent=2))
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    from longvec.index import Collection

    with Collection.open(args.collection, embedder_config=_engine_config(args)) as collection:
        start = time.perf_counter()
        info = collection.set_index_type(args.index_type)
    print(json.dumps({**info, "seconds": round(time.perf_counter() - start, 3)}, indent=2))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from longvec.index import Collection

    with Collection.open(args.collection, readonly=True) as collection:
        print(json.dumps(collection.info(), indent=2))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from longvec.evaluation import ALL_DATASET_NAMES, DATASET_NAMES
    from longvec.evaluation.beir import load_beir
    from longvec.evaluation.report import render, run_eval, write_results, write_runs
    from longvec.evaluation.systems import DEFAULT_SYSTEMS, SystemSpec
    from longvec.index import InvalidInputError

    default = "" if args.beir else ",".join(DATASET_NAMES)
    datasets = [d.strip() for d in (args.datasets if args.datasets is not None else default).split(",") if d.strip()]
    unknown = sorted(set(datasets) - set(ALL_DATASET_NAMES))
    if unknown or not (datasets or args.beir):
        raise InvalidInputError(f"unknown datasets {unknown}; choose from {ALL_DATASET_NAMES} or give --beir DIR")
    if not 100 <= args.k <= 1000:
        raise InvalidInputError(f"--k must be in [100, 1000] (recall@100 is reported), got {args.k}")
    beir = [load_beir(d, args.split) for d in args.beir or []]  # read and checked before any system runs
    systems = [SystemSpec.parse(s) for s in (args.systems or DEFAULT_SYSTEMS)]
    try:
        lengths = {int(x) for x in args.lengths.split(",")} if args.lengths else None
    except ValueError:
        raise InvalidInputError(f"--lengths must be comma-separated integers, got {args.lengths!r}") from None
    results = run_eval(
        datasets,
        systems,
        cache_dir=args.cache_dir,
        small=args.small,
        seed=args.seed,
        lengths=lengths,
        model=args.model,
        **_engine_settings(args),
        extra_pools=beir,
        k=args.k,
    )
    print(render(results))
    if args.output is not None:
        write_results(args.output, results, ["longvec", *sys.argv[1:]], seed=args.seed)
    if args.runs is not None:
        write_runs(args.runs, results)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "index": cmd_index,
    "delete": cmd_delete,
    "search": cmd_search,
    "serve": cmd_serve,
    "info": cmd_info,
    "calibrate": cmd_calibrate,
    "reindex": cmd_reindex,
    "train": cmd_train,
    "eval": cmd_eval,
}

if __name__ == "__main__":
    sys.exit(main())
