"""Funnel search: a short Matryoshka prefix shortlists documents, all their chunks are rescored at full size."""

from __future__ import annotations

import numpy as np
import pytest

from longvec.embedder import EmbedderConfig, load_embedder
from longvec.index import Collection, Document, InvalidInputError, UnsupportedShapeError

TOPICS = ["parsing", "sorting", "hashing", "networking", "storage", "rendering", "logging", "testing", "caching"]
QUERIES = ["hash the data", "render a frame", "write the log line", "sort items", "open a network socket"]


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    embedder = load_embedder(EmbedderConfig(backend="torch", precision="fp32", cache_dir=None))
    docs = []
    for i in range(60):
        a, b = TOPICS[i % len(TOPICS)], TOPICS[(i * 7 + 3) % len(TOPICS)]
        # several chunks per document, about different things: the best chunk decides
        parts = [
            f"def {t}_{i}_{j}(data):\n    # {t} step {j}: handle the {t} of the data\n" for j, t in enumerate((a, b))
        ]
        docs.append(Document(f"d{i}.py", "\n".join(p * 12 for p in parts)))
    with Collection.create(tmp_path_factory.mktemp("funnel") / "c", embedder=embedder, search_mode="dense") as c:
        c.add(docs)
        yield c


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


def test_a_funnel_wide_enough_is_the_exact_search(collection) -> None:
    doc_ids, row_doc, _, _ = collection.chunk_vectors()
    assert len(row_doc) >= 2 * len(doc_ids)  # documents of several chunks
    for funnel, exact in zip(
        collection.search_many(QUERIES, 5, funnel=32, oversample=12),  # 60 documents: all shortlisted
        collection.search_many(QUERIES, 5),
        strict=True,
    ):
        _same_ranking(funnel, exact)


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
        for q, exact in zip(QUERIES, collection.search_many(QUERIES, 5), strict=True)
    )
    assert found >= 0.8 * 5 * len(QUERIES)


def test_funnel_rescores_at_the_asked_dims(collection) -> None:
    exact = collection.search_many(QUERIES, 3, dim=128)
    funnels = collection.search_many(QUERIES, 3, dim=128, funnel=64, oversample=20)
    for funnel, expected in zip(funnels, exact, strict=True):
        _same_ranking(funnel, expected)


def test_bad_funnels_are_clear_errors(collection) -> None:
    with pytest.raises(UnsupportedShapeError, match="funnel 384 must be shorter"):
        collection.search("x", funnel=384)
    with pytest.raises(UnsupportedShapeError, match="funnel: dim 40 not in"):
        collection.search("x", funnel=40)
    with pytest.raises(InvalidInputError, match="needs mode 'dense' and agg 'maxsim'"):
        collection.search("x", funnel=64, mode="hybrid")
    with pytest.raises(InvalidInputError, match="needs mode 'dense' and agg 'maxsim'"):
        collection.search("x", funnel=64, agg="mean")
    with pytest.raises(InvalidInputError, match=r"oversample must be in \[1, 64\]"):
        collection.search("x", funnel=64, oversample=0)


def test_cli_and_rest_take_a_funnel(collection, capsys) -> None:
    import json

    from fastapi.testclient import TestClient

    from longvec.api.app import create_app
    from longvec.api.cli import main

    root = str(collection.root)
    engine = ["--backend", "torch", "--precision", "fp32"]
    assert main(["search", "--collection", root, "--query", QUERIES[0], "--funnel", "64", "--json", *engine]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert [h["doc_id"] for h in hits] == [h.doc_id for h in collection.search(QUERIES[0], funnel=64)]
    assert main(["search", "--collection", root, "--query", "x", "--funnel", "48", "--dim", "48"]) == 2
    assert "funnel 48 must be shorter than the dims searched (48)" in capsys.readouterr().err
    with TestClient(create_app(collection)) as client:
        r = client.post("/search", json={"query": QUERIES[0], "funnel": 64, "oversample": 3, "k": 4})
        assert r.status_code == 200
        assert [h["doc_id"] for h in r.json()["hits"]] == [
            h.doc_id for h in collection.search(QUERIES[0], k=4, funnel=64, oversample=3)
        ]
        r = client.post("/search", json={"query": "x", "funnel": 40})
        assert r.status_code == 422 and "funnel: dim 40 not in" in r.json()["error"]["message"]
        assert client.post("/search", json={"query": "x", "funnel": 64, "oversample": 0}).status_code == 422
