"""The FAISS vector index: exact search against numpy brute force, removal, persistence, the GPU code path."""

from __future__ import annotations

import faiss
import numpy as np
import pytest

from longvec.embedder import normalize
from longvec.index.vectors import VectorIndex


@pytest.fixture
def data():
    rng = np.random.default_rng(7)
    vectors = normalize(rng.normal(size=(300, 32)))
    ids = rng.choice(10_000, size=300, replace=False).astype(np.int64)
    queries = normalize(rng.normal(size=(5, 32)))
    return ids, vectors, queries


def brute_force(ids, vectors, queries, k):
    scores = queries @ vectors.T
    order = np.argsort(-scores, axis=1)[:, :k]
    return np.take_along_axis(scores, order, axis=1), ids[order]


def test_exact_search_matches_brute_force(data):
    ids, vectors, queries = data
    index = VectorIndex(32, use_gpu=False)
    index.add(ids, vectors)
    scores, got = index.search(queries, 10)
    want_scores, want_ids = brute_force(ids, vectors, queries, 10)
    np.testing.assert_array_equal(got, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)


def test_remove_and_k_clamped(data):
    ids, vectors, queries = data
    index = VectorIndex(32, use_gpu=False)
    index.add(ids[:3], vectors[:3])
    index.remove(ids[:1])
    scores, got = index.search(queries[:1], 50)
    assert index.ntotal == 2 and got.shape == (1, 2) and set(got[0]) == set(ids[1:3])


def test_save_load_round_trip_with_generation_stamp(data, tmp_path):
    ids, vectors, queries = data
    index = VectorIndex(32, use_gpu=False)
    index.add(ids, vectors)
    index.save(tmp_path, generation=4, seq=10_000)
    index.save(tmp_path, generation=5, seq=10_000)
    names = sorted(p.name for p in tmp_path.glob("vectors-*"))
    assert len(names) == 1 and names[0].startswith("vectors-5-") and names[0].endswith(".faiss")  # older: gone
    assert VectorIndex.load(tmp_path, dim=16) is None  # another dimension: rebuild
    loaded, stamp = VectorIndex.load(tmp_path, dim=32)
    assert (stamp.generation, stamp.seq, stamp.ntotal) == (5, 10_000, 300)
    np.testing.assert_array_equal(loaded.search(queries, 10)[1], index.search(queries, 10)[1])


def test_allowed_bitmap_excludes_ids(data):
    ids, vectors, queries = data
    index = VectorIndex(32, use_gpu=False)
    index.add(ids, vectors)
    allowed = np.ones(10_000, dtype=bool)
    allowed[ids[:150]] = False
    scores, got = index.search(queries, 10, allowed=np.packbits(allowed, bitorder="little"))
    want_scores, want_ids = brute_force(ids[150:], vectors[150:], queries, 10)
    np.testing.assert_array_equal(got, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)


def test_gpu_path_maps_positions_back_to_ids(data, monkeypatch):
    """The GPU copy is a flat index in insertion order; results must come back as chunk ids.

    faiss-cpu has no GPU classes, so stand in CPU equivalents for them: this checks our mapping logic,
    not CUDA (benchmarks/gpu_check.py does that on a GPU machine).
    """
    ids, vectors, queries = data
    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: None, raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatIP", lambda res, dim: faiss.IndexFlatIP(dim), raising=False)
    index = VectorIndex(32, use_gpu=True)
    index.add(ids[:200], vectors[:200])
    index.search(queries, 10)  # the GPU copy exists now ...
    index.add(ids[200:], vectors[200:])  # ... and is extended in place, ids mapped as well
    scores, got = index.search(queries, 10)
    want_scores, want_ids = brute_force(ids, vectors, queries, 10)
    np.testing.assert_array_equal(got, want_ids)
    index.remove(ids[:10])  # a removal drops the copy: the next search copies the CPU index again
    scores, got = index.search(queries, 10)
    want_scores, want_ids = brute_force(ids[10:], vectors[10:], queries, 10)
    np.testing.assert_array_equal(got, want_ids)
    np.testing.assert_allclose(scores, want_scores, rtol=1e-5)


def test_gpu_k_limit_falls_back_to_cpu(monkeypatch):
    class NoLargeK:
        def __init__(self, res, dim):
            self.inner = faiss.IndexFlatIP(dim)

        def add(self, x):
            self.inner.add(x)

        def search(self, x, k):
            assert k <= 2048, "GPU FAISS rejects k > 2048"
            return self.inner.search(x, k)

    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: None, raising=False)
    monkeypatch.setattr(faiss, "GpuIndexFlatIP", NoLargeK, raising=False)
    rng = np.random.default_rng(1)
    vectors = normalize(rng.normal(size=(3000, 8)))
    index = VectorIndex(8, use_gpu=True)
    index.add(np.arange(3000, dtype=np.int64), vectors)
    assert index.search(vectors[:2], 3000)[1].shape == (2, 3000)
    assert index.search(vectors[:2], 10)[1][:, 0].tolist() == [0, 1]
