"""Every notebook in notebooks/ runs end to end on the default model (a cell that errors fails the test), and the
committed copy carries its outputs (plots render on a code host without running) and its question and answer."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_there() -> None:
    assert {p.name for p in NOTEBOOKS} == {
        "matryoshka_truncation.ipynb",
        "two_d_matryoshka.ipynb",
        "long_inputs.ipynb",
        "your_corpus.ipynb",
    }


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_and_its_committed_copy_shows_results(path: Path, tmp_path: Path) -> None:
    committed = nbformat.read(path, as_version=4)
    markdown = [c.source for c in committed.cells if c.cell_type == "markdown"]
    assert "**Question.**" in markdown[0] and markdown[-1].startswith("## Answer")
    outputs = [o for c in committed.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), "committed without its plots"
    assert not any(o.get("output_type") == "error" for o in outputs)
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    nb = nbformat.read(copy, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    fresh = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in fresh)
