"""Batch indexing on a Ray cluster: inputs cut into parts, chunked and encoded by an actor pool, stored from shards.

``longvec index --engine ray`` (or :func:`index_with_ray`) runs in three steps:

1. **Plan** (this process): the inputs are cut into *parts* of about ``part_bytes``: byte ranges of JSONL files
   cut at line ends, row ranges of parquet files, groups of walked files. Nothing is parsed yet.
2. **Encode** (the cluster): a Ray Dataset of the parts goes through ``map_batches`` over an actor pool; each
   actor loads the collection's model once (:class:`~longvec.index.encoding.DocumentEncoder`, the code
   ``Collection.add`` runs) and turns one part at a time into one parquet *shard* (documents, their chunks, and
   their chunk vectors in the model's space), written under a temporary name and renamed, so a shard on disk is
   whole. A part that fails is retried in its actor; an actor that dies is restarted by Ray and its part run again.
3. **Store** (this process): the shards are read in input order and stored with ``Collection.add_encoded``, the
   collection's own write path (store transactions, lexical terms, the stored vector space, the FAISS index).

A run that stops (killed, or a part that kept failing) resumes when the same command runs again: parts whose
shard is on disk are not encoded again. The shards are deleted once the collection holds them.

Ray and pyarrow are imported from here only: ``pip install 'longvec[ray]'``. On a cluster of several machines the
inputs and the shard directory must be on a filesystem every node sees (the same path), and every node needs
longvec and the model installed (see docs/SCALING.md).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from longvec.chunking import Chunk
from longvec.embedder import EmbedderConfig
from longvec.index.collection import Collection, EncodedDocument
from longvec.index.encoding import DocumentEncoder, encoding_differences
from longvec.index.errors import InvalidInputError, LongvecError, ModelMismatchError, RayRunError
from longvec.index.manifest import Manifest
from longvec.index.sources import (
    WalkStats,
    jsonl_parts,
    list_files,
    parquet_parts,
    read_files,
    read_jsonl,
    read_parquet,
)
from longvec.index.types import AddResult, Document
from longvec.index.vectors import write_json_atomic

log = logging.getLogger(__name__)

PART_BYTES = 1 << 20  # about 1 MiB of input per part: some 250k tokens, seconds to minutes of one actor's time
MAX_PART_FILES = 1000
RETRIES = 3
_ENCODE_DOCS = 64  # documents per model call inside a part (bounds an actor's memory)
_RUN_FILE = "run.json"


@dataclass(frozen=True)
class Part:
    """A piece of the input: a byte range of a JSONL file (``start``, ``stop``, ``line``: its first line's number),
    a row range of a parquet file, or a list of walked ``files`` (``[path, doc_id]``)."""

    index: int
    kind: str  # "jsonl" | "parquet" | "files"
    source: str = ""
    start: int = 0
    stop: int = 0
    line: int = 1
    files: list[list[str]] = field(default_factory=list)

    def documents(self, stats: WalkStats) -> Iterator[Document]:
        if self.kind == "jsonl":
            return read_jsonl(self.source, self.start, self.stop, self.line)
        if self.kind == "parquet":
            return read_parquet(self.source, self.start, self.stop)
        return read_files([(Path(f), doc_id) for f, doc_id in self.files], stats)


def plan_parts(
    inputs: list[Path],
    paths: list[Path],
    *,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    part_bytes: int = PART_BYTES,
) -> list[Part]:
    """The parts of a run, in input order: ``inputs`` (JSONL, or parquet by the ``.parquet`` suffix), then the
    files walked under ``paths`` (listed now: a path that does not exist or cannot be read is an error here)."""
    if part_bytes < 1:
        raise InvalidInputError(f"part size must be positive, got {part_bytes} bytes")
    parts: list[Part] = []
    for source in inputs:
        if not source.is_file():
            raise InvalidInputError(f"no such file: {source}")
        name = str(source.resolve())
        if name.endswith(".parquet"):
            for start, stop in parquet_parts(source, part_bytes):  # an unreadable file is a clear error here
                parts.append(Part(len(parts), "parquet", name, start, stop))
        else:
            for start, stop, line in jsonl_parts(source, part_bytes):
                parts.append(Part(len(parts), "jsonl", name, start, stop, line))
    group: list[list[str]] = []
    size = 0
    for file, doc_id in list_files(list(paths), include=include, exclude=exclude) if paths else []:
        group.append([str(file), doc_id])
        size += file.stat().st_size
        if size >= part_bytes or len(group) >= MAX_PART_FILES:
            parts.append(Part(len(parts), "files", files=group))
            group, size = [], 0
    if group:
        parts.append(Part(len(parts), "files", files=group))
    return parts


def _run_key(parts: list[Part], encoding: dict[str, Any]) -> str:
    """What a run's shards depend on: the parts, each source file's size and modification time, and the encoding."""
    sources = sorted({p.source for p in parts if p.source} | {f for p in parts for f, _ in p.files})
    stamps = []
    for source in sources:
        try:
            st = os.stat(source)
            stamps.append([source, st.st_size, st.st_mtime_ns])
        except FileNotFoundError:
            stamps.append([source, None, None])
    blob = json.dumps([[asdict(p) for p in parts], stamps, encoding], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


# -- shards ------------------------------------------------------------------------------------------------

_CHUNK = pa.struct(
    [
        ("start", pa.int64()),
        ("end", pa.int64()),
        ("n_tokens", pa.int32()),
        ("kind", pa.string()),
        ("language", pa.string()),
        ("symbol", pa.string()),
        ("context", pa.string()),
    ]
)
SHARD_SCHEMA = pa.schema(
    [
        ("part", pa.int32()),
        ("row", pa.int32()),  # the document's place in its part: with ``part``, its place in the input
        ("doc_id", pa.string()),
        ("text", pa.string()),
        ("path", pa.string()),
        ("language", pa.string()),  # as given (None: detected from the path)
        ("metadata", pa.string()),  # JSON
        ("encoded", pa.bool_()),  # False: skipped by the actor (empty, or unchanged against the collection)
        ("chunks", pa.list_(_CHUNK)),
        ("vectors", pa.binary()),  # float32 little-endian, len(chunks) x dim, in the model's space
    ]
)


_SHARD = re.compile(r"part-(\d{6,})\.parquet")


def shard_name(part: int) -> str:
    return f"part-{part:06d}.parquet"


def _shard_table(part: int, rows: list[tuple[Document, list[Chunk] | None, np.ndarray | None]], info: dict) -> pa.Table:
    columns: dict[str, list[Any]] = {name: [] for name in SHARD_SCHEMA.names}
    for i, (doc, chunks, vectors) in enumerate(rows):
        columns["part"].append(part)
        columns["row"].append(i)
        columns["doc_id"].append(doc.doc_id)
        columns["text"].append(doc.text)
        columns["path"].append(doc.path)
        columns["language"].append(doc.language)
        columns["metadata"].append(json.dumps(doc.metadata, sort_keys=True))
        columns["encoded"].append(chunks is not None)
        columns["chunks"].append(
            None
            if chunks is None
            else [
                {
                    "start": c.start,
                    "end": c.end,
                    "n_tokens": c.n_tokens,
                    "kind": c.kind,
                    "language": c.language,
                    "symbol": c.symbol,
                    "context": c.context,
                }
                for c in chunks
            ]
        )
        columns["vectors"].append(None if vectors is None else np.ascontiguousarray(vectors, "<f4").tobytes())
    schema = SHARD_SCHEMA.with_metadata({"longvec": json.dumps(info, sort_keys=True)})
    return pa.table(columns, schema=schema)


def write_shard(directory: Path, part: int, table: pa.Table) -> Path:
    """``table`` as ``directory/part-NNNNNN.parquet``, whole or not at all (temporary name, fsync, rename)."""
    final = directory / shard_name(part)
    tmp = directory / f".{final.name}.{os.getpid()}.tmp"
    pq.write_table(table, tmp)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, final)
    return final


def _shard_documents(
    path: Path, encoding: dict[str, Any], wanted: dict[str, tuple[int, int]]
) -> Iterator[EncodedDocument]:
    """The documents of one shard that ``wanted`` (``doc_id -> (part, row)`` of its last occurrence) keeps;
    :class:`ModelMismatchError` unless the shard was encoded as ``encoding`` (``DocumentEncoder.info``) says."""
    f = pq.ParquetFile(path)
    made = json.loads((f.schema_arrow.metadata or {}).get(b"longvec", b"{}"))
    if differ := encoding_differences(made, encoding):
        raise ModelMismatchError(f"shard {path} was encoded with other settings ({', '.join(differ)}): remove it")
    dim = encoding["dim"]
    for batch in f.iter_batches(batch_size=256):
        for r in batch.to_pylist():
            if wanted.get(r["doc_id"]) != (r["part"], r["row"]):
                continue  # a later occurrence of the same id wins, as in a local build
            doc = Document(r["doc_id"], r["text"], r["path"], r["language"], json.loads(r["metadata"]))
            if not r["encoded"]:
                yield EncodedDocument(doc)
                continue
            chunks = [
                Chunk(
                    doc.doc_id,
                    i,
                    c["start"],
                    c["end"],
                    doc.text[c["start"] : c["end"]],
                    c["n_tokens"],
                    c["kind"],
                    c["language"],
                    c["symbol"],
                    c["context"],
                )
                for i, c in enumerate(r["chunks"])
            ]
            vectors = np.frombuffer(r["vectors"], "<f4")
            whole = len(vectors) == len(chunks) * dim  # else: stored after encoding it here (add_encoded)
            yield EncodedDocument(doc, chunks, vectors.reshape(len(chunks), dim)) if whole else EncodedDocument(doc)


def read_shards(directory: Path, parts: int, encoding: dict[str, Any]) -> Iterator[EncodedDocument]:
    """Every document of the shards of parts ``0 .. parts - 1``, in input order, each id once (its last
    occurrence); the shards must have been encoded as ``encoding`` says."""
    files = [directory / shard_name(i) for i in range(parts)]
    wanted: dict[str, tuple[int, int]] = {}
    for file in files:
        table = pq.read_table(file, columns=["part", "row", "doc_id"])
        for part, row, doc_id in zip(*(table[c].to_pylist() for c in ("part", "row", "doc_id")), strict=True):
            wanted[doc_id] = (part, row)
    for file in files:
        yield from _shard_documents(file, encoding, wanted)


def _whole_shards(directory: Path) -> set[int]:
    """Parts whose shard is on disk and readable. Temporary files of writes that never finished (an actor killed
    mid-write) are removed, and so is a torn shard, which the rename should rule out."""
    for tmp in directory.glob(".part-*.tmp"):
        tmp.unlink(missing_ok=True)
    done = set()
    for file in directory.iterdir():
        if (match := _SHARD.fullmatch(file.name)) is None:
            continue
        try:
            pq.read_metadata(file)
        except Exception:  # not a whole parquet file
            file.unlink(missing_ok=True)
            continue
        done.add(int(match.group(1)))
    return done


# -- the actors --------------------------------------------------------------------------------------------


class EncodeWorker:
    """One actor of the pool: loads the collection's model once, then encodes parts into shards (``__call__``
    takes a batch of parts, as ``map_batches`` gives them, and returns one summary row per part)."""

    def __init__(
        self,
        manifest: Manifest,
        config: EmbedderConfig,
        shard_dir: str,
        known: list[Any],
        retries: int = RETRIES,
        encoding: dict[str, Any] | None = None,
        model: str | None = None,
    ) -> None:
        import ray

        self.encoder = DocumentEncoder.load(manifest, config, model)
        self.info = self.encoder.info()
        if encoding is not None and (differ := encoding_differences(self.info, encoding)):
            raise ModelMismatchError(
                f"an actor on {os.uname().nodename} chunks and encodes with {', '.join(differ)} other than the "
                "collection's: install the same longvec and model on every node"
            )
        self.shard_dir, self.retries = Path(shard_dir), retries
        self.known: dict[str, str] = ray.get(known[0]) if known else {}

    def __call__(self, batch: dict[str, Any]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {
            k: [] for k in ("part", "docs", "chunks", "tokens", "skipped", "seconds", "tries", "error")
        }
        for spec in batch["part"]:
            part = Part(**json.loads(spec))
            start = time.perf_counter()
            for attempt in range(1, self.retries + 2):
                try:
                    summary, error = self.encode_part(part), ""
                    break
                except InvalidInputError as exc:  # the input itself: trying again cannot help
                    summary, error = {"docs": 0, "chunks": 0, "tokens": 0, "skipped": 0}, str(exc)
                    break
                except Exception:
                    if attempt > self.retries:
                        raise
                    log.warning("part %d failed (try %d of %d); retrying", part.index, attempt, self.retries + 1)
            out["part"].append(part.index)
            for k, v in summary.items():
                out[k].append(v)
            out["seconds"].append(time.perf_counter() - start)
            out["tries"].append(attempt)
            out["error"].append(error)
        return out

    def encode_part(self, part: Part) -> dict[str, int]:
        """Read, chunk and encode ``part``; write its shard. Returns its counts."""
        stats = WalkStats()
        rows: list[tuple[Document, list[Chunk] | None, np.ndarray | None]] = []
        pending: list[int] = []  # rows to encode
        chunks_total = tokens = 0
        for doc in part.documents(stats):
            if not doc.text.strip() or self.known.get(doc.doc_id) == self.encoder.content_hash(doc):
                rows.append((doc, None, None))
                continue
            chunks = self.encoder.chunk(doc)
            rows.append((doc, chunks, None))
            pending.append(len(rows) - 1)
        for i in range(0, len(pending), _ENCODE_DOCS):
            todo = [(rows[j][0], rows[j][1]) for j in pending[i : i + _ENCODE_DOCS]]
            vectors = self.encoder.encode(todo)
            offset = 0
            for j in pending[i : i + _ENCODE_DOCS]:
                doc, chunks, _ = rows[j]
                assert chunks is not None
                rows[j] = (doc, chunks, vectors[offset : offset + len(chunks)])
                offset += len(chunks)
                chunks_total += len(chunks)
                tokens += sum(c.n_tokens for c in chunks)
        write_shard(self.shard_dir, part.index, _shard_table(part.index, rows, self.info))
        return {"docs": len(rows), "chunks": chunks_total, "tokens": tokens, "skipped": stats.skipped}


# -- the driver --------------------------------------------------------------------------------------------


@dataclass
class RayRunStats:
    parts: int = 0
    resumed: int = 0  # parts whose shards an earlier run left
    encoded: int = 0  # parts encoded by this run
    retried: int = 0  # parts that needed more than one try
    workers: int = 0
    docs: int = 0
    chunks: int = 0
    tokens: int = 0
    skipped_files: int = 0
    encode_seconds: float = 0.0
    store_seconds: float = 0.0


def _run_dir(root: Path, key: str, collection: Path) -> Path:
    """This run's directory ``root/run-<key>`` (created). Earlier runs' directories in ``root`` for the same
    ``collection`` (other inputs or settings: their shards can never serve this run; no other run of it can be
    going on, as it holds the writer lock) are removed. Runs for other collections and anything else in ``root``
    are left alone."""
    root.mkdir(parents=True, exist_ok=True)
    mine = root / f"run-{key[:16]}"
    for other in root.glob("run-*"):
        try:
            owner = json.loads((other / _RUN_FILE).read_text()).get("collection")
        except (OSError, ValueError):
            continue
        if other != mine and owner == str(collection):
            log.warning("removing %s: shards of other inputs or settings", other)
            shutil.rmtree(other, ignore_errors=True)
    mine.mkdir(exist_ok=True)
    return mine


def default_shard_dir(root: Path) -> Path:
    """``<collection>.ray-shards`` beside the collection (outside it: a failed first run may remove the collection,
    and the shards must outlive it for the rerun to resume)."""
    return root.parent / f"{root.name}.ray-shards"


def _ray_init(address: str | None) -> Any:
    try:
        import ray
    except ImportError:
        raise InvalidInputError("--engine ray needs Ray: pip install 'longvec[ray]'") from None
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    from ray.data import DataContext

    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    return ray


def _pool_size(ray: Any, workers: int | None, cpus: float, gpus: float) -> int:
    """``workers``, or as many actors as the cluster's CPUs (GPUs, with ``gpus``) can hold at once;
    :class:`InvalidInputError` for a pool the cluster cannot hold now (its actors would wait forever)."""
    if workers is not None and workers < 1:
        raise InvalidInputError(f"workers must be positive, got {workers}")
    if cpus <= 0 or gpus < 0:
        raise InvalidInputError(f"CPUs per worker must be positive and GPUs not negative, got {cpus} and {gpus}")
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    fits = sum(int(min(r.get("CPU", 0) // cpus, r.get("GPU", 0) // gpus if gpus else float("inf"))) for r in nodes)
    if fits < 1:
        raise InvalidInputError(
            f"no node of the Ray cluster has {cpus:g} CPUs" + (f" and {gpus:g} GPUs" if gpus else "") + " free for an "
            "actor: lower --cpus-per-worker / --gpus-per-worker, or add nodes"
        )
    if workers is not None and workers > fits:
        raise InvalidInputError(
            f"the Ray cluster holds {fits} actors of {cpus:g} CPUs" + (f" and {gpus:g} GPUs" if gpus else "")
            + f", not {workers}: lower --workers, or add nodes"
        )  # fmt: skip
    return workers if workers is not None else fits


def index_with_ray(
    collection: Collection,
    parts: list[Part],
    *,
    config: EmbedderConfig | None = None,
    address: str | None = None,
    workers: int | None = None,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    shard_dir: Path | None = None,
    keep_shards: bool = False,
    retries: int = RETRIES,
    batch_docs: int = 32,
    on_batch: Callable[[AddResult], None] | None = None,
    on_part: Callable[[dict[str, Any]], None] | None = None,
    worker_class: type[EncodeWorker] = EncodeWorker,
    model: str | None = None,
) -> tuple[AddResult, RayRunStats]:
    """Add the documents of ``parts`` (:func:`plan_parts`) to ``collection`` (open for writing), encoded on a Ray
    cluster (``address``: ``None`` starts or joins one as ``ray.init`` does, ``"auto"`` joins the
    running one). ``workers`` actors (default: as many as fit) of ``cpus_per_worker`` CPUs and ``gpus_per_worker``
    GPUs each encode; ``config`` says how the model runs in them (device, precision, backend; threads default to
    the actor's CPUs; ``model``: where the actors find the model, if not at the manifest's path). Shards go to a
    directory of this run's own inside ``shard_dir`` (default: :func:`default_shard_dir`), which is removed once
    the collection holds them unless ``keep_shards``; a rerun of the same inputs and settings resumes from it.
    Returns what :meth:`Collection.add` returns, and the run's own figures. ``worker_class`` is the actor class (a
    subclass of :class:`EncodeWorker`). :class:`RayRunError` if the cluster could not encode every part."""
    stats = RayRunStats(parts=len(parts))
    if config is not None and config.device.startswith("cuda") and not gpus_per_worker:
        raise InvalidInputError("the actors get no GPU: give gpus_per_worker (--gpus-per-worker) to encode on CUDA")
    encoding = collection.encoding.info()
    key = _run_key(parts, encoding)
    owner = collection.root.resolve()
    shard_dir = _run_dir(Path(shard_dir) if shard_dir is not None else default_shard_dir(collection.root), key, owner)
    write_json_atomic(
        shard_dir / _RUN_FILE, {"key": key, "parts": len(parts), "encoding": encoding, "collection": str(owner)}
    )
    done = _whole_shards(shard_dir)
    todo = [p for p in parts if p.index not in done]
    stats.resumed = len(parts) - len(todo)

    start = time.perf_counter()
    if todo:
        ray = _ray_init(address)  # with ray.data imported
        stats.workers = size = min(_pool_size(ray, workers, cpus_per_worker, gpus_per_worker), len(todo))
        threads = max(1, int(cpus_per_worker))
        device = config.device if config is not None and config.device != "auto" else None
        base = config or EmbedderConfig()
        base = replace(base, threads=base.threads or threads, device=device or ("cuda" if gpus_per_worker else "cpu"))
        known = [ray.put(collection.content_hashes())] if collection.counts()["documents"] else []
        ds = ray.data.from_items([{"part": json.dumps(asdict(p))} for p in todo], override_num_blocks=len(todo))
        kwargs = {
            "manifest": collection.manifest,
            "config": base,
            "shard_dir": str(shard_dir),
            "known": known,
            "encoding": encoding,
            "model": model,
        }
        with warnings.catch_warnings():
            # Ray 2.6x has no named parameter for an actor's restarts: they go in ray_remote_args, which it warns of
            warnings.filterwarnings("ignore", message=".*ray_remote_args.*deprecated")
            results = ds.map_batches(
                worker_class,
                fn_constructor_kwargs={**kwargs, "retries": retries},
                batch_size=1,
                # one part at a time per actor: a slow part then holds up nothing queued behind it
                compute=ray.data.ActorPoolStrategy(size=size, max_tasks_in_flight_per_actor=1),
                num_cpus=cpus_per_worker,
                num_gpus=gpus_per_worker,
                max_restarts=retries,
                max_task_retries=retries,
            )
        try:
            for row in results.iter_rows():
                if row["error"]:  # bad input: stop the run now (the shards written stay for a rerun)
                    raise InvalidInputError(str(row["error"]))
                stats.encoded += 1
                stats.retried += row["tries"] > 1
                for k in ("docs", "chunks", "tokens"):
                    setattr(stats, k, getattr(stats, k) + int(row[k]))
                stats.skipped_files += int(row["skipped"])
                if on_part is not None:
                    on_part(dict(row))
        except Exception as exc:
            if isinstance(exc, LongvecError):
                raise
            finished = len(_whole_shards(shard_dir))
            raise RayRunError(
                f"the Ray run stopped with {finished} of {len(parts)} parts encoded ({type(exc).__name__}: "
                f"{str(exc).strip().splitlines()[-1] if str(exc).strip() else 'no message'}); run the same command "
                "again to resume from the shards written"
            ) from exc
    stats.encode_seconds = time.perf_counter() - start

    start = time.perf_counter()
    result = collection.add_encoded(
        read_shards(shard_dir, len(parts), encoding),
        encoding=encoding,
        batch_docs=batch_docs,
        on_batch=on_batch,
    )
    stats.store_seconds = time.perf_counter() - start
    if not keep_shards:
        shutil.rmtree(shard_dir, ignore_errors=True)
        with contextlib.suppress(OSError):
            shard_dir.parent.rmdir()  # if nothing else is in it
    return result, stats
