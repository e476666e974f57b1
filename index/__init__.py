"""The searchable collection: FAISS vectors, SQLite store, manifest, and the add/delete/search use cases."""

from longvec.index.collection import Collection, EncodedDocument
from longvec.index.encoding import DocumentEncoder, token_counter
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
from longvec.index.lexical import FUSIONS, SEARCH_MODES, Fusion, SearchMode
from longvec.index.manifest import STRATEGIES, Manifest, Strategy, longvec_version
from longvec.index.search import (
    FUNNEL_OVERSAMPLE,
    MAX_K,
    MAX_OVERSAMPLE,
    MAX_SHORTLIST,
    check_funnel,
    check_search,
)
from longvec.index.sources import walk_paths
from longvec.index.store import StoredDocument
from longvec.index.sync import AGG_MODES, AggMode
from longvec.index.training import mined_pairs
from longvec.index.types import AddResult, ChunkHit, Document, Hit

__all__ = [
    "AGG_MODES",
    "FUNNEL_OVERSAMPLE",
    "FUSIONS",
    "MAX_K",
    "MAX_OVERSAMPLE",
    "MAX_SHORTLIST",
    "SEARCH_MODES",
    "STRATEGIES",
    "AddResult",
    "AggMode",
    "check_funnel",
    "check_search",
    "ChunkHit",
    "Collection",
    "CollectionClosedError",
    "CollectionExistsError",
    "CollectionLockedError",
    "CollectionNotFoundError",
    "Document",
    "DocumentEncoder",
    "DocumentNotFoundError",
    "EncodedDocument",
    "Fusion",
    "Hit",
    "InvalidInputError",
    "longvec_version",
    "LongvecError",
    "Manifest",
    "mined_pairs",
    "ModelMismatchError",
    "SearchMode",
    "StoredDocument",
    "Strategy",
    "token_counter",
    "UnsupportedShapeError",
    "walk_paths",
]
