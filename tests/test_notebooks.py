"""Every notebook in notebooks/ runs end to end on the default model (a cell that errors fails the test), and the
committed copy carries its outputs (plots render on a code host without running) and its question and answer."""

from __future__ import annotations

import re
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


def _printed(nb: nbformat.NotebookNode) -> str:
    return "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_the_committed_copy_shows_its_results_and_answers_from_them(path: Path) -> None:
    committed = nbformat.read(path, as_version=4)
    markdown = [c.source for c in committed.cells if c.cell_type == "markdown"]
    assert "**Question.**" in markdown[0] and markdown[-1].startswith("## Answer")
    code = [c for c in committed.cells if c.cell_type == "code"]
    assert [c.execution_count for c in code] == list(range(1, len(code) + 1)), "not run top to bottom"
    outputs = [o for c in code for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), "committed without its plots"
    assert not any(o.get("output_type") == "error" for o in outputs)
    # every figure with three decimals the answer quotes is one the notebook printed
    quoted = set(re.findall(r"(?<![\d.])\d\.\d{3}(?!\d)", markdown[-1]))
    assert quoted, "the answer quotes no measured value"
    missing = sorted(q for q in quoted if q not in _printed(committed))
    assert not missing, f"the answer quotes values the outputs do not show: {missing}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_end_to_end(path: Path, tmp_path: Path) -> None:
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    nb = nbformat.read(copy, as_version=4)
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    fresh = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in fresh)


def test_your_corpus_takes_a_beir_folder(tmp_path: Path) -> None:
    """The notebook's other input: a BEIR folder (corpus, queries, test qrels) instead of a directory."""
    from test_eval_beir import write_beir

    beir = write_beir(tmp_path / "tiny")
    nb = nbformat.read(Path(__file__).resolve().parent.parent / "notebooks" / "your_corpus.ipynb", as_version=4)
    (setup,) = [c for c in nb.cells if c.cell_type == "code" and "BEIR = None" in c.source]
    setup.source = setup.source.replace("BEIR = None", f"BEIR = Path({str(beir)!r})")
    NotebookClient(nb, timeout=900, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    printed = _printed(nb)
    assert "4 documents" in printed and "3 queries" in printed and "95% of full nDCG@10" in printed
    assert "'find a key in a sorted array'" in printed  # the BEIR queries, not mined ones
    assert any("image/png" in o.get("data", {}) for c in nb.cells for o in c.get("outputs", []))
