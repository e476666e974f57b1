"""The evaluation harness end to end on smoke-sized datasets, so it cannot silently rot."""

from __future__ import annotations

import json

import pytest

from longvec.api.cli import main
from longvec.evaluation import load_dataset
from longvec.evaluation.datasets import cache_path
from longvec.evaluation.report import pivot_rows, render, run_eval, synthetic_rows
from longvec.evaluation.systems import DEFAULT_SYSTEMS, SystemSpec


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    extra = ("chunk:agg=weighted,dim=64", "truncate:extend=1024,positions=group,tau=0.9", "late")
    systems = [SystemSpec.parse(s) for s in (*DEFAULT_SYSTEMS, *extra)]
    cache = tmp_path_factory.mktemp("evalcache")
    return run_eval(["code", "passkey", "needle"], systems, cache_dir=cache, small=True, lengths={256}, log=print)


CHUNK = SystemSpec.parse("chunk").name  # the default configuration, named with its search mode


def by(results, dataset, system):
    return next(r for r in results if r.dataset == dataset and r.system == system)


def test_every_system_ran_on_every_pool(results):
    names = {SystemSpec.parse(s).name for s in DEFAULT_SYSTEMS} | {
        "longvec chunk-256 agg weighted dim 64 dense",
        "longvec truncate-1024 extend 1024 group tau 0.9",  # a long-context encoder, built by the runner
        SystemSpec.parse("late").name,  # late chunking, through the same collection path
    }
    assert {r.system for r in results} == names
    assert {r.dataset for r in results} == {"code", "passkey-256", "needle-256"}
    for r in results:
        assert 0.0 <= r.metrics["all"]["ndcg@10"] <= 1.0
        assert r.metrics["all"]["n"] == (40 if r.dataset == "code" else 10)


def test_system_names_carry_the_weights_each_chunk_is_fused_at():
    from longvec.index.lexical import DEFAULT_ALPHA, DEFAULT_FUSION, DEFAULT_TEXT_ALPHA

    names = {
        s: SystemSpec.parse(s).name for s in ("chunk", "chunk:alpha=0.5", "chunk:text_alpha=0.3", "chunk:mode=dense")
    }
    assert names == {
        "chunk": f"longvec chunk-256 hybrid {DEFAULT_FUSION} alpha {DEFAULT_ALPHA:g} text {DEFAULT_TEXT_ALPHA:g}",
        "chunk:alpha=0.5": f"longvec chunk-256 hybrid {DEFAULT_FUSION} alpha 0.5",  # one weight for every chunk
        "chunk:text_alpha=0.3": f"longvec chunk-256 hybrid {DEFAULT_FUSION} alpha {DEFAULT_ALPHA:g} text 0.3",
        "chunk:mode=dense": "longvec chunk-256 dense",
    }


def test_scores_are_sane(results):
    # the harness pairs queries, documents and relevance correctly: a broken pairing scores near 0
    assert by(results, "code", CHUNK).metrics["all"]["ndcg@10"] > 0.5
    assert by(results, "code", "bm25").metrics["all"]["ndcg@10"] > 0.3
    # each pass key occurs in exactly one document, so exact lexical matching finds it
    assert by(results, "passkey-256", "bm25").metrics["all"]["recall@1"] == 1.0


def test_costs_are_recorded(results):
    chunk = by(results, "code", CHUNK)
    assert chunk.encode_tokens > 0 and chunk.tokens_per_second > 0 and chunk.index_bytes > 0
    assert by(results, "code", "bm25").encode_tokens == 0


def test_tables_render(results):
    text = render(results)
    assert "### Retrieval quality" in text and "### Synthetic" in text and "### Cost" in text
    rows = synthetic_rows(results)
    assert {row["task"] for row in rows} == {"passkey", "needle"} and all("256" in row for row in rows)
    pivot = {row["system"]: row for row in pivot_rows(results)}
    assert set(pivot) == {r.system for r in results}
    code = by(results, "code", CHUNK).metrics
    column = next(c for c in pivot[CHUNK] if c.startswith("code all"))
    assert pivot[CHUNK][column] == code["all"]["ndcg@10"] and f"(n={int(code['all']['n'])})" in column


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--datasets", "nope"], "unknown datasets ['nope']"),
        (["--systems", "chunk:dim=x"], "dim must be a non-negative integer, got 'x'"),
        (["--systems", "magic"], "kind 'magic' not in"),
        (["--systems", "chunk:positions=spline"], "positions not in"),
        (["--systems", "chunk:tau=0"], "tau must be a number in [0.05, 10]"),
        (["--systems", "chunk:text_alpha=2"], "text_alpha must be a number in [0, 1]"),
        (["--lengths", "a,b"], "--lengths must be comma-separated integers"),
    ],
)
def test_bad_eval_arguments_exit_2(args, message, capsys, tmp_path):
    assert main(["eval", "--small", "--cache-dir", str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_cli_eval_all_datasets_small(tmp_path, capsys):
    out = tmp_path / "results.json"
    args = ["eval", "--small", "--cache-dir", str(tmp_path / "c"), "--output", str(out), "--systems", "chunk", "bm25"]
    assert main(args) == 0
    assert "pydoc" in capsys.readouterr().out
    data = json.loads(out.read_text())
    assert data["meta"]["command"].startswith("longvec") and len(data["results"]) == 2 * (1 + 1 + 2 + 2)


def test_cli_eval_seed_draws_another_sample(tmp_path, capsys, counter):
    cache = tmp_path / "c"
    args = ["eval", "--small", "--cache-dir", str(cache), "--datasets", "passkey", "--lengths", "256"]
    out = tmp_path / "results.json"
    assert main([*args, "--systems", "bm25", "--seed", "1", "--output", str(out)]) == 0
    assert json.loads(out.read_text())["meta"]["seed"] == 1
    assert cache_path(cache, "passkey", small=True, seed=1).exists()
    assert not cache_path(cache, "passkey", small=True, seed=0).exists()
    seed0 = load_dataset("passkey", cache, counter, small=True, seed=0)[0]
    seed1 = load_dataset("passkey", cache, counter, small=True, seed=1)[0]
    assert {q.text for q in seed0.queries} != {q.text for q in seed1.queries}
    assert {d.text for d in seed0.docs}.isdisjoint({d.text for d in seed1.docs})  # other needles in other cuts
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "--seed", "-1"])
    assert exit_info.value.code == 2 and "--seed: must be 0 or more" in capsys.readouterr().err
