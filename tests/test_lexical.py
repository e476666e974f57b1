"""The lexical channel: code-aware terms, FTS5 queries that user text cannot break, fusion, and consistency."""

from __future__ import annotations

import json
import sqlite3
import statistics

import numpy as np
import pytest

from longvec.api.cli import main
from longvec.index import Collection, Document, InvalidInputError
from longvec.index.lexical import BM25_K1, PNORM_P, RRF_K, fuse, match_expression, phrases, proximity, terms
from longvec.index.vectors import VectorIndex


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("BigInteger.gcd", ["biginteger", "big", "integer", "gcd"]),
        ("read_sensor2", ["readsensor2", "read", "sensor", "2"]),
        ("HTTPServerError", ["httpservererror", "http", "server", "error"]),
        ("parseJSON toUpperCase", ["parsejson", "parse", "json", "touppercase", "upper", "case"]),  # "to": a stopword
        ("__init__ self.x_y", ["init", "self", "xy"]),  # one-letter parts dropped, the whole kept
        ("The pass key is 48213.", ["pass", "key", "48213"]),  # stopwords dropped, numbers kept
        ("Ünïcode naïve café", ["ünïcode", "naïve", "café"]),
    ],
)
def test_identifier_terms(text, expected):
    assert terms(text) == expected


def test_stopwords_are_the_standard_english_list():
    from bm25s.stopwords import STOPWORDS_EN

    from longvec.index.lexical import STOPWORDS

    assert frozenset(STOPWORDS_EN) == STOPWORDS


def test_queries_and_documents_share_terms():
    # "big integer", "gcd" and "BigInteger" all reach a chunk defining BigInteger.gcd
    stored = set(terms("public BigInteger gcd(BigInteger val)"))
    for query in ("big integer", "gcd", "BigInteger", "big_integer"):
        assert set(terms(query)) & stored, query


@pytest.mark.parametrize(
    "query", ['"foo', "a AND", "*", "col:x", "NEAR(a b)", "x OR", "-y", "^z", "say \"hi\" 'there'", "((("]
)
def test_user_text_is_never_fts_syntax(tmp_path, fake_embedder, query):
    with Collection.create(tmp_path / "c", embedder=fake_embedder) as c:
        c.add([Document("a", "foo AND bar near col x y z hi there alpha"), Document("b", "beta")])
        hits = c.search(query, k=2, mode="lexical")  # never an FTS5 syntax error
    expression = match_expression(query)
    assert expression is None or all(part.startswith('"') and part.endswith('"') for part in expression.split(" OR "))
    if expression is not None:
        assert [h.doc_id for h in hits] == ["a"]


def test_a_word_fts5_would_split_is_dropped_from_the_query_not_an_error(tmp_path, fake_embedder):
    # U+19B0 is a letter to Python's \w but a separator to the unicode61 tables of SQLite 3.40: quoted, "abᦰcd"
    # is a two-token phrase there, which a detail=column table refuses. The query searches with its other terms
    # (an SQLite whose tables know the letter reads the word as one token and finds "b" by it).
    with Collection.create(tmp_path / "c", embedder=fake_embedder) as c:
        c.add([Document("a", "alpha beta"), Document("b", "gamma abᦰcd")])
        one_token = c._store._one_token('"abᦰcd"')
        for mode in ("lexical", "hybrid"):
            assert "a" in {h.doc_id for h in c.search("abᦰcd alpha", k=2, mode=mode)}, mode
        assert [h.doc_id for h in c.search("abᦰcd", k=2, mode="lexical")] == (["b"] if one_token else [])


def test_a_query_of_only_stopwords_finds_nothing_lexically(tmp_path, fake_embedder):
    with Collection.create(tmp_path / "c", embedder=fake_embedder) as c:
        c.add([Document("a", "alpha is the first")])
        assert match_expression("the of and") is None
        assert c.search("the of and", mode="lexical") == []
        assert [h.doc_id for h in c.search("the alpha", mode="hybrid")] == ["a"]


def test_rrf_and_convex_fusion_on_a_known_example():
    dense = [(1, 0.9), (2, 0.8), (5, 0.5), (3, 0.1)]
    lexical = [(3, 12.0), (2, 11.0), (4, 1.0)]
    rrf = fuse(dense, lexical, fusion="rrf", alpha=0.5)
    # chunk 2, second in both channels, beats 3 (first and fourth) and 1 (first in one only); ties go by id
    assert [i for i, _ in rrf] == [2, 3, 1, 4, 5]
    assert rrf[0][1] == pytest.approx(0.5 / (RRF_K + 2) + 0.5 / (RRF_K + 2))
    assert [i for i, _ in fuse(dense, lexical, fusion="rrf", alpha=1.0)][:4] == [1, 2, 5, 3]
    convex = dict(fuse(dense, lexical, fusion="convex", alpha=0.5))
    assert convex[1] == pytest.approx(0.5 * 1.0)  # dense max, lexically absent
    assert convex[3] == pytest.approx(0.5 * 0.0 + 0.5 * 1.0)
    assert convex[2] == pytest.approx(0.5 * (0.7 / 0.8) + 0.5 * (10 / 11))
    assert convex[5] == pytest.approx(0.5 * (0.4 / 0.8))
    assert max(convex, key=convex.get) == 2


def test_zscore_fusion_on_a_known_example():
    dense = [(1, 0.9), (2, 0.8), (3, 0.7), (4, 0.6), (5, 0.5), (6, 0.4)]
    lexical = [(3, 12.0), (1, 1.0), (2, 1.0), (4, 1.0), (5, 1.0), (6, 1.0)]  # chunk 3 stands far above
    zscore = dict(fuse(dense, lexical, fusion="zscore", alpha=0.5))
    d_mean, d_std = 0.65, statistics.pstdev([s for _, s in dense])
    l_mean, l_std = 17 / 6, statistics.pstdev([s for _, s in lexical])
    assert zscore[3] == pytest.approx(0.5 * (0.7 - d_mean) / d_std + 0.5 * (12 - l_mean) / l_std)
    assert zscore[1] == pytest.approx(0.5 * (0.9 - d_mean) / d_std + 0.5 * (1 - l_mean) / l_std)
    assert [i for i, _ in fuse(dense, lexical, fusion="zscore", alpha=0.5)][:2] == [3, 1]
    assert dict(fuse(dense, [(5, 2.0), (6, 2.0)], fusion="zscore", alpha=0.5))[5] == pytest.approx(
        0.5 * (0.5 - d_mean) / d_std  # a channel with no spread has no say
    )


def test_each_chunk_is_fused_at_its_own_weights():
    dense, lexical = [(1, 1.0), (2, 0.0)], [(2, 1.0), (1, 0.0)]  # standardised: chunk 1 is (+1, -1), chunk 2 (-1, +1)
    assert fuse(dense, lexical, fusion="zscore", alpha=0.7) == [(1, pytest.approx(0.4)), (2, pytest.approx(-0.4))]
    own = fuse(dense, lexical, fusion="zscore", alpha=0.7, alphas={2: 0.2})  # chunk 2 (prose) leans lexical
    assert own == [(2, pytest.approx(0.6)), (1, pytest.approx(0.4))]
    assert fuse(dense, lexical, fusion="zscore", alpha=0.7, alphas={1: 0.7, 2: 0.7}) == fuse(
        dense, lexical, fusion="zscore", alpha=0.7
    )
    # adaptive scales a chunk's own weights by the channels' margins (both 2 here), then sums them to 1 again
    adaptive = dict(fuse(dense, lexical, fusion="adaptive", alpha=0.7, alphas={2: 0.2}))
    assert adaptive == {1: pytest.approx(0.4), 2: pytest.approx(0.6)}


def test_adaptive_fusion_weighs_each_channel_by_its_margin():
    # Dense barely prefers chunk 1 (document "a"); lexical puts chunk 3 (document "c") far above every other
    # document. zscore at alpha 0.7 follows dense; adaptive lets the decisive channel decide.
    dense = [(1, 0.62), (3, 0.61), (2, 0.60), (4, 0.58), (5, 0.57), (6, 0.55)]
    lexical = [(3, 14.0), (1, 2.0), (2, 1.5), (4, 1.0), (5, 1.0), (6, 0.5)]
    docs = {1: "a", 2: "b", 3: "c", 4: "d", 5: "e", 6: "f"}
    assert fuse(dense, lexical, fusion="zscore", alpha=0.9)[0][0] == 1
    adaptive = dict(fuse(dense, lexical, fusion="adaptive", alpha=0.9, documents=docs))
    assert max(adaptive, key=adaptive.get) == 3
    zd = dict(fuse(dense, [], fusion="zscore", alpha=1.0))
    zl = dict(fuse([], lexical, fusion="zscore", alpha=0.0))
    margin_d, margin_l = max(zd[1] - zd[3], 0.1), zl[3] - zl[1]
    wd, wl = 0.9 * margin_d, 0.1 * margin_l
    assert adaptive[3] == pytest.approx((wd * zd[3] + wl * zl[3]) / (wd + wl))
    # The margin is between documents: a second chunk of the best document does not shrink it.
    same_doc = dict(fuse(dense, lexical + [(7, 13.9)], fusion="adaptive", alpha=0.9, documents={**docs, 7: "c"}))
    other_doc = dict(fuse(dense, lexical + [(7, 13.9)], fusion="adaptive", alpha=0.9, documents={**docs, 7: "g"}))
    assert max(same_doc, key=same_doc.get) == 3 and same_doc[3] > other_doc[3]
    # With equal margins, adaptive is zscore.
    mirror = [(k, s * 10) for k, s in dense]
    assert [k for k, _ in fuse(dense, mirror, fusion="adaptive", alpha=0.3, documents=docs)] == [
        k for k, _ in fuse(dense, mirror, fusion="zscore", alpha=0.3)
    ]


def test_pnorm_fusion_prefers_one_decisive_channel_to_two_middling_ones():
    # Chunk 1 (the needle) stands far above in the lexical channel only; chunk 2 (a near twin) is well placed in both.
    dense = [(2, 0.50), (3, 0.46), (1, 0.445), (4, 0.44), (5, 0.41), (6, 0.40)]
    lexical = [(1, 12.0), (2, 8.0), (3, 2.0), (4, 1.5), (5, 1.0), (6, 0.5)]
    zd = dict(fuse(dense, [], fusion="zscore", alpha=1.0))
    zl = dict(fuse([], lexical, fusion="zscore", alpha=0.0))
    zscore = dict(fuse(dense, lexical, fusion="zscore", alpha=0.4))
    pnorm = dict(fuse(dense, lexical, fusion="pnorm", alpha=0.4))
    assert max(zscore, key=zscore.get) == 2  # the sum follows the twin's two good placings
    assert max(pnorm, key=pnorm.get) == 1  # the p-norm follows the decisive channel
    p = PNORM_P
    for key in (1, 2):  # both channels above their means: the p-norm of the weighted z-scores
        x, y = 0.4 * zd[key], 0.6 * zl[key]
        assert x > 0 and y > 0
        assert pnorm[key] == pytest.approx((x**p + y**p) ** (1 / p))
    # below a channel's mean, a score counts against the chunk in full, as in zscore
    x, y = 0.4 * zd[6], 0.6 * zl[6]
    assert x < 0 and y < 0 and pnorm[6] == pytest.approx(x + y) == pytest.approx(zscore[6])
    x, y = 0.4 * zd[3], 0.6 * zl[3]  # above one mean, below the other: the sum
    assert x > 0 > y and pnorm[3] == pytest.approx(x + y) == pytest.approx(zscore[3])
    # one channel alone (the other empty, or weighted 0): that channel's weighted z-scores, as zscore gives them
    assert fuse(dense, [], fusion="pnorm", alpha=0.4) == fuse(dense, [], fusion="zscore", alpha=0.4)
    assert fuse(dense, lexical, fusion="pnorm", alpha=1.0) == fuse(dense, lexical, fusion="zscore", alpha=1.0)
    # each chunk at its own weights, as the other fusions
    own = dict(fuse(dense, lexical, fusion="pnorm", alpha=0.4, alphas={2: 0.9}))
    assert own[2] == pytest.approx(((0.9 * zd[2]) ** p + (0.1 * zl[2]) ** p) ** (1 / p))
    assert own[1] == pytest.approx(pnorm[1])


def test_hybrid_scores_a_chunk_in_the_channel_whose_shortlist_cut_it(tmp_path, fake_embedder):
    # 22 documents fill the dense shortlist (20 documents for k <= 10) with "alpha" and rank above both targets;
    # "zork" is found only lexically, and the lexical channel prefers "two" (it says zork twice). The dense
    # channel must still be asked about both: "one" is half about alpha, "two" not at all, so fused, "one" wins
    # (scored as a dense zero, "one" would rank below the fillers).
    docs = [Document(f"filler{i:02d}", "alpha alpha beta") for i in range(22)]
    docs += [Document("one", "alpha beta zork"), Document("two", "beta zork zork")]
    with Collection.create(tmp_path / "c", embedder=fake_embedder) as c:
        c.add(docs)
        assert [h.doc_id for h in c.search("alpha zork", k=2, mode="lexical")] == ["two", "one"]
        assert "one" not in [h.doc_id for h in c.search("alpha zork", k=20, mode="dense")]
        for fusion in ("convex", "zscore", "pnorm"):
            assert c.search("alpha zork", k=2, mode="hybrid", fusion=fusion, alpha=0.5)[0].doc_id == "one", fusion


def _fused_order(lexical_hits, fusion):
    """Doc ids ranked by rank_fused over 30 one-chunk documents whose dense order is d30 > d29 > ... > d1,
    with the lexical channel returning ``lexical_hits`` (chunk id -> BM25) for its shortlist and scores."""
    import numpy as np

    from longvec.index.search import Channels, rank_fused
    from longvec.index.store import ChunkRow

    ids = np.arange(1, 31)
    angles = (31 - ids) * 0.02  # higher id: nearer the query
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    index = VectorIndex(2, use_gpu=False)
    index.add(ids, vectors)
    query = np.array([[1.0, 0.0]], np.float32)
    rows = {int(i): ChunkRow(int(i), f"d{i:02d}", 0, 0, 1, None) for i in ids}
    hits = rank_fused(
        index, query, ['"term"'], 10, channels=Channels("hybrid", fusion, 0.7), chunks_per_doc=1, max_id=30,
        lexical=lambda e, limit, per_doc: sorted(lexical_hits.items(), key=lambda x: -x[1])[:limit],
        lexical_scores=lambda e, wanted: {i: lexical_hits[i] for i in wanted if i in lexical_hits},
        dense_scores=lambda q, wanted: vectors[np.asarray(wanted) - 1] @ q,
        lookup=lambda wanted: {int(i): rows[int(i)] for i in wanted},
        ranges=lambda docs: [(int(d[1:]), int(d[1:])) for d in docs],
    )  # fmt: skip
    return [h.doc_id for h in hits[0]]


def test_a_lexical_channel_with_nothing_to_say_leaves_the_dense_order():
    dense = [f"d{i:02d}" for i in range(30, 20, -1)]
    for fusion in ("rrf", "convex", "zscore", "pnorm"):  # no chunk matches: unmatched chunks are not ranked by id
        assert _fused_order({}, fusion) == dense, fusion
    # every chunk matches only a term in over half the rows (FTS5 floors its idf: BM25 ~1e-6), in the order
    # opposite to dense: standardised, that noise must not outvote the dense channel
    noise = {i: 1e-6 * (31 - i) for i in range(1, 31)}
    assert _fused_order(noise, "zscore") == _fused_order(noise, "pnorm") == dense


def _doc_vector_hits(fusion, *, doc_vectors, expression='"term"'):
    """Hits of rank_fused where document "long" is chunks 1-2 plus its own vector (chunk 3, no terms), "rival" is
    chunk 4 and 20 "noise" documents are chunks 5-24 that no term matches. Dense: long's own vector is the best
    (0.95), rival next (0.8), long's chunks weak (0.1). Lexical: rival's chunk (8.5) a little above long's best
    chunk (8.0)."""
    import numpy as np

    from longvec.index.search import Channels, rank_fused
    from longvec.index.store import ChunkRow
    from longvec.index.types import DOC_SYMBOL

    cosines = [0.1, 0.1, 0.95, 0.8, *np.linspace(0.0, 0.5, 20)]
    angles = np.arccos(np.asarray(cosines))
    vectors = np.stack([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)
    index = VectorIndex(2, use_gpu=False)
    index.add(np.arange(1, 25), vectors)
    docs = {1: "long", 2: "long", 3: "long", 4: "rival"} | {i: f"noise{i:02d}" for i in range(5, 25)}
    rows = {i: ChunkRow(i, d, 0, 0, 1, DOC_SYMBOL if i == 3 else None) for i, d in docs.items()}
    spans = {d: (min(i for i in docs if docs[i] == d), max(i for i in docs if docs[i] == d)) for d in docs.values()}
    bm25 = {1: 8.0, 4: 8.5}
    return rank_fused(
        index, np.array([[1.0, 0.0]], np.float32), [expression], 3, channels=Channels("hybrid", fusion, 0.7),
        chunks_per_doc=1, max_id=24,
        lexical=lambda e, limit, per_doc: sorted(bm25.items(), key=lambda x: -x[1])[:limit],
        lexical_scores=lambda e, wanted: {i: bm25[i] for i in wanted if i in bm25},
        dense_scores=lambda q, wanted: vectors[np.asarray(wanted) - 1] @ q,
        lookup=lambda wanted: {int(i): rows[int(i)] for i in wanted},
        ranges=lambda wanted: [spans[d] for d in wanted],
        doc_vectors=doc_vectors,
    )[0]  # fmt: skip


def _order(hits):
    return [h.doc_id for h in hits], hits[0].chunks[0].symbol


@pytest.mark.parametrize("fusion", ["convex", "zscore", "pnorm"])
def test_a_document_vector_is_fused_with_its_documents_best_lexical_score(fusion):
    # long's vector is dense-best and long matches the query nearly as well as rival: it wins, hit by its vector
    assert _order(_doc_vector_hits(fusion, doc_vectors=True)) == (["long", "rival", "noise24"], "<document>")
    # scored as a chunk that no term matched (what its empty lexical row says), long's vector loses to rival
    assert _order(_doc_vector_hits(fusion, doc_vectors=False))[0][0] == "rival"


def test_a_document_vector_gets_no_lexical_score_where_no_chunk_has_one():
    # a query with no terms: the lexical side is empty, for document vectors too (convex would otherwise lift each
    # by 1 - alpha, as the one chunk of a channel whose scores are all equal)
    hits = _doc_vector_hits("convex", doc_vectors=True, expression=None)
    assert _order(hits) == (["long", "rival", "noise24"], "<document>")
    assert hits[0].score == pytest.approx(0.7)  # alpha x its min-max dense score of 1, and nothing lexical
    # a rank fusion gives a document vector no lexical rank of its own (it would push other chunks' ranks down)
    assert _doc_vector_hits("rrf", doc_vectors=True) == _doc_vector_hits("rrf", doc_vectors=False)


def test_hybrid_search_lifts_a_document_vector_by_its_documents_lexical_match(tmp_path, fake_embedder, monkeypatch):
    from longvec.index import search

    # the fake embedder reads 32 tokens: long's own vector (its first window) is all "alpha"; "zork" is only in
    # its last chunk, far from the first window
    long = "alpha alpha alpha.\n\n" + "\n\n".join(f"Paragraph {i} says nothing in particular." for i in range(30))
    long += "\n\nThe end: zork."

    def own_vector_score(c):
        hits = c.search("alpha zork", k=2, mode="hybrid", fusion="convex", alpha=0.5, chunks_per_doc=50)
        return next(ch.score for h in hits if h.doc_id == "long" for ch in h.chunks if ch.symbol == "<document>")

    with Collection.create(tmp_path / "c", embedder=fake_embedder, doc_vector=True) as c:
        c.add([Document("long", long), Document("short", "beta zork")])
        lifted = own_vector_score(c)
        monkeypatch.setattr(search, "_add_document_vectors", lambda *a, **kw: None)
        plain = own_vector_score(c)  # fused as a chunk that no term matched: its dense half only
    assert plain == pytest.approx(0.5) and lifted > plain + 0.1


def test_hybrid_finds_what_either_channel_alone_misses(tmp_path, fake_embedder):
    docs = [
        Document("dense-only", "alpha beta gamma"),  # the fake embedder sees only its keywords
        Document("lexical-only", "the PassKey is 48213, remember it"),
        Document("noise", "delta epsilon zeta"),
    ]
    with Collection.create(tmp_path / "c", embedder=fake_embedder) as c:
        c.add(docs)
        # no keyword of the fake embedder in the query: every dense score is 0, dense cannot single it out
        assert all(h.score == pytest.approx(0.0) for h in c.search("pass key 48213", k=3, mode="dense"))
        assert c.search("pass key 48213", k=1, mode="lexical")[0].doc_id == "lexical-only"
        assert c.search("pass key 48213", k=1, mode="hybrid")[0].doc_id == "lexical-only"
        assert c.search("alpha gamma", k=1, mode="hybrid")[0].doc_id == "dense-only"
        hit = c.search("48213", k=1, mode="hybrid", fusion="convex", alpha=0.2)[0]
        text = docs[1].text
        assert hit.doc_id == "lexical-only" and "48213" in text[hit.chunks[0].start : hit.chunks[0].end]


def test_delete_and_replace_remove_from_both_channels(tmp_path, fake_embedder):
    with Collection.create(tmp_path / "c", embedder=fake_embedder) as c:
        c.add([Document("a", "zebra alpha"), Document("b", "yak beta")])
        c.add([Document("a", "walrus alpha")])  # replaced: its old terms are gone
        assert c.search("zebra", mode="lexical") == []
        assert [h.doc_id for h in c.search("walrus", mode="lexical")] == ["a"]
        c.delete("b")
        assert c.search("yak", mode="lexical") == [] and c.search("yak", mode="hybrid")[0].doc_id == "a"
        db = c._store._db
        chunk_ids = [r[0] for r in db.execute("SELECT id FROM chunks ORDER BY id")]
        assert [r[0] for r in db.execute("SELECT rowid FROM chunk_terms ORDER BY rowid")] == chunk_ids


def _tampered_store(root, embedder, script: str):
    """A collection of two documents ("a": zebra alpha, "b": yak beta) whose store then runs ``script``."""
    with Collection.create(root, embedder=embedder) as c:
        c.add([Document("a", "the quick zebra alpha"), Document("b", "slow yak beta")])
    db = sqlite3.connect(root / "store.sqlite")
    db.executescript(script)
    db.close()
    return root


def test_a_collection_without_a_lexical_index_gets_one_on_its_first_writable_open(tmp_path, fake_embedder):
    root = _tampered_store(
        tmp_path / "old",
        fake_embedder,  # made to look like a store from before the lexical channel
        "DROP TRIGGER chunk_terms_gone; DROP TABLE chunk_terms; DELETE FROM meta WHERE key = 'lexical';",
    )
    with Collection.open(root, embedder=fake_embedder, readonly=True) as c:
        assert c.search("alpha", mode="dense")[0].doc_id == "a"
        with pytest.raises(InvalidInputError, match="no lexical index yet"):
            c.search("zebra", mode="lexical")
        assert c.info()["lexical_index"] is False
    with Collection.open(root, embedder=fake_embedder) as c:  # built here, once
        assert [h.doc_id for h in c.search("zebra", mode="lexical")] == ["a"]
        assert c.info()["lexical_index"] is True


def test_mode_checks(tmp_path, fake_embedder):
    with Collection.create(tmp_path / "c", embedder=fake_embedder, search_mode="hybrid", alpha=0.3) as c:
        c.add([Document("a", "alpha")])
        assert c.info()["search_mode"] == "hybrid" and c.info()["alpha"] == 0.3
        for kwargs, message in [
            ({"mode": "fuzzy"}, "mode 'fuzzy' not in"),
            ({"fusion": "max"}, "fusion 'max' not in"),
            ({"alpha": 1.5}, "alpha must be in"),
            ({"mode": "hybrid", "agg": "mean"}, "needs agg 'maxsim'"),
        ]:
            with pytest.raises(InvalidInputError, match=message):
                c.search("alpha", **kwargs)
    with pytest.raises(InvalidInputError, match="alpha must be in"):
        Collection.create(tmp_path / "d", embedder=fake_embedder, alpha=-0.1)
    assert not (tmp_path / "d" / "manifest.json").exists()


def test_cli_and_rest_take_the_mode(tmp_path, capsys):
    from fastapi.testclient import TestClient

    from longvec.api.app import create_app
    from longvec.index.lexical import DEFAULT_TEXT_ALPHA

    data = tmp_path / "docs.jsonl"
    rows = [{"id": "k", "text": "The pass key is 48213. Remember it."}, {"id": "o", "text": "Grass is green."}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    root = tmp_path / "c"
    assert main(["index", "--collection", str(root), "--input", str(data), "--mode", "hybrid"]) == 0
    capsys.readouterr()
    assert main(["search", "--collection", str(root), "--query", "48213", "--mode", "lexical", "--json"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["hits"][0]["doc_id"] == "k" and len(json.loads(line)["hits"]) == 1
    assert main(["search", "--collection", str(root), "--query", "x", "--alpha", "2"]) == 2
    assert "alpha must be in [0, 1]" in capsys.readouterr().err
    assert main(["search", "--collection", str(root), "--query", "x", "--text-alpha", "-1"]) == 2
    assert "text_alpha must be in [0, 1]" in capsys.readouterr().err
    search = ["search", "--collection", str(root), "--query", "pass key 48213 grass", "--json", "--k", "2"]
    runs = {}
    default = str(DEFAULT_TEXT_ALPHA)
    for flags in ([], ["--text-alpha", default], ["--text-alpha", "0.1"]):
        assert main([*search, *flags]) == 0
        runs[tuple(flags)] = [h["score"] for h in json.loads(capsys.readouterr().out)["hits"]]
    assert runs[()] == runs[("--text-alpha", default)] != runs[("--text-alpha", "0.1")]  # prose at its default
    with Collection.open(root) as c, TestClient(create_app(c, close_on_shutdown=False)) as client:
        assert client.get("/info").json()["search_mode"] == "hybrid"
        got = client.post("/search", json={"query": "48213", "k": 2, "mode": "lexical"})
        assert got.status_code == 200 and [h["doc_id"] for h in got.json()["hits"]] == ["k"]
        bad = client.post("/search", json={"query": "48213", "mode": "lexical", "agg": "mean"})
        assert bad.status_code == 400 and "maxsim" in bad.json()["error"]["message"]
        assert client.post("/search", json={"query": "x", "alpha": 3}).status_code == 422
        assert client.post("/search", json={"query": "x", "text_alpha": -1}).status_code == 422
        query = {"query": "pass key 48213 grass", "k": 2}
        rest = [client.post("/search", json=query | {"text_alpha": t}).json()["hits"] for t in (None, 0.1)]
        assert [h["score"] for h in rest[0]] == pytest.approx(runs[()])
        assert [h["score"] for h in rest[1]] == pytest.approx(runs[("--text-alpha", "0.1")])


def test_new_collections_search_hybrid_by_default(tmp_path, fake_embedder):
    from longvec.index.lexical import DEFAULT_ALPHA, DEFAULT_FUSION, DEFAULT_SEARCH_MODE, DEFAULT_TEXT_ALPHA

    assert DEFAULT_TEXT_ALPHA != DEFAULT_ALPHA  # else what follows could not tell the weights apart
    with Collection.create(tmp_path / "c", embedder=fake_embedder) as c:
        c.add([Document("a", "alpha beta"), Document("b", "the PassKey is 48213")])
        c.add([Document(f"f{i}.py", f"def alpha{i}():\n    return {i}  # gamma\n", language="python") for i in (1, 2)])
        info = c.info()
        assert (info["search_mode"], info["fusion"], info["alpha"], info["text_alpha"]) == (
            DEFAULT_SEARCH_MODE,
            DEFAULT_FUSION,
            DEFAULT_ALPHA,
            DEFAULT_TEXT_ALPHA,
        )
        assert c.search("48213", k=1)[0].doc_id == "b"  # found by the lexical channel under the default

        def scores(**options):
            return {h.doc_id: h.score for h in c.search("alpha 48213 gamma", k=4, **options)}

        default = scores()
        assert scores(text_alpha=DEFAULT_TEXT_ALPHA) == default  # code at the collection's alpha, prose as given
        assert scores(alpha=DEFAULT_ALPHA, text_alpha=DEFAULT_TEXT_ALPHA) == default
        for alpha, kind in ((DEFAULT_TEXT_ALPHA, "text"), (DEFAULT_ALPHA, "code")):
            explicit = scores(mode=DEFAULT_SEARCH_MODE, fusion=DEFAULT_FUSION, alpha=alpha)
            same = {d: s for d, s in default.items() if (d.endswith(".py")) == (kind == "code")}
            assert same and all(explicit[d] == pytest.approx(s) for d, s in same.items()), kind
            assert any(explicit[d] != pytest.approx(s) for d, s in default.items() if d not in same), kind
        # aggregated views are dense: with no mode given, --agg searches densely instead of failing
        assert c.search("beta", k=1, agg="mean")[0].doc_id == "a"


def test_chunks_written_without_lexical_rows_are_filled_on_the_next_writable_open(tmp_path, fake_embedder):
    root = _tampered_store(
        tmp_path / "c",
        fake_embedder,  # as an older longvec writing into this store would leave it
        "DROP TRIGGER chunk_terms_gone; DELETE FROM chunk_terms WHERE rowid = (SELECT MAX(id) FROM chunks);",
    )
    with Collection.open(root, embedder=fake_embedder) as c:
        assert [h.doc_id for h in c.search("yak", mode="lexical")] == ["b"]
        db = c._store._db
        assert (
            db.execute("SELECT COUNT(*) FROM chunk_terms").fetchone()
            == db.execute("SELECT COUNT(*) FROM chunks").fetchone()
        )


def test_a_collection_keeps_the_fusion_it_was_made_with(tmp_path, fake_embedder):
    from longvec.index.lexical import DEFAULT_FUSION

    assert DEFAULT_FUSION != "zscore"  # else this could not tell the stored fusion from the default
    root = tmp_path / "c"
    docs = [Document("a", "alpha beta gamma"), Document("b", "alpha delta"), Document("c", "beta gamma epsilon")]
    with Collection.create(root, embedder=fake_embedder, fusion="zscore") as c:  # as made before pnorm
        c.add(docs)
    with Collection.open_or_create(root, embedder=fake_embedder) as c:  # `longvec index` with no search options
        c.add([Document("d", "gamma zeta")])
        assert c.manifest.fusion == "zscore"
        hits = [(h.doc_id, h.score) for h in c.search("alpha gamma", k=4)]
        assert hits == [(h.doc_id, h.score) for h in c.search("alpha gamma", k=4, fusion="zscore")]
        assert hits != [(h.doc_id, h.score) for h in c.search("alpha gamma", k=4, fusion=DEFAULT_FUSION)]


def test_search_defaults_of_an_existing_collection_can_change(tmp_path, fake_embedder):
    root = tmp_path / "c"
    with Collection.create(root, embedder=fake_embedder, search_mode="dense") as c:
        c.add([Document("a", "alpha")])
    with Collection.open_or_create(root, embedder=fake_embedder, search_mode="lexical", alpha=0.2) as c:
        assert (c.manifest.search_mode, c.manifest.alpha) == ("lexical", 0.2)
    with Collection.open(root, embedder=fake_embedder, readonly=True) as c:
        assert (c.info()["search_mode"], c.info()["alpha"]) == ("lexical", 0.2)
        with pytest.raises(InvalidInputError, match="opened read-only"):
            c.set_search_defaults(search_mode="dense")
    with pytest.raises(InvalidInputError, match="not valid|alpha"):
        Collection.open_or_create(root, embedder=fake_embedder, alpha=7.0)
    assert json.loads((root / "manifest.json").read_text())["alpha"] == 0.2  # a refused change writes nothing


def test_one_alpha_weighs_every_chunk_unless_prose_gets_its_own(tmp_path, fake_embedder):
    from longvec.index.lexical import DEFAULT_ALPHA, DEFAULT_TEXT_ALPHA

    def weights(c):
        return c.manifest.alpha, c.manifest.text_alpha

    with Collection.create(tmp_path / "a", embedder=fake_embedder, alpha=0.6) as c:
        assert weights(c) == (0.6, None)  # alpha alone: one weight for every chunk
    with Collection.create(tmp_path / "t", embedder=fake_embedder, text_alpha=0.3) as c:
        assert weights(c) == (DEFAULT_ALPHA, 0.3)
    root = tmp_path / "d"
    with Collection.create(root, embedder=fake_embedder) as c:
        assert weights(c) == (DEFAULT_ALPHA, DEFAULT_TEXT_ALPHA)
    with Collection.open_or_create(root, embedder=fake_embedder, alpha=DEFAULT_ALPHA) as c:
        assert weights(c) == (DEFAULT_ALPHA, None)  # the same alpha, now for prose too
    with Collection.open_or_create(root, embedder=fake_embedder, text_alpha=0.4) as c:
        assert weights(c) == (DEFAULT_ALPHA, 0.4)
        c.set_search_defaults(fusion="rrf")
        assert weights(c) == (DEFAULT_ALPHA, 0.4)  # other settings leave the weights
        with pytest.raises(InvalidInputError, match="text_alpha"):
            c.set_search_defaults(text_alpha=1.5)
    assert json.loads((root / "manifest.json").read_text())["text_alpha"] == 0.4
    manifest = json.loads((root / "manifest.json").read_text())
    (root / "manifest.json").write_text(json.dumps(manifest | {"from_a_newer_longvec": {"x": 1}}))
    with Collection.open(root, embedder=fake_embedder) as c:
        c.set_search_defaults(fusion="zscore")  # rewrites the manifest
    assert json.loads((root / "manifest.json").read_text())["from_a_newer_longvec"] == {"x": 1}  # kept
    with pytest.raises(InvalidInputError, match="text_alpha"):
        Collection.create(tmp_path / "bad", embedder=fake_embedder, text_alpha=-0.1)
    assert main(["index", "--collection", str(tmp_path / "cli"), "--model", "x", "--text-alpha", "2"]) == 2


def test_proximity_on_known_examples():
    w = {"velvet": 3.0, "telescope": 2.0, "kept": 0.5}

    def by_hand(acc):  # each term: min(1, idf) * acc * (k1 + 1) / (acc + k1)
        return sum(min(1.0, w[t]) * a * (BM25_K1 + 1) / (a + BM25_K1) for t, a in acc.items())

    # Adjacent: each of the two gains the other's idf over 1**2.
    assert proximity(w, ["velvet", "telescope"]) == pytest.approx(by_hand({"velvet": 2.0, "telescope": 3.0}))
    # Two apart: over 2**2; the pair is only ever the nearest earlier occurrence of another term.
    assert proximity(w, ["velvet", "x", "telescope"]) == pytest.approx(by_hand({"velvet": 0.5, "telescope": 0.75}))
    chain = ["velvet", "telescope", "kept"]  # telescope pairs with velvet before it and with kept after it
    assert proximity(w, chain) == pytest.approx(by_hand({"velvet": 2.0, "telescope": 3.5, "kept": 2.0}))
    assert proximity(w, ["velvet", "velvet", "velvet"]) == 0.0  # one term, however often: no proximity
    assert proximity(w, ["velvet", "cellar", "attic"]) == 0.0
    assert proximity(w, []) == 0.0
    near, far = proximity(w, ["velvet", "telescope"]), proximity(w, ["velvet", *["x"] * 20, "telescope"])
    assert near > 10 * far > 0
    assert proximity(w, ["telescope", "velvet"]) == pytest.approx(near)  # order does not matter
    # Saturation: however many adjacent pairs, a term adds less than min(1, idf) * (k1 + 1).
    assert proximity(w, ["velvet", "telescope"] * 500) < sum(min(1.0, x) for x in w.values()) * (BM25_K1 + 1)


_PHRASE_DOCS = [
    *((f"f{i}", f"notes {i} on gardening weather cooking travel and music") for i in range(40)),
    ("apart", "The velvet curtain hangs by the door while a telescope stands in Dubrovnik harbour."),
    ("phrase", "The velvet telescope of Dubrovnik stands by the door while a curtain hangs harbour."),
]


def _phrase_collection(root, embedder):
    """A collection where two documents hold the same query terms as often, at the same length, so BM25 scores
    them alike: "apart" (added first, so it wins BM25's tie by chunk id) far apart, "phrase" side by side."""
    c = Collection.create(root, embedder=embedder)
    c.add([Document(i, t) for i, t in _PHRASE_DOCS])
    return c


def test_term_proximity_ranks_the_chunk_holding_the_query_words_together_first(tmp_path, fake_embedder):
    query = "Where is the velvet telescope of Dubrovnik?"
    with _phrase_collection(tmp_path / "c", fake_embedder) as c:
        bm25 = c.search(query, k=2, mode="lexical", proximity=False)
        assert [h.doc_id for h in bm25] == ["apart", "phrase"] and bm25[0].score == pytest.approx(bm25[1].score)
        near = c.search(query, k=2, mode="lexical")
        assert [h.doc_id for h in near] == ["phrase", "apart"]
        assert near[0].score > bm25[0].score and near[1].score > bm25[1].score  # each added what it has
        store = c._store
        firsts = [first for first, _ in store.chunk_ranges(["phrase", "apart"])]
        ids = {row.doc_id: i for i, row in store.chunk_rows(firsts).items()}
        scores = store.proximity_scores(match_expression(query), list(ids.values()))
        assert scores[ids["phrase"]] > scores[ids["apart"]] > 0
        assert near[0].score == pytest.approx(bm25[1].score + scores[ids["phrase"]])
        (filler, _), *_ = store.chunk_ranges(["f0"])
        assert store.proximity_scores(match_expression(query), [filler]) == {}  # no query term: nothing
        assert store.proximity_scores(match_expression("velvet"), list(ids.values())) == {}  # one term: nothing
        hybrid = {p: c.search(query, k=2, mode="hybrid", proximity=p) for p in (True, False)}
        assert hybrid[True][0].doc_id == "phrase"
        assert [h.score for h in hybrid[True]] != [h.score for h in hybrid[False]]
        with pytest.raises(InvalidInputError, match="proximity must be true or false"):
            c.search(query, proximity="yes")


def test_proximity_weights_follow_writes_and_any_number_of_ids(tmp_path, fake_embedder):
    query = match_expression("velvet telescope Dubrovnik")
    with _phrase_collection(tmp_path / "c", fake_embedder) as c:
        store = c._store
        ((first, _),) = store.chunk_ranges(["phrase"])
        before = store.proximity_scores(query, [first])[first]
        # More ids than one statement takes (unknown ids are passed over), the known one scored as before.
        assert store.proximity_scores(query, [*range(10_000, 11_200), first]) == {first: before}
        c.add([Document(f"v{i}", f"velvet telescope number {i}") for i in range(30)])  # common now: lower idf
        after = store.proximity_scores(query, [first])[first]
        assert 0 < after < before  # the counts kept from before the write were not reused


def test_cli_and_rest_take_proximity(tmp_path, capsys):
    from fastapi.testclient import TestClient

    from longvec.api.app import create_app

    data, root = tmp_path / "docs.jsonl", tmp_path / "c"
    data.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in _PHRASE_DOCS))
    assert main(["index", "--collection", str(root), "--input", str(data)]) == 0
    query = "Where is the velvet telescope of Dubrovnik?"
    search = ["search", "--collection", str(root), "--query", query, "--mode", "lexical", "--json", "--k", "2"]
    capsys.readouterr()
    firsts = []
    for flags in ([], ["--no-proximity"]):
        assert main([*search, *flags]) == 0
        firsts.append(json.loads(capsys.readouterr().out)["hits"][0]["doc_id"])
    assert firsts == ["phrase", "apart"]
    with Collection.open(root) as c, TestClient(create_app(c, close_on_shutdown=False)) as client:
        body = {"query": query, "k": 2, "mode": "lexical"}
        for flag, first in ((None, "phrase"), (True, "phrase"), (False, "apart")):
            got = client.post("/search", json=body | ({} if flag is None else {"proximity": flag}))
            assert got.status_code == 200 and got.json()["hits"][0]["doc_id"] == first
        assert client.post("/search", json=body | {"proximity": "yes"}).status_code == 422


def test_cli_choices_are_the_index_modes():
    from longvec.api.cli import build_parser
    from longvec.index import FUSIONS, SEARCH_MODES

    for command in ("search", "index"):
        sub = build_parser()._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
        options = {a.dest: a.choices for a in sub._actions}
        assert tuple(options["mode"]) == SEARCH_MODES and tuple(options["fusion"]) == FUSIONS, command


def test_pruned_lexical_search_finds_the_shortlist_of_scoring_every_match(tmp_path, fake_embedder, monkeypatch):
    """The lexical shortlist from the matches whose score bounds let them enter it is the shortlist of scoring
    every match: the same chunks, in the same order, with the same scores. The store holds documents' own vectors
    (rows with no terms) and has had documents deleted; queries repeat a term's stem in another form and name
    terms no chunk has; some chunks repeat a term many times, and identical documents tie at the cut. Most answers
    score only part of the matches. Every match's score lies within its bounds. Inside a write transaction, where
    FTS5's committed totals are stale, every match is scored."""
    import random

    import longvec.index.store as store_module

    monkeypatch.setattr(store_module, "PRUNE_MIN_MATCHES", 1)  # this small store: prune every query that can be
    rng = random.Random(7)
    syllables = "ka lo mi nu pe ri so tu va ze".split()
    words = [a + b + c for a in syllables for b in syllables for c in syllables][:300]
    weights = [1 / (rank + 1) for rank in range(len(words))]  # Zipf: a few words in most chunks, most in few
    docs = [Document(f"d{i}", " ".join(rng.choices(words, weights, k=rng.randint(10, 90)))) for i in range(300)]
    docs += [Document(f"r{i}", " ".join([words[i]] * rng.randint(5, 40) + words[50:60])) for i in range(20)]
    docs += [Document(f"twin{i}", " ".join(words[:12])) for i in range(30)]  # identical scores at the cut
    with Collection.create(tmp_path / "c", embedder=fake_embedder, doc_vector=True) as c:
        c.add(docs)
        c.delete_many(f"d{i}" for i in range(0, 300, 10))
        store = c._store
        (rows,) = store._db.execute("SELECT COUNT(*) FROM chunk_terms").fetchone()
        (empty,) = store._db.execute("SELECT COUNT(*) FROM chunk_terms WHERE terms = ''").fetchone()
        assert rows > 600 and empty > 100  # documents of several chunks, each with its own vector
        scored: list[int] = []
        bm25_of = store._bm25_of
        monkeypatch.setattr(store, "_bm25_of", lambda e, ids: scored.append(len(ids)) or bm25_of(e, ids))
        answered = pruned = 0
        for n in range(80):
            picked = rng.choices(words, weights, k=rng.randint(1, 6))
            extra = [picked[0] + "s"] if n % 3 == 0 else []  # the same stem as picked[0] ("kakatus" -> "kakatu")
            extra += ["zuzuzu"] if n % 4 == 0 else []  # in no chunk
            query = " ".join(picked + extra)
            expression = match_expression(query)
            for limit, per_doc in ((20, 2), (50, 1), (5, 3)):
                with store._reading():
                    expected = store._lexical_search_all(expression, limit, per_doc)
                    scored.clear()
                    found = store._lexical_search_pruned(expression, limit, per_doc)
                    (matches,) = store._db.execute(
                        "SELECT COUNT(*) FROM chunk_terms WHERE chunk_terms MATCH ?", (expression,)
                    ).fetchone()
                assert store.lexical_search(expression, limit, per_doc) == (found or expected)
                if found is None:
                    continue
                answered += 1
                pruned += sum(scored) < matches
                assert found == expected, query
            bounds = store._score_bounds(phrases(expression))
            if bounds is not None:
                ids, low, high = bounds
                exact = store._bm25_of(expression, ids.tolist())
                assert sorted(exact) == ids.tolist()
                score = np.array([exact[i] for i in ids.tolist()])
                assert (low <= score * (1 + 1e-9)).all() and (score <= high * (1 + 1e-9)).all(), query
        # Both ways are exercised: most shortlists found from part of the matches, some not (no bound to prune).
        assert 100 < answered < 240 and pruned > 100, (answered, pruned)
        assert store._lexical_search_pruned(expression, 0, 1) is None  # an empty list proves nothing
        expression = match_expression(" ".join(words[:3]))
        with pytest.raises(RuntimeError, match="roll back"), store.transaction() as db:
            rows_now = [(10**7 + i, "xyxyxy") for i in range(5000)]  # uncommitted: FTS5's totals move in memory
            db.executemany("INSERT INTO chunk_terms(rowid, terms) VALUES (?, ?)", rows_now)
            assert store.lexical_search(expression, 20, 2) == store._lexical_search_all(expression, 20, 2)
            raise RuntimeError("roll back")
        # Term counts read from FTS5's docsize: kept by id, or read afresh when ids run far beyond the chunk count.
        ids = np.array(sorted(i for (i,) in store._db.execute("SELECT rowid FROM chunk_terms")))
        kept = store._chunk_term_counts(ids, rows)
        monkeypatch.setattr(store_module, "TERM_COUNTS_KEPT", 0)
        assert np.array_equal(store._chunk_term_counts(ids, rows), kept)  # from the cache
        assert np.array_equal(store._chunk_term_counts(ids, 1), kept)  # ids far beyond 1 chunk: read afresh
        stored = dict(store._db.execute("SELECT rowid, terms FROM chunk_terms"))
        assert [len(stored[i].split()) for i in ids.tolist()] == kept.tolist()  # one word, one FTS5 token here


@pytest.mark.parametrize(
    ("blob", "values"),
    [
        (b"\x00", [0]),
        (b"\x7f", [127]),
        (b"\x81\x00", [128]),
        (b"\x82\x2c\x05", [300, 5]),
        (b"\xff" * 8 + b"\x01", [(1 << 64) - 255]),  # a ninth byte carries all 8 bits
        (b"\x81", []),  # ends inside a varint
    ],
)
def test_sqlite_varints(blob, values):
    from longvec.index.store import _varints

    assert _varints(blob, 2) == values
