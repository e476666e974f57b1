"""Embedders: model loading, encoding, Matryoshka truncation, aggregation. No HTTP, no env vars."""

from embedder.aggregate import AGGREGATIONS, Aggregation, aggregate
from embedder.errors import InvalidSettingError, ModelLoadError
from embedder.matryoshka import allowed_dims, check_dim, normalize, truncate
from embedder.model import (
    DEFAULT_MODEL,
    Embedder,
    EmbedderConfig,
    Encoder,
    fingerprint,
    load_embedder,
    resolve_model,
)

__all__ = [
    "AGGREGATIONS",
    "DEFAULT_MODEL",
    "Aggregation",
    "Embedder",
    "EmbedderConfig",
    "Encoder",
    "InvalidSettingError",
    "ModelLoadError",
    "aggregate",
    "allowed_dims",
    "check_dim",
    "fingerprint",
    "load_embedder",
    "normalize",
    "resolve_model",
    "truncate",
]
