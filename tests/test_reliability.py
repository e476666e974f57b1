"""The server under crashes: kill -9 during a stream of acknowledged writes, restarted 20 times, loses no
acknowledged document and duplicates none; a second writer is refused; SIGTERM drains in-flight requests."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx

from longvec.index import Collection

from fakes import WordHashEmbedder
from servers import free_port

SERVER = Path(__file__).resolve().parent / "fake_server.py"
ROUNDS = 20


def _start(root: Path, port: int, *extra: str) -> subprocess.Popen:
    log = root.parent / f"server-{port}.log"  # a file, not a pipe nobody reads (a full pipe blocks the server)
    with open(log, "wb") as stderr:
        process = subprocess.Popen([sys.executable, str(SERVER), str(root), str(port), *extra], stderr=stderr)
    deadline = time.monotonic() + 60
    while True:
        assert process.poll() is None, log.read_text()
        assert time.monotonic() < deadline, "server not ready in 60 s"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            pass
        time.sleep(0.05)


def test_kill_9_during_acknowledged_writes_loses_and_duplicates_nothing(tmp_path, tokenizer) -> None:
    root = tmp_path / "c"
    acknowledged: list[str] = []
    rng = random.Random(7)
    for round_ in range(ROUNDS):
        port = free_port()
        server = _start(root, port, *(["--create"] if round_ == 0 else []))
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=url, timeout=10) as http:
            present = set(http.get("/documents").json()["doc_ids"])
            assert set(acknowledged) <= present, f"round {round_}: lost {sorted(set(acknowledged) - present)[:5]}"
            stop = threading.Event()

            def stream(round_: int = round_, stop: threading.Event = stop, http: httpx.Client = http) -> None:
                i = 0
                while not stop.is_set():
                    docs = [
                        {"doc_id": f"r{round_}-{i}-{j}", "text": f"round{round_} doc{i} part{j} " + "words " * (20 * j)}
                        for j in range(3)
                    ]
                    try:
                        r = http.post("/documents", json={"documents": docs})
                    except httpx.TransportError:
                        return  # killed mid-request: not acknowledged
                    if r.status_code == 200:
                        acknowledged.extend(d["doc_id"] for d in docs)
                    i += 1

            writer = threading.Thread(target=stream)
            writer.start()
            time.sleep(rng.uniform(0.2, 0.8))
            server.send_signal(signal.SIGKILL)
            server.wait(10)
            stop.set()
            writer.join(20)
    assert len(acknowledged) > 20 * ROUNDS  # writes really were acknowledged in every round, on average
    with Collection.open(root, embedder=WordHashEmbedder(tokenizer, max_tokens=64)) as c:
        stored = c.doc_ids()
        assert set(acknowledged) <= set(stored)
        # no chunk stored twice, and the vector index (replayed after the kills) holds each chunk once
        chunks = sum(c.get(d).n_chunks for d in stored)
        assert c.counts()["chunks"] == chunks
        assert c.index_info()["vectors"] == chunks
        for doc_id in rng.sample(acknowledged, 20):  # each acknowledged document is found by its own text
            assert c.search(c.get(doc_id).text, k=1)[0].doc_id == doc_id


def test_a_second_writer_is_refused_clearly(tmp_path) -> None:
    root = tmp_path / "c"
    port = free_port()
    server = _start(root, port, "--create")
    try:
        done = subprocess.run(
            [sys.executable, "-m", "longvec.api.cli", "serve", "--collection", str(root), "--port", str(free_port())],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 2
        assert "is open for writing in another process" in done.stderr and "send the writes through it" in done.stderr
        assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200  # the first one is unaffected
    finally:
        server.kill()
        server.wait(10)


def test_sigterm_drains_in_flight_requests(tmp_path) -> None:
    root = tmp_path / "c"
    port = free_port()
    server = _start(root, port, "--create")
    url = f"http://127.0.0.1:{port}"
    docs = [{"doc_id": f"big-{i}", "text": "drain words " * 2000} for i in range(40)]
    result: dict[str, object] = {}

    def post() -> None:
        result["response"] = httpx.post(f"{url}/documents", json={"documents": docs}, timeout=60)

    writer = threading.Thread(target=post)
    writer.start()
    deadline = time.monotonic() + 30
    while _in_flight(url) < 2:  # the write, and this /metrics request itself
        assert time.monotonic() < deadline, "the write never reached the server"
        time.sleep(0.02)
    server.send_signal(signal.SIGTERM)
    writer.join(60)
    # uvicorn drains, shuts the app down (the collection closes), then re-raises the signal it caught
    assert server.wait(60) in (0, -signal.SIGTERM)
    response = result["response"]
    assert isinstance(response, httpx.Response) and response.status_code == 200 and response.json()["added"] == 40


def _in_flight(url: str) -> float:
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return float(next(line.split()[1] for line in text.splitlines() if line.startswith("longvec_requests_in_flight ")))
