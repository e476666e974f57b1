from __future__ import annotations

import pytest

from chunking import TextChunker, token_windows

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
