"""Aggregation of a document's chunk vectors into one document vector."""

from __future__ import annotations

from typing import Literal

import numpy as np

from longvec.embedder.matryoshka import normalize

Aggregation = Literal["mean", "max", "weighted"]
AGGREGATIONS: tuple[Aggregation, ...] = ("mean", "max", "weighted")


def aggregate(vectors: np.ndarray, how: Aggregation = "mean", weights: np.ndarray | None = None) -> np.ndarray:
    """One unit vector from ``vectors`` (n, d).

    ``mean`` averages, ``max`` takes the coordinate-wise maximum, ``weighted`` averages with ``weights``
    (typically the chunks' token counts, so a short trailing chunk does not weigh as much as a full one).
    """
    v = np.asarray(vectors, dtype=np.float32)
    if v.ndim != 2 or len(v) == 0:
        raise ValueError(f"expected a non-empty (n, d) array, got shape {v.shape}")
    if how == "mean":
        out = v.mean(axis=0)
    elif how == "max":
        out = v.max(axis=0)
    elif how == "weighted":
        if weights is None or len(weights) != len(v):
            raise ValueError("weighted aggregation needs one weight per vector")
        w = np.asarray(weights, dtype=np.float32)
        out = (v * w[:, None]).sum(axis=0) / max(float(w.sum()), 1e-12)
    else:
        raise ValueError(f"aggregation {how!r} not in {AGGREGATIONS}")
    return normalize(out[None, :])[0]
