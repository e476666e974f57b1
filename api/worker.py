"""One model worker for the server: every encode runs on its thread, query encodes of concurrent requests
coalesced into one model call, ahead of document encodes, with a bounded queue.

The collection keeps calling ``embedder.encode_queries`` / ``encode_documents`` / ``encode_late`` as it does in a
script; :class:`ModelWorker` stands in for its embedder and turns each call into jobs for the worker thread:

- Query encodes (searches, ``/v1/embeddings`` with ``input_type=query``) wait in a queue of their own, served
  first; the worker takes all waiting query jobs with the same settings, up to :attr:`ModelWorker.max_batch`
  texts, and encodes them in one call (micro-batching: under load a model call serves many requests at once). A
  call of more texts than that is cut into several jobs.
- Document encodes are cut into slices of :attr:`ModelWorker.slice_texts` texts, run one slice at a time, so a
  search waits at most one slice behind a long write; small document jobs waiting together (``/v1/embeddings``
  requests) are coalesced up to that size. After :data:`QUERY_STREAK` query calls in a row, a waiting document
  slice runs next: writes progress under any search load.
- At most :attr:`ModelWorker.max_pending` query jobs wait; one more request raises :class:`QueueFullError` (the API
  answers 429 with ``Retry-After``), so memory stays bounded under overload.
- A model call that fails for a coalesced batch is retried job by job, so one bad request fails only itself.

Only the worker thread calls the model, so no tokenizer or engine is shared between threads.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from longvec.index import LongvecError

QUERY_STREAK = 4  # query calls in a row before a waiting document slice gets its turn
log = logging.getLogger("longvec.server")


class QueueFullError(LongvecError):
    """The model worker's queue is full: retry after a moment (HTTP 429)."""

    retry_after = 1


class WorkerStoppedError(LongvecError):
    """The server is shutting down: the model takes no more work (HTTP 503)."""

    retry_after = 5


@dataclass
class _Job:
    kind: str  # "query", "document" or "late"
    texts: list[Any]
    options: tuple[Any, ...]  # (dim, layers), or the late window
    future: Future[Any] = field(default_factory=Future)


class ModelWorker:
    """An embedder whose encodes all run on one worker thread (see the module docstring); everything else
    (``dim``, ``tokenizer``, ``fingerprint``, ``encode_late`` if it has one, ...) is the wrapped embedder's."""

    def __init__(
        self,
        embedder: Any,
        *,
        max_pending: int = 256,
        max_batch: int = 64,
        slice_texts: int = 32,
        on_query_batch: Callable[[int, int], None] | None = None,
    ) -> None:
        """``on_query_batch(requests, texts)`` is called on the worker thread after each query model call."""
        self._embedder = embedder
        self.max_pending, self.max_batch, self.slice_texts = max_pending, max_batch, slice_texts
        self._on_query_batch = on_query_batch
        self._cv = threading.Condition()
        self._queries: deque[_Job] = deque()
        self._documents: deque[_Job] = deque()
        self._waiting_queries = 0  # query jobs waiting, for max_pending
        self._closed = False
        self._streak = 0
        self.batches = 0  # model calls for queries (each may serve several requests)
        self.queries = 0  # query texts encoded
        self._thread = threading.Thread(target=self._run, name="longvec-model", daemon=True)
        self._thread.start()

    def __getattr__(self, name: str) -> Any:
        if name == "encode_late":  # only where the wrapped embedder has it (the collection checks for it)
            getattr(self._embedder, name)
            return self._encode_late
        return getattr(self._embedder, name)

    @property
    def wrapped(self) -> Any:
        return self._embedder

    @property
    def depth(self) -> int:
        """Jobs waiting (queries and document slices)."""
        with self._cv:
            return len(self._queries) + len(self._documents)

    def encode_queries(self, texts: list[str], dim: int | None = None, layers: int | None = None) -> np.ndarray:
        texts = list(texts)
        with self._cv:
            if self._waiting_queries >= self.max_pending:
                raise QueueFullError(f"the model queue is full ({self.max_pending} requests waiting): retry shortly")
            parts = [texts[i : i + self.max_batch] for i in range(0, len(texts), self.max_batch)] or [[]]
            jobs = self._enqueue(self._queries, [_Job("query", part, (dim, layers)) for part in parts])
            self._waiting_queries += len(jobs)
        return self._gather(jobs)

    def encode_documents(self, texts: list[str], dim: int | None = None, layers: int | None = None) -> np.ndarray:
        texts = list(texts)
        parts = [texts[i : i + self.slice_texts] for i in range(0, len(texts), self.slice_texts)] or [[]]
        with self._cv:
            jobs = self._enqueue(self._documents, [_Job("document", part, (dim, layers)) for part in parts])
        return self._gather(jobs)

    def _encode_late(self, docs: list[tuple[str, list[tuple[int, int]]]], **options: Any) -> list[np.ndarray]:
        with self._cv:
            jobs = self._enqueue(self._documents, [_Job("late", [doc], (options.get("window"),)) for doc in docs])
        return [part for job in jobs for part in job.future.result()]

    def close(self, timeout: float = 60) -> None:
        """Stop taking work, finish what is queued (up to ``timeout`` seconds), and fail anything left with
        :class:`WorkerStoppedError`."""
        with self._cv:
            self._closed = True
            self._cv.notify_all()
        self._thread.join(timeout)
        with self._cv:
            left = [*self._queries, *self._documents]
            self._queries.clear()
            self._documents.clear()
        for job in left:
            if not job.future.done():
                job.future.set_exception(WorkerStoppedError("the server is shutting down"))

    def _enqueue(self, queue: deque[_Job], jobs: list[_Job]) -> list[_Job]:
        """Queue ``jobs`` (the caller holds the condition): refused once the worker is closing."""
        if self._closed:
            raise WorkerStoppedError("the server is shutting down: the model takes no more work")
        queue.extend(jobs)
        self._cv.notify()
        return jobs

    @staticmethod
    def _gather(jobs: list[_Job]) -> np.ndarray:
        parts = [job.future.result() for job in jobs]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def _next(self) -> list[_Job] | None:
        """The next batch: coalesced query jobs, or (when no query waits, or after a streak of query calls) a
        document slice with the small document jobs that fit beside it; ``None`` once closed and drained."""
        with self._cv:
            while not (self._queries or self._documents or self._closed):
                self._cv.wait()
            if not (self._queries or self._documents):
                return None
            documents_turn = bool(self._documents) and (not self._queries or self._streak >= QUERY_STREAK)
            if documents_turn:
                self._streak = 0
                return self._take(self._documents, self.slice_texts)
            self._streak += 1
            batch = self._take(self._queries, self.max_batch)
            self._waiting_queries -= len(batch)
            return batch

    @staticmethod
    def _take(queue: deque[_Job], cap: int) -> list[_Job]:
        """The first job of ``queue`` and the later ones of its kind and settings that fit in ``cap`` texts."""
        first = queue.popleft()
        batch, size = [first], len(first.texts)
        if first.kind == "late":
            return batch
        for job in list(queue):
            if size >= cap:
                break
            if job.kind == first.kind and job.options == first.options and size + len(job.texts) <= cap:
                queue.remove(job)
                batch.append(job)
                size += len(job.texts)
        return batch

    def _run(self) -> None:
        while (batch := self._next()) is not None:
            try:
                self._encode(batch)
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].future.set_exception(exc)
                    continue
                for job in batch:  # one bad request fails only itself
                    try:
                        self._encode([job])
                    except Exception as alone:
                        job.future.set_exception(alone)

    def _encode(self, batch: list[_Job]) -> None:
        first = batch[0]
        if first.kind == "late":
            (window,) = first.options
            kwargs = {} if window is None else {"window": window}
            first.future.set_result(self._embedder.encode_late(first.texts, **kwargs))
            return
        dim, layers = first.options
        kwargs = {k: v for k, v in (("dim", dim), ("layers", layers)) if v is not None}
        texts = [t for j in batch for t in j.texts]
        encode = self._embedder.encode_queries if first.kind == "query" else self._embedder.encode_documents
        vectors = encode(texts, **kwargs)
        offset = 0
        for j in batch:
            j.future.set_result(vectors[offset : offset + len(j.texts)])
            offset += len(j.texts)
        if first.kind == "query":
            self.batches += 1
            self.queries += len(texts)
            if self._on_query_batch is not None:
                try:
                    self._on_query_batch(len(batch), len(texts))
                except Exception:  # metrics never fail an encode
                    log.exception("query batch callback failed")
