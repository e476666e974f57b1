from __future__ import annotations

import json

import numpy as np
import pytest

from longvec.chunking import CHUNKER_VERSION
from longvec.index import (
    Collection,
    CollectionLockedError,
    CollectionNotFoundError,
    Document,
    DocumentNotFoundError,
    EncodedDocument,
    InvalidInputError,
    ModelMismatchError,
)

from fakes import KeywordEmbedder

FILLER = "This sentence is neutral filler text for the chunker. "


def doc(doc_id: str, keyword: str, position: int = 0, n_filler: int = 12) -> Document:
    parts = [FILLER] * n_filler
    parts.insert(position, f"The {keyword} section is here. ")
    return Document(doc_id, "".join(parts))


@pytest.fixture
def coll(tmp_path, fake_embedder):
    # dense by default here: these tests check exact dense scores (tests/test_lexical.py covers hybrid)
    c = Collection.create(tmp_path / "c", embedder=fake_embedder, search_mode="dense")
    yield c
    c.close()


def test_search_ranks_exactly_and_returns_spans(coll):
    coll.add([doc("a", "alpha", 0), doc("b", "beta", 5), doc("g", "gamma", 11)])
    hits = coll.search("beta", k=3)
    assert hits[0].doc_id == "b"
    assert hits[0].score == pytest.approx(1.0)
    best = hits[0].chunks[0]
    text = coll.get("b").text
    assert "beta" in text[best.start : best.end]
    assert [h.doc_id for h in coll.search("gamma", k=1)] == ["g"]
    # a keyword deep inside a long document is found: chunking, not truncation
    assert coll.get("g").n_chunks > 1


def test_k_larger_than_collection_is_clamped(coll):
    coll.add([doc("a", "alpha"), doc("b", "beta")])
    assert {h.doc_id for h in coll.search("alpha", k=50)} == {"a", "b"}


def test_upsert_replaces_chunks(coll, fake_embedder):
    coll.add([doc("a", "alpha")])
    coll.add([doc("a", "delta")])
    assert coll.search("delta", k=1)[0].score == pytest.approx(1.0)
    assert coll.search("alpha", k=1)[0].score < 0.5
    info = coll.info()
    assert info["documents"] == 1 and info["chunks"] == coll.get("a").n_chunks


def test_unchanged_documents_are_skipped_without_encoding(coll, fake_embedder):
    first = coll.add([doc("a", "alpha"), doc("b", "beta")])
    assert (first.added, first.unchanged) == (2, 0)
    calls = len(fake_embedder.calls)
    again = coll.add([doc("a", "alpha"), doc("b", "beta")])
    assert (again.added, again.updated, again.unchanged) == (0, 0, 2)
    assert len(fake_embedder.calls) == calls  # nothing to encode: the model is not called


def test_metadata_change_updates_without_reembedding(coll, fake_embedder):
    coll.add([Document("a", "alpha text", metadata={"v": 1})])
    before = sum(fake_embedder.calls)
    result = coll.add([Document("a", "alpha text", metadata={"v": 2})])
    assert result.unchanged == 1 and sum(fake_embedder.calls) == before
    assert coll.get("a").metadata == {"v": 2}


def test_delete(coll):
    coll.add([doc("a", "alpha"), doc("b", "beta")])
    coll.delete("a")
    assert [h.doc_id for h in coll.search("alpha", k=5)] == ["b"]
    with pytest.raises(DocumentNotFoundError, match="no document 'a'"):
        coll.get("a")
    with pytest.raises(DocumentNotFoundError):
        coll.delete("a")


def test_reopen_gives_identical_results(tmp_path, fake_embedder):
    root = tmp_path / "c"
    docs = [doc(f"d{i}", ["alpha", "beta", "gamma", "delta"][i % 4], i % 12) for i in range(40)]
    with Collection.create(root, embedder=fake_embedder) as c:
        c.add(docs)
        before = c.search_many(["alpha", "gamma delta"], k=10)
    with Collection.open(root, embedder=fake_embedder) as c:
        assert c.search_many(["alpha", "gamma delta"], k=10) == before
    # a stale or missing FAISS cache is rebuilt from the store
    (root / "vectors.json").unlink()
    with Collection.open(root, embedder=fake_embedder, readonly=True) as c:
        assert c.search_many(["alpha", "gamma delta"], k=10) == before


def test_open_with_another_model_is_an_error(tmp_path, fake_embedder, tokenizer):
    root = tmp_path / "c"
    Collection.create(root, embedder=fake_embedder).close()
    other = KeywordEmbedder(tokenizer)
    other.fingerprint = "another-model"
    with pytest.raises(ModelMismatchError, match="built with model 'keyword-fake' \\(fingerprint 'keyword-fake-v1'"):
        Collection.open(root, embedder=other)


def test_open_missing_collection(tmp_path):
    with pytest.raises(CollectionNotFoundError, match="no collection at"):
        Collection.open(tmp_path / "nope")


def test_single_writer(tmp_path, fake_embedder):
    root = tmp_path / "c"
    with Collection.create(root, embedder=fake_embedder):
        with pytest.raises(CollectionLockedError, match="open for writing in another process"):
            Collection.open(root, embedder=fake_embedder)
        Collection.open(root, embedder=fake_embedder, readonly=True).close()


def test_bad_requests(coll):
    coll.add([doc("a", "alpha")])
    with pytest.raises(InvalidInputError, match=r"k must be in \[1, 1000\]"):
        coll.search("alpha", k=0)
    with pytest.raises(InvalidInputError, match="non-empty string"):
        coll.search("   ")
    with pytest.raises(InvalidInputError, match="doc_id must be a non-empty string"):
        Document("", "x")


def test_truncate_strategy_keeps_only_the_head(tmp_path, fake_embedder):
    with Collection.create(tmp_path / "t", embedder=fake_embedder, strategy="truncate", search_mode="dense") as c:
        c.add([doc("head", "alpha", 0), doc("tail", "beta", 12)])
        assert c.get("tail").n_chunks == 1
        assert c.search("beta", k=2)[0].score < 0.5  # the tail was cut off: the truncation baseline
        assert c.search("alpha", k=1)[0].doc_id == "head"


def test_empty_document_is_skipped_and_counted(coll):
    result = coll.add([Document("empty", ""), doc("a", "alpha")])
    assert (result.added, result.empty) == (1, 1)
    with pytest.raises(DocumentNotFoundError):
        coll.get("empty")
    assert [h.doc_id for h in coll.search("alpha", k=5)] == ["a"]


def test_manifest_records_settings(tmp_path, fake_embedder):
    with Collection.create(tmp_path / "c", embedder=fake_embedder, overlap_tokens=4):
        pass
    m = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert m["model"] == "keyword-fake" and m["dim"] == 8 and m["strategy"] == "chunk"
    assert m["max_tokens"] == 32 and m["overlap_tokens"] == 4 and m["format_version"] == 2
    assert m["chunker_version"] == CHUNKER_VERSION and m["document_prompt"] == "" and m["longvec_version"]


def test_vectors_are_contiguous_float32_in_store(tmp_path, fake_embedder):
    with Collection.create(tmp_path / "c", embedder=fake_embedder) as c:
        c.add([doc("a", "alpha")])
        ((ids, vectors),) = c._store.iter_vectors(8)
    assert vectors.dtype == np.float32 and vectors.shape == (len(ids), 8)


def test_interrupted_vector_update_is_rebuilt_not_saved_as_fresh(tmp_path, fake_embedder, monkeypatch):
    root = tmp_path / "c"
    with Collection.create(root, embedder=fake_embedder) as c:
        c.add([doc("a", "alpha")])
        assert c.search("alpha", k=1)[0].doc_id == "a"
        index = c._vectors.index
        original_add = index.add

        def interrupted(*args, **kwargs):
            raise KeyboardInterrupt

        c.add([doc("g", "gamma")])  # committed to the store; the index catches up on the next search
        monkeypatch.setattr(index, "add", interrupted)
        with pytest.raises(KeyboardInterrupt):
            c.search("gamma", k=1)
        monkeypatch.setattr(index, "add", original_add)
        assert c.search("gamma", k=1)[0].doc_id == "g"  # started over, not left half-updated
    with Collection.open(root, embedder=fake_embedder) as c:  # the saved index is complete
        assert c.search("gamma", k=1)[0].doc_id == "g"
        assert c._vectors.index.ntotal == c.info()["chunks"]


def test_invalid_unicode_and_metadata_are_input_errors():
    with pytest.raises(InvalidInputError, match="text of 'x' is not valid Unicode"):
        Document("x", "bad \ud800")
    with pytest.raises(InvalidInputError, match="not JSON-serialisable"):
        Document("x", "ok", metadata={"s": {1, 2}})


def test_add_pipeline_decides_a_repeated_document_as_if_batches_ran_one_by_one(coll, fake_embedder):
    # batches of one: the second "a" is prepared while the first may not be written yet
    docs = [doc("a", "alpha"), doc("b", "beta"), doc("a", "alpha"), doc("a", "gamma"), doc("b", "beta")]
    seen: list[tuple[int, int, int]] = []
    result = coll.add(docs, batch_docs=1, on_batch=lambda r: seen.append((r.added, r.updated, r.unchanged)))
    assert seen == [(1, 0, 0), (1, 0, 0), (0, 0, 1), (0, 1, 0), (0, 0, 1)]
    assert (result.added, result.updated, result.unchanged) == (2, 1, 2)
    assert coll.search("gamma", k=1)[0].doc_id == "a" and coll.info()["documents"] == 2


def test_a_failed_batch_keeps_the_ones_before_and_writes_none_after(coll, fake_embedder, monkeypatch):
    encode = fake_embedder.encode_documents

    def failing(texts, dim=None):
        if any("gamma" in t for t in texts):
            raise RuntimeError("encoder failed")
        return encode(texts, dim)

    monkeypatch.setattr(fake_embedder, "encode_documents", failing)
    written: list[int] = []
    docs = [doc("a", "alpha"), doc("b", "beta"), doc("g", "gamma"), doc("d", "delta"), doc("e", "epsilon")]
    with pytest.raises(RuntimeError, match="encoder failed"):
        coll.add(docs, batch_docs=1, on_batch=lambda r: written.append(r.added))
    assert coll.doc_ids() == ["a", "b"] and written == [1, 1]
    monkeypatch.setattr(fake_embedder, "encode_documents", encode)
    assert coll.add(docs, batch_docs=2).added == 3  # nothing half-written: the rest adds cleanly
    assert coll.doc_ids() == ["a", "b", "d", "e", "g"]


def test_batches_committed_before_a_failing_input_are_reported(coll) -> None:
    def docs():
        yield doc("a", "alpha")
        yield doc("b", "beta")
        yield doc("g", "gamma")
        raise ValueError("bad line 4")

    reported: list[int] = []
    with pytest.raises(ValueError, match="bad line 4"):
        coll.add(docs(), batch_docs=1, on_batch=lambda r: reported.append(r.added))
    # the three whole batches read before the failure are written and reported, however far the pipeline had got
    assert coll.doc_ids() == ["a", "b", "g"] and reported == [1, 1, 1]


# -- documents encoded elsewhere (Collection.add_encoded, what a distributed build stores) ------------------


def _store_table(c: Collection) -> tuple[list, np.ndarray]:
    doc_ids, row_doc, vectors, tokens = c.chunk_vectors()
    rows = [(doc_ids[d], int(n)) for d, n in zip(row_doc, tokens, strict=True)]
    return rows, vectors


@pytest.mark.parametrize("doc_vector", [False, True])
def test_add_encoded_stores_what_add_would(tmp_path, fake_embedder, doc_vector):
    docs = [doc("a", "alpha", 3, n_filler=60), doc("b", "beta"), Document("e", "  "), doc("a", "gamma", 1, 40)]
    with Collection.create(tmp_path / "local", embedder=fake_embedder, doc_vector=doc_vector) as local:
        expected = local.add(docs)
        want = _store_table(local)
    with Collection.create(tmp_path / "c", embedder=fake_embedder, doc_vector=doc_vector) as c:
        encoder = c.encoding  # as a worker elsewhere would run it
        items = []
        for d in docs:
            chunks = encoder.chunk(d) if d.text.strip() else None
            vectors = encoder.encode([(d, chunks)]) if chunks else None
            items.append(EncodedDocument(d, chunks, vectors))
        calls = len(fake_embedder.calls)
        got = c.add_encoded(items, encoding=encoder.info())
        assert len(fake_embedder.calls) == calls  # nothing encoded here
        assert (got.added, got.empty, got.chunks, got.tokens) == (expected.added, expected.empty, expected.chunks,
                                                                   expected.tokens)  # fmt: skip
        rows, vectors = _store_table(c)
        assert rows == want[0] and np.array_equal(vectors, want[1])
        assert c.get("a").text == docs[-1].text  # the last occurrence won
        assert [h.doc_id for h in c.search("gamma", k=2)] == ["a", "b"]
        again = c.add_encoded([EncodedDocument(d) for d in docs[1:]], encoding=encoder.info())
        assert (again.unchanged, again.added, again.updated) == (2, 0, 0)  # skipped without chunks or vectors


def test_add_encoded_reencodes_what_does_not_fit_and_refuses_other_settings(tmp_path, fake_embedder):
    with Collection.create(tmp_path / "c", embedder=fake_embedder, search_mode="dense") as c:
        d = doc("a", "alpha")
        chunks = c.encoding.chunk(d)
        wrong = np.zeros((len(chunks) + 1, c.manifest.dim), np.float32)  # a row too many: not trusted
        calls = len(fake_embedder.calls)
        c.add_encoded([EncodedDocument(d, chunks, wrong)], encoding=c.encoding.info())
        assert len(fake_embedder.calls) == calls + 1  # encoded here instead
        assert c.search("alpha", k=1)[0].score == pytest.approx(1.0)
        other = {**c.encoding.info(), "chunker_version": "other"}
        with pytest.raises(ModelMismatchError, match="chunker_version='other'"):
            c.add_encoded([EncodedDocument(doc("b", "beta"))], encoding=other)
        assert c.doc_ids() == ["a"]
