"""`longvec train`: pairs mined from a corpus or read from JSONL, Matryoshka2dLoss fine-tuning, and natively elastic
models used as they are."""

from __future__ import annotations

import json

import numpy as np
import pytest

from longvec.api.cli import main
from longvec.chunking.pairs import first_sentence, mine_pairs
from longvec.embedder import EmbedderConfig, InvalidSettingError, load_embedder
from longvec.embedder.matryoshka import TRAIN_RECORD, native_axes
from longvec.index import Collection, CollectionNotFoundError, Document, InvalidInputError
from longvec.index.training import mined_pairs, read_pairs

PYTHON = '''
import os


@cache
def parse_header(line, sep=":"):
    """Split an HTTP header line into its name and its value.

    The value keeps inner colons.
    """
    name, value = line.split(sep, 1)
    return name.strip(), value.strip().lower() or os.environ.get("DEFAULT_VALUE", "")


class Stack:
    """A last-in first-out stack of items kept in a plain list."""

    def push(self, item):
        self.items.append(item)
        return len(self.items) if self.items and item is not None else 0
'''

JAVASCRIPT = """
// Copyright 2024 Example Corp, all rights reserved.
/**
 * Compute the greatest common divisor of two integers.
 * @param a the first integer
 */
function gcd(a, b) {
  while (b !== 0) { const t = b; b = a % b; a = t; }
  return Math.abs(a) + 0 * b + 0 * a;
}

// Licensed under the Apache License, version 2.0 of the license.
function noop(x) { return x === undefined ? null : x; }
"""

GO = """package strs

// Reverse returns the string s with its runes in the reverse order.
// It allocates one new slice.
func Reverse(s string) string {
	r := []rune(s)
	for i, j := 0, len(r)-1; i < j; i, j = i+1, j-1 {
		r[i], r[j] = r[j], r[i]
	}
	return string(r)
}
"""

MARKDOWN = """# Installing the service on a fresh machine

Run make install first. It creates a virtual environment with the CPU build of torch and installs every
dependency of the project in editable mode, so that changes to the sources apply at once.

## Notes
Too short.
"""


def test_doc_comments_become_anchors_of_the_code_they_document() -> None:
    pairs = {p.anchor: p for p in mine_pairs("a.py", PYTHON, "python")}
    header = pairs["Split an HTTP header line into its name and its value."]
    assert header.kind == "doc-comment" and header.doc_id == "a.py"
    assert header.positive.startswith('@cache\ndef parse_header(line, sep=":"):\n    name, value')  # no blank left
    assert "inner colons" not in header.positive and '"""' not in header.positive
    assert "A last-in first-out stack of items kept in a plain list." in pairs
    js = mine_pairs("a.js", JAVASCRIPT, "javascript")
    # the block comment stands alone (the copyright line above it is not part of it); license comments make none
    assert [(p.anchor, p.positive.splitlines()[0]) for p in js] == [
        ("Compute the greatest common divisor of two integers.", "function gcd(a, b) {")
    ]
    go = mine_pairs("a.go", GO, "go")
    assert [p.anchor for p in go] == ["Reverse returns the string s with its runes in the reverse order."]
    assert go[0].positive.startswith("func Reverse") and "//" not in go[0].positive
    assert mine_pairs("a.py", PYTHON, "python") == mine_pairs("a.py", PYTHON, "python")  # deterministic


def test_text_gives_heading_and_first_sentence_pairs() -> None:
    pairs = mine_pairs("a.md", MARKDOWN)
    assert [(p.kind, p.anchor) for p in pairs] == [
        ("heading", "Installing the service on a fresh machine"),
        ("first-sentence", "Run make install first."),
    ]
    assert pairs[0].positive.startswith("Run make install first.") and "Too short" not in pairs[1].positive
    assert first_sentence("One two. Three four.\n\nFive.") == "One two."
    # a fenced block's `#` lines are not headings, and do not end the section around them
    fenced = MARKDOWN.replace("## Notes", "```python\n# make a virtual environment for the project\nx = 1\n```")
    assert [p.anchor for p in mine_pairs("b.md", fenced) if p.kind == "heading"] == [pairs[0].anchor]
    assert "virtual environment for the project" not in mine_pairs("b.md", fenced)[0].positive


def test_code_without_a_grammar_gives_no_pairs_and_rust_inner_docs_are_clean() -> None:
    shell = "# Install the project into a fresh virtual environment\n" + "pip install -e . && make test\n" * 5
    assert mine_pairs("setup.sh", shell, "bash") == []
    rust = "//! unused\n\n/// Returns the sum of the two numbers given to it.\n" + (
        "pub fn add(a: i64, b: i64) -> i64 {\n    let s = a + b;\n    s + 0 + 0 + 0 + 0 + 0 + 0 + 0 + 0\n}\n"
    )
    assert [p.anchor for p in mine_pairs("lib.rs", rust, "rust")] == ["Returns the sum of the two numbers given to it."]
    assert mine_pairs("lib.rs", "//! Helpers for adding two numbers together safely.\n" + rust[11:], "rust")[
        0
    ].anchor.startswith("Returns")


def test_mined_pairs_drop_ambiguous_anchors_and_sample_by_seed() -> None:
    twice = 'def f(x):\n    """Return the value of the thing."""\n    return x + 1 + 2 + 3 + 4 + 5 + 6 + 7 + 8 + 9\n'
    docs = [Document("a.py", PYTHON), Document("b.py", twice), Document("c.py", twice.replace("f(", "g("))]
    pairs = mined_pairs(docs)
    assert {p.doc_id for p in pairs} == {"a.py"}  # both copies of the shared anchor are gone
    assert mined_pairs(docs, seed=3) == mined_pairs(docs, seed=3) and len(mined_pairs(docs, max_pairs=1)) == 1


def test_read_pairs_names_the_bad_line(tmp_path) -> None:
    good = tmp_path / "pairs.jsonl"
    good.write_text('{"query": "q1", "positive": "p1"}\n\n{"anchor": "q2", "document": "p2"}\n')
    assert read_pairs(good) == [("q1", "p1"), ("q2", "p2")]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"query": "q1", "positive": "p1"}\n{"query": "q2", "positive": 3}\n')
    with pytest.raises(InvalidInputError, match=r"bad.jsonl:2: a pair needs"):
        read_pairs(bad)
    bad.write_text('{"query": "q1", "positive": "p1"}\n')
    with pytest.raises(InvalidInputError, match="at least 2 pairs, found 1"):
        read_pairs(bad)


def test_native_axes_are_read_from_the_model_directory_or_declared(tmp_path) -> None:
    assert native_axes(tmp_path) == frozenset() and native_axes("some/hub-name") == frozenset()
    (tmp_path / "README.md").write_text("Unlike models trained with AdaptiveLayerLoss, this one...\n")
    assert native_axes(tmp_path) == frozenset()  # a mention is not a training section
    (tmp_path / "README.md").write_text("### Training\n#### MatryoshkaLoss\n```json\n{}\n```\n")
    assert native_axes(tmp_path) == {"dims"}
    (tmp_path / TRAIN_RECORD).write_text(json.dumps({"axes": ["dims", "layers"]}))
    assert native_axes(tmp_path) == {"dims", "layers"}
    assert native_axes(tmp_path, "none") == frozenset() and native_axes(None, "layers") == {"layers"}
    with pytest.raises(InvalidSettingError, match="elastic 'both' not in"):
        native_axes(tmp_path, "both")
    for bad in ('{"axes": "dims"}', '{"axes": ["depth"]}', "not json"):
        (tmp_path / TRAIN_RECORD).write_text(bad)
        with pytest.raises(InvalidSettingError, match=TRAIN_RECORD):
            native_axes(tmp_path)


def test_a_natively_elastic_model_is_used_as_is(tmp_path) -> None:
    declared = load_embedder(EmbedderConfig(backend="torch", precision="fp32", cache_dir=None, elastic="2d"))
    with Collection.create(tmp_path / "c", embedder=declared, search_mode="dense") as c:
        c.add([Document(f"d{i}.py", f"def step_{i}(x):\n    return x * {i} + {i}\n" * 3) for i in range(12)])
        assert c.info()["native_matryoshka"] == ["dims", "layers"]
        assert len(c.search("step", k=3, layers=2, dim=64)) == 3  # any depth, no calibration needed
        with pytest.raises(InvalidInputError, match="trained elastic in dims and layers: use it as is"):
            c.calibrate()
        assert c.calibrate(rotation=True)["rotation"]  # forcing one is still possible
        calibration = c._current_calibration()
        assert calibration.depths() == [6]
        shallow = declared.encode_queries(["step"], layers=2)
        [hit] = c.search("step", k=1, layers=2)  # still any depth: the rotation applies to it as it is
        _, row_doc, stored, _ = c.chunk_vectors()
        assert hit.score == pytest.approx(float((stored @ calibration.rotate(shallow)[0]).max()), abs=1e-5)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """A randomly initialised 2-layer, 64-dim BERT sentence-transformer with the default model's tokenizer."""
    from sentence_transformers import SentenceTransformer, models
    from transformers import AutoTokenizer, BertConfig, BertModel

    from longvec.embedder.model import resolve_model

    root = tmp_path_factory.mktemp("tiny")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model(None))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
    )
    BertModel(config).save_pretrained(root / "hf")
    tokenizer.save_pretrained(root / "hf")
    transformer = models.Transformer(str(root / "hf"), max_seq_length=64)
    SentenceTransformer(modules=[transformer, models.Pooling(64, "mean")], device="cpu").save(str(root / "st"))
    return root / "st"


def test_train_mines_pairs_fine_tunes_and_saves_a_model_longvec_uses_natively(tiny_model, tmp_path, capsys) -> None:
    pytest.importorskip("datasets", reason="training needs the train extra (installed by `make install`)")
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"m{i}.py").write_text(PYTHON.replace("parse_header", f"parse_header_{i}").replace("HTTP", f"v{i}"))
    out = tmp_path / "trained"
    before = load_embedder(EmbedderConfig(model=str(tiny_model), cache_dir=None, backend="torch", precision="fp32"))
    args = ["train", "--model", str(tiny_model), "--output", str(out), str(src), "--max-steps", "2"]
    assert main([*args, "--batch-size", "4", "--seed", "1"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["steps"] == 2 and record["axes"] == ["dims", "layers"] and record["dims"] == [32, 48, 64]
    assert record["pairs"] == 6  # the six header docstrings; the six Stack ones share an anchor and are dropped
    assert record["base_model"] == str(tiny_model) and record["source"] == "mined from 6 documents"
    assert not (out / "README.md").exists()  # no model card: it would quote training pairs
    trained = load_embedder(EmbedderConfig(model=str(out), cache_dir=None, backend="torch", precision="fp32"))
    assert trained.native_axes == {"dims", "layers"} and trained.layers == 2
    texts = ["split a header line", "a stack of items"]
    assert not np.allclose(trained.encode_queries(texts), before.encode_queries(texts), atol=1e-4)  # it learned
    assert main([*args, "--batch-size", "4"]) == 2  # the output exists now: nothing is overwritten
    assert "not an empty directory" in capsys.readouterr().err


def test_a_collection_s_documents_are_read_without_loading_its_model(tmp_path) -> None:
    from longvec.index.training import collection_documents

    from fakes import KeywordEmbedder

    tokenizer = load_embedder(EmbedderConfig(backend="torch", precision="fp32", cache_dir=None)).tokenizer
    with Collection.create(tmp_path / "c", embedder=KeywordEmbedder(tokenizer)) as c:
        c.add([Document("a.py", PYTHON, path="a.py"), Document("b.md", MARKDOWN)])
    model, docs = collection_documents(tmp_path / "c")
    assert model == "keyword-fake" and {d.doc_id: d.text for d in docs} == {"a.py": PYTHON, "b.md": MARKDOWN}
    assert len(mined_pairs(docs)) == 4
    with pytest.raises(CollectionNotFoundError, match="no collection at"):
        collection_documents(tmp_path / "missing")


def test_train_refuses_unclear_sources(tmp_path, capsys) -> None:
    pairs = tmp_path / "p.jsonl"
    pairs.write_text('{"query": "a", "positive": "b"}\n{"query": "c", "positive": "d"}\n')
    out = str(tmp_path / "out")
    assert main(["train", "--output", out]) == 2
    assert "give one source of pairs" in capsys.readouterr().err
    assert main(["train", "--output", out, "--pairs", str(pairs), str(tmp_path)]) == 2
    assert "give one source of pairs" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train", "--output", out, str(tmp_path / "empty")]) == 2
    assert "only 0 pairs could be mined" in capsys.readouterr().err
    assert main(["train", "--output", out, "--pairs", str(pairs), "--max-pairs", "5"]) == 2
    assert "--max-pairs samples mined pairs" in capsys.readouterr().err
    with pytest.raises(SystemExit) as bad:
        main(["train", "--output", out, "--pairs", str(pairs), "--epochs", "0"])
    assert bad.value.code == 2 and "must be a positive number" in capsys.readouterr().err
