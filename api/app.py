"""The REST app: parse, call one collection method, format. CPU work runs in plain ``def`` handlers
(FastAPI's thread pool), never on the event loop; every model call goes through one :class:`ModelWorker`.

The app can start before its collection is open (``open_collection``: loaded on a thread at startup, so the
server answers ``/livez`` at once and ``/readyz`` 503 until the collection and model are loaded), and can serve
every collection under a data root at ``/collections/{name}/`` (:class:`Collections`). ``api.service`` guards
every request (keys, limits, request ids, metrics, logs).
"""

from __future__ import annotations

import asyncio
import base64
import html
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from longvec.api.errors import HANDLED, NotReadyError, error_body, http_status, internal_error_body
from longvec.api.schemas import (
    MAX_DOC_CHARS,
    MAX_DOCS_PER_REQUEST,
    MAX_QUERY_CHARS,
    AddRequest,
    AddResponse,
    DeleteRequest,
    DeleteResponse,
    DocumentOut,
    EmbeddingsRequest,
    EmbeddingsResponse,
    SearchRequest,
    SearchResponse,
)
from longvec.api.service import Guard, Metrics, ServiceSettings
from longvec.api.worker import ModelWorker
from longvec.index import (
    Collection,
    CollectionNotFoundError,
    Document,
    InvalidInputError,
    ModelMismatchError,
    longvec_version,
)

log = logging.getLogger("longvec.server")


SHUTDOWN_WAIT = 30.0  # seconds shutdown waits for handlers still running after the server's own drain
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def collection_dir(root: Path, name: str) -> Path:
    """The directory of collection ``name`` under the data ``root``: a plain name (letters, digits, ``.``, ``_``,
    ``-``; no path separators, not ``..``) whose directory, symlinks resolved, is directly inside the root;
    :class:`InvalidInputError` otherwise, :class:`CollectionNotFoundError` if it holds no collection."""
    if not NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidInputError(f"collection name {name!r} is not a plain name (letters, digits, '.', '_', '-')")
    base = root.resolve()
    path = (base / name).resolve()
    if path.parent != base:
        raise InvalidInputError(f"collection {name!r} resolves outside the data root")
    if not (path / "manifest.json").is_file():
        raise CollectionNotFoundError(f"no collection {name!r} under the data root")
    return path


class Collections:
    """The collections a server holds, and why they are not loaded (yet): one (``longvec serve --collection``) or
    every collection under a data root (``--data-root``: loaded at startup, and any added later on its first
    request). Collections with the same model share one embedder and one :class:`ModelWorker`."""

    def __init__(self, settings: ServiceSettings, metrics: Metrics, open_at: Callable[..., Collection]) -> None:
        self.settings, self.metrics, self._open_at = settings, metrics, open_at
        self.single: Collection | None = None
        self.root: Path | None = None
        self.named: dict[str, Collection] = {}
        self.workers: list[ModelWorker] = []
        self.error: str | None = None
        self.loaded = False
        self._lock = threading.Lock()

    @property
    def all(self) -> dict[str, Collection]:
        if self.single is not None:
            return {self.single.root.name: self.single}
        return dict(self.named)

    def attach(self, c: Collection) -> Collection:
        """``c`` with its encodes on the worker of its model (a new one for a new model)."""
        if not isinstance(c.embedder, ModelWorker):

            def counted(requests: int, _texts: int) -> None:
                self.metrics.query_batches.inc()
                self.metrics.query_requests.inc(requests)

            worker = ModelWorker(c.embedder, max_pending=self.settings.max_queue, on_query_batch=counted)
            self.workers.append(worker)
            c.embedder = worker
        return c

    def get(self, name: str | None) -> Collection:
        """The collection a request names (``None``: the single one); 503 until loaded, 400 / 404 for a bad name."""
        if name is None or self.root is None:
            if self.single is None:
                raise NotReadyError(self.error or "the collection and model are still loading")
            return self.single
        if not self.loaded:
            raise NotReadyError(self.error or "the collections are still loading")
        return self._named(name)

    def _named(self, name: str) -> Collection:
        assert self.root is not None
        if name in self.named:
            return self.named[name]
        path = collection_dir(self.root, name)
        with self._lock:  # opened once, however many requests ask at once
            if name not in self.named:
                self.named[name] = self._open(path)
            return self.named[name]

    def _open(self, path: Path) -> Collection:
        """The collection at ``path``, sharing the embedder of an open collection with the same model if any."""
        for worker in self.workers:
            try:
                return self.attach(self._open_at(path, embedder=worker))
            except ModelMismatchError:
                continue
        return self.attach(self._open_at(path))

    def load_root(self) -> None:
        """Open every collection under the data root."""
        assert self.root is not None
        for path in sorted(self.root.iterdir()):
            if NAME.fullmatch(path.name) and (path / "manifest.json").is_file():
                try:
                    self._named(path.name)
                except InvalidInputError as exc:  # a symlink out of the root: never served
                    log.warning("not serving %s: %s", path, exc)

    def close(self, close_collections: bool) -> None:
        """Stop the workers, then give the collections their own embedders back and close them."""
        for worker in self.workers:
            worker.close()
        for c in self.all.values():
            if isinstance(c.embedder, ModelWorker):
                c.embedder = c.embedder.wrapped
            if close_collections:
                c.close()


def get_collection(request: Request) -> Collection:
    """The collection a request is for: the server's one, or the one its path names (``/collections/{name}/...``)."""
    collections: Collections = request.app.state.longvec
    return collections.get(request.path_params.get("name"))


CollectionDep = Annotated[Collection, Depends(get_collection)]


def create_app(
    collection: Collection | None = None,
    *,
    open_collection: Callable[[], Collection] | None = None,
    data_root: Path | None = None,
    open_at: Callable[..., Collection] | None = None,
    settings: ServiceSettings | None = None,
    close_on_shutdown: bool = True,
) -> FastAPI:
    """An app serving one collection -- ``collection`` (already open), or the one ``open_collection`` opens on a
    thread at startup -- at ``/``, or every collection under ``data_root`` at ``/collections/{name}/`` (opened by
    ``open_at(path, embedder=None)``, default ``Collection.open``). Encodes run on one :class:`ModelWorker` per
    model."""
    if sum(x is not None for x in (collection, open_collection, data_root)) != 1:
        raise ValueError("give one of collection, open_collection or data_root")
    settings = settings or ServiceSettings()
    metrics = Metrics()
    collections = Collections(settings, metrics, open_at or _open_at)
    collections.root = Path(data_root) if data_root is not None else None

    def load() -> None:
        try:
            if open_collection is not None:
                collections.single = collections.attach(open_collection())
            else:
                collections.load_root()
            collections.loaded = True
            metrics.ready.set(1)
            log.info("ready")
        except Exception as exc:  # readiness reports it; the process stays up to say why
            collections.error = f"failed to load: {type(exc).__name__}: {exc}"
            log.exception("failed to load")

    if collection is not None:
        collections.single = collections.attach(collection)
        collections.loaded = True
        metrics.ready.set(1)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = None
        if collection is None:
            loader = threading.Thread(target=load, name="longvec-load", daemon=True)
            loader.start()
        yield
        # The server stopped taking requests and waited for those in flight (uvicorn's graceful drain). Handlers
        # it gave up on may still run in threads: give them a while more, then stop the model workers (what is
        # still queued fails with 503), then close the collections (each waits for a running add).
        deadline = time.monotonic() + SHUTDOWN_WAIT
        while metrics.active > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if loader is not None:
            loader.join()
        collections.close(close_on_shutdown)

    app = FastAPI(title="longvec", version=longvec_version(), lifespan=lifespan)
    app.state.longvec = collections
    app.state.metrics = metrics

    def route_of(scope: dict[str, Any]) -> str:
        """The route template a request matches (by path, whatever its method), for metric labels."""
        partial = None
        for route in app.router.routes:
            match = route.matches(scope)[0]
            if match == Match.FULL:
                return getattr(route, "path", "other")
            if match == Match.PARTIAL and partial is None:
                partial = getattr(route, "path", "other")
        return partial or "unmatched"

    app.add_middleware(Guard, settings=settings, metrics=metrics, route_of=route_of)

    @app.exception_handler(StarletteHTTPException)
    async def on_http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Unknown routes and methods answer in the same error format as everything else.
        kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "HTTPError")
        body = {"error": {"type": kind, "message": str(exc.detail)}}
        return JSONResponse(status_code=exc.status_code, content=body, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def on_validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body')}: {e['msg']}" for e in exc.errors())
        body = {"error": {"type": "ValidationError", "message": details or "invalid request"}}
        return JSONResponse(status_code=422, content=body)

    for kind in HANDLED:

        @app.exception_handler(kind)
        async def on_error(_: Request, exc: Exception) -> JSONResponse:
            retry = getattr(exc, "retry_after", None)
            headers = {"Retry-After": str(retry)} if retry is not None else None
            return JSONResponse(status_code=http_status(exc), content=error_body(exc), headers=headers)

    @app.exception_handler(Exception)
    async def on_internal_error(_: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises the exception after this answer, so the server logs it with its traceback.
        return JSONResponse(status_code=500, content=internal_error_body())

    # -- health, readiness, metrics --------------------------------------------------------------------

    def ready() -> bool:
        return collections.loaded and (collections.single is not None or collections.root is not None)

    @app.get("/livez")
    def livez() -> dict[str, str]:
        """The process answers (public)."""
        return {"status": "alive"}

    @app.get("/readyz", responses={503: {"description": "loading, or failed to load"}})
    def readyz() -> JSONResponse:
        """200 once the collection(s) and model(s) are loaded, 503 before (public)."""
        if ready():
            return JSONResponse({"status": "ready"})
        error = collections.error
        if error and settings.auth:  # the reason names paths: only the server log tells it when keys are on
            error = "failed to load: see the server log"
        body = {"status": "failed" if error else "loading", **({"error": error} if error else {})}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})

    @app.get("/health", responses={503: {"description": "loading, or failed to load"}})
    def health() -> JSONResponse:
        """The older name of /readyz, kept for existing clients: ``{"status": "ok"}`` once ready, 503 before."""
        return JSONResponse({"status": "ok"}) if ready() else readyz()

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    def prometheus_metrics() -> Response:
        """Prometheus text format: requests and latency by route and status, queue depth, tokens encoded,
        documents and chunks per collection."""
        for name, c in collections.all.items():
            counts = c.counts()
            metrics.documents.labels(name).set(counts["documents"])
            metrics.chunks.labels(name).set(counts["chunks"])
        metrics.queue.set(sum(w.depth for w in collections.workers))
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    page = resources.files("longvec.api").joinpath("static/index.html").read_text(encoding="utf-8")
    # Added to the app itself, not through an included router, so that each is a plain route: the metrics label
    # requests with the route template they match.
    _collection_routes(app, "" if data_root is None else "/collections/{name}", settings, metrics, page)
    if data_root is not None:

        @app.get("/collections")
        def list_collections() -> dict[str, list[dict[str, Any]]]:
            """The collections under the data root that are open, with their counts."""
            return {"collections": [{"name": n, **c.counts()} for n, c in sorted(collections.all.items())]}

        @app.get("/", response_class=HTMLResponse, include_in_schema=False)
        def index_page() -> HTMLResponse:
            """Links to each collection's search page."""
            items = "".join(
                f'<li><a href="collections/{html.escape(n)}/">{html.escape(n)}</a></li>'
                for n in sorted(collections.all)
            )
            return HTMLResponse(f"<!doctype html><title>longvec</title><h1>longvec collections</h1><ul>{items}</ul>")

    return app


def _open_at(path: Path, embedder: Any = None) -> Collection:
    return Collection.open(path, embedder=embedder)


def _collection_routes(app: FastAPI, prefix: str, settings: ServiceSettings, metrics: Metrics, page: str) -> None:
    """Every route about one collection, under ``prefix`` (``""``, or ``/collections/{name}``)."""

    @app.get(prefix + "/info")
    def info(c: CollectionDep) -> dict[str, object]:
        data = c.info()
        data["limits"] = {
            **data["limits"],
            "max_query_chars": MAX_QUERY_CHARS,
            "max_docs_per_request": MAX_DOCS_PER_REQUEST,
            "max_doc_chars": MAX_DOC_CHARS,
            "max_body_bytes": settings.max_body_bytes,
            "max_request_chars": settings.max_request_chars,
        }
        data["auth"] = settings.auth
        return data

    @app.post(prefix + "/search")
    def search(req: SearchRequest, c: CollectionDep) -> SearchResponse:
        hits = c.search(
            req.query,
            k=req.k,
            dim=req.dim,
            layers=req.layers,
            agg=req.agg,
            mode=req.mode,
            fusion=req.fusion,
            alpha=req.alpha,
            text_alpha=req.text_alpha,
            proximity=req.proximity,
            funnel=req.funnel,
            oversample=req.oversample,
        )
        if req.mode != "lexical" and (req.mode is not None or c.manifest.search_mode != "lexical"):
            metrics.tokens.labels("queries").inc(c.counter.count(req.query))
        return SearchResponse.model_validate({"hits": [h.to_dict() for h in hits]})

    @app.post(prefix + "/documents")
    def add_documents(req: AddRequest, c: CollectionDep) -> AddResponse:
        """Add or replace documents; the reply comes after they are committed (durable)."""
        _check_chars(sum(len(d.text) for d in req.documents), settings)
        docs = [Document(d.doc_id, d.text, d.path, d.language, d.metadata) for d in req.documents]
        result = c.add(docs)
        metrics.tokens.labels("documents").inc(result.tokens)
        return AddResponse.model_validate(asdict(result))

    @app.get(prefix + "/documents")
    def list_documents(c: CollectionDep, prefix: str = "", walked: bool = False) -> dict[str, list[str]]:
        """Stored doc_ids starting with ``prefix``, sorted; ``walked``: only files from directory walks."""
        return {"doc_ids": c.doc_ids(prefix, walked=walked)}

    @app.post(prefix + "/documents/delete")
    def delete_documents(req: DeleteRequest, c: CollectionDep) -> DeleteResponse:
        """Delete many documents in one transaction; ids that are not stored are ignored."""
        return DeleteResponse(deleted=c.delete_many(req.doc_ids))

    @app.get(prefix + "/document")
    def get_document_by_id(id: str, c: CollectionDep) -> DocumentOut:  # noqa: A002 - the query parameter's name
        """The stored document ``id`` (a query parameter: any id, including ones with ``.`` or ``..`` segments)."""
        return DocumentOut.model_validate(asdict(c.get(id)))

    @app.get(prefix + "/documents/{doc_id:path}")
    def get_document(doc_id: str, c: CollectionDep) -> DocumentOut:
        return DocumentOut.model_validate(asdict(c.get(doc_id)))

    @app.delete(prefix + "/documents/{doc_id:path}")
    def delete_document(doc_id: str, c: CollectionDep) -> dict[str, str]:
        c.delete(doc_id)
        return {"deleted": doc_id}

    # -- OpenAI-compatible embeddings ------------------------------------------------------------------

    def model_names(c: Collection) -> list[str]:
        name = c.manifest.model
        return [name, name.rstrip("/").rsplit("/", 1)[-1], "longvec"]

    @app.get(prefix + "/v1/models")
    def list_models(c: CollectionDep) -> dict[str, Any]:
        """The collection's model, under its name (also its short name and ``longvec``), as OpenAI lists models."""
        return {
            "object": "list",
            "data": [{"id": c.manifest.model, "object": "model", "created": 0, "owned_by": "longvec"}],
        }

    @app.post(prefix + "/v1/embeddings")
    def embeddings(req: EmbeddingsRequest, c: CollectionDep) -> EmbeddingsResponse:
        """OpenAI-style embeddings in the collection's vector space (its model and calibration). ``dimensions``
        keeps a Matryoshka prefix, re-normalised. Inputs longer than the model's window are chunked and their
        chunk vectors averaged, or refused (``longvec serve --long-inputs reject``)."""
        if req.model not in model_names(c):
            raise InvalidInputError(f"model {req.model!r} is not served here: use one of {model_names(c)}")
        texts = _input_texts(req.input, c, settings)
        _check_chars(sum(len(t) for t in texts), settings)
        vectors, counts = c.embed(
            texts,
            dim=req.dimensions,
            long_inputs=settings.long_inputs,
            as_queries=req.input_type == "query",
        )
        metrics.tokens.labels("embeddings").inc(sum(counts))
        data = [
            {"object": "embedding", "index": i, "embedding": _encoded(v, req.encoding_format)}
            for i, v in enumerate(vectors)
        ]
        usage = {"prompt_tokens": sum(counts), "total_tokens": sum(counts)}
        return EmbeddingsResponse.model_validate(
            {"object": "list", "data": data, "model": c.manifest.model, "usage": usage}
        )

    # -- the search page -------------------------------------------------------------------------------

    @app.get(prefix + "/", response_class=HTMLResponse, include_in_schema=False)
    def search_page() -> HTMLResponse:
        """A search page: a query box, ranked documents with their matching spans highlighted (no build step,
        no CDN; it calls search and documents/{id} relative to its own URL)."""
        return HTMLResponse(page)


def _check_chars(total: int, settings: ServiceSettings) -> None:
    if total > settings.max_request_chars:
        raise InvalidInputError(
            f"the request's texts hold {total} characters, over the limit of {settings.max_request_chars}: "
            "send them in several requests"
        )


def _input_texts(value: str | list[str] | list[int] | list[list[int]], c: Collection, s: ServiceSettings) -> list[str]:
    """The texts of an OpenAI ``input``: a string, strings, or token ids (one input or several), which are
    decoded with the model's tokenizer."""
    if isinstance(value, str):
        items: list[Any] = [value]
    elif value and all(isinstance(v, int) for v in value):
        items = [value]
    else:
        items = list(value)
    if not items:
        raise InvalidInputError("input is empty")
    if len(items) > s.max_embedding_inputs:
        raise InvalidInputError(f"{len(items)} inputs: at most {s.max_embedding_inputs} per request")
    texts = []
    for i, item in enumerate(items):
        if isinstance(item, str):
            if not item.strip():
                raise InvalidInputError(f"input {i} is empty")
            texts.append(item)
        else:
            texts.append(c.decode_tokens(item))
    return texts


def _encoded(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":  # little-endian float32, as OpenAI's clients decode it
        return base64.b64encode(np.ascontiguousarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector.astype(np.float32).tolist()
