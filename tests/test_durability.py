"""Crash safety: kill -9 during indexing and after acknowledged REST writes."""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx

from longvec.api.cli import main
from longvec.index import Collection

PROSE = "Retrieval systems split long documents into chunks before embedding them. "


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "longvec.api.cli", *args]


def _committed_docs(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            return con.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def _assert_consistent(root: Path) -> int:
    """Every stored document has all its chunks and vectors; the FAISS index matches the store."""
    with Collection.open(root, readonly=True) as c:
        db = c._store._db
        for doc_id, n_chunks in db.execute("SELECT doc_id, n_chunks FROM documents"):
            (rows,) = db.execute("SELECT COUNT(*) FROM chunks WHERE doc_id = ?", (doc_id,)).fetchone()
            assert rows == n_chunks > 0, doc_id
        # the lexical index holds exactly the stored chunks: written and removed in the same transactions
        chunk_ids = [r[0] for r in db.execute("SELECT id FROM chunks ORDER BY id")]
        assert [r[0] for r in db.execute("SELECT rowid FROM chunk_terms ORDER BY rowid")] == chunk_ids
        info = c.info()
        c.search("retrieval", k=1)  # loads the index
        assert c._vectors.index.ntotal == info["chunks"]
        return info["documents"]


def test_kill_during_indexing_then_reopen_and_resume(tmp_path, capsys):
    records = [{"id": f"doc{i:03d}", "text": f"Document {i}. " + PROSE * 30} for i in range(120)]
    data = tmp_path / "docs.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    root = tmp_path / "coll"
    proc = subprocess.Popen(
        _cli("index", "--collection", str(root), "--input", str(data), "--batch-docs", "4"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 120
    while _committed_docs(root / "store.sqlite") < 8:
        assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
        assert time.monotonic() < deadline, "indexing made no progress"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = _assert_consistent(root)
    assert 8 <= partial < len(records)
    # re-running the job finishes it, skipping what was already committed
    assert main(["index", "--collection", str(root), "--input", str(data), "--batch-docs", "16"]) == 0
    assert f"unchanged {partial}" in capsys.readouterr().out
    assert _assert_consistent(root) == len(records)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _serve(root: Path) -> tuple[subprocess.Popen, str]:
    """``longvec serve`` on a free port, once it answers ``/health``; the caller kills its process group."""
    port = _free_port()
    server = subprocess.Popen(
        _cli("serve", "--collection", str(root), "--port", str(port)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return server, base
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            os.killpg(server.pid, signal.SIGKILL)
            raise AssertionError("server did not start")
        time.sleep(0.1)


def test_cli_search_beside_a_serving_writer(tmp_path):
    """`longvec search` and `info` on a collection that `longvec serve` is writing to: results, no traceback."""
    root = tmp_path / "coll"
    seed = tmp_path / "seed.jsonl"
    seed.write_text("".join(json.dumps({"id": f"s{i}", "text": f"Seed {i}. " + PROSE * 3}) + "\n" for i in range(3)))
    assert main(["index", "--collection", str(root), "--input", str(seed)]) == 0

    def cli(*args: str) -> str:
        done = subprocess.run(_cli(*args), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
        return done.stdout

    search = ("search", "--collection", str(root), "--k", "5", "--json", "--query")
    server, base = _serve(root)
    try:
        assert {h["doc_id"] for h in json.loads(cli(*search, "seed retrieval"))["hits"]} == {"s0", "s1", "s2"}
        docs = [{"doc_id": "s1", "text": "Pelicans glide over the harbour at dawn."}]
        docs.append({"doc_id": "fresh", "text": "A volcano erupted on the island, covering it with ash."})
        assert httpx.post(f"{base}/documents", json={"documents": docs}, timeout=60).status_code == 200
        assert httpx.delete(f"{base}/documents/s2", timeout=60).status_code == 200
        hits = json.loads(cli(*search, "volcanic eruption ash"))["hits"]  # the spine raised KeyError here
        assert hits[0]["doc_id"] == "fresh" and {h["doc_id"] for h in hits} == {"s0", "s1", "fresh"}
        assert json.loads(cli(*search, "pelicans over a harbour"))["hits"][0]["doc_id"] == "s1"
        assert json.loads(cli("info", "--collection", str(root)))["documents"] == 3
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()


def test_acknowledged_rest_writes_survive_kill(tmp_path):
    root = tmp_path / "coll"
    seed = tmp_path / "seed.jsonl"
    seed.write_text(json.dumps({"id": "seed", "text": "seed document"}) + "\n")
    assert main(["index", "--collection", str(root), "--input", str(seed)]) == 0
    server, base = _serve(root)
    try:
        docs = [{"doc_id": f"acked{i}", "text": f"Acknowledged write number {i}. " + PROSE * 5} for i in range(5)]
        r = httpx.post(f"{base}/documents", json={"documents": docs}, timeout=60)
        assert r.status_code == 200 and r.json()["added"] == 5
        r = httpx.delete(f"{base}/documents/seed", timeout=60)
        assert r.status_code == 200
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    assert _assert_consistent(root) == 5
    with Collection.open(root) as c:  # reopening as a writer after the crash takes the lock again
        hits = c.search("acknowledged write number 3", k=5)
        assert {h.doc_id for h in hits} == {f"acked{i}" for i in range(5)}
