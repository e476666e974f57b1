"""Typed errors of the embedder layer; the surfaces map each to an HTTP status and a CLI exit code."""

from __future__ import annotations


class ModelLoadError(RuntimeError):
    """The model could not be found or loaded (offline installs cannot fetch hub models)."""


class InvalidSettingError(ValueError):
    """A setting given by the caller is out of range for this model (``dim``, ``max_tokens``)."""
