"""Calibration without labels that makes any model elastic in dimensions and in layers (2D Matryoshka).

A model not trained with a Matryoshka loss spreads what it knows over all its coordinates, and its inner layers
speak another language than its last one. Fixes fitted on a sample of a collection's own chunks, with no labels
and no change to the model: two in closed form, and one small learned map.

- **Rotation** (dimensions): an orthogonal matrix whose columns are the principal axes of the chunk vectors,
  largest variance first. Rotating changes no full-length cosine (``R`` is orthogonal), but the first ``dim``
  coordinates of a rotated vector are its projection on the ``dim`` directions along which the collection's
  vectors differ most, so a prefix keeps as much of what tells chunks apart as ``dim`` coordinates can.
- **Adapters** (layers): for each depth ``k`` below the model's, a ridge least-squares affine map from the unit
  vectors the first ``k`` layers give (pooled as the model pools) to the full model's unit vectors for the same
  texts. A shallow query (or document) mapped this way lands in the space the collection is stored in.

- **Prefix map** (dimensions): a small residual MLP ``v + g(v)`` on the rotated vectors, trained on the
  collection's own (frozen) vectors so that cosines between ``dim``-prefixes of mapped vectors match full-length
  cosines, at every prefix size of the ladder, all pairs and each vector's nearest neighbours weighted up (the
  unsupervised Matryoshka-Adaptor objective, arXiv 2407.20243); kept only if, over all prefix sizes together,
  it beats plain prefixes on held-out vectors. It is used only for prefixes: stored vectors and full-length
  scores stay as the rotation leaves them, so it needs no inverse and costs nothing at full size.

Vectors flow: encode at depth ``k`` -> adapter ``k`` (if ``k`` is not the model's depth) -> re-normalise ->
rotation -> (stored) -> for a prefix of ``dim``: prefix map -> first ``dim`` coordinates -> re-normalise.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from longvec.embedder.errors import InvalidSettingError
from longvec.embedder.matryoshka import allowed_dims, normalize, truncate

# File formats: 1, rotation and adapters; 2, also a prefix map (written only when there is one: older readers
# refuse it, and load what they can otherwise).
READABLE_VERSIONS = (1, 2)
# Ridge penalty of the adapters, relative to the mean eigenvalue of the inputs' Gram matrix: keeps the map
# stable when the sample is small next to the dimension.
ADAPTER_RIDGE = 1e-2
# Prefix-map training: neighbours per vector whose cosines are weighted up, the weight of keeping mapped vectors
# near their inputs, and the optimiser's schedule (full-batch steps of up to MAP_BATCH vectors).
MAP_NEIGHBOURS = 10
MAP_STAY = 1e-2
MAP_STEPS = 300
MAP_BATCH = 512
MAP_LR = 1e-3
# Fewer vectors than this fit no map (a d x d MLP would learn the sample); a tenth of them is held out, and a map
# that does not bring held-out prefix cosines closer to full-length ones than plain truncation does is dropped.
MAP_MIN_VECTORS = 256
MAP_HELD_OUT = 0.1


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
    prefix_map: PrefixMap | None = None

    def __post_init__(self) -> None:
        if self.base is None:
            self.base = self.layers
        if self.base != self.layers and self.adapters:
            raise InvalidSettingError("adapters map into the full model's space: base must be the full depth")

    @property
    def version(self) -> int:
        """The file format this calibration needs (the oldest that holds it, so older readers load what they can)."""
        return 2 if self.prefix_map is not None else 1

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

    def prefix(self, vectors: np.ndarray, dim: int) -> np.ndarray:
        """The ``dim``-prefix of stored (or :meth:`apply`-ed) vectors, re-normalised, through the prefix map if
        there is one; full-length vectors come back unchanged."""
        return prefix_of(vectors, dim, self.prefix_map)

    def save(self, path: Path) -> None:
        """Write atomically (temp file, fsync, rename, fsync of the directory)."""
        arrays: dict[str, np.ndarray] = {"meta": np.array([self.version, self.dim, self.layers, self.base])}
        if self.rotation is not None:
            arrays["rotation"] = self.rotation
        for k, (w, b) in self.adapters.items():
            arrays[f"w{k}"], arrays[f"b{k}"] = w, b
        if self.prefix_map is not None:
            arrays.update(self.prefix_map.arrays())
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
            if version not in READABLE_VERSIONS:
                raise InvalidSettingError(
                    f"calibration {path} has version {version}; this longvec reads {READABLE_VERSIONS}: upgrade it"
                )
            rotation = data["rotation"] if "rotation" in data else None
            adapters = {
                int(name[1:]): (data[name], data[f"b{name[1:]}"])
                for name in data.files
                if name.startswith("w") and name[1:].isdigit()
            }
            prefix_map = PrefixMap.from_arrays(data) if "map_w1" in data else None
        return cls(dim, layers, rotation, adapters, base, prefix_map)


@dataclass(frozen=True)
class PrefixMap:
    """``v + relu(v @ w1 + b1) @ w2 + b2`` (float32), for the prefixes in ``dims``."""

    w1: np.ndarray
    b1: np.ndarray
    w2: np.ndarray
    b2: np.ndarray
    dims: tuple[int, ...]

    def __call__(self, vectors: np.ndarray, dim: int) -> np.ndarray:
        """The first ``dim`` coordinates of the mapped vectors (only those columns are computed)."""
        v = np.asarray(vectors, np.float32)
        hidden = np.maximum(v @ self.w1 + self.b1, 0.0)
        return v[:, :dim] + hidden @ self.w2[:, :dim] + self.b2[:dim]

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            "map_w1": self.w1,
            "map_b1": self.b1,
            "map_w2": self.w2,
            "map_b2": self.b2,
            "map_dims": np.asarray(self.dims),
        }

    @classmethod
    def from_arrays(cls, data: Any) -> PrefixMap:
        return cls(
            data["map_w1"], data["map_b1"], data["map_w2"], data["map_b2"], tuple(int(d) for d in data["map_dims"])
        )


def prefix_of(vectors: np.ndarray, dim: int, prefix_map: PrefixMap | None = None) -> np.ndarray:
    """``dim``-prefixes of unit ``vectors`` re-normalised (through ``prefix_map`` if given); full-length vectors
    are returned as they are."""
    if dim >= vectors.shape[-1]:
        return vectors
    if prefix_map is None or not len(vectors):
        return truncate(vectors, dim)
    return normalize(prefix_map(vectors, dim))


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


def prefix_error(vectors: np.ndarray, dims: tuple[int, ...], prefix_map: PrefixMap | None = None) -> float:
    """How far cosines between ``dim``-prefixes (through ``prefix_map`` if given) are from the full-length cosines
    of unit ``vectors``: mean absolute difference over all pairs, averaged over ``dims``."""
    full = vectors @ vectors.T
    errors = []
    for dim in dims:
        cut = prefix_of(vectors, dim, prefix_map)
        errors.append(float(np.abs(cut @ cut.T - full).mean()))
    return float(np.mean(errors))


def fit_prefix_map(
    vectors: np.ndarray, *, steps: int = MAP_STEPS, batch: int = MAP_BATCH, lr: float = MAP_LR, seed: int = 0
) -> PrefixMap | None:
    """A :class:`PrefixMap` for unit ``vectors`` (rows, e.g. a collection's rotated chunk vectors), trained so that
    for every prefix size ``m`` of the ladder below their length, cosines between mapped ``m``-prefixes match the
    full-length cosines: mean absolute error over all pairs of a random batch plus the same over each vector's
    ``MAP_NEIGHBOURS`` nearest (ranking lives there), plus ``MAP_STAY`` times the squared step away from the input.
    The last layer starts at zero, so training starts from plain truncation. Deterministic for a ``seed``.

    ``None`` when there is nothing to gain: fewer than ``MAP_MIN_VECTORS`` vectors, no prefix size below their
    length, or a map that does not beat plain truncation on the held-out ``MAP_HELD_OUT`` of them."""
    import torch  # the model's runtime; only training needs it

    units = normalize(vectors)
    n, d = units.shape
    dims = tuple(m for m in allowed_dims(d) if m < d)
    if n < MAP_MIN_VECTORS or not dims:
        return None
    order = np.random.default_rng(seed).permutation(n)
    cut = max(2, int(n * MAP_HELD_OUT))
    held_out, train = units[order[:cut]], torch.from_numpy(units[order[cut:]])
    n = len(train)
    gen = torch.Generator().manual_seed(seed)
    w1 = (torch.randn(d, d, generator=gen) * (2.0 / d) ** 0.5).requires_grad_()
    b1 = torch.zeros(d, requires_grad=True)
    w2 = torch.zeros(d, d, requires_grad=True)
    b2 = torch.zeros(d, requires_grad=True)
    params = [w1, b1, w2, b2]
    optimiser = torch.optim.Adam(params, lr=lr)
    size = min(batch, n)
    k = min(MAP_NEIGHBOURS, size - 1)
    off_diagonal = ~torch.eye(size, dtype=torch.bool)
    for _ in range(steps):
        x = train[torch.randperm(n, generator=gen)[:size]]
        target = x @ x.T
        neighbours = target.masked_fill(~off_diagonal, -2.0).topk(k, dim=1).indices
        y = x + torch.relu(x @ w1 + b1) @ w2 + b2
        loss = MAP_STAY * (y - x).pow(2).sum(dim=1).mean()
        for m in dims:
            p = torch.nn.functional.normalize(y[:, :m], dim=1)
            error = (p @ p.T - target).abs()
            loss = loss + (error[off_diagonal].mean() + error.gather(1, neighbours).mean()) / len(dims)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    w1_, b1_, w2_, b2_ = (t.detach().numpy().astype(np.float32) for t in params)
    fitted = PrefixMap(w1_, b1_, w2_, b2_, dims)
    return fitted if prefix_error(held_out, dims, fitted) < prefix_error(held_out, dims) else None
