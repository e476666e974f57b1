"""Keeping a collection in step with a code base: stable ids, prune, delete, dry runs."""

from __future__ import annotations

import json

import pytest

from api.cli import main
from index import Collection, InvalidInputError
from index.sources import walk_paths


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
