"""Indexing throughput, local against Ray (``index --engine ray``), side by side in one run on this machine.

    python benchmarks/ray_scaling.py [PATH ...] [--cpus 2] [--output FILE.json]

Indexes the files under PATHs (default: the standard library's ``asyncio`` and ``email`` packages, ``*.py``) into a
fresh collection once per configuration:

- ``local``: ``Collection.add`` in this process (its model on all ``--cpus`` threads);
- ``ray 1x1``, ``ray 2x1``: 1 and 2 actors of 1 CPU each (how throughput scales with actors);
- ``ray 1x2``: 1 actor of 2 CPUs (the same cores as local, through Ray).

Every configuration runs the same engine (torch, fp32) so that only the engine of the build differs. Each row gives
docs/s and tokens/s over the whole build (planning, encoding, storing, saving the index), and the Ray rows split it
into the encode phase (the actor pool, model loading included) and the store phase (``Collection.add_encoded`` in
this process), whose rate bounds how many actors one store can keep up with. Ray's own start (``ray.init``) is timed
apart, once.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers beside this script
from _results import write_results  # noqa: E402

from longvec.embedder import EmbedderConfig  # noqa: E402
from longvec.index import Collection  # noqa: E402
from longvec.index.sources import walk_paths  # noqa: E402


def _default_paths() -> list[Path]:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    return [stdlib / "asyncio", stdlib / "email"]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance and threads of local")
    parser.add_argument("--part-mb", type=float, default=0.1, help="input per Ray part (default 0.1)")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    paths = args.paths or _default_paths()
    include = ["*.py"]
    work = Path(tempfile.mkdtemp(prefix="longvec-ray-bench-"))
    config = EmbedderConfig(precision="fp32", backend="torch", threads=args.cpus)
    rows = []
    try:
        start = time.perf_counter()
        with Collection.create(work / "local", embedder_config=config) as c:
            result = c.add(walk_paths(paths, include=include))
        rows.append(_row("local", time.perf_counter() - start, result))
        print(_line(rows[-1]), flush=True)

        import ray

        from longvec.index.ray_engine import index_with_ray, plan_parts

        began = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - began
        for name, workers, cpus in (("ray 1x1", 1, 1), ("ray 2x1", 2, 1), (f"ray 1x{args.cpus}", 1, args.cpus)):
            start = time.perf_counter()
            parts = plan_parts([], paths, include=include, part_bytes=int(args.part_mb * (1 << 20)))
            with Collection.create(work / name.replace(" ", "-"), embedder_config=config) as c:
                result, run = index_with_ray(
                    c, parts, config=EmbedderConfig(precision="fp32", backend="torch"), workers=workers,
                    cpus_per_worker=cpus,
                )  # fmt: skip
            rows.append(
                {
                    **_row(name, time.perf_counter() - start, result),
                    "workers": workers,
                    "cpus_per_worker": cpus,
                    "parts": run.parts,
                    "encode_seconds": run.encode_seconds,
                    "store_seconds": run.store_seconds,
                    "encode_tokens_per_s": run.tokens / run.encode_seconds,
                    "store_chunks_per_s": result.chunks / max(run.store_seconds, 1e-9),
                }
            )
            print(_line(rows[-1]), flush=True)
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    local = rows[0]
    for row in rows:
        row["relative_to_local"] = row["tokens_per_s"] / local["tokens_per_s"]
    one, two = rows[1], rows[2]
    print(f"ray.init: {ray_start:.1f}s (not in the rows)")
    scaling = two["encode_tokens_per_s"] / one["encode_tokens_per_s"]
    print(f"2 actors / 1 actor (1 CPU each), encode phase tokens/s: {scaling:.2f}x")
    for row in rows:
        print(f"{row['config']}: {row['relative_to_local']:.2f}x local tokens/s")
    write_results(
        args.output,
        "ray_scaling.py",
        argv,
        rows,
        ray_init_seconds=ray_start,
        paths=[str(p) for p in paths],
        engine="torch fp32",
    )


def _row(name: str, seconds: float, result) -> dict:
    docs = result.added + result.updated
    return {
        "config": name,
        "docs": docs,
        "chunks": result.chunks,
        "tokens": result.tokens,
        "seconds": seconds,
        "docs_per_s": docs / seconds,
        "tokens_per_s": result.tokens / seconds,
    }


def _line(row: dict) -> str:
    phases = (
        f" (encode {row['encode_seconds']:.1f}s at {row['encode_tokens_per_s']:.0f} tok/s, store "
        f"{row['store_seconds']:.1f}s at {row['store_chunks_per_s']:.0f} chunks/s)"
        if "encode_seconds" in row
        else ""
    )
    return (
        f"{row['config']}: {row['docs']} docs, {row['chunks']} chunks, {row['tokens']} tokens in "
        f"{row['seconds']:.1f}s: "
        f"{row['docs_per_s']:.2f} docs/s, {row['tokens_per_s']:.0f} tok/s{phases}"
    )


if __name__ == "__main__":
    main()
