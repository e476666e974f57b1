"""Dependencies point down: the core packages never pull in the HTTP stack, the CLI starts light."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _modules_after(statement: str) -> set[str]:
    code = f"{statement}; import sys; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


@pytest.mark.parametrize("package", ["chunking", "embedder", "index"])
def test_core_packages_do_not_import_http(package):
    loaded = _modules_after(f"import {package}")
    assert not {"fastapi", "starlette", "uvicorn"} & loaded


def test_importing_the_cli_loads_no_model_stack():
    loaded = _modules_after("import api.cli")
    assert not {"torch", "faiss", "sentence_transformers", "fastapi"} & loaded
