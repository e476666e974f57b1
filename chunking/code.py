"""AST-based code chunking (cAST-style) with tree-sitter, counted in the embedder's own tokenizer.

Siblings of the syntax tree are packed greedily into windows of at most ``max_tokens`` tokens (counted on
the joined text); a sibling too large on its own is recursed into, and an oversize leaf (a long comment,
string or minified token run) is hard-split into token windows. Each child owns the text between its
previous sibling and itself, and the last child owns the tail, so nothing but whitespace is ever dropped.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate
from typing import TYPE_CHECKING

from chunking.budget import TokenCounter
from chunking.languages import CODE_LANGUAGES, LanguageSpec, definition_name, parser_for, wrapped_chain
from chunking.text import TextChunker, token_windows
from chunking.types import Chunk, Span, spans_to_chunks

if TYPE_CHECKING:
    from tree_sitter import Node

# A node whose estimated count exceeds the budget by more than this is treated as oversize without an
# exact count (estimates come from one tokenisation of the whole file and differ only at the cut points).
_ESTIMATE_SLACK = 16
_WORD = re.compile(r"\w")
# Named nodes that do not stop a window from being "exactly one definition" (besides comments).
_ANNOTATIONS = frozenset({"access_specifier", "attribute_item", "inner_attribute_item", "empty_statement"})


def _trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def _byte_to_char(text: str, data: bytes) -> Callable[[int], int]:
    """Map utf-8 byte offsets (tree-sitter's) to character offsets into ``text``."""
    if len(data) == len(text):
        return _identity  # ASCII: bytes are characters
    # Character index of byte offset b == number of utf-8 lead (non-continuation) bytes before b.
    table = list(accumulate(((x & 0xC0) != 0x80 for x in data), initial=0))
    return table.__getitem__


def _identity(offset: int) -> int:
    return offset


@dataclass
class _Frame:
    """Children of one node being packed: segment ``k`` is ``text[bounds[k]:bounds[k + 1]]``."""

    nodes: list[Node]
    bounds: list[int]
    path: tuple[str, ...]
    inner: frozenset[int] = frozenset()  # ids of nodes a wrapper wraps: their name is already in path
    i: int = 0


@dataclass
class _Doc:
    """One file being chunked: its text, byte->char map and the token starts of the whole file."""

    text: str
    to_char: Callable[[int], int]
    starts: list[int]
    spec: LanguageSpec
    out: list[Span] = field(default_factory=list)

    def estimate(self, start: int, end: int) -> int:
        """Content tokens of ``text[start:end]`` estimated from the whole-file tokenisation."""
        return bisect_left(self.starts, end) - bisect_left(self.starts, start)

    def frame(
        self, nodes: list[Node], lo: int, hi: int, path: tuple[str, ...], inner: frozenset[int]
    ) -> _Frame:
        bounds = [lo]
        for node in nodes[:-1]:
            bounds.append(min(hi, max(bounds[-1], self.to_char(node.end_byte))))
        bounds.append(hi)
        return _Frame(nodes, bounds, path, inner)

    def name(self, node: Node, f: _Frame) -> str | None:
        """The name ``node`` adds to ``f.path`` (``None`` if a wrapper frame already added it)."""
        return None if node.id in f.inner else definition_name(node, self.spec)


def _symbol(path: tuple[str, ...]) -> str | None:
    return ".".join(path) if path else None


@dataclass(frozen=True)
class CodeChunker:
    """Chunks source code along its syntax tree; falls back to text chunking when it cannot parse.

    Every chunk holds at most ``max_tokens`` tokens (special tokens included) counted on the joined chunk
    text. ``symbol`` is the dotted path of enclosing definitions: ``Outer.method`` for a chunk that is one
    definition, the enclosing definition's path for a piece of a split definition, ``None`` at top level.
    """

    counter: TokenCounter
    max_tokens: int

    def __post_init__(self) -> None:
        if self.max_tokens <= self.counter.n_special:
            raise ValueError(f"max_tokens must exceed {self.counter.n_special}, got {self.max_tokens}")

    def chunk(self, doc_id: str, text: str, language: str | None) -> list[Chunk]:
        """Chunks of ``text`` (kind ``"code"``); unknown languages and syntax errors use the text chunker."""
        if not text.strip():
            return []
        spans = self.spans(text, language)
        if spans is None:
            fallback = TextChunker(self.counter, self.max_tokens)
            return fallback.chunk(doc_id, text, kind="code", language=language)
        counts = self.counter.count_many([text[s.start : s.end] for s in spans])
        return spans_to_chunks(doc_id, text, spans, counts, "code", language)

    def spans(self, text: str, language: str | None) -> list[Span] | None:
        """AST-aligned spans of ``text``, or ``None`` if ``language`` has no grammar or the parse failed."""
        spec = CODE_LANGUAGES.get(language or "")
        if spec is None:
            return None
        try:
            data = text.encode("utf-8")
            tree = parser_for(spec.name).parse(data)
        except (ImportError, UnicodeError, ValueError, RuntimeError):
            return None
        root = tree.root_node
        if root.has_error:
            return None
        starts = [a for a, _ in self.counter.token_offsets(text)]
        doc = _Doc(text, _byte_to_char(text, data), starts, spec)
        self._walk(doc, root)
        return self._merge(doc, doc.out)

    def _walk(self, doc: _Doc, root: Node) -> None:
        """Pack siblings greedily, depth first, with an explicit stack (minified code nests very deep)."""
        stack = [doc.frame(root.children or [root], 0, len(doc.text), (), frozenset())]
        while stack:
            f = stack[-1]
            if f.i >= len(f.nodes):
                stack.pop()
                continue
            i = f.i
            start, end = f.bounds[i], f.bounds[i + 1]
            if self._fits(doc, start, end):
                f.i = self._window_end(doc, f, i)
                if (span := _trimmed(doc.text, start, f.bounds[f.i])) is not None:
                    doc.out.append(Span(*span, self._window_symbol(doc, f, i, f.i)))
                continue
            f.i = i + 1
            node = f.nodes[i]
            # A definition opens a scope; so does a wrapper (decorator, export, template), for its inner
            # definition, so that its own pieces (`@decorator`, `export`) carry the inner name too.
            path, inner = f.path, frozenset[int]()
            if node.id in f.inner:
                inner = f.inner
            elif (name := definition_name(node, doc.spec)) is not None:
                path, inner = (*path, name), wrapped_chain(node, doc.spec)
            if node.child_count:
                stack.append(doc.frame(node.children, start, end, path, inner))
            else:
                windows = token_windows(self.counter, doc.text, start, end, self.max_tokens)
                doc.out.extend(Span(w.start, w.end, _symbol(path)) for w in windows)

    def _fits(self, doc: _Doc, start: int, end: int) -> bool:
        """Whether ``text[start:end]``, trimmed, fits the budget on its own."""
        span = _trimmed(doc.text, start, end)
        if span is None:
            return True
        if doc.estimate(*span) + self.counter.n_special > self.max_tokens + _ESTIMATE_SLACK:
            return False
        return self.counter.count(doc.text[span[0] : span[1]]) <= self.max_tokens

    def _window_end(self, doc: _Doc, f: _Frame, i: int) -> int:
        """End (exclusive) of the greedy window of segments starting at ``i`` (segment ``i`` fits alone)."""
        budget = self.max_tokens - self.counter.n_special
        first = bisect_left(doc.starts, f.bounds[i])
        limit = doc.starts[first + budget] if first + budget < len(doc.starts) else len(doc.text)
        j = max(i + 1, bisect_right(f.bounds, limit, lo=i + 1) - 1)
        # Token counts are not exactly additive across joins: verify on the joined text, shrink if over.
        while j - i > 1:
            span = _trimmed(doc.text, f.bounds[i], f.bounds[j])
            if span is None or self.counter.count(doc.text[span[0] : span[1]]) <= self.max_tokens:
                break
            j -= 1
        return j

    def _window_symbol(self, doc: _Doc, f: _Frame, i: int, j: int) -> str | None:
        """Full path if the window holds exactly one definition (comments aside), else the enclosing path."""
        named = [
            n
            for n in f.nodes[i:j]
            if n.is_named and not n.is_extra and "comment" not in n.type and n.type not in _ANNOTATIONS
        ]
        if len(named) == 1 and (name := doc.name(named[0], f)):
            return _symbol((*f.path, name))
        return _symbol(f.path)

    def _merge(self, doc: _Doc, spans: list[Span]) -> list[Span]:
        """Join adjacent spans left apart by recursion boundaries when they fit together.

        Spans of the same symbol merge; so does a punctuation-only span (a lone ``}`` or ``;``), which takes
        its neighbour's symbol.
        """
        out: list[Span] = []
        for s in spans:
            if out:
                prev = out[-1]
                lone_prev = _is_punctuation(doc.text, prev)
                if (
                    (prev.symbol == s.symbol or lone_prev or _is_punctuation(doc.text, s))
                    and doc.estimate(prev.start, s.end) + self.counter.n_special <= self.max_tokens
                    and self.counter.count(doc.text[prev.start : s.end]) <= self.max_tokens
                ):
                    out[-1] = Span(prev.start, s.end, s.symbol if lone_prev else prev.symbol)
                    continue
            out.append(s)
        return out


def _is_punctuation(text: str, span: Span) -> bool:
    return _WORD.search(text, span.start, span.end) is None
