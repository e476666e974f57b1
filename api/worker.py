"""One model worker for the server: every encode runs on its thread, query encodes of concurrent requests
coalesced into one model call, ahead of document encodes, with a bounded queue.

The collection keeps calling ``embedder.encode_queries`` / ``encode_documents`` / ``encode_late`` as it does in a
script; :class:`ModelWorker` stands in for its embedder and turns each call into jobs for the worker thread:

- Query encodes (searches, ``/v1/embeddings`` of short inputs) wait in a queue ahead of everything else; the worker
  takes all waiting query jobs with the same settings, up to :attr:`ModelWorker.max_batch` texts, and encodes them
  in one call (micro-batching: under load a model call serves many requests at once).
- Document encodes are cut into slices of :attr:`ModelWorker.slice_texts` texts, run one slice at a time, so a
  search waits at most one slice behind a long write, never the whole write; small document jobs waiting together
  (``/v1/embeddings`` requests) are coalesced up to that size.
- At most :attr:`ModelWorker.max_pending` query jobs wait; one more raises :class:`QueueFullError` (the API answers
  429 with ``Retry-After``), so memory stays bounded under overload.

Only the worker thread calls the model, so no tokenizer or engine is shared between threads.
"""

from __future__ import annotations

import itertools
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from longvec.index import LongvecError

_QUERY, _DOCUMENT, _STOP = 0, 1, 2  # priorities: lower runs first


class QueueFullError(LongvecError):
    """The model worker's queue is full: retry after a moment (HTTP 429)."""

    retry_after = 1


@dataclass(order=True)
class _Job:
    priority: int
    order: int
    kind: str = field(compare=False)  # "query", "document" or "late"
    texts: list[Any] = field(compare=False)
    options: tuple[Any, ...] = field(compare=False)  # (dim, layers) or the late window
    future: Future[Any] = field(compare=False, default_factory=Future)


class ModelWorker:
    """An embedder whose encodes all run on one worker thread (see the module docstring); everything else
    (``dim``, ``tokenizer``, ``fingerprint``, ...) is the wrapped embedder's."""

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
        self._on_query_batch = on_query_batch
        self.max_pending, self.max_batch, self.slice_texts = max_pending, max_batch, slice_texts
        self._queue: queue.PriorityQueue[_Job] = queue.PriorityQueue()
        self._order = itertools.count()
        self._waiting_queries = 0
        self._count_lock = threading.Lock()
        self.batches = 0  # model calls for queries (each may serve several requests)
        self.queries = 0  # query texts encoded
        self._thread = threading.Thread(target=self._run, name="longvec-model", daemon=True)
        self._thread.start()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._embedder, name)

    @property
    def wrapped(self) -> Any:
        return self._embedder

    @property
    def depth(self) -> int:
        """Jobs waiting (queries and document slices)."""
        return self._queue.qsize()

    def encode_queries(self, texts: list[str], dim: int | None = None, layers: int | None = None) -> np.ndarray:
        with self._count_lock:
            if self._waiting_queries >= self.max_pending:
                raise QueueFullError(f"the model queue is full ({self.max_pending} requests waiting): retry shortly")
            self._waiting_queries += 1
        return self._submit(_QUERY, "query", list(texts), (dim, layers))

    def encode_documents(self, texts: list[str], dim: int | None = None, layers: int | None = None) -> np.ndarray:
        texts = list(texts)
        if len(texts) <= self.slice_texts:
            return self._submit(_DOCUMENT, "document", texts, (dim, layers))
        jobs = [
            self._enqueue(_DOCUMENT, "document", texts[i : i + self.slice_texts], (dim, layers))
            for i in range(0, len(texts), self.slice_texts)
        ]
        return np.concatenate([job.future.result() for job in jobs])

    def encode_late(self, docs: list[tuple[str, list[tuple[int, int]]]], **options: Any) -> list[np.ndarray]:
        window = options.get("window")
        jobs = [self._enqueue(_DOCUMENT, "late", [doc], (window,)) for doc in docs]
        return [part for job in jobs for part in job.future.result()]

    def close(self) -> None:
        """Stop the worker after the jobs already queued."""
        if self._thread.is_alive():
            self._queue.put(_Job(_STOP, next(self._order), "stop", [], ()))
            self._thread.join()

    def _enqueue(self, priority: int, kind: str, texts: list[Any], options: tuple[Any, ...]) -> _Job:
        if not self._thread.is_alive():
            raise RuntimeError("the model worker has stopped")
        job = _Job(priority, next(self._order), kind, texts, options)
        self._queue.put(job)
        return job

    def _submit(self, priority: int, kind: str, texts: list[Any], options: tuple[Any, ...]) -> Any:
        return self._enqueue(priority, kind, texts, options).future.result()

    def _run(self) -> None:
        while True:
            job = self._queue.get()
            if job.kind == "stop":
                return
            batch = [job]
            if job.kind == "query":
                batch += self._more_like(job, self.max_batch)
                with self._count_lock:
                    self._waiting_queries -= len(batch)
            elif job.kind == "document":
                batch += self._more_like(job, self.slice_texts)
            if not all(j.future.set_running_or_notify_cancel() for j in batch):
                batch = [j for j in batch if not j.future.cancelled()]
            try:
                self._encode(batch)
            except BaseException as exc:  # the callers get the error; the worker goes on
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(exc)

    def _more_like(self, first: _Job, cap: int) -> list[_Job]:
        """Waiting jobs of ``first``'s kind and settings, up to ``cap`` texts with it (others go back)."""
        taken, others, size = [], [], len(first.texts)
        while size < cap:
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job.priority != first.priority:
                others.append(job)
                break  # the queue is ordered: nothing of this priority is behind it
            if job.kind == first.kind and job.options == first.options and size + len(job.texts) <= cap:
                taken.append(job)
                size += len(job.texts)
            else:
                others.append(job)
        for job in others:
            self._queue.put(job)
        return taken

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
        if first.kind == "query":
            vectors = self._embedder.encode_queries(texts, **kwargs)
            self.batches += 1
            self.queries += len(texts)
            if self._on_query_batch is not None:
                self._on_query_batch(len(batch), len(texts))
        else:
            vectors = self._embedder.encode_documents(texts, **kwargs)
        offset = 0
        for j in batch:
            j.future.set_result(vectors[offset : offset + len(j.texts)])
            offset += len(j.texts)
