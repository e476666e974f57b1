"""Peak memory of chunking large inputs is bounded by a constant, not by the size of the file.

Each measurement runs in a fresh process (``benchmarks/memory.py``, which generates the file): the peak RSS
during the call, less the RSS before it and what the returned chunks hold, is the memory chunking worked
in. Before sections and piecewise tokenisation (whole-file token tables, byte map and syntax tree) that was
~460 MB for a 2 MB Python file (~9.7 GB at 50 MB), ~640 MB to keep the first window of a 3 MB one, and
~120 MB for 3 MB of prose; now it is ~55, ~0 and ~2 MB, and stays there at 50 and 100 MB.
"""

from __future__ import annotations

import importlib.util
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "memory.py"
# Working memory allowed, whatever the size of the file: the AST chunker holds one section (~1 MiB) at a
# time (its syntax tree, token starts and byte map); text is tokenised and counted 64k characters at a time.
BOUND_MB = {"code": 150, "text": 40, "truncate": 40}


@pytest.fixture(scope="module")
def memory() -> ModuleType:
    spec = importlib.util.spec_from_file_location("memory_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _measure_all(memory: ModuleType, sizes: dict[str, float]) -> list[dict[str, Any]]:
    with ThreadPoolExecutor(max_workers=2) as pool:  # one child process per kind, two at a time
        return list(pool.map(lambda kind: memory.measure(kind, sizes[kind], timeout=1800), sizes))


def _assert_bounded(results: list[dict[str, Any]]) -> None:
    for r in results:
        assert r["chunks"] > 0, r
        assert r["working_mb"] <= BOUND_MB[r["kind"]], str(r)


def test_chunking_a_few_megabytes_stays_bounded(memory: ModuleType) -> None:
    results = _measure_all(memory, {"code": 2.0, "text": 3.0, "truncate": 3.0})
    _assert_bounded(results)
    code = next(r for r in results if r["kind"] == "code")
    assert code["chars"] > 1 << 20 and code["chunks"] > 1000  # more than one section


@pytest.mark.slow
def test_chunking_fifty_megabytes_stays_bounded(memory: ModuleType) -> None:
    _assert_bounded(_measure_all(memory, {"code": 50.0, "text": 50.0, "truncate": 50.0}))
