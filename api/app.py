"""The REST app: parse, call one collection method, format. CPU work runs in plain ``def`` handlers
(FastAPI's thread pool), never on the event loop."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from longvec.api.errors import HANDLED, error_body, http_status, internal_error_body
from longvec.api.schemas import (
    MAX_DOC_CHARS,
    MAX_DOCS_PER_REQUEST,
    MAX_QUERY_CHARS,
    AddRequest,
    AddResponse,
    DeleteRequest,
    DeleteResponse,
    DocumentOut,
    SearchRequest,
    SearchResponse,
)
from longvec.index import Collection, Document, longvec_version


def get_collection(request: Request) -> Collection:
    """The app's one shared collection."""
    return request.app.state.collection


CollectionDep = Annotated[Collection, Depends(get_collection)]


def create_app(collection: Collection, *, close_on_shutdown: bool = True) -> FastAPI:
    """An app serving ``collection`` (already open; one shared instance for all requests)."""

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        if close_on_shutdown:
            collection.close()

    app = FastAPI(title="longvec", version=longvec_version(), lifespan=lifespan)
    app.state.collection = collection

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
            return JSONResponse(status_code=http_status(exc), content=error_body(exc))

    @app.exception_handler(Exception)
    async def on_internal_error(_: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises the exception after this answer, so the server logs it with its traceback.
        return JSONResponse(status_code=500, content=internal_error_body())

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/info")
    def info(c: CollectionDep) -> dict[str, object]:
        data = c.info()
        data["limits"] = {
            **data["limits"],
            "max_query_chars": MAX_QUERY_CHARS,
            "max_docs_per_request": MAX_DOCS_PER_REQUEST,
            "max_doc_chars": MAX_DOC_CHARS,
        }
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
        return SearchResponse.model_validate({"hits": [h.to_dict() for h in hits]})

    @app.post("/documents")
    def add_documents(req: AddRequest, c: CollectionDep) -> AddResponse:
        docs = [Document(d.doc_id, d.text, d.path, d.language, d.metadata) for d in req.documents]
        return AddResponse.model_validate(asdict(c.add(docs)))

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

    return app
