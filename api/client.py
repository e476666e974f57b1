"""A small client for a running ``longvec serve``: what ``longvec index/delete --server URL`` use.

Standard library only (``urllib``): the CLI talks to the server without loading the model stack. The
server's JSON errors come back as :class:`ServerError` with its type and message; an unreachable server
as :class:`ServerError` too, naming the URL.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Iterator
from typing import Any

from longvec.api.schemas import MAX_DELETES_PER_REQUEST, MAX_DOCS_PER_REQUEST
from longvec.index import AddResult, Document, LongvecError

# Bounds on one POST /documents: documents, and characters of text (one request stays a few MB).
BATCH_DOCS = 32
BATCH_CHARS = 4_000_000
# Embedding a batch on a CPU server can take minutes.
TIMEOUT_S = 600.0


class ServerError(LongvecError):
    """The server refused a request (``status``, with its error type and message) or could not be reached
    (``status`` is ``None``)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Server:
    """The REST API of one ``longvec serve`` at ``url`` (``http://host:port``)."""

    def __init__(self, url: str, timeout: float = TIMEOUT_S) -> None:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise ServerError(f"--server must be an http(s) URL like http://127.0.0.1:8000, got {url!r}")
        self.url, self.timeout = url.rstrip("/"), timeout

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.load(response)
        except urllib.error.HTTPError as exc:
            try:
                error = json.load(exc)["error"]
                message = f"{error['type']}: {error['message']}"
            except (ValueError, KeyError, TypeError):
                message = exc.reason
            raise ServerError(f"{self.url} answered {exc.code} to {method} {path}: {message}", exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ServerError(f"cannot reach the server at {self.url}: {reason}") from None

    def info(self) -> dict[str, Any]:
        return self._call("GET", "/info")

    def add(self, docs: Iterable[Document]) -> AddResult:
        """POST one batch (at most ``MAX_DOCS_PER_REQUEST`` documents); the server's counts."""
        batch = [
            {"doc_id": d.doc_id, "text": d.text, "path": d.path, "language": d.language, "metadata": d.metadata}
            for d in docs
        ]
        if len(batch) > MAX_DOCS_PER_REQUEST:
            raise ServerError(f"at most {MAX_DOCS_PER_REQUEST} documents per request, got {len(batch)}")
        return AddResult(**self._call("POST", "/documents", {"documents": batch}))

    def doc_ids(self, prefix: str = "", *, walked: bool = False) -> list[str]:
        query = urllib.parse.urlencode({"prefix": prefix, "walked": "true" if walked else "false"})
        return self._call("GET", f"/documents?{query}")["doc_ids"]

    def delete_many(self, doc_ids: Iterable[str]) -> int:
        """Delete documents, one transaction per request of up to ``MAX_DELETES_PER_REQUEST`` ids; returns how
        many were stored."""
        ids = list(doc_ids)
        return sum(
            self._call("POST", "/documents/delete", {"doc_ids": ids[i : i + MAX_DELETES_PER_REQUEST]})["deleted"]
            for i in range(0, len(ids), MAX_DELETES_PER_REQUEST)
        )


def batches(
    docs: Iterable[Document], max_docs: int = BATCH_DOCS, max_chars: int = BATCH_CHARS
) -> Iterator[list[Document]]:
    """``docs`` in request-sized groups: at most ``max_docs`` documents and about ``max_chars`` of text."""
    batch: list[Document] = []
    chars = 0
    for doc in docs:
        if batch and (len(batch) >= max_docs or chars + len(doc.text) > max_chars):
            yield batch
            batch, chars = [], 0
        batch.append(doc)
        chars += len(doc.text)
    if batch:
        yield batch
