"""One table from error type to HTTP status; the CLI exits 2 on any of them.

Only our own typed errors are mapped: anything else is a bug, answered with a logged 500, never a 4xx
that would blame the caller.
"""

from __future__ import annotations

from longvec.api.worker import QueueFullError, WorkerStoppedError
from longvec.embedder import InvalidSettingError, ModelLoadError
from longvec.index.errors import (
    CollectionClosedError,
    CollectionExistsError,
    CollectionLockedError,
    CollectionNotFoundError,
    DocumentNotFoundError,
    InvalidInputError,
    LongvecError,
    ModelMismatchError,
    UnsupportedShapeError,
)


class NotReadyError(LongvecError):
    """The server is still loading its collection and model, or failed to (HTTP 503; see ``/readyz``)."""

    retry_after = 5


# Most specific first: the first matching entry wins.
HTTP_STATUS: tuple[tuple[type[Exception], int], ...] = (
    (DocumentNotFoundError, 404),
    (CollectionNotFoundError, 404),
    (ModelMismatchError, 409),
    (CollectionExistsError, 409),
    (CollectionLockedError, 409),
    (QueueFullError, 429),
    (NotReadyError, 503),
    (WorkerStoppedError, 503),
    (CollectionClosedError, 503),
    (ModelLoadError, 503),
    (UnsupportedShapeError, 422),  # a dim / layers value outside what /info lists, like a schema violation
    (InvalidInputError, 400),
    (InvalidSettingError, 400),
)

HANDLED: tuple[type[Exception], ...] = tuple(t for t, _ in HTTP_STATUS)


def http_status(exc: Exception) -> int:
    for kind, status in HTTP_STATUS:
        if isinstance(exc, kind):
            return status
    raise TypeError(f"unmapped error {type(exc).__name__}") from exc


def error_body(exc: Exception) -> dict[str, dict[str, str]]:
    return {"error": {"type": type(exc).__name__, "message": str(exc)}}


def internal_error_body() -> dict[str, dict[str, str]]:
    return {"error": {"type": "InternalError", "message": "internal server error (logged on the server)"}}
