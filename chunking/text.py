"""Segment-level text chunking: paragraphs, then sentences, then token windows, greedily packed.

Memory follows the chunk being built, not the document: text is tokenised in pieces of at most
``PIECE_CHARS`` characters (cut before a space or newline, where a tokenizer's pre-tokenisation splits
anyway), counted in batches of bounded length, and packed from a stream of segments.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from longvec.chunking.budget import TokenCounter
from longvec.chunking.types import Chunk, ChunkKind, Span, spans_to_chunks

# The most characters tokenised (or counted) in one call, and so the longest segment counted whole: a
# longer paragraph or sentence is split further without being counted first.
PIECE_CHARS = 1 << 16
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


def split_on(pattern: re.Pattern[str], text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """Trimmed pieces of ``text[start:end]`` between matches of ``pattern`` (whitespace-only pieces dropped)."""
    cursor = start
    for m in pattern.finditer(text, start, end):
        if (piece := trimmed(text, cursor, m.start())) is not None:
            yield piece
        cursor = m.end()
    if (piece := trimmed(text, cursor, end)) is not None:
        yield piece


def count_spans(counter: TokenCounter, text: str, spans: Iterable[tuple[int, int]]) -> Iterator[int]:
    """Token counts of ``text[a:b]`` for each span, batched by ``PIECE_CHARS`` characters per call."""
    batch: list[str] = []
    size = 0
    for a, b in spans:
        if batch and size + b - a > PIECE_CHARS:
            yield from counter.count_many(batch)
            batch, size = [], 0
        batch.append(text[a:b])
        size += b - a
    yield from counter.count_many(batch)


def _token_pieces(
    counter: TokenCounter, text: str, start: int, end: int, piece: int = PIECE_CHARS
) -> Iterator[np.ndarray]:
    """Offsets into ``text`` (an ``(n, 2)`` array) of the content tokens of ``text[start:end]``, by pieces.

    Pieces begin at ``piece`` characters and double up to ``PIECE_CHARS``. Each ends before a space or
    newline when one lies in its second half, which leaves the tokens exactly as one tokenisation of the
    whole range gives them (for tokenizers that split on whitespace first); otherwise its last token is
    tokenised again with the next piece.
    """
    p = start
    while p < end:
        q = min(end, p + piece)
        exact = q == end
        if not exact:  # cut before the last space or newline of the piece's second half, if any
            cut = max(text.rfind(" ", p + piece // 2, q + 1), text.rfind("\n", p + piece // 2, q + 1))
            exact, q = (True, cut) if cut > p else (False, q)
        offsets = np.array(counter.token_offsets(text[p:q]), dtype=np.int64).reshape(-1, 2) + p
        if not exact and len(offsets) > 1 and offsets[-1, 0] > p:
            q, offsets = int(offsets[-1, 0]), offsets[:-1]  # the last token may go on past the cut
        yield offsets
        p, piece = q, min(2 * piece, PIECE_CHARS)


def token_starts(counter: TokenCounter, text: str, start: int, end: int) -> np.ndarray:
    """Sorted start offsets (into ``text``) of the content tokens of ``text[start:end]``, tokenised in pieces."""
    return np.concatenate([np.empty(0, np.int64), *(o[:, 0] for o in _token_pieces(counter, text, start, end))])


class _Tokens:
    """The content tokens of ``text[start:end]``, tokenised (``_token_pieces``) only as far as they are read.

    Token ``k`` (counted from ``start``) spans ``start_of(k)`` to ``end_of(k)``; tokens before ``release``'s
    argument are forgotten.
    """

    def __init__(self, counter: TokenCounter, text: str, start: int, end: int, piece: int) -> None:
        self.pieces = _token_pieces(counter, text, start, end, max(1, piece))
        self.base = 0  # index of the first buffered token
        self.starts = self.ends = np.empty(0, dtype=np.int64)

    def has(self, k: int) -> bool:
        """Whether token ``k`` exists (tokenising further as needed)."""
        while k - self.base >= len(self.starts) and (offsets := next(self.pieces, None)) is not None:
            self.starts = np.concatenate([self.starts, offsets[:, 0]])
            self.ends = np.concatenate([self.ends, offsets[:, 1]])
        return k - self.base < len(self.starts)

    @property
    def total(self) -> int:
        """Tokens read so far: all of them once ``has`` has returned ``False``."""
        return self.base + len(self.starts)

    def start_of(self, k: int) -> int:
        return int(self.starts[k - self.base])

    def end_of(self, k: int) -> int:
        return int(self.ends[k - self.base])

    def release(self, k: int) -> None:
        """Forget the tokens before ``k`` (copying only once they are most of the buffer)."""
        drop = k - self.base
        if drop > 0 and 2 * drop >= len(self.starts):
            self.starts, self.ends, self.base = self.starts[drop:].copy(), self.ends[drop:].copy(), k


def _windows(
    counter: TokenCounter, text: str, start: int, end: int, max_tokens: int, piece: int = PIECE_CHARS
) -> Iterator[tuple[Span, int | None]]:
    """``token_windows`` one at a time, each with its token count when it was counted (else ``None``)."""
    budget = max_tokens - counter.n_special
    if budget < 1:
        raise ValueError(f"max_tokens {max_tokens} leaves no room beside {counter.n_special} special tokens")
    tokens = _Tokens(counter, text, start, end, piece)
    if not tokens.has(0):  # nothing but whitespace and characters the tokenizer drops
        for a in range(start, end, PIECE_CHARS):
            if (whole := trimmed(text, a, min(end, a + PIECE_CHARS))) is not None:
                yield Span(*whole), None
        return
    cut, i = start, 0  # the window from token i starts at `cut`: the first one at `start`, not its first token
    while tokens.has(i):
        j = i + budget if tokens.has(i + budget) else tokens.total  # candidate: tokens [i, j)
        while True:
            if tokens.has(j):
                floor = max(i + 1, j - max(1, (j - i) // 4))
                for b in range(j, floor - 1, -1):
                    if tokens.has(b) and tokens.start_of(b) > tokens.end_of(b - 1):
                        j = b
                        break
            w_end = tokens.start_of(j) if tokens.has(j) else end
            window = trimmed(text, cut, w_end)
            if window is None or j - i == 1:
                n = None
                break
            if w_end - cut <= PIECE_CHARS and (n := counter.count(text[window[0] : window[1]])) <= max_tokens:
                break
            j -= 1
        if window is not None:
            yield Span(*window), n
        cut, i = w_end, j
        tokens.release(i)


def token_windows(counter: TokenCounter, text: str, start: int, end: int, max_tokens: int) -> list[Span]:
    """Hard-split ``text[start:end]`` into contiguous spans of at most ``max_tokens`` tokens each.

    Breaks fall between tokens, preferring a token that starts after whitespace (so words are not cut)
    when one lies in the last quarter of the window. Each window's count is re-checked on the joined text
    and the window shrunk if re-tokenising the cut changed it. The windows cut ``[start, end)`` into
    consecutive ranges, so characters the tokenizer drops (control and format characters such as U+00AD
    and U+200B, stray combining marks) stay inside a window wherever they are, range edges included.
    """
    return [span for span, _ in _windows(counter, text, start, end, max_tokens)]


def first_window(counter: TokenCounter, text: str, max_tokens: int, *, prefix_chars: int | None = None) -> Span | None:
    """``token_windows(counter, text, 0, len(text), max_tokens)[0]`` (``None`` for blank text), cheaply.

    Only a prefix of ``text`` is tokenised: ``prefix_chars`` characters (default 8 per token of
    ``max_tokens``), doubling until the prefix holds the whole first window.
    """
    piece = prefix_chars if prefix_chars is not None else 8 * max_tokens
    return next((span for span, _ in _windows(counter, text, 0, len(text), max_tokens, piece)), None)


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
        packed = list(self.packed(text, 0, len(text)))
        spans = [Span(a, b) for a, b, _ in packed]
        return spans_to_chunks(doc_id, text, spans, [n for _, _, n in packed], kind, language)

    def spans(self, text: str, start: int, end: int, symbol: str | None = None) -> list[Span]:
        """Greedily pack the segments of ``text[start:end]`` into spans within the budget."""
        return [Span(a, b, symbol) for a, b, _ in self.packed(text, start, end)]

    def segments(self, text: str, start: int, end: int) -> Iterator[tuple[int, int, int]]:
        """Atomic pieces ``(start, end, n_tokens)`` of ``text[start:end]``: paragraphs, else sentences, else
        token windows."""
        for a, b, n in self._counted(text, split_on(_PARAGRAPH_BREAK, text, start, end)):
            if n is not None and n <= self.max_tokens:
                yield a, b, n
                continue
            for c, d, m in self._counted(text, split_on(_SENTENCE_BREAK, text, a, b)):
                if m is not None and m <= self.max_tokens:
                    yield c, d, m
                    continue
                for w, k in _windows(self.counter, text, c, d, self.max_tokens):
                    yield w.start, w.end, k if k is not None else self.counter.count(text[w.start : w.end])

    def _counted(self, text: str, pieces: Iterable[tuple[int, int]]) -> Iterator[tuple[int, int, int | None]]:
        """``pieces`` with their token counts, counted in batches; ``None`` for a piece too long to count whole."""
        batch: list[tuple[int, int]] = []
        size = 0
        for a, b in pieces:
            if b - a > PIECE_CHARS or size + b - a > PIECE_CHARS:
                yield from self._batch(text, batch)
                batch, size = [], 0
            if b - a > PIECE_CHARS:
                yield a, b, None
                continue
            batch.append((a, b))
            size += b - a
        yield from self._batch(text, batch)

    def _batch(self, text: str, batch: list[tuple[int, int]]) -> Iterator[tuple[int, int, int | None]]:
        for (a, b), n in zip(batch, count_spans(self.counter, text, batch), strict=True):
            yield a, b, n

    def packed(self, text: str, start: int, end: int) -> Iterator[tuple[int, int, int]]:
        """Chunk spans ``(start, end, n_tokens)`` of ``text[start:end]``, packed from a stream of segments."""
        special, segments = self.counter.n_special, self.segments(text, start, end)
        segs: list[tuple[int, int, int]] = []  # the current chunk's segments and those read after them

        def read(k: int) -> bool:  # whether segment k exists, reading on as needed
            while len(segs) <= k and (seg := next(segments, None)) is not None:
                segs.append(seg)
            return k < len(segs)

        i = 0
        while read(i):
            j, total = i + 1, segs[i][2] - special
            while read(j) and total + segs[j][2] <= self.max_tokens and segs[j][1] - segs[i][0] <= PIECE_CHARS:
                total += segs[j][2] - special
                j += 1
            # Token counts are not exactly additive across joins: verify on the joined text.
            while True:
                if j - i == 1:
                    n = segs[i][2]
                    break
                if (n := self.counter.count(text[segs[i][0] : segs[j - 1][1]])) <= self.max_tokens:
                    break
                j -= 1
            yield segs[i][0], segs[j - 1][1], n
            if not read(j):
                break
            i = self._overlap_start(segs, i, j)
            del segs[:i]
            i = 0

    def _overlap_start(self, segs: list[tuple[int, int, int]], i: int, j: int) -> int:
        """First segment of the next chunk: ``j``, or earlier to repeat up to ``overlap_tokens`` tokens."""
        k, carried, special = j, 0, self.counter.n_special
        while k - 1 > i and carried + segs[k - 1][2] - special <= self.overlap_tokens:
            k -= 1
            carried += segs[k][2] - special
        return k
