"""The "code-go", "code-ts" and "code-cpp" datasets: find a function from the first sentence of its doc comment.

The same task as "code" (``code_search.py``) on other languages' real, documented sources, parsed with the
tree-sitter grammars of ``chunking.languages``. A candidate is a function or method definition with a body
whose doc comment sits directly above it (no blank line between; decorators and ``export``/``template<>``
wrappers belong to the definition). The document is the definition's source lines, dedented, without the
doc comment (comments inside the body stay); the query is the first sentence of the cleaned comment
(``doc_comments.py``). Definitions nested in function bodies, object literals and lambdas are not
candidates; a definition sharing its first line with other code (``/** x */ f() {}``) is skipped. Repeated
qualified names in one file (C++ overloads, Go ``init``) get ``#2``, ``#3``... ids. Sampling, query rules
(at least 3 words, not verbatim in any sampled document, unique in the whole source) and buckets are the
"code" dataset's (``code_search.sample_code_pool``).

Sources (``make eval-sources`` installs all three; each root can be overridden by an environment variable):

- code-go: the Go standard library of Debian's ``golang-go`` (``$LONGVEC_GO_SRC``, default the first of
  ``/usr/lib/go/src``, ``/usr/local/go/src``, ``/usr/lib/go-*/src``). Skipped: ``cmd/`` (the toolchain, not
  the library), ``testdata``, ``vendor``, ``*_test.go`` and generated files (``// Code generated ... DO NOT
  EDIT.``); ``internal/`` packages are kept. Go 1.19.8: 8,313 candidates (about half of the 17,500 function
  bodies have a doc comment), 7,020 with a unique query; the full pool is 3,000 documents, 1,000 queries
  (755 short, 245 long).
- code-ts: the TypeScript sources (``src/``, no ``.d.ts``) of the npm package ``rxjs@7.8.2``
  (``$LONGVEC_TS_SRC``: that ``src/`` directory, default ``~/.cache/longvec/sources/node_modules/rxjs/src``):
  function declarations and class methods with a ``/** */`` comment. Not taken: a comment on an overload
  signature (no body; the implementation below it is a candidate only with its own comment) and
  ``const f = () => ...`` values.
  rxjs 7.8.2: 204 candidates, 194 with a unique query; the full pool is all of them (204 documents, 194
  queries: 150 short, 44 long), the small one 143 of them.
- code-cpp: the Eigen headers of Debian's ``libeigen3-dev`` (``$LONGVEC_CPP_SRC``, default
  ``/usr/include/eigen3``), ``Eigen/`` and ``unsupported/Eigen/``, Doxygen ``/** */``, ``/*! */``, ``///``
  and ``//!`` comments (plain comments in the block ignored). Eigen 3.4.0: 1,684 candidates, 1,174 with a
  unique query; the full pool is all 1,684 documents with 1,000 queries (893 short, 107 long). Eigen's
  macros (``EIGEN_DEVICE_FUNC``) trip the grammar in places: a definition in an error node loses its
  namespace prefix (``DenseBase.Zero`` beside ``Eigen.MatrixBase.dot``), which only affects its id.

Small variants use a few directories (``CodeLang.small_paths``) and sample 150 documents / 40 queries. A full
build parses every file: about 5 s for Go, 4 s for Eigen, under 1 s for rxjs on one CPU.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from longvec.chunking.budget import TokenCounter
from longvec.chunking.languages import CODE_LANGUAGES, definition_name, parser_for
from longvec.evaluation.code_search import MIN_QUERY_WORDS, CodeCandidate, sample_code_pool
from longvec.evaluation.doc_comments import doxygen, go_doc, tsdoc
from longvec.evaluation.sentences import first_sentence, normalize_space, word_count
from longvec.evaluation.types import Dataset
from longvec.index import InvalidInputError

if TYPE_CHECKING:
    from tree_sitter import Node

MAKE_TARGET = "make eval-sources"
_GO_GENERATED = re.compile(rb"^// Code generated .* DO NOT EDIT\.$", re.MULTILINE)


@dataclass(frozen=True)
class CodeLang:
    """Where one dataset's sources live and how its definitions and doc comments look."""

    dataset: str
    language: str  # a grammar of chunking.languages, also the EvalDoc language
    env_var: str
    default_roots: tuple[str, ...]  # first existing one wins; ``~`` and globs expanded
    marker: str  # a file that must exist under a root for it to count
    extensions: tuple[str, ...]
    skip_dirs: frozenset[str]
    skip_suffixes: tuple[str, ...]
    functions: frozenset[str]  # definition node types that make candidates
    scopes: frozenset[str]  # node types whose name prefixes the definitions inside them
    wrappers: frozenset[str]  # node types wrapping one definition (export, template<>)
    barriers: frozenset[str]  # node types never searched for definitions (function values, objects)
    clean: Callable[[list[str]], str]
    small_paths: tuple[str, ...]
    version: Callable[[Path], str]


def _go_version(root: Path) -> str:
    for path in (root.parent / "VERSION", root.resolve().parent / "VERSION"):
        if path.is_file():
            return path.read_text(encoding="utf-8").split()[0]
    goversion = root / "internal/goversion/goversion.go"
    found = re.search(r"const Version = (\d+)", goversion.read_text(encoding="utf-8")) if goversion.is_file() else None
    return f"go1.{found[1]}" if found else "unknown"


def _npm_version(root: Path) -> str:
    path = root.parent / "package.json"
    return str(json.loads(path.read_text(encoding="utf-8")).get("version", "unknown")) if path.exists() else "unknown"


def _eigen_version(root: Path) -> str:
    path = root / "Eigen/src/Core/util/Macros.h"
    text = path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""
    parts = [re.search(rf"#define EIGEN_{p}_VERSION (\d+)", text) for p in ("WORLD", "MAJOR", "MINOR")]
    return ".".join(m[1] for m in parts if m) or "unknown"


_FUNCTION_VALUES = frozenset({"arrow_function", "function_expression", "function", "generator_function"})

LANGS: dict[str, CodeLang] = {
    lang.dataset: lang
    for lang in (
        CodeLang(
            dataset="code-go",
            language="go",
            env_var="LONGVEC_GO_SRC",
            default_roots=("/usr/lib/go/src", "/usr/local/go/src", "/usr/lib/go-*/src"),
            marker="fmt/print.go",
            extensions=(".go",),
            skip_dirs=frozenset({"cmd", "testdata", "vendor"}),
            skip_suffixes=("_test.go",),
            functions=frozenset({"function_declaration", "method_declaration"}),
            scopes=frozenset(),
            wrappers=frozenset(),
            barriers=frozenset({"func_literal"}),
            clean=go_doc,
            small_paths=("strings/", "strconv/", "bufio/", "sort/", "path/", "unicode/"),
            version=_go_version,
        ),
        CodeLang(
            dataset="code-ts",
            language="typescript",
            env_var="LONGVEC_TS_SRC",
            default_roots=("~/.cache/longvec/sources/node_modules/rxjs/src",),
            marker="internal/Observable.ts",
            extensions=(".ts",),
            skip_dirs=frozenset({"node_modules", "__tests__"}),
            skip_suffixes=(".d.ts", ".spec.ts", ".test.ts"),
            functions=frozenset({"function_declaration", "generator_function_declaration", "method_definition"}),
            scopes=frozenset({"class_declaration", "abstract_class_declaration", "class"}),
            wrappers=frozenset({"export_statement"}),
            barriers=_FUNCTION_VALUES | {"object"},
            clean=tsdoc,
            small_paths=("internal/operators/", "internal/observable/"),
            version=_npm_version,
        ),
        CodeLang(
            dataset="code-cpp",
            language="cpp",
            env_var="LONGVEC_CPP_SRC",
            default_roots=("/usr/include/eigen3",),
            marker="Eigen/src/Core/util/Macros.h",
            extensions=(".h", ".hpp"),
            skip_dirs=frozenset({"test", "tests"}),
            skip_suffixes=(),
            functions=frozenset({"function_definition"}),
            scopes=frozenset({"class_specifier", "struct_specifier", "namespace_definition"}),
            wrappers=frozenset({"template_declaration"}),
            barriers=frozenset({"lambda_expression", "compound_statement"}),
            clean=doxygen,
            small_paths=("Eigen/src/Core/",),
            version=_eigen_version,
        ),
    )
}


def _version_key(path: Path) -> list[tuple[int, str]]:
    """Sort key comparing the numbers inside a path as numbers (``go-1.21`` after ``go-1.9``)."""
    return [(int(part), "") if part.isdigit() else (-1, part) for part in re.split(r"(\d+)", str(path))]


def source_root(lang: CodeLang, root: Path | None = None) -> Path:
    """The source directory: ``root``, else ``$env_var``, else the first default holding ``lang.marker``."""
    given = root or (Path(os.environ[lang.env_var]) if os.environ.get(lang.env_var) else None)
    if given is not None:
        if not given.is_dir():
            raise InvalidInputError(
                f"{lang.dataset}: source directory {given} does not exist; run `{MAKE_TARGET}` or fix the path"
            )
        return given
    for pattern in lang.default_roots:
        expanded = os.path.expanduser(pattern)
        paths = (
            sorted(Path("/").glob(expanded.lstrip("/")), key=_version_key, reverse=True)
            if "*" in expanded
            else [Path(expanded)]
        )
        for path in paths:
            if (path / lang.marker).is_file():
                return path
    raise InvalidInputError(
        f"{lang.dataset}: sources not found (looked in {', '.join(lang.default_roots)}); "
        f"run `{MAKE_TARGET}` or set {lang.env_var} to the source directory"
    )


def source_fingerprint(name: str, root: Path | None = None) -> dict[str, str]:
    """Which sources a dataset is built from (for the cache header): resolved root and version."""
    lang = LANGS[name]
    path = source_root(lang, root)
    return {"root": str(path.resolve()), "version": lang.version(path)}


def source_files(lang: CodeLang, root: Path, *, small: bool = False) -> list[Path]:
    """Source files under ``root`` in sorted order, skipped directories pruned."""
    files: list[Path] = []
    for directory, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in lang.skip_dirs and not d.startswith("."))
        files.extend(
            Path(directory) / n
            for n in sorted(names)
            if n.endswith(lang.extensions) and not n.endswith(lang.skip_suffixes)
        )
    if small:
        files = [f for f in files if f.relative_to(root).as_posix().startswith(lang.small_paths)]
    return files


def _unwrap(node: Node, lang: CodeLang) -> Node:
    """The definition inside ``export``/``template<>`` wrappers (the node itself when not a wrapper)."""
    kinds = lang.functions | lang.scopes | lang.wrappers
    while node.type in lang.wrappers:
        inner = next((c for c in node.named_children if c.type in kinds), None)
        if inner is None:
            return node
        node = inner
    return node


def definitions(root: Node, lang: CodeLang) -> Iterator[tuple[str, Node, Node]]:
    """``(qualified name, outermost wrapper, definition)`` of every candidate function, in source order."""
    spec = CODE_LANGUAGES[lang.language]

    def visit(node: Node, prefix: str) -> Iterator[tuple[str, Node, Node]]:
        for child in node.named_children:
            inner = _unwrap(child, lang)
            if inner.type in lang.functions:
                if inner.child_by_field_name("body") is not None:
                    yield f"{prefix}{definition_name(inner, spec) or '<anonymous>'}", child, inner
            elif inner.type in lang.scopes:
                name = definition_name(inner, spec)
                body = inner.child_by_field_name("body")
                if body is not None:
                    yield from visit(body, f"{prefix}{name}." if name else prefix)
            elif inner.type not in lang.barriers:
                yield from visit(inner, prefix)

    yield from visit(root, "")


def _doc_block(anchor: Node) -> tuple[Node, list[str]]:
    """Where a definition starts (its first decorator, else itself) and the comments directly above that."""
    start = anchor
    while (prev := start.prev_named_sibling) is not None and prev.type == "decorator":
        start = prev
    row, comments = start.start_point.row, []
    prev = start.prev_named_sibling
    while prev is not None and prev.type == "comment" and prev.end_point.row == row - 1:
        comments.insert(0, (prev.text or b"").decode("utf-8", errors="replace"))
        row = prev.start_point.row
        prev = prev.prev_named_sibling
    return start, comments


def _source(lines: list[bytes], start: Node, anchor: Node) -> str | None:
    """The definition's whole lines, dedented by its column; ``None`` when code precedes it on its line."""
    row, col = start.start_point.row, start.start_point.column
    if lines[row][:col].strip():
        return None
    kept = [ln[col:] if not ln[:col].strip() else ln for ln in lines[row : anchor.end_point.row + 1]]
    return "\n".join(ln.decode("utf-8", errors="replace").rstrip() for ln in kept)


def file_candidates(lang: CodeLang, source: bytes, relpath: str) -> list[CodeCandidate]:
    """Candidates of one file's source; ``[]`` for a generated Go file."""
    if lang.language == "go" and _GO_GENERATED.search(source):
        return []
    tree = parser_for(lang.language).parse(source)
    lines = source.split(b"\n")
    seen: dict[str, int] = {}
    out: list[CodeCandidate] = []
    for qualname, anchor, _definition in definitions(tree.root_node, lang):
        start, comments = _doc_block(anchor)
        doc = lang.clean(comments) if comments else ""
        text = _source(lines, start, anchor) if doc else None
        if text is None:
            continue
        seen[qualname] = seen.get(qualname, 0) + 1
        suffix = f"#{seen[qualname]}" if seen[qualname] > 1 else ""
        query = first_sentence(doc)
        if word_count(query) < MIN_QUERY_WORDS or query in text or query in normalize_space(text):
            query = ""
        out.append(CodeCandidate(f"{relpath}::{qualname}{suffix}", text, query))
    return out


def code_lang_candidates(name: str, *, small: bool = False, root: Path | None = None) -> list[CodeCandidate]:
    """All candidates of dataset ``name``'s sources, sorted by doc_id."""
    lang = LANGS[name]
    base = source_root(lang, root)
    found = [
        c
        for f in source_files(lang, base, small=small)
        for c in file_candidates(lang, f.read_bytes(), f.relative_to(base).as_posix())
    ]
    return sorted(found, key=lambda c: c.doc_id)


def build_code_lang(
    name: str, counter: TokenCounter, *, small: bool = False, seed: int = 0, root: Path | None = None
) -> tuple[list[Dataset], dict[str, Any]]:
    """The pool of ``name`` (3,000 docs / 1,000 queries at most; small: 150 / 40) and its build info."""
    candidates = code_lang_candidates(name, small=small, root=root)
    dataset, info = sample_code_pool(name, LANGS[name].language, candidates, counter, small=small, seed=seed)
    return [dataset], info
