"""A document with no language and no path: its language is read from its text (``chunking.detect_language``)."""

from __future__ import annotations

import json.decoder
from pathlib import Path

import pytest

from longvec.chunking import detect_language
from longvec.chunking.languages import DETECT_CHARS
from longvec.index import Collection, Document

SNIPPETS = {
    "python": "import os\n\n\nclass Store:\n    def get(self, key: str) -> bytes:\n"
    "        with open(key, 'rb') as fh:\n            return fh.read()\n",
    "javascript": "const fs = require('fs');\nfunction readAll(path) {\n  return fs.readFileSync(path, 'utf8')\n"
    "    .split('\\n').map((line) => line.trim());\n}\nmodule.exports = { readAll };\n",
    "typescript": "interface Point { x: number; y: number }\nexport function norm(p: Point): number {\n"
    "  const s: number = p.x * p.x + p.y * p.y;\n  return Math.sqrt(s);\n}\n",
    "java": "package demo;\n\npublic class Stack<T> {\n    private final java.util.ArrayList<T> items = "
    "new java.util.ArrayList<>();\n    public void push(T item) { items.add(item); }\n}\n",
    "go": 'package main\n\nimport "fmt"\n\nfunc main() {\n\tfor i := 0; i < 3; i++ {\n\t\tfmt.Println(i)\n\t}\n}\n',
    "rust": "use std::collections::HashMap;\n\nfn count(words: &[&str]) -> HashMap<&str, usize> {\n"
    "    let mut m = HashMap::new();\n    for w in words { *m.entry(*w).or_insert(0) += 1; }\n    m\n}\n",
    "c": "#include <stdio.h>\n\nstatic int add(int a, int b) {\n    return a + b;\n}\n\nint main(void) {\n"
    '    printf("%d\\n", add(1, 2));\n    return 0;\n}\n',
    "cpp": "#include <vector>\n\nnamespace geo {\ntemplate <typename T>\nclass Box {\n public:\n  explicit Box(T v) "
    ": v_(v) {}\n  T get() const { return v_; }\n private:\n  T v_;\n};\n}  // namespace geo\n",
}


@pytest.mark.parametrize("language", sorted(SNIPPETS))
def test_code_is_read_as_its_language(language):
    assert detect_language(SNIPPETS[language]) == language


@pytest.mark.parametrize(
    "text",
    [
        "The pass key is 48213. Remember it. 48213 is the pass key for Imogen.\n\nGrass is green (mostly).",
        "Installation\n============\n\nRun the installer, then restart: the service reads its settings on start.",
        "# Usage\n\nCall the client:\n\n```python\nclient = Client()\nclient.get('x')\n```\n\nThat is all.\n",
        "",
        "   \n\n ",
        "Hello world",  # two words: a declaration to Java's grammar, too little to tell
        "alpha beta",
    ],
)
def test_prose_markdown_and_blank_text_are_not_code(text):
    assert detect_language(text) is None


def test_a_module_whose_docstring_outruns_the_sample_is_still_python():
    module = '"""' + "A long module docstring. " * (DETECT_CHARS // 20) + '"""\n\n' + SNIPPETS["python"] * 40
    assert len(module) > 2 * DETECT_CHARS
    assert detect_language(module) == "python"
    assert detect_language(Path(json.decoder.__file__).read_text(encoding="utf-8")) == "python"


def test_a_given_language_or_path_wins_and_text_means_prose():
    code = SNIPPETS["python"]
    assert Document("a", code).effective_language == "python"  # read from the text
    assert Document("a", code, language="text").effective_language == "text"  # the way to say "prose"
    assert Document("a", code, path="notes.go").effective_language == "go"
    assert Document("lib/mod.rs", code).effective_language == "rust"  # a doc_id that names a file
    assert Document("a", "Plain words, nothing more.").effective_language is None
    assert Document("docs/guide.md", code).effective_language is None  # a prose extension: the text is not read
    assert Document("a", code, path="NOTES.txt").effective_language is None


def test_code_without_a_path_is_chunked_as_code(tmp_path, fake_embedder):
    body = "\n".join(f"def handler_{i}(request):\n    return respond(request, status={i})\n" for i in range(40))
    with Collection.create(tmp_path / "c", embedder=fake_embedder) as c:
        c.add([Document("svc", body), Document("prose", body, language="text")])
        detected, prose = c.get("svc"), c.get("prose")
        rows = c._store._db.execute("SELECT doc_id, kind, symbol FROM chunks").fetchall()
    assert detected.language == "python" and prose.language == "text"
    assert {kind for doc, kind, _ in rows if doc == "svc"} == {"code"}
    assert {kind for doc, kind, _ in rows if doc == "prose"} == {"text"}
    assert any(symbol and symbol.startswith("handler_") for doc, _, symbol in rows if doc == "svc")  # AST chunks
