"""The encode engine: how a loaded sentence-transformers model turns texts into vectors fast.

- **Batches by a token budget.** Texts are tokenised once (the model's fast tokenizer, truncated as the
  model truncates), sorted by length and cut into batches of at most ``token_budget`` padded tokens (and
  ``max_batch`` texts): short chunks go many to a batch, long ones few, and padding stays within a batch of
  near-equal lengths. The next batch is prepared (``SentenceTransformer.preprocess``) on a helper thread
  while the model runs the current one.
- **Backend and precision.** torch at ``fp32``, or ``bf16`` / ``fp16`` as ``torch.autocast`` around the forward
  pass (weights stay fp32; matrix products run in the low precision, where the time goes on CPUs with AMX or
  AVX-512 BF16); or OpenVINO (:class:`OpenVinoForward`, CPU only) at fp32 or bf16. ``auto`` picks per model and
  machine (:func:`choose`): a timed trial of torch fp32 against what the hardware runs natively, taking a
  candidate only if it is at least ``MIN_SPEEDUP`` times as fast and keeps the parity gate (mean cosine to
  torch fp32 >= ``PARITY_MIN_COSINE``). The outcome is cached per model and machine, so it runs once.
- **Threads.** On the CPU the model runs ``threads`` threads (torch's intra-op pool, OpenVINO's
  ``INFERENCE_NUM_THREADS``): by default torch's own default capped by :func:`cpu_threads`, the CPUs this process
  may really use (its affinity mask and a container's CPU quota, which torch does not read: a 2-CPU container on a
  64-core host would otherwise run 64 threads on 2 CPUs). Tokenising the next batch overlaps the forward pass on
  one helper thread; ``benchmarks/encode_bench.py`` measures what that and each other choice here is worth.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import platform
import threading
import time
import warnings
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from longvec.embedder.errors import InvalidSettingError
from longvec.embedder.matryoshka import normalize

if TYPE_CHECKING:
    import torch
    from sentence_transformers import SentenceTransformer

_log = logging.getLogger("longvec.embedder")

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("auto", "fp32", "bf16", "fp16")
Backend = Literal["auto", "torch", "openvino"]
BACKENDS: tuple[Backend, ...] = ("auto", "torch", "openvino")
# The parity gate a low precision must pass against fp32 on the same texts (mean cosine).
PARITY_MIN_COSINE = 0.999
# Padded tokens per batch, by backend and device (benchmarks/encode_bench.py on a 2-core AMX Xeon: torch bf16 ran
# 15.3k tok/s at 2,048 tokens, 13.5k at 4,096, 13.4k at 8,192, 12.8k at 16,384; OpenVINO bf16 in throughput
# mode 19.2k at 1,024 and 2,048, 20.8k at 4,096, 20.6k at 8,192). A GPU wants large batches.
TOKEN_BUDGETS = {"cpu": 2048, "openvino": 4096, "cuda": 32768}


def default_token_budget(device: str, backend: str = "torch") -> int:
    if backend == "openvino":
        return TOKEN_BUDGETS["openvino"]
    return TOKEN_BUDGETS.get(device.split(":")[0], TOKEN_BUDGETS["cpu"])


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


def cpu_threads(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may run on: its affinity mask, capped by a cgroup v2 CPU quota (``cpu.max``)."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]
        if quota != "max":
            n = min(n, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return n


_TORCH_THREADS: list[int] = []  # torch's own default, read before any engine changes it


def _torch_default_threads() -> int:
    import torch

    if not _TORCH_THREADS:
        _TORCH_THREADS.append(torch.get_num_threads())
    return _TORCH_THREADS[0]


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


def layer_stack(st: SentenceTransformer) -> tuple[Any, str, Any]:
    """``(parent, attribute, module list)`` of the transformer's layers: the ``ModuleList`` of
    ``num_hidden_layers`` blocks (``encoder.layer`` in BERT, ``layers`` in ModernBERT...)."""
    import torch

    model = st[0].auto_model
    n = getattr(model.config, "num_hidden_layers", None)
    found = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.ModuleList) and n and len(module) == n
    ]
    found.sort(key=lambda f: not f[0].rsplit(".", 1)[-1].startswith("layer"))  # `layer` / `layers` first
    if not found:
        raise InvalidSettingError("cannot find this model's transformer layers (a ModuleList of num_hidden_layers)")
    name, module = found[0]
    parent_name, _, attribute = name.rpartition(".")
    return model.get_submodule(parent_name) if parent_name else model, attribute, module


def layer_count(st: SentenceTransformer) -> int | None:
    """Transformer layers the model has (``num_hidden_layers``); ``None`` where they cannot be found (shared
    layers as in ALBERT, custom code): such a model runs whole, with no depth choice."""
    try:
        return len(layer_stack(st)[2])
    except InvalidSettingError:
        return None


@contextlib.contextmanager
def shallow(st: SentenceTransformer, layers: int | None) -> Iterator[None]:
    """Within the block, ``st`` runs only its first ``layers`` transformer layers; the last of them feeds the
    model's own final steps (pooling, dense, normalise) as the last layer does (2D Matryoshka's depth axis).
    ``None``: all layers. Not thread-safe: callers serialise encodes (``Embedder`` holds a lock)."""
    if layers is None:
        yield
        return
    import torch

    parent, attribute, full = layer_stack(st)
    setattr(parent, attribute, torch.nn.ModuleList(list(full)[:layers]))
    try:
        yield
    finally:
        setattr(parent, attribute, full)


@dataclass(frozen=True)
class Trial:
    """How a backend at a precision did against torch fp32 on the trial texts."""

    backend: Backend
    precision: Precision
    tokens_per_s: float
    mean_cosine: float
    min_cosine: float
    speedup: float


class OpenVinoForward:
    """The whole sentence-transformers forward pass (transformer, pooling, dense layers...) as an OpenVINO model
    on the CPU, converted from the loaded torch model (so long-context patches are in it) and saved as IR under
    ``cache`` (a path without suffix; ``None``: convert every time). ``precision`` is OpenVINO's inference
    precision hint (its kernels pick bf16 on CPUs with AMX / AVX-512 BF16 only when told)."""

    def __init__(self, st: SentenceTransformer, precision: Precision, cache: Path | None, threads: int) -> None:
        try:
            import openvino as ov
        except ImportError:
            raise InvalidSettingError("the openvino backend needs OpenVINO: pip install 'longvec[openvino]'") from None
        import torch

        if precision not in ("fp32", "bf16"):
            raise InvalidSettingError(f"the openvino backend runs fp32 or bf16, not {precision}")
        sample = st.preprocess(["a b c d", "e"], prompt="")
        self.names = [k for k in _MODEL_INPUTS if isinstance(sample.get(k), torch.Tensor)]
        core = ov.Core()
        xml = cache.with_suffix(".xml") if cache is not None else None
        model = None
        if xml is not None and xml.exists():
            try:
                model = core.read_model(xml)
            except Exception as exc:  # a damaged cache costs a conversion, not the backend
                _log.warning("longvec: cached OpenVINO model %s unreadable, converting again: %s", xml, exc)
        if model is None:
            module = _forward_module(st, self.names).eval()
            with warnings.catch_warnings():  # tracer warnings about shape checks that hold for every input
                warnings.simplefilter("ignore")
                model = ov.convert_model(module, example_input=tuple(sample[k] for k in self.names))
            if xml is not None:
                with contextlib.suppress(OSError):  # a cache that cannot be written only costs a conversion
                    xml.parent.mkdir(parents=True, exist_ok=True)
                    tmp = xml.with_name(f".{xml.stem}.{os.getpid()}.xml")
                    ov.save_model(model, tmp, compress_to_fp16=False)  # fp16 weights would break fp32 parity
                    os.replace(tmp.with_suffix(".bin"), xml.with_suffix(".bin"))
                    os.replace(tmp, xml)
        hint = {"fp32": "f32", "bf16": "bf16"}[precision]
        common = {"INFERENCE_PRECISION_HINT": hint, "INFERENCE_NUM_THREADS": threads}
        # Many batches run in throughput mode: the cores split into streams, each on its own batch, fed by an
        # async queue (measured ~1.4x the latency mode on 2 cores); a single batch (a query) in latency mode,
        # all cores on it.
        self.latency = core.compile_model(model, "CPU", common | {"PERFORMANCE_HINT": "LATENCY"})
        self.compiled = core.compile_model(model, "CPU", common | {"PERFORMANCE_HINT": "THROUGHPUT"})
        self.requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))

    def run(self, batches: Iterator[tuple[list[int], dict[str, Any]]], out: np.ndarray, n_batches: int) -> None:
        """Run every ``(indices, features)`` batch, ``requests`` at a time, writing rows ``indices`` of ``out``."""
        import openvino as ov

        if n_batches == 1:
            ((idx, features),) = batches
            out[idx] = self.latency([features[k].numpy() for k in self.names])[0]
            return
        queue = ov.AsyncInferQueue(self.compiled, self.requests)
        errors: list[BaseException] = []

        def done(request: Any, idx: list[int]) -> None:
            try:
                out[idx] = request.get_output_tensor(0).data
            except BaseException as exc:  # raised again in the caller's thread
                errors.append(exc)

        queue.set_callback(done)
        for idx, features in batches:
            queue.start_async([np.ascontiguousarray(features[k].numpy()) for k in self.names], idx)
        queue.wait_all()
        if errors:
            raise errors[0]


# Tensor inputs a sentence-transformers text model takes, in the order the converted model takes them.
_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "position_ids")


def _forward_module(st: SentenceTransformer, names: list[str]) -> Any:
    """``st``'s forward pass as a module of positional tensors (``names``) returning the sentence embedding."""
    import torch

    class Forward(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.st = st

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.st(dict(zip(names, tensors, strict=True)))["sentence_embedding"]

    return Forward()


class PackedForward:
    """Padding-free packing (Prepacking): several texts share one row of the batch, each attending only to
    itself (a block-diagonal attention mask) with its own position ids from 0, so a row holds no padding but its
    tail. The transformer's token outputs are then cut back into one padded row per text and pooled by the
    model's own modules after the transformer (pooling, dense, normalise), as sentence-transformers pools them.

    Needs a model whose transformer takes ``position_ids`` and a 4-D attention mask (BERT and most encoders in
    transformers); :meth:`check` compares packed with unpacked outputs and raises where they differ.
    """

    def __init__(self, st: SentenceTransformer) -> None:
        first = st[0]
        if not hasattr(first, "auto_model") or len(st) < 2:
            raise InvalidSettingError("packing needs a sentence-transformers model of a transformer and a pooling")
        self.model, self.after = first.auto_model, [st[k] for k in range(1, len(st))]
        # A pooling that leaves the prompt's tokens out needs the prompt's length, which packing does not track.
        self.pools_prompt = all(getattr(m, "include_prompt", True) for m in self.after)
        self.pad = int(getattr(self.model.config, "pad_token_id", None) or 0)

    def batches(
        self, tokens: list[list[int]], token_budget: int, max_batch: int
    ) -> Iterator[tuple[list[int], list[list[int]]]]:
        """``(indices, rows)`` per batch: texts longest first into rows as wide as the longest text (first fit),
        at most ``token_budget`` row tokens and ``max_batch`` texts a batch; ``rows`` lists each row's texts."""
        order = sorted(range(len(tokens)), key=lambda i: -len(tokens[i]))
        width = len(tokens[order[0]])
        per_batch = max(1, token_budget // width)
        rows: list[list[int]] = []
        free: list[int] = []
        for i in order:  # first fit decreasing
            n = len(tokens[i])
            k = next((r for r, room in enumerate(free) if room >= n), None)
            if k is None:
                rows.append([])
                free.append(width)
                k = len(rows) - 1
            rows[k].append(i)
            free[k] -= n
        batch: list[list[int]] = []
        for row in rows:
            if batch and (len(batch) >= per_batch or sum(map(len, batch)) + len(row) > max_batch):
                yield [i for r in batch for i in r], batch
                batch = []
            batch.append(row)
        if batch:
            yield [i for r in batch for i in r], batch

    def forward(self, tokens: list[list[int]], rows: list[list[int]], device: torch.device) -> torch.Tensor:
        """Sentence embeddings of the texts of ``rows`` (indices into ``tokens``, in row order), from one packed
        forward pass."""
        import torch

        width = max(sum(len(tokens[i]) for i in row) for row in rows)
        ids = torch.full((len(rows), width), self.pad, dtype=torch.long)
        positions = torch.zeros((len(rows), width), dtype=torch.long)
        segment = torch.full((len(rows), width), -1, dtype=torch.long)  # padding: a segment of its own
        spans: list[tuple[int, int, int]] = []  # (row, start, length) per text
        for r, row in enumerate(rows):
            at = 0
            for k, i in enumerate(row):
                n = len(tokens[i])
                ids[r, at : at + n] = torch.tensor(tokens[i])
                positions[r, at : at + n] = torch.arange(n)
                segment[r, at : at + n] = k
                spans.append((r, at, n))
                at += n
        mask = (segment[:, :, None] == segment[:, None, :])[:, None]  # (rows, 1, width, width)
        hidden = self.model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            token_type_ids=torch.zeros_like(ids).to(device),
        ).last_hidden_state
        longest = max(n for _, _, n in spans)
        embeddings = hidden.new_zeros((len(spans), longest, hidden.shape[-1]))
        attention = torch.zeros((len(spans), longest), dtype=torch.long, device=device)
        for j, (r, at, n) in enumerate(spans):
            embeddings[j, :n] = hidden[r, at : at + n]
            attention[j, :n] = 1
        features: dict[str, Any] = {"token_embeddings": embeddings, "attention_mask": attention}
        for module in self.after:
            features = module(features)
        return features["sentence_embedding"]


class Engine:
    """Encodes texts with ``st`` on one backend at one precision; not thread-safe (callers hold a lock).

    ``backend`` ``torch`` runs the model as loaded (autocast for bf16/fp16); ``openvino`` runs a converted
    copy (CPU only; ``openvino_cache``: where its IR is kept, see :class:`OpenVinoForward`). ``threads`` (CPU
    only; ``None``: torch's default capped by :func:`cpu_threads`) sets torch's intra-op pool, which is
    process-wide, and OpenVINO's threads. ``packing`` (torch only) runs :class:`PackedForward` instead of
    length-sorted padded batches. ``layers`` runs only the first that many transformer layers (see
    :func:`shallow`; ``None``: all); an OpenVINO engine converts the model at that depth.
    """

    def __init__(
        self,
        st: SentenceTransformer,
        *,
        precision: Precision = "fp32",
        backend: Backend = "torch",
        token_budget: int | None = None,
        max_batch: int = 256,
        openvino_cache: Path | None = None,
        threads: int | None = None,
        packing: bool = False,
        layers: int | None = None,
    ) -> None:
        import torch

        if precision not in PRECISIONS or precision == "auto":
            raise InvalidSettingError(f"engine precision must be one of fp32/bf16/fp16, got {precision!r}")
        if backend not in BACKENDS or backend == "auto":
            raise InvalidSettingError(f"engine backend must be torch or openvino, got {backend!r}")
        token_budget = token_budget or default_token_budget(st.device.type, backend)
        if token_budget < 1 or max_batch < 1:
            raise InvalidSettingError(f"token_budget and max_batch must be positive, got {token_budget}, {max_batch}")
        self.st, self.precision, self.backend = st, precision, backend
        self.token_budget, self.max_batch = token_budget, max_batch
        self.device = st.device
        if precision == "fp16" and self.device.type == "cpu":
            raise InvalidSettingError("fp16 runs on CUDA only (on a CPU, use bf16 or fp32)")
        if backend == "openvino" and self.device.type != "cpu":
            raise InvalidSettingError(f"the openvino backend runs on the CPU, not {self.device}")
        if packing and backend != "torch":
            raise InvalidSettingError("packing runs on the torch backend only")
        total = layer_count(st) if layers is not None else None
        if layers is not None and (total is None or not 1 <= layers <= total):
            limit = "no layer choice" if total is None else f"layers in [1, {total}]"
            raise InvalidSettingError(f"this model takes {limit}, got layers {layers}")
        self.layers = None if layers == total else layers
        if threads is not None and threads < 1:
            raise InvalidSettingError(f"threads must be positive, got {threads}")
        self.threads = threads or min(_torch_default_threads(), cpu_threads())
        if self.device.type == "cpu" and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        with shallow(st, self.layers):  # a converted model keeps the depth it was converted at
            self._openvino = (
                OpenVinoForward(st, precision, openvino_cache, self.threads) if backend == "openvino" else None
            )
        tokenizer = st.tokenizer.backend_tokenizer
        from tokenizers import Tokenizer

        # A private copy for length counting: the model's own may be in use elsewhere (not thread-safe).
        self._counter = Tokenizer.from_str(tokenizer.to_str())
        self._counter.no_padding()
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="longvec-preprocess")
        self._packed = PackedForward(st) if packing else None
        self.packing = packing

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """The torch autocast context for this engine's precision (a no-op for fp32)."""
        import torch

        dtype = autocast_dtype(self.precision)
        if dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def lengths(self, texts: list[str], prompt: str) -> list[int]:
        """Tokens the model reads for each text after ``prompt`` (truncated at its current limit)."""
        return [len(ids) for ids in self._tokens(texts, prompt)]

    def _tokens(self, texts: list[str], prompt: str) -> list[list[int]]:
        """Token ids the model reads for each text (``prompt`` first, special tokens, truncated at its limit)."""
        self._counter.enable_truncation(max_length=int(self.st.max_seq_length))
        return [e.ids for e in self._counter.encode_batch([prompt + t for t in texts] if prompt else texts)]

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

        out = np.empty((len(texts), int(self.st.get_embedding_dimension())), np.float32)
        if not texts:
            return out
        if self._packed is not None:
            if prompt and not self._packed.pools_prompt:
                raise InvalidSettingError("packing cannot run a model whose pooling leaves the prompt out")
            self.st.eval()
            with torch.inference_mode(), self.autocast(), shallow(self.st, self.layers):
                tokens = self._tokens(texts, prompt)
                for idx, rows in self._packed.batches(tokens, self.token_budget, self.max_batch):
                    out[idx] = self._packed.forward(tokens, rows, self.device).float().cpu().numpy()
            return out
        batches = self.batches(self.lengths(texts, prompt))
        if self._openvino is not None:
            self._openvino.run(self._prepared(texts, prompt, batches), out, len(batches))
            return out
        self.st.eval()
        with torch.inference_mode(), self.autocast(), shallow(self.st, self.layers):
            for idx, features in self._prepared(texts, prompt, batches):
                out[idx] = self.st(features)["sentence_embedding"].float().cpu().numpy()
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


# -- choosing a backend and precision ---------------------------------------------------------------------


def candidates(device: str, flags: frozenset[str] | None = None) -> list[Precision]:
    """Low precisions worth a trial on ``device``, best first."""
    if device.startswith("cuda"):
        import torch

        return ["bf16", "fp16"] if torch.cuda.is_bf16_supported() else ["fp16"]
    if device == "cpu":
        flags = cpu_flags() if flags is None else flags
        return ["bf16"] if any(f in flags for f in BF16_CPU_FLAGS) else []
    return []


def openvino_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("openvino") is not None


def options(device: str, backend: Backend = "auto", precision: Precision = "auto") -> list[tuple[Backend, Precision]]:
    """The (backend, precision) pairs worth a trial on ``device`` besides torch fp32, restricted to the given
    backend and precision where they are not ``auto``."""
    low = candidates(device)
    pairs: list[tuple[Backend, Precision]] = [("torch", p) for p in low]
    if device == "cpu" and openvino_available():
        # OpenVINO fp32 is tried where no low precision runs natively (elsewhere bf16 outruns it) or where fp32
        # is asked for.
        ov = ["fp32"] if precision == "fp32" else [p for p in low if p == "bf16"] or ["fp32"]
        pairs += [("openvino", p) for p in ov]
    return [
        (b, p) for b, p in pairs if backend in ("auto", b) and precision in ("auto", p) and (b, p) != ("torch", "fp32")
    ]


def trial_texts(n: int = 160) -> list[str]:
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


def trial(
    st: SentenceTransformer,
    pairs: list[tuple[Backend, Precision]],
    texts: list[str],
    rounds: int = 2,
    openvino_cache: Path | None = None,
    threads: int | None = None,
) -> list[Trial]:
    """Torch fp32 and each of ``pairs`` timed on ``texts`` (best of ``rounds``, interleaved so that a noisy
    moment hits them alike) and compared with torch fp32's vectors. A pair that cannot run is left out."""
    engines: dict[tuple[Backend, Precision], Engine] = {}
    for b, p in [("torch", "fp32"), *pairs]:
        try:
            engine = Engine(st, backend=b, precision=p, openvino_cache=openvino_cache, threads=threads)
        except Exception as exc:  # a backend that fails to convert or load is not a candidate
            if (b, p) == ("torch", "fp32"):
                raise
            _log.warning("longvec: %s %s left out of the engine trial: %s", b, p, exc)
            continue
        engines[b, p] = engine
    best: dict[tuple[Backend, Precision], float] = {}
    vectors: dict[tuple[Backend, Precision], np.ndarray] = {}

    def attempt(pair: tuple[Backend, Precision], batch: list[str]) -> np.ndarray | None:
        try:
            return engines[pair].encode(batch, "")
        except Exception as exc:  # one that fails to run is not a candidate either
            if pair == ("torch", "fp32"):
                raise
            _log.warning("longvec: %s %s left out of the engine trial: %s", *pair, exc)
            engines.pop(pair).close()
            return None

    try:
        for pair in list(engines):
            attempt(pair, texts[:4])  # warm-up: kernels, autocast caches, compiled graphs
        for _ in range(rounds):
            for pair in list(engines):
                start = time.perf_counter()
                if (got := attempt(pair, texts)) is not None:
                    vectors[pair] = got
                    best[pair] = min(best.get(pair, float("inf")), time.perf_counter() - start)
        tokens = sum(engines["torch", "fp32"].lengths(texts, ""))
    finally:
        for engine in engines.values():
            engine.close()
    best = {pair: seconds for pair, seconds in best.items() if pair in engines}
    base, reference = best["torch", "fp32"], vectors["torch", "fp32"]
    out = []
    for (b, p), seconds in best.items():
        cos = cosines(vectors[b, p], reference)
        out.append(Trial(b, p, tokens / seconds, float(cos.mean()), float(cos.min()), base / seconds))
    return out


def choose(
    st: SentenceTransformer,
    model_id: str,
    cache_dir: Path | None,
    *,
    backend: Backend = "auto",
    precision: Precision = "auto",
    openvino_cache: Path | None = None,
    threads: int | None = None,
) -> tuple[Backend, Precision, dict[str, Any]]:
    """The backend and precision ``auto`` means for this model on this machine, and the trial that decided.

    A pair other than torch fp32 is chosen only if it passes the parity gate and is at least ``MIN_SPEEDUP``
    times as fast as torch fp32 here. The outcome is cached in ``cache_dir``, keyed by the model (``model_id``
    and its architecture: long-context patches share their model's outcome), device, machine and library
    versions; ``None``: no cache. The trial runs with ``threads`` (see :class:`Engine`).
    """
    import torch

    device = st.device.type
    pairs = options(device, backend, precision)
    fallback: tuple[Backend, Precision] = (
        "torch" if backend == "auto" else backend,
        "fp32" if precision == "auto" else precision,
    )
    if not pairs:
        reason = f"nothing besides {fallback[0]} {fallback[1]} to try on {device}"
        return *fallback, {"backend": fallback[0], "precision": fallback[1], "reason": reason}
    key = _cache_key(st, model_id, pairs, (backend, precision, threads))
    cached = _read_cache(cache_dir, key)
    if cached is not None:
        return cached["backend"], cached["precision"], cached
    trials = trial(st, pairs, trial_texts(), openvino_cache=openvino_cache, threads=threads)
    passing = [
        t
        for t in trials
        if (t.backend, t.precision) in pairs and t.mean_cosine >= PARITY_MIN_COSINE and t.speedup >= MIN_SPEEDUP
    ]
    best = max(passing, key=lambda t: t.speedup, default=None)
    chosen = (best.backend, best.precision) if best else fallback
    report = {
        "backend": chosen[0],
        "precision": chosen[1],
        "device": device,
        "machine": _machine(device),
        "torch": torch.__version__,
        "trials": [t.__dict__ for t in trials],
    }
    if {(t.backend, t.precision) for t in trials} >= set(pairs):  # one that failed gets another try next time
        _write_cache(cache_dir, key, report)
    return chosen[0], chosen[1], report


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two arrays of vectors."""
    return np.sum(normalize(a) * normalize(b), axis=1)


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def _machine(device: str) -> str:
    import torch

    if device == "cuda":
        return torch.cuda.get_device_name()
    flags = ",".join(sorted(cpu_flags() & {*BF16_CPU_FLAGS, "amx_tile", "avx512f", "avx2"}))
    return f"{cpu_name()} [{flags}] x{os.cpu_count()}"


# Part of a trial record's key: bump when the trial itself changes (its texts, rounds, candidates), so records of
# an older trial are not reused.
TRIAL_VERSION = 3
_ARCH_KEYS = ("architectures", "model_type", "hidden_size", "num_hidden_layers", "num_attention_heads")


def _cache_key(
    st: SentenceTransformer, model_id: str, pairs: list[tuple[Backend, Precision]], asked: tuple[Any, ...]
) -> str:
    import torch

    config = st[0].auto_model.config.to_dict()
    arch = {k: config.get(k) for k in _ARCH_KEYS}
    versions = [torch.__version__, _version("openvino") if any(b == "openvino" for b, _ in pairs) else None]
    raw = json.dumps(
        [TRIAL_VERSION, model_id, arch, st.device.type, _machine(st.device.type), versions, pairs, asked],
        sort_keys=True,
    )
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def _read_cache(cache_dir: Path | None, key: str) -> dict | None:
    if cache_dir is None:
        return None
    try:
        data = json.loads((cache_dir / f"precision-{key}.json").read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(data, dict) and data.get("precision") in PRECISIONS and data.get("backend") in BACKENDS
    return data if ok else None


_WRITE_LOCK = threading.Lock()


def _write_cache(cache_dir: Path | None, key: str, report: dict) -> None:
    if cache_dir is None:
        return
    with _WRITE_LOCK, contextlib.suppress(OSError):  # a cache that cannot be written only costs a re-trial
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".precision-{key}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(report, indent=1))
        os.replace(tmp, cache_dir / f"precision-{key}.json")
