"""Reading input documents: JSONL records and directory walks."""

from __future__ import annotations

import fnmatch
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from longvec.index.errors import InvalidInputError
from longvec.index.types import Document

SKIP_DIRS = frozenset({".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".mypy_cache"})
MAX_FILE_BYTES = 2_000_000


def jsonl_records(
    path: str | Path, start: int = 0, stop: int | None = None, first_line: int = 1
) -> Iterator[tuple[int, Any]]:
    """``(line number, parsed JSON value)`` of each non-blank line (of the bytes ``[start, stop)`` only, which
    begin at line ``first_line``: see :func:`jsonl_parts`); bad bytes or JSON are an :class:`InvalidInputError`
    naming the file and line."""
    with open(path, "rb") as f:
        f.seek(start)
        lines = f if stop is None else io.BytesIO(f.read(stop - start))
        for lineno, raw in enumerate(lines, first_line):
            try:
                line = raw.decode("utf-8")
                if line.strip():
                    yield lineno, json.loads(line)
            except UnicodeDecodeError as exc:
                raise InvalidInputError(f"{path}:{lineno}: not UTF-8 ({exc.reason})") from None
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"{path}:{lineno}: {exc}") from None


def jsonl_parts(path: str | Path, part_bytes: int) -> list[tuple[int, int, int]]:
    """``path`` cut at line ends into ranges of about ``part_bytes`` bytes: ``(start, stop, first line number)``,
    for :func:`read_jsonl` to read one at a time, anywhere."""
    parts, start, size, line, lines = [], 0, 0, 1, 0
    with open(path, "rb") as f:
        for raw in f:
            size, lines = size + len(raw), lines + 1
            if size >= part_bytes:
                parts.append((start, start + size, line))
                start, size, line, lines = start + size, 0, line + lines, 0
    if size:
        parts.append((start, start + size, line))
    return parts


def read_jsonl(path: str | Path, start: int = 0, stop: int | None = None, first_line: int = 1) -> Iterator[Document]:
    """Documents from JSONL lines ``{"id", "text", "path"?, "language"?, "metadata"?}``, or BEIR corpus lines
    ``{"_id", "title"?, "text", "metadata"?}`` (see :func:`beir_text`).

    Errors name the file and line. Blank lines are skipped. ``start``, ``stop`` and ``first_line``: one part of
    the file (:func:`jsonl_parts`).
    """
    for lineno, record in jsonl_records(path, start, stop, first_line):
        try:
            yield parse_record(record)
        except InvalidInputError as exc:
            raise InvalidInputError(f"{path}:{lineno}: {exc}") from None


def beir_text(title: str, text: str) -> tuple[str, int]:
    """A BEIR document's text as embedded: title and text joined by one space, as sentence-transformers'
    BEIR evaluation does; and where the original text starts in it (``0`` without a title)."""
    return (f"{title} {text}", len(title) + 1) if title else (text, 0)


def _parse_beir(record: dict) -> Document:
    """A BEIR corpus line. A string ``language`` field (BEIR-format code sets carry one) picks the chunker;
    other extra fields go into the metadata beside BEIR's own ``metadata`` object."""
    for name in ("title", "text", "language"):
        if record.get(name) is not None and not isinstance(record[name], str):
            raise InvalidInputError(f"field {name!r} must be a string")
    if record.get("text") is None:
        raise InvalidInputError("missing field 'text'")
    doc_id = record["_id"]
    if isinstance(doc_id, int) and not isinstance(doc_id, bool):
        doc_id = str(doc_id)
    metadata = {} if record.get("metadata") is None else record["metadata"]
    if not isinstance(metadata, dict):
        raise InvalidInputError("field 'metadata' must be an object")
    extra = {k: v for k, v in record.items() if k not in ("_id", "title", "text", "metadata", "language")}
    text, start = beir_text(record.get("title") or "", record["text"])
    if start:
        extra["beir_text_start"] = start  # the title is text[: beir_text_start - 1]
    return Document(doc_id=doc_id, text=text, language=record.get("language"), metadata={**metadata, **extra})


# The columns a parquet file of documents may have (others are not read): JSONL's fields, or BEIR's.
PARQUET_COLUMNS = ("id", "_id", "title", "text", "path", "language", "metadata")


def _parquet_file(path: str | Path) -> Any:
    """``pyarrow.parquet.ParquetFile(path)``; :class:`InvalidInputError` if pyarrow is missing (how to install it)
    or the file is not a readable parquet file."""
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise InvalidInputError("reading parquet needs pyarrow: pip install 'longvec[ray]'") from None
    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow's own errors: not a parquet file, truncated, ...
        raise InvalidInputError(f"{path}: not a readable parquet file ({exc})") from None


def parquet_rows(path: str | Path) -> int:
    """How many rows the parquet file at ``path`` holds (from its footer)."""
    return _parquet_file(path).metadata.num_rows


def parquet_parts(path: str | Path, part_bytes: int) -> list[tuple[int, int]]:
    """Row ranges ``(start, stop)`` of the parquet file at ``path`` of about ``part_bytes`` each (uncompressed, by
    its footer), never across a row group: a row group is read whole, so small ones are grouped and a large one is
    split (each split then decodes the rows before its own in that group: write row groups of about a part)."""
    meta = _parquet_file(path).metadata
    parts: list[tuple[int, int]] = []
    offset, start, size = 0, 0, 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        if group.total_byte_size > part_bytes and group.num_rows > 1:  # split this group alone
            if offset > start:
                parts.append((start, offset))
            step = max(1, int(part_bytes * group.num_rows / group.total_byte_size))
            parts += [(r, min(offset + group.num_rows, r + step)) for r in range(offset, offset + group.num_rows, step)]
            offset += group.num_rows
            start, size = offset, 0
            continue
        offset, size = offset + group.num_rows, size + group.total_byte_size
        if size >= part_bytes:
            parts.append((start, offset))
            start, size = offset, 0
    if offset > start:
        parts.append((start, offset))
    return parts


def read_parquet(path: str | Path, start: int = 0, stop: int | None = None) -> Iterator[Document]:
    """Documents from rows ``[start, stop)`` of a parquet file whose columns are JSONL's fields (``id``, ``text``,
    ``path``?, ``language``?, ``metadata``? as a struct or a JSON string) or BEIR's (``_id``, ``title``?,
    ``text``); other columns are not read. Streams the row groups holding those rows. Errors name the file and
    row. Needs pyarrow (``longvec[ray]``)."""
    f = _parquet_file(path)
    columns = [c for c in PARQUET_COLUMNS if c in f.schema_arrow.names]
    stop = f.metadata.num_rows if stop is None else stop
    groups, row = [], 0  # the row groups overlapping [start, stop), and the row the first of them begins at
    for g in range(f.num_row_groups):
        n = f.metadata.row_group(g).num_rows
        if row + n <= start:
            row += n
        elif row + sum(f.metadata.row_group(i).num_rows for i in groups) < stop:
            groups.append(g)
    if not groups:
        return
    for batch in f.iter_batches(batch_size=1024, row_groups=groups, columns=columns):
        if row >= stop:
            return
        for record in batch.to_pylist():
            if start <= row < stop:
                yield _parquet_document(path, row, record)
            row += 1


def _parquet_document(path: str | Path, row: int, record: dict[str, Any]) -> Document:
    record = {k: v for k, v in record.items() if v is not None or k in ("id", "_id", "text")}
    try:
        if isinstance(record.get("metadata"), str):
            try:
                record["metadata"] = json.loads(record["metadata"])
            except json.JSONDecodeError as exc:
                raise InvalidInputError(f"field 'metadata' is not JSON ({exc})") from None
        return parse_record(record)
    except InvalidInputError as exc:
        raise InvalidInputError(f"{path}: row {row}: {exc}") from None


def read_documents(path: str | Path) -> Iterator[Document]:
    """The documents of an ``--input`` file: parquet if its name ends in ``.parquet``, else JSONL."""
    return read_parquet(path) if str(path).endswith(".parquet") else read_jsonl(path)


def parse_record(record: object) -> Document:
    if not isinstance(record, dict):
        raise InvalidInputError("expected a JSON object")
    if "_id" in record and "id" not in record:
        return _parse_beir(record)
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
    skipped_vanished: int = 0  # listed, then gone before it was read
    listed: int = 0  # files the walk will read

    @property
    def skipped(self) -> int:
        return self.skipped_binary + self.skipped_large + self.skipped_vanished


@dataclass(frozen=True)
class Root:
    """A directory given to a walk: its documents' ids are ``f"{name}/{path relative to it}"``."""

    path: Path
    name: str

    @property
    def prefix(self) -> str:
        return f"{self.name}/"

    def file_of(self, doc_id: str) -> Path | None:
        """The file a document under this root came from (``None`` if ``doc_id`` is not under it)."""
        return self.path / doc_id[len(self.prefix) :] if doc_id.startswith(self.prefix) else None


def walk_roots(paths: list[str | Path]) -> list[Root]:
    """The roots of a walk: each directory with its own name, each file with its directory's name.

    So an id never depends on the other paths of the command line: ``projA/README.md`` whether ``projA`` is
    walked alone or beside ``projB``, and a file given directly gets the id it has when its directory is
    walked. Two roots of one walk with the same name but different directories are an error.
    """
    roots: dict[str, Root] = {}
    for p in check_paths(paths):
        directory = p if p.is_dir() else p.parent
        root = Root(directory, directory.name or "root")
        if roots.setdefault(root.name, root).path != directory:
            raise InvalidInputError(
                f"two directories named {root.name!r} ({roots[root.name].path} and {directory}) would give the "
                "same ids: index them into separate collections, or one at a time from their parents"
            )
    return list(roots.values())


def walk_paths(
    paths: list[str | Path],
    stats: WalkStats | None = None,
    *,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    max_bytes: int = MAX_FILE_BYTES,
) -> Iterator[Document]:
    """Text files under ``paths`` (files or directories, walked recursively in sorted order).

    The walk happens now, and every listed file must be readable (:class:`InvalidInputError` otherwise), so
    a bad path fails before anything is written; the files are read lazily, as the iterator is consumed.
    ``doc_id`` is ``<directory name>/<path relative to it>`` (see :func:`walk_roots`).
    ``include``/``exclude`` are glob patterns matched against the path relative to the directory
    (``*`` crosses ``/``). Skips VCS and dependency directories, binary files (NUL byte or not UTF-8), files
    over ``max_bytes`` and files that vanish before they are read.
    """
    stats = stats if stats is not None else WalkStats()
    listed = list_files(paths, include=include, exclude=exclude)
    stats.listed = len(listed)
    return read_files(listed, stats, max_bytes)


def list_files(
    paths: list[str | Path], *, include: list[str] | None = None, exclude: list[str] | None = None
) -> list[tuple[Path, str]]:
    """The files :func:`walk_paths` would read, with their doc ids, in order; unreadable ones are an error."""
    roots = {r.path: r for r in walk_roots(paths)}
    listed, seen = [], set()
    for p in check_paths(paths):
        root = roots[p if p.is_dir() else p.parent]
        for file in _files(p):
            rel = file.relative_to(root.path).as_posix()
            if include and not any(fnmatch.fnmatchcase(rel, g) for g in include):
                continue
            if exclude and any(fnmatch.fnmatchcase(rel, g) for g in exclude):
                continue
            if not os.access(file, os.R_OK):
                raise InvalidInputError(f"cannot read {file}: permission denied")
            if (doc_id := root.prefix + rel) not in seen:  # a file given twice (as itself and in its directory)
                seen.add(doc_id)
                listed.append((file, doc_id))
    return listed


def vanished(roots: list[Root], doc_ids: list[str]) -> list[str]:
    """The ``doc_ids`` under ``roots`` whose files no longer exist (what ``index --prune`` deletes, given the
    ids a walk stored)."""
    gone = []
    for doc_id in doc_ids:
        for root in roots:
            file = root.file_of(doc_id)
            if file is not None:
                if not file.is_file():
                    gone.append(doc_id)
                break
    return gone


def read_files(listed: list[tuple[Path, str]], stats: WalkStats, max_bytes: int = MAX_FILE_BYTES) -> Iterator[Document]:
    """The documents of ``listed`` files (as :func:`list_files` gives them), skipping and counting in ``stats``
    binary, oversized and vanished files."""
    for file, doc_id in listed:
        try:
            doc = _read_file(file, doc_id, stats, max_bytes)
        except FileNotFoundError:
            stats.skipped_vanished += 1
            continue
        if doc is not None:
            stats.files += 1
            yield doc


def check_paths(paths: list[str | Path]) -> list[Path]:
    """``paths`` resolved; :class:`InvalidInputError` naming the first one that does not exist."""
    resolved = [Path(p).resolve() for p in paths]
    for p in resolved:
        if not p.exists():
            raise InvalidInputError(f"no such file or directory: {p}")
    return resolved


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


def _read_file(file: Path, doc_id: str, stats: WalkStats, max_bytes: int) -> Document | None:
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
    return Document(doc_id=doc_id, text=text, path=doc_id)
