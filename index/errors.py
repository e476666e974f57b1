"""Typed errors of the collection layer; api/errors.py maps each to an HTTP status and a CLI exit code."""

from __future__ import annotations


class LongvecError(Exception):
    """Base class of every error longvec raises on purpose."""


class InvalidInputError(LongvecError, ValueError):
    """A request or input record is malformed (names the field or line)."""


class UnsupportedShapeError(InvalidInputError):
    """A ``dim`` or ``layers`` the model or the collection does not serve (names what it does)."""


class CollectionNotFoundError(LongvecError, FileNotFoundError):
    """No collection exists at the given directory."""


class CollectionExistsError(LongvecError, FileExistsError):
    """A collection already exists where a new one was to be created."""


class ModelMismatchError(LongvecError):
    """The collection was built with another model or settings; searching it would give wrong rankings."""


class CollectionLockedError(LongvecError):
    """Another process holds the collection's writer lock."""


class CollectionClosedError(LongvecError):
    """The collection was used after :meth:`Collection.close`."""


class DocumentNotFoundError(LongvecError, LookupError):
    """No document with that ``doc_id`` is stored."""


class RayRunError(RuntimeError):
    """A distributed build (``index.ray_engine``) could not encode every part, after retries: not the input's fault
    (the CLI exits 1, not 2). A rerun of the same command resumes from the shards written."""
