"""Evaluation suite: metrics on hand-computed rankings, smoke-sized datasets built twice and checked."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest

from longvec.chunking.budget import TokenCounter
from longvec.evaluation import DATASET_NAMES, Dataset, EvalQuery, evaluate_run, format_table, load_dataset
from longvec.evaluation.datasets import cache_path
from longvec.evaluation.pydoc_text import remove_sentence

# ---------------------------------------------------------------------------------------------- metrics

QUERIES = [EvalQuery("q1", "first", "short"), EvalQuery("q2", "second", "long"), EvalQuery("q3", "third", "long")]
QRELS = {"q1": {"a"}, "q2": {"b"}, "q3": {"c"}}


def test_perfect_run_scores_one() -> None:
    run = {"q1": [("a", 0.9), ("x", 0.1)], "q2": [("b", 0.8)], "q3": [("c", 0.5), ("a", 0.4)]}
    result, per_query = evaluate_run(run, QRELS, QUERIES)
    assert result["all"] == {
        "ndcg@10": 1.0,
        "mrr@10": 1.0,
        "recall@1": 1.0,
        "recall@10": 1.0,
        "recall@100": 1.0,
        "n": 3,
    }
    assert set(per_query) == {"q1", "q2", "q3"}


def test_relevant_at_rank_two() -> None:
    run = {"q1": [("x", 0.9), ("a", 0.8), ("y", 0.1)]}
    m = evaluate_run(run, QRELS, QUERIES[:1])[0]["all"]
    assert m["mrr@10"] == 0.5
    assert m["ndcg@10"] == pytest.approx(1 / math.log2(3))
    assert (m["recall@1"], m["recall@10"]) == (0.0, 1.0)


def test_missing_query_and_rank_beyond_ten_score_zero() -> None:
    run = {"q1": [(f"x{i}", 1.0 - i / 100) for i in range(10)] + [("a", 0.0)]}
    result, _ = evaluate_run(run, QRELS, QUERIES)
    assert result["all"] == {
        "ndcg@10": 0.0,
        "mrr@10": 0.0,
        "recall@1": 0.0,
        "recall@10": 0.0,
        "recall@100": 1 / 3,
        "n": 3,
    }


def test_buckets_split_and_average() -> None:
    run = {"q1": [("a", 1.0)], "q2": [("x", 1.0), ("b", 0.5)]}  # q3 missing
    result, _ = evaluate_run(run, QRELS, QUERIES)
    assert list(result) == ["all", "long", "short"]
    assert result["short"]["mrr@10"] == 1.0 and result["short"]["n"] == 1
    assert result["long"]["mrr@10"] == pytest.approx(0.25) and result["long"]["n"] == 2
    assert result["all"]["mrr@10"] == pytest.approx(0.5)
    assert result["all"]["recall@10"] == pytest.approx(2 / 3)


def test_multiple_relevant_and_duplicates() -> None:
    qrels = {"q1": {"a", "b"}}
    m = evaluate_run({"q1": [("a", 1.0), ("a", 0.9), ("b", 0.8)]}, qrels, QUERIES[:1])[0]["all"]
    assert m["ndcg@10"] == pytest.approx(1.0)  # the duplicate "a" is ignored, "b" is at rank 2
    assert m["recall@1"] == 0.5


def test_query_without_judgements_is_an_error() -> None:
    with pytest.raises(ValueError, match="1 queries have no judgements in qrels, e.g. 'q1'"):
        evaluate_run({}, {}, QUERIES[:1])


def test_format_table() -> None:
    table = format_table([{"system": "bm25", "ndcg@10": 0.12345, "n": 3}, {"system": "a|b", "n": 4}])
    assert table.splitlines() == [
        "| system | ndcg@10 | n |",
        "|---|---|---|",
        "| bm25 | 0.123 | 3 |",
        "| a\\|b |  | 4 |",
    ]
    assert format_table([]) == ""


def test_remove_sentence_across_pydoc_wrapping() -> None:
    text = " |  foo(x)\n |      Return the value of the\n |      thing. More text.\n"
    assert remove_sentence(text, "Return the value of the thing.") == " |  foo(x)\n |       More text.\n"


# --------------------------------------------------------------------------------------------- datasets


@pytest.fixture(scope="module")
def built(counter: TokenCounter, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[list[Dataset]]]:
    """Every small dataset built twice, into two separate cache directories (``counter`` is in conftest)."""
    dirs = [tmp_path_factory.mktemp("cache-a"), tmp_path_factory.mktemp("cache-b")]
    return {name: [load_dataset(name, d, counter, small=True) for d in dirs] for name in DATASET_NAMES}


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_small_build_is_deterministic_and_cached(
    name: str, built: dict[str, list[list[Dataset]]], counter: TokenCounter, tmp_path: Path
) -> None:
    first, second = built[name]
    assert first == second
    path_a = cache_path(tmp_path, name, small=True)
    assert not path_a.exists()
    assert load_dataset(name, tmp_path, counter, small=True) == first
    assert load_dataset(name, tmp_path, counter, small=True) == first  # now read back from the cache file
    assert path_a.read_text(encoding="utf-8").splitlines()[0].startswith('{"record": "header"')


@pytest.mark.parametrize("name", DATASET_NAMES)
def test_qrels_reference_existing_docs_and_queries(name: str, built: dict[str, list[list[Dataset]]]) -> None:
    for ds in built[name][0]:
        doc_ids = [d.doc_id for d in ds.docs]
        qids = [q.qid for q in ds.queries]
        assert len(set(doc_ids)) == len(doc_ids) and len(set(qids)) == len(qids)
        assert 10 <= len(ds.queries) <= 60
        assert set(ds.qrels) == set(qids)
        assert all(rel and rel <= set(doc_ids) for rel in ds.qrels.values())


@pytest.mark.parametrize("name", ["code", "pydoc"])
def test_query_text_removed_from_its_document(name: str, built: dict[str, list[list[Dataset]]]) -> None:
    (ds,) = built[name][0]
    texts = {d.doc_id: d.text for d in ds.docs}
    for q in ds.queries:
        (doc_id,) = ds.qrels[q.qid]
        assert q.text not in texts[doc_id]
        assert q.text not in " ".join(texts[doc_id].split())
    assert {q.bucket for q in ds.queries} == ({"short", "long"} if name == "code" else {"summary", "deep"})
    assert {d.language for d in ds.docs} == ({"python"} if name == "code" else {None})


@pytest.mark.parametrize("name", ["passkey", "needle"])
def test_synthetic_lengths_within_tolerance(
    name: str, built: dict[str, list[list[Dataset]]], counter: TokenCounter
) -> None:
    pools = built[name][0]
    assert [ds.name for ds in pools] == [f"{name}-256", f"{name}-512"]
    for ds, length in zip(pools, (256, 512), strict=True):
        assert {q.bucket for q in ds.queries} == {f"len{length}"}
        assert len({d.text for d in ds.docs}) == len(ds.docs)
        for n in counter.count_many([d.text for d in ds.docs]):
            assert abs(n - length) <= 0.05 * length


def test_passkey_number_only_in_its_document(built: dict[str, list[list[Dataset]]]) -> None:
    for ds in built["passkey"][0]:
        for q in ds.queries:
            name = re.fullmatch(r"what is the pass key for (\w+)\?", q.text).group(1)  # type: ignore[union-attr]
            (doc_id,) = ds.qrels[q.qid]
            relevant = next(d.text for d in ds.docs if d.doc_id == doc_id)
            number = re.search(rf"{name}'s pass key is (\d{{5}})\.", relevant).group(1)  # type: ignore[union-attr]
            assert [d.doc_id for d in ds.docs if number in d.text] == [doc_id]
            assert [d.doc_id for d in ds.docs if name in d.text] == [doc_id]


def test_needle_fact_only_in_its_document(built: dict[str, list[list[Dataset]]]) -> None:
    for ds in built["needle"][0]:
        for q in ds.queries:
            adj, obj, place = re.search(r"the (\w+) (.+) (?:of|in) (\w+)\b", q.text).groups()  # type: ignore[union-attr]
            fact = re.compile(rf"The {adj} {obj} of {place} |In {place}, the {adj} {obj} ")
            holders = [d.doc_id for d in ds.docs if fact.search(d.text)]
            assert holders == list(ds.qrels[q.qid])


def test_unknown_dataset_name(counter: TokenCounter, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown dataset 'nope'"):
        load_dataset("nope", tmp_path, counter)
