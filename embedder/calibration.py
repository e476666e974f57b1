"""Training-free calibration that makes any model elastic in dimensions and in layers (2D Matryoshka).

A model not trained with a Matryoshka loss spreads what it knows over all its coordinates, and its inner layers
speak another language than its last one. Two closed-form fixes, fitted on a sample of a collection's own
chunks, with no labels and no gradient steps:

- **Rotation** (dimensions): an orthogonal matrix whose columns are the principal axes of the chunk vectors,
  largest variance first. Rotating changes no full-length cosine (``R`` is orthogonal), but the first ``dim``
  coordinates of a rotated vector are its projection on the ``dim`` directions along which the collection's
  vectors differ most, so a prefix keeps as much of what tells chunks apart as ``dim`` coordinates can.
- **Adapters** (layers): for each depth ``k`` below the model's, a ridge least-squares affine map from the unit
  vectors the first ``k`` layers give (pooled as the model pools) to the full model's unit vectors for the same
  texts. A shallow query (or document) mapped this way lands in the space the collection is stored in.

Vectors flow: encode at depth ``k`` -> adapter ``k`` (if ``k`` is not the model's depth) -> re-normalise ->
rotation -> prefix of ``dim`` -> re-normalise (``matryoshka.truncate``).
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from longvec.embedder.errors import InvalidSettingError
from longvec.embedder.matryoshka import normalize

CALIBRATION_VERSION = 1
# Ridge penalty of the adapters, relative to the mean eigenvalue of the inputs' Gram matrix: keeps the map
# stable when the sample is small next to the dimension.
ADAPTER_RIDGE = 1e-2


@dataclass
class Calibration:
    """A fitted rotation (``(d, d)``, ``v @ rotation``; ``None``: none) and adapters by depth (``(W, b)``:
    ``normalize(v @ W + b)``), for a model of ``layers`` transformer layers and ``dim`` dimensions.

    ``base`` is the depth whose space the rotation acts on: the full depth (``layers``; adapters map other depths
    into it), or, for a rotation alone of a collection encoded at fewer layers, that depth (no adapters).
    """

    dim: int
    layers: int
    rotation: np.ndarray | None = None
    adapters: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    base: int | None = None  # None: layers

    def __post_init__(self) -> None:
        if self.base is None:
            self.base = self.layers
        if self.base != self.layers and self.adapters:
            raise InvalidSettingError("adapters map into the full model's space: base must be the full depth")

    def depths(self) -> list[int]:
        """Depths whose vectors this calibration maps into its space (``base`` included)."""
        return sorted({*self.adapters, self.base})

    def to_model_space(self, vectors: np.ndarray, layers: int) -> np.ndarray:
        """Unit vectors of depth ``layers`` mapped into the ``base`` space (an adapter; unchanged at ``base``)."""
        if layers == self.base:
            return normalize(vectors)
        if layers not in self.adapters:
            raise InvalidSettingError(f"no adapter for {layers} layers (calibrated: {self.depths()})")
        w, b = self.adapters[layers]
        return normalize(np.asarray(vectors, np.float32) @ w + b)

    def rotate(self, vectors: np.ndarray) -> np.ndarray:
        if self.rotation is None:
            return normalize(vectors)
        return normalize(np.asarray(vectors, np.float32) @ self.rotation)

    def apply(self, vectors: np.ndarray, layers: int) -> np.ndarray:
        """Depth-``layers`` unit vectors as the collection stores them: adapted, then rotated."""
        return self.rotate(self.to_model_space(vectors, layers))

    def save(self, path: Path) -> None:
        """Write atomically (temp file, fsync, rename, fsync of the directory)."""
        arrays: dict[str, np.ndarray] = {"meta": np.array([CALIBRATION_VERSION, self.dim, self.layers, self.base])}
        if self.rotation is not None:
            arrays["rotation"] = self.rotation
        for k, (w, b) in self.adapters.items():
            arrays[f"w{k}"], arrays[f"b{k}"] = w, b
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.write(buffer.getvalue())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    @classmethod
    def load(cls, path: Path) -> Calibration:
        with np.load(path) as data:
            version, dim, layers, base = (int(x) for x in data["meta"])
            if version != CALIBRATION_VERSION:
                raise InvalidSettingError(f"calibration {path} has version {version}, not {CALIBRATION_VERSION}")
            rotation = data["rotation"] if "rotation" in data else None
            adapters = {
                int(name[1:]): (data[name], data[f"b{name[1:]}"]) for name in data.files if name.startswith("w")
            }
        return cls(dim, layers, rotation, adapters, base)


def fit_rotation(vectors: np.ndarray) -> np.ndarray:
    """The principal axes of ``vectors`` (rows) as an orthogonal ``(d, d)`` float32 matrix, largest variance
    first (eigenvectors of their covariance; each axis signed so that its largest coordinate is positive)."""
    v = np.asarray(vectors, np.float64)
    if v.ndim != 2 or len(v) < 2:
        raise InvalidSettingError("a rotation needs at least 2 vectors")
    centred = v - v.mean(axis=0)
    values, axes = np.linalg.eigh(centred.T @ centred / (len(v) - 1))
    axes = axes[:, np.argsort(values)[::-1]]
    axes *= np.sign(axes[np.abs(axes).argmax(axis=0), np.arange(axes.shape[1])])
    # Re-orthogonalise in float64 before the cast: eigh's vectors are orthogonal to ~1e-15 already.
    q, r = np.linalg.qr(axes)
    return np.ascontiguousarray(q * np.sign(np.diag(r)), dtype=np.float32)


def fit_adapter(inputs: np.ndarray, targets: np.ndarray, ridge: float = ADAPTER_RIDGE) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` minimising ``|inputs @ W + b - targets|^2 + lambda |W|^2`` (closed form, float64), ``lambda``
    being ``ridge`` times the mean eigenvalue of the centred inputs' Gram matrix (so it scales with the data)."""
    x, y = np.asarray(inputs, np.float64), np.asarray(targets, np.float64)
    if len(x) != len(y) or len(x) < 2:
        raise InvalidSettingError("an adapter needs at least 2 paired vectors")
    mx, my = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - mx, y - my
    gram = xc.T @ xc
    gram += ridge * np.trace(gram) / len(gram) * np.eye(len(gram))  # relative to the mean eigenvalue
    w = np.linalg.solve(gram, xc.T @ yc)
    b = my - mx @ w
    return w.astype(np.float32), b.astype(np.float32)
