"""``benchmarks/detect_language.py`` runs end to end on a few documents per set (no figure is asserted)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "detect_language.py"


def test_small_run_reports_every_set_it_finds(tmp_path: Path) -> None:
    spec = importlib.util.spec_from_file_location("detect_benchmark", BENCHMARK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    out = tmp_path / "detect.json"
    assert module.main(["--per-set", "3", "--output", str(out)]) == 0
    rows = {r["set"]: r for r in json.loads(out.read_text())["rows"]}
    stdlib = rows["stdlib .py"]  # files every machine running the tests has
    assert stdlib["documents"] == 3 and 0 <= stdlib["read_as_its_language"] <= 1 and stdlib["mean_ms"] > 0
    assert sum(stdlib["languages"].values()) == 3
