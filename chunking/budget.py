"""Token counting with the embedder's own tokenizer (``tokenizers``; no torch here)."""

from __future__ import annotations

import string
import threading
from pathlib import Path

from tokenizers import Tokenizer

# Characters next to which a BERT pre-tokenizer always splits (it drops whitespace and isolates punctuation).
# Not \x0b or \x0c: the BERT normaliser deletes those control characters, which joins their neighbours.
_SPLITS = frozenset(" \t\n\r" + string.punctuation)


class TokenCounter:
    """Counts tokens exactly as the embedder will see them: special tokens and the document prefix included.

    Wraps a copy of a Hugging Face fast tokenizer with truncation and padding switched off (a
    ``tokenizer.json`` often ships with both on, which would make every count wrong). ``prefix`` is the text
    the embedder puts before every document (``"passage: "``, a sentence-transformers prompt): it is counted
    in every :meth:`count`, so a chunk that fits here fits the model. Calls are serialised: a Rust tokenizer
    shared across threads raises "Already borrowed". :attr:`additive` (see ``_is_bert_wordpiece``; ``additive=False``
    turns it off) says whether a span's count may be read off a tokenisation of a longer text.
    """

    def __init__(self, tokenizer: Tokenizer, prefix: str = "", *, additive: bool = True) -> None:
        self._tok = Tokenizer.from_str(tokenizer.to_str())
        self._tok.no_truncation()
        self._tok.no_padding()
        self._lock = threading.Lock()
        self.prefix = prefix
        # Tokens every input carries besides its content: special tokens and the prefix.
        self.n_special = len(self._tok.encode(prefix).ids)
        self.additive = additive and _is_bert_wordpiece(self._tok) and (not prefix or prefix[-1] in _SPLITS)

    def splits_at(self, text: str, pos: int) -> bool:
        """Whether, for an :attr:`additive` tokenizer, position ``pos`` of ``text`` is a boundary that no token
        crosses in any tokenisation (next to ASCII whitespace or punctuation, or at either end)."""
        return pos <= 0 or pos >= len(text) or text[pos - 1] in _SPLITS or text[pos] in _SPLITS

    @classmethod
    def from_file(cls, path: str | Path, prefix: str = "", *, additive: bool = True) -> TokenCounter:
        return cls(Tokenizer.from_file(str(path)), prefix, additive=additive)

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

    @property
    def vocab_size(self) -> int:
        return int(self._tok.get_vocab_size(with_added_tokens=True))

    def decode(self, ids: list[int]) -> str:
        """The text of token ``ids`` (special tokens dropped)."""
        with self._lock:
            return self._tok.decode(ids, skip_special_tokens=True)

    def token_offsets(self, text: str) -> list[tuple[int, int]]:
        """Character offsets of each content token of ``text`` (no special tokens, no prefix)."""
        with self._lock:
            enc = self._tok.encode(text, add_special_tokens=False)
        return list(enc.offsets)


def _is_bert_wordpiece(tok: Tokenizer) -> bool:
    """Whether ``tok`` is a BERT WordPiece tokenizer (BERT normaliser or none, BERT pre-tokenizer, WordPiece).

    Its normaliser works character by character and its pre-tokenizer splits at every whitespace and ASCII
    punctuation character, after which WordPiece sees each piece alone. So the tokens of ``text[a:b]``, where
    ``a`` and ``b`` are such splits (:meth:`TokenCounter.splits_at`), are exactly the tokens of ``text`` that
    start in ``[a, b)``: :attr:`TokenCounter.additive`, which lets the chunkers count a span from one
    tokenisation of the whole text instead of tokenising it again. Byte-level BPE and SentencePiece tokenizers
    fold the space before a word into its token and are not additive.
    """
    import json

    spec = json.loads(tok.to_str())
    normalizer, pre, model = spec.get("normalizer"), spec.get("pre_tokenizer"), spec.get("model") or {}
    return (
        (normalizer is None or normalizer.get("type") == "BertNormalizer")
        and (pre or {}).get("type") == "BertPreTokenizer"
        and model.get("type") == "WordPiece"
    )
