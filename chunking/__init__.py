"""Chunkers: segment-level for text, AST-based (tree-sitter) for code. No torch, no HTTP."""

from chunking.budget import TokenCounter
from chunking.chunker import CHUNKER_VERSION, Chunker
from chunking.code import CodeChunker
from chunking.languages import language_for_path
from chunking.text import TextChunker, first_window, token_windows
from chunking.types import Chunk, ChunkKind, Span

__all__ = [
    "CHUNKER_VERSION",
    "Chunk",
    "ChunkKind",
    "Chunker",
    "CodeChunker",
    "Span",
    "TextChunker",
    "TokenCounter",
    "first_window",
    "language_for_path",
    "token_windows",
]
