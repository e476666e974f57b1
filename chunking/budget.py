"""Token counting with the embedder's own tokenizer (``tokenizers``; no torch here)."""

from __future__ import annotations

import threading
from pathlib import Path

from tokenizers import Tokenizer


class TokenCounter:
    """Counts tokens exactly as the embedder will see them: special tokens and the document prefix included.

    Wraps a copy of a Hugging Face fast tokenizer with truncation and padding switched off (a
    ``tokenizer.json`` often ships with both on, which would make every count wrong). ``prefix`` is the text
    the embedder puts before every document (``"passage: "``, a sentence-transformers prompt): it is counted
    in every :meth:`count`, so a chunk that fits here fits the model. Calls are serialised: a Rust tokenizer
    shared across threads raises "Already borrowed".
    """

    def __init__(self, tokenizer: Tokenizer, prefix: str = "") -> None:
        self._tok = Tokenizer.from_str(tokenizer.to_str())
        self._tok.no_truncation()
        self._tok.no_padding()
        self._lock = threading.Lock()
        self.prefix = prefix
        # Tokens every input carries besides its content: special tokens and the prefix.
        self.n_special = len(self._tok.encode(prefix).ids)

    @classmethod
    def from_file(cls, path: str | Path, prefix: str = "") -> TokenCounter:
        return cls(Tokenizer.from_file(str(path)), prefix)

    def count(self, text: str) -> int:
        """Tokens in ``text`` as one embedder input, special tokens and prefix included."""
        with self._lock:
            return len(self._tok.encode(self.prefix + text).ids)

    def count_many(self, texts: list[str]) -> list[int]:
        """``count`` for many texts in one call (batched in Rust)."""
        if not texts:
            return []
        prefix = self.prefix
        with self._lock:
            return [len(e.ids) for e in self._tok.encode_batch([prefix + t for t in texts] if prefix else texts)]

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character offsets of each content token of ``text`` (no special tokens, no prefix)."""
        with self._lock:
            enc = self._tok.encode(text, add_special_tokens=False)
        return list(enc.offsets)
