"""The CLI contract, through ``api.cli.main`` in-process with the packaged model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from longvec.api.cli import main

CORPUS = [
    {
        "id": "sort",
        "text": "def bubble_sort(items):\n    # sort a list in place by swapping neighbours\n    pass\n",
        "language": "python",
    },
    {"id": "http", "text": "An HTTP server listens on a port and answers requests from clients. " * 30},
    {
        "id": "fruit",
        "text": "Apples, pears and plums are fruit that grow on trees in orchards. " * 10,
        "metadata": {"lang": "en"},
    },
]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


@pytest.fixture
def indexed(tmp_path, capsys):
    coll = tmp_path / "coll"
    assert main(["index", "--collection", str(coll), "--input", str(write_jsonl(tmp_path / "d.jsonl", CORPUS))]) == 0
    summary = capsys.readouterr().out
    assert "docs=3" in summary and "chunks=" in summary and "tokens=" in summary and "seconds=" in summary
    return coll


def test_index_then_search_contract(indexed, tmp_path):
    queries = write_jsonl(
        tmp_path / "q.jsonl",
        [{"qid": "q1", "text": "sorting algorithm"}, {"qid": "q2", "text": "web server handling requests"}],
    )
    run1, run2 = tmp_path / "run1.jsonl", tmp_path / "run2.jsonl"
    args = ["search", "--collection", str(indexed), "--queries", str(queries), "--k", "2"]
    assert main([*args, "--output", str(run1)]) == 0
    lines = [json.loads(x) for x in run1.read_text().splitlines()]
    assert [x["qid"] for x in lines] == ["q1", "q2"]
    assert lines[0]["hits"][0]["doc_id"] == "sort" and lines[1]["hits"][0]["doc_id"] == "http"
    for line in lines:
        assert len(line["hits"]) == 2
        for hit in line["hits"]:
            assert set(hit) == {"doc_id", "score", "chunks"}
            assert all(set(c) == {"chunk_id", "start", "end", "score", "symbol"} for c in hit["chunks"])
    # reopening the collection gives identical results
    assert main([*args, "--output", str(run2)]) == 0
    assert run1.read_text() == run2.read_text()


@pytest.mark.parametrize(
    ("records", "message"),
    [
        ([{"qid": "q1", "text": "sorting"}, {"qid": "q2", "text": "  "}], "query 'q2' has no text"),
        ([{"qid": "q1", "text": "sorting"}, {"qid": "q1", "text": "http"}], "query id 'q1' repeats line 1"),
    ],
)
def test_a_queries_file_with_an_empty_or_repeated_query_names_the_line(indexed, tmp_path, capsys, records, message):
    queries = write_jsonl(tmp_path / "q.jsonl", records)
    assert main(["search", "--collection", str(indexed), "--queries", str(queries)]) == 2
    assert f"{queries}:2: {message}" in capsys.readouterr().err


def test_single_query_json_and_text(indexed, capsys):
    assert main(["search", "--collection", str(indexed), "--query", "orchard fruit", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["qid"] == "q" and out["hits"][0]["doc_id"] == "fruit"
    assert main(["search", "--collection", str(indexed), "--query", "orchard fruit", "--k", "1"]) == 0
    assert "1. " in capsys.readouterr().out


def test_malformed_jsonl_names_the_line_and_keeps_stored_docs(indexed, tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "new", "text": "replacement"}) + "\n" + '{"id": "x", "text": \n')
    assert main(["index", "--collection", str(indexed), "--input", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2:" in err
    missing = tmp_path / "missing.jsonl"
    write_jsonl(missing, [{"id": "y"}])
    assert main(["index", "--collection", str(indexed), "--input", str(missing)]) == 2
    assert "missing field 'text'" in capsys.readouterr().err
    assert main(["info", "--collection", str(indexed)]) == 0
    assert json.loads(capsys.readouterr().out)["documents"] == 3


def test_mismatching_settings_are_exit_2(indexed, tmp_path, capsys):
    data = str(write_jsonl(tmp_path / "d.jsonl", CORPUS))
    assert main(["index", "--collection", str(indexed), "--input", data, "--strategy", "truncate"]) == 2
    assert "was built with {'strategy': 'chunk'" in capsys.readouterr().err
    assert main(["index", "--collection", str(indexed), "--input", data, "--overlap-tokens", "8"]) == 2
    assert "got {'overlap_tokens': 8}" in capsys.readouterr().err
    assert main(["index", "--collection", str(indexed), "--input", data]) == 0  # same settings: fine
    assert "unchanged 3" in capsys.readouterr().out
    assert main(["search", "--collection", str(tmp_path / "none"), "--query", "x"]) == 2
    assert "no collection at" in capsys.readouterr().err
    assert main(["index", "--collection", str(indexed)]) == 2
    assert "nothing to index" in capsys.readouterr().err


def test_index_walks_directories(tmp_path, capsys):
    src = tmp_path / "repo"
    (src / "pkg").mkdir(parents=True)
    (src / ".git").mkdir()
    (src / "node_modules").mkdir()
    (src / "pkg" / "mod.py").write_text("class Stack:\n    def push(self, x):\n        self.items.append(x)\n")
    (src / "README.md").write_text("# Stack\nA tiny stack.\n")
    (src / ".git" / "config").write_text("[core]\n")
    (src / "node_modules" / "x.js").write_text("module.exports = 1;\n")
    (src / "blob.bin").write_bytes(b"\x00\x01\x02binary")
    coll = tmp_path / "coll"
    assert main(["index", "--collection", str(coll), str(src)]) == 0
    assert "skipped files 1" in capsys.readouterr().out
    assert main(["search", "--collection", str(coll), "--query", "push onto a stack", "--json", "--k", "5"]) == 0
    hits = json.loads(capsys.readouterr().out)["hits"]
    assert {h["doc_id"] for h in hits} == {"repo/pkg/mod.py", "repo/README.md"}


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b'{"id": "u", "text": "bad \\ud800 x"}\n', ":1: text of 'u' is not valid Unicode"),
        (b'{"id": "ok", "text": "fine"}\n\xff\xfe\n', ":2: not UTF-8"),
        (b"[1, 2]\n", ":1: expected a JSON object"),
        (b'{"id": "m", "text": "x", "metadata": [1]}\n', ":1: metadata of 'm' must be an object"),
    ],
)
def test_invalid_records_exit_2_naming_the_line(indexed, tmp_path, capsys, content, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(content)
    assert main(["index", "--collection", str(indexed), "--input", str(bad)]) == 2
    assert message in capsys.readouterr().err
    assert main(["info", "--collection", str(indexed)]) == 0
    assert json.loads(capsys.readouterr().out)["documents"] == 3
