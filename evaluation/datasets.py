"""Evaluation datasets: build deterministically once, cache as human-readable JSON Lines, load.

``load_dataset(name, cache_dir, counter)`` returns a list of pools (``Dataset``): one for "code" and "pydoc",
one per length for the synthetic "passkey" and "needle" tasks (``DATASET_NAMES``: they need nothing but this
interpreter), and one for each of "code-go", "code-ts" and "code-cpp" (``SOURCE_DATASET_NAMES``: built from
sources that ``make eval-sources`` installs, see ``code_langs.py``; their header records the sources' root
and version). The cache file is
``cache_dir/<name>-<full|small>-seed<seed>.jsonl``: a header line (format, interpreter, tokenizer probe, build
info), then per pool a ``dataset`` line followed by its ``doc`` and ``query`` lines (a query line carries its
relevant doc_ids). A missing file, or one whose header doesn't match this interpreter, tokenizer or format,
is rebuilt; files are written atomically.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from longvec.chunking.budget import TokenCounter
from longvec.evaluation.types import Dataset, EvalDoc, EvalQuery
from longvec.index import InvalidInputError

DATASET_NAMES = ("code", "pydoc", "passkey", "needle")  # self-contained: the default set of `longvec eval`
SOURCE_DATASET_NAMES = ("code-go", "code-ts", "code-cpp")  # need `make eval-sources` first
ALL_DATASET_NAMES = DATASET_NAMES + SOURCE_DATASET_NAMES
CACHE_FORMAT = 1
_PROBES = ("longvec evaluation cache probe", "def f(x):\n    return x ** 2  # ünïcode", "passkey 12345")

__all__ = [
    "ALL_DATASET_NAMES",
    "DATASET_NAMES",
    "SOURCE_DATASET_NAMES",
    "Dataset",
    "EvalDoc",
    "EvalQuery",
    "cache_path",
    "load_dataset",
]


def cache_path(cache_dir: Path, name: str, *, small: bool = False, seed: int = 0) -> Path:
    """Where ``load_dataset`` keeps the pools of ``name`` for this variant."""
    return Path(cache_dir) / f"{name}-{'small' if small else 'full'}-seed{seed}.jsonl"


def _header(name: str, counter: TokenCounter, small: bool, seed: int) -> dict[str, Any]:
    header: dict[str, Any] = {
        "record": "header",
        "format": CACHE_FORMAT,
        "name": name,
        "small": small,
        "seed": seed,
        "python": sys.version.split()[0],
        "tokenizer_probe": counter.count_many(list(_PROBES)),
    }
    if name in SOURCE_DATASET_NAMES:
        from longvec.evaluation.code_langs import source_fingerprint

        header["source"] = source_fingerprint(name)
    return header


def _builder(name: str) -> Callable[..., tuple[list[Dataset], dict[str, Any]]]:
    """The builder of ``name``, imported lazily (the code builder parses the whole standard library)."""
    if name == "code":
        from longvec.evaluation.code_search import build_code

        return build_code
    if name == "pydoc":
        from longvec.evaluation.pydoc_text import build_pydoc

        return build_pydoc
    if name in SOURCE_DATASET_NAMES:
        from longvec.evaluation.code_langs import build_code_lang

        return lambda counter, **kw: build_code_lang(name, counter, **kw)
    from longvec.evaluation.synthetic import build_synthetic

    return lambda counter, **kw: build_synthetic(name, counter, **kw)


def _records(header: dict[str, Any], datasets: list[Dataset]) -> Iterator[dict[str, Any]]:
    yield header
    for ds in datasets:
        yield {"record": "dataset", "name": ds.name}
        for d in ds.docs:
            yield {"record": "doc", "doc_id": d.doc_id, "language": d.language, "text": d.text}
        for q in ds.queries:
            relevant = sorted(ds.qrels.get(q.qid, ()))
            yield {"record": "query", "qid": q.qid, "bucket": q.bucket, "text": q.text, "relevant": relevant}


def write_cache(path: Path, header: dict[str, Any], datasets: list[Dataset]) -> None:
    """Write pools as JSON Lines, atomically (temporary file, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for record in _records(header, datasets):
            fh.write(json.dumps(record, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def read_cache(path: Path) -> tuple[dict[str, Any], list[Dataset]]:
    """The header and pools of a cache file written by ``write_cache``."""
    header: dict[str, Any] = {}
    datasets: list[Dataset] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            kind = r["record"]
            if kind == "header":
                header = r
            elif kind == "dataset":
                datasets.append(Dataset(r["name"], [], [], {}))
            elif kind == "doc":
                datasets[-1].docs.append(EvalDoc(r["doc_id"], r["text"], r["language"]))
            elif kind == "query":
                datasets[-1].queries.append(EvalQuery(r["qid"], r["text"], r["bucket"]))
                datasets[-1].qrels[r["qid"]] = set(r["relevant"])
            else:
                raise InvalidInputError(f"{path}: unknown record type {kind!r}")
    return header, datasets


def load_dataset(
    name: str, cache_dir: Path, counter: TokenCounter, *, small: bool = False, seed: int = 0
) -> list[Dataset]:
    """The pools of dataset ``name`` (one of ``ALL_DATASET_NAMES``), from ``cache_dir`` or freshly built.

    ``small=True`` is a smoke-sized variant for tests (a few dozen queries, small pools, synthetic lengths 256
    and 512 only). ``counter`` measures every token length (buckets, synthetic document lengths).
    """
    if name not in ALL_DATASET_NAMES:
        raise InvalidInputError(f"unknown dataset {name!r}; expected one of {', '.join(ALL_DATASET_NAMES)}")
    path = cache_path(cache_dir, name, small=small, seed=seed)
    header = _header(name, counter, small, seed)
    if path.exists():
        cached_header, datasets = read_cache(path)
        cached_header.pop("info", None)
        if cached_header == header:
            return datasets
    datasets, info = _builder(name)(counter, small=small, seed=seed)
    write_cache(path, header | {"info": info}, datasets)
    return datasets
