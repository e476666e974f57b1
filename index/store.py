"""SQLite store of documents, chunks and their vectors: the collection's source of truth.

Every write is one transaction (WAL journal, ``synchronous=FULL``): after a crash a document is either
fully present, with all its chunks and vectors, or absent. Each write transaction bumps a generation
counter. Chunk row ids come from AUTOINCREMENT, so an id is never reused and can key the FAISS index; a
document's chunks are inserted together, so their ids form one contiguous range. Removed chunk ids are
kept as tombstones (``removed``) with the generation that removed them, so a FAISS index built at an
older generation catches up by adding the chunks with larger ids and dropping the tombstoned ones,
instead of being rebuilt; tombstones at or below ``tombstones_from`` have been pruned.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from longvec.chunking.types import Chunk
from longvec.index.lexical import (
    BM25_B,
    BM25_K1,
    FTS_TOKENIZE,
    PRUNE_MIN_MATCHES,
    bm25_idf,
    document_terms,
    phrases,
    proximity,
    unquoted,
)
from longvec.index.types import DOC_SYMBOL

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    content_hash TEXT NOT NULL,
    path TEXT,
    language TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    text TEXT NOT NULL,
    n_chunks INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    doc_id TEXT NOT NULL REFERENCES documents(doc_id) ON DELETE CASCADE,
    chunk_id INTEGER NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    n_tokens INTEGER NOT NULL,
    kind TEXT NOT NULL,
    language TEXT,
    symbol TEXT,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_by_doc ON chunks(doc_id);
CREATE TABLE IF NOT EXISTS removed (id INTEGER PRIMARY KEY, generation INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS removed_by_generation ON removed(generation);
"""
# The lexical index: one row of terms per chunk (rowid = chunk id), removed with its chunk by the trigger,
# so the two can never disagree after any committed transaction.
_LEXICAL_SCHEMA = (
    f"CREATE VIRTUAL TABLE IF NOT EXISTS chunk_terms USING fts5(terms, tokenize='{FTS_TOKENIZE}', detail=column)",
    "CREATE TRIGGER IF NOT EXISTS chunk_terms_gone AFTER DELETE ON chunks "
    "BEGIN DELETE FROM chunk_terms WHERE rowid = old.id; END",
)
_BACKFILL_ROWS = 2048
_BATCH_ROWS = 8192  # rows per read when streaming vectors


@dataclass(frozen=True)
class StoreState:
    """Where the store stands: its ``generation``, the largest chunk id ever given (``seq``), and the
    generation from which on tombstones are complete (``tombstones_from``)."""

    generation: int
    seq: int
    tombstones_from: int


@dataclass(frozen=True)
class StoredDocument:
    doc_id: str
    text: str
    content_hash: str
    path: str | None
    language: str | None
    metadata: dict[str, Any]
    n_chunks: int
    n_tokens: int


@dataclass(frozen=True)
class ChunkRow:
    id: int
    doc_id: str
    chunk_id: int
    start: int
    end: int
    symbol: str | None
    kind: str = "text"


@dataclass(frozen=True)
class DocumentWrite:
    """One document with its chunks and their vectors (row ``i`` of ``vectors`` belongs to ``chunks[i]``)."""

    doc_id: str
    text: str
    content_hash: str
    path: str | None
    language: str | None
    metadata: dict[str, Any]
    chunks: Sequence[Chunk]
    vectors: np.ndarray
    terms: Sequence[str] | None = None  # each chunk's lexical terms (``lexical.document_terms``)


# Chunk ids below this, or below 4 times the chunk count, keep their term counts in memory once read (an int32 array
# by id: at most 16 bytes per chunk); higher ids are read afresh for each query.
TERM_COUNTS_KEPT = 1 << 20
# Terms whose chunk counts are kept for term proximity's weights, at most (``Store._frequencies``).
FREQUENCIES_KEPT = 1 << 16
# One term of ``lexical.match_expression``: one quoted word (``Store._usable`` drops those FTS5 would split).
_QUOTED_TERM = re.compile(r'"[^"\s]+"')


def _marks(n: int) -> str:
    return ",".join("?" * n)


def _in_parts(values: Sequence[Any], size: int = 500) -> Iterator[list[Any]]:
    """``values`` in pieces small enough for one SQL ``IN (...)`` list."""
    for i in range(0, len(values), size):
        yield list(values[i : i + size])


def _varints(blob: bytes, n: int) -> list[int]:
    """The first ``n`` SQLite varints of ``blob`` (7 bits a byte, high bit set on all but the last; a ninth byte
    carries 8), fewer if it ends first."""
    out: list[int] = []
    value = used = 0
    for byte in blob:
        used += 1
        if used == 9:
            value, byte = (value << 8) | byte, 0
        else:
            value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            out.append(value)
            if len(out) == n:
                break
            value = used = 0
    return out


def _capped(scores: dict[int, float], docs: dict[int, str], limit: int, per_doc: int) -> list[tuple[int, float]]:
    """The best ``limit`` of ``scores`` (best first, ties by id), at most ``per_doc`` of them from one document;
    a chunk without a document in ``docs`` is left out, as a join with ``chunks`` would."""
    out: list[tuple[int, float]] = []
    taken: dict[str, int] = {}
    for i, score in sorted(scores.items(), key=lambda item: (-item[1], item[0])):
        if (doc := docs.get(i)) is not None and taken.get(doc, 0) < per_doc:
            taken[doc] = taken.get(doc, 0) + 1
            out.append((i, score))
            if len(out) == limit:
                break
    return out


class Store:
    """Documents, chunks and vectors in one SQLite file. Not thread-safe: callers hold the collection lock."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        uri = f"file:{path}?mode={'ro' if readonly else 'rwc'}"
        self._db = sqlite3.connect(uri, uri=True, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA foreign_keys = ON")
        self._next_generation: int | None = None
        self._closed = False
        self.pruned = True  # lexical_search: score only the matches that can enter the shortlist (else all)
        self._term_counts = np.zeros(0, np.int32)  # terms of each chunk by id (-1: not read yet); never change
        self._frequency: dict[str, int] = {}  # chunks each term is in, as of ``_frequency_version``
        self._frequency_version: object = None
        if not readonly:
            self._db.execute("PRAGMA journal_mode = WAL")
            self._db.execute("PRAGMA synchronous = FULL")
            self._db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):  # not executescript: that would commit at once
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute("INSERT OR IGNORE INTO meta(key, value) VALUES ('tombstones_from', '0')")
            for statement in _LEXICAL_SCHEMA:
                self._db.execute(statement)
            self._db.execute("COMMIT")
            self._complete_lexical()

    def has_lexical(self) -> bool:
        """Whether the lexical index holds every chunk (a store made before it existed has none until it is
        opened for writing once)."""
        return self._db.execute("SELECT 1 FROM meta WHERE key = 'lexical'").fetchone() is not None

    def _complete_lexical(self) -> None:
        """Give every stored chunk its lexical row: all of them for a store made before the lexical index
        existed, or those an older longvec wrote without one. Checked on every writable open (two counts);
        filled in batches of committed transactions. Old chunks are indexed by their span's text (``substr``
        counts characters, as Python offsets do); their embedded context, if any, was not stored."""
        (chunks,) = self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()
        (rows,) = self._db.execute("SELECT COUNT(*) FROM chunk_terms").fetchone()
        if chunks == rows and self.has_lexical():
            return
        if chunks != rows:
            log.warning("building the lexical index of %d stored chunks (once)", chunks - rows)
        after = 0
        while batch := self._db.execute(
            'SELECT c.id, substr(d.text, c.start + 1, c."end" - c.start) FROM chunks c '
            "JOIN documents d ON d.doc_id = c.doc_id WHERE c.id > ? "
            "AND c.id NOT IN (SELECT rowid FROM chunk_terms WHERE rowid > ?) ORDER BY c.id LIMIT ?",
            (after, after, _BACKFILL_ROWS),
        ).fetchall():
            with self.transaction(bump=False) as db:
                db.executemany(
                    "INSERT INTO chunk_terms(rowid, terms) VALUES (?, ?)", [(i, document_terms(t)) for i, t in batch]
                )
            after = int(batch[-1][0])
        with self.transaction(bump=False) as db:
            db.execute("INSERT OR REPLACE INTO meta(key, value) VALUES ('lexical', '1')")

    def close(self) -> None:
        if not self._closed:
            self._db.close()
            self._closed = True

    @contextmanager
    def transaction(self, *, bump: bool = True) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` (rolled back on error); bumps the generation unless ``bump=False``."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._next_generation = self.generation() + 1
            yield self._db
            if bump:
                self.set_meta(self._db, "generation", str(self._next_generation))
            self._db.execute("COMMIT")
        except BaseException:
            if self._db.in_transaction:  # SQLite may have rolled back by itself (disk full, I/O error)
                self._db.execute("ROLLBACK")
            raise
        finally:
            self._next_generation = None

    @contextmanager
    def snapshot(self) -> Iterator[StoreState]:
        """A read transaction: every read inside sees the store as of one generation, whatever a writer commits."""
        assert not self._db.in_transaction, "snapshots do not nest in transactions"
        self._db.execute("BEGIN")
        try:
            yield self.state()
        finally:
            if self._db.in_transaction:
                self._db.execute("COMMIT")

    def state(self) -> StoreState:
        rows = dict(self._db.execute("SELECT key, value FROM meta WHERE key IN ('generation', 'tombstones_from')"))
        seq = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'chunks'").fetchone()
        return StoreState(
            int(rows.get("generation", 0)), int(seq[0]) if seq else 0, int(rows.get("tombstones_from", 0))
        )

    def generation(self) -> int:
        return int(self.meta("generation") or 0)

    def hashes(self, doc_ids: Sequence[str]) -> dict[str, tuple[str, str | None, str | None, str]]:
        """``doc_id -> (content_hash, path, language, metadata_json)`` for the stored ones among ``doc_ids``."""
        out = {}
        for part in _in_parts(doc_ids):
            marks = _marks(len(part))
            sql = f"SELECT doc_id, content_hash, path, language, metadata FROM documents WHERE doc_id IN ({marks})"
            for doc_id, h, path, lang, meta in self._db.execute(sql, part):
                out[doc_id] = (h, path, lang, meta)
        return out

    def write(self, db: sqlite3.Connection, doc: DocumentWrite) -> list[int]:
        """Insert ``doc`` (inside an open transaction, after :meth:`delete`); returns the new chunk row ids."""
        db.execute(
            "INSERT INTO documents VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                doc.doc_id,
                doc.content_hash,
                doc.path,
                doc.language,
                json.dumps(doc.metadata, sort_keys=True),
                doc.text,
                len(doc.chunks),
                sum(c.n_tokens for c in doc.chunks if c.symbol != DOC_SYMBOL),  # a document vector repeats text
            ),
        )
        ids = []
        vectors = np.ascontiguousarray(doc.vectors, dtype=np.float32)
        for c, v in zip(doc.chunks, vectors, strict=True):
            cur = db.execute(
                'INSERT INTO chunks (doc_id, chunk_id, start, "end", n_tokens, kind, language, symbol, vector) '
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (doc.doc_id, c.chunk_id, c.start, c.end, c.n_tokens, c.kind, c.language, c.symbol, v.tobytes()),
            )
            ids.append(int(cur.lastrowid))  # type: ignore[arg-type]
        terms = doc.terms if doc.terms is not None else [document_terms(c.embed_text) for c in doc.chunks]
        db.executemany("INSERT INTO chunk_terms(rowid, terms) VALUES (?, ?)", zip(ids, terms, strict=True))
        return ids

    def update_fields(self, db: sqlite3.Connection, doc_id: str, path: str | None, metadata: dict[str, Any]) -> None:
        db.execute(
            "UPDATE documents SET path = ?, metadata = ? WHERE doc_id = ?",
            (path, json.dumps(metadata, sort_keys=True), doc_id),
        )

    def delete(self, db: sqlite3.Connection, doc_id: str) -> int:
        """Delete ``doc_id`` and its chunks (inside an open transaction), tombstoning the chunk ids.

        Returns the number of chunks removed.
        """
        assert self._next_generation is not None, "delete runs inside transaction()"
        cur = db.execute(
            "INSERT INTO removed (id, generation) SELECT id, ? FROM chunks WHERE doc_id = ?",
            (self._next_generation, doc_id),
        )
        db.execute("DELETE FROM documents WHERE doc_id = ?", (doc_id,))
        return int(cur.rowcount)

    def removed_since(self, generation: int) -> np.ndarray:
        """Ids of the chunks removed after ``generation`` (valid while ``generation >= tombstones_from``)."""
        rows = self._db.execute("SELECT id FROM removed WHERE generation > ?", (generation,)).fetchall()
        return np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))

    def prune_removed(self, upto: int) -> None:
        """Forget the tombstones of generations ``<= upto`` (a saved FAISS index reflects them).

        ``tombstones_from`` moves only to the newest generation actually forgotten, so an index at an older
        generation that had no removals since can still catch up instead of reloading.
        """
        with self.transaction(bump=False) as db:
            (newest,) = db.execute("SELECT MAX(generation) FROM removed WHERE generation <= ?", (upto,)).fetchone()
            if newest is not None:
                db.execute("DELETE FROM removed WHERE generation <= ?", (newest,))
                db.execute("UPDATE meta SET value = ? WHERE key = 'tombstones_from'", (str(newest),))

    def content_hashes(self) -> dict[str, str]:
        """``doc_id -> content_hash`` of every stored document."""
        return dict(self._db.execute("SELECT doc_id, content_hash FROM documents"))

    def doc_ids(self, prefix: str = "", *, walked: bool = False) -> list[str]:
        """Stored doc_ids starting with ``prefix``, sorted (a range scan of the primary key); with ``walked``,
        only those that came from a directory walk (their ``path`` is their id)."""
        only = " AND path = doc_id" if walked else ""
        sql = f"SELECT doc_id FROM documents WHERE doc_id >= ? AND doc_id < ?{only} ORDER BY doc_id"
        return [r[0] for r in self._db.execute(sql, (prefix, prefix + "\U0010ffff"))]

    def document(self, doc_id: str) -> StoredDocument | None:
        row = self._db.execute(
            "SELECT doc_id, text, content_hash, path, language, metadata, n_chunks, n_tokens "
            "FROM documents WHERE doc_id = ?",
            (doc_id,),
        ).fetchone()
        if row is None:
            return None
        return StoredDocument(row[0], row[1], row[2], row[3], row[4], json.loads(row[5]), row[6], row[7])

    def chunk_rows(self, ids: Sequence[int]) -> dict[int, ChunkRow]:
        out = {}
        for part in _in_parts([int(x) for x in ids]):
            columns = 'id, doc_id, chunk_id, start, "end", symbol, kind'
            sql = f"SELECT {columns} FROM chunks WHERE id IN ({_marks(len(part))})"
            for row in self._db.execute(sql, part):
                out[row[0]] = ChunkRow(*row)
        return out

    def lexical_search(self, expression: str, limit: int, per_doc: int) -> list[tuple[int, float]]:
        """``(chunk id, BM25 score)`` of the best ``limit`` chunks for an FTS5 ``MATCH`` expression (an ``OR`` of
        quoted terms, ``lexical.match_expression``), best first, ties by id, at most ``per_doc`` of them from any
        one document (FTS5's ``bm25()`` is lower-is-better: negated here).

        Scoring a match costs far more than finding it (``bm25()`` reads each matched row's terms again to count
        them), and a prose query's words together match a large share of the chunks. So only the matches that can
        enter the shortlist are scored (:meth:`_lexical_search_pruned`). The result is the same as scoring every
        match, to the last bit of every score: the scores are ``bm25()``'s own, and the steps read one snapshot
        of the store. Not inside this store's own write :meth:`transaction`: there FTS5 keeps its totals in memory
        until the commit, so the bounds would be computed from stale ones; every match is scored instead.
        ``pruned = False`` on the store always scores every match (what benchmarks compare against)."""
        with self._reading():
            usable = self._usable(expression)
            if usable is None:
                return []
            writing = self._next_generation is not None
            found = self._lexical_search_pruned(usable, limit, per_doc) if self.pruned and not writing else None
            return found if found is not None else self._lexical_search_all(usable, limit, per_doc)

    def _usable(self, expression: str) -> str | None:
        """``expression`` without the terms FTS5 would read as several tokens, which on a ``detail=column`` table
        is an error ("phrase queries are not supported"): a word holding a character that Python counts as a
        letter and FTS5's older Unicode tables do not (U+19B0). Stored text is split there alike, so such a
        term could only have matched in pieces. ``None`` if no term is left."""
        if expression.isascii():  # ASCII terms are runs of letters and digits: one token each
            return expression
        kept = [t for t in phrases(expression) if t.isascii() or self._one_token(t)]
        return " OR ".join(kept) or None

    def _one_token(self, term: str) -> bool:
        try:
            self._db.execute("SELECT 1 FROM chunk_terms WHERE chunk_terms MATCH ? LIMIT 1", (term,)).fetchall()
        except sqlite3.OperationalError:
            return False
        return True

    @contextmanager
    def _reading(self) -> Iterator[None]:
        """One read transaction around the statements inside, unless one is already open."""
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN")
        try:
            yield
        finally:
            if self._db.in_transaction:
                self._db.execute("COMMIT")

    def _lexical_search_all(self, expression: str, limit: int, per_doc: int) -> list[tuple[int, float]]:
        """:meth:`lexical_search` by scoring every chunk that ``expression`` matches."""
        return self._db.execute(
            "WITH hits AS (SELECT rowid AS id, -bm25(chunk_terms) AS s FROM chunk_terms WHERE chunk_terms MATCH ?), "
            "ranked AS (SELECT h.id, h.s, row_number() OVER (PARTITION BY c.doc_id ORDER BY h.s DESC, h.id) AS r "
            "FROM hits h JOIN chunks c ON c.id = h.id) "
            "SELECT id, s FROM ranked WHERE r <= ? ORDER BY s DESC, id LIMIT ?",
            (expression, per_doc, limit),
        ).fetchall()

    def _lexical_search_pruned(self, expression: str, limit: int, per_doc: int) -> list[tuple[int, float]] | None:
        """:meth:`lexical_search` from the matches that can enter the shortlist, or ``None`` where it does not pay
        or cannot be shown: an empty shortlist asked for, one term (every match shares its idf: bounds prune little)
        or an expression that is not an ``OR`` of quoted terms, fewer than ``PRUNE_MIN_MATCHES`` matches, FTS5
        tables not as expected (:meth:`_score_bounds`), too few matches to fill the shortlist, or more than half of
        them left to score.

        A shortlist of the matches with the highest lower bounds, scored by ``bm25()``, gives a score the final
        shortlist's last chunk reaches at least: taking the best chunks in order, at most ``per_doc`` per
        document, yields the best possible score at every rank (a greedy choice under a per-document cap, a
        matroid). Every match whose upper bound reaches that score is then scored too; the rest cannot enter
        (MaxScore's idea, Turtle and Flood 1995, with bounds per chunk instead of per term)."""
        terms = phrases(expression)
        if limit < 1 or len(terms) < 2 or not all(_QUOTED_TERM.fullmatch(t) for t in terms):
            return None
        bounds = self._score_bounds(terms)
        if bounds is None:
            return None
        ids, low, high = bounds
        first = ids[np.argsort(-low, kind="stable")[: 4 * limit]].tolist()
        scores = self._bm25_of(expression, first)
        docs = {i: r.doc_id for i, r in self.chunk_rows(first).items()}
        shortlist = _capped(scores, docs, limit, per_doc)
        if len(shortlist) < limit:  # the best of these fill no shortlist: no bound to prune with
            return None
        rest = [i for i in ids[high * (1 + 1e-9) >= shortlist[-1][1]].tolist() if i not in scores]  # 1e-9: rounding
        if len(rest) > len(ids) // 2:  # little to prune: one statement scoring every match is cheaper
            return None
        scores.update(self._bm25_of(expression, rest))
        docs.update((i, r.doc_id) for i, r in self.chunk_rows(rest).items())
        return _capped(scores, docs, limit, per_doc)

    def _score_bounds(self, terms: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """The chunks that any of the quoted ``terms`` matches (sorted ids) with a lower and an upper bound of the
        BM25 score ``bm25()`` gives each for the ``OR`` of ``terms``; ``None`` below ``PRUNE_MIN_MATCHES``
        (term, chunk) matches, or where FTS5's totals or a match's term count cannot be read.

        Which chunks each term matches is cheap to read (no scoring). A term's part of a chunk's score,
        ``idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * terms / average terms))``, grows with its count ``tf``,
        which is at least 1 and at most the chunk's number of terms: each term once gives the lower bound, each
        as often as the chunk has terms the upper one."""
        matched = [self._matching(t) for t in terms]
        if sum(len(m) for m in matched) < PRUNE_MIN_MATCHES:
            return None
        averages = self._fts_averages()
        if averages is None:
            return None
        rows, total = averages
        ids, at = np.unique(np.concatenate(matched), return_inverse=True)
        idf = np.concatenate([np.full(len(m), bm25_idf(rows, len(m))) for m in matched])
        weight = np.bincount(at, weights=idf, minlength=len(ids)) * (BM25_K1 + 1)  # sum of idf * (k1 + 1)
        length = self._chunk_term_counts(ids, rows).astype(np.float64)
        if (length < 1).any():  # a match without a term count: FTS5's tables are not as expected
            return None
        norm = BM25_K1 * (1 - BM25_B + BM25_B * length * rows / total)
        return ids, weight / (1 + norm), weight * length / (length + norm)

    def _matching(self, term: str) -> np.ndarray:
        """Ids of the chunks that FTS5 matches ``term`` in (a quoted term: one token). Read as one comma-separated
        string: a Python object per id would cost several times as much for a common term."""
        sql = "SELECT group_concat(rowid) FROM chunk_terms WHERE chunk_terms MATCH ?"
        (found,) = self._db.execute(sql, (term,)).fetchone()
        return np.fromstring(found, dtype=np.int64, sep=",") if found else np.zeros(0, np.int64)

    def _fts_averages(self) -> tuple[int, int] | None:
        """FTS5's row count and total number of terms as of the last commit (its "averages" record, which
        ``bm25()`` reads; within a write transaction FTS5 holds newer ones in memory), or ``None`` where the record
        is missing or not as FTS5 has always written it (two varints first)."""
        row = self._db.execute("SELECT block FROM chunk_terms_data WHERE id = 1").fetchone()
        values = _varints(row[0], 2) if row is not None and isinstance(row[0], bytes) else []
        return (values[0], values[1]) if len(values) == 2 and values[0] > 0 and values[1] > 0 else None

    def _chunk_term_counts(self, ids: np.ndarray, rows: int) -> np.ndarray:
        """Number of terms of each chunk of ``ids`` (sorted; FTS5's ``docsize``), -1 where it has none. A chunk id
        is never reused and its terms are written once, so counts are kept once read, in an array by id, unless
        ids run far beyond the ``rows`` chunks there are (a collection replaced many times over)."""
        top, kept = (int(ids[-1]) if len(ids) else -1), max(TERM_COUNTS_KEPT, 4 * rows)
        if top >= kept:
            found = dict(self._read_term_counts(ids.tolist()))
            return np.array([found.get(i, -1) for i in ids.tolist()], np.int64)
        if top >= len(self._term_counts):
            grown = np.full(max(top + 1, min(2 * len(self._term_counts), kept)), -1, np.int32)
            grown[: len(self._term_counts)] = self._term_counts
            self._term_counts = grown
        for i, n in self._read_term_counts(ids[self._term_counts[ids] < 0].tolist()):
            self._term_counts[i] = n
        return self._term_counts[ids]

    def _read_term_counts(self, ids: list[int]) -> Iterator[tuple[int, int]]:
        for part in _in_parts(ids):
            for i, size in self._db.execute(
                f"SELECT id, sz FROM chunk_terms_docsize WHERE id IN ({_marks(len(part))})", part
            ):
                yield i, (_varints(size, 1) or [-1])[0]

    def _bm25_of(self, expression: str, ids: Sequence[int]) -> dict[int, float]:
        """``-bm25()`` for ``expression`` of the chunks among ``ids`` that it matches. ``+rowid`` keeps SQLite from
        handing the id list to FTS5, which would run the whole query again for every id."""
        out: dict[int, float] = {}
        # Each statement pays for bm25()'s idf pass once: as few as the bound on parameters allows.
        size = min(8192, self._db.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER) - 1)
        for part in _in_parts([int(x) for x in ids], size):
            sql = (
                "SELECT rowid, -bm25(chunk_terms) FROM chunk_terms "
                f"WHERE chunk_terms MATCH ? AND +rowid IN ({_marks(len(part))})"
            )
            out.update(self._db.execute(sql, [expression, *part]).fetchall())
        return out

    def lexical_scores(self, expression: str, ids: Sequence[int]) -> dict[int, float]:
        """BM25 score (as in :meth:`lexical_search`) of each chunk among ``ids`` that ``expression`` matches."""
        usable = self._usable(expression)
        return {} if usable is None else self._bm25_of(usable, ids)

    def proximity_scores(self, expression: str, ids: Sequence[int]) -> dict[int, float]:
        """The term-proximity score (``lexical.proximity``) of each chunk among ``ids`` that holds two different
        terms of ``expression`` (an ``OR`` of quoted terms, ``lexical.match_expression``) near each other, weighed
        by their BM25 idf in this store; the others score 0 and are left out. Read from the terms FTS5 stores for
        each chunk, which are not stemmed: terms are compared as :func:`lexical.terms` writes them (lowercased
        words and identifier parts), so "telescopes" beside "velvet" does not count for "velvet telescope", while
        BM25, which FTS5 stems, matches both."""
        found = phrases(expression)
        if len(found) < 2 or not ids:
            return {}
        with self._reading():
            averages = self._fts_averages()
            rows = (
                averages[0]
                if averages is not None
                else self._db.execute("SELECT count(*) FROM chunk_terms").fetchone()[0]
            )
            frequency = self._frequencies(found, (self.generation(), averages))
            weights = {t: bm25_idf(rows, n) for t, n in zip(unquoted(expression), frequency, strict=True) if n}
            if len(weights) < 2:
                return {}
            out: dict[int, float] = {}
            for part in _in_parts([int(x) for x in ids]):
                sql = f"SELECT rowid, terms FROM chunk_terms WHERE rowid IN ({_marks(len(part))})"
                for i, stored in self._db.execute(sql, part):
                    if (score := proximity(weights, stored.split())) > 0:
                        out[i] = score
            return out

    def _frequencies(self, found: list[str], version: object) -> list[int]:
        """How many chunks FTS5 matches each of the quoted terms ``found`` in (0 for a term it would read as several
        tokens, see :meth:`_usable`). Counting a common term walks its whole list of matches, so counts are kept
        while ``version`` (the generation and FTS5's totals, which every write of terms changes) stays the same."""
        if self._next_generation is not None:  # inside this store's own write: counts there are not kept
            version = object()
        if self._frequency_version != version or len(self._frequency) > FREQUENCIES_KEPT:
            self._frequency, self._frequency_version = {}, version
        for term in found:
            if term not in self._frequency:
                usable = self._usable(term)
                sql = "SELECT count(*) FROM chunk_terms WHERE chunk_terms MATCH ?"
                self._frequency[term] = self._db.execute(sql, (usable,)).fetchone()[0] if usable is not None else 0
        return [self._frequency[t] for t in found]

    def vectors(self, ids: Sequence[int], dim: int) -> np.ndarray:
        """The stored vectors of chunks ``ids``, in that order (:class:`KeyError` for an id not stored)."""
        found: dict[int, bytes] = {}
        for part in _in_parts([int(x) for x in ids]):
            sql = f"SELECT id, vector FROM chunks WHERE id IN ({_marks(len(part))})"
            found.update(self._db.execute(sql, part).fetchall())
        return self._vectors([(found[int(i)],) for i in ids], dim)

    def sample_vectors(self, n: int, dim: int, *, seed: int = 0) -> np.ndarray:
        """``n`` stored chunk vectors drawn uniformly without replacement (all of them if there are fewer),
        deterministic for a ``seed`` and a store."""
        ids = np.fromiter((r[0] for r in self._db.execute("SELECT id FROM chunks")), dtype=np.int64)
        if len(ids) > n:
            ids = np.sort(np.random.default_rng(seed).choice(ids, n, replace=False))
        return self.vectors(ids.tolist(), dim)

    def range_vectors(
        self, ranges: Sequence[tuple[int, int]], dim: int, max_id: int, *, batch: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids, vectors)`` of the chunks with ids in the inclusive ``ranges`` (each a document's, see
        :meth:`chunk_ranges`) and id <= ``max_id``, in id order, at most ``batch`` rows at a time: memory stays at
        one batch however many chunks the documents have."""
        batch = batch or _BATCH_ROWS
        spans = [(first, min(last, max_id)) for first, last in sorted(ranges) if first <= min(last, max_id)]
        wanted = np.concatenate([np.arange(a, b + 1, dtype=np.int64) for a, b in spans]) if spans else []
        for start in range(0, len(wanted), batch):
            ids = wanted[start : start + batch]  # a document's chunk ids are contiguous: every one is stored
            yield ids, self.vectors(ids.tolist(), dim)  # primary-key lookups, not a scan

    def chunk_ranges(self, doc_ids: Sequence[str]) -> list[tuple[int, int]]:
        """``(first, last)`` chunk id of each stored document among ``doc_ids`` (its chunks are contiguous)."""
        out: list[tuple[int, int]] = []
        for part in _in_parts(doc_ids):
            sql = f"SELECT MIN(id), MAX(id) FROM chunks WHERE doc_id IN ({_marks(len(part))}) GROUP BY doc_id"
            out += [(int(a), int(b)) for a, b in self._db.execute(sql, part)]
        return out

    def _batches(self, columns: str, after: int, batch: int | None) -> Iterator[list[tuple[Any, ...]]]:
        """Rows ``(id, *columns)`` of the chunks with id > ``after`` in id order, ``batch`` at a time (keyset
        pagination on the primary key: memory stays at one batch whatever the store's size)."""
        batch = batch or _BATCH_ROWS
        while rows := self._db.execute(
            f"SELECT id, {columns} FROM chunks WHERE id > ? ORDER BY id LIMIT ?", (after, batch)
        ).fetchall():
            yield rows
            after = int(rows[-1][0])

    @staticmethod
    def _vectors(rows: list[tuple[Any, ...]], dim: int) -> np.ndarray:
        """The last column of ``rows`` (float32 blobs) as an (n, dim) array."""
        return np.frombuffer(b"".join(r[-1] for r in rows), dtype=np.float32).reshape(len(rows), dim)

    def iter_vectors(
        self, dim: int, *, after: int = 0, batch: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(ids, vectors)`` of the chunks with id > ``after``, in id order, ``batch`` rows at a time."""
        for rows in self._batches("vector", after, batch):
            yield np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)), self._vectors(rows, dim)

    def iter_chunks(
        self, dim: int, *, after: int = 0, batch: int | None = None
    ) -> Iterator[tuple[np.ndarray, list[str], np.ndarray, np.ndarray]]:
        """``(ids, doc_ids, n_tokens, vectors)`` of the chunks with id > ``after``, like :meth:`iter_vectors`."""
        for rows in self._batches("doc_id, n_tokens, vector", after, batch):
            ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
            tokens = np.fromiter((r[2] for r in rows), dtype=np.int64, count=len(rows))
            yield ids, [r[1] for r in rows], tokens, self._vectors(rows, dim)

    def chunk_table(self, dim: int) -> tuple[np.ndarray, list[str], np.ndarray, np.ndarray]:
        """``(id, doc_id, n_tokens, vector)`` of every chunk as columns, in id order."""
        (n,) = self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()
        ids = np.empty(n, dtype=np.int64)
        tokens = np.empty(n, dtype=np.int64)
        vectors = np.empty((n, dim), dtype=np.float32)
        doc_ids: list[str] = []
        for i, (cid, doc_id, n_tok, blob) in enumerate(
            self._db.execute("SELECT id, doc_id, n_tokens, vector FROM chunks ORDER BY id")
        ):
            ids[i], tokens[i] = cid, n_tok
            vectors[i] = np.frombuffer(blob, dtype=np.float32)
            doc_ids.append(doc_id)
        return ids, doc_ids, tokens, vectors

    def meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, db: sqlite3.Connection, key: str, value: str) -> None:
        """Set ``key`` inside an open transaction (it commits with what the transaction writes)."""
        db.execute(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def rewrite_vectors(
        self, db: sqlite3.Connection, dim: int, transform: Callable[[np.ndarray], np.ndarray], batch: int | None = None
    ) -> int:
        """Replace every chunk vector ``v`` by ``transform(v)`` (a batch of rows at a time) inside an open
        transaction; returns how many. Every FAISS index of an older generation is then out of date in place
        (same ids, new vectors), so the tombstones are reset: ``tombstones_from`` becomes this transaction's
        generation, which makes every reader rebuild instead of catching up."""
        assert self._next_generation is not None, "rewrite_vectors runs inside transaction()"
        n, after = 0, 0
        while rows := db.execute(
            "SELECT id, vector FROM chunks WHERE id > ? ORDER BY id LIMIT ?", (after, batch or _BATCH_ROWS)
        ).fetchall():
            new = np.ascontiguousarray(transform(self._vectors(rows, dim)), dtype=np.float32)
            updates = [(v.tobytes(), r[0]) for v, r in zip(new, rows, strict=True)]
            db.executemany("UPDATE chunks SET vector = ? WHERE id = ?", updates)
            n, after = n + len(rows), int(rows[-1][0])
        db.execute("DELETE FROM removed")
        self.set_meta(db, "tombstones_from", str(self._next_generation))
        return n

    def counts(self) -> dict[str, int]:
        docs, tokens = self._db.execute("SELECT COUNT(*), COALESCE(SUM(n_tokens), 0) FROM documents").fetchone()
        (chunks,) = self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()
        return {"documents": int(docs), "chunks": int(chunks), "tokens": int(tokens)}
