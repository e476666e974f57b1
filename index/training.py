"""What ``longvec train`` learns from: the user's pairs (JSONL), or pairs mined from documents (``chunking.pairs``)
— those of a collection, or any source ``longvec index`` reads."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from longvec.chunking.pairs import Pair, mine_pairs
from longvec.index.errors import CollectionNotFoundError, InvalidInputError
from longvec.index.manifest import Manifest
from longvec.index.sources import jsonl_records
from longvec.index.store import Store
from longvec.index.types import Document

ANCHOR_KEYS = ("anchor", "query")
POSITIVE_KEYS = ("positive", "document", "text")


def read_pairs(path: str | Path) -> list[tuple[str, str]]:
    """``(anchor, positive)`` from a JSONL file of objects with ``anchor`` (or ``query``) and ``positive`` (or
    ``document`` / ``text``) strings; a malformed line is an :class:`InvalidInputError` naming it."""
    pairs = []
    for line, record in jsonl_records(path):
        anchor = _field(record, ANCHOR_KEYS)
        positive = _field(record, POSITIVE_KEYS)
        if anchor is None or positive is None:
            raise InvalidInputError(
                f"{path}:{line}: a pair needs non-empty string fields {' or '.join(ANCHOR_KEYS)} and "
                f"{' or '.join(POSITIVE_KEYS)}"
            )
        pairs.append((anchor, positive))
    if len(pairs) < 2:
        raise InvalidInputError(f"{path}: training needs at least 2 pairs, found {len(pairs)}")
    return pairs


def _field(record: Any, keys: tuple[str, ...]) -> str | None:
    if not isinstance(record, dict):
        return None
    value = next((record[k] for k in keys if k in record), None)
    return value if isinstance(value, str) and value.strip() else None


def mined_pairs(documents: Iterable[Document], *, max_pairs: int | None = None, seed: int = 0) -> list[Pair]:
    """Pairs mined from ``documents``; an anchor found more than once (``Return self==value.``) is ambiguous
    and dropped everywhere. At most ``max_pairs``, a seeded random sample, in a seeded random order."""
    found = [p for doc in documents for p in mine_pairs(doc.doc_id, doc.text, doc.effective_language)]
    uses = Counter(p.anchor for p in found)
    unique = [p for p in found if uses[p.anchor] == 1]
    random.Random(seed).shuffle(unique)
    return unique[:max_pairs] if max_pairs is not None else unique


def collection_documents(root: str | Path) -> tuple[str, list[Document]]:
    """The model a collection was built with and every document in it as indexed, read from its store alone (no
    model is loaded). :class:`CollectionNotFoundError` if ``root`` holds no collection."""
    root = Path(root)
    if not (root / "manifest.json").exists():
        raise CollectionNotFoundError(f"no collection at {root} (create one with `longvec index`)")
    manifest = Manifest.load(root / "manifest.json")
    store = Store(root / "store.sqlite", readonly=True)
    try:
        with store.snapshot():
            docs = []
            for doc_id in store.doc_ids():
                stored = store.document(doc_id)
                if stored is not None:
                    docs.append(Document(doc_id, stored.text, path=stored.path, language=stored.language))
    finally:
        store.close()
    return manifest.model, docs
