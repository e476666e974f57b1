"""The REST app: parse, call one collection method, format. CPU work runs in plain ``def`` handlers
(FastAPI's thread pool), never on the event loop; every model call goes through one :class:`ModelWorker`.

The app can start before its collection is open (``open_collection``: loaded on a thread at startup, so the
server answers ``/livez`` at once and ``/readyz`` 503 until the collection and model are loaded). ``api.service``
guards every request (keys, limits, request ids, metrics, logs).
"""

from __future__ import annotations

import base64
import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import asdict
from importlib import resources
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
from longvec.index import Collection, Document, InvalidInputError, longvec_version

log = logging.getLogger("longvec.server")


class _State:
    """The app's collection once loaded, or why it is not (yet)."""

    def __init__(self) -> None:
        self.collection: Collection | None = None
        self.worker: ModelWorker | None = None
        self.error: str | None = None
        self.ready = threading.Event()


def get_collection(request: Request) -> Collection:
    """The app's one shared collection (503 until it is loaded)."""
    state: _State = request.app.state.longvec
    if state.collection is None:
        raise NotReadyError(state.error or "the collection and model are still loading")
    return state.collection


CollectionDep = Annotated[Collection, Depends(get_collection)]


def create_app(
    collection: Collection | None = None,
    *,
    open_collection: Callable[[], Collection] | None = None,
    settings: ServiceSettings | None = None,
    close_on_shutdown: bool = True,
) -> FastAPI:
    """An app serving ``collection`` (already open), or the one ``open_collection`` opens on a thread at
    startup; one shared instance for all requests, its encodes on one :class:`ModelWorker`."""
    if (collection is None) == (open_collection is None):
        raise ValueError("give either a collection or open_collection")
    settings = settings or ServiceSettings()
    state, metrics = _State(), Metrics()

    def attach(c: Collection) -> None:
        def counted(requests: int, _texts: int) -> None:
            metrics.query_batches.inc()
            metrics.query_requests.inc(requests)

        state.worker = ModelWorker(c.embedder, max_pending=settings.max_queue, on_query_batch=counted)
        c.embedder = state.worker
        state.collection = c
        metrics.ready.set(1)
        state.ready.set()

    def load() -> None:
        try:
            assert open_collection is not None
            attach(open_collection())
            log.info("ready")
        except Exception as exc:  # readiness reports it; the process stays up to say why
            state.error = f"the collection failed to load: {type(exc).__name__}: {exc}"
            log.exception("the collection failed to load")
            state.ready.set()

    if collection is not None:
        attach(collection)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        loader = None
        if open_collection is not None:
            loader = threading.Thread(target=load, name="longvec-load", daemon=True)
            loader.start()
        yield
        if loader is not None:
            loader.join()
        c, worker = state.collection, state.worker
        if c is not None and worker is not None:
            c.embedder = worker.wrapped
        if close_on_shutdown and c is not None:
            c.close()
        if worker is not None:
            worker.close()

    app = FastAPI(title="longvec", version=longvec_version(), lifespan=lifespan)
    app.state.longvec = state
    app.state.metrics = metrics

    def route_of(scope: dict[str, Any]) -> str:
        for route in app.router.routes:
            if route.matches(scope)[0] == Match.FULL:
                return getattr(route, "path", "other")
        return "unmatched"

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

    @app.get("/livez")
    def livez() -> dict[str, str]:
        """The process answers (public)."""
        return {"status": "alive"}

    @app.get("/readyz", responses={503: {"description": "loading, or failed to load"}})
    def readyz() -> JSONResponse:
        """200 once the collection and the model are loaded, 503 before (public)."""
        if state.collection is not None:
            return JSONResponse({"status": "ready"})
        status = "failed" if state.error else "loading"
        body = {"status": status, **({"error": state.error} if state.error else {})}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})

    @app.get("/health", responses={503: {"description": "loading, or failed to load"}})
    def health() -> JSONResponse:
        """The older name of /readyz, kept for existing clients: ``{"status": "ok"}`` once ready, 503 before."""
        if state.collection is not None:
            return JSONResponse({"status": "ok"})
        return readyz()

    @app.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    def prometheus_metrics() -> Response:
        """Prometheus text format: requests and latency by route and status, queue depth, tokens encoded,
        documents and chunks."""
        if state.collection is not None and state.worker is not None:
            counts = state.collection.counts()
            metrics.documents.set(counts["documents"])
            metrics.chunks.set(counts["chunks"])
            metrics.queue.set(state.worker.depth)
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # -- the collection --------------------------------------------------------------------------------

    @app.get("/info")
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

    @app.post("/search")
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
            funnel=req.funnel,
            oversample=req.oversample,
        )
        if req.mode != "lexical" and (req.mode is not None or c.manifest.search_mode != "lexical"):
            metrics.tokens.labels("queries").inc(c.counter.count(req.query))
        return SearchResponse.model_validate({"hits": [h.to_dict() for h in hits]})

    @app.post("/documents")
    def add_documents(req: AddRequest, c: CollectionDep) -> AddResponse:
        """Add or replace documents; the reply comes after they are committed (durable)."""
        _check_chars(sum(len(d.text) for d in req.documents), settings)
        docs = [Document(d.doc_id, d.text, d.path, d.language, d.metadata) for d in req.documents]
        result = c.add(docs)
        metrics.tokens.labels("documents").inc(result.tokens)
        return AddResponse.model_validate(asdict(result))

    @app.get("/documents")
    def list_documents(c: CollectionDep, prefix: str = "", walked: bool = False) -> dict[str, list[str]]:
        """Stored doc_ids starting with ``prefix``, sorted; ``walked``: only files from directory walks."""
        return {"doc_ids": c.doc_ids(prefix, walked=walked)}

    @app.post("/documents/delete")
    def delete_documents(req: DeleteRequest, c: CollectionDep) -> DeleteResponse:
        """Delete many documents in one transaction; ids that are not stored are ignored."""
        return DeleteResponse(deleted=c.delete_many(req.doc_ids))

    @app.get("/documents/{doc_id:path}")
    def get_document(doc_id: str, c: CollectionDep) -> DocumentOut:
        return DocumentOut.model_validate(asdict(c.get(doc_id)))

    @app.delete("/documents/{doc_id:path}")
    def delete_document(doc_id: str, c: CollectionDep) -> dict[str, str]:
        c.delete(doc_id)
        return {"deleted": doc_id}

    # -- OpenAI-compatible embeddings ------------------------------------------------------------------

    def model_names(c: Collection) -> list[str]:
        name = c.manifest.model
        return [name, name.rstrip("/").rsplit("/", 1)[-1], "longvec"]

    @app.get("/v1/models")
    def list_models(c: CollectionDep) -> dict[str, Any]:
        """The collection's model, under its name (also its short name and ``longvec``), as OpenAI lists models."""
        created = 0
        return {
            "object": "list",
            "data": [{"id": c.manifest.model, "object": "model", "created": created, "owned_by": "longvec"}],
        }

    @app.post("/v1/embeddings")
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

    page = resources.files("longvec.api").joinpath("static/index.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def search_page() -> HTMLResponse:
        """A search page: a query box, ranked documents with their matching spans highlighted (no build step,
        no CDN; it calls POST /search and GET /documents/{id})."""
        return HTMLResponse(page)

    return app


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
