"""Training pairs mined from a corpus itself (self-supervised, no labels, no download) for ``longvec train``.

Each pair is a short *anchor* that reads like a search query and the *positive* passage it describes:

- code (a tree-sitter grammar): a definition's doc comment -> the definition without it. Python docstrings
  (the first statement of a function or class body), and the comment block that ends on the line right above
  a definition in the other languages (``//``, ``///``, ``/** */``, ``#``). The anchor is the comment's first
  sentence, as a user would type a query;
- text: a Markdown heading (``#`` to ``######``) -> its section's body; elsewhere a paragraph's first sentence
  -> the rest of that paragraph (fenced code blocks left out of both). Code in a language without a grammar
  gives none.

Anchors shorter than ``min_words`` words and positives shorter than ``MIN_POSITIVE_WORDS`` are skipped, as are
license headers. Pairs are deterministic: the same text always gives the same pairs, in text order.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

from longvec.chunking.languages import CODE_LANGUAGES, KNOWN_CODE_LANGUAGES, normalize_language, parser_for

PairKind = Literal["doc-comment", "heading", "first-sentence"]

MIN_ANCHOR_WORDS = 4
MIN_POSITIVE_WORDS = 12
MAX_ANCHOR_WORDS = 64

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`'\"(\[])")
_HEADING = re.compile(r"^(#{1,6})[ \t]+(.+?)[ \t#]*$", re.MULTILINE)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_COMMENT_MARKS = re.compile(r"^\s*(?:/\*\*?|\*/|\*(?!\*)|//!|///?|#+|--)?", re.MULTILINE)
_FENCE = re.compile(r"^[ \t]*(```|~~~).*?^[ \t]*\1[ \t]*$", re.MULTILINE | re.DOTALL)
_FIELD_LINE = re.compile(r"^\s*[@:](?:param|return|returns|raises|throws|type|rtype|see)\b.*$", re.MULTILINE)
_LICENSE = re.compile(r"\b(?:copyright|licen[cs]e[ds]?|spdx)\b", re.IGNORECASE)
_STRING_QUOTES = re.compile(r'^[rRbBuUfF]*("""|\'\'\'|"|\')|("""|\'\'\'|"|\')$')


@dataclass(frozen=True)
class Pair:
    anchor: str
    positive: str
    kind: PairKind
    doc_id: str


def words(text: str) -> int:
    return len(text.split())


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (its first paragraph if no sentence end is found), whitespace-collapsed."""
    paragraph = _PARAGRAPH_BREAK.split(text.strip(), maxsplit=1)[0]
    return " ".join(_SENTENCE_END.split(" ".join(paragraph.split()), maxsplit=1)[0].split())


def mine_pairs(doc_id: str, text: str, language: str | None = None, *, min_words: int = MIN_ANCHOR_WORDS) -> list[Pair]:
    """Pairs from one document: doc comments for a language with a grammar, headings and paragraphs for text;
    none for code in a language without a grammar (its ``#`` comments are not headings)."""
    language = normalize_language(language) if language else None
    if language in CODE_LANGUAGES:
        found = _code_pairs(doc_id, text, language)
    elif language in KNOWN_CODE_LANGUAGES:
        return []
    else:
        found = _text_pairs(doc_id, text)
    return [p for p in found if _usable(p, min_words)]


def _usable(pair: Pair, min_words: int) -> bool:
    return (
        min_words <= words(pair.anchor) <= MAX_ANCHOR_WORDS
        and words(pair.positive) >= MIN_POSITIVE_WORDS
        and not _LICENSE.search(pair.anchor)
        and pair.anchor not in pair.positive
    )


# -- code -------------------------------------------------------------------------------------------------------


def _code_pairs(doc_id: str, text: str, language: str) -> Iterator[Pair]:
    data = text.encode("utf-8")
    tree = parser_for(language).parse(data)
    spec = CODE_LANGUAGES[language]
    kinds = spec.definitions | spec.wrappers
    stack = [tree.root_node]
    while stack:
        node = stack.pop()
        stack.extend(reversed(node.named_children))
        if node.type not in kinds or (node.parent is not None and node.parent.type in spec.wrappers):
            continue
        found = _docstring(node) if language == "python" else _leading_comment(node, data)
        if found is None:
            continue
        comment, cut = found
        cut_start, cut_end = _whole_lines(data, *cut)
        anchor = first_sentence(_clean_comment(comment))
        lo, hi = min(node.start_byte, cut_start), max(node.end_byte, cut_end)
        positive = (data[lo:cut_start] + data[cut_end:hi]).decode("utf-8", "replace").strip()
        yield Pair(anchor, positive, "doc-comment", doc_id)


def _docstring(node: object) -> tuple[str, tuple[int, int]] | None:
    """A Python definition's docstring and the byte range to cut (whole lines)."""
    inner = node
    while inner.type == "decorated_definition":  # type: ignore[attr-defined]
        inner = inner.child_by_field_name("definition")  # type: ignore[attr-defined]
        if inner is None:
            return None
    body = inner.child_by_field_name("body")  # type: ignore[attr-defined]
    first = body.named_children[0] if body is not None and body.named_children else None
    if first is None or first.type != "expression_statement" or not first.named_children:
        return None
    string = first.named_children[0]
    if string.type not in ("string", "concatenated_string"):
        return None
    literal = string.text.decode("utf-8", "replace")
    return _STRING_QUOTES.sub("", literal.strip()), (first.start_byte, first.end_byte)


def _leading_comment(node: object, data: bytes) -> tuple[str, tuple[int, int]] | None:
    """The run of comments ending on the line above ``node`` (nothing but whitespace between them)."""
    comments = []
    below = node
    sibling = node.prev_sibling  # type: ignore[attr-defined]
    while sibling is not None and "comment" in sibling.type:
        text = sibling.text
        if text.startswith((b"//!", b"/*!")):
            break  # an inner doc comment documents what encloses it (Rust), not what follows
        end = sibling.end_byte - (len(text) - len(text.rstrip(b"\r\n")))  # some grammars end line comments after \n
        gap = data[end : below.start_byte]  # type: ignore[attr-defined]
        if gap.strip() or gap.count(b"\n") > 1:
            break
        if comments and (sibling.text.startswith(b"/*") or comments[-1].text.startswith(b"/*")):
            break  # a block comment stands alone: line comments join into a run
        comments.append(sibling)
        below, sibling = sibling, sibling.prev_sibling
    if not comments:
        return None
    comments.reverse()
    text = "\n".join(c.text.decode("utf-8", "replace") for c in comments)
    return text, (comments[0].start_byte, comments[-1].end_byte)


def _whole_lines(data: bytes, start: int, end: int) -> tuple[int, int]:
    """``start:end`` widened to whole lines where nothing but blanks shares them (no empty line left behind)."""
    line_start = data.rfind(b"\n", 0, start) + 1
    if not data[line_start:start].strip():
        start = line_start
    line_end = data.find(b"\n", end)
    line_end = len(data) if line_end < 0 else line_end + 1
    if not data[end:line_end].strip():
        end = line_end
    return start, end


def _clean_comment(comment: str) -> str:
    """Comment text without its markers and without ``@param``-style field lines."""
    body = _COMMENT_MARKS.sub("", comment.replace("*/", ""))
    return _FIELD_LINE.sub("", body).strip()


# -- text -------------------------------------------------------------------------------------------------------


def _text_pairs(doc_id: str, text: str) -> Iterator[Pair]:
    text = _FENCE.sub("", text)  # code blocks: their `#` lines are not headings, their lines not prose
    headings = list(_HEADING.finditer(text))
    for i, m in enumerate(headings):
        end = headings[i + 1].start() if i + 1 < len(headings) else len(text)
        yield Pair(" ".join(m.group(2).split()), text[m.end() : end].strip(), "heading", doc_id)
    for paragraph in _PARAGRAPH_BREAK.split(_HEADING.sub("", text)):
        flat = " ".join(paragraph.split())
        anchor = first_sentence(flat)
        rest = flat[len(anchor) :].strip()
        if anchor and rest:
            yield Pair(anchor, rest, "first-sentence", doc_id)
