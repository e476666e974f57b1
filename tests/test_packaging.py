"""The wheel installs everything under one `longvec` namespace, so no top-level name clashes with a user's modules."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("chunking", "embedder", "index", "evaluation", "api")


def _pip(*args: str, cwd: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "pip", *args], cwd=cwd, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_built_wheel_imports_as_longvec_and_nothing_else(tmp_path):
    # build from a copy of the sources: an in-tree build would leave build/ and egg-info in the checkout
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in SOURCES:
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    # offline: build with the setuptools already installed instead of fetching one into an isolated env
    _pip("wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"), str(src), cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("longvec-*.whl")
    site = tmp_path / "site"
    _pip("install", "--no-deps", "-q", "--target", str(site), str(wheel), cwd=tmp_path)

    top_level = {p.name for p in site.iterdir() if p.name != "bin"}
    assert {n for n in top_level if not n.endswith(".dist-info")} == {"longvec"}
    assert not (site / "longvec" / "__init__.py").exists()  # a namespace package
    assert {p.name for p in (site / "longvec").iterdir()} == set(SOURCES)
    assert (site / "longvec" / "api" / "static" / "index.html").read_text().startswith("<!doctype html>")  # the page
    entry_points = next(site.glob("longvec-*.dist-info")).joinpath("entry_points.txt").read_text()
    assert "longvec = longvec.api.cli:main" in entry_points

    # The installed copy is found first (PYTHONPATH precedes the development install's finder); the bare
    # names of the source folders are not importable from outside the checkout.
    probe = (
        "import importlib.util, longvec.index, longvec.api.cli\n"
        "from longvec.index import Collection, Document\n"
        "print(longvec.index.__file__)\n"
        "print([n for n in SOURCES if importlib.util.find_spec(n) is not None])\n"
    ).replace("SOURCES", repr(SOURCES))
    env = {**os.environ, "PYTHONPATH": str(site)}
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    location, clashes = done.stdout.splitlines()
    assert Path(location).is_relative_to(site)
    assert clashes == "[]"
    cli = subprocess.run(
        [sys.executable, "-m", "longvec.api.cli", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert cli.returncode == 0 and "index" in cli.stdout, cli.stderr
