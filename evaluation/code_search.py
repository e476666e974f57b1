"""The "code" dataset: find a standard-library function from the first sentence of its docstring.

Candidates are every function and method with a docstring in the running interpreter's standard library
(``sysconfig.get_paths()["stdlib"]``), walked in sorted order, skipping ``test``/``tests`` directories,
``idlelib``, ``lib2to3``, ``site-packages``, ``turtledemo`` and files that fail to parse. The document is the
function's exact source segment (decorators included, dedented by the ``def``'s own indentation) with the
docstring's lines removed; the query is the docstring's first sentence, whitespace-normalised.

Skipped as candidates: functions nested in other functions (their docstrings stay in the enclosing
function's document), functions whose body is only the docstring (nothing left to search), docstrings that
share a line with other code (no clean line removal), and repeated qualified names within one file (the
first definition wins, e.g. a property getter over its setter). Queries shorter than 3 words, or that occur
verbatim in any sampled document, make no query. Queries shared by more than one candidate anywhere in the
library (``"Return self==value."``) are ambiguous: every function sharing one is dropped as a query source,
though it may still be sampled as a distractor document.

On CPython 3.11.7 there were 5,995 candidate documents, 5,112 of them with a usable unique query; the full
variant samples 3,000 documents and 1,000 queries from them (with a fixed seed).
"""

from __future__ import annotations

import ast
import os
import random
import sysconfig
import tokenize
from dataclasses import dataclass
from pathlib import Path

from longvec.chunking.budget import TokenCounter
from longvec.evaluation.sentences import first_sentence, normalize_space, word_count
from longvec.evaluation.types import Dataset, EvalDoc, EvalQuery

EXCLUDED_DIRS = frozenset({"test", "tests", "idlelib", "lib2to3", "site-packages", "turtledemo", "__pycache__"})
SMALL_PATHS = (
    "json/",
    "textwrap.py",
    "shlex.py",
    "difflib.py",
    "fractions.py",
    "email/_header_value_parser.py",
)
LONG_TOKENS = 256
MIN_QUERY_WORDS = 3

_FunctionNode = ast.FunctionDef | ast.AsyncFunctionDef


@dataclass(frozen=True)
class CodeCandidate:
    """A function with a docstring: its id, source without the docstring, and query ("" if unusable)."""

    doc_id: str
    source: str
    query: str


def stdlib_files(root: Path, *, small: bool = False) -> list[Path]:
    """Python files under ``root`` in sorted order, excluded directories pruned."""
    files: list[Path] = []
    for directory, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in EXCLUDED_DIRS)
        files.extend(Path(directory) / n for n in sorted(names) if n.endswith(".py"))
    if small:
        files = [f for f in files if f.relative_to(root).as_posix().startswith(SMALL_PATHS)]
    return files


def _functions(tree: ast.Module) -> list[tuple[str, _FunctionNode]]:
    """Functions and methods not nested inside another function, with dotted qualified names.

    Nested functions are left out: their docstrings stay inside the enclosing function's document.
    """
    found: list[tuple[str, _FunctionNode]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef):
                found.append((f"{prefix}{child.name}", child))
            elif isinstance(child, ast.ClassDef):
                visit(child, f"{prefix}{child.name}.")
            else:
                visit(child, prefix)

    visit(tree, "")
    return found


def _strip_docstring(lines: list[str], node: _FunctionNode) -> str | None:
    """The function's source with its docstring lines removed, or ``None`` if that can't be done cleanly."""
    doc_stmt = node.body[0]
    if len(node.body) < 2 or doc_stmt.end_lineno is None or doc_stmt.end_col_offset is None:
        return None
    first, last = doc_stmt.lineno - 1, doc_stmt.end_lineno - 1
    if lines[first][: doc_stmt.col_offset].strip() or lines[last][doc_stmt.end_col_offset :].strip():
        return None
    start = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
    end = node.end_lineno if node.end_lineno is not None else last + 1
    kept = lines[start:first] + lines[last + 1 : end]
    if first - start < len(kept) and not kept[first - start].strip():
        del kept[first - start]  # the blank line that followed the docstring
    indent = node.col_offset
    dedented = [line[indent:] if not line[:indent].strip() else line for line in kept]
    return "\n".join(line.rstrip() for line in dedented)


def file_candidates(path: Path, relpath: str) -> list[CodeCandidate]:
    """Candidates of one file; ``[]`` if it can't be read or parsed."""
    try:
        with tokenize.open(path) as fh:
            text = fh.read()
        tree = ast.parse(text)
    except (SyntaxError, UnicodeDecodeError, ValueError):
        return []
    lines = text.splitlines()
    seen: set[str] = set()
    out: list[CodeCandidate] = []
    for qualname, node in _functions(tree):
        doc = ast.get_docstring(node)
        if not doc or qualname in seen:
            continue
        seen.add(qualname)
        source = _strip_docstring(lines, node)
        if source is None:
            continue
        query = first_sentence(doc)
        if word_count(query) < MIN_QUERY_WORDS or query in source or query in normalize_space(source):
            query = ""
        out.append(CodeCandidate(f"{relpath}::{qualname}", source, query))
    return out


def code_candidates(*, small: bool = False) -> list[CodeCandidate]:
    """All candidates of the running interpreter's standard library, sorted by doc_id."""
    root = Path(sysconfig.get_paths()["stdlib"])
    found = [c for f in stdlib_files(root, small=small) for c in file_candidates(f, f.relative_to(root).as_posix())]
    return sorted(found, key=lambda c: c.doc_id)


def sample_code_pool(
    name: str, language: str, candidates: list[CodeCandidate], counter: TokenCounter, *, small: bool, seed: int
) -> tuple[Dataset, dict]:
    """Sample a pool from sorted candidates (3,000 docs / 1,000 queries; small: 150 / 40) with its build info.

    Shared by every code-search dataset: a query comes from a sampled document whose query is unique among
    all candidates and absent from every sampled document; buckets by the document's token count.
    """
    n_docs, n_queries = (150, 40) if small else (3000, 1000)
    query_users: dict[str, int] = {}
    for c in candidates:
        if c.query:
            query_users[c.query] = query_users.get(c.query, 0) + 1
    rng = random.Random(f"{name}:{seed}")
    docs = sorted(rng.sample(candidates, min(n_docs, len(candidates))), key=lambda c: c.doc_id)
    pool_text = "\x00".join(c.source for c in docs)
    usable = [c for c in docs if c.query and query_users[c.query] == 1 and c.query not in pool_text]
    picked = sorted(rng.sample(usable, min(n_queries, len(usable))), key=lambda c: c.doc_id)
    lengths = dict(zip([c.doc_id for c in picked], counter.count_many([c.source for c in picked]), strict=True))
    queries, qrels = [], {}
    for i, c in enumerate(picked):
        qid = f"{name}-q{i:04d}"
        queries.append(EvalQuery(qid, c.query, "long" if lengths[c.doc_id] > LONG_TOKENS else "short"))
        qrels[qid] = {c.doc_id}
    info = {
        "candidates": len(candidates),
        "candidates_with_unique_query": sum(1 for c in candidates if c.query and query_users[c.query] == 1),
    }
    return Dataset(name, [EvalDoc(c.doc_id, c.source, language) for c in docs], queries, qrels), info


def build_code(counter: TokenCounter, *, small: bool = False, seed: int = 0) -> tuple[list[Dataset], dict]:
    """The "code" pool (3,000 docs / 1,000 queries; small: 150 / 40) and build info for the cache header."""
    dataset, info = sample_code_pool("code", "python", code_candidates(small=small), counter, small=small, seed=seed)
    return [dataset], info
