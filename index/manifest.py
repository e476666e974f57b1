"""The collection manifest: what built the vectors, checked on every open."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, Literal

from longvec.index.errors import InvalidInputError, ModelMismatchError
from longvec.index.lexical import FUSIONS, SEARCH_MODES, Fusion, SearchMode
from longvec.index.vectors import INDEX_TYPES, write_json_atomic

FORMAT_VERSION = 2
# Collections whose vectors need this longvec's 2D Matryoshka code to be read right (documents encoded with fewer
# layers, or calibrated: rotated stored vectors): older versions, which accept only FORMAT_VERSION, refuse them.
ELASTIC_FORMAT_VERSION = 3
READABLE_FORMATS = (FORMAT_VERSION, ELASTIC_FORMAT_VERSION)
# ``extend`` chunks as ``chunk`` does, at the budget of an extended encoder (``extend_to``): a document that fits
# is one vector from the encoder reading it whole, a longer one is chunked at that budget.
Strategy = Literal["chunk", "truncate", "late", "extend"]
STRATEGIES: tuple[Strategy, ...] = ("chunk", "truncate", "late", "extend")


@cache
def longvec_version() -> str:
    """The installed package's version (one source: pyproject.toml)."""
    try:
        return metadata.version("longvec")
    except metadata.PackageNotFoundError:
        return "0+unknown"


@dataclass(frozen=True)
class Manifest:
    """Everything that must match for stored vectors and new query vectors to be comparable.

    ``chunker_version`` is the chunker that created the collection; each document's content hash carries
    the version that chunked it, so re-indexing the same inputs re-chunks documents an older one stored.
    """

    model: str
    model_fingerprint: str
    dim: int
    strategy: Strategy
    max_tokens: int
    overlap_tokens: int = 0
    # Defaults are what a collection made before these settings did (no code context, dense search): a
    # new collection records its own values (``Collection.create``).
    code_context: bool = False
    path_context: bool = False  # code chunks embedded with their file path first (new collections: on)
    doc_vector: bool = False  # a document of several chunks also gets a vector of its first window
    split_tokens: int | None = None  # the chunk budget of documents that do not fit max_tokens (None: max_tokens)
    search_mode: SearchMode = "dense"
    fusion: Fusion = "rrf"
    alpha: float = 0.5
    text_alpha: float | None = None  # the dense weight of prose chunks (None: alpha, as before it existed)
    document_prompt: str = ""
    query_prompt: str = ""
    # Long-context settings the model was loaded with (``EmbedderConfig`` fields: extend_to, positions,
    # temperature, length_scaled); empty for the model as trained.
    encoder: dict[str, Any] = field(default_factory=dict)
    # Transformer layers documents are encoded with (2D Matryoshka's depth); None: all of the model's.
    layers: int | None = None
    # The FAISS structure of the chunk vectors (``vectors.INDEX_TYPES``); changeable without re-embedding.
    index_type: str = "auto"
    chunker_version: str = ""
    format_version: int = FORMAT_VERSION
    longvec_version: str = ""
    created: str = ""
    # Settings a newer longvec wrote that this one does not know: kept as they are when this one rewrites the
    # manifest (changing search defaults, the index type), so a newer version finds them again.
    unknown: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InvalidInputError(f"strategy {self.strategy!r} not in {STRATEGIES}")
        weights = (self.alpha, self.alpha if self.text_alpha is None else self.text_alpha)
        if (
            self.search_mode not in SEARCH_MODES
            or self.fusion not in FUSIONS
            or not all(0.0 <= w <= 1.0 for w in weights)
        ):
            raise InvalidInputError(
                f"manifest search settings mode={self.search_mode!r} fusion={self.fusion!r} alpha={self.alpha!r} "
                f"text_alpha={self.text_alpha!r} are not valid (mode in {SEARCH_MODES}, fusion in {FUSIONS}, "
                "alpha and text_alpha in [0, 1])"
            )
        if self.index_type not in INDEX_TYPES:
            raise InvalidInputError(f"index type {self.index_type!r} not in {INDEX_TYPES}")

    def save(self, path: Path) -> None:
        """Write atomically (temp file, fsync, rename, fsync of the directory)."""
        data = asdict(self)
        write_json_atomic(path, {**data.pop("unknown"), **data})

    @classmethod
    def load(cls, path: Path) -> Manifest:
        data = json.loads(path.read_text(encoding="utf-8"))
        version = data.get("format_version", 1)
        if version not in READABLE_FORMATS:
            newer = "newer" if version > ELASTIC_FORMAT_VERSION else "older"
            raise ModelMismatchError(
                f"collection at {path.parent} has format {version}, {newer} than this longvec's "
                f"({FORMAT_VERSION}): re-index its documents into a new --collection directory"
            )
        known = {f.name for f in fields(cls)} - {"unknown"}
        return cls(
            **{k: v for k, v in data.items() if k in known},
            unknown={k: v for k, v in data.items() if k not in known},
        )

    def check(
        self, *, model: str, model_fingerprint: str, dim: int, max_tokens: int, document_prompt: str, query_prompt: str
    ) -> None:
        """Raise :class:`ModelMismatchError` unless the embedder is the one that built the collection."""
        mine = {
            "fingerprint": self.model_fingerprint,
            "dim": self.dim,
            "max_tokens": self.max_tokens,
            "document_prompt": self.document_prompt,
            "query_prompt": self.query_prompt,
        }
        theirs = {
            "fingerprint": model_fingerprint,
            "dim": dim,
            "max_tokens": max_tokens,
            "document_prompt": document_prompt,
            "query_prompt": query_prompt,
        }
        differ = [k for k in mine if mine[k] != theirs[k]]
        if differ:
            built = ", ".join(f"{k} {mine[k]!r}" for k in differ)
            got = ", ".join(f"{k} {theirs[k]!r}" for k in differ)
            raise ModelMismatchError(
                f"collection was built with model {self.model!r} ({built}); got {model!r} ({got}). "
                f"Open it with the model and settings it was built with, or index into a new --collection directory"
            )


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
