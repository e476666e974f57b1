"""What stands between the network and the handlers: API keys, request limits, request ids, metrics, logs.

:class:`Guard` is one ASGI middleware doing, per HTTP request and in this order:

1. a request id (the client's ``X-Request-ID`` if it sent a sane one, else a new one), echoed in the response;
2. authentication when keys are configured (``Authorization: Bearer KEY``, compared in constant time): a read key
   may ``GET`` / ``HEAD`` and ``POST`` the read-only routes (:data:`READ_POSTS`: search, embeddings); anything
   else needs a write key; :data:`PUBLIC` routes need none. Paths are judged as the app routes them (its
   ``root_path`` and a ``/collections/{name}`` prefix removed);
3. a bound on requests in flight (public routes aside; beyond it: 429 with ``Retry-After``, nothing queued);
4. a bound on the body size (413), from ``Content-Length``, and again as the body is read (it is read whole,
   within :data:`BODY_SECONDS`, before the handler runs);
5. one JSON log line and the Prometheus metrics of the request (count and latency by route and status), and a
   JSON 500 with the request id for an error the app did not handle.

A refused request's body is drained (up to :data:`DRAIN_BYTES`) before the answer, which closes the connection:
closing on unread data resets it, and the client would see a broken connection instead of the answer.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PUBLIC = ("/livez", "/readyz", "/health", "/", "/openapi.json", "/docs", "/docs/oauth2-redirect")
READ_POSTS = ("/search", "/v1/embeddings")  # POST routes that only read: a read key may call them
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")  # metric labels; others count as OTHER
DRAIN_BYTES = 1024 * 1024  # a refused request's body read (and dropped) before the answer, at most
BODY_SECONDS = 60.0  # a request body must arrive within this (408 after)
_IN_COLLECTION = re.compile(r"^/collections/[^/]+(?=/)")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
access_log = logging.getLogger("longvec.access")
log = logging.getLogger("longvec.server")


@dataclass(frozen=True)
class ServiceSettings:
    """The server's guards. Keys: none configured means no authentication."""

    read_keys: tuple[str, ...] = ()
    write_keys: tuple[str, ...] = ()
    max_body_bytes: int = 64 * 1024 * 1024
    max_in_flight: int = 64  # requests handled at once; more get 429
    max_queue: int = 256  # query encodes waiting for the model; more get 429
    long_inputs: str = "chunk"  # /v1/embeddings: "chunk" (embed long inputs chunked) or "reject" (400)
    max_embedding_inputs: int = 2048  # schemas.MAX_EMBEDDING_INPUTS
    max_request_chars: int = 8_000_000  # all texts of one request (a token covers a character or more)

    @property
    def auth(self) -> bool:
        return bool(self.read_keys or self.write_keys)

    @classmethod
    def from_env(cls, *, read_key_file: Path | None = None, write_key_file: Path | None = None, **kw: Any) -> Any:
        """Keys from ``LONGVEC_READ_KEY`` / ``LONGVEC_WRITE_KEY`` (``LONGVEC_API_KEY``: a write key, which
        also reads) and from key files (one key per line, ``#`` comments; several keys allow rotation)."""
        read = _keys(os.environ.get("LONGVEC_READ_KEY", ""), read_key_file)
        write = _keys(os.environ.get("LONGVEC_WRITE_KEY", ""), write_key_file) + _keys(
            os.environ.get("LONGVEC_API_KEY", ""), None
        )
        return cls(read_keys=read, write_keys=write, **kw)


def _keys(value: str, path: Path | None) -> tuple[str, ...]:
    lines = [value] + (path.read_text(encoding="utf-8").splitlines() if path is not None else [])
    keys = tuple(k.strip() for k in lines if k.strip() and not k.strip().startswith("#"))
    if any(len(k) < 16 for k in keys):
        raise ValueError("API keys must be at least 16 characters")
    if any(not (k.isascii() and k.isprintable()) or " " in k for k in keys):
        raise ValueError("API keys must be printable ASCII without spaces (they travel in an HTTP header)")
    return keys


def _matches(token: str, keys: tuple[str, ...]) -> bool:
    """Whether ``token`` is one of ``keys``, comparing with every key in constant time (no early exit)."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(token.encode(), key.encode())
    return found


def _local(path: str) -> str:
    """A path with its ``/collections/{name}`` prefix removed (a server of several collections), as the routes of
    one collection see it."""
    return _IN_COLLECTION.sub("", path, count=1)


def is_public(path: str) -> bool:
    return _local(path) in PUBLIC


def is_write(method: str, path: str) -> bool:
    """Whether a request needs a write key: anything but ``GET`` / ``HEAD`` and the read-only POST routes."""
    return not (method in ("GET", "HEAD") or (method == "POST" and _local(path) in READ_POSTS))


def route_path(scope: Scope) -> str:
    """The path as the app routes it: without the ``root_path`` the server was started with (a proxy prefix)."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root):
        return path[len(root) :] or "/"
    return path


class Metrics:
    """The server's Prometheus metrics, in a registry of its own (several apps in one process stay apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "longvec_requests", "HTTP requests by route, method and status", ["route", "method", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.latency = Histogram(
            "longvec_request_seconds", "HTTP request latency by route", ["route", "method"], registry=self.registry,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        )  # fmt: skip
        self.tokens = Counter("longvec_tokens_encoded", "Tokens encoded by kind", ["kind"], registry=self.registry)
        self.queue = Gauge("longvec_queue_depth", "Encode jobs waiting for the model", registry=self.registry)
        self.query_batches = Counter(
            "longvec_query_batches", "Model calls encoding queries (each may serve several requests)",
            registry=self.registry,
        )  # fmt: skip
        self.query_requests = Counter(
            "longvec_query_requests", "Query encode requests served by those calls", registry=self.registry
        )
        self.in_flight = Gauge("longvec_requests_in_flight", "HTTP requests being handled", registry=self.registry)
        self.documents = Gauge("longvec_documents", "Documents per collection", ["collection"], registry=self.registry)
        self.chunks = Gauge("longvec_chunks", "Chunks per collection", ["collection"], registry=self.registry)
        self.ready = Gauge("longvec_ready", "1 once the collection and model are loaded", registry=self.registry)
        self.active = 0  # requests being handled now (Guard keeps it): shutdown waits for it to reach 0


def _error(status: int, kind: str, message: str, headers: list[tuple[bytes, bytes]] | None = None) -> Any:
    body = json.dumps({"error": {"type": kind, "message": message}}).encode()
    return status, body, headers or []


class Guard:
    """The ASGI middleware described in the module docstring. ``route_of(scope)`` names a request's route
    template (for metric labels); ``metrics`` and ``settings`` are the app's."""

    def __init__(
        self, app: ASGIApp, *, settings: ServiceSettings, metrics: Metrics, route_of: Callable[[Scope], str]
    ) -> None:
        self.app, self.settings, self.metrics, self.route_of = app, settings, metrics, route_of
        self._in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        given = headers.get("x-request-id", "")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        method, path = scope["method"], route_path(scope)
        sent = {"status": 500, "started": False}
        id_header = (b"x-request-id", request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                sent.update(status=message["status"], started=True)
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        public = is_public(path)
        refusal = self._refusal(method, path, headers, public)
        try:
            if refusal is not None:
                status = refusal[0]
                if status != 413:  # a body announced too large is not read at all
                    await self._body(receive, DRAIN_BYTES)
                await _respond(send_with_id, *refusal, close=True)
                return
            self.metrics.active += 1
            if not public:
                self._in_flight += 1
                self.metrics.in_flight.set(self._in_flight)
            try:
                try:
                    body = await asyncio.wait_for(self._body(receive, self.settings.max_body_bytes), BODY_SECONDS)
                except TimeoutError:
                    await _respond(send_with_id, *_error(408, "RequestTimeout", "the request body was too slow"))
                    return
                if body is None:
                    await _respond(send_with_id, *self._too_large(), close=True)
                    return
                if body is _GONE:
                    return  # the client went away before sending its body
                await self.app(scope, _replay(body, receive), send_with_id)
            finally:
                self.metrics.active -= 1
                if not public:
                    self._in_flight -= 1
                    self.metrics.in_flight.set(self._in_flight)
        except Exception:
            log.exception("unhandled error", extra={"request_id": request_id})
            if not sent["started"]:
                await _respond(
                    send_with_id, *_error(500, "InternalError", "internal server error (logged on the server)")
                )
        finally:
            seconds = time.perf_counter() - start
            route = self.route_of(scope)
            label = method if method in METHODS else "OTHER"
            self.metrics.requests.labels(route, label, str(sent["status"])).inc()
            self.metrics.latency.labels(route, label).observe(seconds)
            access_log.info(
                "request",
                extra={
                    "request_id": request_id,
                    "method": label,
                    "path": path,
                    "route": route,
                    "status": sent["status"],
                    "ms": round(1000 * seconds, 2),
                },
            )

    def _refusal(self, method: str, path: str, headers: dict[str, str], public: bool) -> Any:
        """The answer to a request refused before its handler runs, or ``None``."""
        s = self.settings
        if s.auth and not public:
            scheme, _, token = headers.get("authorization", "").partition(" ")
            token = token.strip()
            challenge = [(b"www-authenticate", b'Bearer realm="longvec"')]
            if scheme.lower() != "bearer" or not token:
                return _error(401, "Unauthorized", "missing API key: send 'Authorization: Bearer KEY'", challenge)
            writer = _matches(token, s.write_keys)
            if not writer and not _matches(token, s.read_keys):
                return _error(401, "Unauthorized", "invalid API key", challenge)
            if is_write(method, path) and not writer:
                return _error(403, "Forbidden", "this key may read, not write: use a write key")
        length = headers.get("content-length")
        valid = length is not None and length.isascii() and length.isdigit()
        if length is not None and (not valid or int(length) > s.max_body_bytes):
            return self._too_large() if valid else _error(400, "BadRequest", "invalid Content-Length")
        if self._in_flight >= s.max_in_flight and not public:
            return _error(
                429, "TooManyRequests", f"{s.max_in_flight} requests in flight: retry shortly", [(b"retry-after", b"1")]
            )
        return None

    def _too_large(self) -> Any:
        return _error(413, "PayloadTooLarge", f"request body over {self.settings.max_body_bytes} bytes")

    async def _body(self, receive: Receive, limit: int) -> Any:
        """The whole request body, or ``None`` once it grows past ``limit`` bytes (a chunked body has no
        ``Content-Length`` to refuse it by), or :data:`_GONE` if the client disconnected first."""
        parts, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return _GONE
            size += len(message.get("body", b""))
            if size > limit:
                return None
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(parts)


_GONE = object()  # what _body returns when the client went away


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that hands the app the body already read, then waits on the real one (for a disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _respond(
    send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]], *, close: bool = False
) -> None:
    extra = [(b"connection", b"close")] if close else []
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class JsonFormatter(logging.Formatter):
    """One JSON object per log line: time, level, logger, message, and the record's extra fields (the access
    log's request id, route, status and milliseconds)."""

    _plain = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
        "message",
        "asctime",
        "taskName",
        "color_message",
    }

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S") + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update({k: v for k, v in record.__dict__.items() if k not in self._plain})
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def json_logging(level: int = logging.INFO) -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for the server: JSON lines on stderr for longvec's and uvicorn's loggers
    (uvicorn's own access log is off: :class:`Guard` logs each request with its id)."""
    handler = {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"}
    loggers = {name: {"handlers": ["json"], "level": level, "propagate": False} for name in ("longvec", "uvicorn")}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"json": handler},
        "loggers": loggers,
    }
