"""GPU check for a machine with CUDA: CUDA encode parity and throughput, GPU FAISS parity, as JSON.

Not part of the tests (CI has no GPU). Run on a GPU machine with longvec's packages importable and a GPU
build of FAISS (e.g. the faiss-gpu-cu12 wheel); each check reports "skipped" with the reason when its
prerequisite is missing, so one run always gives a complete record:

    python benchmarks/gpu_check.py > gpu_check.json
"""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from longvec.embedder import EmbedderConfig, load_embedder
from longvec.index import token_counter
from longvec.index.vectors import VectorIndex, gpu_count


def sample_texts(n: int = 512) -> list[str]:
    import pydoc_data.topics as topics

    prose = " ".join(topics.topics.values()).split()
    return [" ".join(prose[i * 180 : (i + 1) * 180]) for i in range(n)]


def encode_check(texts: list[str]) -> dict[str, Any]:
    import torch

    if not torch.cuda.is_available():
        return {"skipped": "torch.cuda.is_available() is False"}
    cpu = load_embedder(EmbedderConfig(device="cpu", backend="torch", precision="fp32"))
    ref = cpu.encode_documents(texts[:64])
    out: dict[str, Any] = {"device": torch.cuda.get_device_name(0)}
    for precision in ("fp32", "bf16", "fp16"):
        gpu = load_embedder(EmbedderConfig(device="cuda", backend="torch", precision=precision))
        gpu.encode_documents(texts[:64])  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        vectors = gpu.encode_documents(texts)
        torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        tokens = sum(min(n, gpu.max_tokens) for n in token_counter(gpu).count_many(texts))
        cos = (gpu.encode_documents(texts[:64]) * ref).sum(axis=1)
        out[precision] = {"tokens_per_s": round(tokens / seconds), "min_cos_vs_cpu_fp32": float(cos.min())}
        assert vectors.shape == (len(texts), gpu.dim)
    return out


def faiss_check() -> dict[str, Any]:
    if gpu_count() == 0:
        return {"skipped": "faiss.get_num_gpus() == 0 (a CPU-only FAISS build, or no GPU)"}
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(200_000, 384)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[:1000] + 0.01 * rng.normal(size=(1000, 384)).astype(np.float32)
    ids = np.arange(10, 10 + len(vectors), dtype=np.int64)
    result: dict[str, Any] = {"gpus": gpu_count(), "n": len(vectors)}
    found = {}
    for use_gpu in (False, True):
        index = VectorIndex(384, use_gpu=use_gpu)
        index.add(ids, vectors)
        index.search(queries[:10], 10)  # warm-up (builds the GPU copy)
        start = time.perf_counter()
        _, found[use_gpu] = index.search(queries, 10)
        result["gpu_qps" if use_gpu else "cpu_qps"] = round(len(queries) / (time.perf_counter() - start))
    result["top10_identical_fraction"] = float((found[True] == found[False]).all(axis=1).mean())
    return result


if __name__ == "__main__":
    report = {"faiss": faiss_check(), "encode": encode_check(sample_texts())}
    print(json.dumps(report, indent=2))
