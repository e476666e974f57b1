from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from longvec.api.app import create_app
from longvec.index import Collection


@pytest.fixture
def client(tmp_path, fake_embedder):
    collection = Collection.create(tmp_path / "c", embedder=fake_embedder)
    with TestClient(create_app(collection)) as c:
        yield c


def test_round_trip(client):
    assert client.get("/health").json() == {"status": "ok"}
    docs = [
        {"doc_id": "src/a.py", "text": "def alpha():\n    return 1\n", "metadata": {"team": "x"}},
        {"id": "notes/b.md", "text": "The beta release notes. " * 20},
    ]
    r = client.post("/documents", json={"documents": docs})
    assert r.status_code == 200
    assert r.json()["added"] == 2
    r = client.post("/search", json={"query": "beta", "k": 5})
    assert r.status_code == 200
    hits = r.json()["hits"]
    assert hits[0]["doc_id"] == "notes/b.md"
    assert set(hits[0]["chunks"][0]) == {"chunk_id", "start", "end", "score", "symbol"}
    got = client.get("/documents/src/a.py").json()
    assert got["text"] == docs[0]["text"] and got["metadata"] == {"team": "x"} and got["language"] == "python"
    assert client.post("/documents", json={"documents": docs[:1]}).json()["unchanged"] == 1
    assert client.delete("/documents/src/a.py").json() == {"deleted": "src/a.py"}
    assert client.get("/documents/src/a.py").status_code == 404
    info = client.get("/info").json()
    assert info["documents"] == 1 and info["dim"] == 8
    assert info["limits"]["max_k"] == 1000 and info["limits"]["max_docs_per_request"] == 256


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "message"),
    [
        ("post", "/search", {"query": "", "k": 5}, 422, "query"),
        ("post", "/search", {"query": "x", "k": 0}, 422, "k"),
        ("post", "/search", {"query": "x", "k": 5, "bogus": 1}, 422, "bogus"),
        ("post", "/search", {"query": "   "}, 400, "non-empty string"),
        ("post", "/documents", {"documents": []}, 422, "documents"),
        ("post", "/documents", {"documents": [{"doc_id": "a"}]}, 422, "text"),
        (
            "post",
            "/documents",
            {"documents": [{"doc_id": "a", "text": "x", "metadata": [1]}]},
            422,
            "metadata",
        ),
        ("get", "/documents/missing", None, 404, "no document 'missing'"),
        ("delete", "/documents/missing", None, 404, "no document 'missing'"),
    ],
)
def test_errors_are_json_with_a_clear_message(client, method, path, body, status, message):
    kwargs = {"json": body} if body is not None else {}
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == status
    err = r.json()["error"]
    assert message in err["message"] and err["type"]


def test_bad_write_keeps_stored_documents(client):
    client.post("/documents", json={"documents": [{"doc_id": "keep", "text": "alpha"}]})
    bad = {"documents": [{"doc_id": "keep", "text": "gamma"}, {"doc_id": "x", "text": 5}]}
    assert client.post("/documents", json=bad).status_code == 422
    assert client.get("/documents/keep").json()["text"] == "alpha"


def test_search_options_dim_and_agg(client):
    docs = [{"doc_id": "a", "text": "alpha alpha beta. " * 10}, {"doc_id": "b", "text": "beta gamma. " * 10}]
    assert client.post("/documents", json={"documents": docs}).status_code == 200
    r = client.post("/search", json={"query": "beta", "k": 2, "agg": "mean"})
    assert r.status_code == 200
    hits = r.json()["hits"]
    assert [h["doc_id"] for h in hits] == ["b", "a"] and all(h["chunks"] == [] for h in hits)
    r = client.post("/search", json={"query": "beta", "agg": "median"})
    assert r.status_code == 422
    r = client.post("/search", json={"query": "beta", "dim": 4})
    assert r.status_code == 422 and "dim 4 not in (8,)" in r.json()["error"]["message"]
    assert client.get("/info").json()["aggregations"] == ["maxsim", "mean", "max", "weighted"]
