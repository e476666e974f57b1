"""Retrieval systems compared by the evaluation: longvec configurations and the baselines.

A system is named by a spec string ``KIND[:key=value,...]``:

- ``chunk`` / ``truncate`` / ``late``: a longvec collection (the product path: chunker, embedder, store, FAISS).
  Keys: ``max_tokens`` (chunk budget), ``overlap`` (overlap tokens), ``dim`` (Matryoshka prefix),
  ``agg`` (``maxsim``: a document scores as its best chunk, the default; or ``mean``/``max``/``weighted``:
  one aggregated vector per document), ``mode`` (``dense``/``lexical``/``hybrid``; default: a new
  collection's default), ``fusion`` (``rrf``/``convex``/``zscore``/``adaptive``/``pnorm``), ``alpha`` (the dense
  weight, a number in [0, 1]) and ``text_alpha`` (the dense weight of prose chunks) for hybrid search, set on the
  collection as ``Collection.create`` takes them (neither: the defaults for code and for prose; ``alpha`` alone: every
  chunk), ``context=0`` (chunk only) to embed code chunks without their signature context,
  ``path=0`` without their source file's path (where the dataset knows it: the code sets), and
  ``docvec=1`` to give each document of several chunks one more vector of its first ``max_tokens`` tokens,
  ``split=N`` to chunk documents that do not fit one ``max_tokens`` chunk at ``N`` tokens instead, and ``prox=0``
  to score the lexical channel by BM25 alone, without term proximity (a search option).
  Long context (``embedder.longctx``): ``extend`` grows the model's position table to that many tokens
  (``max_tokens`` then defaults to it) by ``positions`` (``keep``/``linear``/``group``) interpolation, and
  ``tau`` is a TempScale attention temperature.
- Every kind that embeds also takes ``precision`` (``fp32``/``bf16``/``fp16``/``auto``) and ``backend``
  (``torch``/``openvino``/``auto``): the encode engine's (default: the run's ``--precision`` / ``--backend``,
  themselves ``auto`` unless given).
- ``st``: plain sentence-transformers + exact (brute-force) search over whole documents, truncated by the model at
  ``max_tokens`` (256 is the model's own limit) — what most stacks do.
- ``windows``: fixed ``max_tokens``-token windows cut on token ids with no regard for structure, document
  score = the best window's score — what a user would hand-write.
- ``sts``: ``semantic-text-splitter`` (a Rust chunker): its ``CodeSplitter`` with the document's tree-sitter grammar
  for code, its ``TextSplitter`` for prose (and for code languages without a grammar), both counting with the
  embedder's tokenizer at a capacity of ``max_tokens`` minus the special tokens and document prompt the embedder
  adds; document score = the best chunk's score, as for ``windows`` — the off-the-shelf structure-aware chunker.
- ``bm25``: lexical BM25 (``bm25s``) over whole documents.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from longvec.embedder import BACKENDS, POSITION_MODES, PRECISIONS, Backend, PositionMode, Precision
from longvec.index import AGG_MODES, FUSIONS, SEARCH_MODES, AggMode, Fusion, InvalidInputError, SearchMode
from longvec.index.lexical import DEFAULT_FUSION, DEFAULT_SEARCH_MODE, DEFAULT_WEIGHTS, resolve_weights

Kind = Literal["chunk", "truncate", "late", "st", "windows", "sts", "bm25"]
KINDS: tuple[Kind, ...] = ("chunk", "truncate", "late", "st", "windows", "sts", "bm25")

LONG_KEYS = ("extend", "positions", "tau")
LONGVEC_KINDS = ("chunk", "truncate", "late")  # systems that are longvec collections
DEFAULT_SYSTEMS = ("chunk", "truncate", "st:max_tokens=256", "st:max_tokens=512", "windows", "sts", "bm25")
# The options each kind honours; any other key in a spec is an error, never silently ignored.
KEYS: dict[str, tuple[str, ...]] = {
    "chunk": (
        "max_tokens",
        "overlap",
        "dim",
        "agg",
        "mode",
        "fusion",
        "alpha",
        "text_alpha",
        "context",
        "docvec",
        "path",
        "split",
        "prox",
        *LONG_KEYS,
    ),
    "truncate": ("max_tokens", "dim", "mode", "fusion", "alpha", "text_alpha", "prox", *LONG_KEYS),
    "late": ("max_tokens", "dim", "mode", "fusion", "alpha", "text_alpha", "docvec", "split", "prox", *LONG_KEYS),
    "st": ("max_tokens",),
    "windows": ("max_tokens",),
    "sts": ("max_tokens",),
    "bm25": (),
}
for _kind in ("chunk", "truncate", "late", "st", "windows", "sts"):
    KEYS[_kind] += ("precision", "backend")


@dataclass(frozen=True)
class SystemSpec:
    kind: Kind
    max_tokens: int = 256
    overlap: int = 0
    dim: int | None = None
    agg: AggMode = "maxsim"
    mode: SearchMode | None = None
    fusion: Fusion | None = None
    alpha: float | None = None
    text_alpha: float | None = None
    context: bool = True
    docvec: bool = False
    path: bool = True
    split: int | None = None
    prox: bool = True
    extend: int | None = None
    positions: PositionMode | None = None
    tau: float | None = None
    precision: Precision | None = None
    backend: Backend | None = None

    @classmethod
    def parse(cls, spec: str) -> SystemSpec:
        kind, _, rest = spec.partition(":")
        if kind not in KINDS:
            raise InvalidInputError(f"system {spec!r}: kind {kind!r} not in {KINDS}")
        known = KEYS[kind]
        values: dict[str, object] = {}
        for item in filter(None, rest.split(",")):
            key, sep, value = item.partition("=")
            if not sep or key not in known:
                raise InvalidInputError(f"system {spec!r}: expected key=value with key in {list(known)}")
            values[key] = _value(spec, key, value)
        if "extend" in values:
            values.setdefault("max_tokens", values["extend"])
        return cls(kind=kind, **values)  # type: ignore[arg-type]

    @property
    def name(self) -> str:
        if self.kind == "bm25":
            return "bm25"
        parts = [f"{self.kind}-{self.max_tokens}"]
        if self.kind in LONGVEC_KINDS:
            parts[0] = f"longvec {parts[0]}"
        elif self.kind == "sts":
            parts[0] = f"semantic-text-splitter-{self.max_tokens}"
        if self.overlap:
            parts.append(f"overlap {self.overlap}")
        if self.agg != "maxsim":
            parts.append(f"agg {self.agg}")
        if self.dim is not None:
            parts.append(f"dim {self.dim}")
        if self.kind in LONGVEC_KINDS:
            mode, fusion, alpha, text_alpha = self.channels
            if self.kind != "truncate" or mode != "dense":  # the truncation baseline is dense unless told
                parts.append(mode if fusion is None else f"{mode} {fusion} alpha {alpha:g}")
            if fusion is not None and text_alpha is not None and text_alpha != alpha:
                parts.append(f"text {text_alpha:g}")
        if not self.context:
            parts.append("no context")
        if self.split is not None:
            parts.append(f"split {self.split}")
        if not self.prox:
            parts.append("no proximity")
        if self.docvec:
            parts.append("+ doc vector")
        if not self.path:
            parts.append("no path")
        if self.extend is not None:
            parts.append(f"extend {self.extend} {self.positions or 'keep'}")
        if self.tau is not None:
            parts.append(f"tau {self.tau:g}")
        if self.backend is not None:
            parts.append(self.backend)
        if self.precision is not None:
            parts.append(self.precision)
        return " ".join(parts)

    @property
    def long_context(self) -> dict[str, object]:
        """The ``EmbedderConfig`` long-context settings this system's encoder is loaded with."""
        out: dict[str, object] = {}
        if self.extend is not None:
            out["extend_to"] = self.extend
            if self.positions is not None:
                out["positions"] = self.positions
        if self.tau is not None:
            out["temperature"] = self.tau
        return out

    @property
    def encoder_settings(self) -> dict[str, object]:
        """The ``EmbedderConfig`` fields this system's encoder is loaded with: long context and precision."""
        engine = {"precision": self.precision, "backend": self.backend}
        return self.long_context | {k: v for k, v in engine.items() if v is not None}

    @property
    def channels(self) -> tuple[SearchMode, Fusion | None, float | None, float | None]:
        """The search mode, fusion, weight and prose weight (``None``: the weight) a longvec system runs with: the
        spec's, else a new collection's defaults (the truncation baseline, and aggregated views, search densely);
        no fusion or weights unless hybrid."""
        dense_default = self.kind == "truncate" or self.agg != "maxsim"
        mode = self.mode or ("dense" if dense_default else DEFAULT_SEARCH_MODE)
        if mode != "hybrid":
            return mode, None, None, None
        return mode, self.fusion or DEFAULT_FUSION, *resolve_weights(self.alpha, self.text_alpha, DEFAULT_WEIGHTS)

    @property
    def dense(self) -> bool:
        return self.kind != "bm25"


# The allowed words of the keys that take one; the others are numbers.
_CHOICES: dict[str, tuple[str, ...]] = {
    "agg": AGG_MODES,
    "mode": SEARCH_MODES,
    "fusion": FUSIONS,
    "positions": POSITION_MODES,
    "precision": PRECISIONS,
    "backend": BACKENDS,
}


def _value(spec: str, key: str, value: str) -> object:
    """The typed value of ``key=value`` in ``spec``; :class:`InvalidInputError` if it is not one."""
    if key in _CHOICES:
        if value not in _CHOICES[key]:
            raise InvalidInputError(f"system {spec!r}: {key} not in {_CHOICES[key]}")
        return value
    if key in ("alpha", "text_alpha", "tau"):
        try:
            number = float(value)
        except ValueError:
            number = -1.0
        low, high = (0.05, 10.0) if key == "tau" else (0.0, 1.0)
        if not low <= number <= high:
            raise InvalidInputError(f"system {spec!r}: {key} must be a number in [{low:g}, {high:g}], got {value!r}")
        return number
    if key in ("context", "docvec", "path", "prox"):
        if value not in ("0", "1"):
            raise InvalidInputError(f"system {spec!r}: {key} must be 0 or 1, got {value!r}")
        return value == "1"
    if not value.isdigit():
        raise InvalidInputError(f"system {spec!r}: {key} must be a non-negative integer, got {value!r}")
    return int(value)
