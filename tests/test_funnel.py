"""Funnel search: a short Matryoshka prefix shortlists documents, all their chunks are rescored at full size."""

from __future__ import annotations

import json

import numpy as np
import pytest

import longvec.index.collection as collection_module
from longvec.embedder import EmbedderConfig, load_embedder
from longvec.index import Collection, Document, InvalidInputError, UnsupportedShapeError
from longvec.index.search import _best_chunks, rank_funnel
from longvec.index.store import ChunkRow
from longvec.index.vectors import VectorIndex

TOPICS = ["parsing", "sorting", "hashing", "networking", "storage", "rendering", "logging", "testing", "caching"]
QUERIES = ["hash the data", "render a frame", "write the log line", "sort items", "open a network socket"]
ENGINE = ["--backend", "torch", "--precision", "fp32"]


def _docs(n: int) -> list[Document]:
    docs = []
    for i in range(n):
        a, b = TOPICS[i % len(TOPICS)], TOPICS[(i * 7 + 3) % len(TOPICS)]
        # several chunks per document, about different things: the best chunk decides
        parts = [
            f"def {t}_{i}_{j}(data):\n    # {t} step {j}: handle the {t} of the data\n" for j, t in enumerate((a, b))
        ]
        docs.append(Document(f"d{i}.py", "\n".join(p * 12 for p in parts)))
    return docs


@pytest.fixture(scope="module")
def embedder():
    return load_embedder(EmbedderConfig(backend="torch", precision="fp32", cache_dir=None))


@pytest.fixture(scope="module")
def collection(tmp_path_factory, embedder):
    # the default search mode (hybrid): a funnel without a mode searches densely
    with Collection.create(tmp_path_factory.mktemp("funnel") / "c", embedder=embedder) as c:
        assert c.manifest.search_mode == "hybrid"
        c.add(_docs(60))
        yield c


@pytest.fixture
def funnel_calls(monkeypatch):
    """The arguments of every ``rank_funnel`` call a collection makes."""
    calls: list[dict] = []

    def spy(*args, **kwargs):
        calls.append({"args": args, **kwargs})
        return rank_funnel(*args, **kwargs)

    monkeypatch.setattr(collection_module, "rank_funnel", spy)
    return calls


def _exact_doc_scores(c: Collection, query: str) -> dict[str, float]:
    doc_ids, row_doc, vectors, _ = c.chunk_vectors()
    scores = vectors @ c.embedder.encode_queries([query])[0]
    best = np.full(len(doc_ids), -2.0)
    np.maximum.at(best, row_doc, scores)
    return dict(zip(doc_ids, best.tolist(), strict=True))


def _same_ranking(funnel: list, exact: list) -> None:
    """Same documents, order and scores; each document's chunks start with the exact search's (the funnel reads
    all of a document's chunks, the exact search only those in its fetch, so it may list more of them)."""
    assert [(h.doc_id, round(h.score, 5)) for h in funnel] == [(h.doc_id, round(h.score, 5)) for h in exact]
    for f, e in zip(funnel, exact, strict=True):
        assert [c.chunk_id for c in f.chunks[: len(e.chunks)]] == [c.chunk_id for c in e.chunks]


@pytest.mark.parametrize("shortlist", [32, "binary"])
def test_a_funnel_wide_enough_is_the_exact_search(collection, funnel_calls, shortlist) -> None:
    doc_ids, row_doc, _, _ = collection.chunk_vectors()
    assert len(row_doc) >= 2 * len(doc_ids)  # documents of several chunks
    for funnel, exact in zip(
        collection.search_many(QUERIES, 5, funnel=shortlist, oversample=12),  # 60 documents: all shortlisted
        collection.search_many(QUERIES, 5, mode="dense"),
        strict=True,
    ):
        _same_ranking(funnel, exact)
    assert len(funnel_calls) == 1 and funnel_calls[0]["oversample"] == 12


def test_a_binary_funnel_shortlists_by_sign_bits(collection) -> None:
    from longvec.index.vectors import _binary_rotation

    doc_ids, row_doc, vectors, _ = collection.chunk_vectors()
    centre, rotation = vectors.mean(axis=0), _binary_rotation(vectors.shape[1])  # centred on every stored vector

    def signs(v: np.ndarray) -> np.ndarray:
        return np.where((v - centre) @ rotation > 0, 1.0, -1.0)

    for query in QUERIES:
        q = collection.embedder.encode_queries([query])[0]
        hamming_scores = signs(vectors) @ signs(q[None, :])[0] / len(q)
        best: dict[str, float] = {}
        for row, score in zip(row_doc, hamming_scores.tolist(), strict=True):
            best[doc_ids[row]] = max(best.get(doc_ids[row], -2.0), score)
        cut = sorted(best.values(), reverse=True)[4]  # the 5th document's best sign-bit score
        full = _exact_doc_scores(collection, query)
        hits = collection.search(query, k=5, funnel="binary", oversample=1)
        assert all(best[h.doc_id] >= cut for h in hits)  # shortlisted by sign bits (ties at the cut either way)
        assert [h.score for h in hits] == pytest.approx([full[h.doc_id] for h in hits], abs=1e-5)


def test_an_oversample_of_one_reranks_the_short_prefix_top_k(collection) -> None:
    for query in QUERIES:
        shortlisted = {h.doc_id for h in collection.search(query, k=5, dim=32, mode="dense")}
        full = _exact_doc_scores(collection, query)
        hits = collection.search(query, k=5, funnel=32, oversample=1)
        assert {h.doc_id for h in hits} == shortlisted  # the same documents as the 32-dim search ...
        expected = sorted(shortlisted, key=lambda d: -full[d])  # ... ranked by the full-size maxsim
        assert [h.doc_id for h in hits] == expected
        assert [h.score for h in hits] == pytest.approx([full[d] for d in expected], abs=1e-5)


def test_funnel_hits_score_by_every_chunk_of_the_document(collection) -> None:
    for query in QUERIES:
        scores = _exact_doc_scores(collection, query)
        hits = collection.search(query, k=5, funnel=32, oversample=2)
        assert len(hits) == 5
        for hit in hits:  # the full-size maxsim over all the document's chunks, not the shortlist's view of it
            assert hit.score == pytest.approx(scores[hit.doc_id], abs=1e-5)
            assert hit.chunks[0].score == pytest.approx(hit.score, abs=1e-6)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    # recall of the true top 5 over the queries, from a 10-document shortlist at 32 of 384 dims
    found = sum(
        len({h.doc_id for h in collection.search(q, k=5, funnel=32, oversample=2)} & {h.doc_id for h in exact})
        for q, exact in zip(QUERIES, collection.search_many(QUERIES, 5, mode="dense"), strict=True)
    )
    assert found >= 0.8 * 5 * len(QUERIES)


def test_funnel_rescores_at_the_asked_dims(collection) -> None:
    exact = collection.search_many(QUERIES, 3, dim=128, mode="dense")
    funnels = collection.search_many(QUERIES, 3, dim=128, funnel=64, oversample=20)
    for funnel, expected in zip(funnels, exact, strict=True):
        _same_ranking(funnel, expected)


def _toy(batch: int):
    """Three documents whose short (2-dim) and full (4-dim) vectors disagree about their best chunks: ``a``'s
    best chunk is 1 by the prefix but 2 at full size, ``b`` heads the shortlist but loses the rescoring, and ``c``
    would win at full size but is last by the prefix."""
    short = {  # against the short query [1, 0]
        1: [0.8, 0.6],  # a's best prefix: 0.8
        2: [0.0, 1.0],
        3: [1.0, 0.0],  # b's: 1.0, the best of all
        4: [0.0, 1.0],
        5: [0.6, 0.8],  # c's: 0.6, so c is cut from a shortlist of two
        6: [0.0, 1.0],
    }
    full = {  # against the full query [1, 0, 0, 0.9]
        1: [0.6, 0.0, 0.8, 0.0],  # 0.6
        2: [0.3, 0.0, 0.0, 0.954],  # 1.159: a's best at full size
        3: [0.9, 0.0, 0.0, 0.0],  # 0.9
        4: [0.0, 1.0, 0.0, 0.0],  # 0
        5: [0.0, 0.0, 1.0, 0.0],  # 0
        6: [0.35, 0.0, 0.0, 0.937],  # 1.193: the best of all at full size
    }
    docs = {1: "a", 2: "a", 3: "b", 4: "b", 5: "c", 6: "c"}
    spans = {"a": (1, 2), "b": (3, 4), "c": (5, 6)}
    ids = np.array(sorted(full), dtype=np.int64)
    table = np.array([full[i] for i in ids], dtype=np.float32)
    index = VectorIndex(2, use_gpu=False)
    index.add(ids, np.array([short[i] for i in ids], dtype=np.float32))
    looked_up: list[list[int]] = []

    def lookup(chunk_ids):
        looked_up.append(sorted(chunk_ids))
        return {i: ChunkRow(i, docs[i], i, 10 * i, 10 * i + 5, None) for i in chunk_ids}

    def range_vectors(ranges):
        wanted = np.concatenate([ids[(ids >= a) & (ids <= b)] for a, b in ranges])
        for s in range(0, len(wanted), batch):
            part = wanted[s : s + batch]
            yield part, table[part - 1]

    def run(k, oversample, chunks_per_doc=2):
        looked_up.clear()
        short_q, q = np.array([[1.0, 0.0]], np.float32), np.array([[1.0, 0.0, 0.0, 0.9]], np.float32)
        return rank_funnel(
            index,
            short_q,
            q,
            k,
            oversample=oversample,
            chunks_per_doc=chunks_per_doc,
            max_id=6,
            lookup=lookup,
            ranges=lambda doc_ids: [spans[d] for d in doc_ids],
            range_vectors=range_vectors,
        )[0]

    return run, looked_up


@pytest.mark.parametrize("batch", [1, 2, 6])  # a document split across batches, or all of them in one
def test_rank_funnel_ranks_the_shortlist_by_each_documents_best_full_chunk(batch) -> None:
    run, looked_up = _toy(batch)
    hits = run(k=2, oversample=1)  # shortlist: b (0.9 by prefix), a (0.6)
    assert [h.doc_id for h in hits] == ["a", "b"]  # a by chunk 2, which did not decide its place in the shortlist
    assert [c.chunk_id for c in hits[0].chunks] == [2, 1]
    assert hits[0].score == pytest.approx(0.3 + 0.954 * 0.9, abs=1e-5)
    assert hits[0].chunks[1].score == pytest.approx(0.6, abs=1e-6)
    assert hits[1].score == pytest.approx(0.9, abs=1e-6)
    assert looked_up[-1] == [1, 2, 3, 4]  # rows of the returned chunks only
    hits = run(k=1, oversample=1, chunks_per_doc=1)  # shortlist: b alone
    assert [(h.doc_id, [c.chunk_id for c in h.chunks]) for h in hits] == [("b", [3])]
    assert looked_up[-1] == [3]
    hits = run(k=1, oversample=3, chunks_per_doc=1)  # everything shortlisted: c's chunk 6 wins at full size
    assert [(h.doc_id, [c.chunk_id for c in h.chunks]) for h in hits] == [("c", [6])]


def test_best_chunks_keeps_each_documents_best_across_batches() -> None:
    rng = np.random.default_rng(0)
    spans = [(1, 7), (8, 8), (9, 20)]
    vectors = rng.normal(size=(20, 4)).astype(np.float32)
    query = rng.normal(size=4).astype(np.float32)
    ids = np.arange(1, 21)
    batches = [(ids[s : s + 3], vectors[s : s + 3]) for s in range(0, 20, 3)]
    got_ids, got_scores, got_docs = _best_chunks(query, spans, batches, 2)
    scores = vectors @ query
    expected = []
    for d, (a, b) in enumerate(spans):
        mine = sorted(range(a, b + 1), key=lambda i: (-scores[i - 1], i))[:2]
        expected += [(float(scores[i - 1]), i, d) for i in mine]
    expected.sort(key=lambda e: (-e[0], e[1]))
    assert got_ids.tolist() == [i for _, i, _ in expected]
    assert got_docs.tolist() == [d for _, _, d in expected]
    np.testing.assert_allclose(got_scores, [s for s, _, _ in expected], rtol=1e-6)


def test_a_funnel_never_returns_or_scores_deleted_documents(tmp_path, embedder) -> None:
    with Collection.create(tmp_path / "c", embedder=embedder) as c:
        c.add(_docs(12))
        before = c.search_many(QUERIES, 3, funnel=64, oversample=4)
        gone = {hits[0].doc_id for hits in before}
        assert c.delete_many(sorted(gone)) == len(gone)
        c.add([Document("d0.py", "def hash_it(data):\n    return hash(data)\n")])  # a replacement, new chunk ids
        for funnel, exact in zip(
            c.search_many(QUERIES, 3, funnel=64, oversample=4),
            c.search_many(QUERIES, 3, mode="dense"),
            strict=True,
        ):
            assert not {h.doc_id for h in funnel} & (gone - {"d0.py"})
            _same_ranking(funnel, exact)  # 12 documents at most: every one is shortlisted


def test_bad_funnels_are_clear_errors(collection) -> None:
    with pytest.raises(UnsupportedShapeError, match="funnel 384 must be shorter"):
        collection.search("x", funnel=384)
    with pytest.raises(UnsupportedShapeError, match="funnel: dim 40 not in"):
        collection.search("x", funnel=40)
    with pytest.raises(UnsupportedShapeError, match="funnel: dim 32.0 not in"):
        collection.search("x", funnel=32.0)
    with pytest.raises(UnsupportedShapeError, match=r"funnel: dim bits not in .*\(or 'binary'\)"):
        collection.search("x", funnel="bits")
    with pytest.raises(InvalidInputError, match="needs mode 'dense' and agg 'maxsim'"):
        collection.search("x", funnel=64, mode="hybrid")
    with pytest.raises(InvalidInputError, match="needs mode 'dense' and agg 'maxsim'"):
        collection.search("x", funnel=64, agg="mean")
    for bad in (0, 65, True, 2.0):
        with pytest.raises(InvalidInputError, match=r"oversample must be an integer in \[1, 64\]"):
            collection.search("x", funnel=64, oversample=bad)
    with pytest.raises(InvalidInputError, match="oversample \\* k = 5000 documents, more than 4096"):
        collection.search("x", k=500, funnel=64, oversample=10)
    with pytest.raises(InvalidInputError, match="give a funnel too"):
        collection.search("x", oversample=8)


def test_cli_takes_a_funnel(collection, funnel_calls, capsys) -> None:
    from longvec.api.cli import main

    root = str(collection.root)
    assert main(["search", "--collection", root, "--query", QUERIES[0], "--funnel", "64", "--json", *ENGINE]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert len(funnel_calls) == 1 and funnel_calls[0]["oversample"] == 4
    assert main(["search", "--collection", root, "--query", QUERIES[0], "--funnel", "binary", "--json", *ENGINE]) == 0
    assert len(json.loads(capsys.readouterr().out)["hits"]) == 10 and len(funnel_calls) == 2
    assert [h["doc_id"] for h in hits] == [h.doc_id for h in collection.search(QUERIES[0], funnel=64)]
    for argv, message in [
        (["--funnel", "48", "--dim", "48"], "funnel 48 must be shorter than the dims searched (48)"),
        (["--funnel", "64", "--oversample", "0"], "oversample must be an integer in [1, 64], got 0"),
        (["--oversample", "8"], "give a funnel too"),
        (["--funnel", "64", "--mode", "lexical"], "needs mode 'dense'"),
    ]:
        assert main(["search", "--collection", root, "--query", "x", *argv]) == 2
        assert message in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:  # argparse's own usage error
        main(["search", "--collection", root, "--query", "x", "--funnel", "bits"])
    assert exit_info.value.code == 2
    assert "expected a prefix size or 'binary', got 'bits'" in capsys.readouterr().err
    assert len(funnel_calls) == 3  # the bad ones never reached a search


def test_rest_takes_a_funnel(collection, funnel_calls) -> None:
    from fastapi.testclient import TestClient

    from longvec.api.app import create_app

    with TestClient(create_app(collection)) as client:
        r = client.post("/search", json={"query": QUERIES[0], "funnel": 64, "oversample": 3, "k": 4})
        assert r.status_code == 200
        assert len(funnel_calls) == 1 and funnel_calls[0]["oversample"] == 3
        assert [h["doc_id"] for h in r.json()["hits"]] == [
            h.doc_id for h in collection.search(QUERIES[0], k=4, funnel=64, oversample=3)
        ]
        r = client.post("/search", json={"query": "x", "funnel": 40})
        assert r.status_code == 422 and "funnel: dim 40 not in" in r.json()["error"]["message"]
        r = client.post("/search", json={"query": "x", "funnel": 64, "mode": "hybrid"})
        assert r.status_code == 400 and "needs mode 'dense'" in r.json()["error"]["message"]
        r = client.post("/search", json={"query": "x", "oversample": 8})
        assert r.status_code == 400 and "give a funnel too" in r.json()["error"]["message"]
        r = client.post("/search", json={"query": QUERIES[0], "funnel": "binary", "k": 3})
        assert r.status_code == 200 and len(r.json()["hits"]) == 3
        for bad in ({"oversample": 0}, {"oversample": True}, {"oversample": 2.0}, {"funnel": 64.0}, {"funnel": "6"}):
            assert client.post("/search", json={"query": "x", "funnel": 64, **bad}).status_code == 422, bad
        assert len(funnel_calls) == 3  # the requests and the comparison: no bad request reached a search
