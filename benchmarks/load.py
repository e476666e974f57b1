"""Load on a running `longvec serve`, from loopback: QPS and p50 / p99 latency of search and of embeddings at 1, 8
and 64 concurrent clients.

    python benchmarks/load.py --url http://127.0.0.1:8000 [--clients 1,8,64] [--seconds 20] [--output FILE.json]

Each client is closed-loop (it sends its next request when the last one answered), so the load is bounded by the
client count; requests cycle through the eval suite's code and pydoc queries (search, k 10, the collection's
default mode) or through short texts of them (``/v1/embeddings``, 4 inputs per request). Every answer's status is
counted: anything but 200 is an error, except 429 (refused beyond capacity), counted apart. Latency covers the
whole HTTP exchange on loopback, of the answered (200) requests.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared helpers beside this script
from _results import eval_pools, write_results  # noqa: E402


async def run(url: str, route: str, bodies: list[dict], clients: int, seconds: float, key: str = "") -> dict:
    """``clients`` closed-loop clients posting ``bodies`` (in turn) to ``route`` for ``seconds``."""
    latencies: list[float] = []
    statuses: Counter[int] = Counter()
    failures: Counter[str] = Counter()
    stop = time.perf_counter() + seconds
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    auth = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits, headers=auth) as http:

        async def client(offset: int) -> None:
            i = offset
            while time.perf_counter() < stop:
                start = time.perf_counter()
                try:
                    r = await http.post(route, json=bodies[i % len(bodies)])
                    statuses[r.status_code] += 1
                    if r.status_code == 200:  # fast refusals would flatter the percentiles
                        latencies.append(1000 * (time.perf_counter() - start))
                except httpx.TransportError as exc:  # the connection failed: an error, counted by kind
                    failures[type(exc).__name__] += 1
                i += clients

        began = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        elapsed = time.perf_counter() - began
    ok = statuses[200]
    return {
        "route": route,
        "clients": clients,
        "seconds": elapsed,
        "requests": sum(statuses.values()) + sum(failures.values()),
        "qps": ok / elapsed,
        "p50_ms": float(np.percentile(latencies, 50)) if latencies else None,
        "p99_ms": float(np.percentile(latencies, 99)) if latencies else None,
        "refused_429": statuses[429],
        "errors": sum(n for s, n in statuses.items() if s not in (200, 429)) + sum(failures.values()),
        "statuses": {str(s): n for s, n in sorted(statuses.items())},
        "transport_errors": dict(failures),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", required=True, help="a running `longvec serve` (loopback)")
    ap.add_argument("--clients", default="1,8,64")
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--output", type=Path)
    ap.add_argument("--key", default=os.environ.get("LONGVEC_API_KEY", ""), help="API key (default $LONGVEC_API_KEY)")
    args = ap.parse_args(argv)
    if httpx.URL(args.url).host not in ("127.0.0.1", "localhost", "::1"):
        ap.error("load is generated on loopback only")
    queries = [q.text for pool in eval_pools("code,pydoc") for q in pool.queries][:2000]
    auth = {"Authorization": f"Bearer {args.key}"} if args.key else {}
    info = httpx.get(f"{args.url}/info", timeout=30, headers=auth).json()
    model = info["model"]
    searches = [{"query": q, "k": 10} for q in queries]
    embeddings = [{"model": model, "input": queries[i : i + 4]} for i in range(0, len(queries) - 4, 4)]
    rows = []
    for route, bodies in (("/search", searches), ("/v1/embeddings", embeddings)):
        for clients in (int(c) for c in args.clients.split(",")):
            asyncio.run(run(args.url, route, bodies, clients, 2, args.key))  # warm-up
            row = asyncio.run(run(args.url, route, bodies, clients, args.seconds, args.key))
            rows.append(row)
            print(
                f"{route} clients={clients} qps={row['qps']:.1f} p50={row['p50_ms']:.1f}ms p99={row['p99_ms']:.1f}ms "
                f"requests={row['requests']} 429={row['refused_429']} errors={row['errors']}",
                flush=True,
            )
    write_results(
        args.output,
        "load.py",
        argv,
        rows,
        cpus=os.cpu_count(),
        collection={k: info.get(k) for k in ("documents", "chunks", "model", "search_mode", "index_type")},
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
