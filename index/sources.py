"""Reading input documents: JSONL records and directory walks."""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from index.collection import Document
from index.errors import InvalidInputError

SKIP_DIRS = frozenset({".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".mypy_cache"})
MAX_FILE_BYTES = 2_000_000


def read_jsonl(path: str | Path) -> Iterator[Document]:
    """Documents from JSONL lines ``{"id", "text", "path"?, "language"?, "metadata"?}``.

    Errors name the file and line. Blank lines are skipped.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                doc = parse_record(json.loads(line))
            except UnicodeDecodeError as exc:
                raise InvalidInputError(f"{path}:{lineno}: not UTF-8 ({exc.reason})") from None
            except (json.JSONDecodeError, InvalidInputError) as exc:
                raise InvalidInputError(f"{path}:{lineno}: {exc}") from None
            yield doc


def parse_record(record: object) -> Document:
    if not isinstance(record, dict):
        raise InvalidInputError("expected a JSON object")
    unknown = set(record) - {"id", "text", "path", "language", "metadata"}
    if unknown:
        raise InvalidInputError(f"unknown fields {sorted(unknown)}")
    for name in ("id", "text"):
        if name not in record:
            raise InvalidInputError(f"missing field {name!r}")
    doc_id = record["id"]
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    for name in ("path", "language"):
        if record.get(name) is not None and not isinstance(record[name], str):
            raise InvalidInputError(f"field {name!r} must be a string")
    return Document(
        doc_id=doc_id,
        text=record["text"],
        path=record.get("path"),
        language=record.get("language"),
        metadata={} if record.get("metadata") is None else record["metadata"],
    )


@dataclass
class WalkStats:
    files: int = 0
    skipped_binary: int = 0
    skipped_large: int = 0


def walk_paths(
    paths: list[str | Path],
    stats: WalkStats | None = None,
    *,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    max_bytes: int = MAX_FILE_BYTES,
) -> Iterator[Document]:
    """Text files under ``paths`` (files or directories, walked recursively in sorted order).

    ``doc_id`` is the path relative to the common parent of ``paths`` (a single directory: relative to it).
    ``include``/``exclude`` are glob patterns matched against that relative path (``*`` crosses ``/``).
    Skips VCS and dependency directories, binary files (NUL byte or not UTF-8) and files over ``max_bytes``.
    """
    stats = stats if stats is not None else WalkStats()
    resolved = [Path(p).resolve() for p in paths]
    for p in resolved:
        if not p.exists():
            raise InvalidInputError(f"no such file or directory: {p}")
    if len(resolved) == 1 and resolved[0].is_dir():
        base = resolved[0]
    else:
        base = Path(os.path.commonpath([p if p.is_dir() else p.parent for p in resolved]))
    for p in resolved:
        for file in _files(p):
            rel = file.relative_to(base).as_posix()
            if include and not any(fnmatch.fnmatchcase(rel, g) for g in include):
                continue
            if exclude and any(fnmatch.fnmatchcase(rel, g) for g in exclude):
                continue
            doc = _read_file(file, rel, stats, max_bytes)
            if doc is not None:
                stats.files += 1
                yield doc


def _files(root: Path) -> Iterator[Path]:
    if root.is_file():
        yield root
        return
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            path = Path(dirpath) / name
            if path.is_file() and not path.is_symlink():
                yield path


def _read_file(file: Path, rel: str, stats: WalkStats, max_bytes: int) -> Document | None:
    if file.stat().st_size > max_bytes:
        stats.skipped_large += 1
        return None
    data = file.read_bytes()
    if b"\0" in data[:8192]:
        stats.skipped_binary += 1
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        stats.skipped_binary += 1
        return None
    return Document(doc_id=rel, text=text, path=rel)
