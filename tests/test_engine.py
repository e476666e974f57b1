"""The encode engine: token-budget batches, precisions within their parity gate, the automatic choice."""

from __future__ import annotations

import json

import numpy as np
import pytest

from longvec.embedder import EmbedderConfig, InvalidSettingError, load_embedder, normalize
from longvec.embedder import engine as engine_module
from longvec.embedder.engine import (
    PARITY_MIN_COSINE,
    Engine,
    Trial,
    candidates,
    choose,
    openvino_available,
    options,
    trial_texts,
)


@pytest.fixture(scope="module")
def fp32():
    return load_embedder(EmbedderConfig(precision="fp32"))


def test_batches_respect_the_token_budget_and_cover_every_text(fp32) -> None:
    engine = Engine(fp32.model, token_budget=1000, max_batch=8)
    lengths = [5, 300, 40, 256, 256, 7, 999, 1200, 64, 64, 64, 64, 64, 64, 64, 64, 64, 3]
    batches = engine.batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for batch in batches:
        width = max(lengths[i] for i in batch)
        assert len(batch) <= 8
        assert len(batch) == 1 or len(batch) * width <= 1000  # a text over the budget goes alone
        assert lengths[batch[0]] == width  # longest first: the first text sets the padded width
    assert [lengths[i] for i in batches[0]] == [1200]


def test_engine_fp32_matches_sentence_transformers(fp32) -> None:
    texts = trial_texts(24)
    ours = fp32.encode_documents(texts)
    theirs = fp32.model.encode(texts, batch_size=7, normalize_embeddings=True, convert_to_numpy=True)
    np.testing.assert_allclose(ours, theirs, atol=2e-6)  # same vectors, in the input order


@pytest.mark.parametrize("budget", [64, 512, 100_000])
def test_vectors_do_not_depend_on_the_budget_in_fp32(fp32, budget) -> None:
    texts = trial_texts(12)
    engine = Engine(fp32.model, token_budget=budget)
    try:
        got = engine.encode(texts, fp32.document_prompt)
    finally:
        engine.close()
    want = fp32.model.encode(texts, batch_size=1, convert_to_numpy=True)
    np.testing.assert_allclose(got, want, atol=2e-6)


def test_bf16_keeps_the_parity_gate(fp32) -> None:
    """bf16 (autocast; emulated where the CPU lacks bf16 instructions) stays within the gate on code and prose."""
    texts = trial_texts(32)
    bf16 = load_embedder(EmbedderConfig(precision="bf16"))
    assert bf16.precision == "bf16" and bf16.fingerprint == fp32.fingerprint  # same model, comparable vectors
    cos = np.sum(bf16.encode_documents(texts) * fp32.encode_documents(texts), axis=1)
    assert cos.mean() >= PARITY_MIN_COSINE and cos.min() >= 0.998


def test_late_chunking_runs_under_the_engine_precision(fp32) -> None:
    text = " ".join(f"Sentence {i} is about topic {i % 5}." for i in range(120))
    spans = [(0, 200), (200, len(text))]
    bf16 = load_embedder(EmbedderConfig(precision="bf16"))
    a, b = fp32.encode_late([(text, spans)])[0], bf16.encode_late([(text, spans)])[0]
    assert np.sum(a * b, axis=1).min() >= PARITY_MIN_COSINE


def test_what_is_tried_follows_the_hardware_and_the_installed_backends(monkeypatch) -> None:
    assert candidates("cpu", frozenset({"avx2", "avx512f"})) == []
    assert candidates("cpu", frozenset({"avx512f", "avx512_bf16"})) == ["bf16"]
    assert candidates("cpu", frozenset({"amx_bf16"})) == ["bf16"]
    monkeypatch.setattr(engine_module, "candidates", lambda device: ["bf16"])
    monkeypatch.setattr(engine_module, "openvino_available", lambda: True)
    assert options("cpu") == [("torch", "bf16"), ("openvino", "bf16")]
    assert options("cpu", precision="fp32") == [("openvino", "fp32")]
    assert options("cpu", backend="torch") == [("torch", "bf16")]
    monkeypatch.setattr(engine_module, "openvino_available", lambda: False)  # not installed: torch only
    assert options("cpu") == [("torch", "bf16")]
    monkeypatch.setattr(engine_module, "candidates", lambda device: [])
    assert options("cpu") == []


def test_nothing_to_try_means_torch_fp32(fp32, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(engine_module, "options", lambda device, backend, precision: [])
    backend, precision, report = choose(fp32.model, "m", tmp_path)
    assert (backend, precision) == ("torch", "fp32") and "nothing besides torch fp32" in report["reason"]
    assert not list(tmp_path.iterdir())  # nothing to remember: no trial ran


def _fake_trial(speedup: float, cosine: float):
    def run(st, pairs, texts, rounds=2, openvino_cache=None, threads=None):
        rows = [Trial(b, p, 1000 * speedup, cosine, cosine, speedup) for b, p in pairs]
        return [Trial("torch", "fp32", 1000.0, 1.0, 1.0, 1.0), *rows]

    return run


@pytest.mark.parametrize(
    ("speedup", "cosine", "chosen"),
    [(2.5, 0.99998, "bf16"), (1.02, 0.99998, "fp32"), (3.0, 0.995, "fp32")],
    ids=["faster-and-close", "not-faster", "fails-parity"],
)
def test_auto_takes_a_low_precision_only_if_faster_and_within_parity(
    fp32, monkeypatch, tmp_path, speedup, cosine, chosen
) -> None:
    monkeypatch.setattr(engine_module, "options", lambda device, backend, precision: [("torch", "bf16")])
    monkeypatch.setattr(engine_module, "trial", _fake_trial(speedup, cosine))
    backend, precision, report = choose(fp32.model, "m", tmp_path)
    assert backend == "torch" and precision == chosen == report["precision"]
    assert [t["precision"] for t in report["trials"]] == ["fp32", "bf16"]
    # cached: a second choice reads the file instead of running a trial
    monkeypatch.setattr(engine_module, "trial", lambda *a, **k: pytest.fail("trial ran again"))
    assert choose(fp32.model, "m", tmp_path)[1] == chosen
    (cached,) = tmp_path.glob("precision-*.json")
    assert json.loads(cached.read_text())["precision"] == chosen


def test_a_corrupt_cache_is_ignored(fp32, monkeypatch, tmp_path) -> None:
    monkeypatch.setattr(engine_module, "options", lambda device, backend, precision: [("torch", "bf16")])
    monkeypatch.setattr(engine_module, "trial", _fake_trial(2.0, 0.99999))
    choose(fp32.model, "m", tmp_path)
    (cached,) = tmp_path.glob("precision-*.json")
    cached.write_text('{"precision": "int3", "backend": "torch"}')
    assert choose(fp32.model, "m", tmp_path)[1] == "bf16"


def test_auto_on_this_machine_is_fp32_or_a_gated_low_precision(tmp_path) -> None:
    """The real trial on this machine: whatever it picks, its report shows why."""
    embedder = load_embedder(EmbedderConfig(cache_dir=str(tmp_path)))
    report = embedder.engine_report
    assert (embedder.backend, embedder.precision) == (report["backend"], report["precision"])
    if (embedder.backend, embedder.precision) != ("torch", "fp32"):
        (t,) = [t for t in report["trials"] if (t["backend"], t["precision"]) == (embedder.backend, embedder.precision)]
        assert t["mean_cosine"] >= PARITY_MIN_COSINE and t["speedup"] >= engine_module.MIN_SPEEDUP
    assert list(tmp_path.glob("precision-*.json")) or "reason" in report


def test_bad_engine_settings_are_clear_errors() -> None:
    with pytest.raises(InvalidSettingError, match="precision 'int4'"):
        load_embedder(EmbedderConfig(precision="int4"))  # type: ignore[arg-type]
    with pytest.raises(InvalidSettingError, match="backend 'onnx'"):
        load_embedder(EmbedderConfig(backend="onnx"))  # type: ignore[arg-type]
    with pytest.raises(InvalidSettingError, match="fp32/bf16/fp16"):
        Engine(None, precision="auto")  # type: ignore[arg-type]
    with pytest.raises(InvalidSettingError, match="fp16 runs on CUDA only"):
        load_embedder(EmbedderConfig(device="cpu", backend="torch", precision="fp16"))
    with pytest.raises(InvalidSettingError, match="length-scaled"):
        load_embedder(EmbedderConfig(backend="openvino", temperature=0.9, length_scaled=True))


# `make install` installs the openvino extra; without it these are reported as skipped (pytest -ra), never hidden.
needs_openvino = pytest.mark.skipif(not openvino_available(), reason="the openvino extra is not installed")


@needs_openvino
@pytest.mark.parametrize(("precision", "least"), [("fp32", 0.99999), ("bf16", PARITY_MIN_COSINE)])
def test_openvino_matches_torch_fp32(fp32, tmp_path, precision, least) -> None:
    texts = trial_texts(32)
    ov = load_embedder(EmbedderConfig(backend="openvino", precision=precision, cache_dir=str(tmp_path)))
    assert (ov.backend, ov.precision) == ("openvino", precision) and ov.fingerprint == fp32.fingerprint
    cos = np.sum(ov.encode_documents(texts) * fp32.encode_documents(texts), axis=1)
    assert cos.mean() >= least
    assert list(tmp_path.glob("openvino-*.xml"))  # converted once, kept for the next load


@needs_openvino
def test_openvino_carries_long_context_patches(tmp_path) -> None:
    """The converted model is the patched one: extended positions read past the trained window alike."""
    config = {"extend_to": 1024, "positions": "keep", "cache_dir": str(tmp_path)}
    torch32 = load_embedder(EmbedderConfig(backend="torch", precision="fp32", **config))
    ov = load_embedder(EmbedderConfig(backend="openvino", precision="fp32", **config))
    text = " ".join(f"Clause {i} names the value {i * 7}." for i in range(150))  # ~900 tokens
    assert np.sum(ov.encode_documents([text]) * torch32.encode_documents([text])) >= 0.9999


@needs_openvino
def test_a_backend_that_fails_falls_back_to_torch_under_auto(monkeypatch, tmp_path, caplog) -> None:
    def broken(*args, **kwargs):
        raise RuntimeError("conversion failed")

    monkeypatch.setattr(engine_module, "OpenVinoForward", broken)
    monkeypatch.setattr(engine_module, "options", lambda device, backend, precision: [("openvino", "fp32")])
    embedder = load_embedder(EmbedderConfig(cache_dir=str(tmp_path), token_budget=4096))
    assert embedder.backend == "torch"
    assert "left out of the engine trial: conversion failed" in caplog.text
    with pytest.raises(InvalidSettingError, match="openvino backend cannot run this model: conversion failed"):
        load_embedder(EmbedderConfig(backend="openvino", precision="fp32", cache_dir=str(tmp_path)))


@needs_openvino
def test_a_damaged_openvino_cache_is_converted_again(fp32, tmp_path, caplog) -> None:
    cache = tmp_path / "m"
    cache.with_suffix(".xml").write_text("<net> cut short by a crash")
    engine = Engine(fp32.model, backend="openvino", precision="fp32", openvino_cache=cache)
    texts = trial_texts(4)
    assert np.sum(normalize(engine.encode(texts, "")) * fp32.encode_documents(texts), axis=1).min() >= 0.9999
    assert "unreadable, converting again" in caplog.text
    caplog.clear()
    Engine(fp32.model, backend="openvino", precision="fp32", openvino_cache=cache)  # the rewritten cache reads
    assert "unreadable" not in caplog.text


def test_threads_follow_the_cpus_this_process_may_use(tmp_path) -> None:
    import os

    from longvec.embedder.engine import cpu_threads

    allowed = len(os.sched_getaffinity(0))
    assert cpu_threads(tmp_path) == allowed  # no cgroup file: the affinity mask
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cpu_threads(tmp_path) == allowed
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a CPU of quota: one thread, never zero
    assert cpu_threads(tmp_path) == 1


def test_explicit_threads_set_the_model_threads(fp32) -> None:
    import torch

    before = torch.get_num_threads()
    texts = ["def f(x): return x", "threads change the schedule, not the result"]
    reference = Engine(fp32.model, precision="fp32").encode(texts, "")
    try:
        engine = Engine(fp32.model, precision="fp32", threads=1)
        assert engine.threads == 1 and torch.get_num_threads() == 1
        np.testing.assert_allclose(engine.encode(texts, ""), reference, atol=1e-5)
    finally:
        torch.set_num_threads(before)
    with pytest.raises(InvalidSettingError, match="threads"):
        Engine(fp32.model, precision="fp32", threads=0)


def test_packed_rows_give_the_unpacked_vectors(fp32) -> None:
    texts = trial_texts(60) + ["x", "a short one", ""]
    plain = Engine(fp32.model, precision="fp32", token_budget=1024)
    packed = Engine(fp32.model, precision="fp32", token_budget=1024, max_batch=16, packing=True)
    np.testing.assert_allclose(packed.encode(texts, ""), plain.encode(texts, ""), atol=2e-5)
    np.testing.assert_allclose(packed.encode(texts, "query: "), plain.encode(texts, "query: "), atol=2e-5)
    # every text lands in exactly one row; rows fit the widest text; batches keep the budget and max_batch
    tokens = packed._tokens(texts, "")
    width = max(map(len, tokens))
    seen = []
    for idx, rows in packed._packed.batches(tokens, 1024, 16):
        assert [i for r in rows for i in r] == idx and len(idx) <= 16
        assert all(sum(len(tokens[i]) for i in r) <= width for r in rows)
        assert len(rows) == 1 or len(rows) * width <= 1024
        seen += idx
    assert sorted(seen) == list(range(len(texts)))
    assert len(seen) > sum(1 for _ in packed._packed.batches(tokens, 1024, 16))  # rows really hold several texts


def test_packing_is_torch_only_and_checked_when_configured(tmp_path) -> None:
    with pytest.raises(InvalidSettingError, match="torch backend only"):
        load_embedder(EmbedderConfig(packing=True, backend="openvino", cache_dir=str(tmp_path)))
    packed = load_embedder(EmbedderConfig(packing=True, precision="fp32", cache_dir=str(tmp_path)))
    assert packed.backend == "torch" and packed.engine_report["packing"] is True
