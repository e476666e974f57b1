"""Records of the evaluation suite: documents, queries and retrieval pools."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalDoc:
    """One retrievable document; ``language`` is ``"python"`` for code and ``None`` for prose."""

    doc_id: str
    text: str
    language: str | None
    path: str | None = None  # the source file, where the dataset knows it (code: doc_id ``file::name``)


@dataclass(frozen=True)
class EvalQuery:
    """One query; ``bucket`` groups queries for per-bucket metrics ("short", "deep", "len1024", ...)."""

    qid: str
    text: str
    bucket: str


@dataclass(frozen=True)
class Dataset:
    """One retrieval pool: every query searches all of ``docs``; ``qrels`` maps qid -> its relevant doc_ids
    (a set: grade 1 each) or doc_id -> graded relevance (BEIR: 0 judged not relevant, higher more relevant)."""

    name: str
    docs: list[EvalDoc]
    queries: list[EvalQuery]
    qrels: dict[str, set[str]] | dict[str, dict[str, int]]
