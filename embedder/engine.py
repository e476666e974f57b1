"""The encode engine: how a loaded sentence-transformers model turns texts into vectors fast.

- **Batches by a token budget.** Texts are tokenised once (the model's fast tokenizer, truncated as the
  model truncates), sorted by length and cut into batches of at most ``token_budget`` padded tokens (and
  ``max_batch`` texts): short chunks go many to a batch, long ones few, and padding stays within a batch of
  near-equal lengths. The next batch is prepared (``SentenceTransformer.preprocess``) on a helper thread
  while the model runs the current one.
- **Precision.** ``fp32``; ``bf16`` / ``fp16`` as ``torch.autocast`` around the forward pass (weights stay
  fp32, matrix products run in the low precision: on CPUs with AMX or AVX-512 BF16 that is where the time
  goes); ``auto`` picks per machine (:func:`choose_precision`): on CUDA bf16 where supported, else fp16; on a
  CPU, bf16 only if the CPU has native bf16 instructions *and* a timed trial on this model shows it faster
  than fp32 while keeping the parity gate (mean cosine to fp32 >= ``PARITY_MIN_COSINE``). The trial's outcome
  is cached per model and machine, so it runs once.
- **Threads.** torch's intra-op pool is left at its default (one thread per core). Tokenising the next
  batch overlaps the forward pass on one helper thread; ``benchmarks/encode_bench.py`` measures what that
  and each other choice here is worth.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from longvec.embedder.errors import InvalidSettingError

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("auto", "fp32", "bf16", "fp16")
# The parity gate a low precision must pass against fp32 on the same texts (mean cosine).
PARITY_MIN_COSINE = 0.999
# Padded tokens per batch. On CPU the speed per token is flat from ~4k tokens a batch up (measured by
# benchmarks/encode_bench.py); larger batches only cost memory.
DEFAULT_TOKEN_BUDGET = 8192
# A low precision must beat fp32 by this factor in the trial to be chosen (timing noise is a few percent).
MIN_SPEEDUP = 1.1
# CPU flags that give torch native bf16 matrix products (oneDNN); without them bf16 is emulated and slow.
BF16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; anything else as given."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``); empty where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def autocast_dtype(precision: Precision) -> torch.dtype | None:
    import torch

    return {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]


@dataclass(frozen=True)
class Trial:
    """How a precision did against fp32 on the trial texts."""

    precision: Precision
    tokens_per_s: float
    mean_cosine: float
    min_cosine: float
    speedup: float


class Engine:
    """Encodes texts with ``st`` at a fixed device and precision; not thread-safe (callers hold a lock)."""

    def __init__(
        self,
        st: SentenceTransformer,
        *,
        precision: Precision = "fp32",
        token_budget: int = DEFAULT_TOKEN_BUDGET,
        max_batch: int = 256,
    ) -> None:
        if precision not in PRECISIONS or precision == "auto":
            raise InvalidSettingError(f"engine precision must be one of fp32/bf16/fp16, got {precision!r}")
        if token_budget < 1 or max_batch < 1:
            raise InvalidSettingError(f"token_budget and max_batch must be positive, got {token_budget}, {max_batch}")
        self.st, self.precision = st, precision
        self.token_budget, self.max_batch = token_budget, max_batch
        self.device = st.device
        tokenizer = st.tokenizer.backend_tokenizer
        from tokenizers import Tokenizer

        # A private copy for length counting: the model's own may be in use elsewhere (not thread-safe).
        self._counter = Tokenizer.from_str(tokenizer.to_str())
        self._counter.no_padding()
        self._counter.enable_truncation(max_length=int(st.max_seq_length))
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="longvec-preprocess")

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The autocast context for this engine's precision (a no-op for fp32)."""
        import torch

        dtype = autocast_dtype(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def lengths(self, texts: list[str], prompt: str) -> list[int]:
        """Tokens the model reads for each text after ``prompt`` (truncated at its limit)."""
        self._counter.enable_truncation(max_length=int(self.st.max_seq_length))
        return [len(e.ids) for e in self._counter.encode_batch([prompt + t for t in texts] if prompt else texts)]

    def batches(self, lengths: list[int]) -> list[list[int]]:
        """Indices of the texts, longest first, cut into batches of at most ``token_budget`` padded tokens and
        ``max_batch`` texts (a text longer than the budget gets a batch of its own)."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        out: list[list[int]] = []
        for i in order:
            # Sorted longest first: the batch's padded width is its first text's length.
            if out and len(out[-1]) < self.max_batch and (len(out[-1]) + 1) * lengths[out[-1][0]] <= self.token_budget:
                out[-1].append(i)
            else:
                out.append([i])
        return out

    def encode(self, texts: list[str], prompt: str) -> np.ndarray:
        """Pooled vectors ``(n, dim)`` float32, as the model outputs them (not normalised by this call)."""
        import torch

        if not texts:
            return np.zeros((0, int(self.st.get_embedding_dimension())), np.float32)
        batches = self.batches(self.lengths(texts, prompt))
        out: np.ndarray | None = None
        self.st.eval()
        with torch.inference_mode(), self.autocast():
            for idx, features in self._prepared(texts, prompt, batches):
                emb = self.st(features)["sentence_embedding"].float().cpu().numpy()
                if out is None:
                    out = np.empty((len(texts), emb.shape[1]), np.float32)
                out[idx] = emb
        assert out is not None
        return out

    def _prepared(
        self, texts: list[str], prompt: str, batches: list[list[int]]
    ) -> Iterator[tuple[list[int], dict[str, Any]]]:
        """Each batch's indices and model inputs on the device, the next batch tokenised while this one runs."""
        from sentence_transformers.util import batch_to_device

        def prepare(idx: list[int]) -> dict[str, Any]:
            # An explicit prompt ("" included) also stops sentence-transformers from adding a default prompt.
            return self.st.preprocess([texts[i] for i in idx], prompt=prompt)

        pending = self._pool.submit(prepare, batches[0])
        for k, idx in enumerate(batches):
            features = pending.result()
            if k + 1 < len(batches):
                pending = self._pool.submit(prepare, batches[k + 1])
            yield idx, batch_to_device(features, self.device)

    def close(self) -> None:
        self._pool.shutdown(wait=False)


# -- choosing a precision ---------------------------------------------------------------------------------


def candidates(device: str, flags: frozenset[str] | None = None) -> list[Precision]:
    """Low precisions worth a trial on ``device``, best first."""
    if device.startswith("cuda"):
        import torch

        return ["bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp16"]
    if device == "cpu":
        flags = cpu_flags() if flags is None else flags
        return ["bf16"] if any(f in flags for f in BF16_CPU_FLAGS) else []
    return []


def trial_texts(n: int = 32) -> list[str]:
    """Texts for the precision trial: pieces of this package's own source, of mixed lengths (deterministic
    for a given longvec version, and code and prose both, like what longvec indexes)."""
    here = Path(__file__).resolve().parent
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(here.glob("*.py")))
    lines = [line for line in text.splitlines() if line.strip()]
    out, pos = [], 0
    for k in range(n):
        size = 4 + (k * 7) % 40  # 4 to 43 lines
        out.append("\n".join(lines[pos : pos + size]))
        pos = (pos + size) % max(1, len(lines) - 50)
    return out


def trial(st: SentenceTransformer, options: list[Precision], texts: list[str], rounds: int = 2) -> list[Trial]:
    """Each of ``options`` timed against fp32 on ``texts`` (best of ``rounds``, the precisions interleaved so
    that a noisy moment hits them alike) and compared with fp32's vectors."""
    engines = {p: Engine(st, precision=p) for p in ("fp32", *options)}
    best = dict.fromkeys(engines, float("inf"))
    vectors: dict[str, np.ndarray] = {}
    try:
        for engine in engines.values():
            engine.encode(texts[:4], "")  # warm-up: kernels, autocast caches
        for _ in range(rounds):
            for p, engine in engines.items():
                start = time.perf_counter()
                vectors[p] = engine.encode(texts, "")
                best[p] = min(best[p], time.perf_counter() - start)
        tokens = sum(engines["fp32"].lengths(texts, ""))
    finally:
        for engine in engines.values():
            engine.close()
    out = [Trial("fp32", tokens / best["fp32"], 1.0, 1.0, 1.0)]
    for p in options:
        cos = _cosines(vectors[p], vectors["fp32"])
        out.append(Trial(p, tokens / best[p], float(cos.mean()), float(cos.min()), best["fp32"] / best[p]))
    return out


def choose_precision(st: SentenceTransformer, model_id: str, cache_dir: Path | None) -> tuple[Precision, dict]:
    """The precision ``auto`` means for this model on this machine, and the trial that decided it.

    A candidate is chosen only if it passes the parity gate and is at least ``MIN_SPEEDUP`` times as fast as
    fp32 here. The outcome is cached in ``cache_dir``, keyed by the model (``model_id`` and its architecture:
    long-context patches share their model's outcome), device, CPU and torch version; ``None``: no cache.
    """
    import torch

    device = st.device.type
    options = candidates(device)
    if not options:
        return "fp32", {"precision": "fp32", "reason": f"no low precision with native support on {device}"}
    key = _cache_key(st, model_id)
    cached = _read_cache(cache_dir, key)
    if cached is not None:
        return cached["precision"], cached
    trials = trial(st, options, trial_texts())
    passing = [t for t in trials[1:] if t.mean_cosine >= PARITY_MIN_COSINE and t.speedup >= MIN_SPEEDUP]
    best = max(passing, key=lambda t: t.speedup, default=None)
    report = {
        "precision": best.precision if best else "fp32",
        "device": device,
        "machine": _machine(device),
        "torch": torch.__version__,
        "trials": [t.__dict__ for t in trials],
    }
    _write_cache(cache_dir, key, report)
    return report["precision"], report


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    b = b / np.maximum(np.linalg.norm(b, axis=1, keepdims=True), 1e-12)
    return np.sum(a * b, axis=1)


def _machine(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    flags = ",".join(sorted(cpu_flags() & {*BF16_CPU_FLAGS, "amx_tile", "avx512f", "avx2"}))
    return f"{cpu_name()} [{flags}] x{os.cpu_count()}"


_ARCH_KEYS = ("architectures", "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads")


def _cache_key(st: SentenceTransformer, model_id: str) -> str:
    import torch

    config = st[0].auto_model.config.to_dict()
    arch = {k: config.get(k) for k in _ARCH_KEYS}
    raw = json.dumps([model_id, arch, st.device.type, _machine(st.device.type), torch.__version__], sort_keys=True)
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _read_cache(cache_dir: Path | None, key: str) -> dict | None:
    if cache_dir is None:
        return None
    try:
        data = json.loads((cache_dir / f"precision-{key}.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("precision") in PRECISIONS else None


_WRITE_LOCK = threading.Lock()


def _write_cache(cache_dir: Path | None, key: str, report: dict) -> None:
    if cache_dir is None:
        return
    with _WRITE_LOCK, contextlib.suppress(OSError):  # a cache that cannot be written only costs a re-trial
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".precision-{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(report, indent=1))
        os.replace(tmp, cache_dir / f"precision-{key}.json")
