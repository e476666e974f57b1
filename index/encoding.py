"""Documents to chunks to model vectors, as a collection's manifest fixes them, without the collection's store.

:class:`DocumentEncoder` is what :meth:`Collection.add` runs between reading documents and writing them, and what
each worker of a distributed build (``index.ray_engine``) runs on its share: both produce the same chunks and the
same raw vectors for a document, and the collection's write path stores either.
"""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

import numpy as np

from longvec.chunking import CHUNKER_VERSION, Chunk, Chunker, TokenCounter, first_window
from longvec.chunking.languages import CODE_LANGUAGES
from longvec.chunking.types import spans_to_chunks
from longvec.embedder import EmbedderConfig, Encoder, InvalidSettingError, load_embedder
from longvec.index.errors import InvalidInputError, UnsupportedShapeError
from longvec.index.manifest import Manifest
from longvec.index.types import DOC_SYMBOL, Document


def token_counter(embedder: Encoder) -> TokenCounter:
    """Counts tokens as ``embedder`` sees a document: its own tokenizer, with its document prompt."""
    return TokenCounter(embedder.tokenizer, embedder.document_prompt)


def make_chunker(
    counter: TokenCounter,
    max_tokens: int,
    overlap_tokens: int,
    code_context: bool = True,
    path_context: bool = False,
    split_tokens: int | None = None,
) -> Chunker:
    try:
        return Chunker(counter, max_tokens, overlap_tokens, code_context, path_context, split_tokens)
    except ValueError as exc:  # the chunkers' own range checks: bad settings from the caller
        raise InvalidInputError(str(exc)) from None


def model_depth(embedder: Encoder, layers: int | None = None) -> int:
    """``layers`` checked against ``embedder``'s depth (``None``: its full depth)."""
    check = getattr(embedder, "check_layers", None)
    if check is None:
        if layers is not None:
            raise InvalidInputError("this embedder has no layer choice")
        return 0
    try:
        return int(check(layers))
    except InvalidSettingError as exc:
        raise UnsupportedShapeError(str(exc)) from None


def manifest_config(manifest: Manifest, base: EmbedderConfig | None = None, model: str | None = None) -> EmbedderConfig:
    """The embedder a collection with ``manifest`` was built with: its model, token limit, prompts and long-context
    settings, run as ``base`` says (device, precision, backend, threads); ``model`` overrides the model's path."""
    base = replace(base or EmbedderConfig(), **manifest.encoder)
    return replace(
        base,
        model=model or manifest.model,
        max_tokens=base.max_tokens or manifest.max_tokens,
        query_prefix=base.query_prefix or manifest.query_prompt,
        document_prefix=base.document_prefix or manifest.document_prompt,
    )


def check_embedder(manifest: Manifest, embedder: Encoder) -> None:
    """:class:`ModelMismatchError` unless ``embedder`` is the one that built the collection of ``manifest``."""
    manifest.check(
        model=embedder.model_id,
        model_fingerprint=embedder.fingerprint,
        dim=embedder.dim,
        max_tokens=embedder.max_tokens,
        document_prompt=embedder.document_prompt,
        query_prompt=embedder.query_prompt,
    )


def encoding_differences(made: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The settings (keys of :meth:`DocumentEncoder.info`) in which ``made`` and ``wanted`` differ, compared as JSON
    holds them (a tuple and a list of the same items are the same setting), sorted."""
    made, wanted = json.loads(json.dumps(made)), json.loads(json.dumps(wanted))
    return sorted(k for k in made.keys() | wanted.keys() if made.get(k) != wanted.get(k))


class DocumentEncoder:
    """Chunks documents and encodes their chunks as a collection with ``manifest`` does (its strategy, chunker
    settings and depth), giving vectors in the model's own space (a collection maps them into its stored space,
    calibration included, when it writes them)."""

    def __init__(self, manifest: Manifest, embedder: Encoder) -> None:
        self.manifest, self.embedder = manifest, embedder
        self.counter = token_counter(embedder)
        self.chunker = make_chunker(
            self.counter,
            manifest.max_tokens,
            manifest.overlap_tokens,
            manifest.code_context,
            manifest.path_context,
            manifest.split_tokens,
        )

    @classmethod
    def load(cls, manifest: Manifest, base: EmbedderConfig | None = None, model: str | None = None) -> DocumentEncoder:
        """The manifest's model (or ``model``, a path to the same one) loaded as :func:`manifest_config` says, and
        checked against the manifest."""
        embedder = load_embedder(manifest_config(manifest, base, model))
        check_embedder(manifest, embedder)
        return cls(manifest, embedder)

    def chunk_key(self, doc: Document) -> str:
        """What besides the text and language decides ``doc``'s chunks: the chunker version, and the path where
        chunks carry it."""
        m = self.manifest
        carried = m.path_context and m.strategy != "truncate" and doc.effective_language in CODE_LANGUAGES
        return f"{CHUNKER_VERSION}\0path={doc.source_path or ''}" if carried else CHUNKER_VERSION

    def content_hash(self, doc: Document) -> str:
        """The hash a stored copy of ``doc`` must have for ``doc`` to be left unchanged."""
        return doc.content_hash(self.chunk_key(doc))

    def chunk(self, doc: Document) -> list[Chunk]:
        """The chunks ``doc`` is stored as under the manifest's strategy."""
        language = doc.effective_language
        if self.manifest.strategy == "truncate":
            first = first_window(self.counter, doc.text, self.manifest.max_tokens)  # tokenises only a prefix
            spans = [] if first is None else [first]
            counts = self.counter.count_many([doc.text[s.start : s.end] for s in spans])
            kind = "code" if language else "text"
            return spans_to_chunks(doc.doc_id, doc.text, spans, counts, kind, language)
        chunks = self.chunker.chunk(doc.doc_id, doc.text, path=doc.source_path, language=language)
        if self.manifest.doc_vector and len(chunks) > 1:
            first = first_window(self.counter, doc.text, self.manifest.max_tokens)
            assert first is not None  # the document has chunks, so it is not blank
            text = doc.text[first.start : first.end]
            (n,) = self.counter.count_many([text])
            kind = chunks[0].kind
            chunks.append(Chunk(doc.doc_id, len(chunks), first.start, first.end, text, n, kind, language, DOC_SYMBOL))
        return chunks

    def encode(self, docs: list[tuple[Document, list[Chunk]]]) -> np.ndarray:
        """The model-space vectors of ``docs``' chunks, in order: each chunk's ``embed_text`` on its own at the
        manifest's depth, or (``late`` strategy) pooled per chunk span from the whole document read at once."""
        m = self.manifest
        if m.strategy != "late":
            texts = [c.embed_text for _, chunks in docs for c in chunks]
            layers = {"layers": m.layers} if m.layers is not None else {}  # an embedder without depths needs none
            return self.embedder.encode_documents(texts, **layers)
        encode_late = getattr(self.embedder, "encode_late", None)
        if encode_late is None:
            raise InvalidInputError(f"the {m.strategy!r} strategy needs an embedder with encode_late")
        parts = encode_late([(doc.text, [(c.start, c.end) for c in chunks]) for doc, chunks in docs]) if docs else []
        return np.concatenate(parts) if parts else np.zeros((0, m.dim), np.float32)

    def info(self) -> dict[str, Any]:
        """What a set of vectors from this encoder must share with a collection to be stored in it."""
        m = self.manifest
        return {
            "model_fingerprint": m.model_fingerprint,
            "dim": m.dim,
            "strategy": m.strategy,
            "max_tokens": m.max_tokens,
            "overlap_tokens": m.overlap_tokens,
            "code_context": m.code_context,
            "path_context": m.path_context,
            "doc_vector": m.doc_vector,
            "split_tokens": m.split_tokens,
            "layers": m.layers,
            "encoder": m.encoder,
            "chunker_version": CHUNKER_VERSION,
        }
