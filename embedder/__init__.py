"""Embedders: model loading, encoding, Matryoshka truncation, aggregation. No HTTP, no env vars."""

from longvec.embedder.aggregate import AGGREGATIONS, Aggregation, aggregate
from longvec.embedder.engine import BACKENDS, PRECISIONS, Backend, Precision
from longvec.embedder.errors import InvalidSettingError, ModelLoadError
from longvec.embedder.longctx import POSITION_MODES, PositionMode
from longvec.embedder.matryoshka import allowed_dims, check_dim, normalize, truncate
from longvec.embedder.model import (
    DEFAULT_MODEL,
    LONG_CONTEXT_FIELDS,
    Embedder,
    EmbedderConfig,
    Encoder,
    fingerprint,
    load_embedder,
    long_context,
    resolve_model,
)

__all__ = [
    "AGGREGATIONS",
    "BACKENDS",
    "DEFAULT_MODEL",
    "LONG_CONTEXT_FIELDS",
    "POSITION_MODES",
    "PRECISIONS",
    "PositionMode",
    "Precision",
    "Aggregation",
    "Backend",
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
    "long_context",
    "normalize",
    "resolve_model",
    "truncate",
]
