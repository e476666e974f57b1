"""Late chunking (arXiv 2409.04701): encode a document once, then pool token states inside each chunk's span.

A chunk's vector then carries what the rest of the document says about it (a function's class, a section's
topic), which an independently embedded chunk never sees. Documents longer than the encoder's window are read
in overlapping macro windows: each later window starts ``overlap`` tokens before the previous one ended and
its first ``overlap`` token states are dropped, so every kept state had at least ``overlap`` tokens of left
context.

Pooling is the mean of the chunk's token states, as the models this applies to pool (sentence-transformers
``Transformer`` + mean ``Pooling`` [+ ``Normalize``]). The special tokens and the document prompt at the
document's very start belong to its first chunk, the closing special token to its last one: a document
read in one window as a single chunk therefore gets exactly the vector plain encoding gives it.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from longvec.embedder.errors import InvalidSettingError
from longvec.embedder.matryoshka import normalize

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from tokenizers import Tokenizer


@dataclass(frozen=True)
class _Window:
    doc: int  # index of the document in the call
    first: int  # first content token of the document in this window
    ids: list[int]  # the window's full input ids (specials and prompt included)
    keep_from: int  # content tokens before first + keep_from were kept from an earlier window


def check_late_model(st: SentenceTransformer) -> None:
    """:class:`InvalidSettingError` unless ``st`` is a transformer with mean pooling (and optional normalising)."""
    names = [type(m).__name__ for m in st]
    config = st[1].get_config_dict() if len(names) > 1 and names[1] == "Pooling" else {}
    pooling = config.get("pooling_mode")
    if names[:2] != ["Transformer", "Pooling"] or pooling != "mean" or any(n != "Normalize" for n in names[2:]):
        raise InvalidSettingError(
            f"late chunking needs a transformer with mean pooling (modules Transformer, Pooling[mean], "
            f"Normalize?); this model has {names} with pooling {pooling!r}"
        )
    if config.get("include_prompt") is False or getattr(st[0], "do_lower_case", False):
        raise InvalidSettingError(
            "late chunking pools every token it feeds the model: a model that leaves its prompt out of pooling "
            "or lowercases its input is not supported"
        )


class LateEncoder:
    """Token states of long documents in windows, pooled per character span."""

    def __init__(
        self,
        st: SentenceTransformer,
        tokenizer: Tokenizer,
        prompt: str,
        window: int,
        batch_size: int,
        autocast: Callable[[], AbstractContextManager[Any]] = nullcontext,
    ):
        from tokenizers import Tokenizer

        check_late_model(st)
        self.st, self.batch_size, self.autocast = st, batch_size, autocast
        raw = Tokenizer.from_str(tokenizer.to_str())
        raw.no_truncation()
        raw.no_padding()
        self.tokenizer = raw
        word = raw.encode("a", add_special_tokens=False).ids
        framed = raw.encode("a", add_special_tokens=True).ids
        at = next((i for i in range(len(framed)) if framed[i : i + len(word)] == word), None)
        if at is None:
            raise InvalidSettingError("cannot tell this tokenizer's special tokens apart from the text")
        self.front, self.back = framed[:at], framed[at + len(word) :]
        self.prompt = raw.encode(prompt, add_special_tokens=False).ids if prompt else []
        self.lead = len(self.front) + len(self.prompt)  # states before the content in every window
        self.capacity = window - self.lead - len(self.back)  # content tokens per window
        if self.capacity < 16:
            raise InvalidSettingError(f"late window of {window} tokens leaves {self.capacity} for content")
        self.overlap = self.capacity // 4
        pad = st.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else 0

    def encode(self, docs: list[tuple[str, list[tuple[int, int]]]]) -> list[np.ndarray]:
        """Unit vectors ``(len(spans), dim)`` per ``(text, spans)``; spans are ``[start, end)`` character
        offsets into the text (the chunks' spans). A span holding no token is an error."""
        import torch

        encodings = [self.tokenizer.encode(text, add_special_tokens=False) for text, _ in docs]
        windows = [w for i, enc in enumerate(encodings) for w in self._windows(i, enc.ids)]
        dim = self.st.get_embedding_dimension()
        states = [np.zeros((len(enc.ids), dim), np.float32) for enc in encodings]
        edges: dict[tuple[int, str], np.ndarray] = {}  # (doc, "front"/"back") -> summed special states, count
        order = sorted(range(len(windows)), key=lambda j: len(windows[j].ids))
        model = self.st[0].auto_model
        device = next(model.parameters()).device
        with torch.inference_mode(), self.autocast():
            for b in range(0, len(order), self.batch_size):
                batch = [windows[j] for j in order[b : b + self.batch_size]]
                width = max(len(w.ids) for w in batch)
                ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(batch), width), dtype=torch.long)
                for r, w in enumerate(batch):
                    ids[r, : len(w.ids)] = torch.tensor(w.ids)
                    mask[r, : len(w.ids)] = 1
                hidden = model(input_ids=ids.to(device), attention_mask=mask.to(device)).last_hidden_state
                hidden = hidden.float().cpu().numpy()
                for r, w in enumerate(batch):
                    n = len(w.ids) - self.lead - len(self.back)
                    content = hidden[r, self.lead : self.lead + n]
                    states[w.doc][w.first + w.keep_from : w.first + n] = content[w.keep_from :]
                    if w.first == 0:
                        edges[w.doc, "front"] = hidden[r, : self.lead]
                    if w.first + n == len(encodings[w.doc].ids):
                        edges[w.doc, "back"] = hidden[r, self.lead + n : len(w.ids)]
        return [
            self._pool(states[i], encodings[i].offsets, spans, edges[i, "front"], edges[i, "back"])
            for i, (_, spans) in enumerate(docs)
        ]

    def _windows(self, doc: int, ids: list[int]) -> list[_Window]:
        step = self.capacity - self.overlap
        out, first = [], 0
        while True:
            part = ids[first : first + self.capacity]
            out.append(_Window(doc, first, self.front + self.prompt + part + self.back, self.overlap if first else 0))
            if first + self.capacity >= len(ids):
                return out
            first += step

    @staticmethod
    def _pool(
        states: np.ndarray, offsets: list[tuple[int, int]], spans: list[tuple[int, int]], front: Any, back: Any
    ) -> np.ndarray:
        starts = np.fromiter((s for s, _ in offsets), dtype=np.int64, count=len(offsets))
        ends = np.fromiter((e for _, e in offsets), dtype=np.int64, count=len(offsets))
        out = np.zeros((len(spans), states.shape[1]), np.float32)
        for k, (start, end) in enumerate(spans):
            lo = int(np.searchsorted(ends, start, side="right"))  # first token ending after the span starts
            hi = int(np.searchsorted(starts, end, side="left"))  # first token starting at or after its end
            if hi <= lo or end <= start:
                raise InvalidSettingError(f"span [{start}, {end}) holds no token to pool")
            parts = [states[lo:hi]]
            if lo == 0:
                parts.append(front)
            if hi == len(offsets):
                parts.append(back)
            pooled = np.concatenate(parts)
            out[k] = pooled.mean(axis=0)
        return normalize(out)
