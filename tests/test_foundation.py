"""Regression tests for the foundation review (issue 6): each failed on the spine before its fix."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tracemalloc
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from tokenizers import Tokenizer

import longvec.index.encoding as encoding_module
import longvec.index.search as search_module
from longvec.api.app import create_app
from longvec.api.cli import main
from longvec.embedder import normalize
from longvec.index import Collection, CollectionClosedError, Document, InvalidInputError, ModelMismatchError
from longvec.index.search import rank
from longvec.index.store import ChunkRow, DocumentWrite
from longvec.index.vectors import VectorIndex

from fakes import VOCAB, KeywordEmbedder

FILLER = "This sentence is neutral filler text for the chunker. "


def keyword_doc(doc_id: str, keyword: str, n_filler: int = 12) -> Document:
    return Document(doc_id, f"The {keyword} section is here. " + FILLER * n_filler)


# -- 1. readers beside a writer --------------------------------------------------------------------------


def test_reader_sees_later_writes_and_never_a_vanished_chunk(tmp_path, fake_embedder):
    root = tmp_path / "c"
    writer = Collection.create(root, embedder=fake_embedder, search_mode="dense")
    writer.add([keyword_doc("a", "alpha"), keyword_doc("b", "beta"), keyword_doc("g", "gamma")])
    writer.flush()
    reader = Collection.open(root, embedder=fake_embedder, readonly=True)
    try:
        assert reader.search("alpha", k=1)[0].doc_id == "a"
        writer.add([keyword_doc("a", "delta")])  # upsert: a's chunk ids are replaced
        writer.delete("b")
        writer.add([keyword_doc("e", "epsilon")])
        assert reader.search("delta", k=1)[0].doc_id == "a"  # used to raise KeyError
        assert "b" not in {h.doc_id for h in reader.search("beta", k=10)}
        assert reader.search("epsilon", k=1)[0].doc_id == "e"
        assert reader.search("alpha", k=1)[0].score < 0.5
        for mode in ("hybrid", "lexical"):  # both channels of the reader see the same writes
            assert reader.search("delta", k=1, mode=mode)[0].doc_id == "a", mode
            assert "b" not in {h.doc_id for h in reader.search("beta", k=10, mode=mode)}, mode
            assert [h.doc_id for h in reader.search("alpha", k=10, mode="lexical")] == []
        # the writer saves and prunes its tombstones: the reader catches up from the saved file
        writer.add([keyword_doc("g", "zeta")])
        writer.flush()
        writer.add([keyword_doc("t", "theta")])
        assert [reader.search(w, k=1)[0].doc_id for w in ("zeta", "theta", "epsilon")] == ["g", "t", "e"]
        assert reader._vectors.index.ntotal == reader.info()["chunks"]
    finally:
        reader.close()
        writer.close()


def test_damaged_saved_index_is_rebuilt_and_saved_again(tmp_path, fake_embedder):
    root = tmp_path / "c"
    with Collection.create(root, embedder=fake_embedder) as c:
        c.add([keyword_doc("a", "alpha"), keyword_doc("b", "beta")])
    saved = next(root.glob("vectors-*.faiss"))
    saved.write_bytes(saved.read_bytes()[:100])  # a torn or damaged cache file
    with Collection.open(root, embedder=fake_embedder, readonly=True) as c:
        assert c.search("beta", k=1)[0].doc_id == "b"
    with Collection.open(root, embedder=fake_embedder) as c:
        assert c.search("alpha", k=1)[0].doc_id == "a"
    assert VectorIndex.load(root, dim=8) is not None  # the writer replaced it


def test_reader_behind_a_newer_saved_index_retries_instead_of_rebuilding(tmp_path, fake_embedder, monkeypatch):
    root = tmp_path / "c"
    writer = Collection.create(root, embedder=fake_embedder)
    writer.add([keyword_doc("a", "alpha")])
    writer.flush()
    reader = Collection.open(root, embedder=fake_embedder, readonly=True)
    rebuilds: list[int] = []
    original_iter = reader._store.iter_vectors

    def counting(dim, *, after=0, **kw):
        if after == 0:
            rebuilds.append(1)
        return original_iter(dim, after=after, **kw)

    monkeypatch.setattr(reader._store, "iter_vectors", counting)
    original_snapshot = reader._store.snapshot
    calls = []

    def racing_snapshot():
        calls.append(1)
        if len(calls) == 1:  # the writer commits and saves right after the reader's snapshot begins
            cm = original_snapshot()
            state = cm.__enter__()
            writer.add([keyword_doc("b", "beta")])
            writer.flush()
            return _Entered(cm, state)
        return original_snapshot()

    monkeypatch.setattr(reader._store, "snapshot", racing_snapshot)
    try:
        assert reader.search("beta", k=1)[0].doc_id == "b"
        assert len(calls) == 2 and rebuilds == []
    finally:
        reader.close()
        writer.close()


class _Entered:
    """A context manager already entered: ``with`` returns ``state`` and exits ``cm``."""

    def __init__(self, cm, state):
        self.cm, self.state = cm, state

    def __enter__(self):
        return self.state

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc)


def test_add_only_flush_lets_readers_catch_up_without_reloading(tmp_path, fake_embedder, monkeypatch):
    root = tmp_path / "c"
    writer = Collection.create(root, embedder=fake_embedder)
    writer.add([keyword_doc("a", "alpha")])
    writer.flush()
    reader = Collection.open(root, embedder=fake_embedder, readonly=True)
    try:
        reader.search("alpha", k=1)
        loads = []
        original_load = VectorIndex.load
        monkeypatch.setattr(VectorIndex, "load", classmethod(lambda cls, *a: loads.append(1) or original_load(*a)))
        writer.add([keyword_doc("b", "beta")])
        writer.flush()
        assert reader.search("beta", k=1)[0].doc_id == "b" and loads == []  # caught up, not reloaded
        writer.delete("a")
        writer.flush()
        assert reader.search("alpha", k=1)[0].doc_id != "a" and loads == [1]  # tombstones pruned: reload
    finally:
        reader.close()
        writer.close()


# -- 2. bounded work per query ---------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["dense", "hybrid", "lexical"])
def test_dominant_document_does_not_blow_up_the_fetch(tmp_path, fake_embedder, monkeypatch, mode):
    monkeypatch.setattr(search_module, "MAX_FETCH", 64)
    fetched: list[int] = []
    original = VectorIndex.search

    def recording(self, queries, k, **kwargs):
        fetched.extend([k] * len(queries))
        return original(self, queries, k, **kwargs)

    monkeypatch.setattr(VectorIndex, "search", recording)
    with Collection.create(tmp_path / "c", embedder=fake_embedder, search_mode=mode) as c:
        # one document owns ~300 alpha chunks; eight small ones each hold one alpha mention
        big = Document("big", "".join(f"The alpha part {i} is here. " for i in range(1200)))
        small = [Document(f"s{i}", f"An alpha and a {VOCAB[1 + i % 7]} note.") for i in range(8)]
        c.add([big, *small])
        n_chunks = c.info()["chunks"]
        assert n_chunks > 200
        queries = ["alpha"] + [VOCAB[1 + i % 7] for i in range(50)]
        fetched.clear()
        results = c.search_many(queries, k=5)
    assert max(fetched, default=0) <= 64 < n_chunks  # the spine fetched every chunk for every query of the batch
    assert len(results[0]) == 5  # still k documents: the big one does not crowd the small ones out
    assert results[0][0].doc_id == "big" or mode == "lexical"  # BM25 favours the short alpha notes
    assert {h.doc_id for h in results[0][1:]} <= {f"s{i}" for i in range(8)}


def brute_force_docs(queries, vectors, row_doc, k):
    scores = queries @ vectors.T
    out = []
    for row in scores:
        best: dict[int, float] = {}
        for s, d in zip(row, row_doc, strict=True):
            best[d] = max(best.get(d, -np.inf), float(s))
        out.append(sorted(best.items(), key=lambda kv: -kv[1])[:k])
    return out


def test_rank_is_exact_with_exclusion_rounds(monkeypatch):
    monkeypatch.setattr(search_module, "MAX_FETCH", 32)
    rng = np.random.default_rng(3)
    dim, n = 16, 3000
    center = normalize(rng.normal(size=(1, dim)))[0]
    vectors = rng.normal(size=(n, dim)).astype(np.float32)
    vectors[:2500] += 4 * center  # document 0 owns 2500 chunks, all near the centre
    vectors = normalize(vectors)
    row_doc = np.concatenate([np.zeros(2500, dtype=np.int64), 1 + np.arange(500) // 5])  # 100 docs of 5
    ids = np.arange(1, n + 1, dtype=np.int64)
    index = VectorIndex(dim, use_gpu=False)
    index.add(ids, vectors)
    rows = {int(i): ChunkRow(int(i), f"d{row_doc[i - 1]}", 0, 0, 1, None) for i in ids}

    def ranges(doc_ids):
        out = []
        for d in doc_ids:
            members = ids[row_doc == int(d[1:])]
            out.append((int(members.min()), int(members.max())))
        return out

    queries = normalize(np.vstack([center, rng.normal(size=(5, dim))]).astype(np.float32))
    got = rank(index, queries, 10, chunks_per_doc=3, max_id=n, lookup=lambda xs: rows, ranges=ranges)
    want = brute_force_docs(queries, vectors, row_doc, 10)
    for hits, expected in zip(got, want, strict=True):
        assert [h.doc_id for h in hits] == [f"d{d}" for d, _ in expected]
        np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], rtol=1e-5)


# -- 3. prefixes and prompts count in the budget ---------------------------------------------------------


def test_document_prompt_counts_in_the_chunk_budget(tmp_path, tokenizer):
    embedder = KeywordEmbedder(tokenizer, max_tokens=32, document_prompt="passage: ")
    text = "Retrieval systems split long documents into chunks before embedding them. " * 30
    code = "def f(x):\n" + "".join(f"    y{i} = x + {i}\n" for i in range(60))
    with Collection.create(tmp_path / "c", embedder=embedder) as c:
        c.add([Document("t", text), Document("c.py", code)])
        chunks = c.chunk(Document("t", text)) + c.chunk(Document("c.py", code))
    plain = Tokenizer.from_str(tokenizer.to_str())  # the model's tokenizer.json pads to 128: switch that off
    plain.no_padding()
    plain.no_truncation()
    raw = [len(plain.encode("passage: " + ch.embed_text).ids) for ch in chunks]
    assert max(raw) <= 32 and max(raw) >= 28  # filled, and nothing left for the model to cut


def test_real_model_never_truncates_a_stored_chunk(tmp_path):
    from longvec.embedder import EmbedderConfig, load_embedder

    embedder = load_embedder(EmbedderConfig(document_prefix="passage: ", query_prefix="query: "))
    text = "Vector indexes trade recall for speed in several ways. " * 120
    with Collection.create(tmp_path / "c", embedder=embedder) as c:
        chunks = c.chunk(Document("t", text))
    tok = embedder.model.tokenizer
    lengths = [len(tok("passage: " + ch.text)["input_ids"]) for ch in chunks]
    assert max(lengths) <= embedder.max_tokens == 256
    assert max(lengths) > 240  # the budget is used, not wasted


# -- 4. manifests that notice a changed model ------------------------------------------------------------


def test_fingerprint_covers_weights_pooling_and_prompts(real_embedder):
    import torch

    from longvec.embedder import fingerprint

    st = real_embedder.model
    base = fingerprint(st)
    param = next(iter(st.parameters()))
    with torch.no_grad():
        param.view(-1)[0] += 0.01
        changed_weights = fingerprint(st)
        param.view(-1)[0] -= 0.01
    pooling = st[1]
    pooling.pooling_mode = "cls"
    try:
        changed_pooling = fingerprint(st)
    finally:
        pooling.pooling_mode = "mean"
    prompts = dict(st.prompts)
    st.prompts["query"] = "query: "
    try:
        changed_prompts = fingerprint(st)
    finally:
        st.prompts = prompts
    assert len({base, changed_weights, changed_pooling, changed_prompts}) == 4
    assert fingerprint(st) == base


def test_fingerprint_ignores_where_the_model_lives_and_tokenizer_runtime_state(real_embedder):
    from longvec.embedder import fingerprint

    st = real_embedder.model
    base = fingerprint(st)
    config = st[0].auto_model.config
    original = config._name_or_path
    config._name_or_path = "/somewhere/else/model"
    try:
        assert fingerprint(st) == base  # a copied or reinstalled model is the same model
    finally:
        config._name_or_path = original
    real_embedder.encode_documents(["a long input " * 200])  # sentence-transformers resets truncation here
    assert fingerprint(st) == base == real_embedder.fingerprint


def test_open_compares_max_tokens_and_prompts(tmp_path, tokenizer):
    root = tmp_path / "c"
    Collection.create(root, embedder=KeywordEmbedder(tokenizer, max_tokens=32)).close()
    with pytest.raises(ModelMismatchError, match="max_tokens 32.*max_tokens 64.*new --collection directory"):
        Collection.open(root, embedder=KeywordEmbedder(tokenizer, max_tokens=64))
    with pytest.raises(ModelMismatchError, match="document_prompt ''.*document_prompt 'passage: '"):
        Collection.open(root, embedder=KeywordEmbedder(tokenizer, document_prompt="passage: "))


def test_new_chunker_version_rechunks_unchanged_documents(tmp_path, fake_embedder, monkeypatch):
    with Collection.create(tmp_path / "c", embedder=fake_embedder) as c:
        docs = [keyword_doc("a", "alpha"), keyword_doc("b", "beta")]
        assert c.add(docs).added == 2
        assert c.add(docs).unchanged == 2
        monkeypatch.setattr(encoding_module, "CHUNKER_VERSION", "next")
        assert c.add(docs).updated == 2


def test_older_format_is_a_clear_error(tmp_path, fake_embedder):
    root = tmp_path / "c"
    Collection.create(root, embedder=fake_embedder).close()
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["format_version"] = 1
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelMismatchError, match="format 1, older than this longvec's .*re-index"):
        Collection.open(root, embedder=fake_embedder)


# -- 5. every input source is checked before the first write ---------------------------------------------


def test_missing_path_after_jsonl_writes_nothing(tmp_path, capsys):
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps({"id": f"d{i}", "text": f"document {i}"}) + "\n" for i in range(80)))
    root = tmp_path / "coll"
    args = ["index", "--collection", str(root), "--input", str(data), "--batch-docs", "4"]
    assert main([*args, str(tmp_path / "nonexistent")]) == 2
    assert "no such file or directory" in capsys.readouterr().err
    assert not (root / "store.sqlite").exists()


# -- 7. index persistence costs --------------------------------------------------------------------------


def _fill_store(collection: Collection, n_docs: int, per_doc: int, rng: np.random.Generator) -> None:
    from longvec.chunking import Chunk

    with collection._store.transaction() as db:
        for d in range(n_docs):
            chunks = [Chunk(f"d{d}", i, 0, 1, "x", 3, "text") for i in range(per_doc)]
            vectors = normalize(rng.normal(size=(per_doc, collection.manifest.dim)))
            collection._store.write(db, DocumentWrite(f"d{d}", "x", "h", None, None, {}, chunks, vectors))


def _rebuild_peak(root, embedder, n_docs: int) -> int:
    """Python-heap peak of the first search of a collection whose index was never saved (a full rebuild)."""
    with Collection.create(root, embedder=embedder) as c:
        _fill_store(c, n_docs, 600, np.random.default_rng(0))
        c._vectors.save = lambda store: None  # leave no saved index behind
    with Collection.open(root, embedder=embedder, readonly=True) as c:
        tracemalloc.start()
        try:
            c.search("alpha", k=3)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert c._vectors.index.ntotal == n_docs * 600
    return peak


def test_stale_open_rebuilds_in_bounded_batches(tmp_path, fake_embedder):
    small = _rebuild_peak(tmp_path / "small", fake_embedder, 25)  # 15k chunks
    large = _rebuild_peak(tmp_path / "large", fake_embedder, 200)  # 120k chunks, 3.8 MB of vectors
    # Memory does not grow with the store: the spine read every row at once (~30 MB of Python objects here).
    assert large < 1.1 * small + 100_000
    assert large < 120_000 * 8 * 4


def test_info_loads_no_index_and_unchanged_saves_are_skipped(tmp_path, fake_embedder):
    root = tmp_path / "c"
    with Collection.create(root, embedder=fake_embedder) as c:
        c.add([keyword_doc("a", "alpha")])
    saved = next(root.glob("vectors-*.faiss"))
    before = saved.stat().st_mtime_ns, saved.stat().st_ino
    with Collection.open(root, embedder=fake_embedder) as c:
        assert c.info()["documents"] == 1 and c._vectors.index is None
        c.search("alpha", k=1)
    assert (saved.stat().st_mtime_ns, saved.stat().st_ino) == before  # nothing changed: not rewritten


# -- 8. smaller ones -------------------------------------------------------------------------------------


def test_close_twice_is_a_no_op_and_use_after_close_is_typed(tmp_path, fake_embedder):
    c = Collection.create(tmp_path / "c", embedder=fake_embedder)
    c.close()
    c.close()
    with pytest.raises(CollectionClosedError, match="is closed"):
        c.search("alpha")


def test_chunks_per_doc_must_be_positive(tmp_path, fake_embedder):
    with Collection.create(tmp_path / "c", embedder=fake_embedder) as c:
        c.add([keyword_doc("a", "alpha")])
        with pytest.raises(InvalidInputError, match="chunks_per_doc must be at least 1"):
            c.search("alpha", chunks_per_doc=0)


def test_renames_are_made_durable_with_a_directory_fsync(tmp_path, fake_embedder, monkeypatch):
    synced_dirs: list[str] = []
    real_fsync = os.fsync

    def recording(fd):
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            synced_dirs.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording)
    root = tmp_path / "c"
    with Collection.create(root, embedder=fake_embedder) as c:
        c.add([keyword_doc("a", "alpha")])
    assert synced_dirs.count(str(root)) >= 2  # after the manifest and after the index stamp


def test_internal_errors_are_500_not_400(tmp_path, fake_embedder, monkeypatch):
    collection = Collection.create(tmp_path / "c", embedder=fake_embedder)

    def broken(*args, **kwargs):
        raise ValueError("a bug, not the caller's fault")

    monkeypatch.setattr(collection, "search", broken)
    with TestClient(create_app(collection), raise_server_exceptions=False) as client:
        r = client.post("/search", json={"query": "alpha"})
        assert r.status_code == 500
        assert r.json()["error"]["type"] == "InternalError"
        assert "a bug" not in r.text  # details go to the log, not to the caller
        r = client.post("/search", json={"query": "alpha", "k": 0})
        assert r.status_code == 422


def test_cli_and_rest_hits_have_one_format(tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    records = [
        {"id": "m.py", "text": "def merge_sort(items):\n    return sorted(items)\n"},
        {"id": "n", "text": "Notes."},
    ]
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    root = tmp_path / "c"
    assert main(["index", "--collection", str(root), "--input", str(data)]) == 0
    assert main(["search", "--collection", str(root), "--query", "sort a list", "--k", "2", "--json"]) == 0
    cli = json.loads(capsys.readouterr().out.splitlines()[-1])["hits"]
    with TestClient(create_app(Collection.open(root, readonly=True))) as client:
        rest = client.post("/search", json={"query": "sort a list", "k": 2}).json()["hits"]
    assert cli == rest
    assert cli[0]["chunks"][0]["symbol"] == "merge_sort" and "chunk_id" in cli[0]["chunks"][0]


def test_version_comes_from_the_package_metadata(tmp_path, fake_embedder, monkeypatch):
    from longvec.index import manifest

    monkeypatch.setattr(manifest.metadata, "version", lambda name: "9.8.7" if name == "longvec" else "?")
    manifest.longvec_version.cache_clear()
    try:
        with Collection.create(tmp_path / "c", embedder=fake_embedder) as c:
            assert c.info()["longvec_version"] == "9.8.7"
        assert json.loads((tmp_path / "c" / "manifest.json").read_text())["longvec_version"] == "9.8.7"
    finally:
        manifest.longvec_version.cache_clear()
    assert manifest.longvec_version() == metadata.version("longvec")


def test_build_backend_can_build_the_license_field():
    import tomllib

    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert isinstance(project["project"]["license"], str)  # an SPDX expression needs setuptools >= 77
    (requirement,) = [r for r in project["build-system"]["requires"] if r.startswith("setuptools")]
    assert tuple(int(x) for x in requirement.split(">=")[1].split(".")) >= (77,)


# -- search options the evaluation measures (dim, agg) are the product's own ------------------------------


class HashEmbedder(KeywordEmbedder):
    """64-dim vectors from word hashes: varied enough for Matryoshka prefixes and aggregation to differ."""

    dim = 64

    def _vectors(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            for w in t.lower().split():
                rng = np.random.default_rng(int.from_bytes(hashlib.md5(w.encode()).digest()[:8]))
                out[i] += rng.normal(size=self.dim)
        return normalize(out)


def test_dim_and_agg_search_the_stored_vectors_exactly(tmp_path, tokenizer):
    from longvec.embedder import aggregate, truncate

    embedder = HashEmbedder(tokenizer, max_tokens=24)
    words = "apple banana cherry delta echo foxtrot golf hotel india juliet kilo lima".split()
    docs = [  # sentences of shared words plus one unique word each: no two chunks tie
        Document(
            f"d{i}", ". ".join(" ".join(words[(i + j) % 12 : (i + j) % 12 + 3]) + f" u{i}x{j}" for j in range(i + 1))
        )
        for i in range(12)
    ]
    queries = ["apple banana", "golf hotel india", "kilo lima"]
    with Collection.create(tmp_path / "c", embedder=embedder, search_mode="dense") as c:
        c.add(docs)
        c.delete("d3")
        c.add([Document("d5", "juliet kilo. lima apple. banana cherry delta echo")])  # upsert
        doc_ids, row_doc, vectors, tokens = c.chunk_vectors()
        assert max(np.bincount(row_doc)) > 2  # multi-chunk documents
        for dim in (32, 64):
            for agg in ("maxsim", "mean", "max", "weighted"):
                got = c.search_many(queries, k=5, dim=dim, agg=agg)
                q = embedder.encode_queries(queries)
                q, v = truncate(q, dim), truncate(vectors, dim)
                if agg == "maxsim":
                    scores = q @ v.T
                    best = np.full((len(q), len(doc_ids)), -np.inf)
                    for r in range(len(q)):
                        np.maximum.at(best[r], row_doc, scores[r])
                else:
                    d = np.stack([aggregate(v[row_doc == i], agg, tokens[row_doc == i]) for i in range(len(doc_ids))])
                    best = q @ d.T
                for r, hits in enumerate(got):
                    order = np.argsort(-best[r], kind="stable")[:5]
                    assert [h.doc_id for h in hits] == [doc_ids[j] for j in order], (dim, agg)
                    np.testing.assert_allclose([h.score for h in hits], best[r][order], rtol=1e-5)
                    assert all(bool(h.chunks) == (agg == "maxsim") for h in hits)
        # a store read in batches of 3 rows splits documents across batches: same rankings
        from longvec.index import store

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(store, "_BATCH_ROWS", 3)
            for agg in ("mean", "weighted"):
                fresh = c.search_many(queries, k=5, dim=32, agg=agg)
                cache = c._views.pop(next(v for v in c._views if v.agg == agg and v.dim == 32))
                rebuilt = c.search_many(queries, k=5, dim=32, agg=agg)
                assert [[h.doc_id for h in r] for r in rebuilt] == [[h.doc_id for h in r] for r in fresh]
                assert cache is not c._views[cache.view]
        # views follow later writes like the main index
        c.add([Document("new", "kilo lima kilo lima")])
        assert c.search("kilo lima", k=1, dim=32, agg="mean")[0].doc_id == "new"
        with pytest.raises(InvalidInputError, match="agg 'median' not in"):
            c.search("x", agg="median")
        with pytest.raises(ValueError, match=r"dim 40 not in \(32, 48, 64\)"):
            c.search("x", dim=40)
