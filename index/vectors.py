"""The FAISS index over chunk vectors: exact inner product, GPU FAISS for search when a GPU is present.

The index is a cache of the SQLite store. It is saved as ``vectors-<generation>.faiss`` beside a stamp,
``vectors.json``, naming that file with the store generation and chunk sequence number it reflects; the
stamp is replaced only after the file is complete, so a reader never pairs a stamp with the wrong file.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

GPU_MAX_K = 2048  # GPU FAISS's largest k; larger searches run on the CPU copy
STAMP = "vectors.json"
log = logging.getLogger("longvec.index")


def _faiss() -> Any:
    import faiss

    return faiss


def gpu_count() -> int:
    faiss = _faiss()
    return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0


@dataclass(frozen=True)
class Stamp:
    """What a saved index reflects: the store's ``generation`` and its chunk sequence number ``seq``;
    ``size`` is the file's length in bytes (a truncated file does not pass for the saved one)."""

    file: str
    generation: int
    seq: int
    ntotal: int
    dim: int
    size: int

    def intact(self, directory: Path) -> bool:
        """Whether the file the stamp names is there with the size it was saved with."""
        try:
            return (directory / self.file).stat().st_size == self.size
        except FileNotFoundError:
            return False


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
        """Drop ``ids`` (ids not in the index are ignored)."""
        if len(ids):
            self._cpu.remove_ids(np.ascontiguousarray(ids, dtype=np.int64))
            self._gpu = None

    def search(
        self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` ``(scores, ids)`` per query row; missing slots have id -1.

        ``allowed`` is a bitmap over ids (``np.packbits(..., bitorder="little")``: bit ``i`` set = id ``i``
        may be returned); searches with it run on the CPU index.
        """
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = max(1, min(k, self.ntotal))
        if self.ntotal == 0:
            return np.full((len(queries), 1), -np.inf, np.float32), np.full((len(queries), 1), -1, np.int64)
        if allowed is not None:
            faiss = _faiss()
            bitmap = np.ascontiguousarray(allowed, dtype=np.uint8)
            selector = faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap))  # length in bytes
            return self._cpu.search(queries, k, params=faiss.SearchParameters(sel=selector))
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

    def save(self, directory: Path, generation: int, seq: int) -> None:
        """Write the CPU index as ``vectors-<generation>.faiss``, then point the stamp at it; older files go."""
        faiss = _faiss()
        name = f"vectors-{generation}.faiss"
        tmp = directory / (name + ".tmp")
        faiss.write_index(self._cpu, str(tmp))
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, directory / name)
        stamp = Stamp(name, generation, seq, self.ntotal, self.dim, (directory / name).stat().st_size)
        write_json_atomic(directory / STAMP, asdict(stamp))  # fsyncs the directory: both renames are durable
        for old in directory.glob("vectors-*.faiss*"):  # older saves and interrupted ones
            if old.name != name:
                old.unlink(missing_ok=True)

    @classmethod
    def load(cls, directory: Path, dim: int) -> tuple[VectorIndex, Stamp] | None:
        """The saved index and its stamp, or ``None`` if there is none usable (the caller rebuilds it).

        The index is a cache: a missing, damaged or mismatching file is logged and ignored, never an error.
        """
        for _ in range(3):  # a writer may replace the file between reading the stamp and opening it
            stamp = read_stamp(directory)
            if stamp is None or stamp.dim != dim:
                return None
            if not (directory / stamp.file).exists():
                continue
            try:
                cpu = _faiss().read_index(str(directory / stamp.file))
            except RuntimeError as exc:
                log.warning("saved index %s is unreadable, rebuilding it: %s", directory / stamp.file, exc)
                return None
            if cpu.ntotal != stamp.ntotal or cpu.d != dim:
                log.warning("saved index %s does not match its stamp, rebuilding it", directory / stamp.file)
                return None
            index = cls(dim)
            index._cpu = cpu
            return index, stamp
        return None


def read_stamp(directory: Path) -> Stamp | None:
    try:
        data = json.loads((directory / STAMP).read_text())
        return Stamp(**data)
    except (FileNotFoundError, json.JSONDecodeError, TypeError):
        return None


def write_json_atomic(path: Path, data: dict[str, Any]) -> None:
    """Write ``path`` via a temporary file, fsync, rename, and fsync the directory so the rename survives."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
