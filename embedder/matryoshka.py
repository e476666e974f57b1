"""Matryoshka truncation: keep the first ``dim`` coordinates and re-normalise."""

from __future__ import annotations

import numpy as np

from longvec.embedder.errors import InvalidSettingError

# Powers of two and the steps halfway between them in bytes (1.5x), as MRL models are trained and evaluated.
_LADDER = (32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)


def allowed_dims(full_dim: int) -> tuple[int, ...]:
    """The prefix sizes a model of ``full_dim`` dimensions serves: powers of two and 1.5x powers of two from
    32, plus the full size."""
    return tuple(d for d in _LADDER if d < full_dim) + (full_dim,)


def check_dim(dim: int | None, full_dim: int) -> int:
    """``dim`` validated against :func:`allowed_dims` (``None`` means the full size)."""
    if dim is None:
        return full_dim
    allowed = allowed_dims(full_dim)
    if dim not in allowed:
        raise InvalidSettingError(f"dim {dim} not in {allowed}")
    return dim


def normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation into a new C-contiguous float32 array (zero rows stay zero)."""
    v = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(v, axis=-1, keepdims=True)
    return np.ascontiguousarray(v / np.maximum(norms, 1e-12), dtype=np.float32)


def truncate(vectors: np.ndarray, dim: int) -> np.ndarray:
    """First ``dim`` coordinates of each row, re-normalised to unit length.

    A truncated unit vector has norm < 1, so skipping the re-normalisation silently changes cosine scores.
    """
    return normalize(np.asarray(vectors)[..., :dim])
