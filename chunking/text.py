"""Segment-level text chunking: paragraphs, then sentences, then token windows, greedily packed."""

from __future__ import annotations

import re
from dataclasses import dataclass

from chunking.budget import TokenCounter
from chunking.types import Chunk, ChunkKind, Span, spans_to_chunks

_PARAGRAPH_BREAK = re.compile(r"\n[ \t\r\f\v]*\n\s*")
# Whitespace after a sentence end, which may be followed by up to two closing quotes or brackets. Only the
# whitespace is matched (lookbehinds), so the punctuation stays inside the sentence.
_END = "[.!?。！？]"
_CLOSE = "[\"')\\]]"
_SENTENCE_BREAK = re.compile(rf"(?:(?<={_END})|(?<={_END}{_CLOSE})|(?<={_END}{_CLOSE}{_CLOSE}))\s+|\n\s*")


def trimmed(text: str, start: int, end: int) -> tuple[int, int] | None:
    """Shrink ``[start, end)`` to exclude surrounding whitespace; ``None`` if nothing is left."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return (start, end) if start < end else None


def split_on(pattern: re.Pattern[str], text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Trimmed pieces of ``text[start:end]`` between matches of ``pattern`` (whitespace-only pieces dropped)."""
    pieces, cursor = [], start
    for m in pattern.finditer(text, start, end):
        if (piece := trimmed(text, cursor, m.start())) is not None:
            pieces.append(piece)
        cursor = m.end()
    if (piece := trimmed(text, cursor, end)) is not None:
        pieces.append(piece)
    return pieces


def token_windows(counter: TokenCounter, text: str, start: int, end: int, max_tokens: int) -> list[Span]:
    """Hard-split ``text[start:end]`` into contiguous spans of at most ``max_tokens`` tokens each.

    Breaks fall between tokens, preferring a token that starts after whitespace (so words are not cut)
    when one lies in the last quarter of the window. Each window's count is re-checked on the joined text
    and the window shrunk if re-tokenising the cut changed it. Characters the tokenizer drops (control
    characters) stay inside a window, so the windows cover every non-whitespace character.
    """
    budget = max_tokens - counter.n_special
    if budget < 1:
        raise ValueError(f"max_tokens {max_tokens} leaves no room beside {counter.n_special} special tokens")
    offsets = [(start + a, start + b) for a, b in counter.token_offsets(text[start:end])]
    if not offsets:
        whole = trimmed(text, start, end)
        return [Span(*whole)] if whole else []
    spans: list[Span] = []
    i = 0
    while i < len(offsets):
        j = min(i + budget, len(offsets))  # candidate: tokens [i, j)
        while True:
            if j < len(offsets):
                floor = max(i + 1, j - max(1, (j - i) // 4))
                for b in range(j, floor - 1, -1):
                    if b < len(offsets) and offsets[b][0] > offsets[b - 1][1]:
                        j = b
                        break
            w_start = offsets[i][0]
            w_end = offsets[j][0] if j < len(offsets) else end
            window = trimmed(text, w_start, w_end)
            assert window is not None
            if j - i == 1 or counter.count(text[window[0] : window[1]]) <= max_tokens:
                break
            j -= 1
        spans.append(Span(*window))
        i = j
    return spans


@dataclass(frozen=True)
class TextChunker:
    """Packs paragraphs, sentences and (for oversize sentences) token windows into chunks.

    Every chunk holds at most ``max_tokens`` tokens counted on the joined chunk text, special tokens
    included. ``overlap_tokens`` > 0 repeats trailing segments of a chunk at the start of the next one.
    """

    counter: TokenCounter
    max_tokens: int
    overlap_tokens: int = 0

    def __post_init__(self) -> None:
        if self.max_tokens <= self.counter.n_special:
            raise ValueError(f"max_tokens must exceed {self.counter.n_special}, got {self.max_tokens}")
        if not 0 <= self.overlap_tokens < self.max_tokens // 2:
            raise ValueError(f"overlap_tokens must be in [0, {self.max_tokens // 2}), got {self.overlap_tokens}")

    def chunk(self, doc_id: str, text: str, *, kind: ChunkKind = "text", language: str | None = None) -> list[Chunk]:
        spans = self.spans(text, 0, len(text))
        counts = self.counter.count_many([text[s.start : s.end] for s in spans])
        return spans_to_chunks(doc_id, text, spans, counts, kind, language)

    def segments(self, text: str, start: int, end: int) -> list[tuple[int, int]]:
        """Atomic pieces of ``text[start:end]``: paragraphs, else sentences, else token windows."""
        out: list[tuple[int, int]] = []
        paragraphs = split_on(_PARAGRAPH_BREAK, text, start, end)
        for (a, b), n in zip(paragraphs, self._counts(text, paragraphs), strict=True):
            if n <= self.max_tokens:
                out.append((a, b))
                continue
            sentences = split_on(_SENTENCE_BREAK, text, a, b)
            for (c, d), m in zip(sentences, self._counts(text, sentences), strict=True):
                if m <= self.max_tokens:
                    out.append((c, d))
                else:
                    out.extend((w.start, w.end) for w in token_windows(self.counter, text, c, d, self.max_tokens))
        return out

    def _counts(self, text: str, pieces: list[tuple[int, int]]) -> list[int]:
        return self.counter.count_many([text[a:b] for a, b in pieces])

    def spans(self, text: str, start: int, end: int, symbol: str | None = None) -> list[Span]:
        """Greedily pack the segments of ``text[start:end]`` into spans within the budget."""
        segs = self.segments(text, start, end)
        if not segs:
            return []
        sizes = [n - self.counter.n_special for n in self._counts(text, segs)]
        spans: list[Span] = []
        i = 0
        while i < len(segs):
            j, total = i + 1, sizes[i]
            while j < len(segs) and total + sizes[j] + self.counter.n_special <= self.max_tokens:
                total += sizes[j]
                j += 1
            # Token counts are not exactly additive across joins: verify on the joined text.
            while j - i > 1 and self.counter.count(text[segs[i][0] : segs[j - 1][1]]) > self.max_tokens:
                j -= 1
            spans.append(Span(segs[i][0], segs[j - 1][1], symbol))
            if j >= len(segs):
                break
            i = self._overlap_start(sizes, i, j)
        return spans

    def _overlap_start(self, sizes: list[int], i: int, j: int) -> int:
        """First segment of the next chunk: ``j``, or earlier to repeat up to ``overlap_tokens`` tokens."""
        k, carried = j, 0
        while k - 1 > i and carried + sizes[k - 1] <= self.overlap_tokens:
            k -= 1
            carried += sizes[k]
        return k
