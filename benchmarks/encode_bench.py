"""Encode throughput: plain sentence-transformers against longvec's encode engine, on the same texts, one process.

    python benchmarks/encode_bench.py [--tokens 120000] [--model M] [--device auto] [--budgets 4096,8192,16384]
                                      [--index [--index-tokens 400000]] [--output FILE.json]

Texts: what longvec indexes, chunked as it chunks them (256-token budget, lengths as they come): the Python
standard library's ``.py`` files (code, sorted by path) and the language reference that ships with Python
(``pydoc_data.topics``, prose), alternating document by document until ``--tokens`` tokens are reached.

Rows, each timed on all texts after a warm-up (best of ``--rounds``, the rows interleaved in every round so
background load falls on all alike):
- ``st-fp32``: ``SentenceTransformer.encode(texts)`` with its defaults (fp32, batches of 32): the baseline.
- ``st-bf16-autocast``: the same call inside ``torch.autocast(..., bfloat16)`` (what autocast alone gives).
- ``longvec-BACKEND-PRECISION``: longvec's engine (token-budget batches of length-sorted texts, next batch
  tokenised while the model runs) on each backend and precision this machine can try (torch fp32 and, where
  native, bf16 autocast; OpenVINO fp32 and bf16 when installed; fp16 on CUDA), at the default token budget;
  ``--budgets`` adds rows at other budgets for what ``auto`` picks.
- What ``EmbedderConfig()`` (backend and precision ``auto``) picks on this machine, with its trial, is printed
  first.
The padding each engine row's batches add over the real tokens is printed first (what padding-free packing
could save at most); the ``-packed`` rows run that packing (``Engine(packing=True)``) at torch's precisions.
Each row: tokens/s (real tokens, no padding), the speed-up over ``st-fp32``, parity
against ``st-fp32`` (mean and min cosine), and achieved GFLOP/s against the machine's nominal peak:
- model FLOPs per input of ``n`` real tokens: ``layers * (2 n (4 h^2 + 2 h i) + 4 n^2 h)`` (the linear layers'
  multiply-adds and the attention products; padding, embeddings, softmax and pooling not counted);
- CPU peak = physical cores x base clock (``/proc/cpuinfo`` ``cpu MHz``) x FLOP per cycle per core: fp32 with
  AVX-512 = 2 FMA units x 16 lanes x 2 = 64 (AVX2: 32); bf16 with AMX = 1024 (a TMUL multiply-add of
  16x32 by 32x16 bf16 tiles per 16 cycles), with AVX-512 BF16 and no AMX = 128. Turbo clocks and whether the
  machine's cores are hyperthreads of fewer physical ones are unknown here, so the peak is nominal.
- CUDA: no peak is computed (printed as ``-``).
With ``--index``, documents of ``--index-tokens`` chunk tokens (more than one 32-document batch) are indexed by
``Collection.add`` with what ``auto`` picks (chunking, encoding, SQLite + FTS5 writes in a pipeline: what
``longvec index`` runs) and its chunk tokens/s is compared with the engine's raw rate on the same chunks and with
add's stages run one after another (no pipeline).
The last line is ``speed-up N.Nx``: the fastest longvec row that passes the parity gate over ``st-fp32``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import sysconfig
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from longvec.chunking import Chunker
from longvec.embedder import EmbedderConfig, load_embedder, normalize
from longvec.embedder.engine import (
    PARITY_MIN_COSINE,
    Engine,
    candidates,
    cpu_flags,
    cpu_name,
    openvino_available,
    options,
)
from longvec.index import Collection, Document, token_counter

FLOPS_PER_CYCLE = {"fp32-avx512": 64, "fp32-avx2": 32, "bf16-amx": 1024, "bf16-avx512": 128}


def documents() -> Iterator[tuple[str, str, str | None]]:
    """``(doc_id, text, path)``: standard-library code and reference prose, alternating."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    code = (
        p
        for p in sorted(stdlib.rglob("*.py"))
        if not any(part in ("test", "tests", "idlelib", "site-packages") for part in p.relative_to(stdlib).parts)
    )
    from pydoc_data.topics import topics

    prose = ((f"topic/{k}", topics[k]) for k in sorted(topics))
    for path, (topic, text) in zip(code, prose, strict=False):
        try:
            yield str(path.relative_to(stdlib)), path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError):
            pass
        yield topic, text, None


def corpus(chunker: Chunker, tokens: int) -> tuple[list[tuple[str, str, str | None]], list[str], int]:
    """Documents and their chunks' embedded texts until ``tokens`` chunk tokens."""
    docs, texts, total = [], [], 0
    for doc_id, text, path in documents():
        chunks = chunker.chunk(doc_id, text, path=path)
        docs.append((doc_id, text, path))
        texts += [c.embed_text for c in chunks]
        total += sum(c.n_tokens for c in chunks)
        if total >= tokens:
            break
    return docs, texts, total


def model_flops(st: Any, lengths: list[int]) -> float:
    cfg = st[0].auto_model.config
    h, i, layers = cfg.hidden_size, cfg.intermediate_size, cfg.num_hidden_layers
    n = np.asarray(lengths, dtype=np.float64)
    return float(layers * np.sum(2 * n * (4 * h * h + 2 * h * i) + 4 * n * n * h))


def physical_cores() -> int:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return os.cpu_count() or 1
    pairs = set()
    phys = core = None
    for line in text.splitlines() + [""]:
        if line.startswith("physical id"):
            phys = line.split(":")[1].strip()
        elif line.startswith("core id"):
            core = line.split(":")[1].strip()
        elif not line.strip() and core is not None:
            pairs.add((phys, core))
            phys = core = None
    return len(pairs) or os.cpu_count() or 1


def cpu_ghz() -> float | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) / 1000
    except (OSError, ValueError):
        pass
    return None


def peak_gflops(precision: str) -> float | None:
    """Nominal peak of this CPU for ``precision`` (see the module docstring), or None when unknown."""
    flags, ghz = cpu_flags(), cpu_ghz()
    if ghz is None:
        return None
    if precision == "bf16" and "amx_bf16" in flags:
        per = FLOPS_PER_CYCLE["bf16-amx"]
    elif precision == "bf16" and "avx512_bf16" in flags:
        per = FLOPS_PER_CYCLE["bf16-avx512"]
    elif "avx512f" in flags:
        per = FLOPS_PER_CYCLE["fp32-avx512"]
    elif "avx2" in flags:
        per = FLOPS_PER_CYCLE["fp32-avx2"]
    else:
        return None
    return physical_cores() * ghz * per


def index_rates(auto: Any, tokens: int, rounds: int) -> dict[str, float]:
    """Chunk tokens/s of the engine alone, of ``Collection.add`` (its pipeline), and of add's three stages run one
    after another, on documents of ``tokens`` chunk tokens (several ``batch_docs`` batches, so the pipeline has
    batches to overlap), best of ``rounds`` each, interleaved."""
    from concurrent.futures import Future

    from longvec.index.collection import _batched

    def sequential(coll: Collection, docs: Iterator[Document]) -> None:  # add's stages, one after another
        for batch in _batched(docs, 32):
            prepared = coll._prepare(batch, {})
            encoded: Future[np.ndarray] = Future()
            encoded.set_result(coll._embed(prepared.to_embed))
            coll._write(prepared, encoded, None)

    root = Path(tempfile.mkdtemp(prefix="encode-bench-"))
    try:
        with Collection.create(root / "probe", embedder=auto) as probe:  # the chunks a new collection embeds
            docs, total, texts = [], 0, []
            for doc_id, text, path in documents():
                chunks = probe.chunk(Document(doc_id, text, path=path))
                docs.append(Document(doc_id, text, path=path))
                texts += [c.embed_text for c in chunks]
                total += sum(c.n_tokens for c in chunks)
                if total >= tokens:
                    break
        best = {"engine": float("inf"), "pipeline": float("inf"), "sequential": float("inf")}
        for r in range(rounds):
            start = time.perf_counter()
            auto.encode_documents(texts)
            best["engine"] = min(best["engine"], time.perf_counter() - start)
            for name in ("pipeline", "sequential"):
                start = time.perf_counter()
                with Collection.create(root / f"{name}{r}", embedder=auto) as coll:
                    coll.add(iter(docs)) if name == "pipeline" else sequential(coll, iter(docs))
                best[name] = min(best[name], time.perf_counter() - start)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    rates = {name: total / seconds for name, seconds in best.items()}
    print(
        f"index: {len(docs)} documents, {total} chunk tokens; engine {rates['engine']:.0f} tok/s, Collection.add "
        f"{rates['pipeline']:.0f} ({rates['pipeline'] / rates['engine']:.0%} of the engine's raw rate), its stages "
        f"one after another {rates['sequential']:.0f} ({rates['sequential'] / rates['engine']:.0%})"
    )
    return {"documents": len(docs), "tokens": total} | {f"{k}_tokens_per_s": v for k, v in rates.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--tokens", type=int, default=120_000)
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--budgets", default="", help="extra token budgets for the auto precision, comma-separated")
    ap.add_argument("--index", action="store_true", help="also time Collection.add against the raw engine")
    ap.add_argument("--index-tokens", type=int, default=400_000, help="chunk tokens of the --index corpus")
    ap.add_argument("--output", type=Path)
    args = ap.parse_args(argv)
    import torch

    kw = {"model": args.model} if args.model else {}
    auto = load_embedder(EmbedderConfig(device=args.device, **kw))
    st, device = auto.model, auto.model.device.type
    print(
        f"device {device} ({cpu_name() if device == 'cpu' else torch.cuda.get_device_name()}), torch threads "
        f"{torch.get_num_threads()}, auto: {auto.backend} {auto.precision}: {json.dumps(auto.engine_report)}"
    )
    chunker = Chunker(token_counter(auto), auto.max_tokens, path_context=True)  # as a new collection chunks
    docs, texts, total = corpus(chunker, args.tokens)
    print(f"{len(texts)} chunks of {len(docs)} documents, {total} tokens")

    def st_encode(batch: list[str], autocast: torch.dtype | None) -> np.ndarray:
        ctx = torch.autocast(device, dtype=autocast) if autocast else torch.inference_mode()
        with ctx:
            return st.encode(batch, convert_to_numpy=True, show_progress_bar=False)

    engines: dict[str, Engine] = {}
    pairs = [("torch", "fp32"), *options(device)]
    if device == "cpu" and openvino_available() and ("openvino", "fp32") not in pairs:
        pairs.append(("openvino", "fp32"))
    with tempfile.TemporaryDirectory() as ir:
        for b, p in pairs:
            engines[f"longvec-{b}-{p}"] = Engine(st, backend=b, precision=p, openvino_cache=Path(ir) / "m")
        for b, p in pairs:  # padding-free packing instead of length-sorted padded batches
            if b == "torch":
                engines[f"longvec-torch-{p}-packed"] = Engine(st, backend="torch", precision=p, packing=True)
        for budget in (int(x) for x in args.budgets.split(",") if x):
            engines[f"longvec-{auto.backend}-{auto.precision}-budget{budget}"] = Engine(
                st, backend=auto.backend, precision=auto.precision, token_budget=budget, openvino_cache=Path(ir) / "m"
            )
    rows: dict[str, Any] = {"st-fp32": lambda batch: st_encode(batch, None)}
    if candidates(device):
        low = torch.bfloat16 if "bf16" in candidates(device) else torch.float16
        rows[f"st-{'bf16' if low == torch.bfloat16 else 'fp16'}-autocast"] = lambda batch: st_encode(batch, low)
    for name, engine in engines.items():
        rows[name] = lambda batch, engine=engine: engine.encode(batch, "")
    lengths = engines["longvec-torch-fp32"].lengths(texts, "")
    flops = model_flops(st, lengths)
    for fn in rows.values():  # warm-up
        fn(texts[:64])
    best = dict.fromkeys(rows, float("inf"))
    vectors: dict[str, np.ndarray] = {}
    for _ in range(args.rounds):
        for name, fn in rows.items():
            start = time.perf_counter()
            vectors[name] = normalize(fn(texts))
            best[name] = min(best[name], time.perf_counter() - start)
    real_tokens = sum(lengths)
    padded = {
        name: sum(len(b) * max(lengths[i] for i in b) for b in engine.batches(lengths))
        for name, engine in engines.items()
        if not name.endswith("-packed")
    }
    for name, n in padded.items():
        batches = len(engines[name].batches(lengths))
        print(f"{name}: {n / real_tokens - 1:.1%} padding over the real tokens ({batches} batches)")
    base = best["st-fp32"]
    results = []
    print(f"{'row':<34} {'tokens/s':>9} {'speed-up':>8} {'mean cos':>9} {'min cos':>9} {'GFLOP/s':>8} {'peak':>7}")
    for name in rows:
        cos = np.sum(vectors[name] * vectors["st-fp32"], axis=1)
        precision = "bf16" if "bf16" in name else "fp16" if "fp16" in name else "fp32"
        peak = peak_gflops(precision) if device == "cpu" else None
        gflops = flops / best[name] / 1e9
        row = {
            "row": name,
            "tokens_per_s": real_tokens / best[name],
            "speedup": base / best[name],
            "mean_cos": float(cos.mean()),
            "min_cos": float(cos.min()),
            "gflops": gflops,
            "peak_gflops": peak,
            "parity": bool(cos.mean() >= (PARITY_MIN_COSINE if precision != "fp32" else 0.9999)),
        }
        results.append(row)
        print(
            f"{name:<34} {row['tokens_per_s']:>9.0f} {row['speedup']:>7.2f}x {row['mean_cos']:>9.6f} "
            f"{row['min_cos']:>9.6f} {gflops:>8.1f} {peak if peak else '-':>7}"
        )
    out: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python benchmarks/encode_bench.py", *(argv if argv is not None else sys.argv[1:])]),
        "machine": platform.platform(),
        "cpu": cpu_name(),
        "device": device,
        "torch_threads": torch.get_num_threads(),
        "chunks": len(texts),
        "tokens": real_tokens,
        "auto": auto.engine_report,
        "padding": {name: n / real_tokens - 1 for name, n in padded.items()},
        "rows": results,
    }
    if args.index:
        out["index"] = index_rates(auto, args.index_tokens, args.rounds)
    passing = [r for r in results if r["row"].startswith("longvec") and r["parity"]]
    top = max(passing, key=lambda r: r["speedup"])
    out["speedup"] = {"row": top["row"], "value": top["speedup"]}
    if args.output:
        args.output.write_text(json.dumps(out, indent=1))
    print(f"speed-up {top['speedup']:.1f}x ({top['row']} over st-fp32)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
