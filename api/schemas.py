"""Request and response models of the REST API."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, StrictInt, field_validator

from longvec.index import FUNNEL_OVERSAMPLE, MAX_K, MAX_OVERSAMPLE, MAX_SHORTLIST, AggMode, Fusion, SearchMode

MAX_QUERY_CHARS = 8_192
MAX_DOCS_PER_REQUEST = 256
MAX_DOC_CHARS = 2_000_000
MAX_DELETES_PER_REQUEST = 10_000


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(default=10, ge=1, le=MAX_K)
    dim: StrictInt | None = Field(default=None, description="Matryoshka prefix size; one of /info's dims")
    layers: StrictInt | None = Field(
        default=None, description="encode the query with this many layers (default: the collection's; see /info)"
    )
    agg: AggMode = "maxsim"
    mode: SearchMode | None = Field(default=None, description="dense, lexical or hybrid (default: the collection's)")
    fusion: Fusion | None = Field(
        default=None, description="hybrid: rrf, convex, zscore, adaptive or pnorm (default: the collection's)"
    )
    alpha: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="hybrid: weight of the dense channel (given alone: for every chunk, prose included)",
    )
    text_alpha: float | None = Field(
        default=None, ge=0.0, le=1.0, description="hybrid: weight of the dense channel for prose chunks"
    )
    proximity: bool | None = Field(
        default=None,
        strict=True,
        description="lexical and hybrid: add term proximity to BM25 (default true; false: BM25 alone)",
    )
    funnel: StrictInt | Literal["binary"] | None = Field(
        default=None,
        description="dense: shortlist documents by this prefix size (or 'binary': sign bits), rank them by all "
        "chunks at dim",
    )
    oversample: StrictInt | None = Field(
        default=None,
        ge=1,
        le=MAX_OVERSAMPLE,
        description=f"funnel: documents shortlisted per document asked (default {FUNNEL_OVERSAMPLE}; "
        f"oversample x k at most {MAX_SHORTLIST})",
    )


class ChunkOut(BaseModel):
    chunk_id: int
    start: int
    end: int
    score: float
    symbol: str | None = None


class HitOut(BaseModel):
    doc_id: str
    score: float
    chunks: list[ChunkOut]


class SearchResponse(BaseModel):
    hits: list[HitOut]


class DocumentIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    doc_id: str = Field(min_length=1, max_length=1024, validation_alias=AliasChoices("doc_id", "id"))

    @field_validator("doc_id", mode="before")
    @classmethod
    def _numeric_id(cls, value: Any) -> Any:
        """Numeric ids are accepted as their decimal string, as in JSONL input."""
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    text: str = Field(max_length=MAX_DOC_CHARS)
    path: str | None = None
    language: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class AddRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    documents: list[DocumentIn] = Field(min_length=1, max_length=MAX_DOCS_PER_REQUEST)


class DeleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    doc_ids: list[str] = Field(min_length=1, max_length=MAX_DELETES_PER_REQUEST)


class DeleteResponse(BaseModel):
    deleted: int  # how many of the ids were stored (the others are ignored)


class AddResponse(BaseModel):
    added: int
    updated: int
    unchanged: int
    empty: int
    chunks: int
    tokens: int


class DocumentOut(BaseModel):
    doc_id: str
    text: str
    path: str | None
    language: str | None
    metadata: dict[str, Any]
    n_chunks: int
    n_tokens: int
    content_hash: str


MAX_EMBEDDING_INPUTS = 2048  # inputs per /v1/embeddings request (OpenAI's own limit)
TokenIds = Annotated[list[StrictInt], Field(min_length=1, max_length=MAX_DOC_CHARS)]


class EmbeddingsRequest(BaseModel):
    """OpenAI's embeddings request. Fields OpenAI defines and longvec has no use for (``user``) are accepted and
    ignored, as are unknown ones, so that any OpenAI client works."""

    model_config = ConfigDict(extra="ignore")
    input: (
        Annotated[str, Field(min_length=1, max_length=MAX_DOC_CHARS)]
        | Annotated[
            list[Annotated[str, Field(max_length=MAX_DOC_CHARS)]], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)
        ]
        | TokenIds
        | Annotated[list[TokenIds], Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)]
    )
    model: str = Field(max_length=1024, description="the served model: see GET /v1/models")
    dimensions: StrictInt | None = Field(
        default=None, ge=1, description="keep this many leading dimensions (Matryoshka), re-normalised"
    )
    encoding_format: Literal["float", "base64"] = "float"
    input_type: Literal["document", "query"] = Field(
        default="document", description="longvec extension: embed as a document (default) or as a search query"
    )
    user: str | None = None


class EmbeddingOut(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingsResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingOut]
    model: str
    usage: Usage
