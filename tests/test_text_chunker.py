from __future__ import annotations

import pytest

import longvec.chunking.text as text_module
from longvec.chunking import TextChunker, first_window, token_windows
from longvec.chunking.text import token_starts

UNICODE_TEXT = (
    "Ünïcödé paragraph one. It has ßharp letters, emoji 🚀🚀 and CJK 日本語のテキスト。\n\n"
    "Second paragraph: "
    + "A sentence about retrieval. " * 40
    + "\n\n"
    + "x" * 2500  # one oversize 'word' with no spaces
    + "\n\nZero\u200bwidth and control \x07 characters. Κείμενο στα ελληνικά. Текст на русском.\n"
)


def assert_invariants(text: str, chunks, counter, budget: int) -> None:
    covered = set()
    for i, c in enumerate(chunks):
        assert c.chunk_id == i
        assert text[c.start : c.end] == c.text
        assert c.n_tokens == counter.count(c.text) <= budget
        assert c.text == c.text.strip()
        covered.update(range(c.start, c.end))
    assert [c.start for c in chunks] == sorted(c.start for c in chunks)
    missing = [i for i, ch in enumerate(text) if not ch.isspace() and i not in covered]
    assert missing == []


@pytest.mark.parametrize("budget", [16, 48, 128, 256])
def test_unicode_text_invariants(counter, budget):
    chunks = TextChunker(counter, budget).chunk("d", UNICODE_TEXT)
    assert len(chunks) > 1
    assert_invariants(UNICODE_TEXT, chunks, counter, budget)
    # without overlap, chunks do not overlap
    assert all(a.end <= b.start for a, b in zip(chunks, chunks[1:], strict=False))


def test_overlap_repeats_trailing_sentences(counter):
    text = " ".join(f"Sentence number {i} talks about topic {i}." for i in range(60))
    plain = TextChunker(counter, 64).chunk("d", text)
    overlapped = TextChunker(counter, 64, overlap_tokens=16).chunk("d", text)
    assert_invariants(text, overlapped, counter, 64)
    assert len(overlapped) > len(plain)
    assert any(a.end > b.start for a, b in zip(overlapped, overlapped[1:], strict=False))


def test_packing_fills_chunks(counter):
    text = "\n\n".join(f"Short paragraph {i}." for i in range(100))
    chunks = TextChunker(counter, 128).chunk("d", text)
    # greedy packing: every chunk but the last is close to the budget
    assert all(c.n_tokens > 100 for c in chunks[:-1])


@pytest.mark.parametrize("text", ["", "   \n\n\t  "])
def test_empty_text_gives_no_chunks(counter, text):
    assert TextChunker(counter, 64).chunk("d", text) == []


def test_repeated_text_is_chunked_deterministically(counter):
    text = "same words again. " * 300
    a = TextChunker(counter, 64).chunk("d", text)
    b = TextChunker(counter, 64).chunk("d", text)
    assert a == b
    assert_invariants(text, a, counter, 64)


def test_token_windows_prefer_word_boundaries(counter):
    text = "tokenization " * 200
    spans = token_windows(counter, text, 0, len(text), 32)
    for s in spans:
        assert counter.count(text[s.start : s.end]) <= 32
        assert text[s.start : s.end].startswith("tokenization")
        assert text[s.start : s.end].endswith("tokenization")


def test_budget_must_leave_room_for_content(counter):
    with pytest.raises(ValueError, match="max_tokens must exceed 2"):
        TextChunker(counter, 2)
    with pytest.raises(ValueError, match="overlap_tokens must be in"):
        TextChunker(counter, 64, overlap_tokens=40)


def test_closing_punctuation_after_sentence_end_is_kept(counter):
    text = ('He said "stop." Then (quietly!) she left.) The end?" ' * 30) + "Tensor(a!)\nNext line."
    chunks = TextChunker(counter, 16).chunk("d", text)
    assert_invariants(text, chunks, counter, 16)


# Characters the tokenizer drops (no token covers them): soft hyphen, zero-width space, a lone combining
# mark, a byte-order mark.
DROPPED = ["\u00ad", "\u200b", "\u0301", "\ufeff"]


def uncovered(text: str, spans, start: int = 0, end: int | None = None) -> list[int]:
    """Non-whitespace characters of ``text[start:end]`` that no span covers."""
    covered = set()
    for s in spans:
        covered.update(range(s.start, s.end))
    return [i for i in range(start, len(text) if end is None else end) if not text[i].isspace() and i not in covered]


@pytest.mark.parametrize("char", DROPPED)
def test_token_windows_keep_tokenless_characters_at_every_edge(counter, char):
    base = "tokenization works " * 30
    windows = token_windows(counter, base, 0, len(base), 16)
    assert len(windows) > 3
    # The range's own edges, each window's start and end, the tokens around them.
    edges = {0, len(base)} | {e + d for s in windows for e in (s.start, s.end) for d in (-1, 0, 1)}
    for at in sorted(e for e in edges if 0 <= e <= len(base)):
        for inserted in (char, char * 3, f"{char} ", f" {char}"):
            text = base[:at] + inserted + base[at:]
            spans = token_windows(counter, text, 0, len(text), 16)
            assert uncovered(text, spans) == [], (at, inserted)
            assert all(counter.count(text[s.start : s.end]) <= 16 for s in spans)
            assert [s.start for s in spans] == sorted(s.start for s in spans)


@pytest.mark.parametrize("char", DROPPED)
def test_text_chunker_keeps_tokenless_characters(counter, char):
    # At the start of a document, of an oversize paragraph, of an oversize sentence, and of a sub-range.
    text = f"{char}Intro.\n\n{char}" + "word " * 60 + f"\n\nShort one. {char}" + "more words " * 40
    chunks = TextChunker(counter, 16).chunk("d", text)
    assert_invariants(text, chunks, counter, 16)
    start = text.index("more")
    spans = token_windows(counter, text, start - 1, len(text), 16)
    assert uncovered(text, spans, start - 1) == []


def test_token_windows_on_tokenless_text(counter):
    text = "\u200b" * 70_000 + " \u00ad "  # longer than one tokenisation piece, without a single token
    spans = token_windows(counter, text, 0, len(text), 16)
    assert uncovered(text, spans) == []
    assert all(s.end - s.start <= text_module.PIECE_CHARS for s in spans)


def test_pieces_tokenise_like_the_whole_text(counter, monkeypatch):
    text = UNICODE_TEXT * 40  # ~180k characters: several pieces
    assert len(text) > 2 * text_module.PIECE_CHARS
    assert list(token_starts(counter, text, 0, len(text))) == [a for a, _ in counter.token_offsets(text)]
    in_pieces = token_windows(counter, text, 5, len(text) - 5, 64)
    monkeypatch.setattr(text_module, "PIECE_CHARS", 10**9)  # one tokenisation of the whole range
    assert token_windows(counter, text, 5, len(text) - 5, 64) == in_pieces


def test_long_run_without_whitespace(counter):
    text = "a.b(c);" * 8_000 + "x" * 70_000  # minified code, then one 70k-character "word"
    spans = token_windows(counter, text, 0, len(text), 64)
    assert uncovered(text, spans) == []
    assert all(counter.count(text[s.start : s.end]) <= 64 for s in spans)
    chunks = TextChunker(counter, 64).chunk("d", text)
    assert_invariants(text, chunks, counter, 64)


FIRST_TEXTS = [
    "",
    "  \n ",
    "\u200b",
    "short text",
    "tokenization " * 300,
    UNICODE_TEXT,
    "\u00ad" + "word " * 300,
    "x" * 5000 + " tail",
    "a.b(c);" * 3000,
    "日本語のテキスト。" * 400,
]


@pytest.mark.parametrize("budget", [16, 128, 256])
@pytest.mark.parametrize("text", FIRST_TEXTS)
def test_first_window_is_the_first_token_window(counter, text, budget):
    windows = token_windows(counter, text, 0, len(text), budget)
    assert first_window(counter, text, budget) == (windows[0] if windows else None)


def test_first_window_at_the_prefix_boundary(counter):
    text = "Retrieval over long documents, one window at a time. " * 60
    windows = token_windows(counter, text, 0, len(text), 32)
    first, after = windows[0], windows[1].start
    # The tokenised prefix ends inside the window's last word, exactly at its end, on the whitespace after
    # it, at the next token's start, and just after.
    for prefix in range(first.end - 4, after + 4):
        assert first_window(counter, text, 32, prefix_chars=prefix) == first, prefix


def test_first_window_tokenises_only_a_prefix(counter, monkeypatch):
    text = "tokenization " * 100_000  # 1.3M characters
    seen: list[int] = []
    token_offsets = counter.token_offsets
    monkeypatch.setattr(counter, "token_offsets", lambda t: seen.append(len(t)) or token_offsets(t))
    window = first_window(counter, text, 256)
    assert window is not None and window.start == 0 and counter.count(text[: window.end]) <= 256
    assert sum(seen) < 10_000


def _full_paragraph(counter, budget: int) -> str:
    """A paragraph of exactly ``budget`` tokens: nothing more fits beside it in a chunk."""
    words = []
    while counter.count(" ".join([*words, "retrieval"])) <= budget:
        words.append("retrieval")
    return " ".join(words)


@pytest.mark.parametrize("fragment", ["</UL>", "]", "});", "import os"])
def test_a_trailing_fragment_joins_the_chunk_before_it(counter, fragment):
    from longvec.chunking import MIN_CHUNK_TOKENS, Chunker

    budget = 128  # a fragment is under min(MIN_CHUNK_TOKENS, budget // 16) tokens
    intro = "An introduction that explains how the index stores its chunks."
    text = intro + "\n\n" + _full_paragraph(counter, budget) + "\n\n" + fragment + "\n"
    alone = TextChunker(counter, budget).chunk("d", text)
    assert alone[-1].text == fragment  # the packer alone leaves it as a chunk of its own
    chunks = Chunker(counter, budget).chunk("d", text)
    assert [c.chunk_id for c in chunks] == list(range(len(alone) - 1))
    assert chunks[-1].start == alone[-2].start and chunks[-1].end == alone[-1].end
    assert chunks[-1].text == text[chunks[-1].start : chunks[-1].end] and chunks[-1].text.endswith(fragment)
    assert chunks[-1].n_tokens == counter.count(chunks[-1].text) > budget  # only the fragment is past the budget
    assert all(c.n_tokens - counter.n_special >= MIN_CHUNK_TOKENS for c in chunks)


def test_a_run_of_fragments_is_not_recounted_as_one_growing_text(counter, monkeypatch):
    """Megabytes of one unknown "word" are pieces of a few tokens (the tokenizer's [UNK]) and many characters each:
    fragments. Joining them one by one into the chunk before, each join re-counted, would tokenise the text over
    and over (quadratic); no join spans more than PIECE_CHARS characters, so the characters tokenised stay a small
    multiple of the text's."""
    from longvec.chunking import Chunker

    text = "a" * (12 * text_module.PIECE_CHARS)
    tokenised: list[int] = []
    count = counter.count
    monkeypatch.setattr(counter, "count", lambda t: tokenised.append(len(t)) or count(t))
    chunks = Chunker(counter, 256).chunk("d", text)
    assert chunks and chunks[0].start == 0 and chunks[-1].end == len(text)
    assert all(c.end - c.start <= text_module.PIECE_CHARS for c in chunks)
    assert sum(tokenised) <= 4 * len(text), sum(tokenised)


def test_a_leading_fragment_joins_the_next_chunk_only_within_the_budget(counter):
    from longvec.chunking import Chunker

    budget = 64
    fits = "]\n\n" + "A sentence about retrieval. " * 3
    assert len(TextChunker(counter, budget).chunk("d", fits)) == 1  # packed together anyway
    # a fragment followed by a full paragraph: merging would push real content past the budget, so it stays
    full = "]\n\n" + _full_paragraph(counter, budget) + "\n\nTail sentence about search engines and ranking."
    chunks = Chunker(counter, budget).chunk("d", full)
    assert chunks[0].text == "]" and all(c.n_tokens <= budget for c in chunks)
    # where it fits, it is merged: a short code file whose first AST chunk is a lone import
    code = "import os\n\n\n" + "def f(x):\n    return os.path.join(x, 'retrieval', 'index')\n" * 1
    merged = Chunker(counter, budget).chunk("m.py", code, path="m.py")
    assert len(merged) == 1 and merged[0].start == 0 and merged[0].n_tokens <= budget


@pytest.mark.parametrize("text", ["]", "  </UL>\n"])
def test_a_document_that_is_one_fragment_stays_one_chunk(counter, text):
    from longvec.chunking import Chunker

    (chunk,) = Chunker(counter, 64).chunk("d", text)
    assert chunk.text == text.strip()
