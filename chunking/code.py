"""AST-based code chunking (cAST-style) with tree-sitter, counted in the embedder's own tokenizer.

Siblings of the syntax tree are packed greedily into windows of at most ``max_tokens`` tokens (counted on
the joined text). A node too large on its own is recursed into in place: its children are spliced into
the sibling sequence and the open window carries on into them. So a node's header -- its children before
its body: ``def f(x):``, ``class Foo(Base):`` with its decorators, ``func (s *Stack) Push(v int) {`` --
opens the chunk of the first part of its body instead of becoming a chunk of its own; a header left at the
end of a full window moves on into the next one. An oversize definition starts a fresh window (taking
its leading comments along) and its last window takes nothing after it but closing tokens (``}``, ``;``)
and a same-line comment, so no chunk mixes a split definition with its neighbours; a tiny last window
(``return x``) takes over the last statements of the one before. An oversize leaf (a long comment, string
or minified token run) is hard-split into token windows, the first of which continues the open window
and the last of which stays open. Each child owns the text between its previous sibling and itself, and
the last child owns the tail, so nothing but whitespace is ever dropped.

A file longer than ``SECTION_CHARS`` characters is cut into sections at top-level boundaries (a blank line
followed by code at column 0), each parsed, tokenised and packed on its own, so memory follows the section,
not the file: a section whose cut falls inside a construct is cut again before it, and one that still does
not parse is text-chunked.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from longvec.chunking.budget import TokenCounter
from longvec.chunking.languages import CODE_LANGUAGES, LanguageSpec, definition_name, parser_for, wrapped_chain
from longvec.chunking.text import PIECE_CHARS, TextChunker, count_spans, token_starts, token_windows, trimmed
from longvec.chunking.types import Chunk, Span, spans_to_chunks

if TYPE_CHECKING:
    from tree_sitter import Node

# A node whose estimated count exceeds the budget by more than this is treated as oversize without an
# exact count (estimates come from one tokenisation of the whole section and differ only at the cut points).
_ESTIMATE_SLACK = 16
# Files longer than this are chunked in sections of at least this many characters (the last one excepted).
SECTION_CHARS = 1 << 20
_TOP_LEVEL = re.compile(r"\n[ \t\r\f\v]*\n(?=[^\s)\]}])")  # a blank line, then code at column 0
_COLUMN_0 = re.compile(r"\n(?=[^\s)\]}])")
_CLOSERS = re.compile(rb"[\s)\]};,]*")
_WORD = re.compile(r"\w")
_LONG_RUN = re.compile(f"[^ \\n]{{{PIECE_CHARS // 2}}}")  # see _Doc.exact_starts
# Named nodes that do not stop a window from being "exactly one definition" (besides comments).
_ANNOTATIONS = frozenset({"access_specifier", "attribute_item", "inner_attribute_item", "empty_statement"})
# Nodes that, like comments on their own line, lead into what follows them (`public:`, `#[derive(..)]`).
_LEADING = frozenset({"access_specifier", "attribute_item", "inner_attribute_item"})
# A node's header is its children before its first body child, the first child that is neither unnamed
# (keywords, `{`), nor in a signature field (name, parameters, condition, ...), nor a modifier-like part of
# a signature (`@decorator`, `public static`, `where T: X`), nor a bare punctuation leaf (`"""`).
_HEADER_FIELDS = frozenset(
    {
        "name", "parameters", "parameter", "type_parameters", "template_parameters", "return_type", "result",
        "receiver", "superclass", "superclasses", "interfaces", "permits", "type", "declarator", "trait",
        "decorator", "modifiers", "bounds", "type_arguments", "constraint", "dimensions", "condition",
        "subject", "initializer", "init", "update", "left", "right", "operator", "key", "value", "property",
        "pattern", "function", "object", "index", "kind", "label", "scope", "path", "alias", "attribute",
    }
)  # fmt: skip
_HEADER_TYPES = re.compile(
    r"modifier|qualifier|storage_class|virtual|explicit|decorator|annotation|attribute|heritage|clause"
    r"|throws|parameters|field_initializer_list"
)


def _byte_to_char(data: bytes, base: int, n_chars: int) -> Callable[[int], int]:
    """Map utf-8 byte offsets into ``data`` (tree-sitter's) to character offsets into the text it was cut from.

    ``data`` encodes the ``n_chars`` characters from character ``base`` on.
    """
    if len(data) == n_chars:
        return base.__add__  # ASCII: bytes are characters
    # Character index of byte offset b == number of utf-8 lead (non-continuation) bytes before b.
    table = np.zeros(len(data) + 1, dtype=np.int32 if base + n_chars < 2**31 else np.int64)
    np.cumsum((np.frombuffer(data, dtype=np.uint8) & 0xC0) != 0x80, out=table[1:])
    table += base
    return lambda offset: int(table[offset])


def _section_end(text: str, lo: int) -> int:
    """End of the section from ``lo``: the text's end if near, else the first top-level boundary after
    ``SECTION_CHARS`` characters (or a line start, or any cut, within twice that)."""
    if len(text) - lo <= SECTION_CHARS:
        return len(text)
    start, stop = lo + SECTION_CHARS, min(len(text), lo + 2 * SECTION_CHARS)
    for boundary in (_TOP_LEVEL, _COLUMN_0):
        if (m := boundary.search(text, start, stop)) is not None:
            return m.end()
    return text.rfind("\n", start, stop) + 1 or stop


def _parse(spec: LanguageSpec, text: str, lo: int, hi: int) -> tuple[Node, Callable[[int], int]] | None:
    """The syntax tree of ``text[lo:hi]`` (its root) and its byte-to-character map; ``None`` if parsing raised."""
    try:
        data = text[lo:hi].encode("utf-8")
        root = parser_for(spec.name).parse(data).root_node
    except (ImportError, UnicodeError, ValueError, RuntimeError):
        return None
    return root, _byte_to_char(data, lo, hi - lo)


def _parse_section(spec: LanguageSpec, text: str, lo: int, hi: int) -> tuple[Node | None, Callable[[int], int], int]:
    """Parse the section ``text[lo:hi]``: its root (``None`` on a syntax error), byte map and end.

    A whole file must parse cleanly. A section may have the errors a cut makes around a construct that
    encloses it (a namespace): closers missing at its end, stray closers. One with other errors that does
    not end the file may have been cut inside a construct (a string): it is cut again before its first
    erroneous top-level node, if that leaves at least half a section.
    """
    seams = not (lo == 0 and hi == len(text))
    parsed = _parse(spec, text, lo, hi)
    if parsed is not None and hi < len(text) and not _parsed_cleanly(parsed[0], seams):
        root, to_char = parsed
        bad = next((child for child in root.children if child.has_error), None)
        cut = to_char(bad.start_byte) if bad is not None else lo
        del root, bad, parsed  # free this tree before parsing again
        parsed = _parse(spec, text, lo, cut) if cut - lo >= SECTION_CHARS // 2 else None
        hi = cut if parsed is not None else hi
    if parsed is None or not _parsed_cleanly(parsed[0], seams):
        return None, lo.__add__, hi
    return parsed[0], parsed[1], hi


def _parsed_cleanly(root: Node, seams: bool) -> bool:
    """No syntax error in the tree; or, for a section (``seams``), only those a cut makes around a construct
    that encloses the section: closers missing at its end, and stray closers (``}``, ``)``, ...)."""
    if not root.has_error:
        return True
    if not seams:
        return False
    content = [child for child in root.children if not child.is_extra]
    end = content[-1].end_byte if content else 0
    stack = [root]
    while stack:
        node = stack.pop()
        if node.is_missing:
            if node.end_byte < end:
                return False
        elif node.is_error:
            if node.end_byte - node.start_byte > 64 or _CLOSERS.fullmatch(node.text or b"") is None:
                return False
        else:
            stack.extend(child for child in node.children if child.has_error or child.is_missing)
    return True


def _body_index(parent: Node | None, nodes: list[Node]) -> int:
    """Index of the first body child of ``parent`` (``len(nodes)`` if all of it is header)."""
    if parent is None:
        return 0
    for k, child in enumerate(nodes):
        if not child.is_named or child.is_extra:
            continue
        field_name = parent.field_name_for_child(k)
        if field_name is not None:
            if field_name not in _HEADER_FIELDS:
                return k
        elif not _HEADER_TYPES.search(child.type) and (
            child.child_count or _WORD.search((child.text or b"").decode("utf-8", "replace"))
        ):
            return k
    return len(nodes)


@dataclass
class _Frame:
    """Children of one node being packed: segment ``k`` is ``text[bounds[k]:bounds[k + 1]]``.

    Segments before ``body`` are the node's header. ``scope`` marks a split definition: its end closes
    the open window.
    """

    nodes: list[Node]
    bounds: list[int]
    path: tuple[str, ...]
    inner: frozenset[int] = frozenset()  # ids of nodes a wrapper wraps: their name is already in path
    body: int = 0
    scope: bool = False
    i: int = 0


@dataclass
class _Window:
    """The chunk being packed: ``text[start:end]`` (``start`` is ``None`` while it is empty).

    ``run`` starts its trailing run of header segments and leading comments (``None`` if it ends with body
    code), ``head`` the first header segment (not a comment) in that run: a cut there moves the run into
    the next chunk, which it opens. ``path`` is the scope the chunk belongs to, ``owned`` whether a split
    definition's header (or leading comments) opened it and gave it that path; ``headed`` tells whether it
    holds header segments; ``named`` counts the complete named nodes of body code in it, ``last`` is
    the latest with its frame (for its name). ``cuts`` are where its body statements start (with their
    leading comments or header): the places it can be re-split at. A ``closed`` window ends a split
    definition: only closing tokens (`}`, `;`) and a comment on the same line may still join it.
    """

    start: int | None = None
    end: int = 0
    run: int | None = None
    head: int | None = None
    path: tuple[str, ...] | None = None
    owned: bool = False
    headed: bool = False
    named: int = 0
    last: tuple[Node, _Frame] | None = None
    cuts: list[int] = field(default_factory=list)
    closed: bool = False


@dataclass
class _Doc:
    """One section ``text[lo:hi]`` of a file being chunked: byte->char map, the section's token starts and
    the exact counts made so far (most chunks were counted while packing: their counts are not redone)."""

    text: str
    to_char: Callable[[int], int]
    starts: np.ndarray
    spec: LanguageSpec
    lo: int
    hi: int
    counter: TokenCounter
    counts: dict[tuple[int, int], int] = field(default_factory=dict)
    out: list[Span] = field(default_factory=list)
    # Whether ``starts`` is exactly one tokenisation of the section (see ``count``).
    exact_starts: bool = True
    w: _Window = field(default_factory=_Window)
    # The cuts of the last span of ``out`` while it is a full window of the scope still being packed.
    prev: list[int] | None = None

    def estimate(self, start: int, end: int) -> int:
        """Content tokens of ``text[start:end]`` estimated from the whole-section tokenisation."""
        first, last = np.searchsorted(self.starts, (start, end))
        return int(last - first)

    def count(self, start: int, end: int) -> int:
        """Exact token count of ``text[start:end]``, special tokens included (remembered); read off the section's
        tokenisation where the tokenizer is additive and both ends are splits (see ``TokenCounter.additive``)."""
        if (n := self.counts.get((start, end))) is None:
            c = self.counter
            if self.exact_starts and c.additive and c.splits_at(self.text, start) and c.splits_at(self.text, end):
                n = self.estimate(start, end) + c.n_special
            else:
                n = c.count(self.text[start:end])
            self.counts[start, end] = n
        return n

    def frame(
        self,
        parent: Node | None,
        nodes: list[Node],
        lo: int,
        hi: int,
        path: tuple[str, ...],
        inner: frozenset[int],
        scope: bool = False,
    ) -> _Frame:
        bounds = [lo]
        for node in nodes[:-1]:
            bounds.append(min(hi, max(bounds[-1], self.to_char(node.end_byte))))
        bounds.append(hi)
        return _Frame(nodes, bounds, path, inner, _body_index(parent, nodes), scope)

    def name(self, node: Node, f: _Frame) -> str | None:
        """The name ``node`` adds to ``f.path`` (``None`` if a wrapper frame already added it)."""
        return None if node.id in f.inner else definition_name(node, self.spec)

    def add(self, f: _Frame, i: int, j: int) -> None:
        """Append segments ``i..j-1`` of ``f`` to the window, tracking its trailing header run."""
        w = self.w
        if w.start is None:
            w.start = f.bounds[i]
        if w.path is None:
            w.path = f.path
        w.end = f.bounds[j]
        for k in range(i, j):
            node, at = f.nodes[k], f.bounds[k]
            if _is_comment(node):
                # A comment on its own line leads into what follows; a trailing one stays where it is.
                if w.run is None and self.own_line(node):
                    w.run = at
            elif k < f.body:
                w.headed = True
                if w.run is None:
                    w.run = at
                if w.head is None:
                    w.head = at
            elif node.is_named:
                w.cuts.append(at if w.run is None else w.run)
                w.run = w.head = None  # body code (an unnamed token after it, `}` or `,`, changes nothing)
                if node.type not in _ANNOTATIONS:
                    w.named += 1
                    w.last = (node, f)

    def own_line(self, node: Node) -> bool:
        """Whether only whitespace precedes ``node`` on its line."""
        start = self.to_char(node.start_byte)
        return not self.text[max(self.lo, self.text.rfind("\n", self.lo, start) + 1) : start].strip()

    def symbol(self) -> str | None:
        """Full path if the window is exactly one definition (comments aside), else its scope's path."""
        w = self.w
        path = w.path or ()
        if w.named == 1 and not w.headed and w.last is not None and (name := self.name(*w.last)):
            return _symbol((*path, name))
        return _symbol(path)

    def emit(self, start: int, end: int, symbol: str | None) -> None:
        if (span := trimmed(self.text, start, end)) is not None:
            self.out.append(Span(*span, symbol))

    def cut(self, at: int) -> None:
        """Emit the window up to ``at``; the rest (a header run, no named body code) stays open."""
        w = self.w
        assert w.start is not None
        n = len(self.out)
        self.emit(w.start, at, self.symbol())
        self.prev = w.cuts if len(self.out) > n else None
        w.start, w.owned, w.headed, w.named, w.last, w.cuts = at, False, w.head is not None, 0, None, []
        if w.run is not None:
            w.run = max(w.run, at)

    def flush(self) -> None:
        """Emit the window and start an empty one."""
        w, n = self.w, len(self.out)
        if w.start is not None:
            self.emit(w.start, w.end, self.symbol())
        self.prev = w.cuts if len(self.out) > n and not w.closed else None
        self.w = _Window()


def _is_comment(node: Node) -> bool:
    """Comments, and the labels and attributes that like them lead into what follows."""
    return node.is_extra or "comment" in node.type or node.type in _LEADING


def _symbol(path: tuple[str, ...]) -> str | None:
    return ".".join(path) if path else None


@dataclass(frozen=True)
class CodeChunker:
    """Chunks source code along its syntax tree; falls back to text chunking when it cannot parse.

    Every chunk holds at most ``max_tokens`` tokens (special tokens included) counted on the joined chunk
    text. ``symbol`` is the dotted path of enclosing definitions: ``Outer.method`` for a chunk that is one
    definition, the enclosing definition's path for a piece of a split definition (the first piece starts
    with the definition's header), ``None`` at top level.
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
        counted = self._counted_spans(text, language)
        if counted is None:
            fallback = TextChunker(self.counter, self.max_tokens)
            return fallback.chunk(doc_id, text, kind="code", language=language)
        return spans_to_chunks(doc_id, text, *counted, "code", language)

    def spans(self, text: str, language: str | None) -> list[Span] | None:
        """AST-aligned spans of ``text``, or ``None`` if ``language`` has no grammar or the parse failed.

        A file of several sections fails only section by section: a section that does not parse is
        text-chunked. Spans on either side of a section cut merge like those of one tree (see ``_merge``).
        """
        counted = self._counted_spans(text, language)
        return None if counted is None else counted[0]

    def _counted_spans(self, text: str, language: str | None) -> tuple[list[Span], list[int]] | None:
        """``spans`` and their token counts."""
        spec = CODE_LANGUAGES.get(language or "")
        if spec is None:
            return None
        out: list[Span] = []
        counts: list[int] = []
        lo = 0
        while lo < len(text):
            root, to_char, hi = _parse_section(spec, text, lo, _section_end(text, lo))
            if root is not None:
                doc = _Doc(text, to_char, token_starts(self.counter, text, lo, hi), spec, lo, hi, self.counter)
                # A run without space or newline as long as half a piece may have been cut mid-word (see
                # text._token_pieces): counts are then tokenised, not read off the starts.
                doc.exact_starts = _LONG_RUN.search(text, lo, hi) is None
                self._walk(doc, root)
                spans = self._merge(doc, doc.out)
                known: list[int | None] = [doc.counts.get((s.start, s.end)) for s in spans]
                del doc, root  # free this section's tree before parsing the next
            elif lo == 0 and hi == len(text):
                return None
            else:
                packed = list(TextChunker(self.counter, self.max_tokens).packed(text, lo, hi))
                spans = [Span(a, b) for a, b, _ in packed]
                known = [n for _, _, n in packed]
            missing = count_spans(
                self.counter, text, ((s.start, s.end) for s, n in zip(spans, known, strict=True) if n is None)
            )
            section = [n if n is not None else next(missing) for n in known]
            if out and spans and (joined := self._joined(text, out[-1], spans[0])) is not None:
                out[-1], counts[-1] = joined
                spans, section = spans[1:], section[1:]
            out.extend(spans)
            counts.extend(section)
            lo = hi
        return out, counts

    def _walk(self, doc: _Doc, root: Node) -> None:
        """Pack segments greedily, depth first, with an explicit stack (minified code nests very deep)."""
        nodes = root.children or [root]
        stack = [doc.frame(root if root.children else None, nodes, doc.lo, doc.hi, (), frozenset())]
        while stack:
            f = stack[-1]
            if f.i >= len(f.nodes):
                stack.pop()
                if f.scope:  # the definition's last chunk takes no more code, only closing tokens
                    self._balance(doc)
                    doc.w.closed, doc.prev = True, None
                continue
            i = f.i
            if doc.w.closed and not self._closing(doc, f, i):
                doc.flush()
            if (j := self._window_end(doc, f, i)) > i:
                if doc.w.closed:
                    j = i + 1  # one closing token at a time
                doc.add(f, i, j)
                f.i = j
                continue
            # Segment i does not fit after the open window (nor alone, if the window is empty).
            w, node, start, end = doc.w, f.nodes[i], f.bounds[i], f.bounds[i + 1]
            if w.closed and len(w.cuts) > 1 and self._fits(doc, w.cuts[-1], end):
                doc.cut(w.cuts[-1])  # a closing token goes along with the last statement, not alone
                continue
            if w.start is not None and self._fits(doc, start, end):
                # Move the trailing header (with its leading comments if they fit too) along into the
                # segment's chunk. Comments that opened the window stay with its header unless they
                # are what leaves it no room.
                if w.run is not None and w.run > w.start and self._fits(doc, w.run, end):
                    doc.cut(w.run)
                    continue
                if (
                    w.head is not None
                    and w.head > w.start
                    and (
                        w.run != w.start
                        or self._fits(doc, w.head, end)
                        or 2 * doc.estimate(w.start, w.head) > self.max_tokens
                    )
                ):
                    doc.cut(w.head)
                    continue
                if w.run != w.start or w.head is None:
                    doc.flush()  # the segment opens the next window
                    continue
                if not node.child_count and 4 * doc.estimate(w.start, w.end) > 3 * self.max_tokens:
                    doc.flush()  # a long header and a short token: a hard split would cut into the header
                    continue
                # The window is only a header: split the segment so that the header opens its first part.
            elif w.start is not None and node.id not in f.inner and definition_name(node, doc.spec):
                # An oversize definition opens a fresh window, taking its leading comments along.
                if w.run is None:
                    doc.flush()
                elif w.run > w.start:
                    doc.cut(w.run)
            f.i = i + 1
            self._descend(doc, stack, f, node, start, end)
        doc.flush()

    def _descend(self, doc: _Doc, stack: list[_Frame], f: _Frame, node: Node, start: int, end: int) -> None:
        """Splice ``node``'s children in place of it, or hard-split it if it is a leaf."""
        # A definition opens a scope; so does a wrapper (decorator, export, template), for its inner
        # definition, so that its own pieces (`@decorator`, `export`) carry the inner name too.
        path, inner, scope = f.path, frozenset[int](), False
        if node.id in f.inner:
            inner = f.inner
        elif (name := definition_name(node, doc.spec)) is not None:
            path, inner, scope = (*path, name), wrapped_chain(node, doc.spec), True
            if not doc.w.owned:  # the window opens with this definition's header (or leading comments)
                doc.w.path, doc.w.owned = path, True
            doc.prev = None
        if node.child_count:
            stack.append(doc.frame(node, node.children, start, end, path, inner, scope))
            return
        w = doc.w
        if w.path is None:
            w.path = path
        lo = start if w.start is None else w.start
        windows = token_windows(self.counter, doc.text, lo, end, self.max_tokens)
        if not windows:
            return
        for s in windows[:-1]:
            doc.out.append(Span(s.start, s.end, doc.symbol()))
            w.headed, w.named, w.last, w.cuts = False, 0, None, []
            doc.prev = None
        # The last window stays open: the code after the leaf may still join it.
        w.start, w.end, w.run, w.head = windows[-1].start, end, None, None

    def _closing(self, doc: _Doc, f: _Frame, i: int) -> bool:
        """Whether segment ``i`` of ``f`` may join a closed window: `}`, `;` or a same-line comment."""
        node = f.nodes[i]
        if _is_comment(node):
            return not doc.own_line(node)
        return not node.is_named and i >= f.body

    def _balance(self, doc: _Doc) -> None:
        """Grow a tiny last chunk of a split definition (`return x`, `}`) with the end of the one before.

        The previous chunk is cut at the latest statement start that leaves the last chunk at least
        ``max_tokens // 8`` tokens (or as many as fit), keeping at least one statement of its own.
        """
        w, cuts = doc.w, doc.prev
        if w.start is None or not cuts or len(cuts) < 2 or not doc.out:
            return
        special, small = self.counter.n_special, self.max_tokens // 8
        if doc.estimate(w.start, w.end) + special >= small:
            return
        prev = doc.out[-1]
        best = None
        for c in reversed(cuts[1:]):
            if c <= prev.start or (n := doc.estimate(c, w.end) + special) > self.max_tokens:
                break
            if c < prev.end:
                best = c
                if n >= small:
                    break
        head = trimmed(doc.text, prev.start, best) if best is not None else None
        tail = trimmed(doc.text, best, w.end) if best is not None else None
        if head is None or tail is None:
            return
        if max(doc.count(*head), doc.count(*tail)) > self.max_tokens:
            return
        doc.out[-1] = Span(*head, prev.symbol)
        w.start, w.headed, w.named, w.last = best, False, 2, None  # several statements: the scope's path

    def _fits(self, doc: _Doc, start: int, end: int) -> bool:
        """Whether ``text[start:end]``, trimmed, fits the budget on its own."""
        span = trimmed(doc.text, start, end)
        if span is None:
            return True
        if doc.estimate(*span) + self.counter.n_special > self.max_tokens + _ESTIMATE_SLACK:
            return False
        return doc.count(*span) <= self.max_tokens

    def _window_end(self, doc: _Doc, f: _Frame, i: int) -> int:
        """End (exclusive) of the segments from ``i`` that fit into the open window (``i`` if none does)."""
        lo = f.bounds[i] if doc.w.start is None else doc.w.start
        budget = self.max_tokens - self.counter.n_special
        first = int(np.searchsorted(doc.starts, lo))
        limit = int(doc.starts[first + budget]) if first + budget < len(doc.starts) else doc.hi
        j = bisect_right(f.bounds, limit, lo=i + 1) - 1
        # Token counts are not exactly additive across joins: verify on the joined text, shrink if over.
        while j > i:
            span = trimmed(doc.text, lo, f.bounds[j])
            if span is None or doc.count(*span) <= self.max_tokens:
                return j
            j -= 1
        if doc.w.start is None and self._fits(doc, f.bounds[i], f.bounds[i + 1]):
            return i + 1  # the estimate was off: the segment does fit alone
        return i

    def _merge(self, doc: _Doc, spans: list[Span]) -> list[Span]:
        """Join adjacent spans left apart by recursion boundaries when they fit together.

        Spans of the same symbol merge; so does a punctuation-only span (a lone ``}`` or ``;``), which takes
        its neighbour's symbol.
        """
        out: list[Span] = []
        for s in spans:
            if out and (joined := self._joined(doc.text, out[-1], s, doc)) is not None:
                out[-1] = joined[0]
            else:
                out.append(s)
        return out

    def _joined(self, text: str, prev: Span, s: Span, doc: _Doc | None = None) -> tuple[Span, int] | None:
        """``prev`` and ``s`` as one span, with its count, if ``_merge`` joins them (``doc``: the section of
        both, whose estimates skip hopeless counts)."""
        lone_prev = _is_punctuation(text, prev)
        if not (prev.symbol == s.symbol or lone_prev or _is_punctuation(text, s)):
            return None
        if doc is None:
            n = self.counter.count(text[prev.start : s.end])
        elif doc.estimate(prev.start, s.end) + self.counter.n_special > self.max_tokens:
            return None
        else:
            n = doc.count(prev.start, s.end)
        return (Span(prev.start, s.end, s.symbol if lone_prev else prev.symbol), n) if n <= self.max_tokens else None


def _is_punctuation(text: str, span: Span) -> bool:
    return _WORD.search(text, span.start, span.end) is None
