"""What the lexical channel costs at ~100k chunks: per-query latency by search mode, and the bytes on disk.

    python benchmarks/lexical.py [--chunks 100000] [--max-tokens 256] [--queries 200] [--dir DIR] [--output PATH]
    python benchmarks/lexical.py --quick          # a few thousand chunks, seconds (what the test runs)

Corpus: real code and its prose -- the Python standard library's ``.py`` files (test directories skipped),
then, when more chunks are needed, this interpreter's ``site-packages`` -- one document per file, in sorted
order, added through ``Collection.add`` until the collection holds ``--chunks`` chunks (at most one batch
more; the real count is printed). The embedder is ``_synthetic.SyntheticEncoder``: the packaged model's
tokenizer (so the chunks are the ones the real model would get) and random vectors (so building takes
minutes, not hours).

Queries: ``--queries`` drawn with a fixed seed from the indexed standard-library files, half docstring first
sentences (``Return the number of bytes in the buffer``), half identifiers (``get_terminal_size``). The
synthetic query vectors are meaningless for relevance but cost what real ones cost to search.

Latency: the collection is closed (saving the FAISS index) and reopened read-only, as a server would hold it;
after a warm-up, every query runs once per mode (``dense``, ``lexical``, ``hybrid`` with ``--fusion``) through
``collection.search(q, k=10, mode=...)``, one query at a time, the modes interleaved per query in a rotating
order so that background load falls on all alike. Two more modes, ``lexical-all`` and ``hybrid-all``, run the
same searches with every lexical match scored (the store's ``pruned`` switched off), so what the pruned
shortlist (only the matches whose score bounds let them enter it are scored) saves is measured side by side;
each lexical query's hits are compared between the two. Two more, ``lexical-bm25`` and ``hybrid-bm25``, run them
with the lexical channel scored by BM25 alone (``proximity=False``), so what term proximity costs is measured
side by side too. p50/p99 in ms and the ratios are printed.

Size: the store is copied twice with SQLite's backup API; one copy loses the ``chunk_terms`` FTS5 table and
its trigger; both are VACUUMed and compared. The per-table pages from ``dbstat`` (where this SQLite has it)
and the saved FAISS file are reported beside them.

The figures are printed, then one JSON object (also written to ``--output``). No assertion is made on them.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import random
import shutil
import sqlite3
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from longvec.index.lexical import DEFAULT_FUSION, FUSIONS

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers beside this script
from _synthetic import SyntheticEncoder  # noqa: E402

MODES = ("dense", "lexical", "hybrid", "lexical-all", "hybrid-all", "lexical-bm25", "hybrid-bm25")
_SKIP_DIRS = frozenset({"test", "tests", "idle_test", "__pycache__", "site-packages", "dist-packages"})
QUICK = {"chunks": 3000, "queries": 40, "warmup": 5}


# -- corpus and queries -----------------------------------------------------------------------------------


def _python_files(root: Path) -> list[Path]:
    """The ``.py`` files under ``root``, sorted, outside test directories and ``test_*`` modules."""
    if not root.is_dir():
        return []
    files = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if any(p in _SKIP_DIRS for p in parts[:-1]) or parts[-1].startswith("test_"):
            continue
        files.append(path)
    return sorted(files)


def corpus_files() -> list[tuple[str, Path]]:
    """``(doc_id, file)``: the standard library first, then site-packages (only reached for large targets)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    purelib = Path(sysconfig.get_paths()["purelib"])
    out = [(f"stdlib/{p.relative_to(stdlib)}", p) for p in _python_files(stdlib)]
    return out + [(f"site-packages/{p.relative_to(purelib)}", p) for p in _python_files(purelib)]


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError):
        return None


def _first_sentence(docstring: str) -> str:
    paragraph = docstring.strip().split("\n\n")[0]
    return " ".join(paragraph.split()).split(". ")[0].rstrip(".")


def _is_identifier_query(name: str) -> bool:
    """A name worth searching for: public, and of several parts (``snake_case`` or ``CamelCase``)."""
    return len(name) >= 6 and not name.startswith("_") and ("_" in name or name[1:].lower() != name[1:])


def realistic_queries(texts: list[str], n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``(kind, query)``: ``n // 2`` docstring first sentences and the rest identifiers, drawn with ``seed``."""
    sentences: set[str] = set()
    names: set[str] = set()
    for text in texts:
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if _is_identifier_query(node.name):
                    names.add(node.name)
                doc = ast.get_docstring(node)
                sentence = _first_sentence(doc) if doc else ""
                if 3 <= len(sentence.split()) <= 25:
                    sentences.add(sentence)
    rng = random.Random(seed)
    picked = rng.sample(sorted(sentences), min(n // 2, len(sentences)))
    queries = [("docstring", q) for q in picked]
    queries += [("identifier", q) for q in rng.sample(sorted(names), min(n - len(picked), len(names)))]
    rng.shuffle(queries)
    return queries


# -- building ---------------------------------------------------------------------------------------------


def build(root: Path, target: int, max_tokens: int, batch_docs: int, doc_vector: bool = False) -> dict[str, Any]:
    """Add corpus files through ``Collection.add`` until ``root`` holds ``target`` chunks (plus one batch)."""
    from longvec.index import AddResult, Collection, Document

    done = {"chunks": 0}
    stdlib_texts: list[str] = []

    def documents() -> Iterator[Document]:
        for doc_id, path in corpus_files():
            if done["chunks"] >= target:
                return
            text = _read(path)
            if text is None:
                continue
            if doc_id.startswith("stdlib/"):
                stdlib_texts.append(text)
            yield Document(doc_id, text, path=doc_id)

    def count(result: AddResult) -> None:
        done["chunks"] += result.chunks

    start = time.perf_counter()
    with Collection.create(root, embedder=SyntheticEncoder(max_tokens=max_tokens), doc_vector=doc_vector) as c:
        result = c.add(documents(), batch_docs=batch_docs, on_batch=count)
        info = c.info()
    seconds = time.perf_counter() - start  # includes saving the FAISS index on close
    return {
        "chunks": info["chunks"],
        "documents": info["documents"],
        "documents_stdlib": len(stdlib_texts),
        "tokens": result.tokens,
        "max_tokens": max_tokens,
        "build_seconds": round(seconds, 1),
        "_stdlib_texts": stdlib_texts,
    }


# -- latency ----------------------------------------------------------------------------------------------


def _percentiles(ms: list[float]) -> dict[str, float]:
    a = np.asarray(ms)
    return {
        "p50_ms": round(float(np.percentile(a, 50)), 3),
        "p99_ms": round(float(np.percentile(a, 99)), 3),
        "mean_ms": round(float(a.mean()), 3),
    }


def _search(c: Any, q: str, mode: str, fusion: str) -> list[Any]:
    """``c.search(q, k=10, mode=mode)``; a ``-bm25`` mode without term proximity, a ``-all`` mode with the store's
    pruned lexical shortlist switched off for the call (``Store.lexical_search`` then scores every match)."""
    if mode.endswith("-bm25"):
        return c.search(q, k=10, mode=mode.removesuffix("-bm25"), fusion=fusion, proximity=False)
    if not mode.endswith("-all"):
        return c.search(q, k=10, mode=mode, fusion=fusion)
    store = c._store
    if not hasattr(store, "pruned"):
        raise RuntimeError("this longvec's store has no pruned switch: the -all modes cannot be measured")
    store.pruned = False
    try:
        return c.search(q, k=10, mode=mode.removesuffix("-all"), fusion=fusion)
    finally:
        store.pruned = True


def _pruned_answered(c: Any, queries: list[str]) -> int:
    """How many of ``queries`` the store answers from part of their matches, for the lexical shortlist a k=10
    search asks for (the chunks of 20 documents, at most 3 per document)."""
    from longvec.index.lexical import match_expression

    with c._store._reading():
        expressions = [e for e in map(match_expression, queries) if e is not None]
        return sum(c._store._lexical_search_pruned(e, 60, 3) is not None for e in expressions)


def _ranked(hits: list[Any]) -> list[tuple[str, float, list[int]]]:
    return [(h.doc_id, h.score, [chunk.chunk_id for chunk in h.chunks]) for h in hits]


def measure_latency(
    root: Path, queries: list[tuple[str, str]], max_tokens: int, warmup: int, fusion: str = DEFAULT_FUSION
) -> dict[str, Any]:
    """Per-query latency of ``search(q, k=10, mode=m)`` for each mode, interleaved, on a read-only open."""
    from longvec.index import Collection

    encoder = SyntheticEncoder(max_tokens=max_tokens, seed=1)
    times: dict[str, list[float]] = {m: [] for m in MODES}
    by_kind: dict[str, dict[str, list[float]]] = {}
    hits: dict[str, int] = {m: 0 for m in MODES}
    differ = 0  # lexical queries whose hits differ from "lexical-all"'s (hybrid ones differ anyway: the synthetic
    # encoder draws a new random vector for each search)
    with Collection.open(root, embedder=encoder, readonly=True) as c:
        pruned_answered = _pruned_answered(c, [q for _, q in queries])
        for _, q in queries[:warmup]:  # loads the FAISS index, warms SQLite's page cache
            for mode in MODES:
                _search(c, q, mode, fusion)
        for i, (kind, q) in enumerate(queries):
            turn = i % len(MODES)
            results = {}
            for mode in MODES[turn:] + MODES[:turn]:  # rotate the order: no mode always runs first
                start = time.perf_counter_ns()
                found = results[mode] = _search(c, q, mode, fusion)
                ms = (time.perf_counter_ns() - start) / 1e6
                times[mode].append(ms)
                by_kind.setdefault(kind, {m: [] for m in MODES})[mode].append(ms)
                hits[mode] += len(found)
            differ += _ranked(results["lexical"]) != _ranked(results["lexical-all"])
    out: dict[str, Any] = {m: _percentiles(times[m]) | {"mean_hits": round(hits[m] / len(queries), 2)} for m in MODES}

    def ratio(mode: str, base: str) -> dict[str, float]:
        return {
            f"p{q}": round(float(np.percentile(times[mode], q) / np.percentile(times[base], q)), 2) for q in (50, 99)
        }

    bases = {m: ("dense", f"{m}-all", f"{m}-bm25") for m in ("hybrid", "lexical")}
    out["ratios"] = {f"{m}/{base}": ratio(m, base) for m, names in bases.items() for base in names}
    out["by_query_kind"] = {
        kind: {"queries": len(t["dense"])} | {m: _percentiles(t[m])["p50_ms"] for m in MODES}
        for kind, t in sorted(by_kind.items())
    }
    out["lexical_queries_differing_from_all"] = differ
    out["pruned_answered"] = pruned_answered
    out["queries"], out["warmup_queries"], out["k"], out["fusion"] = len(queries), warmup, 10, fusion
    return out


# -- size -------------------------------------------------------------------------------------------------


def _copy_vacuumed(store: Path, dest: Path, drop_lexical: bool) -> int:
    src, dst = sqlite3.connect(store), sqlite3.connect(dest)
    try:
        src.backup(dst)
        if drop_lexical:
            dst.execute("DROP TRIGGER IF EXISTS chunk_terms_gone")
            dst.execute("DROP TABLE IF EXISTS chunk_terms")
            dst.commit()
        dst.execute("PRAGMA journal_mode = DELETE")
        dst.execute("VACUUM")
    finally:
        src.close()
        dst.close()
    return dest.stat().st_size


def _dbstat(path: Path) -> dict[str, int] | None:
    """Bytes of pages per table and index (``dbstat``), or ``None`` where this SQLite lacks it."""
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT name, SUM(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall()
    except sqlite3.OperationalError:
        return None
    finally:
        db.close()
    return {name: int(size) for name, size in rows}


def measure_size(root: Path) -> dict[str, Any]:
    """Bytes the lexical index adds to ``store.sqlite`` (VACUUMed copies with and without it)."""
    work = Path(tempfile.mkdtemp(prefix="longvec-lexsize-"))
    try:
        with_lexical = _copy_vacuumed(root / "store.sqlite", work / "with.sqlite", drop_lexical=False)
        without = _copy_vacuumed(root / "store.sqlite", work / "without.sqlite", drop_lexical=True)
        tables = _dbstat(work / "with.sqlite")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    faiss_bytes = sum(p.stat().st_size for p in root.glob("vectors-*.faiss"))
    lexical = with_lexical - without
    out: dict[str, Any] = {
        "store_bytes": with_lexical,
        "store_without_lexical_bytes": without,
        "lexical_bytes": lexical,
        "lexical_percent_of_store": round(100 * lexical / with_lexical, 2),
        "faiss_bytes": faiss_bytes,
        "lexical_percent_of_store_and_faiss": round(100 * lexical / (with_lexical + faiss_bytes), 2),
    }
    if tables is not None:
        out["dbstat_bytes"] = tables
        out["dbstat_chunk_terms_bytes"] = sum(v for k, v in tables.items() if k.startswith("chunk_terms"))
    return out


# -- the run ----------------------------------------------------------------------------------------------


def _loadavg() -> list[float] | None:
    try:
        return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]
    except OSError:
        return None


def machine() -> dict[str, Any]:
    """CPU model, cores, versions and the date."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import faiss

    from longvec.index import longvec_version

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "faiss": faiss.__version__,
        "longvec": longvec_version(),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def run(
    chunks: int,
    max_tokens: int,
    n_queries: int,
    warmup: int,
    work: Path,
    seed: int = 0,
    fusion: str = DEFAULT_FUSION,
    doc_vector: bool = False,
) -> dict[str, Any]:
    """Build, measure latency and size; the JSON-ready figures."""
    load_start = _loadavg()
    root = work / "collection"
    shutil.rmtree(root, ignore_errors=True)
    built = build(root, chunks, max_tokens, batch_docs=8 if chunks < 10_000 else 32, doc_vector=doc_vector)
    queries = realistic_queries(built.pop("_stdlib_texts"), n_queries, seed)
    latency = measure_latency(root, queries, max_tokens, warmup, fusion)
    size = measure_size(root)
    return {
        "benchmark": "lexical",
        "target_chunks": chunks,
        "doc_vector": doc_vector,
        "collection": built,
        "latency": latency,
        "size": size,
        "query_examples": [q for _, q in queries[:6]],
        "machine": machine(),
        "loadavg_start": load_start,
        "loadavg_end": _loadavg(),
    }


def _mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def report(r: dict[str, Any]) -> str:
    """The figures as lines a person reads."""
    b, lat, size = r["collection"], r["latency"], r["size"]
    lines = [
        f"collection: {b['chunks']} chunks from {b['documents']} files ({b['documents_stdlib']} stdlib), "
        f"max_tokens {b['max_tokens']}, built in {b['build_seconds']}s",
        f"latency, {lat['queries']} queries one at a time, k=10 (ms):",
        f"  {'mode':<12} {'p50':>8} {'p99':>8} {'mean':>8}",
    ]
    lines += [f"  {m:<12} {lat[m]['p50_ms']:>8} {lat[m]['p99_ms']:>8} {lat[m]['mean_ms']:>8}" for m in MODES]
    lines += [f"  {name}: p50 x{v['p50']}, p99 x{v['p99']}" for name, v in lat["ratios"].items()]
    lines += [
        f"lexical index on disk: {size['lexical_bytes']} bytes ({_mib(size['lexical_bytes'])}), "
        f"{size['lexical_percent_of_store']}% of the store ({_mib(size['store_bytes'])} VACUUMed); "
        f"FAISS file {_mib(size['faiss_bytes'])}",
        f"machine: {r['machine']['cpu']}, {r['machine']['cores']} cores; "
        f"loadavg start {r['loadavg_start']}, end {r['loadavg_end']}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000, help="chunks to build (default 100000)")
    parser.add_argument("--max-tokens", type=int, default=256, help="chunk budget (default 256, the model's)")
    parser.add_argument("--queries", type=int, default=200, help="queries timed per mode (default 200)")
    parser.add_argument("--warmup", type=int, default=20, help="queries run per mode before timing (default 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the query sample")
    parser.add_argument("--quick", action="store_true", help="a few thousand chunks and few queries (seconds)")
    parser.add_argument("--dir", type=Path, help="where to build the collection (default: a temporary directory)")
    parser.add_argument("--output", type=Path, help="also write the JSON object here")
    parser.add_argument(
        "--fusion", choices=FUSIONS, default=DEFAULT_FUSION, help=f"hybrid fusion (default {DEFAULT_FUSION})"
    )
    parser.add_argument(
        "--doc-vector",
        action="store_true",
        help="give each document of several chunks its own vector (hybrid then fuses it with its document's best "
        "lexical score among the candidates)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.chunks, args.queries, args.warmup = QUICK["chunks"], QUICK["queries"], QUICK["warmup"]
    work = args.dir or Path(tempfile.mkdtemp(prefix="longvec-lexical-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        result = run(
            args.chunks, args.max_tokens, args.queries, args.warmup, work, args.seed, args.fusion, args.doc_vector
        )
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)
    print(report(result), flush=True)
    text = json.dumps(result)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
