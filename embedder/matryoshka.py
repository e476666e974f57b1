"""Matryoshka truncation: keep the first ``dim`` coordinates and re-normalise."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

import numpy as np

from longvec.embedder.errors import InvalidSettingError

# What a model can be trained to be elastic in ("native" Matryoshka), and how it is declared: auto (detected by
# `native_axes`), none, dims (MRL), layers, 2d (both: 2DMSE, Starbucks, `longvec train`).
Axis = Literal["dims", "layers"]
Elastic = Literal["auto", "none", "dims", "layers", "2d"]
ELASTIC: tuple[Elastic, ...] = ("auto", "none", "dims", "layers", "2d")
_DECLARED: dict[str, frozenset[Axis]] = {
    "none": frozenset(),
    "dims": frozenset({"dims"}),
    "layers": frozenset({"layers"}),
    "2d": frozenset({"dims", "layers"}),
}
TRAIN_RECORD = "longvec-train.json"  # written by `longvec train` beside the model it saves
# Loss names sentence-transformers writes into the model cards of models trained with them.
_CARD_AXES: dict[str, tuple[Axis, ...]] = {
    "Matryoshka2dLoss": ("dims", "layers"),
    "MatryoshkaLoss": ("dims",),
    "AdaptiveLayerLoss": ("layers",),
}
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
    if isinstance(dim, bool) or not isinstance(dim, int | np.integer) or dim not in allowed:
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


def native_axes(model_dir: Path | str | None, declared: str = "auto") -> frozenset[Axis]:
    """The axes a model was trained to be elastic in: ``declared`` unless ``auto``; else, for a model directory,
    from a ``longvec train`` record, or the loss names sentence-transformers writes into a trained model's card
    (README.md). Empty when unknown (a hub name, a model trained otherwise)."""
    if declared != "auto":
        if declared not in _DECLARED:
            raise InvalidSettingError(f"elastic {declared!r} not in {ELASTIC}")
        return _DECLARED[declared]
    if model_dir is None or not Path(model_dir).is_dir():
        return frozenset()
    root = Path(model_dir)
    if (record := root / TRAIN_RECORD).is_file():
        try:
            axes = json.loads(record.read_text()).get("axes")
        except (ValueError, AttributeError) as exc:
            raise InvalidSettingError(f"{record} is not a longvec training record: {exc}") from exc
        if not isinstance(axes, list) or not set(axes) <= {"dims", "layers"}:
            raise InvalidSettingError(f"{record}: 'axes' must be a list of 'dims' and 'layers', got {axes!r}")
        return frozenset(axes)
    card = root / "README.md"
    text = card.read_text(errors="replace") if card.is_file() else ""
    # the card's training section has one "#### <LossName>" heading per loss used
    headings = set(re.findall(r"^#{2,4}\s+(\w+)\s*$", text, re.MULTILINE))
    return frozenset(axis for name, axes in _CARD_AXES.items() if name in headings for axis in axes)
