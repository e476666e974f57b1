"""The collection manifest: what built the vectors, checked on every open."""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from index.errors import InvalidInputError, ModelMismatchError

FORMAT_VERSION = 1
Strategy = Literal["chunk", "truncate"]
STRATEGIES: tuple[Strategy, ...] = ("chunk", "truncate")


@dataclass(frozen=True)
class Manifest:
    """Everything that must match for stored vectors and new query vectors to be comparable."""

    model: str
    model_fingerprint: str
    dim: int
    strategy: Strategy
    max_tokens: int
    overlap_tokens: int = 0
    format_version: int = FORMAT_VERSION
    longvec_version: str = ""
    created: str = ""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise InvalidInputError(f"strategy {self.strategy!r} not in {STRATEGIES}")

    def save(self, path: Path) -> None:
        """Write atomically (temp file, fsync, rename)."""
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(asdict(self), f, indent=2, sort_keys=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> Manifest:
        data = json.loads(path.read_text(encoding="utf-8"))
        known = {f.name for f in fields(cls)}
        manifest = cls(**{k: v for k, v in data.items() if k in known})
        if manifest.format_version > FORMAT_VERSION:
            raise ModelMismatchError(
                f"collection format {manifest.format_version} is newer than this longvec ({FORMAT_VERSION})"
            )
        return manifest

    def check(self, *, model_fingerprint: str, dim: int, model: str) -> None:
        """Raise :class:`ModelMismatchError` unless the embedder matches the one that built the collection."""
        if model_fingerprint != self.model_fingerprint or dim != self.dim:
            raise ModelMismatchError(
                f"collection was built with model {self.model!r} (dim {self.dim}, fingerprint "
                f"{self.model_fingerprint}); got {model!r} (dim {dim}, fingerprint {model_fingerprint})"
            )


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
