"""The index tier measured: every FAISS structure and funnel shortlist, at 100k real and 1M synthetic vectors.

    python benchmarks/index_bench.py [--sizes 100k,1m] [--queries 1000] [--types flat,hnsw,ivf,ivfpq,sq8]
                                     [--funnels 32,64,128,binary] [--oversample 4,16] [--open] [--output FILE.json]

Vectors. ``100k``: real chunk vectors of the default model, from a collection the script builds once (and reuses)
under ``~/.cache/longvec/bench/code-100k``: Python sources of the installed packages, in sorted path order, added
with ``Collection.add`` at 128 tokens per chunk until it holds 100,000 chunks, then calibrated as ``longvec index``
calibrates (so the stored vectors are rotated onto their principal axes, as a product collection's are); the
queries are the eval suite's code and pydoc queries, encoded by the same model. ``1m``: synthetic vectors with the
real ones' spectrum: each is a random real vector plus Gaussian noise drawn from the real vectors' covariance
(scaled by 0.5), re-normalised, so neighbourhoods, principal axes and their variances look like the model's; the
queries are held-out real vectors perturbed the same way.

Per structure (``VectorIndex`` as the collection builds it: trained kinds on a random sample of ``train_size``),
single-query search (one query per call, as a search request): recall@10 against exact flat search, p50 / p99
latency, build time, bytes per vector (the serialised index, graph and codes included), and the time to load the
saved index; HNSW at efSearch 64 / 128 / 256 and IVF (and IVF-PQ) at nlist / 32, 16, 8 cells probed (the
product's defaults, chosen from this sweep on the real vectors: 256 and nlist / 8). IVF-PQ rescores its
``PQ_REFINE x 10`` candidates with the float vectors, read from memory here; the product reads them from the store,
whose cost for that many random chunks of the real collection is a row of its own (``store read``).

Per funnel: the shortlist index is a flat index over the ``D``-dim prefix (re-normalised), or the sign bits
(``binary``, centred on a sample's mean); it fetches ``oversample x 10`` chunks (oversample 4 and 16), which are
rescored with the full vectors and cut to 10 (the chunk-level funnel: the product's funnel shortlists documents
and reads their vectors from the store). Its latency includes the rescoring (from the vectors in memory here); its
memory is the shortlist index (the full vectors can stay on disk).

``--open`` (100k only): the product's open times on a copy of the collection, per structure: ``Collection.open``
plus the first search after a clean close (the saved index loads), and after a writer was killed with SIGKILL
between committing 200 new documents and saving the index (the snapshot loads and the store's later writes are
replayed). The model is loaded in the process already: these are the index's and the store's times.

On a machine with a GPU and faiss-gpu, flat, IVF and binary searches run on the GPU unchanged (``gpu`` in the
output says so); HNSW and SQ8 stay on the CPU.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import longvec.index.vectors as vectors_module
from longvec.embedder import normalize, truncate
from longvec.index import Collection, Document
from longvec.index.vectors import PQ_REFINE, VectorIndex, gpu_count, train_size

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers beside this script
from _results import eval_pools, write_results  # noqa: E402

BENCH = Path.home() / ".cache" / "longvec" / "bench"
# Search efforts swept per approximate structure (module setting, values); the product's default among them.
EFFORTS = {
    "hnsw": [("HNSW_EF_SEARCH", v) for v in (64, 128, 256)],
    "ivf": [("IVF_PROBE_SHARE", v) for v in (32, 16, 8)],
    "ivfpq": [("IVF_PROBE_SHARE", v) for v in (32, 16, 8)],
}
REAL = BENCH / "code-100k"
K = 10


def real_collection(n: int = 100_000) -> Path:
    """The collection of real chunk vectors (built on first use: several minutes of encoding)."""
    if (REAL / "manifest.json").exists():
        return REAL
    import site

    roots = sorted(Path(p) for p in site.getsitepackages())
    files = sorted(f for root in roots for f in root.rglob("*.py") if f.stat().st_size > 1024)
    tmp = REAL.with_name(REAL.name + ".building")
    shutil.rmtree(tmp, ignore_errors=True)
    start = time.perf_counter()
    with Collection.create(tmp, max_tokens=128, search_mode="dense") as c:
        batch: list[Document] = []
        for f in files:
            try:
                text = f.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue
            batch.append(Document(str(f.relative_to(f.anchor)), text, path=str(f)))
            if len(batch) == 64:
                c.add(batch)
                batch = []
                chunks = c.info()["chunks"]
                print(f"  {chunks} chunks, {time.perf_counter() - start:.0f} s", file=sys.stderr)
                if chunks >= n:
                    break
        c.add(batch)
        c.calibrate()
    tmp.rename(REAL)
    return REAL


def real_vectors() -> tuple[np.ndarray, np.ndarray]:
    """The real collection's chunk vectors and the eval queries encoded as its searches encode them."""
    with Collection.open(real_collection(), readonly=True) as c:
        _, _, vectors, _ = c.chunk_vectors()
        texts = [q.text for pool in eval_pools("code,pydoc") for q in pool.queries]
        queries = c._query_vectors(c.embedder.encode_queries(texts), None, c.manifest.dim)
    return np.ascontiguousarray(vectors), np.ascontiguousarray(queries)


def synthetic(real: np.ndarray, n: int, n_queries: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` vectors and ``n_queries`` queries with the spectrum of ``real`` (see the module docstring)."""
    rng = np.random.default_rng(seed)
    centred = real - real.mean(axis=0)
    values, axes = np.linalg.eigh(centred.T @ centred / len(real))
    shape = (axes * np.sqrt(np.maximum(values, 0))).T.astype(np.float32)  # noise ~ N(0, covariance)

    def draw(count: int, pool: np.ndarray) -> np.ndarray:
        out = np.empty((count, real.shape[1]), np.float32)
        for s in range(0, count, 100_000):
            m = min(100_000, count - s)
            noise = rng.standard_normal((m, real.shape[1]), dtype=np.float32) @ shape
            out[s : s + m] = normalize(pool[rng.integers(0, len(pool), m)] + 0.5 * noise)
        return out

    held_out = rng.permutation(len(real))
    queries = draw(n_queries, real[held_out[: len(real) // 10]])
    return draw(n, real[held_out[len(real) // 10 :]]), queries


def _latencies(search: Any, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray, float, float]:
    """``search(one_query_row)`` for each query: the ids found, and the p50 / p99 milliseconds."""
    search(queries[:5])  # warm-up
    found, times = [], []
    for q in queries:
        start = time.perf_counter()
        found.append(search(q[None, :]))
        times.append(1000 * (time.perf_counter() - start))
    ids = np.stack([np.pad(f, (0, K - len(f)), constant_values=-1) for f in found])
    return ids, np.asarray(times), float(np.percentile(times, 50)), float(np.percentile(times, 99))


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f[f >= 0]) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def _serialised_bytes(index: VectorIndex) -> int:
    import faiss

    cpu = index._cpu
    blob = faiss.serialize_index_binary(cpu) if index.kind == "binary" else faiss.serialize_index(cpu)
    return int(blob.nbytes)


def _built(kind: str, vectors: np.ndarray, ids: np.ndarray) -> tuple[VectorIndex, float]:
    start = time.perf_counter()
    index = VectorIndex(vectors.shape[1], kind=kind)  # type: ignore[arg-type]
    if size := train_size(kind, len(vectors)):
        sample = np.sort(np.random.default_rng(0).choice(len(vectors), size, replace=False))
        index.train(vectors[sample], len(vectors))
    for s in range(0, len(vectors), 100_000):
        index.add(ids[s : s + 100_000], vectors[s : s + 100_000])
    if kind == "ivfpq":  # rescoring reads the float vectors of its candidates (ids are rows + 1 here)
        index.exact = lambda found: vectors[found - 1]
    return index, time.perf_counter() - start


def store_reads(n_reads: int = 1000, per_read: int = PQ_REFINE * K) -> dict:
    """What IVF-PQ's rescoring costs in the product beyond this script's in-memory reads: ``Store.vectors`` of
    ``per_read`` random chunk ids of the real collection (SQLite primary-key lookups), p50 / p99 ms."""
    with Collection.open(real_collection(), readonly=True) as c:
        store = c._store
        ids = np.fromiter((r[0] for r in store._db.execute("SELECT id FROM chunks")), np.int64)
        rng = np.random.default_rng(0)
        times = []
        for _ in range(n_reads):
            wanted = rng.choice(ids, per_read, replace=False).tolist()
            start = time.perf_counter()
            store.vectors(wanted, c.manifest.dim)
            times.append(1000 * (time.perf_counter() - start))
    p50, p99 = np.percentile(times, [50, 99])
    return {"vectors": "100k real", "structure": f"store read of {per_read} vectors", "p50_ms": p50, "p99_ms": p99}


def _load_seconds(index: VectorIndex, dim: int) -> float:
    directory = Path(tempfile.mkdtemp(prefix="index-bench-"))
    try:
        index.save(directory, 1, 0)
        start = time.perf_counter()
        loaded = VectorIndex.load(directory, dim)
        assert loaded is not None and loaded[0].ntotal == index.ntotal
        return time.perf_counter() - start
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def structures(name: str, vectors: np.ndarray, queries: np.ndarray, kinds: list[str]) -> tuple[list[dict], Any]:
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    rows, truth = [], None
    for kind in kinds:
        index, build = _built(kind, vectors, ids)
        size, load = _serialised_bytes(index) / len(vectors), _load_seconds(index, vectors.shape[1])
        for setting, value in EFFORTS.get(kind, [(None, None)]):
            default = getattr(vectors_module, setting) if setting else None
            if setting:
                setattr(vectors_module, setting, value)
            try:
                found, _, p50, p99 = _latencies(lambda q, index=index: index.search(q, K)[1][0], queries)
                settings = index.search_settings()
            finally:
                if setting:
                    setattr(vectors_module, setting, default)
            truth = found if kind == "flat" else truth
            rows.append(
                {
                    "vectors": name,
                    "n": len(vectors),
                    "structure": kind,
                    "default_effort": value == default,
                    "recall@10": _recall(found, truth) if truth is not None else None,
                    "p50_ms": p50,
                    "p99_ms": p99,
                    "build_s": build,
                    "bytes_per_vector": size,
                    "load_s": load,
                    "gpu": index.use_gpu,
                    **settings,
                }
            )
            print(f"  {rows[-1]}", file=sys.stderr)
        del index
    return rows, truth


def funnels(
    name: str, vectors: np.ndarray, queries: np.ndarray, truth: np.ndarray, shortlists: list[str], oversample: int
) -> list[dict]:
    ids = np.arange(1, len(vectors) + 1, dtype=np.int64)
    rows = []
    for shortlist in shortlists:
        binary = shortlist == "binary"
        dim = vectors.shape[1] if binary else int(shortlist)
        start = time.perf_counter()
        index = VectorIndex(dim, kind="binary" if binary else "flat")
        if binary:  # centred on a sample's mean, as the collection's binary view is
            sample = np.random.default_rng(0).choice(len(vectors), train_size("binary", len(vectors)), replace=False)
            index.train(vectors[np.sort(sample)], len(vectors))
        for s in range(0, len(vectors), 100_000):
            part = vectors[s : s + 100_000]
            index.add(ids[s : s + 100_000], part if binary else truncate(part, dim))
        build = time.perf_counter() - start

        def search(q: np.ndarray, index: VectorIndex = index, binary: bool = binary, dim: int = dim) -> np.ndarray:
            _, got = index.search(q if binary else truncate(q, dim), oversample * K)
            got = got[0][got[0] >= 0]
            scores = vectors[got - 1] @ q[0]  # rescored with the full vectors
            return got[np.argsort(-scores, kind="stable")[:K]]

        found, _, p50, p99 = _latencies(search, queries)
        rows.append(
            {
                "vectors": name,
                "n": len(vectors),
                "structure": f"funnel {shortlist}",
                "oversample": oversample,
                "recall@10": _recall(found, truth),
                "p50_ms": p50,
                "p99_ms": p99,
                "build_s": build,
                "bytes_per_vector": _serialised_bytes(index) / len(vectors),
                "load_s": None if binary else _load_seconds(index, dim),  # binary views are built in memory
                "gpu": index.use_gpu,
            }
        )
        print(f"  {rows[-1]}", file=sys.stderr)
    return rows


CRASH = """
import os, signal, sys
from longvec.index import Collection, Document
c = Collection.open(sys.argv[1])
c.add([Document(f"crash/{i}", f"def crash_{i}(x):\\n    return x + {i}\\n") for i in range(200)])
os.kill(os.getpid(), signal.SIGKILL)  # committed to the store, the index not saved
"""


def open_times(kinds: list[str]) -> list[dict]:
    """The product's open + first search on a copy of the real collection, clean and after a kill -9."""
    rows = []
    for kind in kinds:
        work = Path(tempfile.mkdtemp(prefix="index-open-"))
        try:
            shutil.copytree(real_collection(), work / "c")
            with Collection.open(work / "c") as c:
                c.set_index_type(kind)
            times = {}
            for when in ("clean", "kill -9"):
                if when == "kill -9":
                    crashed = subprocess.run([sys.executable, "-c", CRASH, str(work / "c")], check=False)
                    assert crashed.returncode == -signal.SIGKILL, crashed.returncode
                start = time.perf_counter()
                with Collection.open(work / "c", readonly=True) as c:
                    c.search("parse a configuration file", k=K, mode="dense")
                    info = c.index_info()
                times[when] = time.perf_counter() - start
            rows.append(
                {
                    "vectors": "100k real",
                    "structure": kind,
                    "built": info["built"],
                    "open_clean_s": times["clean"],
                    "open_after_kill_s": times["kill -9"],
                }
            )
            print(f"  {rows[-1]}", file=sys.stderr)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100k,1m")
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--types", default="flat,hnsw,ivf,ivfpq,sq8")
    ap.add_argument("--funnels", default="32,64,128,binary")
    ap.add_argument("--oversample", default="4,16")
    ap.add_argument("--open", action="store_true", help="also time the product's open (100k real vectors)")
    ap.add_argument("--output", type=Path)
    args = ap.parse_args(argv)
    kinds, shortlists = args.types.split(","), [x for x in args.funnels.split(",") if x]
    real, real_queries = real_vectors()
    rows: list[dict] = []
    for size in args.sizes.split(","):
        if size == "100k":
            name, vectors, queries = "100k real", real, real_queries[: args.queries]
        else:
            n = int(float(size.rstrip("mk")) * (1_000_000 if size.endswith("m") else 1_000))
            name = f"{size} synthetic"
            vectors, queries = synthetic(real, n, args.queries)
        print(f"{name}: {len(vectors)} vectors, {len(queries)} queries", file=sys.stderr)
        found, truth = structures(name, vectors, queries, ["flat"] + [k for k in kinds if k != "flat"])
        rows += found
        if size == "100k" and "ivfpq" in kinds:
            rows.append(store_reads())
        for oversample in (int(x) for x in args.oversample.split(",") if x):
            rows += funnels(name, vectors, queries, truth, shortlists, oversample)
    if args.open:
        rows += open_times(kinds)
    for r in rows:
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in r.items()))
    write_results(args.output, "index_bench.py", argv, rows, gpus=gpu_count(), cpus=os.cpu_count())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
