"""`longvec eval --beir`: BEIR-format test sets, graded metrics, run files, and the product path."""

from __future__ import annotations

import json
import math

import ir_measures
import pytest

from longvec.api.cli import main
from longvec.evaluation.beir import load_beir
from longvec.evaluation.metrics import evaluate_run
from longvec.evaluation.runner import Runner
from longvec.evaluation.systems import SystemSpec
from longvec.index import InvalidInputError

CORPUS = [
    {"_id": "d1", "title": "Binary search", "text": "Halve a sorted array until the key is found."},
    {"_id": "d2", "title": "", "text": "Quicksort partitions around a pivot and recurses on both sides."},
    {"_id": "d3", "text": "A hash map stores key value pairs in buckets."},
    {"_id": "d4", "title": "Graphs", "text": "Breadth first search visits neighbours level by level."},
]
QUERIES = [
    {"_id": "q1", "text": "find a key in a sorted array"},
    {"_id": "q2", "text": "hash table buckets"},
    {"_id": "q3", "text": "visit a graph level by level"},
    {"_id": "q9", "text": "judged in another split only"},
]
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1\nq2\td3\t0\nq3\td4\t1\n"


def write_beir(root):
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CORPUS))
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in QUERIES))
    (root / "qrels" / "test.tsv").write_text(QRELS)
    (root / "qrels" / "dev.tsv").write_text("query-id\tcorpus-id\tscore\nq9\td2\t1\n")
    return root


def test_loader_joins_titles_and_keeps_judged_queries(tmp_path):
    ds = load_beir(write_beir(tmp_path / "tiny"))
    assert ds.name == "tiny"
    texts = {d.doc_id: d.text for d in ds.docs}
    assert texts["d1"] == "Binary search Halve a sorted array until the key is found."
    assert texts["d2"] == CORPUS[1]["text"] and texts["d3"] == CORPUS[2]["text"]
    assert [q.qid for q in ds.queries] == ["q1", "q2", "q3"]  # q9 is judged in dev only
    assert ds.qrels["q1"] == {"d1": 2, "d2": 1} and ds.qrels["q2"] == {"d3": 0}
    assert [q.qid for q in load_beir(tmp_path / "tiny", "dev").queries] == ["q9"]


def test_graded_metrics_by_hand(tmp_path):
    ds = load_beir(write_beir(tmp_path / "tiny"))
    run = {"q1": [("d2", 0.9), ("d1", 0.8), ("d3", 0.1)], "q2": [("d3", 0.5)], "q3": [("d1", 0.7), ("d2", 0.6)]}
    means, per_query = evaluate_run(run, ds.qrels, ds.queries)
    # q1: gains 1 (rank 1) and 2 (rank 2): DCG = 1 + 2/log2(3); ideal 2 + 1/log2(3)
    ndcg_q1 = (1 + 2 / math.log2(3)) / (2 + 1 / math.log2(3))
    assert per_query["q1"]["ndcg@10"] == pytest.approx(ndcg_q1, abs=1e-6)
    assert per_query["q1"]["mrr@10"] == 1.0
    assert (per_query["q1"]["recall@1"], per_query["q1"]["recall@10"]) == (0.5, 1.0)
    assert per_query["q2"] == dict.fromkeys(per_query["q2"], 0.0)  # no relevant document: 0, still counted
    assert per_query["q3"]["ndcg@10"] == 0.0 and per_query["q3"]["recall@100"] == 0.0
    assert means["all"]["n"] == 3
    assert means["all"]["ndcg@10"] == pytest.approx(ndcg_q1 / 3, abs=1e-6)
    assert means["all"]["mrr@10"] == pytest.approx(1 / 3, abs=1e-6)
    assert means["all"]["recall@1"] == pytest.approx(0.5 / 3, abs=1e-6)


def test_ties_keep_the_order_given(tmp_path):
    ds = load_beir(write_beir(tmp_path / "tiny"))
    run = {"q3": [("d4", 0.5), ("d1", 0.5)], "q1": [], "q2": []}
    _, per_query = evaluate_run(run, ds.qrels, ds.queries)
    assert per_query["q3"]["mrr@10"] == 1.0  # trec_eval would reorder the tie by doc id (d4 after d1)


@pytest.mark.parametrize(
    ("qrels", "message"),
    [
        ("query-id\tcorpus-id\tscore\nq1\tnope\t1\n", "not in the corpus"),
        ("query-id\tcorpus-id\tscore\nqx\td1\t1\n", "queries not in queries.jsonl"),
        ("query-id\tcorpus-id\tscore\nq1\td1\thigh\n", "test.tsv:2: expected query-id"),
    ],
)
def test_bad_beir_input_is_a_clear_error(tmp_path, qrels, message):
    root = write_beir(tmp_path / "tiny")
    (root / "qrels" / "test.tsv").write_text(qrels)
    with pytest.raises(InvalidInputError, match=message):
        load_beir(root)
    with pytest.raises(InvalidInputError, match="no qrels file"):
        load_beir(root, "train")


LONG = " ".join(f"Sentence {i} talks about topic {i % 7} in some detail." for i in range(60))


@pytest.mark.parametrize(
    ("spec", "index_flags", "flags"),
    [
        ("chunk", [], []),
        ("chunk:dim=64,agg=mean", [], ["--dim", "64", "--agg", "mean"]),
        ("chunk:text_alpha=0.2", ["--text-alpha", "0.2"], []),  # a collection's own weights, as the CLI sets them
    ],
)
def test_harness_row_is_longvec_search(tmp_path, capsys, spec, index_flags, flags):
    """The harness's longvec row and `longvec index` + `longvec search` on the same data rank identically (in
    fp32: in bf16 a text's vector moves a little with the batch it is encoded in, and the two batch apart)."""
    root = write_beir(tmp_path / "tiny")
    with open(root / "corpus.jsonl", "a") as f:  # multi-chunk documents, where maxsim and aggregation differ
        for i in range(3):
            f.write(json.dumps({"_id": f"long{i}", "title": f"Part {i}", "text": LONG[i * 50 :] + LONG}) + "\n")
    ds = load_beir(root)
    result = Runner(k=6, work_dir=tmp_path / "work", precision="fp32").run(SystemSpec.parse(spec), ds)
    coll = tmp_path / "coll"
    fp32 = ["--precision", "fp32"]
    assert main(["index", "--collection", str(coll), "--input", str(root / "corpus.jsonl"), *index_flags, *fp32]) == 0
    capsys.readouterr()
    runs = tmp_path / "cli.jsonl"
    args = ["search", "--collection", str(coll), "--queries", str(root / "queries.jsonl"), "--k", "6", *flags, *fp32]
    assert main([*args, "--output", str(runs)]) == 0
    cli = {line["qid"]: line["hits"] for line in map(json.loads, runs.read_text().splitlines())}
    for qid, ranking in result.run.items():
        assert [d for d, _ in ranking] == [h["doc_id"] for h in cli[qid]]
        assert [s for _, s in ranking] == pytest.approx([h["score"] for h in cli[qid]], abs=1e-5)
    assert main(["info", "--collection", str(coll)]) == 0
    stored = json.loads(capsys.readouterr().out)
    assert stored["documents"] == 7 and stored["chunks"] > 7


def test_beir_corpus_lines_index_with_offsets_into_the_joined_text(tmp_path, capsys):
    root = write_beir(tmp_path / "tiny")
    coll = tmp_path / "coll"
    assert main(["index", "--collection", str(coll), "--input", str(root / "corpus.jsonl")]) == 0
    from longvec.index import Collection

    with Collection.open(coll, readonly=True) as c:
        d1 = c.get("d1")
        assert d1.text == "Binary search Halve a sorted array until the key is found."
        assert d1.metadata == {"beir_text_start": len("Binary search ")}
        assert d1.text[d1.metadata["beir_text_start"] :] == CORPUS[0]["text"]
        hit = c.search("sorted array key", k=1)[0]
        assert hit.doc_id == "d1" and d1.text[hit.chunks[0].start : hit.chunks[0].end].startswith("Binary")


def test_eval_beir_cli_writes_results_and_runs(tmp_path, capsys):
    root = write_beir(tmp_path / "tiny")
    out, runs = tmp_path / "results.json", tmp_path / "runs"
    args = ["eval", "--beir", str(root), "--systems", "chunk", "bm25", "--output", str(out), "--runs", str(runs)]
    assert main(args) == 0
    printed = capsys.readouterr().out
    chunk = SystemSpec.parse("chunk").name
    assert f"| tiny | bm25 | {chunk} |" in printed  # the paired test against the first system
    results = json.loads(out.read_text())["results"]
    assert [r["system"] for r in results] == [chunk, "bm25"]
    assert set(results[0]["per_query"]) == {"q1", "q2", "q3"} and "run" not in results[0]
    qrels = [ir_measures.Qrel(q, d, g) for q, docs in load_beir(root).qrels.items() for d, g in docs.items()]
    trec = runs / f"tiny__{chunk.replace(' ', '_')}.trec"
    from_file = ir_measures.calc_aggregate([ir_measures.nDCG @ 10], qrels, ir_measures.read_trec_run(str(trec)))
    assert from_file[ir_measures.nDCG @ 10] == pytest.approx(results[0]["metrics"]["all"]["ndcg@10"], abs=1e-6)
    assert (runs / "tiny__bm25.jsonl").read_text().count("\n") == 3
    assert main(["eval", "--beir", str(tmp_path / "missing")]) == 2
    assert "no BEIR directory" in capsys.readouterr().err


def test_trec_runs_reproduce_the_metrics_when_scores_tie(tmp_path):
    from longvec.evaluation.report import write_runs
    from longvec.evaluation.runner import SystemResult

    ds = load_beir(write_beir(tmp_path / "tiny"))
    run = {"q1": [("d2", 0.5), ("d1", 0.5), ("d3", 0.5)], "q2": [("d3", 0.1)], "q3": [("d4", 0.2), ("d1", 0.2)]}
    means, per_query = evaluate_run(run, ds.qrels, ds.queries)
    result = SystemResult("tied", "tiny", means, per_query=per_query, run=run)
    (trec, _) = write_runs(tmp_path / "runs", [result])
    qrels = [ir_measures.Qrel(q, d, g) for q, docs in ds.qrels.items() for d, g in docs.items()]
    measures = [ir_measures.nDCG @ 10, ir_measures.RR @ 10]
    got = ir_measures.calc_aggregate(measures, qrels, ir_measures.read_trec_run(str(trec)))
    assert got[ir_measures.nDCG @ 10] == pytest.approx(means["all"]["ndcg@10"], abs=1e-9)
    assert got[ir_measures.RR @ 10] == pytest.approx(means["all"]["mrr@10"], abs=1e-9)
    spaced = SystemResult("x", "tiny", means, per_query=per_query, run={"q1": [("a doc", 1.0)]})
    with pytest.raises(InvalidInputError, match="holds whitespace"):
        write_runs(tmp_path / "more", [spaced])


def test_beir_variants_int_ids_no_header_extra_fields(tmp_path):
    root = tmp_path / "variant"
    (root / "qrels").mkdir(parents=True)
    corpus = [
        {"_id": 1, "title": None, "text": "def add(a, b):\n    return a + b\n", "language": "python", "partition": "x"},
        {"_id": 2, "text": "Notes about subtraction."},
    ]
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in corpus))
    (root / "queries.jsonl").write_text(json.dumps({"_id": 7, "text": "add two numbers"}) + "\n")
    (root / "qrels" / "test.tsv").write_text("\ufeff7\t1\t1\n")  # a BOM, no header
    ds = load_beir(root)
    assert [(d.doc_id, d.language) for d in ds.docs] == [("1", "python"), ("2", None)]
    assert ds.qrels == {"7": {"1": 1}} and [q.qid for q in ds.queries] == ["7"]
    coll = tmp_path / "coll"
    assert main(["index", "--collection", str(coll), "--input", str(root / "corpus.jsonl")]) == 0
    from longvec.index import Collection

    with Collection.open(coll, readonly=True) as c:
        stored = c.get("1")
        assert stored.language == "python" and stored.metadata == {"partition": "x"}
        assert c.search("add two numbers", k=1)[0].chunks[0].symbol == "add"
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [*corpus, corpus[1]]))
    with pytest.raises(InvalidInputError, match="corpus.jsonl:3: duplicate _id '2'"):
        load_beir(root)


def test_cli_agg_choices_are_the_products():
    from longvec.api.cli import build_parser
    from longvec.index import AGG_MODES

    search = build_parser()._subparsers._group_actions[0].choices["search"]
    (agg,) = [a for a in search._actions if a.dest == "agg"]
    assert tuple(agg.choices) == AGG_MODES


def test_bad_system_options_fail_before_any_indexing(tmp_path, capsys):
    root = write_beir(tmp_path / "tiny")
    assert main(["eval", "--beir", str(root), "--systems", "st:dim=128"]) == 2
    assert "expected key=value with key in ['max_tokens', 'precision', 'backend']" in capsys.readouterr().err
    assert main(["eval", "--beir", str(root), "--systems", "chunk:dim=100"]) == 2
    assert "dim 100 not in" in capsys.readouterr().err
