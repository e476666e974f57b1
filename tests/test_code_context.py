"""Code chunks carry the signatures of the definitions they belong to as embedded context, never in their span."""

from __future__ import annotations

import pytest
from test_code_chunker import HEADERS_CPP, HEADERS_GO, HEADERS_JAVA, HEADERS_PYTHON

from longvec.chunking import Chunker, TokenCounter
from longvec.chunking.context import MAX_CONTEXT_TOKENS, context_reserve
from longvec.index import Collection, Document

# language, source, {a name whose body is split: the signature line its body pieces must carry}
CASES = [
    ("python", HEADERS_PYTHON, {"read": "def read(self, size=-1):", "_read_header": "def _read_header(fp):"}),
    ("go", HEADERS_GO, {"Push": "func (s *Stack) Push(weights, values, offsets []int) int {"}),
    (
        "java",
        HEADERS_JAVA,
        {"weightedTotal": "public int weightedTotal(int[] weights, int[] values, int[] offsets) throws Exception {"},
    ),
    (
        "cpp",
        HEADERS_CPP,
        {"weighted_total": "long weighted_total(const long *weights, const long *values, const long *offsets) {"},
    ),
]


@pytest.mark.parametrize("budget", (96, 160))
@pytest.mark.parametrize(("language", "text", "signatures"), CASES)
def test_body_pieces_carry_their_signature(counter: TokenCounter, language, text, signatures, budget) -> None:
    chunks = Chunker(counter, budget).chunk("doc", text, language=language)
    # packed to the budget less the reserve, the context changes only what is embedded: same spans and texts
    plain = Chunker(counter, budget - context_reserve(budget), code_context=False).chunk("doc", text, language=language)
    assert [(c.start, c.end, c.text, c.symbol) for c in chunks] == [(c.start, c.end, c.text, c.symbol) for c in plain]
    assert all(c.text == text[c.start : c.end] for c in chunks)
    assert not any(c.context for c in plain)
    for c in chunks:
        assert c.n_tokens == counter.count(c.embed_text) <= budget  # the context counts in the budget
        assert counter.count(c.context + "\n") - counter.n_special <= MAX_CONTEXT_TOKENS
    for name, signature in signatures.items():
        # the chunk that opens the function holds its signature (its symbol may be the enclosing class's)
        opening = next(c for c in chunks if signature.split("(")[0] in c.text)
        rest = [c for c in chunks[opening.chunk_id + 1 :] if c.symbol and c.symbol.rsplit(".", 1)[-1] == name]
        assert len(rest) >= 2, name  # the function is split
        assert signature not in opening.context
        for piece in rest:
            assert signature not in piece.text
            assert signature.startswith(piece.context.splitlines()[-1]), (name, piece.context)
            assert len(piece.context.splitlines()[-1]) > len(name) + 4


@pytest.mark.parametrize(("language", "text", "signatures"), CASES)
def test_overlap_repeats_whole_lines_only_inside_a_split_definition(counter: TokenCounter, language, text, signatures):
    budget, overlap = 128, 24
    chunks = Chunker(counter, budget, overlap_tokens=overlap).chunk("doc", text, language=language)
    overlapped = 0
    for c in chunks:
        assert c.text == text[c.start : c.end] and c.n_tokens == counter.count(c.embed_text) <= budget
    for a, b in zip(chunks, chunks[1:], strict=False):
        if b.start >= a.end:
            continue
        overlapped += 1
        assert a.symbol is not None and a.symbol == b.symbol  # pieces of one definition, never neighbours
        assert text[text.rfind("\n", 0, b.start) + 1 : b.start].strip() == ""  # starts at a line's first token
        assert counter.count(text[b.start : a.end]) - counter.n_special <= overlap
    assert overlapped >= 1
    disjoint = Chunker(counter, budget).chunk("doc", text, language=language)
    assert all(a.end <= b.start for a, b in zip(disjoint, disjoint[1:], strict=False))


def test_a_method_inside_a_split_class_gets_the_class_line(counter: TokenCounter) -> None:
    chunks = Chunker(counter, 96).chunk("doc", HEADERS_PYTHON, language="python")
    closed = next(c for c in chunks if c.symbol == "Reader.closed")
    assert closed.text.startswith("@property") and closed.context == "class Reader(BaseReader):"


@pytest.mark.parametrize(("language", "text", "signatures"), CASES)
def test_path_context_leads_every_chunk_and_stays_out_of_the_span(counter: TokenCounter, language, text, signatures):
    budget, path = 256, "src/pkg/module_name.ext"
    chunks = Chunker(counter, budget, path_context=True).chunk("doc", text, language=language, path=path)
    plain = Chunker(counter, budget).chunk("doc", text, language=language, path=path)
    assert [(c.start, c.end) for c in chunks] == [(c.start, c.end) for c in plain]  # the same spans
    carried = 0
    for c, p in zip(chunks, plain, strict=True):
        assert c.text == text[c.start : c.end] and c.n_tokens == counter.count(c.embed_text) <= budget
        if c.context == p.context:  # short of room: the path, the outermost line, went first
            continue
        first, _, rest = c.context.partition("\n")
        assert path.startswith(first) and rest == p.context  # the path (or its cut start), then the signatures
        carried += first == path
    assert carried >= len(chunks) // 2
    no_path = Chunker(counter, budget, path_context=True).chunk("doc", text, language=language)
    assert [c.context for c in no_path] == [c.context for c in plain]


def test_path_context_re_embeds_a_moved_document(tmp_path, fake_embedder) -> None:
    with Collection.create(tmp_path / "c", embedder=fake_embedder, path_context=True) as c:
        c.add([Document("d", "def f():\n    return 1\n", path="a/x.py")])
        assert c.add([Document("d", "def f():\n    return 1\n", path="a/x.py")]).unchanged == 1
        assert c.add([Document("d", "def f():\n    return 1\n", path="b/x.py")]).updated == 1  # its context changed
        c.add([Document("n", "Some notes.", path="a/notes.md")])  # prose never carries the path: a rename is a
        assert c.add([Document("n", "Some notes.", path="b/notes.md")]).unchanged == 1  # field update only
    with Collection.create(tmp_path / "p", embedder=fake_embedder, path_context=False) as c:  # a field update
        c.add([Document("d", "def f():\n    return 1\n", path="a/x.py")])
        assert c.add([Document("d", "def f():\n    return 1\n", path="b/x.py")]).unchanged == 1


def test_source_path_is_the_path_else_a_file_like_doc_id() -> None:
    assert Document("d", "x", path="a/b.go").source_path == "a/b.go"
    assert Document("src/app.py", "x").source_path == "src/app.py"
    assert Document("doc-17", "x").source_path is None
    assert Document("json/decoder.py::scanstring", "x").source_path is None


def test_no_room_no_context(counter: TokenCounter) -> None:
    """A body piece that fills the budget gets a cut context, or none below the minimum worth adding."""
    for budget in (64, 80, 96):
        for c in Chunker(counter, budget).chunk("doc", HEADERS_GO, language="go"):
            assert c.n_tokens <= budget
            if c.context:
                assert counter.count(c.context) - counter.n_special >= 4


@pytest.mark.parametrize(
    ("language", "functions"),
    [
        ("python", "\n\n".join(f"def f{i}(x):\n    return x + {i}\n" for i in range(6))),
        ("go", "package m\n\n" + "\n\n".join(f"func F{i}(x int) int {{\n\treturn x + {i}\n}}" for i in range(6))),
        ("java", "class M {\n" + "\n".join(f"    int f{i}(int x) {{ return x + {i}; }}" for i in range(6)) + "\n}\n"),
        ("rust", "\n\n".join(f"fn f{i}(x: i32) -> i32 {{\n    x + {i}\n}}" for i in range(6))),
    ],
)
def test_small_siblings_share_a_chunk(counter: TokenCounter, language: str, functions: str) -> None:
    chunks = Chunker(counter, 256).chunk("doc", functions, language=language)
    assert len(chunks) == 1 and chunks[0].text == functions.strip()


def test_stored_offsets_are_the_original_spans(tmp_path, fake_embedder) -> None:
    with Collection.create(tmp_path / "c", embedder=fake_embedder) as coll:
        expected = coll.chunk(Document("go/stack.go", HEADERS_GO, language="go"))
        assert any(c.context for c in expected)
        coll.add([Document("go/stack.go", HEADERS_GO, language="go")])
        hits = coll.search("offsets weights", k=1, chunks_per_doc=len(expected))
    spans = {(c.start, c.end) for c in expected}
    assert hits and {(c.start, c.end) for c in hits[0].chunks} <= spans


def test_doc_comments_naming_the_function_are_not_taken_for_its_signature(counter: TokenCounter) -> None:
    body = "\n".join(f"\ttotal += weights[{i}] * values[{i}] - offsets[{i}]" for i in range(40))
    text = (
        "package main\n\n"
        "// Push adds the weighted values to the stack.\n"
        "// Push never fails.\n"
        f"func (s *Stack) Push(weights, values, offsets []int) int {{\n\ttotal := 0\n{body}\n\treturn total\n}}\n"
    )
    chunks = Chunker(counter, 128).chunk("doc", text, language="go")
    rest = [c for c in chunks if c.symbol == "Stack.Push" and "func (s *Stack)" not in c.text]
    assert len(rest) >= 2
    assert all(c.context.splitlines()[-1].startswith("func (s *Stack) Push(") for c in rest), rest[0].context
