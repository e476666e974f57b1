"""The ``sts`` baseline: semantic-text-splitter chunks sized by our tokenizer, scored as the best chunk."""

from __future__ import annotations

import pytest
from semantic_text_splitter import CodeSplitter, TextSplitter

from longvec.chunking import TokenCounter
from longvec.evaluation.runner import Runner, SemanticSplitter
from longvec.evaluation.systems import DEFAULT_SYSTEMS, SystemSpec
from longvec.evaluation.types import Dataset, EvalDoc, EvalQuery
from longvec.index import InvalidInputError, token_counter

# Three functions with no blank line between them: only the grammar knows where one ends.
FUNCS = [
    "def load_config(path):\n    with open(path) as fh:\n        data = json.load(fh)\n"
    "    return {k.lower(): v for k, v in data.items()}",
    "def merge_settings(base, override):\n    merged = dict(base)\n    merged.update(override)\n    return merged",
    "def render_row(row, widths):\n    cells = [str(v).ljust(w) for v, w in zip(row, widths)]\n"
    '    return " | ".join(cells)',
]
SOURCE = "\n".join(FUNCS) + "\n"

GO = """package stack

// Stack is a last-in first-out stack of integers.
type Stack struct{ items []int }

// Push puts a value on top of the stack.
func (s *Stack) Push(v int) { s.items = append(s.items, v) }

// Pop removes and returns the top value of the stack.
func (s *Stack) Pop() int {
\tv := s.items[len(s.items)-1]
\ts.items = s.items[:len(s.items)-1]
\treturn v
}
"""
FIB = "def fibonacci(n):\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n"
# A long module: many functions, far over one 256-token chunk.
LONG = "\n\n".join(
    f"def checksum_{i}(data):\n    total = {i}\n    for byte in data:\n        total = (total * 31 + byte) % 65521\n"
    f"    return total"
    for i in range(40)
)
PROSE = {
    "baking": "Knead the dough for ten minutes, then let the bread rise in a warm place until it doubles in size. "
    "Bake at two hundred degrees until the crust is golden brown.",
    "volcano": "The volcano erupted at dawn, sending ash high into the atmosphere. Lava flowed down the northern "
    "slope, and nearby villages were evacuated.",
    "football": "The striker scored twice in the second half, and the home team won the championship final "
    "after extra time. ",
    "garden": "Water the tomatoes every morning; prune the roses in late winter. Über-fertilising harms the soil. "
    * 30,
}


def pool(name: str, docs: list[EvalDoc], queries: dict[str, str]) -> Dataset:
    return Dataset(
        name,
        docs,
        [EvalQuery(f"q-{doc_id}", text, "all") for doc_id, text in queries.items()],
        {f"q-{doc_id}": {doc_id} for doc_id in queries},
    )


CODE_POOL = pool(
    "code-tiny",
    [
        EvalDoc("config", SOURCE, "python"),
        EvalDoc("fib", FIB, "py"),
        EvalDoc("stack", GO, "go"),
        EvalDoc("checksum", LONG, "python"),
        EvalDoc("ruby", 'def greet(name)\n  puts "Hello, #{name}!"\nend\n', "ruby"),  # no grammar: text splitter
        EvalDoc("empty", "", "python"),
    ],
    {
        "fib": "compute the n-th fibonacci number",
        "stack": "pop the top value off a stack",
        "ruby": "print a greeting with the person's name",
    },
)
TEXT_POOL = pool(
    "text-tiny",
    [EvalDoc(doc_id, text, None) for doc_id, text in PROSE.items()],
    {"baking": "how long to bake bread", "volcano": "lava eruption and evacuation", "garden": "pruning roses"},
)


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> Runner:
    return Runner(k=5, work_dir=tmp_path_factory.mktemp("sts"))


def test_spec_parsing():
    spec = SystemSpec.parse("sts")
    assert (spec.kind, spec.max_tokens, spec.name, spec.dense) == ("sts", 256, "semantic-text-splitter-256", True)
    assert SystemSpec.parse("sts:max_tokens=128").name == "semantic-text-splitter-128"
    assert "sts" in DEFAULT_SYSTEMS
    with pytest.raises(
        InvalidInputError,
        match=r"system 'sts:overlap=8': expected key=value with key in \['max_tokens', 'precision', 'backend'\]",
    ):
        SystemSpec.parse("sts:overlap=8")


def test_grammar_languages_get_the_code_splitter(real_embedder):
    splitter = SemanticSplitter(token_counter(real_embedder), real_embedder.tokenizer, 256)
    for language in ("python", "py", "go", "typescript", "tsx", "cpp", "c", "java", "javascript", "rust"):
        assert isinstance(splitter.splitter(language), CodeSplitter), language
    for language in (None, "ruby", "markdown"):
        assert isinstance(splitter.splitter(language), TextSplitter), language


def test_python_splits_at_function_boundaries(real_embedder):
    splitter = SemanticSplitter(token_counter(real_embedder), real_embedder.tokenizer, 56)
    assert splitter.pieces(EvalDoc("d", SOURCE, "python")) == FUNCS
    # the same text as prose packs lines greedily and cuts inside a function
    as_text = splitter.pieces(EvalDoc("d", SOURCE, None))
    assert as_text != FUNCS and not all(piece.startswith("def ") for piece in as_text)


@pytest.mark.parametrize("max_tokens", [24, 64, 256])
@pytest.mark.parametrize("prompt", ["", "search_document: "])
def test_no_chunk_over_budget(real_embedder, max_tokens, prompt):
    counter = TokenCounter(real_embedder.tokenizer, prompt)  # as the embedder counts, specials and prompt included
    splitter = SemanticSplitter(counter, real_embedder.tokenizer, max_tokens)
    assert splitter.capacity == max_tokens - counter.n_special
    for doc in (*CODE_POOL.docs, *TEXT_POOL.docs):
        pieces = splitter.pieces(doc)
        assert all(counter.count(piece) <= max_tokens for piece in pieces), doc.doc_id
        assert all(piece in doc.text for piece in pieces)
        if counter.count(doc.text) > max_tokens:
            assert len(pieces) > 1, doc.doc_id
    assert splitter.pieces(EvalDoc("e", "", None)) == []


@pytest.mark.parametrize("ds", [CODE_POOL, TEXT_POOL], ids=["code", "text"])
def test_sts_system_runs_on_a_pool(runner, ds):
    spec = SystemSpec.parse("sts")
    result = runner.run(spec, ds)
    assert result.system == "semantic-text-splitter-256" and result.dataset == ds.name
    assert result.metrics["all"]["n"] == len(ds.queries)
    assert result.encode_tokens > 0 and result.index_bytes > 0
    for q in ds.queries:
        assert result.run[q.qid][0][0] in ds.qrels[q.qid], q.text
    # every embedded chunk fits the model, counted by the runner's own counter
    enc = runner.encoder(spec.max_tokens)
    splitter = SemanticSplitter(enc.counter, enc.tokenizer, spec.max_tokens)
    counts = [n for d in ds.docs for n in enc.counter.count_many(splitter.pieces(d))]
    assert counts and max(counts) <= enc.max_tokens
