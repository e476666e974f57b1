"""The FAISS index over chunk vectors: exact inner product, GPU FAISS for search when a GPU is present.

The index is a cache of the SQLite store: it is saved with the store generation it reflects and rebuilt
from the stored vectors whenever that stamp is stale (after a crash, or a write by another process).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

GPU_MAX_K = 2048  # GPU FAISS's largest k; larger searches run on the CPU copy


def _faiss() -> Any:
    import faiss

    return faiss


def gpu_count() -> int:
    faiss = _faiss()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


class VectorIndex:
    """Chunk vectors keyed by chunk row id. Not thread-safe: callers hold the collection lock."""

    def __init__(self, dim: int, *, use_gpu: bool | None = None) -> None:
        faiss = _faiss()
        self.dim = dim
        self._cpu = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self.use_gpu = gpu_count() > 0 if use_gpu is None else use_gpu
        self._gpu: Any = None  # GPU copy for search, rebuilt lazily after writes
        self._gpu_ids: np.ndarray | None = None

    @property
    def ntotal(self) -> int:
        return int(self._cpu.ntotal)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids):
            vectors = np.ascontiguousarray(vectors, dtype=np.float32)
            self._cpu.add_with_ids(vectors, np.ascontiguousarray(ids, dtype=np.int64))
            self._gpu = None

    def remove(self, ids: list[int] | np.ndarray) -> None:
        if len(ids):
            self._cpu.remove_ids(np.asarray(ids, dtype=np.int64))
            self._gpu = None

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` per query row; missing slots have id -1."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(k, self.ntotal))
        if self.ntotal == 0:
            return np.full((len(queries), 1), -np.inf, np.float32), np.full((len(queries), 1), -1, np.int64)
        if not self.use_gpu or k > GPU_MAX_K:
            return self._cpu.search(queries, k)
        if self._gpu is None:
            self._to_gpu()
        scores, pos = self._gpu.search(queries, k)
        assert self._gpu_ids is not None
        return scores, np.where(pos >= 0, self._gpu_ids[np.maximum(pos, 0)], -1)

    def _to_gpu(self) -> None:
        faiss = _faiss()
        n = self.ntotal
        vectors = self._cpu.index.reconstruct_n(0, n) if n else np.zeros((0, self.dim), np.float32)
        gpu = faiss.GpuIndexFlatIP(faiss.StandardGpuResources(), self.dim)
        gpu.add(np.ascontiguousarray(vectors, dtype=np.float32))
        self._gpu, self._gpu_ids = gpu, faiss.vector_to_array(self._cpu.id_map).astype(np.int64)

    def save(self, path: Path, generation: int) -> None:
        """Write the CPU index and its generation stamp atomically (index first, then the stamp)."""
        faiss = _faiss()
        tmp = path.with_suffix(".tmp")
        faiss.write_index(self._cpu, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _write_json(path.with_suffix(".json"), {"generation": generation, "ntotal": self.ntotal, "dim": self.dim})

    @classmethod
    def load(cls, path: Path, generation: int, dim: int) -> VectorIndex | None:
        """The saved index if its stamp matches ``generation``, else ``None`` (rebuild from the store)."""
        stamp_path = path.with_suffix(".json")
        if not path.exists() or not stamp_path.exists():
            return None
        stamp = json.loads(stamp_path.read_text())
        if stamp.get("generation") != generation or stamp.get("dim") != dim:
            return None
        index = cls(dim)
        index._cpu = _faiss().read_index(str(path))
        return index if index.ntotal == stamp.get("ntotal") else None


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".jsontmp")
    with open(tmp, "w") as f:
        json.dump(data, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
