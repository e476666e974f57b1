"""``benchmarks/lexical.py --quick`` runs end to end and reports every figure (no timing is asserted)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "lexical.py"


@pytest.fixture(scope="module")
def lexical_benchmark() -> ModuleType:
    spec = importlib.util.spec_from_file_location("lexical_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_quick_run_reports_latency_and_size(lexical_benchmark: ModuleType, tmp_path: Path) -> None:
    out = tmp_path / "lexical.json"
    assert lexical_benchmark.main(["--quick", "--dir", str(tmp_path / "work"), "--output", str(out)]) == 0
    r = json.loads(out.read_text())
    assert set(r) >= {"collection", "latency", "size", "machine", "loadavg_start", "loadavg_end"}
    assert r["collection"]["chunks"] >= r["target_chunks"] > 0
    assert r["collection"]["documents_stdlib"] > 0
    lat = r["latency"]
    assert lat["queries"] > 0
    for mode in ("dense", "lexical", "hybrid", "lexical-all", "hybrid-all", "lexical-bm25", "hybrid-bm25"):
        assert 0 < lat[mode]["p50_ms"] <= lat[mode]["p99_ms"], lat[mode]
        assert lat[mode]["mean_hits"] > 0  # the realistic queries find something in every mode
    # Scoring every match finds what the pruned shortlist finds, query by query, to the last bit.
    assert lat["lexical_queries_differing_from_all"] == 0
    assert 0 < lat["pruned_answered"] < lat["queries"]  # both ways were taken, so the comparison means something
    assert set(lat["ratios"]) == {
        "hybrid/dense",
        "lexical/dense",
        "hybrid/hybrid-all",
        "lexical/lexical-all",
        "hybrid/hybrid-bm25",
        "lexical/lexical-bm25",
    }
    assert all(v["p50"] > 0 and v["p99"] > 0 for v in lat["ratios"].values())
    size = r["size"]
    assert size["lexical_bytes"] > 0 and size["faiss_bytes"] > 0
    assert size["store_without_lexical_bytes"] + size["lexical_bytes"] == size["store_bytes"]
    assert 0 < size["lexical_percent_of_store"] < 100
    assert r["machine"]["cores"] >= 1 and r["machine"]["date"]
