"""Keeping a collection in step with a code base: stable ids, prune, delete, dry runs."""

from __future__ import annotations

import json

import pytest

from longvec.api.cli import main
from longvec.index import Collection, InvalidInputError
from longvec.index.sources import walk_paths


def make_tree(root, files):
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


@pytest.fixture
def trees(tmp_path):
    a = make_tree(
        tmp_path / "projA",
        {"README.md": "Project A reads sensors.\n", "src/io.py": "def read_sensor(port):\n    return port.read()\n"},
    )
    b = make_tree(tmp_path / "projB", {"README.md": "Project B draws charts.\n"})
    return a, b


def ids(root) -> list[str]:
    with Collection.open(root, readonly=True) as c:
        return c.doc_ids()


def test_ids_do_not_depend_on_sibling_arguments(trees):
    a, b = trees
    both = {d.doc_id for d in walk_paths([a, b])}
    alone = {d.doc_id for d in walk_paths([a])}
    assert both == {"projA/README.md", "projA/src/io.py", "projB/README.md"}
    assert alone == {"projA/README.md", "projA/src/io.py"}
    assert {d.doc_id for d in walk_paths([a / "src" / "io.py"])} == {"src/io.py"}  # as when src/ is walked


def test_reindexing_a_tree_updates_in_place(trees, tmp_path, capsys):
    a, b = trees
    coll = tmp_path / "coll"
    assert main(["index", "--collection", str(coll), str(a), str(b)]) == 0
    (a / "README.md").write_text("Project A reads sensors and logs them.\n")
    assert main(["index", "--collection", str(coll), str(a)]) == 0
    assert "added 0, updated 1, unchanged 1" in capsys.readouterr().out
    assert ids(coll) == ["projA/README.md", "projA/src/io.py", "projB/README.md"]  # no second README.md


def test_same_named_roots_are_refused(tmp_path, capsys):
    one = make_tree(tmp_path / "x" / "src", {"a.py": "x = 1\n"})
    two = make_tree(tmp_path / "y" / "src", {"b.py": "y = 2\n"})
    with pytest.raises(InvalidInputError, match="two directories named 'src'"):
        list(walk_paths([one, two]))
    assert main(["index", "--collection", str(tmp_path / "c"), str(one), str(two)]) == 2
    assert not (tmp_path / "c").exists()


def test_prune_removes_deleted_files_and_nothing_else(trees, tmp_path, capsys):
    a, b = trees
    coll = tmp_path / "coll"
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"id": "projA/notes-from-jsonl", "text": "Not a file on disk."}) + "\n")
    assert main(["index", "--collection", str(coll), "--input", str(extra), str(a), str(b)]) == 0
    (a / "src" / "io.py").unlink()
    (b / "README.md").unlink()
    assert main(["index", "--collection", str(coll), str(a), "--prune", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would prune projA/src/io.py" in out and "nothing was written" in out
    assert "prune 1" in out and len(ids(coll)) == 4  # the dry run changed nothing
    assert main(["index", "--collection", str(coll), str(a), "--prune"]) == 0
    assert "pruned 1" in capsys.readouterr().out
    # projB was not walked, so its missing README stays; the JSONL document under the prefix was no file
    assert ids(coll) == ["projA/README.md", "projA/notes-from-jsonl", "projB/README.md"]


def test_delete_by_id_and_prefix_with_dry_run(trees, tmp_path, capsys):
    a, b = trees
    coll = tmp_path / "coll"
    assert main(["index", "--collection", str(coll), str(a), str(b)]) == 0
    capsys.readouterr()
    assert main(["delete", "--collection", str(coll), "--prefix", "projA/", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "would delete projA/README.md" in out and "would delete 2" in out
    assert len(ids(coll)) == 3
    assert main(["delete", "--collection", str(coll), "projB/README.md", "nope"]) == 0
    assert "deleted 1 of 2" in capsys.readouterr().out
    assert main(["delete", "--collection", str(coll), "--prefix", "projA/"]) == 0
    assert ids(coll) == []
    assert main(["delete", "--collection", str(coll)]) == 2
    assert "nothing to delete" in capsys.readouterr().err


def test_argument_errors_come_back_before_any_model_loads(trees, tmp_path, capsys, monkeypatch):
    a, _ = trees
    coll = tmp_path / "coll"
    assert main(["index", "--collection", str(coll), str(a)]) == 0
    from longvec.embedder import model as model_module

    built: list[object] = []
    monkeypatch.setattr(model_module, "Embedder", lambda config: built.append(config) or 1 / 0)
    monkeypatch.setattr(model_module, "_CACHE", {})
    for args, message in [
        (["search", "--collection", str(coll), "--query", "x", "--k", "0"], "k must be in [1, 1000]"),
        (["search", "--collection", str(coll), "--query", "   "], "query must be a non-empty string"),
        (["search", "--collection", str(coll), "--query", "x", "--dim", "100"], "dim 100 not in"),
        (["search", "--collection", str(tmp_path / "none"), "--query", "x"], "no collection at"),
        (["index", "--collection", str(coll), str(tmp_path / "missing")], "no such file or directory"),
        (["index", "--collection", str(coll), str(a), "--prune", "--input", "/nonexistent.jsonl"], "No such file"),
    ]:
        assert main(args) == 2, args
        assert message in capsys.readouterr().err
    assert built == []  # no model was constructed for any of them


def test_failed_first_index_leaves_no_collection(trees, tmp_path, capsys, monkeypatch):
    a, _ = trees
    from longvec.index import collection as collection_module

    def broken(self, *args, **kwargs):
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(collection_module.Collection, "_write", broken)
    coll = tmp_path / "new"
    with pytest.raises(RuntimeError, match="disk on fire"):
        main(["index", "--collection", str(coll), str(a)])
    assert not coll.exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "mine.txt").write_text("not ours")
    with pytest.raises(RuntimeError):
        main(["index", "--collection", str(existing), str(a)])
    assert sorted(p.name for p in existing.iterdir()) == ["mine.txt"]
    monkeypatch.undo()
    assert main(["index", "--collection", str(coll), str(a), "--max-tokens", "128"]) == 0  # settings not fixed
    with Collection.open(coll, readonly=True) as c:
        assert c.manifest.max_tokens == 128


def test_empty_texts_are_skipped_and_counted(tmp_path, fake_embedder):
    from longvec.index import Document

    with Collection.create(tmp_path / "c", embedder=fake_embedder) as c:
        result = c.add([Document("a", "alpha text"), Document("e", ""), Document("w", " \n\t ")])
        assert (result.added, result.empty) == (1, 2)
        assert c.doc_ids() == ["a"]
        assert c.add([Document("a", "   ")]).empty == 1 and c.get("a").text == "alpha text"  # left as it is


def test_progress_lines_off_a_terminal(capsys, monkeypatch):
    from longvec.api.cli import _progress
    from longvec.index import AddResult

    bar = _progress(total=10)
    monkeypatch.setattr(_progress, "EVERY", 0.0)
    bar(AddResult(added=4, chunks=9, tokens=900))
    line = capsys.readouterr().err
    assert line.startswith("indexing: 4/10 docs, 9 chunks,") and "tok/s" in line and "s left" in line


def test_unknown_routes_and_numeric_ids_over_rest(tmp_path, fake_embedder):
    from fastapi.testclient import TestClient

    from longvec.api.app import create_app

    with TestClient(create_app(Collection.create(tmp_path / "c", embedder=fake_embedder))) as client:
        r = client.get("/nope")  # ("/" is the search page)
        assert r.status_code == 404 and r.json()["error"]["type"] == "NotFound"
        assert client.put("/search").json()["error"]["type"] == "MethodNotAllowed"
        r = client.post("/documents", json={"documents": [{"id": 42, "text": "alpha"}, {"id": "e", "text": ""}]})
        assert r.status_code == 200 and r.json()["added"] == 1 and r.json()["empty"] == 1
        assert client.get("/documents/42").json()["doc_id"] == "42"


def test_bad_queries_file_is_exit_2_naming_the_line(trees, tmp_path, capsys):
    a, _ = trees
    coll = tmp_path / "coll"
    assert main(["index", "--collection", str(coll), str(a)]) == 0
    bad = tmp_path / "q.jsonl"
    bad.write_bytes(b'{"qid": "1", "text": "sensors"}\n\xff\xfe\n')
    assert main(["search", "--collection", str(coll), "--queries", str(bad)]) == 2  # was a UnicodeDecodeError
    assert f"{bad}:2: not UTF-8" in capsys.readouterr().err


@pytest.fixture
def served(trees, tmp_path):
    """A collection indexed from projA, held by a live REST server (uvicorn in a thread) at the yielded URL."""
    import socket
    import threading
    import time

    import uvicorn

    from longvec.api.app import create_app

    a, _ = trees
    coll = tmp_path / "served"
    assert main(["index", "--collection", str(coll), str(a)]) == 0
    collection = Collection.open(coll)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(create_app(collection), log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.05)
    yield coll, f"http://127.0.0.1:{sock.getsockname()[1]}", collection
    server.should_exit = True
    thread.join(timeout=30)
    sock.close()


def test_index_and_delete_go_through_a_running_server(served, trees, tmp_path, capsys):
    coll, url, collection = served
    a, b = trees
    # the directory is held by the server: a direct write is refused with the way to do it
    assert main(["index", "--collection", str(coll), str(b)]) == 2
    assert "longvec index --server URL" in capsys.readouterr().err

    assert main(["index", "--server", url, str(b)]) == 0
    assert "added 1, updated 0, unchanged 0" in capsys.readouterr().out
    assert collection.doc_ids() == ["projA/README.md", "projA/src/io.py", "projB/README.md"]
    assert collection.search("draws charts", k=1)[0].doc_id == "projB/README.md"

    (a / "src" / "io.py").unlink()
    (a / "NEW.md").write_text("Project A now also writes logs.\n")
    assert main(["index", "--server", url, str(a), "--prune"]) == 0
    assert "added 1, updated 0, unchanged 1" in (out := capsys.readouterr().out) and "pruned 1" in out
    assert collection.doc_ids() == ["projA/NEW.md", "projA/README.md", "projB/README.md"]

    assert main(["delete", "--server", url, "--prefix", "projB/", "--dry-run"]) == 0
    assert "would delete projB/README.md" in capsys.readouterr().out
    assert main(["delete", "--server", url, "--prefix", "projA/", "missing"]) == 0
    assert "deleted 2 of 3" in capsys.readouterr().out
    assert collection.doc_ids() == ["projB/README.md"]


def test_server_writes_refuse_local_settings_and_unreachable_servers(served, trees, capsys):
    _, url, collection = served
    a, _ = trees
    for args, message in [
        (["index", "--server", url, str(a), "--max-tokens", "64"], "--max-tokens cannot be used with --server"),
        (["index", "--server", url, str(a), "--dry-run"], "--dry-run cannot be used with --server"),
        (["index", "--server", "localhost:8000", str(a)], "must be an http(s) URL"),
        (["index", "--server", "http://127.0.0.1:9", str(a)], "cannot reach the server at http://127.0.0.1:9"),
        (["delete", "--server", "http://127.0.0.1:9", "x"], "cannot reach the server"),
    ]:
        assert main(args) == 2, args
        assert message in capsys.readouterr().err, args
    with pytest.raises(SystemExit) as exit_info:  # argparse: one target, not both
        main(["index", "--collection", "c", "--server", url, str(a)])
    assert exit_info.value.code == 2 and "not allowed with argument" in capsys.readouterr().err
    assert collection.doc_ids() == ["projA/README.md", "projA/src/io.py"]  # nothing changed
