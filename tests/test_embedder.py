from __future__ import annotations

import numpy as np
import pytest

from longvec.embedder import aggregate, allowed_dims, check_dim, truncate

TEXTS = ["def add(a, b): return a + b", "The quick brown fox.", "Ünïcödé 日本語", ""]


def test_allowed_dims_ladder():
    assert allowed_dims(384) == (32, 48, 64, 96, 128, 192, 256, 384)
    assert allowed_dims(768)[-1] == 768
    with pytest.raises(ValueError, match=r"dim 500 not in \(32, 48, 64, 96, 128, 192, 256, 384\)"):
        check_dim(500, 384)


def test_truncate_renormalises():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(5, 384)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    t = truncate(v, 64)
    assert t.shape == (5, 64) and t.dtype == np.float32 and t.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(t, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(t, v[:, :64] / np.linalg.norm(v[:, :64], axis=1, keepdims=True), rtol=1e-5)


def test_aggregations():
    v = np.array([[1, 0, 0], [0, 1, 0]], dtype=np.float32)
    np.testing.assert_allclose(aggregate(v, "mean"), [2**-0.5, 2**-0.5, 0], rtol=1e-6)
    np.testing.assert_allclose(aggregate(v, "max"), [2**-0.5, 2**-0.5, 0], rtol=1e-6)
    w = aggregate(v, "weighted", np.array([3, 1]))
    np.testing.assert_allclose(w, np.array([3, 1, 0]) / np.sqrt(10), rtol=1e-6)
    with pytest.raises(ValueError, match="one weight per vector"):
        aggregate(v, "weighted")
    with pytest.raises(ValueError, match="non-empty"):
        aggregate(np.zeros((0, 3)), "mean")


@pytest.mark.parametrize("dim", [None, 32, 64, 128, 256, 384])
def test_real_model_unit_norm_at_every_dim(real_embedder, dim):
    v = real_embedder.encode_documents(TEXTS[:3], dim=dim)
    assert v.shape == (3, dim or 384) and v.dtype == np.float32 and v.flags.c_contiguous
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_real_model_batch_equals_single(precision):
    """A text's vector does not depend on what it is batched with: exactly in fp32, within the parity gate in
    bf16 (low-precision products round differently when the padded width changes)."""
    from longvec.embedder import EmbedderConfig, load_embedder

    embedder = load_embedder(EmbedderConfig(precision=precision))
    batch = embedder.encode_documents(TEXTS[:3])
    single = np.vstack([embedder.encode_documents([t]) for t in TEXTS[:3]])
    if precision == "fp32":
        np.testing.assert_allclose(batch, single, atol=1e-5)
    else:
        assert np.sum(batch * single, axis=1).min() >= 0.9999


def test_real_model_prefix_dim_matches_truncated_full(real_embedder):
    full = real_embedder.encode_queries(["binary search tree"])
    np.testing.assert_allclose(
        real_embedder.encode_queries(["binary search tree"], dim=64), truncate(full, 64), atol=1e-6
    )


def test_real_model_metadata(real_embedder):
    assert real_embedder.dim == 384
    assert real_embedder.max_tokens == 256
    assert len(real_embedder.tokenizer.encode("hello world").ids) == 4
    assert (real_embedder.document_prompt, real_embedder.query_prompt) == ("", "")
    assert real_embedder.encode_queries([]).shape == (0, 384)


def test_prefixes_change_the_input(counter):
    from longvec.embedder import EmbedderConfig, load_embedder

    plain = load_embedder()
    prefixed = load_embedder(EmbedderConfig(query_prefix="query: ", document_prefix="passage: "))
    q = "sort a list"
    assert not np.allclose(plain.encode_queries([q]), prefixed.encode_queries([q]))
    np.testing.assert_allclose(prefixed.encode_queries([q]), plain.encode_documents(["query: " + q]), atol=1e-5)


def test_missing_model_is_a_clear_offline_error():
    from longvec.embedder import EmbedderConfig, ModelLoadError, load_embedder

    with pytest.raises(ModelLoadError, match="offline"):
        load_embedder(EmbedderConfig(model="no-such-org/no-such-model"))


def test_max_tokens_beyond_positions_is_rejected():
    from longvec.embedder import EmbedderConfig, InvalidSettingError, load_embedder

    with pytest.raises(InvalidSettingError, match=r"max_tokens 4096 not in \[8, 512\]"):
        load_embedder(EmbedderConfig(max_tokens=4096))
