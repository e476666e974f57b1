"""Whitespace normalisation and sentence splitting shared by the dataset builders."""

from __future__ import annotations

import re

_SPACE = re.compile(r"\s+")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z(\"'`])")
_PARAGRAPH = re.compile(r"\n[ \t]*\n")


def normalize_space(text: str) -> str:
    """Collapse every whitespace run to one space and strip the ends."""
    return _SPACE.sub(" ", text).strip()


def paragraphs(doc: str) -> list[str]:
    """Blank-line separated paragraphs of a cleaned docstring (empty ones dropped, lines kept)."""
    return [p for p in _PARAGRAPH.split(doc) if p.strip()]


def split_sentences(paragraph: str) -> list[str]:
    """Sentences of one paragraph, whitespace-normalised (ends at ``.!?`` followed by a capital)."""
    return [s for s in _SENTENCE_END.split(normalize_space(paragraph)) if s]


def first_sentence(doc: str) -> str:
    """The first sentence of the first paragraph of ``doc`` ("" when there is none)."""
    paras = paragraphs(doc)
    if not paras:
        return ""
    sentences = split_sentences(paras[0])
    return sentences[0] if sentences else ""


def word_count(text: str) -> int:
    """Whitespace-separated words in ``text``."""
    return len(text.split())
