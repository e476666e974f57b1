"""The searchable collection: FAISS vectors, SQLite store, manifest, and the add/delete/search use cases."""

from index.collection import MAX_K, AddResult, ChunkHit, Collection, Document, Hit
from index.errors import (
    CollectionExistsError,
    CollectionLockedError,
    CollectionNotFoundError,
    DocumentNotFoundError,
    InvalidInputError,
    LongvecError,
    ModelMismatchError,
)
from index.manifest import STRATEGIES, Manifest, Strategy
from index.store import StoredDocument

__all__ = [
    "MAX_K",
    "STRATEGIES",
    "AddResult",
    "ChunkHit",
    "Collection",
    "CollectionExistsError",
    "CollectionLockedError",
    "CollectionNotFoundError",
    "Document",
    "DocumentNotFoundError",
    "Hit",
    "InvalidInputError",
    "LongvecError",
    "Manifest",
    "ModelMismatchError",
    "Strategy",
    "StoredDocument",
]
