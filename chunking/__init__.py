"""Chunkers: segment-level for text, AST-based (tree-sitter) for code. No torch, no HTTP."""

from longvec.chunking.budget import TokenCounter
from longvec.chunking.chunker import CHUNKER_VERSION, MIN_CHUNK_TOKENS, Chunker
from longvec.chunking.code import CodeChunker
from longvec.chunking.languages import language_for_path
from longvec.chunking.text import TextChunker, first_window, token_windows
from longvec.chunking.types import Chunk, ChunkKind, Span

__all__ = [
    "CHUNKER_VERSION",
    "Chunk",
    "ChunkKind",
    "MIN_CHUNK_TOKENS",
    "Chunker",
    "CodeChunker",
    "Span",
    "TextChunker",
    "TokenCounter",
    "first_window",
    "language_for_path",
    "token_windows",
]
