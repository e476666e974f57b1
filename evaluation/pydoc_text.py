"""The "pydoc" dataset: long plain-text pages of the standard library's own documentation.

Every public importable stdlib module and public submodule (``sys.stdlib_module_names`` plus
``pkgutil.walk_packages``; private names, tests, ``idlelib``, ``tkinter``/``turtle``, ``antigravity``,
``this``, ``site``, ``encodings.*`` codecs and ``pydoc_data`` left out) is rendered with
``pydoc.render_doc(module, renderer=pydoc.plaintext)`` and ``pydoc.plain`` in an isolated interpreter (see
``_pydoc_worker``). The DATA and FILE sections are dropped (they hold ``os.environ``, ``sys.path`` and install
paths) and ``at 0x...`` addresses are scrubbed, so pages are deterministic. doc_id = the module's dotted name.

Two query kinds, each sentence distinctive (>= 6 words, found in no other page), whitespace-normalised, and
removed from its page wherever it occurs (also when pydoc wrapped it over lines or behind ``|`` bars):

- "summary": the first line of the module docstring (it also appears on the NAME line).
- "deep": a sentence of a function/method docstring shown on the page whose first occurrence lies after
  the first 1,000 tokens of the page; up to three per page (one per page would give too few).

Class pages are not separate documents: pydoc already renders every class inside its module's page, so a class
page would duplicate part of another document and its sentences could never be distinctive.

On CPython 3.11.7: 403 pages (median ~2,000 tokens, p90 ~11,000), 187 distinctive summary lines (all used),
300 deep queries sampled from more candidates.
"""

from __future__ import annotations

import json
import os
import random
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from longvec.chunking.budget import TokenCounter
from longvec.evaluation.sentences import normalize_space, paragraphs, split_sentences, word_count
from longvec.evaluation.types import Dataset, EvalDoc, EvalQuery

SMALL_MODULES = (
    "argparse", "base64", "bisect", "calendar", "configparser", "csv", "difflib", "fractions", "ftplib",
    "gzip", "heapq", "imaplib", "json", "json.decoder", "pprint", "shlex", "statistics", "string", "tarfile",
    "textwrap", "zipfile",
)  # fmt: skip
MIN_WORDS = 6
MAX_SENTENCE_CHARS = 300
DEEP_AFTER_TOKENS = 1000
DEEP_PER_PAGE = 3
_SEP = r"(?:[ \t]*\n[ \t|]*)+|[ \t]+"  # a run of spaces, or line breaks with pydoc's indentation and | bars
_SEP_RE = re.compile(_SEP)


@dataclass(frozen=True)
class Page:
    """A rendered pydoc page with its summary line and its functions' docstrings."""

    name: str
    text: str
    summary: str
    docstrings: list[str]


def render_pages(modules: tuple[str, ...] = ()) -> list[Page]:
    """Render ``modules`` (or every public stdlib module when empty) in an isolated interpreter."""
    worker = Path(__file__).with_name("_pydoc_worker.py")
    # -S: no site-packages or .pth hooks; -P: no script dir on sys.path; a clean PYTHON* environment except a
    # fixed hash seed (-I would also drop PYTHONHASHSEED, and set reprs would render in random order).
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")} | {"PYTHONHASHSEED": "0"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pages.json"
        subprocess.run(
            [sys.executable, "-S", "-P", str(worker), str(out)],
            input=json.dumps(list(modules)),
            text=True,
            env=env,
            cwd=tmp,
            check=True,
            capture_output=True,
            timeout=1800,
        )
        raw = json.loads(out.read_text(encoding="utf-8"))
    return sorted((Page(**p) for p in raw), key=lambda p: p.name)


def flatten(text: str) -> str:
    """``text`` with every whitespace run (line breaks plus pydoc's indentation and bars) as one space."""
    return _SEP_RE.sub(" ", text)


def sentence_pattern(sentence: str) -> re.Pattern[str]:
    """Matches ``sentence`` (single-spaced words) in a page however pydoc wrapped and indented it."""
    return re.compile(f"(?:{_SEP})".join(re.escape(word) for word in sentence.split(" ")))


def remove_sentence(text: str, sentence: str) -> str:
    """``text`` with every occurrence of ``sentence`` (in any wrapping) removed."""
    pattern = sentence_pattern(sentence)
    while (cleaned := pattern.sub("", text)) != text:
        text = cleaned
    return text


def _candidate_sentences(docstrings: list[str]) -> list[str]:
    """Plain-prose sentences of >= MIN_WORDS words from docstrings, deduplicated and sorted."""
    found: set[str] = set()
    for doc in docstrings:
        for para in paragraphs(doc):
            if ">>>" in para or any(line[:1].isspace() for line in para.split("\n")):
                continue  # code examples and indented blocks
            for s in split_sentences(para):
                if word_count(s) >= MIN_WORDS and len(s) <= MAX_SENTENCE_CHARS and s[0].isupper() and s[-1] == ".":
                    found.add(s)
    return sorted(found)


class _Corpus:
    """All flattened pages joined, to test that a sentence occurs in one page and nowhere else."""

    def __init__(self, pages: list[Page]) -> None:
        self.flat = {p.name: flatten(p.text) for p in pages}
        self.joined = "\x00".join(self.flat.values())

    def distinctive(self, name: str, sentence: str) -> bool:
        own = self.flat[name].count(sentence)
        return own > 0 and self.joined.count(sentence) == own


def _deep_cutoff(counter: TokenCounter, text: str) -> int | None:
    """Character offset where the page's first DEEP_AFTER_TOKENS tokens (specials included) end."""
    content = DEEP_AFTER_TOKENS - counter.n_special
    offsets = counter.token_offsets(text[: 20 * DEEP_AFTER_TOKENS])
    if len(offsets) < content:
        offsets = counter.token_offsets(text)
    return offsets[content - 1][1] if len(offsets) > content else None


def _pick_deep(page: Page, corpus: _Corpus, counter: TokenCounter, rng: random.Random) -> list[str]:
    """Up to DEEP_PER_PAGE distinctive docstring sentences that first occur after the first 1,000 tokens."""
    cutoff = _deep_cutoff(counter, page.text)
    if cutoff is None:
        return []
    sentences = _candidate_sentences(page.docstrings)
    rng.shuffle(sentences)
    picked: list[str] = []
    for s in sentences:
        if len(picked) == DEEP_PER_PAGE:
            break
        if any(s in p or p in s for p in picked) or not corpus.distinctive(page.name, s):
            continue
        first = sentence_pattern(s).search(page.text)
        if first is None or first.start() < cutoff:
            continue
        if counter.count(page.text[: first.start()]) >= DEEP_AFTER_TOKENS:
            picked.append(s)
    return picked


def build_pydoc(counter: TokenCounter, *, small: bool = False, seed: int = 0) -> tuple[list[Dataset], dict]:
    """The "pydoc" pool (up to 300 summary + 300 deep queries; small: 21 pages, 15 + 15) and build info."""
    n_each = 15 if small else 300
    pages = render_pages(SMALL_MODULES if small else ())
    corpus = _Corpus(pages)
    candidates: dict[str, list[tuple[str, str]]] = {"summary": [], "deep": []}
    for page in pages:
        summary = normalize_space(page.summary)
        if word_count(summary) >= MIN_WORDS and corpus.distinctive(page.name, summary):
            candidates["summary"].append((page.name, summary))
        for deep in _pick_deep(page, corpus, counter, random.Random(f"pydoc:{seed}:{page.name}")):
            if deep not in summary and summary not in deep:
                candidates["deep"].append((page.name, deep))
    rng = random.Random(f"pydoc:{seed}")
    texts = {p.name: p.text for p in pages}
    queries, qrels = [], {}
    for bucket in ("summary", "deep"):
        pool = candidates[bucket]
        for name, sentence in sorted(rng.sample(pool, min(n_each, len(pool)))):
            qid = f"pydoc-q{len(queries):04d}"
            queries.append(EvalQuery(qid, sentence, bucket))
            qrels[qid] = {name}
            texts[name] = remove_sentence(texts[name], sentence)
    docs = [EvalDoc(p.name, texts[p.name], None) for p in pages]
    info = {"pages": len(pages)} | {f"{b}_candidates": len(c) for b, c in candidates.items()}
    return [Dataset("pydoc", docs, queries, qrels)], info
