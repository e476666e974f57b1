"""Test sets in BEIR's format: a directory with ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

- ``corpus.jsonl``: ``{"_id", "title"?, "text", "metadata"?}``; a document's text is its title and text
  joined by one space, as sentence-transformers' BEIR evaluation embeds them (:func:`beir_text`).
- ``queries.jsonl``: ``{"_id", "text", ...}``; only queries judged in the split are evaluated.
- ``qrels/<split>.tsv``: ``query-id  corpus-id  score`` with a header line; graded, 0 = judged not relevant.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evaluation.types import Dataset, EvalDoc, EvalQuery
from index import InvalidInputError
from index.sources import beir_text


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise InvalidInputError(f"BEIR directory is missing {path.name} ({path})")
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path}:{lineno}: {exc}") from None
            if not isinstance(record, dict) or not isinstance(record.get("_id"), str | int):
                raise InvalidInputError(f'{path}:{lineno}: expected an object with "_id"')
            yield lineno, record


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """``qid -> doc_id -> grade`` from a BEIR qrels TSV (header line skipped)."""
    if not path.is_file():
        raise InvalidInputError(f"no qrels file {path} (choose the split with --split)")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8", newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not row or (lineno == 1 and row[0] == "query-id"):
                continue
            try:
                qid, doc_id, grade = row[0], row[1], int(row[2])
            except (IndexError, ValueError):
                raise InvalidInputError(f"{path}:{lineno}: expected query-id<TAB>corpus-id<TAB>integer score") from None
            qrels.setdefault(qid, {})[doc_id] = grade
    return qrels


def load_beir(directory: str | Path, split: str = "test") -> Dataset:
    """The pool of a BEIR-format directory; its name is the directory's."""
    root = Path(directory)
    if not root.is_dir():
        raise InvalidInputError(f"no BEIR directory at {root}")
    qrels = read_qrels(root / "qrels" / f"{split}.tsv")
    docs = []
    for lineno, record in _jsonl(root / "corpus.jsonl"):
        if not isinstance(record.get("text", ""), str) or not isinstance(record.get("title", ""), str):
            raise InvalidInputError(f"{root / 'corpus.jsonl'}:{lineno}: title and text must be strings")
        text, _ = beir_text(record.get("title") or "", record.get("text") or "")
        docs.append(EvalDoc(str(record["_id"]), text, None))
    known = {d.doc_id for d in docs}
    unknown = sorted({d for judged in qrels.values() for d in judged} - known)
    if unknown:
        raise InvalidInputError(f"qrels name {len(unknown)} documents not in the corpus, e.g. {unknown[0]!r}")
    queries = [
        EvalQuery(str(r["_id"]), str(r.get("text", "")), "all")
        for _, r in _jsonl(root / "queries.jsonl")
        if str(r["_id"]) in qrels
    ]
    missing = sorted(set(qrels) - {q.qid for q in queries})
    if missing:
        raise InvalidInputError(f"qrels judge {len(missing)} queries not in queries.jsonl, e.g. {missing[0]!r}")
    return Dataset(root.name, docs, queries, qrels)
