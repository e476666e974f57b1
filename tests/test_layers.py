"""Dependencies point down: api/ and evaluation/ over index/, which wires embedder/ and chunking/.

Checked statically on every module, lazy imports inside functions included, and at run time for the
CLI's start-up cost.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = ("api", "evaluation", "index", "embedder", "chunking")
# Which of our packages each package may import, and which third-party ones it must not.
ALLOWED = {
    "chunking": set(),
    "embedder": set(),
    "index": {"chunking", "embedder"},
    "evaluation": {"index", "embedder", "chunking"},  # a surface: it measures the product through index/
    "api": {"evaluation", "index", "embedder", "chunking"},  # the CLI's `eval` command runs the harness
}
HTTP = {"fastapi", "starlette", "uvicorn", "httpx"}
MODEL_STACK = {"torch", "sentence_transformers", "transformers", "faiss"}
FORBIDDEN = {
    "chunking": HTTP | MODEL_STACK,
    "embedder": HTTP | {"faiss", "tree_sitter"},
    "index": HTTP,
    "evaluation": HTTP,
    "api": set(),
}


def imported_roots(path: Path) -> set[str]:
    """Top-level package names imported anywhere in ``path`` (absolute imports; ``longvec.x`` counts as x)."""
    roots = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        for name in names:
            parts = name.split(".")
            roots.add(parts[1] if parts[0] == "longvec" and len(parts) > 1 else parts[0])
    return roots


def modules_of(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def bare_imports(path: Path) -> list[str]:
    """Our packages imported by their folder names instead of ``longvec.<name>`` (those fail once installed)."""
    bare = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            bare += [a.name for a in node.names if a.name.split(".")[0] in OURS]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] in OURS:
            bare.append(node.module)
    return bare


def test_our_packages_are_imported_through_the_longvec_namespace():
    files = [*ROOT.glob("[!.]*/**/*.py")]
    offenders = [f"{p.relative_to(ROOT)}: {name}" for p in files if ".venv" not in p.parts for name in bare_imports(p)]
    assert len(files) > 40
    assert not offenders, "\n".join(offenders)


@pytest.mark.parametrize("package", OURS)
def test_imports_follow_the_layers(package):
    violations = []
    for path in modules_of(package):
        roots = imported_roots(path)
        for bad in sorted((roots & set(OURS)) - ALLOWED[package] - {package}):
            violations.append(f"{path.relative_to(ROOT)} imports {bad}")
        for bad in sorted(roots & FORBIDDEN[package]):
            violations.append(f"{path.relative_to(ROOT)} imports {bad}")
    assert modules_of(package), f"no modules found under {package}/"
    assert not violations, "\n".join(violations)


def test_the_checker_sees_lazy_and_namespaced_imports(tmp_path):
    sample = tmp_path / "m.py"
    sample.write_text("def f():\n    from longvec.index import Collection\n    import torch.nn\n")
    assert imported_roots(sample) == {"index", "torch"}
    assert bare_imports(sample) == []
    sample.write_text("import index.store\nfrom api import cli\nfrom . import x\nimport indexer\n")
    assert bare_imports(sample) == ["index.store", "api"]


def _modules_after(statement: str) -> set[str]:
    code = f"{statement}; import sys; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_importing_the_cli_loads_no_model_stack():
    loaded = _modules_after("import longvec.api.cli")
    assert not {"torch", "faiss", "sentence_transformers", "fastapi"} & loaded


def test_the_base_install_imports_neither_ray_nor_pyarrow():
    """Ray and pyarrow come with longvec[ray], used by `index --engine ray` and parquet inputs only."""
    loaded = _modules_after(
        "import longvec.index, longvec.api.cli, longvec.api.app, longvec.evaluation; "
        "from longvec.api.cli import build_parser; build_parser()"
    )
    assert "longvec.index" in loaded and "longvec.api.app" in loaded  # the check saw the imports happen
    assert not {"ray", "pyarrow"} & loaded
