"""Test doubles with exact, predictable behaviour."""

from __future__ import annotations

import re
import zlib

import numpy as np
from tokenizers import Tokenizer

from longvec.embedder import normalize, truncate

VOCAB = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")


class KeywordEmbedder:
    """One dimension per keyword in ``VOCAB``: a text's vector counts its keywords, so rankings are exact."""

    model_id = "keyword-fake"
    fingerprint = "keyword-fake-v1"
    dim = len(VOCAB)

    def __init__(self, tokenizer: Tokenizer, max_tokens: int = 32, document_prompt: str = "") -> None:
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.document_prompt = document_prompt
        self.query_prompt = ""
        self.calls: list[int] = []

    def _vectors(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z]+", t.lower()):
                if w in VOCAB:
                    out[i, VOCAB.index(w)] += 1
        return normalize(out)

    def encode_documents(self, texts: list[str], dim: int | None = None) -> np.ndarray:
        return truncate(self._vectors(texts), dim) if dim else self._vectors(texts)

    def encode_queries(self, texts: list[str], dim: int | None = None) -> np.ndarray:
        return self.encode_documents(texts, dim)


class WordHashEmbedder(KeywordEmbedder):
    """Every word a fixed random direction (seeded by its CRC): a text's vector is their normalised sum, so texts
    sharing words are near each other and the vectors spread over all ``dim`` coordinates, as a model's do."""

    model_id = "wordhash-fake"
    fingerprint = "wordhash-fake-v1"
    dim = 48

    def _vectors(self, texts: list[str]) -> np.ndarray:
        self.calls.append(len(texts))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in re.findall(r"[a-z0-9]+", t.lower()):
                out[i] += np.random.default_rng(zlib.crc32(w.encode())).normal(size=self.dim)
        return normalize(out)
