"""Training-free long context for encoders with learned absolute positions (BERT family), and TempScale.

Position interpolation grows the model's position table from ``L`` rows to ``target`` rows, so inputs up to
``target`` tokens fit (LongEmbed, arXiv 2404.12096). Three ways to fill the new table, all of which touch only
that table:

- ``linear``: row ``p`` is the linear blend of the old table at ``p * (L - 1) / (target - 1)`` (the first
  and last rows stay first and last, row ``i`` lands near ``i * target / L``). Every position moves, so short
  inputs change too.
- ``keep``: rows ``[0, keep)`` -- the trained window -- stay as they are, and only the rows past it are
  stretched over the new length (Long-CLIP's knowledge-preserving stretching). Inputs of at most ``keep``
  tokens encode exactly as before.
- ``group``: rows ``[0, keep)`` stay; past them, ``g`` consecutive positions share one old row
  (``keep + (p - keep) // g``: grouped positions, as SelfExtend does for RoPE).

Rotary encoders (ModernBERT and other transformers modules that keep ``inv_freq`` buffers) extend through their
frequencies instead: ``linear`` interpolation, NTK-aware base scaling (``keep``), or SelfExtend (``group``,
arXiv 2401.01325): tokens closer than a neighbour window attend with their true relative positions, farther
ones with positions divided by a group size, so no relative distance leaves the trained range.

TempScale (arXiv 2410.24200): long inputs' embeddings collapse into a narrow cone; dividing every
self-attention's logits by a temperature ``tau < 1`` sharpens attention again. It goes through the attention
modules' own ``scaling`` (which transformers passes to SDPA as ``scale``), so no attention matrix is ever
materialised that SDPA would not have made anyway. ``length_scaled`` adds LongEmbed's length-aware factor
``max(1, ln n / ln trained)`` for a batch whose longest input has ``n`` tokens.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from longvec.embedder.errors import InvalidSettingError

if TYPE_CHECKING:
    import torch

PositionMode = Literal["linear", "keep", "group"]
POSITION_MODES: tuple[PositionMode, ...] = ("linear", "keep", "group")
MAX_EXTEND = 32768  # the longest position table longvec builds (LongEmbed's longest synthetic length)


def interpolated_table(table: torch.Tensor, target: int, mode: PositionMode = "keep", keep: int = 0) -> torch.Tensor:
    """A ``(target, d)`` position table grown from ``table`` (``(L, d)``) by ``mode`` (see the module docs).

    ``keep`` (``keep`` and ``group`` modes) is how many leading rows stay exactly as trained; it must leave at
    least one row to stretch (``0 <= keep < L``).
    """
    import torch

    n = table.shape[0]
    if mode not in POSITION_MODES:
        raise InvalidSettingError(f"position mode {mode!r} not in {POSITION_MODES}")
    if target < n:
        raise InvalidSettingError(f"cannot extend a {n}-row position table to fewer rows ({target})")
    keep = 0 if mode == "linear" else keep
    if not 0 <= keep < n:
        raise InvalidSettingError(f"keep must be in [0, {n}) for a {n}-row position table, got {keep}")
    old = table.detach().to(torch.float32)
    p = torch.arange(keep, target, dtype=torch.float64)
    if mode == "group":
        group = math.ceil((target - keep) / (n - keep))
        rows = old[keep + torch.div(p - keep, group, rounding_mode="floor").long()]
    else:
        # old coordinate of new row p: row keep stays at keep, the last row lands on the last row
        x = keep + (p - keep) * (n - 1 - keep) / max(target - 1 - keep, 1)
        x = x.clamp(max=n - 1)
        lo = x.floor().long()
        hi = (lo + 1).clamp(max=n - 1)
        w = (x - lo).to(torch.float32).unsqueeze(1)
        rows = old[lo] * (1 - w) + old[hi] * w
    return torch.cat([old[:keep], rows]).to(table.dtype)


def position_offset(model: Any) -> int:
    """Rows before the first position of the table: RoBERTa-style encoders (RoBERTa, XLM-R, MPNet) number
    positions from ``padding_idx + 1``, so their first ``padding_idx + 1`` rows are not positions."""
    table = position_table(model)
    return 0 if table.padding_idx is None else int(table.padding_idx) + 1


def usable_positions(model: Any) -> int:
    """How many input tokens the position table can number."""
    return position_table(model).num_embeddings - position_offset(model)


def has_position_table(model: Any) -> bool:
    import torch

    return isinstance(getattr(getattr(model, "embeddings", None), "position_embeddings", None), torch.nn.Embedding)


def position_table(model: Any) -> torch.nn.Embedding:
    """The learned absolute position table of a transformers encoder (``embeddings.position_embeddings``)."""
    import torch

    embeddings = getattr(model, "embeddings", None)
    table = getattr(embeddings, "position_embeddings", None)
    if not isinstance(table, torch.nn.Embedding):
        raise InvalidSettingError(
            f"{type(model).__name__} has no learned absolute position table (embeddings.position_embeddings): "
            "position interpolation applies to BERT-family encoders; rotary models extend through their "
            "rope_scaling config instead"
        )
    return table


def extend_positions(model: Any, target: int, mode: PositionMode = "keep", keep: int = 0) -> None:
    """Grow ``model``'s position table in place to number ``target`` tokens (see :func:`interpolated_table`),
    with the buffers sized by it (BERT's ``position_ids`` and ``token_type_ids``) and
    ``config.max_position_embeddings``; a RoBERTa-style table keeps its leading non-position rows."""
    import torch

    if not 1 <= target <= MAX_EXTEND:
        raise InvalidSettingError(f"extend_to must be in [1, {MAX_EXTEND}], got {target}")
    table = position_table(model)
    offset = position_offset(model)  # rows before the positions (RoBERTa-style): copied, never interpolated
    old = table.weight.detach()
    weight = torch.cat([old[:offset], interpolated_table(old[offset:], target, mode, keep)])
    grown = torch.nn.Embedding(offset + target, weight.shape[1], padding_idx=table.padding_idx)
    grown.weight = torch.nn.Parameter(weight.to(table.weight.device), requires_grad=False)
    model.embeddings.position_embeddings = grown
    ids = torch.arange(offset + target, device=table.weight.device).expand((1, -1))
    for name, value in (("position_ids", ids), ("token_type_ids", torch.zeros_like(ids))):
        if isinstance(getattr(model.embeddings, name, None), torch.Tensor):
            setattr(model.embeddings, name, value)  # assigning a tensor to a registered buffer replaces it
    model.config.max_position_embeddings = offset + target


def rotary_buffers(model: Any) -> list[tuple[Any, str]]:
    """``(module, buffer name)`` of the rotary inverse-frequency buffers that long inputs need stretched:
    ``inv_freq`` and ``*_inv_freq``, but not a copy kept as ``*original*`` nor those of sliding-window
    (local) layers, which never see more than their window whatever the input's length."""
    skip = ("original", "sliding", "local")
    found = []
    for m in model.modules():
        for name, _ in m.named_buffers(recurse=False):
            if name.endswith("inv_freq") and not any(word in name for word in skip):
                found.append((m, name))
    return found


def extend_rope(model: Any, factor: float, mode: PositionMode = "keep") -> None:
    """Stretch a rotary encoder's positions by ``factor`` in place: ``linear`` divides every frequency by it
    (position interpolation: position ``p * factor`` then encodes as ``p`` did); ``keep`` is NTK-aware scaling
    (the rotary base times ``factor ** (d / (d - 2))``): the highest frequency, which tells neighbours apart,
    stays as trained and the lowest is interpolated. ``factor`` 1 changes nothing."""
    import torch

    if mode == "group":
        raise InvalidSettingError("grouped rotary positions are SelfExtend: see self_extend")
    if not factor >= 1.0:
        raise InvalidSettingError(f"a rotary encoder can only be stretched (factor >= 1), got {factor}")
    buffers = rotary_buffers(model)
    if not buffers:
        raise InvalidSettingError(f"{type(model).__name__} has neither a position table nor rotary frequencies")
    for module, name in buffers:
        inv = getattr(module, name)
        if not hasattr(module, "_longvec_inv_freq"):
            module._longvec_inv_freq = {}
        base = module._longvec_inv_freq.setdefault(name, inv.detach().clone())
        if mode == "linear":
            new = base / factor
        else:
            half = base.shape[-1]
            i = torch.arange(half, dtype=torch.float64)
            new = (base.double() * factor ** (-2 * i / max(2 * half - 2, 1))).to(base.dtype)
        setattr(module, name, new.to(inv.device))


SELF_EXTEND = "longvec_self_extend"  # the transformers attention implementation SelfExtend registers
# The neighbour window of each SelfExtend-patched model, by its config (kept off the config: it would be saved)
_WINDOWS: dict[int, tuple[weakref.ref[Any], int]] = {}
_BLOCK_ELEMENTS = 1 << 22  # logits per query block in SelfExtend's attention (16 MiB in fp32)


def self_extend_group(trained: int, target: int, window: int) -> int:
    """The smallest group size that lets ``target`` tokens attend within ``trained`` relative positions with a
    neighbour window of ``window``: the largest distance, ``(target - 1) // g + window - window // g``, must
    stay under ``trained``."""
    if not 0 < window < trained:
        raise InvalidSettingError(f"the SelfExtend window must be in (0, {trained}), got {window}")
    g = 1
    while (target - 1) // g + window - window // g >= trained:
        g += 1
    return g


def self_extend_distances(n: int, window: int, group: int) -> torch.Tensor:
    """The ``(n, n)`` relative positions (query minus key) SelfExtend attends with over ``n`` tokens: the true
    ``i - j`` while ``|i - j| < window``, else the grouped ``i // g - j // g`` moved out by
    ``window - window // g`` (away from zero) so that distances keep growing across the window's edge."""
    import torch

    p = torch.arange(n)
    true = p[:, None] - p[None, :]
    grouped = (p // group)[:, None] - (p // group)[None, :]
    shift = window - window // group
    far = torch.where(true > 0, grouped + shift, grouped - shift)
    return torch.where(true.abs() < window, true, far)


def self_extend(model: Any, target: int, window: int | None = None) -> dict[str, int]:
    """Let a rotary encoder read ``target`` tokens by SelfExtend: its full-attention layers attend with
    :func:`self_extend_distances` (a neighbour ``window``, default half the trained length, and the group size
    that fits ``target``); sliding-window layers keep their window. Inputs of at most ``window`` tokens go
    through PyTorch's SDPA exactly as before; longer ones attend in blocks of queries (at most 2**22 logits at
    once) with a compact mask, so memory grows with the input's length, not its square (transformers' own masks
    would take ``16 n**2`` bytes to build). Assumes positions ``0..n-1`` (transformers' default when no
    ``position_ids`` are given). Returns the settings: ``trained``, ``window``, ``group``."""
    buffers = rotary_buffers(model)
    if len(buffers) != 1:
        found = ", ".join(name for _, name in buffers) or "none"
        raise InvalidSettingError(
            f"SelfExtend needs exactly one set of full-attention rotary frequencies, {type(model).__name__} has {found}"
        )
    trained = int(getattr(model.config, "max_position_embeddings", 0) or 0)
    if trained < 2:
        raise InvalidSettingError(f"{type(model).__name__} does not say its trained length (max_position_embeddings)")
    if target <= trained:
        raise InvalidSettingError(f"SelfExtend extends past the trained {trained} tokens: got {target}")
    window = trained // 2 if window is None else window
    group = self_extend_group(trained, target, window)
    rotary, name = buffers[0]
    settings = (window, group, rotary, name)
    attention = [m for m in model.modules() if hasattr(m, "sliding_window") and hasattr(m, "config")]
    if not attention:
        raise InvalidSettingError(f"{type(model).__name__} has no transformers attention modules to extend")
    if any(getattr(m, "is_causal", False) or getattr(m, "num_key_value_groups", 1) > 1 for m in attention):
        raise InvalidSettingError(
            f"{type(model).__name__} has causal or grouped-query attention: longvec's SelfExtend is built for "
            "bidirectional encoders with one key per query head; use --positions keep (NTK-aware) or linear"
        )
    _check_transformers()
    for m in attention:
        m.__dict__["_longvec_self_extend"] = settings  # plain attribute: the rotary module is not re-registered
    _WINDOWS[id(model.config)] = (weakref.ref(model.config), window)  # read by the mask function
    _register_self_extend()
    model.set_attn_implementation(SELF_EXTEND)
    if model.config._attn_implementation != SELF_EXTEND:  # transformers only warns for models it cannot switch
        raise InvalidSettingError(
            f"{type(model).__name__} does not route attention through transformers' AttentionInterface: "
            "SelfExtend cannot be applied to it; use --positions keep (NTK-aware) or linear"
        )
    return {"trained": trained, "window": window, "group": group}


def _check_transformers() -> None:
    import transformers

    if int(transformers.__version__.split(".")[0]) < 5:  # 4.x ModernBERT dispatches attention its own way
        raise InvalidSettingError(f"SelfExtend needs transformers 5 or later, this is {transformers.__version__}")


def _register_self_extend() -> None:
    from transformers import AttentionInterface, AttentionMaskInterface

    AttentionInterface.register(SELF_EXTEND, _self_extend_attention)
    AttentionMaskInterface.register(SELF_EXTEND, _self_extend_mask)


@dataclass(frozen=True)
class _LongMask:
    """The mask of a long input, kept compact: which keys are padding (``(batch, 1, 1, n)`` bool, True = a real
    token; ``None``: none is) and the sliding window's reach (``None``: full attention). transformers would
    build a ``(batch, 1, n, n)`` mask, and more than that while building it: quadratic in the input."""

    keys: torch.Tensor | None
    band: int | None


def _self_extend_mask(**kwargs: Any) -> Any:
    """The mask function SelfExtend registers: SDPA's own (transformers ``sdpa_mask``) for inputs within the
    neighbour window, so they run exactly as before; a :class:`_LongMask` for longer ones."""
    from transformers.masking_utils import sdpa_mask

    config = kwargs.get("config")
    ref, window = _WINDOWS.get(id(config), (None, None))
    square = (
        kwargs.get("q_length") == kwargs.get("kv_length") and not kwargs.get("q_offset") and not kwargs.get("kv_offset")
    )
    if ref is None or ref() is not config or not square or kwargs["q_length"] <= window:
        return sdpa_mask(**kwargs)
    padding = kwargs.get("attention_mask")
    keys = None if padding is None or bool(padding.all()) else padding.bool()[:, None, None, :]
    return _LongMask(keys, kwargs.get("local_size"))


def _turn(x: torch.Tensor, delta: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """``x`` (already rotated at its own positions) rotated on by ``delta`` positions per token (the
    rotate-half convention of transformers' rotary encoders)."""
    import torch

    angles = delta.double()[:, None] * inv_freq.double()[None, :]
    emb = torch.cat((angles, angles), dim=-1)
    half = x.shape[-1] // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * emb.cos().to(x.dtype) + rotated * emb.sin().to(x.dtype)


def _self_extend_attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: Any,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """A transformers attention function: inputs within the neighbour window go through SDPA as before; longer
    ones attend in blocks of queries, by SelfExtend on full-attention layers and within their band on
    sliding-window layers, so that no ``(n, n)`` tensor is ever built."""
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    settings = module.__dict__.get("_longvec_self_extend")
    if isinstance(attention_mask, _LongMask) and settings is None:
        raise InvalidSettingError(f"{type(module).__name__} was not patched by self_extend but got its long-input mask")
    if not isinstance(attention_mask, _LongMask):
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    window, group, rotary, name = settings
    n, band = query.shape[2], attention_mask.band
    dtype = query.dtype
    q, k, v = query.float(), key.float(), value.float()
    p = torch.arange(n, device=query.device)
    if band is None:
        inv_freq = getattr(rotary, name).to(query.device)
        shift = window - window // group
        k_far = _turn(k, p // group - p, inv_freq).transpose(-1, -2)
        q_before = _turn(q, p // group + shift - p, inv_freq)  # facing keys before the query
        q_after = _turn(q, p // group - shift - p, inv_freq)  # facing keys after it
    scale = scaling if scaling is not None else q.shape[-1] ** -0.5
    batch, heads = q.shape[:2]
    # query rows per block: a full layer's block reaches every key, a sliding layer's only its band either side
    rows = max(1, _BLOCK_ELEMENTS // (batch * heads * n)) if band is None else max(1, band)
    out = torch.empty_like(q)
    for a in range(0, n, rows):
        b = min(n, a + rows)
        lo, hi = (0, n) if band is None else (max(0, a - band), min(n, b + band))  # the keys a block can reach
        allowed = None if band is None else ((p[a:b, None] - p[None, lo:hi]).abs() <= band)  # keys each query sees
        if attention_mask.keys is not None:
            keys = attention_mask.keys[..., lo:hi]
            allowed = keys if allowed is None else allowed & keys
        if band is None:
            logits = _self_extend_logits(q, k, q_before, q_after, k_far, a, b, window)
        else:
            logits = q[:, :, a:b] @ k[:, :, lo:hi].transpose(-1, -2)
        logits = logits * scale
        if allowed is not None:
            logits = logits.masked_fill(~allowed, float("-inf"))
        weights = torch.softmax(logits, dim=-1)
        if allowed is not None:  # a query with no key to attend to (padding far from any token) gets nothing
            weights = weights.masked_fill(~allowed.any(-1, keepdim=True), 0.0)
        out[:, :, a:b] = weights @ v[:, :, lo:hi]
    return out.to(dtype).transpose(1, 2).contiguous(), None


def _self_extend_logits(
    q: torch.Tensor,
    k: torch.Tensor,
    q_before: torch.Tensor,
    q_after: torch.Tensor,
    k_far: torch.Tensor,
    a: int,
    b: int,
    window: int,
) -> torch.Tensor:
    """SelfExtend's logits of query rows ``[a, b)`` against every key: at the true distance within ``window``, at
    grouped distances beyond it (``q_before`` facing earlier keys, ``q_after`` later ones, both against ``k_far``).
    Keys before ``a - window + 1`` are far and earlier for every row of the block, keys from ``b + window - 1`` far
    and later: each of those spans takes one product; only the band between them needs all three."""
    import torch

    n = k.shape[2]
    near_lo, near_hi = max(0, a - window + 1), min(n, b + window - 1)
    logits = torch.empty(*q.shape[:2], b - a, n, dtype=q.dtype, device=q.device)
    logits[..., :near_lo] = q_before[:, :, a:b] @ k_far[..., :near_lo]
    logits[..., near_hi:] = q_after[:, :, a:b] @ k_far[..., near_hi:]
    true = torch.arange(a, b, device=q.device)[:, None] - torch.arange(near_lo, near_hi, device=q.device)[None, :]
    near = q[:, :, a:b] @ k[:, :, near_lo:near_hi].transpose(-1, -2)
    k_mid = k_far[..., near_lo:near_hi]
    far = torch.where(true > 0, q_before[:, :, a:b] @ k_mid, q_after[:, :, a:b] @ k_mid)
    logits[..., near_lo:near_hi] = torch.where(true.abs() < window, near, far)
    return logits


def temperature_knobs(model: Any) -> list[tuple[Any, str, int]]:
    """Where attention logits can be scaled: ``(module, attribute, power)``. A module's float ``scaling`` is
    the factor transformers passes to the attention kernel (logits scale with it: power 1); failing that, a
    rotary module's float ``*attention_scaling`` multiplies both queries and keys (logits scale with its
    square: power 2), as in encoders that write the softmax scale inline (ModernBERT)."""
    found = [(m, "scaling", 1) for m in model.modules() if isinstance(getattr(m, "scaling", None), float)]
    if not found:
        found = [
            (m, name, 2)
            for m in model.modules()
            for name, value in vars(m).items()
            if name.endswith("attention_scaling") and isinstance(value, float)
        ]
    if not found:
        raise InvalidSettingError(
            f"{type(model).__name__} exposes no attention scale: TempScale needs a transformers attention module "
            "with a `scaling` attribute or a rotary module with an `attention_scaling`"
        )
    return found


def set_temperature(model: Any, tau: float = 1.0, *, length_scaled: bool = False, trained: int = 512) -> None:
    """Divide every self-attention's logits by ``tau`` (TempScale); with ``length_scaled``, also multiply them
    by ``max(1, ln n / ln trained)`` where ``n`` is the batch's longest input. ``tau=1`` without length
    scaling restores the model's own attention exactly. Idempotent: settings replace, never compound."""
    if not (isinstance(tau, int | float) and 0.0 < tau <= 10.0) or isinstance(tau, bool):
        raise InvalidSettingError(f"temperature must be in (0, 10], got {tau!r}")
    if length_scaled and trained < 2:
        raise InvalidSettingError(f"length scaling needs a trained length of at least 2, got {trained}")
    knobs = temperature_knobs(model)
    for m, attr, _ in knobs:
        if not hasattr(m, "_longvec_scale"):
            m._longvec_scale = {}
        m._longvec_scale.setdefault(attr, getattr(m, attr))  # the model's own, kept for every later setting

    def apply(factor: float) -> None:
        for m, attr, power in knobs:
            setattr(m, attr, m._longvec_scale[attr] * (factor / tau) ** (1 / power))

    apply(1.0)
    handle = getattr(model, "_longvec_length_hook", None)
    if handle is not None:
        handle.remove()
        model._longvec_length_hook = None
    if not length_scaled:
        return

    def scale_for_length(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            ids = kwargs.get("inputs_embeds")
        n = int(ids.shape[1]) if ids is not None and ids.dim() > 1 else 1  # padded to the batch's longest
        apply(max(1.0, math.log(max(n, 1)) / math.log(trained)))

    # On the embeddings: callers such as sentence-transformers call the model's ``forward`` directly, which
    # skips the model's own hooks, but the embeddings module is always called through ``__call__``.
    target = getattr(model, "embeddings", None)
    if target is None:
        raise InvalidSettingError(f"{type(model).__name__} has no embeddings module to read input lengths from")
    model._longvec_length_hook = target.register_forward_pre_hook(scale_for_length, with_kwargs=True)
