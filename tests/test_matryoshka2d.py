"""2D Matryoshka: encoding with fewer layers, and the calibration (rotation, layer adapters, prefix map) of a
collection."""

from __future__ import annotations

import json

import numpy as np
import pytest

from longvec.api.cli import main
from longvec.embedder import EmbedderConfig, InvalidSettingError, load_embedder, normalize
from longvec.embedder.calibration import Calibration, fit_adapter, fit_prefix_map, fit_rotation, prefix_error, prefix_of
from longvec.embedder.engine import Engine, openvino_available
from longvec.index import Collection, Document, InvalidInputError
from longvec.index.store import Store

TEXTS = [
    "def parse_header(line): return line.split(':', 1)",
    "The collection keeps every chunk vector in SQLite and a FAISS index beside it.",
    "class Stack:\n    def push(self, x):\n        self.items.append(x)",
    "Matryoshka embeddings keep their meaning when cut to a prefix.",
]


@pytest.fixture(scope="module")
def torch32():
    return load_embedder(EmbedderConfig(backend="torch", precision="fp32", cache_dir=None))


def _docs(n: int = 40) -> list[Document]:
    topics = ["parsing", "sorting", "hashing", "networking", "storage", "rendering", "logging", "testing"]
    out = []
    for i in range(n):
        t = topics[i % len(topics)]
        text = f"def {t}_{i}(data):\n    # {t} step {i}: handle the {t} of the data\n    return {t}(data, {i})\n"
        out.append(Document(f"m{i}.py", text * 3))
    return out


def test_all_layers_is_the_full_model_and_fewer_layers_pool_that_layers_output(torch32) -> None:
    import torch

    st = torch32.model
    assert torch32.layers == 6
    np.testing.assert_array_equal(torch32.encode_documents(TEXTS, layers=6), torch32.encode_documents(TEXTS))
    features = st.preprocess(TEXTS, prompt="")
    with torch.inference_mode():
        inputs = {k: features[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
        states = st[0].auto_model(**inputs, output_hidden_states=True).hidden_states
    mask = features["attention_mask"][..., None].float()
    for k in (1, 3, 5):
        expected = normalize(((states[k] * mask).sum(1) / mask.sum(1)).numpy())
        np.testing.assert_allclose(torch32.encode_documents(TEXTS, layers=k), expected, atol=1e-5)
    assert len(st[0].auto_model.encoder.layer) == 6  # the model is whole again after a shallow encode


@pytest.mark.skipif(not openvino_available(), reason="the openvino extra is not installed")
def test_openvino_converts_at_the_asked_depth(torch32, tmp_path) -> None:
    shallow_ov = Engine(torch32.model, backend="openvino", precision="fp32", layers=2, openvino_cache=tmp_path / "m")
    expected = Engine(torch32.model, precision="fp32", layers=2).encode(TEXTS, "")
    np.testing.assert_allclose(normalize(shallow_ov.encode(TEXTS, "")), normalize(expected), atol=1e-4)


def test_invalid_layers_are_clear_errors(torch32) -> None:
    for bad in (0, 7, -1):
        with pytest.raises(InvalidSettingError, match=r"layers must be in \[1, 6\]"):
            torch32.encode_queries(["q"], layers=bad)


def test_rotation_is_orthogonal_keeps_full_cosines_and_orders_variance() -> None:
    rng = np.random.default_rng(0)
    vectors = normalize(rng.normal(size=(500, 32)) * np.linspace(0.2, 3.0, 32))
    rotation = fit_rotation(vectors)
    np.testing.assert_allclose(rotation.T @ rotation, np.eye(32), atol=1e-5)
    rotated = vectors @ rotation
    np.testing.assert_allclose(rotated @ rotated.T, vectors @ vectors.T, atol=1e-5)
    variance = rotated.var(axis=0)
    assert np.all(np.diff(variance) <= 1e-6) and variance[0] > 5 * variance[-1]


def test_adapter_recovers_an_affine_map_and_calibration_round_trips(tmp_path) -> None:
    rng = np.random.default_rng(1)
    x = rng.normal(size=(2000, 16))
    w, b = rng.normal(size=(16, 8)), rng.normal(size=8)
    fitted_w, fitted_b = fit_adapter(x, x @ w + b, ridge=1e-8)
    np.testing.assert_allclose(fitted_w, w, atol=1e-4)
    np.testing.assert_allclose(fitted_b, b, atol=1e-4)
    calibration = Calibration(8, 3, fit_rotation(normalize(rng.normal(size=(100, 8)))), {1: (fitted_w[:8], fitted_b)})
    calibration.save(tmp_path / "c.npz")
    loaded = Calibration.load(tmp_path / "c.npz")
    v = normalize(rng.normal(size=(5, 8)))
    for depth in (1, 3):
        np.testing.assert_array_equal(loaded.apply(v, depth), calibration.apply(v, depth))
    with pytest.raises(InvalidSettingError, match="no adapter for 2 layers"):
        loaded.apply(v, 2)


def test_prefix_map_learns_to_carry_what_truncation_drops_and_round_trips(tmp_path) -> None:
    # What tells these vectors apart sits in coordinates 32..63: a 32-prefix of them is nearly noise.
    rng = np.random.default_rng(2)
    scale = np.r_[np.full(32, 0.05), np.linspace(1.0, 3.0, 32)]
    train, held_out = (normalize(rng.normal(size=(n, 64)) * scale) for n in (2000, 300))
    prefix_map = fit_prefix_map(train, steps=300)
    assert prefix_map is not None and prefix_map.dims == (32, 48)
    for dim in (32, 48):
        mapped, plain = prefix_error(held_out, (dim,), prefix_map), prefix_error(held_out, (dim,))
        assert mapped < 0.6 * plain, (dim, mapped, plain)  # on vectors it was not trained on
        np.testing.assert_allclose(np.linalg.norm(prefix_of(held_out, dim, prefix_map), axis=1), 1.0, atol=1e-5)
    assert prefix_of(held_out, 64, prefix_map) is held_out  # full length: untouched

    calibration = Calibration(64, 6, fit_rotation(train), prefix_map=prefix_map)
    calibration.save(tmp_path / "map.npz")
    loaded = Calibration.load(tmp_path / "map.npz")
    assert loaded.version == 2 and loaded.prefix_map.dims == (32, 48)
    np.testing.assert_array_equal(loaded.prefix(held_out, 32), calibration.prefix(held_out, 32))
    Calibration(64, 6, fit_rotation(train)).save(tmp_path / "plain.npz")  # no map: the format older readers know
    assert Calibration.load(tmp_path / "plain.npz").version == 1
    with np.load(tmp_path / "plain.npz") as data:
        arrays = dict(data)
    arrays["meta"][0] = 3
    np.savez(tmp_path / "future.npz", **arrays)
    with pytest.raises(InvalidSettingError, match=r"has version 3; this longvec reads \(1, 2\): upgrade it"):
        Calibration.load(tmp_path / "future.npz")


def test_a_collection_at_fewer_layers_stores_shallow_vectors_and_checks_query_depths(torch32, tmp_path) -> None:
    docs = _docs(12)
    with Collection.create(tmp_path / "c", embedder=torch32, layers=3, search_mode="dense") as c:
        c.add(docs)
        assert c.info()["layers"] == 3 and c.info()["model_layers"] == 6
        _, _, stored, _ = c.chunk_vectors()
        chunks = [ch.embed_text for d in docs for ch in c.chunk(d)]
        np.testing.assert_allclose(stored, torch32.encode_documents(chunks, layers=3), atol=1e-5)
        assert c.search("parsing the data", k=3)  # queries default to the collection's depth
        with pytest.raises(InvalidInputError, match="calibrate the collection first"):
            c.search("parsing", k=3, layers=6)
        with pytest.raises(InvalidInputError, match=r"layers must be in \[1, 6\]"):
            c.search("parsing", k=3, layers=9)
    with pytest.raises(InvalidInputError, match="late strategy"):
        Collection.create(tmp_path / "late", embedder=torch32, layers=2, strategy="late")


def test_calibration_rotates_in_place_keeps_full_results_and_opens_every_depth(torch32, tmp_path) -> None:
    docs = _docs(40)
    queries = ["hashing of the data", "networking step", "render the data", "storage handling"]
    with Collection.create(tmp_path / "c", embedder=torch32, search_mode="dense") as c:
        c.add(docs)
        before = [[(h.doc_id, round(h.score, 4)) for h in hits] for hits in c.search_many(queries, 5)]
        record = c.calibrate(sample=64)
        assert (
            record["rotation"] and record["adapters"] == [1, 2, 3, 4, 5] and record["sample"] == 40
        )  # every chunk: fewer than asked
        after = [[(h.doc_id, round(h.score, 4)) for h in hits] for hits in c.search_many(queries, 5)]
        assert after == before  # an orthogonal rotation changes no full-length score
        for layers in (1, 3, 6):
            for dim in (32, 128, 384):
                assert len(c.search("hashing", k=3, layers=layers, dim=dim)) == 3
        # the stored vectors are the model's rotated, and queries get the same transform
        calibration = c._current_calibration()
        _, _, stored, _ = c.chunk_vectors()
        chunks = [ch.embed_text for d in docs for ch in c.chunk(d)]
        np.testing.assert_allclose(stored, calibration.apply(torch32.encode_documents(chunks), 6), atol=1e-5)
        np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-5)
        fib = "def fibonacci(n):\n    # the Fibonacci sequence, computed recursively\n    return fibonacci(n - 1)"
        assert c.add([Document("fib.py", fib)]).added == 1
        hit = c.search("recursive Fibonacci sequence", k=1)[0]
        assert hit.doc_id == "fib.py"  # documents added after calibration land in the same space
    with Collection.open(tmp_path / "c", embedder=torch32, readonly=True) as c:  # the calibration is stored
        assert c.info()["calibration"]["file"] == record["file"]
        assert [[(h.doc_id, round(h.score, 4)) for h in hits] for hits in c.search_many(queries, 5)] == after
    assert len(list((tmp_path / "c").glob("calibration-*.npz"))) == 1


def test_the_prefix_map_serves_prefixes_only_and_queries_and_documents_alike(torch32, tmp_path, monkeypatch) -> None:
    import longvec.index.collection as collection_module
    from longvec.embedder import aggregate

    docs = _docs(300)  # a map needs MAP_MIN_VECTORS chunks
    queries = ["hashing of the data", "networking step", "render the data", "storage handling"]
    with Collection.create(tmp_path / "c", embedder=torch32, search_mode="dense") as c:
        c.add(docs)
        record = c.calibrate(adapters=False, prefix_map=False)
        rotated = [[(h.doc_id, round(h.score, 4)) for h in hits] for hits in c.search_many(queries, 5)]
        short = c.search_many(queries, 5, dim=32)
        with Collection.open(tmp_path / "c", embedder=torch32, readonly=True) as reader:
            assert reader.search_many(queries, 5, dim=32) == short  # its dim-32 view is built now, without a map
            record = c.calibrate(adapters=False)
            assert record["prefix_map"] and record["version"] == 2
            after = c.search_many(queries, 5, dim=32)
            assert reader.search_many(queries, 5, dim=32) == after  # ... and rebuilt through the writer's map
        calibration = c._current_calibration()
        assert calibration.prefix_map is not None
        # full length: the stored vectors and scores are the rotation's, the map is not used
        assert [[(h.doc_id, round(h.score, 4)) for h in hits] for hits in c.search_many(queries, 5)] == rotated
        # a prefix: documents and queries both through the map, in every view and channel
        doc_ids, row_doc, stored, _ = c.chunk_vectors()
        q = calibration.prefix(calibration.apply(torch32.encode_queries(queries), 6), 32)
        mapped = calibration.prefix(stored, 32)
        for query, hits, before in zip(q, after, short, strict=True):
            best = {}
            for row, score in zip(row_doc, mapped @ query, strict=True):
                best[doc_ids[row]] = max(best.get(doc_ids[row], -2.0), float(score))
            expected = sorted(best.items(), key=lambda kv: -kv[1])[:5]
            assert [(h.doc_id, round(h.score, 4)) for h in hits] == [(d, round(s, 4)) for d, s in expected]
            assert [round(h.score, 4) for h in hits] != [round(h.score, 4) for h in before]
        # one vector per document: the mean of its mapped prefixes
        means = np.stack([aggregate(mapped[row_doc == i], "mean") for i in range(len(doc_ids))])
        top = np.argsort(-(means @ q[0]))[:5]
        hits = c.search(queries[0], k=5, dim=32, agg="mean")
        expected = [(doc_ids[i], round(float(means[i] @ q[0]), 4)) for i in top]
        assert [(h.doc_id, round(h.score, 4)) for h in hits] == expected
        # hybrid: chunks only the lexical channel found are scored densely through the map too
        captured = {}
        real = collection_module.rank_fused
        monkeypatch.setattr(collection_module, "rank_fused", lambda *a, **kw: captured.update(kw) or real(*a, **kw))
        assert c.search(queries[0], k=5, dim=32, mode="hybrid")
        ids = list(range(1, 21))
        expected_scores = calibration.prefix(c._store.vectors(ids, 384), 32) @ q[0]
        np.testing.assert_allclose(captured["dense_scores"](q[0], ids), expected_scores, atol=1e-5)
        assert not np.allclose(expected_scores, prefix_of(c._store.vectors(ids, 384), 32) @ q[0], atol=1e-3)
        # a funnel shortlists by the mapped prefix and rescores the stored (rotated) vectors at full length
        funnel_args = []
        real_funnel = collection_module.rank_funnel
        monkeypatch.setattr(
            collection_module, "rank_funnel", lambda *a, **kw: funnel_args.append(a) or real_funnel(*a, **kw)
        )
        wide = c.search_many(queries, 5, funnel=32, oversample=60)  # all 300 documents shortlisted
        assert [[(h.doc_id, round(h.score, 4)) for h in hits] for hits in wide] == rotated
        np.testing.assert_allclose(funnel_args[0][1], q, atol=1e-5)
        narrow = c.search_many(queries, 5, funnel=32, oversample=1)  # the map's top 5, ranked at full length
        for hits, mapped_hits in zip(narrow, after, strict=True):
            assert {h.doc_id for h in hits} == {h.doc_id for h in mapped_hits}
            assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_a_failed_calibration_leaves_the_collection_as_it_was(torch32, tmp_path, monkeypatch) -> None:
    with Collection.create(tmp_path / "c", embedder=torch32, search_mode="dense") as c:
        c.add(_docs(10))
        before = c.chunk_vectors()[2].copy()

        def crash(self, db, dim, transform, batch=None):
            db.execute("UPDATE chunks SET vector = zeroblob(length(vector))")  # half-done work, then a crash
            raise RuntimeError("killed mid-rewrite")

        monkeypatch.setattr(Store, "rewrite_vectors", crash)
        with pytest.raises(RuntimeError, match="killed mid-rewrite"):
            c.calibrate(sample=16)
        monkeypatch.undo()
        np.testing.assert_array_equal(c.chunk_vectors()[2], before)
        assert c.info()["calibration"] is None
        assert c.search("sorting", k=1)


def test_cli_layers_and_calibrate(tmp_path, capsys) -> None:
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"id": d.doc_id, "text": d.text}) + "\n" for d in _docs(16)))
    coll = str(tmp_path / "c")
    engine = ["--backend", "torch", "--precision", "fp32"]
    assert main(["index", "--collection", coll, "--input", str(docs), "--layers", "4", *engine]) == 0
    assert main(["search", "--collection", coll, "--query", "sorting", "--layers", "2", *engine]) == 2
    assert "calibrate the collection first" in capsys.readouterr().err
    assert main(["calibrate", "--collection", coll, "--sample", "32", *engine]) == 0
    assert json.loads(capsys.readouterr().out)["adapters"] == [1, 2, 3, 4, 5]
    assert main(["search", "--collection", coll, "--query", "sorting", "--layers", "2", "--dim", "64", *engine]) == 0
    with pytest.raises(SystemExit) as bad:
        main(["search", "--collection", coll, "--query", "sorting", "--layers", "0"])
    assert bad.value.code == 2 and "must be a positive integer" in capsys.readouterr().err
    assert main(["index", "--collection", coll, "--input", str(docs), "--layers", "5", *engine]) == 2


def test_rest_search_takes_layers_and_reports_depths(torch32, tmp_path) -> None:
    from fastapi.testclient import TestClient

    from longvec.api.app import create_app

    collection = Collection.create(tmp_path / "c", embedder=torch32, search_mode="dense")
    with TestClient(create_app(collection)) as client:
        docs = [{"doc_id": d.doc_id, "text": d.text} for d in _docs(8)]
        assert client.post("/documents", json={"documents": docs}).status_code == 200
        info = client.get("/info").json()
        assert (info["layers"], info["model_layers"], info["calibration"]) == (6, 6, None)
        assert client.post("/search", json={"query": "sorting", "layers": 6}).status_code == 200
        r = client.post("/search", json={"query": "sorting", "layers": 2})
        assert r.status_code == 422 and "calibrate the collection first" in r.json()["error"]["message"]
        r = client.post("/search", json={"query": "sorting", "layers": 8})
        assert r.status_code == 422 and "layers must be in [1, 6]" in r.json()["error"]["message"]


def test_rotation_alone_on_a_shallow_collection_then_adapters(torch32, tmp_path) -> None:
    with Collection.create(tmp_path / "c", embedder=torch32, layers=2, search_mode="dense") as c:
        c.add(_docs(24))
        before = [(h.doc_id, round(h.score, 4)) for h in c.search("sorting the data", k=5)]
        record = c.calibrate(adapters=False)
        assert (record["base"], record["adapters"]) == (2, [])  # the depth-2 space, rotated
        assert [(h.doc_id, round(h.score, 4)) for h in c.search("sorting the data", k=5)] == before
        with pytest.raises(InvalidInputError, match="calibrate the collection first"):
            c.search("sorting", k=3, layers=6)
        record = c.calibrate(sample=32)  # now into the full model's space: every depth opens
        assert (record["base"], record["adapters"]) == (6, [1, 2, 3, 4, 5])
        assert all(len(c.search("sorting", k=3, layers=k)) == 3 for k in (1, 2, 6))


def test_elastic_collections_are_marked_for_older_longvecs_and_full_depth_is_none(torch32, tmp_path) -> None:
    from longvec.index.manifest import ELASTIC_FORMAT_VERSION, FORMAT_VERSION, Manifest

    with Collection.create(tmp_path / "full", embedder=torch32, layers=6) as c:  # the full depth: a plain collection
        assert c.manifest.layers is None and c.manifest.format_version == FORMAT_VERSION
        c.add(_docs(8))
        c.calibrate(adapters=False)
    assert Manifest.load(tmp_path / "full" / "manifest.json").format_version == ELASTIC_FORMAT_VERSION
    Collection.open_or_create(tmp_path / "full", embedder=torch32, layers=6).close()  # 6 == the stored full depth
    with Collection.create(tmp_path / "shallow", embedder=torch32, layers=2) as c:
        assert c.manifest.format_version == ELASTIC_FORMAT_VERSION
        assert c.search("sorting", k=2, mode="lexical", layers=5) == []  # the lexical channel needs no depth


def test_index_calibrates_by_itself_when_due_and_a_failure_is_only_a_warning(capsys) -> None:
    from longvec.api.cli import AUTO_CALIBRATE_CHUNKS, _auto_calibrate, _calibration_due

    n = AUTO_CALIBRATE_CHUNKS
    full = {"layers": 6, "model_layers": 6}
    assert not _calibration_due({"model_layers": None, "chunks": 10 * n})  # no layer choice: nothing to fit
    assert not _calibration_due({**full, "chunks": n - 1, "calibration": None})
    assert _calibration_due({**full, "chunks": n, "calibration": None})
    assert not _calibration_due({**full, "chunks": 4 * n - 1, "calibration": {"chunks": n}})
    assert _calibration_due({**full, "chunks": 4 * n, "calibration": {"chunks": n}})
    # what a model was trained elastic in needs no fitting: only the rest is due
    assert _calibration_due({**full, "chunks": n, "native_matryoshka": ["dims"]})  # layer adapters
    assert not _calibration_due({**full, "layers": 3, "chunks": n, "native_matryoshka": ["dims"]})
    assert not _calibration_due({**full, "chunks": n, "native_matryoshka": ["dims", "layers"]})
    assert _calibration_due({**full, "chunks": n, "native_matryoshka": ["layers"]})  # the rotation

    class Failing:
        asked: dict = {}

        def calibrate(self, **kwargs):
            Failing.asked = kwargs
            raise InvalidInputError("disk full")

    _auto_calibrate(Failing(), {"layers": 2, "model_layers": 6})
    assert Failing.asked == {"adapters": False}  # a shallow collection only gets its own space rotated
    assert "warning: calibration skipped: disk full" in capsys.readouterr().err
