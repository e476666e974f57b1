"""Context headers for code chunks: what a chunk is part of, embedded with it but never stored in its span.

A piece of a split function (its body past the signature) or a method chunk inside a long class reads, alone,
like anonymous code: the name and parameters that tie it to a query are in another chunk. Such a chunk gets a
``context``: the signature lines of its enclosing definitions that it does not contain itself, outermost first
(``class Reader(io.Base):`` / ``def read(self, size=-1):``). The embedder sees ``context + "\\n" + text``; the
chunk's ``start``/``end`` still point at the original span. The context counts in the token budget: code is
packed to ``max_tokens - context_reserve(max_tokens)`` tokens (an eighth of the budget, at most
``MAX_CONTEXT_TOKENS``), and the context is shortened (outer lines dropped first, then the line cut) to the
room the chunk leaves, and omitted when fewer than ``MIN_CONTEXT_TOKENS`` tokens fit.

Signature lines are found without a grammar, from the symbol paths the code chunker gives every chunk: the
first piece of a split definition starts with its header, so the definition of ``Outer.method`` is the first
line naming ``method`` as a whole word in the first chunk whose symbol lies inside ``Outer.method``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import replace

from longvec.chunking.budget import TokenCounter
from longvec.chunking.types import Chunk

# The most tokens of context a chunk carries, and the fewest worth adding.
MAX_CONTEXT_TOKENS = 48
MIN_CONTEXT_TOKENS = 4
_MAX_LINE_CHARS = 400
# Lines that start a comment (or a docstring) in the languages we parse.
_COMMENT_LINE = re.compile(r"(//|/\*|\*|#(?!\[)|--|;|\"\"\"|\'\'\'|<!--)")


def context_reserve(max_tokens: int) -> int:
    """Tokens of the budget kept free for context when code is packed."""
    return min(MAX_CONTEXT_TOKENS, max_tokens // 8)


def with_context(chunks: list[Chunk], counter: TokenCounter, max_tokens: int, path: str | None = None) -> list[Chunk]:
    """``chunks`` of one code document with ``context`` set where an enclosing definition's header is missing;
    with ``path``, every chunk's context starts with the document's path (the outermost line: dropped first)."""
    signatures = _signatures(chunks)
    cost = _Costs(counter)
    out = []
    for chunk in chunks:
        lines = [signatures[p] for p in _scopes(chunk.symbol) if p in signatures and not _contains(chunk, p)]
        if path:
            lines.insert(0, path[-_MAX_LINE_CHARS:])
        context = _fit(lines, counter, cost, max_tokens - chunk.n_tokens) if lines else ""
        if not context:
            out.append(chunk)
            continue
        # A newline splits every additive tokenizer's tokens; others may merge tokens across the join.
        if counter.additive:
            n = cost(context.split("\n")) + chunk.n_tokens
        else:
            n = counter.count(context + "\n" + chunk.text)
        if n <= max_tokens:
            chunk = replace(chunk, context=context, n_tokens=n)
        out.append(chunk)
    return out


def _scopes(symbol: str | None) -> list[str]:
    """``"A.b.c"`` -> ``["A", "A.b", "A.b.c"]``."""
    if not symbol:
        return []
    parts = symbol.split(".")
    return [".".join(parts[: k + 1]) for k in range(len(parts))]


def _name_pattern(scope: str) -> re.Pattern[str]:
    return re.compile(rf"(?<![\w$]){re.escape(scope.rsplit('.', 1)[-1])}(?![\w$])")


def _signatures(chunks: list[Chunk]) -> dict[str, str]:
    """The header line of every scope named in ``chunks``: the first code line naming it in the first chunk
    inside the scope, else the last such line of the chunk before (where an outer header opened the chunk,
    its inner one may be at the end of it). Comment lines are passed over: a doc comment often starts with
    the name it documents (Go's ``// Push adds ...``, Javadoc, Rust's ``///``)."""
    found: dict[str, str] = {}
    for i, chunk in enumerate(chunks):
        for scope in _scopes(chunk.symbol):
            if scope in found:
                continue
            pattern = _name_pattern(scope)
            line = next(_code_lines(chunk.text, pattern), None)
            if line is None and i > 0:
                line = next(reversed(list(_code_lines(chunks[i - 1].text, pattern))), None)
            found[scope] = (line or "")[:_MAX_LINE_CHARS]
    return {scope: line for scope, line in found.items() if line}


def _code_lines(text: str, pattern: re.Pattern[str]) -> Iterator[str]:
    """The lines of ``text`` where ``pattern`` matches, stripped, comment lines left out."""
    for match in pattern.finditer(text):
        end = text.find("\n", match.end())
        line = text[text.rfind("\n", 0, match.start()) + 1 : end if end >= 0 else len(text)].strip()
        if not _COMMENT_LINE.match(line):
            yield line


def _contains(chunk: Chunk, scope: str) -> bool:
    """Whether the chunk holds the definition's name itself (then it has its header, or needs none)."""
    return _name_pattern(scope).search(chunk.text) is not None


class _Costs:
    """Tokens a context of some lines adds in front of a chunk (``_cost`` of the lines joined by newlines). For an
    additive tokenizer that is the sum of each line's own count (a newline splits tokens), so each distinct line
    is tokenised once per document: a file's path and a class header recur in front of many chunks."""

    def __init__(self, counter: TokenCounter) -> None:
        self.counter, self.lines = counter, dict[str, int]()

    def __call__(self, lines: list[str]) -> int:
        if not self.counter.additive:
            return _cost(self.counter, "\n".join(lines))
        total = 0
        for line in lines:
            if (n := self.lines.get(line)) is None:
                n = self.lines[line] = _cost(self.counter, line)
            total += n
        return total


def _fit(lines: list[str], counter: TokenCounter, cost: _Costs, room: int) -> str:
    """The longest suffix of ``lines`` (innermost kept) that fits ``room`` tokens (a newline joins it to the
    chunk), the first kept line cut at a token boundary if needed; ``""`` if too little fits."""
    room = min(room, MAX_CONTEXT_TOKENS)
    if room < MIN_CONTEXT_TOKENS:
        return ""
    kept: list[str] = []
    for line in reversed(lines):
        if cost([line, *kept]) <= room:
            kept.insert(0, line)
            continue
        offsets = counter.token_offsets(line)
        budget = room - cost(kept) - 1
        if budget >= MIN_CONTEXT_TOKENS and offsets:
            cut = line[: offsets[min(budget, len(offsets)) - 1][1]].rstrip()
            if cut and cost([cut, *kept]) <= room:
                kept.insert(0, cut)
        break
    return "\n".join(kept)


def _cost(counter: TokenCounter, context: str) -> int:
    """Tokens ``context`` adds in front of a chunk (its own content tokens and the joining newline)."""
    return counter.count(context + "\n") - counter.n_special if context else 0
