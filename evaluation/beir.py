"""Test sets in BEIR's format: a directory with ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

- ``corpus.jsonl``: ``{"_id", "title"?, "text", "metadata"?, ...}``, read exactly as ``longvec index --input``
  reads it (``index.sources.parse_record``): the title and text joined by one space, as sentence-transformers'
  BEIR evaluation embeds them; a ``language`` field picks the code chunker.
- ``queries.jsonl``: ``{"_id", "text", ...}``; only queries judged in the split are evaluated.
- ``qrels/<split>.tsv``: ``query-id  corpus-id  score``, graded (0 = judged not relevant), with or without a
  header line.

Everything is read and checked before any system runs: a bad line is an error naming its file and line.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from longvec.evaluation.types import Dataset, EvalDoc, EvalQuery
from longvec.index import InvalidInputError
from longvec.index.sources import jsonl_records, parse_record


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise InvalidInputError(f"BEIR directory is missing {path.name} ({path})")
    for lineno, record in jsonl_records(path):
        if not isinstance(record, dict) or not isinstance(record.get("_id"), str | int):
            raise InvalidInputError(f'{path}:{lineno}: expected an object with "_id"')
        yield lineno, record


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    """``qid -> doc_id -> grade`` from a BEIR qrels TSV (header line skipped)."""
    if not path.is_file():
        raise InvalidInputError(f"no qrels file {path} (choose the split with --split)")
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8-sig", newline="") as f:
        for lineno, row in enumerate(csv.reader(f, delimiter="\t"), 1):
            if not row:
                continue
            try:
                qid, doc_id, grade = row[0], row[1], int(row[2])
            except (IndexError, ValueError):
                if lineno == 1 and len(row) >= 3:
                    continue  # a header line ("query-id  corpus-id  score" or another naming)
                raise InvalidInputError(f"{path}:{lineno}: expected query-id<TAB>corpus-id<TAB>integer score") from None
            qrels.setdefault(qid, {})[doc_id] = grade
    return qrels


def load_beir(directory: str | Path, split: str = "test") -> Dataset:
    """The pool of a BEIR-format directory; its name is the directory's."""
    root = Path(directory)
    if not root.is_dir():
        raise InvalidInputError(f"no BEIR directory at {root}")
    qrels = read_qrels(root / "qrels" / f"{split}.tsv")
    docs, known = [], set()
    for lineno, record in _jsonl(root / "corpus.jsonl"):
        try:
            doc = parse_record(record)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{root / 'corpus.jsonl'}:{lineno}: {exc}") from None
        if doc.doc_id in known:  # longvec would keep the last copy, the baselines both: refuse instead
            raise InvalidInputError(f"{root / 'corpus.jsonl'}:{lineno}: duplicate _id {doc.doc_id!r}")
        known.add(doc.doc_id)
        docs.append(EvalDoc(doc.doc_id, doc.text, doc.effective_language))
    unknown = sorted({d for judged in qrels.values() for d in judged} - known)
    if unknown:
        raise InvalidInputError(f"qrels name {len(unknown)} documents not in the corpus, e.g. {unknown[0]!r}")
    queries = []
    for lineno, r in _jsonl(root / "queries.jsonl"):
        if str(r["_id"]) not in qrels:
            continue
        if not isinstance(r.get("text"), str) or not r["text"].strip():
            raise InvalidInputError(f"{root / 'queries.jsonl'}:{lineno}: query text must be a non-empty string")
        queries.append(EvalQuery(str(r["_id"]), r["text"], "all"))
    missing = sorted(set(qrels) - {q.qid for q in queries})
    if missing:
        raise InvalidInputError(f"qrels judge {len(missing)} queries not in queries.jsonl, e.g. {missing[0]!r}")
    return Dataset(root.resolve().name, docs, queries, qrels)
