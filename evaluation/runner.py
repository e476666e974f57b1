"""Run retrieval systems over evaluation pools and collect metrics, throughput and index size."""

from __future__ import annotations

import importlib
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from tokenizers import Tokenizer

from longvec.chunking import Span, TokenCounter
from longvec.chunking.languages import CODE_LANGUAGES, normalize_language
from longvec.embedder import DEFAULT_MODEL, Backend, EmbedderConfig, Encoder, Precision, load_embedder, truncate
from longvec.evaluation.metrics import Run, evaluate_run
from longvec.evaluation.systems import LONGVEC_KINDS, SystemSpec
from longvec.evaluation.types import Dataset, EvalDoc
from longvec.index import Collection, Document, token_counter

if TYPE_CHECKING:
    from semantic_text_splitter import CodeSplitter, TextSplitter


class TimedEncoder:
    """Wraps an embedder: caches vectors by text (synthetic haystacks repeat prose) and times real encoding."""

    def __init__(self, embedder: Encoder) -> None:
        self.inner = embedder
        self.model_id, self.fingerprint = embedder.model_id, embedder.fingerprint
        self.dim, self.max_tokens = embedder.dim, embedder.max_tokens
        self.long_context = dict(getattr(embedder, "long_context", {}))
        self.tokenizer, self.document_prompt, self.query_prompt = (
            embedder.tokenizer,
            embedder.document_prompt,
            embedder.query_prompt,
        )
        self.counter = token_counter(embedder)
        self._cache: dict[str, np.ndarray] = {}
        self.tokens = 0
        self.seconds = 0.0

    def encode_documents(self, texts: list[str], dim: int | None = None) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            start = time.perf_counter()
            vectors = self.inner.encode_documents(missing)
            self.seconds += time.perf_counter() - start
            self.tokens += sum(min(n, self.max_tokens) for n in self.counter.count_many(missing))
            self._cache.update(zip(missing, vectors, strict=True))
        out = np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)
        return truncate(out, dim) if dim and dim < self.dim else out

    def encode_queries(self, texts: list[str], dim: int | None = None) -> np.ndarray:
        return self.inner.encode_queries(texts, dim)

    def encode_late(self, docs: list[tuple[str, list[tuple[int, int]]]]) -> list[np.ndarray]:
        start = time.perf_counter()
        out = self.inner.encode_late(docs)
        self.seconds += time.perf_counter() - start
        self.tokens += sum(self.counter.count_many([text for text, _ in docs]))
        return out


@dataclass
class SystemResult:
    """One system on one pool: mean metrics per bucket, per-query metrics (for paired tests), cost; ``run``
    is the ranking itself (written as TREC or JSONL run files, not into the results JSON)."""

    system: str
    dataset: str
    metrics: dict[str, dict[str, float]]
    per_query: dict[str, dict[str, float]] = field(default_factory=dict)
    run: Run = field(default_factory=dict, repr=False)
    encode_tokens: int = 0
    encode_seconds: float = 0.0
    index_bytes: int = 0
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)
    synthetic: bool = False  # a passkey/needle pool: reported as acc@1 by length

    @property
    def tokens_per_second(self) -> float:
        return self.encode_tokens / self.encode_seconds if self.encode_seconds else 0.0


def top_k_by_doc(scores: np.ndarray, row_doc: np.ndarray, doc_ids: list[str], k: int) -> list[list[tuple[str, float]]]:
    """Per query, the ``k`` best documents where a document scores as its best row (rows grouped by doc)."""
    n_docs = len(doc_ids)
    best = np.full((scores.shape[0], n_docs), -np.inf, dtype=np.float32)
    for q in range(scores.shape[0]):
        np.maximum.at(best[q], row_doc, scores[q])
    k = min(k, n_docs)
    order = np.argsort(-best, axis=1, kind="stable")[:, :k]
    return [[(doc_ids[j], float(best[q, j])) for j in order[q] if np.isfinite(best[q, j])] for q in range(len(order))]


def naive_windows(counter: TokenCounter, text: str, max_tokens: int) -> list[Span]:
    """Fixed windows of ``max_tokens - specials`` token ids each, cut wherever the count falls."""
    size = max_tokens - counter.n_special
    offsets = counter.token_offsets(text)
    return [Span(offsets[i][0], offsets[min(i + size, len(offsets)) - 1][1]) for i in range(0, len(offsets), size)]


class SemanticSplitter:
    """``semantic-text-splitter`` sized by the embedder's tokenizer, so every chunk fits ``max_tokens``.

    Code in a language with a tree-sitter grammar goes through its ``CodeSplitter`` (the grammar table is
    ``chunking.languages``), everything else through its ``TextSplitter``. The splitter counts content tokens
    only, so its capacity is ``max_tokens`` less the special tokens and document prompt the embedder adds; each
    chunk is re-counted with ``counter`` and one over the limit is an error, never a silent truncation.
    """

    def __init__(self, counter: TokenCounter, tokenizer: Tokenizer, max_tokens: int) -> None:
        self.counter, self.max_tokens = counter, max_tokens
        self.capacity = max_tokens - counter.n_special
        # A private copy without truncation or padding (a model's tokenizer.json often ships with both on).
        self._tokenizer = Tokenizer.from_str(tokenizer.to_str())
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self._splitters: dict[str | None, CodeSplitter | TextSplitter] = {}

    def splitter(self, language: str | None) -> CodeSplitter | TextSplitter:
        """The ``CodeSplitter`` for ``language``'s grammar; the ``TextSplitter`` for prose or a language without one."""
        from semantic_text_splitter import CodeSplitter, TextSplitter

        spec = CODE_LANGUAGES.get(normalize_language(language)) if language else None
        key = spec.name if spec else None
        if key not in self._splitters:
            if spec is None:
                self._splitters[key] = TextSplitter.from_huggingface_tokenizer(self._tokenizer, self.capacity)
            else:  # the splitter takes the grammar wheel's raw language pointer, not a tree_sitter.Language
                grammar = getattr(importlib.import_module(spec.module), spec.loader)()
                self._splitters[key] = CodeSplitter.from_huggingface_tokenizer(grammar, self._tokenizer, self.capacity)
        return self._splitters[key]

    def pieces(self, doc: EvalDoc) -> list[str]:
        """The chunk texts of ``doc`` (whitespace-trimmed, as the splitter returns them)."""
        chunks = self.splitter(doc.language).chunks(doc.text)
        for chunk, n in zip(chunks, self.counter.count_many(chunks), strict=True):
            if n > self.max_tokens:
                raise RuntimeError(
                    f"semantic-text-splitter chunk of {n} tokens in {doc.doc_id!r} exceeds max_tokens "
                    f"{self.max_tokens}: {chunk[:60]!r}"
                )
        return chunks


def _dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


class Runner:
    """Runs systems on pools; one model per ``max_tokens`` is loaded once and shared."""

    def __init__(
        self,
        *,
        k: int = 10,
        model: str | None = None,
        work_dir: Path | None = None,
        precision: Precision = "auto",
        backend: Backend = "auto",
    ) -> None:
        self.k = k
        self.model = model
        self.engine = {"precision": precision, "backend": backend}
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="longvec-eval-"))
        self._encoders: dict[tuple[int, str], TimedEncoder] = {}

    def encoder(self, max_tokens: int, settings: dict[str, object] | None = None) -> TimedEncoder:
        """The shared encoder for a token limit and ``EmbedderConfig`` settings (long context, precision)."""
        settings = self.engine | (settings or {})
        key = (max_tokens, repr(sorted(settings.items())))
        if key not in self._encoders:
            config = EmbedderConfig(model=self.model or DEFAULT_MODEL, max_tokens=max_tokens, **settings)
            self._encoders[key] = TimedEncoder(load_embedder(config))
        return self._encoders[key]

    def run(self, spec: SystemSpec, ds: Dataset) -> SystemResult:
        start = time.perf_counter()
        enc = self.encoder(spec.max_tokens, spec.encoder_settings) if spec.dense else None
        tokens0, seconds0 = (enc.tokens, enc.seconds) if enc else (0, 0.0)
        if spec.kind in LONGVEC_KINDS:
            run, index_bytes = self._run_longvec(spec, ds)
        elif enc is not None:
            run, index_bytes = self._run_rows(enc, ds, self._pieces(spec, enc))
        else:
            run, index_bytes = self._run_bm25(ds)
        means, per_query = evaluate_run(run, ds.qrels, ds.queries)
        result = SystemResult(spec.name, ds.name, means, per_query=per_query, run=run)
        if enc is not None:
            result.encode_tokens, result.encode_seconds = enc.tokens - tokens0, enc.seconds - seconds0
        result.index_bytes, result.seconds = index_bytes, time.perf_counter() - start
        return result

    def _run_longvec(self, spec: SystemSpec, ds: Dataset) -> tuple[Run, int]:
        enc = self.encoder(spec.max_tokens, spec.encoder_settings)
        root = self.work_dir / f"{ds.name}-{spec.name}".replace(" ", "_")
        shutil.rmtree(root, ignore_errors=True)
        queries = [q.text for q in ds.queries]
        # The product path, as a user's call: index the documents, then search with the system's options.
        settings = {
            "strategy": spec.kind,
            "overlap_tokens": spec.overlap,
            "code_context": spec.context,
            "path_context": spec.path,
            "doc_vector": spec.docvec,
            "split_tokens": spec.split,
            "alpha": spec.alpha,  # the weights are the collection's (None: its defaults), as a user sets them
            "text_alpha": spec.text_alpha,
        }
        with Collection.create(root, embedder=enc, **settings) as coll:
            coll.add(
                Document(d.doc_id, d.text, language=d.language, path=d.path if spec.path else None) for d in ds.docs
            )
            mode, fusion, _, _ = spec.channels
            hits = coll.search_many(
                queries, k=self.k, dim=spec.dim, agg=spec.agg, mode=mode, fusion=fusion, proximity=spec.prox
            )
        run = {q.qid: [(h.doc_id, h.score) for h in hs] for q, hs in zip(ds.queries, hits, strict=True)}
        size = _dir_bytes(root)
        shutil.rmtree(root, ignore_errors=True)
        return run, size

    def _pieces(self, spec: SystemSpec, enc: TimedEncoder) -> Callable[[EvalDoc], list[str]]:
        """How a row baseline cuts a document into the texts it embeds."""
        if spec.kind == "st":
            return lambda d: [d.text]  # the whole document: the model truncates at max_tokens
        if spec.kind == "windows":
            return lambda d: [d.text[s.start : s.end] for s in naive_windows(enc.counter, d.text, spec.max_tokens)]
        if spec.kind == "sts":
            return SemanticSplitter(enc.counter, enc.tokenizer, spec.max_tokens).pieces
        raise ValueError(f"system kind {spec.kind!r} embeds no rows")

    def _run_rows(self, enc: TimedEncoder, ds: Dataset, pieces: Callable[[EvalDoc], list[str]]) -> tuple[Run, int]:
        """Exact search over the rows ``pieces`` cuts from each document; a document scores as its best row."""
        texts: list[str] = []
        row_doc: list[int] = []
        for i, d in enumerate(ds.docs):
            rows = pieces(d)
            texts += rows
            row_doc += [i] * len(rows)
        vectors = enc.encode_documents(texts)
        q = enc.encode_queries([x.text for x in ds.queries])
        ranked = top_k_by_doc(q @ vectors.T, np.asarray(row_doc), [d.doc_id for d in ds.docs], self.k)
        return {x.qid: r for x, r in zip(ds.queries, ranked, strict=True)}, vectors.nbytes

    def _run_bm25(self, ds: Dataset) -> tuple[Run, int]:
        import bm25s

        retriever = bm25s.BM25()
        retriever.index(
            bm25s.tokenize([d.text for d in ds.docs], stopwords="en", show_progress=False), show_progress=False
        )
        k = min(self.k, len(ds.docs))
        tokens = bm25s.tokenize([q.text for q in ds.queries], stopwords="en", show_progress=False)
        ids, scores = retriever.retrieve(tokens, k=k, show_progress=False)
        run = {
            q.qid: [(ds.docs[int(j)].doc_id, float(s)) for j, s in zip(ids[i], scores[i], strict=True)]
            for i, q in enumerate(ds.queries)
        }
        size = (
            sum(getattr(a, "nbytes", 0) for a in retriever.scores.values()) if isinstance(retriever.scores, dict) else 0
        )
        return run, size
