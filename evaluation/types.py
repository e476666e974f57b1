"""Records of the evaluation suite: documents, queries and retrieval pools."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class EvalDoc:
    """One retrievable document; ``language`` is ``"python"`` for code and ``None`` for prose."""

    doc_id: str
    text: str
    language: str | None

    @property
    def path(self) -> str | None:
        """The source file, where the dataset names it: code documents' ids are ``file::qualified.name``."""
        return self.doc_id.split("::", 1)[0] if self.language and "::" in self.doc_id else None


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
