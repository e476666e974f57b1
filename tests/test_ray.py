"""``longvec index --engine ray``: a local Ray instance (2 CPUs) encodes; the collection must equal a local build."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

ray = pytest.importorskip("ray", reason="the Ray engine needs longvec[ray] (make install includes it)")
pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from longvec.embedder import EmbedderConfig  # noqa: E402
from longvec.index import Collection, InvalidInputError  # noqa: E402
from longvec.index.errors import RayRunError  # noqa: E402
from longvec.index.ray_engine import (  # noqa: E402
    EncodeWorker,
    default_shard_dir,
    index_with_ray,
    plan_parts,
    shard_name,
)
from longvec.index.sources import read_documents, walk_paths  # noqa: E402

# The same engine in both builds: vectors are then comparable to float rounding.
CONFIG = EmbedderConfig(precision="fp32", backend="torch")
CODE = Path(json.__file__).parent  # the standard library's json package: 5 Python files, ~16k tokens
PART_BYTES = 12_000  # several parts from this small corpus, so both actors get work
QUERIES = [
    "decode a JSON document into Python objects",
    "escape non-ASCII characters when encoding",
    "detect circular references",
    "volcano ash over the island",
    "how do pelicans fly",
    "scanner for JSON strings",
]
TEXTS = [
    {"id": "t1", "text": "Pelicans glide low over the harbour at dawn, wings barely moving.", "metadata": {"k": 1}},
    {"id": "t2", "text": "A volcano erupted on the island and covered the villages with grey ash."},
    {"id": "t3", "text": "   "},  # empty: never stored
    {"id": "t1", "text": "Pelicans fly in lines over the water; the last occurrence of an id wins."},
    {"id": "t4", "text": "The tide tables list high and low water for every day of the year. " * 40},
    {"id": "notes/setup.py", "text": "def setup():\n    return configure(paths=['a', 'b'])\n"},
]


@pytest.fixture(scope="module")
def cluster():
    """One local Ray instance for the module, as a two-core machine offers it."""
    context = ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    # the test module's own worker classes travel by value (Ray's workers do not import tests/)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield context.address_info["address"]
    ray.shutdown()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    (root / "texts.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TEXTS))
    return root


@pytest.fixture(scope="module")
def local(tmp_path_factory, corpus):
    """The local build the Ray builds are compared with."""
    root = tmp_path_factory.mktemp("local") / "c"
    with Collection.create(root, embedder_config=CONFIG) as c:
        c.add([*read_documents(corpus / "texts.jsonl"), *walk_paths([CODE])])
    return root


def _parts(corpus: Path):
    return plan_parts([corpus / "texts.jsonl"], [CODE], part_bytes=PART_BYTES)


def _ray_build(root: Path, corpus: Path, **kwargs):
    with Collection.create(root, embedder_config=CONFIG) as c:
        return index_with_ray(c, _parts(corpus), config=CONFIG, workers=2, **kwargs)


def _same_collection(a_root: Path, b_root: Path) -> None:
    """Same documents, chunks, vectors (to float rounding), counts and top-10 hits in every search mode."""
    with Collection.open(a_root, readonly=True) as a, Collection.open(b_root, readonly=True) as b:
        ia, ra, va, ta = a.chunk_vectors()
        ib, rb, vb, tb = b.chunk_vectors()
        assert sorted(ia) == sorted(ib)
        for doc_id in ia:
            da, db = a.get(doc_id), b.get(doc_id)
            assert (da.text, da.path, da.language, da.metadata, da.content_hash) == (
                db.text,
                db.path,
                db.language,
                db.metadata,
                db.content_hash,
            )
            rows_a, rows_b = np.flatnonzero(ra == ia.index(doc_id)), np.flatnonzero(rb == ib.index(doc_id))
            assert len(rows_a) == len(rows_b) and (ta[rows_a] == tb[rows_b]).all()
            np.testing.assert_allclose(va[rows_a], vb[rows_b], atol=2e-5)
        info_a, info_b = a.info(), b.info()
        for key in ("documents", "chunks", "tokens", "model_fingerprint", "strategy", "lexical_index", "search_mode"):
            assert info_a[key] == info_b[key], key
        for mode in ("dense", "lexical", "hybrid"):
            for q in QUERIES:
                hits_a, hits_b = a.search(q, k=10, mode=mode), b.search(q, k=10, mode=mode)
                assert [h.doc_id for h in hits_a] == [h.doc_id for h in hits_b], (mode, q)
                assert [h.chunks[0].start for h in hits_a] == [h.chunks[0].start for h in hits_b], (mode, q)


def test_ray_build_equals_a_local_build(cluster, corpus, local, tmp_path):
    result, run = _ray_build(tmp_path / "c", corpus)
    assert run.parts == len(_parts(corpus)) > 2 and run.encoded == run.parts and run.workers == 2
    assert (result.added, result.empty) == (4 + 5, 1)  # t1 (once), t2, t4, setup.py and 5 files; t3 is blank
    # the actors read every input row (the blank one, both t1s) and encoded every non-blank one
    assert run.docs == len(TEXTS) + 5 and run.tokens > result.tokens > 10_000
    _same_collection(local, tmp_path / "c")
    assert not default_shard_dir(tmp_path / "c").exists()  # the shards are removed once stored


def test_parquet_input_equals_jsonl(cluster, corpus, tmp_path):
    rows = [{**r, "metadata": json.dumps(r.get("metadata", {}))} for r in TEXTS]  # metadata as a JSON string
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "texts.parquet", row_group_size=2)
    with Collection.create(tmp_path / "jsonl", embedder_config=CONFIG) as c:
        c.add(read_documents(corpus / "texts.jsonl"))
    parts = plan_parts([tmp_path / "texts.parquet"], [], part_bytes=100)  # row groups split: a row per part
    assert len(parts) == len(TEXTS) and {p.kind for p in parts} == {"parquet"}
    scratch = tmp_path / "scratch"  # a shared scratch directory: the run touches only its own subdirectory
    scratch.mkdir()
    (scratch / "notes.txt").write_text("not ours")
    (scratch / "part-00000-other.parquet").write_bytes((tmp_path / "texts.parquet").read_bytes())
    with Collection.create(tmp_path / "pq", embedder_config=CONFIG) as c:
        result, _ = index_with_ray(c, parts, config=CONFIG, workers=2, shard_dir=scratch)
    assert (result.added, result.empty) == (4, 1)
    assert sorted(p.name for p in scratch.iterdir()) == ["notes.txt", "part-00000-other.parquet"]
    _same_collection(tmp_path / "jsonl", tmp_path / "pq")


class FlakyWorker(EncodeWorker):
    """Fails as told by marker files beside its run's shard directory: ``die-N`` (the actor process exits during part N,
    once), ``raise-N`` (part N raises once), ``always-N`` (part N raises every time)."""

    def encode_part(self, part):
        markers = self.shard_dir.parent
        for what in ("die", "raise"):
            marker = markers / f"{what}-{part.index}"
            if marker.exists():
                marker.unlink()
                if what == "die":
                    os._exit(1)
                raise RuntimeError(f"transient failure of part {part.index}")
        if (markers / f"always-{part.index}").exists():
            raise RuntimeError(f"part {part.index} always fails")
        return super().encode_part(part)


def test_failed_parts_are_retried_and_a_stopped_run_resumes(cluster, corpus, local, tmp_path):
    root, shards = tmp_path / "c", tmp_path / "shards"
    shards.mkdir()
    n = len(_parts(corpus))
    (shards / f"always-{n - 1}").touch()
    with Collection.create(root, embedder_config=CONFIG) as c:
        with pytest.raises(RayRunError, match=f"of {n} parts encoded.*run the same command again"):
            index_with_ray(
                c, _parts(corpus), config=CONFIG, workers=2, shard_dir=shards, retries=0, worker_class=FlakyWorker
            )
        assert c.counts()["documents"] == 0  # nothing is stored before every part is encoded
    (run_dir,) = shards.glob("run-*")  # the run's own directory
    written = {int(p.stem.split("-")[1]) for p in run_dir.glob("part-*.parquet")}
    assert n - 1 not in written
    assert written and all((run_dir / shard_name(i)).exists() for i in written)
    # The rerun: the last part's actor dies once (Ray restarts it and sends the part again), then the part raises
    # once (tried again in its actor); the parts already written are not encoded again.
    (shards / f"always-{n - 1}").unlink()
    (shards / f"die-{n - 1}").touch()
    (shards / f"raise-{n - 1}").touch()
    with Collection.open(root, embedder_config=CONFIG) as c:
        result, run = index_with_ray(
            c, _parts(corpus), config=CONFIG, workers=2, shard_dir=shards, retries=2, worker_class=FlakyWorker
        )
    assert (run.resumed, run.encoded) == (len(written), n - len(written))
    assert run.retried == 1 and not (shards / f"die-{n - 1}").exists() and not (shards / f"raise-{n - 1}").exists()
    assert result.added == 9
    _same_collection(local, root)


def test_unchanged_documents_are_not_encoded_again(cluster, corpus, tmp_path):
    root = tmp_path / "c"
    _ray_build(root, corpus)
    with Collection.open(root, embedder_config=CONFIG) as c:
        result, run = index_with_ray(c, _parts(corpus), config=CONFIG, workers=2)
    assert (result.added, result.updated, result.unchanged) == (0, 0, 9)
    # The actors knew the stored hashes: only the superseded first "t1" (one short chunk, not what is stored) was
    # encoded again.
    assert run.chunks == 1 and run.tokens < 30


def test_bad_input_fails_naming_the_line_and_stores_nothing(cluster, tmp_path):
    lines = [json.dumps({"id": f"d{i}", "text": f"document number {i} " * 30}) for i in range(40)]
    lines[33] = '{"id": "d33", "text": '
    (tmp_path / "bad.jsonl").write_text("\n".join(lines) + "\n")
    parts = plan_parts([tmp_path / "bad.jsonl"], [], part_bytes=2_000)
    assert len(parts) > 3
    with Collection.create(tmp_path / "c", embedder_config=CONFIG) as c:
        with pytest.raises(InvalidInputError, match=r"bad\.jsonl:34: "):
            index_with_ray(c, parts, config=CONFIG, workers=2)
        assert c.counts()["documents"] == 0


def _cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "longvec.api.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_cli_engine_ray_matches_the_local_cli(cluster, corpus, tmp_path):
    common = ["--input", str(corpus / "texts.jsonl"), str(CODE), "--precision", "fp32", "--backend", "torch"]
    done = _cli("index", "--collection", str(tmp_path / "local"), *common)
    assert done.returncode == 0, done.stderr
    done = _cli(
        "index",
        "--collection",
        str(tmp_path / "ray"),
        *common,
        "--engine",
        "ray",
        "--ray-address",
        cluster,
        "--workers",
        "2",
        "--part-mb",
        "0.01",
    )
    assert done.returncode == 0, done.stderr
    assert "indexed docs=9 (added 9" in done.stdout and "encoded part" in done.stderr
    queries = tmp_path / "queries.jsonl"
    queries.write_text("".join(json.dumps({"qid": f"q{i}", "text": q}) + "\n" for i, q in enumerate(QUERIES)))
    out = [
        _cli("search", "--collection", str(tmp_path / name), "--queries", str(queries), "--k", "10").stdout
        for name in ("local", "ray")
    ]
    local, distributed = ([json.loads(line) for line in o.splitlines()] for o in out)
    assert len(local) == len(distributed) == len(QUERIES)
    for a, b in zip(local, distributed, strict=True):
        assert [(h["doc_id"], h["chunks"][0]["start"]) for h in a["hits"]] == [
            (h["doc_id"], h["chunks"][0]["start"]) for h in b["hits"]
        ]
        assert [h["score"] for h in a["hits"]] == pytest.approx([h["score"] for h in b["hits"]], abs=1e-4)
    bad = _cli("index", "--server", "http://localhost:1", "--engine", "ray", str(CODE))
    assert bad.returncode == 2 and "--engine ray" in bad.stderr


def test_a_killed_cli_run_resumes_from_its_shards(cluster, corpus, local, tmp_path):
    """kill -9 of `longvec index --engine ray` once some shards are written; the same command then encodes only
    the parts that were missing, and the collection equals the local build."""
    root = tmp_path / "c"
    shards = default_shard_dir(root)
    command = [
        sys.executable, "-m", "longvec.api.cli", "index", "--collection", str(root), "--input",
        str(corpus / "texts.jsonl"), str(CODE), "--precision", "fp32", "--backend", "torch", "--engine", "ray",
        "--ray-address", cluster, "--workers", "1", "--part-mb", "0.005",
    ]  # fmt: skip
    n = len(plan_parts([corpus / "texts.jsonl"], [CODE], part_bytes=int(0.005 * (1 << 20))))
    run = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while len(list(shards.glob("run-*/part-*.parquet"))) < 2 and run.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        run.kill()  # SIGKILL
    finally:
        run.communicate(timeout=60)
    # Ray stops a dead driver's actors shortly after; a part under way may still land meanwhile: wait until none does.
    written = -1
    while written != (written := len(list(shards.glob("run-*/part-*.parquet")))):
        time.sleep(3)
    assert 2 <= written < n, f"killed after {written} of {n} parts"
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"ray: parts={n} (resumed {written}, encoded {n - written}, retried 0)" in done.stderr
    assert "indexed docs=9 (added 9" in done.stdout
    assert not shards.exists()
    _same_collection(local, root)


def test_a_pool_the_cluster_cannot_hold_is_refused(cluster, corpus, tmp_path):
    """Actors that cannot be placed would wait forever: refused up front instead."""
    with Collection.create(tmp_path / "c", embedder_config=CONFIG) as c:
        with pytest.raises(InvalidInputError, match="holds 2 actors of 1 CPUs, not 3"):
            index_with_ray(c, _parts(corpus), config=CONFIG, workers=3)
        with pytest.raises(InvalidInputError, match="no node of the Ray cluster has 1 CPUs and 1 GPUs"):
            index_with_ray(c, _parts(corpus), config=CONFIG, gpus_per_worker=1)
        assert c.counts()["documents"] == 0


def test_a_new_run_replaces_only_its_own_collections_old_shards(tmp_path):
    from longvec.index.ray_engine import _run_dir

    scratch = tmp_path / "scratch"
    a_old = _run_dir(scratch, "a" * 64, tmp_path / "A")
    (a_old / "run.json").write_text(json.dumps({"collection": str(tmp_path / "A")}))
    b_run = _run_dir(scratch, "b" * 64, tmp_path / "B")  # another collection's run, maybe going on
    (b_run / "run.json").write_text(json.dumps({"collection": str(tmp_path / "B")}))
    (scratch / "run-notes").mkdir()  # not a run of ours: no run.json
    a_new = _run_dir(scratch, "c" * 64, tmp_path / "A")
    assert a_new.exists() and not a_old.exists() and b_run.exists() and (scratch / "run-notes").exists()
