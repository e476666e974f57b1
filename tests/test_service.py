"""The service around the REST API: readiness, API keys, limits, metrics, request ids and logs, the model worker's
micro-batching and bounded queue, OpenAI-compatible embeddings (with the real ``openai`` client), the search
page's HTML, and concurrent searches during writes against a live server."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Iterator

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient

from longvec.api.app import create_app
from longvec.api.service import JsonFormatter, ServiceSettings
from longvec.api.worker import ModelWorker, QueueFullError, WorkerStoppedError
from longvec.index import Collection, Document

from fakes import WordHashEmbedder
from servers import live

READ, WRITE = "read-key-0123456789abcdef", "write-key-0123456789abcdef"


def _until(done, seconds: float = 10) -> None:
    """Wait for ``done()`` (polled), failing the test after ``seconds``."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


@pytest.fixture
def collection(tmp_path, tokenizer):
    c = Collection.create(tmp_path / "c", embedder=WordHashEmbedder(tokenizer, max_tokens=64), search_mode="dense")
    c.add([Document(f"d{i}", f"parse socket {w} cache render number {i}") for i, w in enumerate("abcdefghij")])
    return c


# -- readiness ---------------------------------------------------------------------------------------------


def test_not_ready_until_the_collection_and_model_are_loaded(collection) -> None:
    release = threading.Event()

    def slow_open() -> Collection:
        release.wait(10)
        return collection

    with TestClient(create_app(open_collection=slow_open)) as client:
        assert client.get("/livez").json() == {"status": "alive"}
        r = client.get("/readyz")
        assert (r.status_code, r.json()["status"], r.headers["retry-after"]) == (503, "loading", "5")
        assert client.get("/health").status_code == 503  # its older name, for existing clients
        r = client.post("/search", json={"query": "socket"})
        assert r.status_code == 503 and r.json()["error"]["type"] == "NotReadyError"
        assert r.headers["retry-after"] == "5"
        release.set()
        _until(lambda: client.get("/readyz").status_code == 200)
        assert client.post("/search", json={"query": "socket"}).status_code == 200
        assert client.get("/health").json() == {"status": "ok"}
        assert "longvec_ready 1.0" in client.get("/metrics").text


def test_a_collection_that_fails_to_load_says_why(tmp_path) -> None:
    def failing() -> Collection:
        return Collection.open(tmp_path / "missing")

    with TestClient(create_app(open_collection=failing)) as client:
        deadline = time.monotonic() + 10
        while (body := client.get("/readyz").json())["status"] == "loading":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert body["status"] == "failed" and "no collection at" in body["error"]
        r = client.post("/search", json={"query": "x"})
        assert r.status_code == 503 and "no collection at" in r.json()["error"]["message"]


# -- API keys ----------------------------------------------------------------------------------------------


def test_auth_off_by_default(collection) -> None:
    with TestClient(create_app(collection)) as client:
        assert client.post("/search", json={"query": "socket"}).status_code == 200
        assert client.post("/documents", json={"documents": [{"doc_id": "n", "text": "new"}]}).status_code == 200
        assert client.get("/info").json()["auth"] is False


def test_read_and_write_keys(collection) -> None:
    settings = ServiceSettings(read_keys=(READ,), write_keys=(WRITE,))
    doc = {"documents": [{"doc_id": "n", "text": "new socket"}]}
    with TestClient(create_app(collection, settings=settings)) as client:
        for path in ("/livez", "/readyz", "/health", "/", "/openapi.json"):
            assert client.get(path).status_code == 200, path  # public
        r = client.post("/search", json={"query": "socket"})
        assert r.status_code == 401 and r.headers["www-authenticate"].startswith("Bearer")
        assert r.json()["error"]["type"] == "Unauthorized"
        wrong = {"Authorization": "Bearer " + READ[:-1] + "x"}
        assert client.post("/search", json={"query": "socket"}, headers=wrong).status_code == 401
        basic = {"Authorization": "Basic " + base64.b64encode(b"u:" + READ.encode()).decode()}
        assert client.post("/search", json={"query": "socket"}, headers=basic).status_code == 401
        read, write = {"Authorization": f"Bearer {READ}"}, {"Authorization": f"Bearer {WRITE}"}
        assert client.post("/search", json={"query": "socket"}, headers=read).status_code == 200
        assert client.get("/metrics", headers=read).status_code == 200
        assert client.get("/metrics").status_code == 401
        r = client.post("/documents", json=doc, headers=read)
        assert r.status_code == 403 and "write key" in r.json()["error"]["message"]
        assert client.delete("/documents/d1", headers=read).status_code == 403
        assert client.post("/documents/delete", json={"doc_ids": ["d1"]}, headers=read).status_code == 403
        assert collection.counts()["documents"] == 10  # nothing written by a read key
        assert client.post("/documents", json=doc, headers=write).status_code == 200
        assert client.post("/search", json={"query": "socket"}, headers=write).status_code == 200  # writers read
        assert client.get("/info", headers=read).json()["auth"] is True


def test_keys_from_the_environment_and_files(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("LONGVEC_API_KEY", WRITE)
    monkeypatch.delenv("LONGVEC_READ_KEY", raising=False)
    monkeypatch.delenv("LONGVEC_WRITE_KEY", raising=False)
    keys = tmp_path / "read.keys"
    keys.write_text(f"# rotated monthly\n{READ}\n\n{READ.upper()}\n")
    s = ServiceSettings.from_env(read_key_file=keys)
    assert s.write_keys == (WRITE,) and s.read_keys == (READ, READ.upper()) and s.auth
    keys.write_text("short\n")
    with pytest.raises(ValueError, match="at least 16 characters"):
        ServiceSettings.from_env(read_key_file=keys)


# -- limits --------------------------------------------------------------------------------------------------


def test_body_size_limit_from_the_header_and_while_streaming(collection) -> None:
    settings = ServiceSettings(max_body_bytes=2_000)
    big = {"documents": [{"doc_id": "big", "text": "socket " * 1_000}]}
    with TestClient(create_app(collection, settings=settings)) as client:
        r = client.post("/documents", json=big)
        assert r.status_code == 413 and r.json()["error"]["type"] == "PayloadTooLarge"

        def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies as the body arrives
            body = json.dumps(big).encode()
            for i in range(0, len(body), 500):
                yield body[i : i + 500]

        r = client.post("/documents", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert client.post("/documents", json={"documents": [{"doc_id": "ok", "text": "x y"}]}).status_code == 200
        assert client.get("/documents/big").status_code == 404


def test_characters_per_request_limit(collection) -> None:
    settings = ServiceSettings(max_request_chars=100)
    docs = {"documents": [{"doc_id": f"x{i}", "text": "socket " * 10} for i in range(2)]}
    with TestClient(create_app(collection, settings=settings)) as client:
        r = client.post("/documents", json=docs)
        assert r.status_code == 400 and "over the limit of 100" in r.json()["error"]["message"]
        assert client.post("/documents", json={"documents": docs["documents"][:1]}).status_code == 200


def test_requests_beyond_the_in_flight_limit_get_429(collection) -> None:
    settings = ServiceSettings(max_in_flight=1)
    inner = collection.embedder
    entered, release = threading.Event(), threading.Event()

    class Slow:
        def __getattr__(self, name):
            return getattr(inner, name)

        def encode_queries(self, texts, **kw):
            entered.set()
            release.wait(10)
            return inner.encode_queries(texts, **kw)

    collection.embedder = Slow()
    app = create_app(collection, settings=settings)
    with live(app) as url:
        first = threading.Thread(target=lambda: httpx.post(f"{url}/search", json={"query": "socket"}, timeout=20))
        first.start()
        assert entered.wait(10)
        r = httpx.post(f"{url}/search", json={"query": "socket"}, timeout=20)
        assert (r.status_code, r.headers["retry-after"]) == (429, "1")
        assert r.json()["error"]["type"] == "TooManyRequests"
        assert httpx.get(f"{url}/livez").status_code == 200  # public routes are never refused
        release.set()
        first.join(10)
        assert httpx.post(f"{url}/search", json={"query": "socket"}).status_code == 200


# -- the model worker --------------------------------------------------------------------------------------


class _Gated:
    """An embedder whose first query encode waits for a gate: requests pile up behind it."""

    def __init__(self, inner) -> None:
        self.inner, self.gate, self.entered, self.calls = inner, threading.Event(), threading.Event(), []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_queries(self, texts, **kw):
        self.entered.set()
        self.gate.wait(10)
        self.calls.append(("query", len(texts), threading.current_thread().name))
        return self.inner.encode_queries(texts, **kw)

    def encode_documents(self, texts, **kw):
        self.calls.append(("document", len(texts), threading.current_thread().name))
        return self.inner.encode_documents(texts, **kw)


def test_the_worker_coalesces_waiting_queries_and_runs_them_before_documents(tokenizer) -> None:
    gated = _Gated(WordHashEmbedder(tokenizer))
    worker = ModelWorker(gated, max_pending=100, max_batch=64, slice_texts=4)
    try:
        results: dict[str, np.ndarray] = {}
        first = threading.Thread(target=lambda: results.update(first=worker.encode_queries(["hold"])))
        first.start()
        assert gated.entered.wait(10)
        docs = threading.Thread(
            target=lambda: results.update(docs=worker.encode_documents([f"d{i}" for i in range(10)]))
        )
        docs.start()
        time.sleep(0.1)  # the document slices are queued before the queries below
        threads = [
            threading.Thread(target=lambda i=i: results.update({f"q{i}": worker.encode_queries([f"query {i}", "x"])}))
            for i in range(8)
        ]
        for t in threads:
            t.start()
        _until(lambda: worker.depth >= 3 + 8)
        gated.gate.set()
        for t in [first, docs, *threads]:
            t.join(10)
        # one model call for the eight waiting requests (16 texts), ahead of the three document slices
        assert gated.calls[:2] == [("query", 1, "longvec-model"), ("query", 16, "longvec-model")]
        assert [c[:2] for c in gated.calls[2:]] == [("document", 4), ("document", 4), ("document", 2)]
        assert worker.batches == 2 and worker.queries == 17
        expected = WordHashEmbedder(gated.inner.tokenizer)
        for i in range(8):
            np.testing.assert_allclose(results[f"q{i}"], expected.encode_queries([f"query {i}", "x"]), atol=1e-6)
        np.testing.assert_allclose(results["docs"], expected.encode_documents([f"d{i}" for i in range(10)]), atol=1e-6)
    finally:
        gated.gate.set()
        worker.close()


def test_the_worker_coalesces_small_document_jobs_up_to_a_slice(tokenizer) -> None:
    gated = _Gated(WordHashEmbedder(tokenizer))
    worker = ModelWorker(gated, slice_texts=4)
    try:
        hold = threading.Thread(target=worker.encode_queries, args=(["hold"],))
        hold.start()
        assert gated.entered.wait(10)
        out: dict[int, np.ndarray] = {}
        jobs = [
            threading.Thread(target=lambda i=i: out.update({i: worker.encode_documents([f"e{i}"])})) for i in range(6)
        ]
        for t in jobs:
            t.start()
        _until(lambda: worker.depth >= 6)
        gated.gate.set()
        for t in [hold, *jobs]:
            t.join(10)
        assert [c[:2] for c in gated.calls[1:]] == [("document", 4), ("document", 2)]  # six requests, two calls
        expected = WordHashEmbedder(tokenizer)
        for i in range(6):
            np.testing.assert_allclose(out[i], expected.encode_documents([f"e{i}"]), atol=1e-6)
    finally:
        gated.gate.set()
        worker.close()


def test_the_worker_queue_is_bounded_and_errors_reach_the_caller(tokenizer) -> None:
    gated = _Gated(WordHashEmbedder(tokenizer))
    worker = ModelWorker(gated, max_pending=2)
    try:
        threads = [threading.Thread(target=worker.encode_queries, args=([f"q{i}"],)) for i in range(3)]
        threads[0].start()
        assert gated.entered.wait(10)  # one in the model, two waiting
        for t in threads[1:]:
            t.start()
        _until(lambda: worker._waiting_queries >= 2)
        with pytest.raises(QueueFullError, match="queue is full"):
            worker.encode_queries(["one too many"])
        gated.gate.set()
        for t in threads:
            t.join(10)
        assert worker._waiting_queries == 0
    finally:
        gated.gate.set()
        worker.close()


class _Failing:
    """An embedder that fails inside the worker on any text containing "boom"."""

    def __init__(self, inner) -> None:
        self.inner, self.calls = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def encode_queries(self, texts, **kw):
        self.calls.append(len(texts))
        if any("boom" in t for t in texts):
            raise ValueError("boom in the model")
        return self.inner.encode_queries(texts, **kw)


def test_a_failing_request_fails_alone_and_the_worker_goes_on(tokenizer) -> None:
    failing = _Failing(WordHashEmbedder(tokenizer))
    gated = _Gated(failing)
    worker = ModelWorker(gated)
    try:
        out: dict[str, object] = {}

        def call(name: str, texts: list[str]) -> None:
            try:
                out[name] = worker.encode_queries(texts)
            except ValueError as exc:
                out[name] = exc

        hold = threading.Thread(target=call, args=("hold", ["hold"]))
        hold.start()
        assert gated.entered.wait(10)
        threads = [threading.Thread(target=call, args=(n, [n])) for n in ("good one", "boom", "good two")]
        for t in threads:
            t.start()
        _until(lambda: worker.depth >= 3)
        gated.gate.set()
        for t in [hold, *threads]:
            t.join(10)
        assert isinstance(out["boom"], ValueError) and str(out["boom"]) == "boom in the model"
        assert out["good one"].shape == (1, 48) and out["good two"].shape == (1, 48)
        assert failing.calls == [1, 3, 1, 1, 1]  # coalesced, failed, retried one by one
        assert worker.encode_queries(["after"]).shape == (1, 48) and worker._waiting_queries == 0
    finally:
        gated.gate.set()
        worker.close()


def test_documents_progress_under_query_load_and_close_refuses_new_work(tokenizer) -> None:
    gated = _Gated(WordHashEmbedder(tokenizer))
    worker = ModelWorker(gated, max_batch=1, slice_texts=2)
    try:
        hold = threading.Thread(target=worker.encode_queries, args=(["hold"],))
        hold.start()
        assert gated.entered.wait(10)
        docs = threading.Thread(target=worker.encode_documents, args=([f"d{i}" for i in range(4)],))
        docs.start()
        queries = [threading.Thread(target=worker.encode_queries, args=([f"q{i}"],)) for i in range(10)]
        for t in queries:
            t.start()
        _until(lambda: worker.depth >= 2 + 10)
        gated.gate.set()
        for t in [hold, docs, *queries]:
            t.join(10)
        kinds = [c[0] for c in gated.calls]
        # a document slice after every 4 query calls, not after all the queries
        assert kinds[:11] == ["query"] * 4 + ["document"] + ["query"] * 4 + ["document"] + ["query"]
    finally:
        gated.gate.set()
        worker.close()
    with pytest.raises(WorkerStoppedError, match="shutting down"):
        worker.encode_queries(["late"])


# -- observability -----------------------------------------------------------------------------------------


def test_metrics_and_request_ids(collection, caplog) -> None:
    with TestClient(create_app(collection)) as client, caplog.at_level(logging.INFO, logger="longvec.access"):
        r = client.post("/search", json={"query": "socket"}, headers={"X-Request-ID": "trace-42"})
        assert r.headers["x-request-id"] == "trace-42"
        generated = client.post("/search", json={"query": ""}).headers["x-request-id"]
        assert len(generated) == 32 and generated != "trace-42"
        assert client.post("/search", json={"query": "x"}, headers={"X-Request-ID": "bad id\n"}).headers[
            "x-request-id"
        ] not in ("bad id\n", "bad id")
        client.post("/documents", json={"documents": [{"doc_id": "m", "text": "metrics socket words"}]})
        text = client.get("/metrics").text
    assert 'longvec_requests_total{method="POST",route="/search",status="200"} 2.0' in text
    assert 'longvec_requests_total{method="POST",route="/search",status="422"} 1.0' in text
    assert 'longvec_request_seconds_count{method="POST",route="/search"} 3.0' in text
    assert 'longvec_documents{collection="c"} 11.0' in text and 'longvec_chunks{collection="c"} 11.0' in text
    assert 'longvec_tokens_encoded_total{kind="documents"}' in text and "longvec_queue_depth 0.0" in text
    assert 'longvec_tokens_encoded_total{kind="queries"}' in text
    assert "longvec_query_batches_total 2.0" in text and "longvec_query_requests_total 2.0" in text
    record = next(r for r in caplog.records if getattr(r, "request_id", None) == "trace-42")
    line = json.loads(JsonFormatter().format(record))
    assert line["route"] == "/search" and line["status"] == 200 and line["request_id"] == "trace-42"
    assert line["level"] == "info" and line["ms"] >= 0


# -- OpenAI-compatible embeddings ----------------------------------------------------------------------------


def test_embeddings_endpoint(collection) -> None:
    model = collection.manifest.model
    chunking = create_app(collection, settings=ServiceSettings(long_inputs="chunk"), close_on_shutdown=False)
    with TestClient(chunking) as client:
        assert client.get("/v1/models").json()["data"][0]["id"] == model
        r = client.post("/v1/embeddings", json={"model": model, "input": "parse socket a cache render number 0"})
        body = r.json()
        assert r.status_code == 200 and body["object"] == "list" and body["model"] == model
        (item,) = body["data"]
        v = np.array(item["embedding"], np.float32)
        assert v.shape == (48,) and abs(np.linalg.norm(v) - 1) < 1e-5
        assert body["usage"]["prompt_tokens"] == body["usage"]["total_tokens"] > 0
        # the vector a stored one-chunk document with that text has
        _, row_doc, stored, _ = collection.chunk_vectors()
        np.testing.assert_allclose(v, stored[0], atol=1e-5)
        many = client.post(
            "/v1/embeddings",
            json={"model": "longvec", "input": ["socket", "cache"], "dimensions": 16, "encoding_format": "base64"},
        ).json()
        decoded = [np.frombuffer(base64.b64decode(d["embedding"]), "<f4") for d in many["data"]]
        assert [d.shape for d in decoded] == [(16,), (16,)] and all(abs(np.linalg.norm(d) - 1) < 1e-5 for d in decoded)
        ids = collection.counter._tok.encode("parse socket", add_special_tokens=False).ids
        by_ids = client.post("/v1/embeddings", json={"model": model, "input": ids}).json()["data"][0]["embedding"]
        by_text = client.post("/v1/embeddings", json={"model": model, "input": "parse socket"}).json()
        np.testing.assert_allclose(by_ids, by_text["data"][0]["embedding"], atol=1e-6)
        two = client.post("/v1/embeddings", json={"model": model, "input": [ids, ids[:1]]}).json()
        assert len(two["data"]) == 2
        long_text = " ".join(f"word{i} socket" for i in range(200))  # several windows of 64 tokens
        r = client.post("/v1/embeddings", json={"model": model, "input": long_text})
        assert r.status_code == 200 and r.json()["usage"]["prompt_tokens"] > 64
        for bad, message in [
            ({"model": "gpt-4", "input": "x"}, "not served here"),
            ({"model": model, "input": "x", "dimensions": 49}, "dimensions must be in [1, 48]"),
            ({"model": model, "input": [10**9]}, "token ids must be in"),
            ({"model": model, "input": [101, 102]}, "decode to no text"),
            ({"model": model, "input": "   "}, "input 0 is empty"),
            ({"model": model, "input": long_text, "input_type": "query"}, "over the model's 64"),
        ]:
            r = client.post("/v1/embeddings", json=bad)
            assert r.status_code == 400 and message in r.json()["error"]["message"], (bad, r.json())
        for bad in [{"model": model, "input": []}, {"model": model, "input": "x", "encoding_format": "int8"}]:
            assert client.post("/v1/embeddings", json=bad).status_code == 422
    with TestClient(create_app(collection, settings=ServiceSettings(long_inputs="reject"))) as client:
        r = client.post("/v1/embeddings", json={"model": model, "input": long_text})
        assert r.status_code == 400 and "over the model's 64" in r.json()["error"]["message"]


def test_the_openai_client_against_a_running_server(collection) -> None:
    from openai import OpenAI

    settings = ServiceSettings(read_keys=(READ,))
    with live(create_app(collection, settings=settings)) as url:
        client = OpenAI(base_url=f"{url}/v1", api_key=READ, max_retries=0)
        model = client.models.list().data[0].id
        out = client.embeddings.create(model=model, input=["parse socket", "render cache"], dimensions=24)
        vectors = np.array([d.embedding for d in out.data])
        assert vectors.shape == (2, 24) and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
        assert out.usage.prompt_tokens > 0
        floats = client.embeddings.create(model=model, input="parse socket", encoding_format="float")
        np.testing.assert_allclose(floats.data[0].embedding[:24], vectors[0] * np.linalg.norm(
            floats.data[0].embedding[:24]), atol=1e-5)  # fmt: skip
        import openai

        with pytest.raises(openai.AuthenticationError):
            OpenAI(base_url=f"{url}/v1", api_key="wrong-key-0123456789", max_retries=0).embeddings.create(
                model=model, input="x"
            )


# -- the search page ------------------------------------------------------------------------------------------


def test_the_search_page_is_self_contained(collection) -> None:
    with TestClient(create_app(collection)) as client:
        r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    page = r.text
    assert '<form id="search">' in page and "fetch(path" in page
    assert "http://" not in page and "https://" not in page  # no CDN: works offline
    assert "innerHTML = " not in page  # stored text is put in as text, never as markup


# -- concurrency ---------------------------------------------------------------------------------------------


def test_searches_run_while_writes_stream_in(collection) -> None:
    errors: list[str] = []
    stop = threading.Event()
    with live(create_app(collection)) as url:

        def write(worker: int) -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                for i in range(15):
                    docs = [
                        {"doc_id": f"w{worker}-{i}-{j}", "text": f"socket stream {worker} {i} {j}"} for j in range(4)
                    ]
                    r = http.post("/documents", json={"documents": docs})
                    if r.status_code != 200:
                        errors.append(f"write {r.status_code} {r.text}")

        def search() -> None:
            with httpx.Client(base_url=url, timeout=30) as http:
                while not stop.is_set():
                    r = http.post("/search", json={"query": "socket stream", "k": 20})
                    if r.status_code != 200:
                        errors.append(f"search {r.status_code} {r.text}")
                        continue
                    for hit in r.json()["hits"]:  # every hit is a stored document, with its spans inside it
                        doc = http.get(f"/documents/{hit['doc_id']}")
                        if doc.status_code != 200 or hit["chunks"][0]["end"] > len(doc.json()["text"]):
                            errors.append(f"hit {hit['doc_id']} {doc.status_code}")

        writers = [threading.Thread(target=write, args=(w,)) for w in range(2)]
        searchers = [threading.Thread(target=search) for _ in range(3)]
        for t in writers + searchers:
            t.start()
        for t in writers:
            t.join(60)
        stop.set()
        for t in searchers:
            t.join(60)
        final = httpx.post(f"{url}/search", json={"query": "socket stream", "k": 200}).json()["hits"]
        assert collection.counts()["documents"] == 10 + 2 * 15 * 4
    assert not errors, errors[:5]
    assert sum(h["doc_id"].startswith("w") for h in final) == 120


# -- several collections under a data root -----------------------------------------------------------------


def test_a_data_root_serves_each_collection_and_nothing_outside_it(tmp_path, tokenizer) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    opened: list[str] = []

    def open_at(path, embedder=None):
        opened.append(path.name)
        return Collection.open(path, embedder=embedder or WordHashEmbedder(tokenizer, max_tokens=64))

    for name, words in (("alpha", "parse socket"), ("beta", "render cache"), ("outside", "secret words")):
        where = outside if name == "outside" else root / name
        c = Collection.create(where, embedder=WordHashEmbedder(tokenizer, max_tokens=64), search_mode="dense")
        c.add([Document(f"{name}-{i}", f"{words} {i}") for i in range(3)])
        c.close()
    (root / "evil").symlink_to(outside)  # a symlink out of the root holds a collection: never served
    (root / "notes").mkdir()  # not a collection
    settings = ServiceSettings(read_keys=(READ,), write_keys=(WRITE,))
    read, write = {"Authorization": f"Bearer {READ}"}, {"Authorization": f"Bearer {WRITE}"}
    with TestClient(create_app(data_root=root, open_at=open_at, settings=settings)) as client:
        _until(lambda: client.get("/readyz").status_code == 200)
        assert sorted(opened) == ["alpha", "beta"]  # loaded at startup; the symlink is skipped
        listed = client.get("/collections", headers=read).json()["collections"]
        assert [(c["name"], c["documents"]) for c in listed] == [("alpha", 3), ("beta", 3)]
        for name in ("alpha", "beta"):
            hits = client.post(f"/collections/{name}/search", json={"query": "parse socket render cache"}, headers=read)
            assert {h["doc_id"].split("-")[0] for h in hits.json()["hits"]} == {name}
        assert client.get("/collections/alpha/").status_code == 200  # its search page, public
        r = client.post(
            "/collections/alpha/documents", json={"documents": [{"doc_id": "n", "text": "x"}]}, headers=read
        )
        assert r.status_code == 403  # the write routes of every collection need a write key
        r = client.post(
            "/collections/alpha/documents", json={"documents": [{"doc_id": "n", "text": "x"}]}, headers=write
        )
        assert r.status_code == 200
        model = client.get("/collections/beta/v1/models", headers=read).json()["data"][0]["id"]
        r = client.post("/collections/beta/v1/embeddings", json={"model": model, "input": "x"}, headers=read)
        assert r.status_code == 200
        for bad, status in [
            ("evil", 400),  # resolves outside the root
            ("..", 404),  # not routed as a name at all
            ("%2e%2e", 400),
            (".hidden", 400),
            ("a%20b", 400),
            ("missing", 404),
            ("notes", 404),
        ]:
            r = client.post(f"/collections/{bad}/search", json={"query": "secret"}, headers=read)
            assert r.status_code == status, (bad, r.status_code, r.text)
        assert client.get("/collections/..%2F..%2Foutside/info", headers=read).status_code == 404
        # a collection made after startup is opened on its first request, sharing the loaded model's worker
        c = Collection.create(root / "gamma", embedder=WordHashEmbedder(tokenizer, max_tokens=64), search_mode="dense")
        c.add([Document("gamma-0", "gamma words")])
        c.close()
        assert client.post("/collections/gamma/search", json={"query": "gamma"}, headers=read).status_code == 200
        state = client.app.state.longvec
        assert sorted(state.named) == ["alpha", "beta", "gamma"] and len(state.workers) == 1
        assert "outside" not in opened and "evil" not in opened
        text = client.get("/metrics", headers=read).text
        assert 'longvec_documents{collection="alpha"} 4.0' in text and 'route="/collections/{name}/search"' in text
        assert 'href="collections/alpha/"' in client.get("/").text


def test_serve_refuses_a_missing_data_root_or_collection(tmp_path, capsys) -> None:
    from longvec.api.cli import main

    assert main(["serve", "--data-root", str(tmp_path / "nope")]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["serve", "--collection", str(tmp_path / "nope")]) == 2
    assert "no collection at" in capsys.readouterr().err


def test_guard_judges_paths_as_routed_and_labels_bounded(collection, monkeypatch) -> None:
    settings = ServiceSettings(read_keys=(READ,), write_keys=(WRITE,))
    read = {"Authorization": f"Bearer {READ}"}
    doc = {"documents": [{"doc_id": "evil", "text": "x"}]}
    app = create_app(collection, settings=settings, close_on_shutdown=False)
    with TestClient(app, root_path="/proxy") as client:  # behind a proxy prefix, writes still need a write key
        assert client.post("/proxy/documents", json=doc, headers=read).status_code == 403
        assert client.get("/proxy/livez").status_code == 200  # public there too
        assert client.post("/proxy/search", json={"query": "socket"}, headers=read).status_code == 200
    with TestClient(create_app(collection, settings=settings, close_on_shutdown=False)) as client:
        for method in ("PUT", "PATCH"):  # not a read: a read key is refused before routing
            assert client.request(method, "/documents", json=doc, headers=read).status_code == 403
        assert client.request("FOOBAR", "/search", headers=read).status_code == 403
        assert client.request("FOOBAR", "/search", headers={"Authorization": f"Bearer {WRITE}"}).status_code == 405
        monkeypatch.setattr(collection, "search", lambda *a, **k: 1 / 0)
        r = client.post("/search", json={"query": "socket"}, headers=read)
        assert r.status_code == 500 and r.json()["error"]["type"] == "InternalError"
        assert len(r.headers["x-request-id"]) == 32  # the id to find the logged traceback by
        text = client.get("/metrics", headers=read).text
    assert 'method="OTHER",route="/search",status="405"' in text and "FOOBAR" not in text
    assert 'route="/search",status="500"' in text
    assert "evil" not in collection.doc_ids()
