"""Long context: position interpolation math, short inputs unchanged, long inputs accepted, TempScale."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from longvec.api.cli import main
from longvec.embedder import EmbedderConfig, InvalidSettingError, load_embedder
from longvec.embedder.longctx import (
    _LongMask,
    _self_extend_attention,
    extend_positions,
    extend_rope,
    interpolated_table,
    position_offset,
    rotary_buffers,
    self_extend,
    self_extend_distances,
    self_extend_group,
    set_temperature,
    temperature_knobs,
    usable_positions,
)
from longvec.index import Collection, Document, InvalidInputError, ModelMismatchError, token_counter
from longvec.index.types import DOC_SYMBOL

SHORT = ["def add(a, b):\n    return a + b", "The amber lantern of Lisbon is kept in a cedar chest."]


def _table(n: int = 4, d: int = 3) -> torch.Tensor:
    return torch.arange(n * d, dtype=torch.float32).reshape(n, d) ** 1.5  # rows that differ non-linearly


def _blend(old: torch.Tensor, x: float) -> torch.Tensor:
    lo = int(x)
    hi = min(lo + 1, len(old) - 1)
    return old[lo] + (old[hi] - old[lo]) * (x - lo)


def test_linear_interpolation_spreads_the_old_rows_over_the_new_length():
    old = _table()
    new = interpolated_table(old, 8, "linear")
    assert new.shape == (8, 3)
    for p in range(8):  # row p reads the old table at p * 3 / 7: first and last rows stay first and last
        assert torch.allclose(new[p], _blend(old, p * 3 / 7)), p
    assert torch.equal(new[0], old[0]) and torch.equal(new[7], old[3])
    assert len({tuple(r.tolist()) for r in new}) == 8  # no row repeated at the tail


def test_keep_and_group_leave_the_trained_rows_alone():
    old = _table(6)
    kept = interpolated_table(old, 14, "keep", keep=2)  # rows 2..5 stretched over 2..13
    assert torch.equal(kept[:2], old[:2]) and torch.equal(kept[2], old[2]) and torch.equal(kept[13], old[5])
    for p in range(2, 14):
        assert torch.allclose(kept[p], _blend(old, 2 + (p - 2) * 3 / 11)), p
    grouped = interpolated_table(old, 14, "group", keep=2)  # groups of ceil(12 / 4) = 3 positions per old row
    assert torch.equal(grouped[:2], old[:2])
    sources = [int(torch.nonzero((old == grouped[p]).all(1))[0]) for p in range(2, 14)]
    assert sources == [2, 2, 2, 3, 3, 3, 4, 4, 4, 5, 5, 5]
    assert torch.equal(interpolated_table(old, 6, "keep", keep=3), old)  # same length: nothing moves


@pytest.mark.parametrize(
    ("target", "mode", "keep"), [(3, "linear", 0), (8, "keep", 4), (8, "keep", -1), (8, "spline", 0)]
)
def test_bad_interpolation_settings_are_refused(target, mode, keep):
    with pytest.raises(InvalidSettingError):
        interpolated_table(_table(), target, mode, keep)


def _config(**settings) -> EmbedderConfig:
    """The model on torch in fp32: these tests check the patches' arithmetic, exactly (the engine's backends and
    precisions are held to their parity gate in test_engine.py)."""
    return EmbedderConfig(backend="torch", precision="fp32", **settings)


@pytest.fixture(scope="module")
def base():
    return load_embedder(_config())


@pytest.fixture(scope="module")
def extended():
    return load_embedder(_config(extend_to=4096))


def _n_tokens(embedder, text: str) -> int:
    return token_counter(embedder).count(text)


def test_extension_keeps_short_inputs_identical_and_changes_the_fingerprint(base, extended):
    assert extended.max_tokens == extended.position_limit == 4096
    assert np.array_equal(base.encode_documents(SHORT), extended.encode_documents(SHORT))
    assert base.fingerprint != extended.fingerprint
    linear = load_embedder(_config(extend_to=1024, positions="linear"))
    assert not np.allclose(base.encode_documents(SHORT), linear.encode_documents(SHORT), atol=1e-4)  # asked for


def test_an_extended_model_reads_past_its_trained_window(base, extended):
    filler = " ".join(f"Sentence {i} talks about topic {i % 37}." for i in range(500))
    text = filler + " The pass key is 48213."
    assert 3000 < _n_tokens(extended, text) <= 4096
    # the base model cuts at 256 tokens, so the end of the text cannot change its vector; the extended one reads it
    other = filler + " The weather in Lisbon is mild."
    assert np.array_equal(base.encode_documents([text]), base.encode_documents([other]))
    a, b = extended.encode_documents([text, other])
    assert np.isfinite(a).all() and abs(float(np.linalg.norm(a)) - 1) < 1e-5 and float(a @ b) < 0.9999


def test_max_tokens_is_checked_against_the_extended_limit():
    with pytest.raises(InvalidSettingError):
        load_embedder(_config(extend_to=1024, max_tokens=2048))
    with pytest.raises(InvalidSettingError):
        load_embedder(_config(extend_to=256))  # below the model's 512-row table


def _scales(model) -> list[float]:
    return [getattr(m, attr) for m, attr, _ in temperature_knobs(model)]


def test_tempscale_at_one_is_the_model_itself_and_settings_do_not_compound(base):
    text = [" ".join(f"Line {i} of a long page." for i in range(60))]
    model = base.model[0].auto_model
    own = _scales(model)
    before = base.encode_documents(text)
    try:
        set_temperature(model, 0.5)
        assert _scales(model) == [s * 2 for s in own]
        sharpened = base.encode_documents(text)
        assert not np.allclose(before, sharpened, atol=1e-4)
        set_temperature(model, 0.5)  # again: replaces, never compounds
        assert np.array_equal(base.encode_documents(text), sharpened)
        set_temperature(model, 1.0, length_scaled=True, trained=16)  # n > 16 here: logits scaled up
        assert not np.allclose(before, base.encode_documents(text), atol=1e-4)
    finally:
        set_temperature(model, 1.0)
    assert _scales(model) == own
    assert np.array_equal(base.encode_documents(text), before)


def test_tempscale_through_the_config_changes_the_fingerprint(base):
    sharp = load_embedder(_config(temperature=0.8))
    assert sharp.fingerprint not in (base.fingerprint, load_embedder(_config(extend_to=4096)).fingerprint)
    with pytest.raises(InvalidSettingError):
        load_embedder(_config(temperature=0.0))


@pytest.mark.slow
def test_a_16k_token_input_encodes(extended):
    big = load_embedder(_config(extend_to=16384))
    text = " ".join(f"Sentence {i} talks about topic {i % 37}." for i in range(1800))
    assert 12000 < _n_tokens(big, text) <= 16384
    (v,) = big.encode_documents([text])
    assert np.isfinite(v).all() and abs(float(np.linalg.norm(v)) - 1) < 1e-5


def test_a_collection_records_its_long_context_and_reopens_with_it(tmp_path):
    root = tmp_path / "c"
    text = " ".join(f"Sentence {i} talks about topic {i % 37}." for i in range(100)) + " The pass key is 48213."
    with Collection.create(root, embedder_config=_config(extend_to=1024)) as c:
        c.add([Document("long", text), Document("short", "The weather in Lisbon is mild.")])
        assert c.info()["encoder"] == {"extend_to": 1024} and c.info()["max_tokens"] == 1024
        assert c.info()["chunks"] == 2  # ~720 tokens: one chunk, one vector, read whole
        before = c.search("pass key 48213", k=2, mode="dense")
    with Collection.open(root, readonly=True, embedder_config=_config()) as c:  # the manifest's settings are loaded
        assert c.embedder.fingerprint == load_embedder(_config(extend_to=1024)).fingerprint
        assert c.search("pass key 48213", k=2, mode="dense") == before
    with pytest.raises(ModelMismatchError, match="long-context"):
        Collection.open(root, embedder_config=_config(extend_to=2048))
    plain = tmp_path / "plain"
    Collection.create(plain).close()
    manifest = json.loads((plain / "manifest.json").read_text())
    assert manifest.pop("encoder") == {}
    (plain / "manifest.json").write_text(json.dumps(manifest))  # as a collection made before the setting existed
    with Collection.open(plain, readonly=True) as c:
        assert c.manifest.encoder == {} and c.embedder.max_tokens == 256


def test_cli_index_takes_the_long_context_flags(tmp_path, capsys):
    docs = tmp_path / "d.jsonl"
    docs.write_text(json.dumps({"id": "a", "text": "def f():\n    return 1\n"}) + "\n")
    root = tmp_path / "c"
    args = ["index", "--collection", str(root), "--input", str(docs)]
    assert main([*args, "--extend-to", "1024", "--positions", "group", "--temperature", "0.9"]) == 0
    capsys.readouterr()
    assert main(["info", "--collection", str(root)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["encoder"] == {"extend_to": 1024, "positions": "group", "temperature": 0.9}
    assert main([*args, "--extend-to", "2048"]) == 2  # a built collection keeps its encoder
    assert "long-context settings" in capsys.readouterr().err
    assert main([*args]) == 0  # re-indexing without the flags reuses the recorded ones
    assert main(["index", "--collection", str(tmp_path / "d"), "--input", str(docs), "--positions", "linear"]) == 2
    assert "needs extend_to" in capsys.readouterr().err
    extend = ["index", "--collection", str(tmp_path / "e"), "--input", str(docs), "--strategy", "extend"]
    assert main(extend) == 2 and "--extend-to N" in capsys.readouterr().err
    assert not (tmp_path / "e" / "manifest.json").exists()  # refused before anything was written
    assert (
        main([*extend, "--extend-to", "1024", "--max-tokens", "512"]) == 2
        and "extended length" in capsys.readouterr().err
    )
    assert main([*extend, "--extend-to", "1024"]) == 0
    capsys.readouterr()
    assert main(["info", "--collection", str(tmp_path / "e")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["strategy"], info["max_tokens"], info["encoder"]) == ("extend", 1024, {"extend_to": 1024})


def test_late_chunking_of_a_one_window_one_chunk_document_is_plain_encoding(base):
    text = SHORT[0]
    (late,) = base.encode_late([(text, [(0, len(text))])])
    np.testing.assert_allclose(late, base.encode_documents([text]), atol=1e-6)


def test_late_chunking_reads_long_documents_in_overlapping_windows(base):
    text = " ".join(f"Sentence {i} talks about topic {i % 37}." for i in range(300))  # ~2,100 tokens
    spans = [(i, min(i + 400, len(text))) for i in range(0, len(text), 400)]
    (late,) = base.encode_late([(text, spans)], window=256)
    assert late.shape == (len(spans), base.dim) and np.allclose(np.linalg.norm(late, axis=1), 1, atol=1e-5)
    plain = base.encode_documents([text[a:b] for a, b in spans])
    cos = (late * plain).sum(1)
    assert 0.3 < float(cos.mean()) < 0.999  # related to the span's own text, changed by its context
    # the same span in a different document gets a different vector (context), plain encoding cannot tell
    other = "Completely unrelated preface about gardening tools. " * 20 + text[:400]
    (alone,) = base.encode_late([(other, [(len(other) - 400, len(other))])], window=256)
    assert float(alone[0] @ late[0]) < 0.9999
    with pytest.raises(InvalidSettingError, match="no token"):
        base.encode_late([(text, [(5, 5)])])
    with pytest.raises(InvalidSettingError):
        base.encode_late([(text, spans)], window=4096)  # past the model's position table


def test_a_late_collection_indexes_and_searches(tmp_path, base, fake_embedder):
    docs = [
        Document("shapes.py", "class Circle:\n    def area(self):\n        return 3.14159 * self.r ** 2\n\n" * 3),
        Document("notes.txt", "The amber lantern of Lisbon is kept in a cedar chest. " * 30),
    ]
    with Collection.create(tmp_path / "c", strategy="late", embedder=base) as c:
        c.add(docs)
        assert c.info()["strategy"] == "late" and c.info()["chunks"] >= 2
        assert c.search("where is the lantern kept", k=1, mode="dense")[0].doc_id == "notes.txt"
    with Collection.create(tmp_path / "f", strategy="late", embedder=fake_embedder) as c:
        with pytest.raises(InvalidInputError, match="encode_late"):
            c.add(docs)


def _tiny_rotary_encoder(vocab: int = 100, cls: int = 1, sep: int = 2):
    """A randomly initialised two-layer ModernBERT (rotary positions, softmax scale written inline; trained
    length 128, sliding windows of 64 on its local layer)."""
    from transformers import ModernBertConfig, ModernBertModel

    torch.manual_seed(0)
    config = ModernBertConfig(
        vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        max_position_embeddings=128, global_attn_every_n_layers=2, pad_token_id=0, bos_token_id=cls,
        eos_token_id=sep, cls_token_id=cls, sep_token_id=sep,
    )  # fmt: skip
    return ModernBertModel(config).eval()


def _states(model, ids):
    with torch.inference_mode():
        return model(input_ids=ids).last_hidden_state


def test_rotary_scaling_math_and_identity_at_factor_one():
    model = _tiny_rotary_encoder()
    ids = torch.randint(3, 100, (1, 300))  # past the configured 128 positions
    before = _states(model, ids)
    ((module, name),) = rotary_buffers(model)  # the global layers' frequencies only
    assert name == "full_attention_inv_freq"
    local = module.sliding_attention_inv_freq.clone()  # a local layer sees 64 tokens whatever the input
    trained = getattr(module, name).clone()
    for mode in ("keep", "linear"):
        extend_rope(model, 1.0, mode)
        assert torch.equal(getattr(module, name), trained) and torch.equal(_states(model, ids), before)
    extend_rope(model, 4.0, "linear")  # every frequency / 4: position 4p now turns as p did
    assert torch.allclose(getattr(module, name), trained / 4)
    extend_rope(model, 4.0, "keep")  # NTK-aware (from the trained frequencies, not compounded)
    ntk = getattr(module, name)
    assert ntk[0] == trained[0] and torch.isclose(ntk[-1], trained[-1] / 4)  # fastest kept, slowest interpolated
    assert bool((ntk <= trained).all()) and bool((ntk >= trained / 4 - 1e-12).all())
    assert float((_states(model, ids) - before).abs().max()) > 1e-5  # random weights: positions matter little
    assert torch.equal(module.sliding_attention_inv_freq, local)
    with pytest.raises(InvalidSettingError, match="SelfExtend"):
        extend_rope(model, 2.0, "group")
    with pytest.raises(InvalidSettingError):
        extend_rope(model, 0.5, "keep")


def test_self_extend_distances_are_true_near_grouped_far_and_fit_the_trained_range():
    window, group = 16, 4
    d = self_extend_distances(200, window, group)
    true = torch.arange(200)[:, None] - torch.arange(200)[None, :]
    near = true.abs() < window
    assert torch.equal(d[near], true[near]) and torch.equal(d, -d.T)  # bidirectional: symmetric in sign
    p = torch.arange(200)
    far = true >= window
    grouped = p[:, None] // group - p[None, :] // group
    assert torch.equal(d[far], grouped[far] + window - window // group)  # grouped, moved out past the window
    row = d[199, :].flip(0)  # distances from the last token, nearest key first
    assert bool((row[1:] >= row[:-1]).all())  # farther keys never look nearer
    assert int(d.abs().max()) == 199 // group + window - window // group
    g = self_extend_group(trained=64, target=1000, window=32)
    assert (1000 - 1) // g + 32 - 32 // g < 64 <= (1000 - 1) // (g - 1) + 32 - 32 // (g - 1)  # the smallest that fits
    assert self_extend_group(trained=64, target=64, window=32) == 1
    with pytest.raises(InvalidSettingError):
        self_extend_group(trained=64, target=1000, window=64)


def _rotate(x, positions, inv_freq):
    """Rotary embedding by complex multiplication: dims (c, c + D/2) are one complex number turned by p * f_c."""
    half = x.shape[-1] // 2
    z = torch.complex(x[..., :half].double(), x[..., half:].double())
    z = z * torch.polar(torch.ones_like(inv_freq.double()), positions.double()[:, None] * inv_freq.double())
    return torch.cat([z.real, z.imag], dim=-1).float()


def _logits_at(q, k, dist, inv_freq):
    """Rotary attention logits of un-rotated ``q``, ``k`` (batch, heads, n, d) at the relative positions ``dist``
    (n, n): rotary logits depend only on the distance, so query ``i`` is turned by ``dist[i, j]`` for key ``j``."""
    n = q.shape[2]
    logits = torch.empty(*q.shape[:2], n, n)
    for i in range(n):
        logits[:, :, i] = (_rotate(q[:, :, i : i + 1].expand(-1, -1, n, -1), dist[i], inv_freq) * k).sum(-1)
    return logits


class _Settings:
    """A stand-in attention module carrying SelfExtend's settings and the rotary frequencies."""

    def __init__(self, window, group, inv_freq):
        self.inv_freq = inv_freq
        self._longvec_self_extend = (window, group, self, "inv_freq")


@pytest.mark.parametrize("band", [None, 5])
@pytest.mark.parametrize("padded", [False, True])
def test_self_extend_attention_equals_attention_at_the_grouped_distances(padded, band, monkeypatch):
    torch.manual_seed(1)
    n, d, window, group = 45, 8, 6, 4
    q, k, v = (torch.randn(1, 2, n, d) for _ in range(3))
    inv_freq = 1.0 / (100.0 ** (torch.arange(0, d, 2).float() / d))
    p = torch.arange(n)
    keys = None
    if padded:  # the last 5 keys are padding
        keys = torch.ones(1, 1, 1, n, dtype=torch.bool)
        keys[..., n - 5 :] = False
    monkeypatch.setattr("longvec.embedder.longctx._BLOCK_ELEMENTS", 2 * n * 7)  # blocks of a few query rows
    module, mask = _Settings(window, group, inv_freq), _LongMask(keys, band)
    out, _ = _self_extend_attention(module, _rotate(q, p, inv_freq), _rotate(k, p, inv_freq), v, mask, scaling=0.3)
    # reference: rotary logits depend only on the distance, so turn each query by the distance it attends at:
    # SelfExtend's on full-attention layers, the true one within a sliding layer's band (and nothing past it)
    true = p[:, None] - p[None, :]
    dist = self_extend_distances(n, window, group) if band is None else true
    logits = _logits_at(q, k, dist, inv_freq) * 0.3
    if band is not None:
        logits = logits.masked_fill(true.abs() > band, float("-inf"))
    if padded:
        logits = logits.masked_fill(~keys, float("-inf"))
    expected = torch.softmax(logits, dim=-1) @ v
    assert torch.allclose(out.transpose(1, 2), expected, atol=1e-5)


def _reference_attention(module, query, key, value, attention_mask, scaling=None, **kwargs):
    """Attention at SelfExtend's distances, materialised: full layers turn each (un-rotated) query by the
    distance to each key, with the model's full-attention frequencies; sliding layers keep true distances
    within their band. No padding."""
    model_config, n = module.config, query.shape[2]
    p = torch.arange(n)
    if module.sliding_window is not None:
        logits = (query @ key.transpose(-1, -2)).masked_fill(
            (p[:, None] - p[None, :]).abs() > model_config.sliding_window, float("-inf")
        )
    else:
        inv_freq, (window, group) = module._reference
        q, k = _rotate(query, -p, inv_freq), _rotate(key, -p, inv_freq)  # back to position 0
        logits = _logits_at(q, k, self_extend_distances(n, window, group), inv_freq)
    out = torch.softmax(logits * scaling, dim=-1) @ value
    return out.transpose(1, 2).contiguous(), None


def test_self_extend_on_a_rotary_encoder_keeps_short_inputs_and_reads_long_ones():
    from transformers import AttentionInterface, AttentionMaskInterface
    from transformers.masking_utils import sdpa_mask

    base = _tiny_rotary_encoder()  # trained length 128, sliding windows of 64
    ids = torch.randint(3, 100, (2, 400))
    before_short, before_long = _states(base, ids[:, :64]), _states(base, ids)
    model = _tiny_rotary_encoder()
    assert self_extend(model, 1000) == {"trained": 128, "window": 64, "group": 15}
    assert model.config._attn_implementation == "longvec_self_extend"
    assert torch.equal(_states(model, ids[:, :64]), before_short)  # within the window: SDPA, untouched
    extended = _states(model, ids)
    assert extended.shape == before_long.shape and bool(torch.isfinite(extended).all())
    assert float((extended - before_long).abs().max()) > 1e-6  # far tokens now attend at grouped distances
    # the whole model against materialised attention at the grouped distances, global frequencies named here
    for m in model.modules():
        if hasattr(m, "sliding_window"):
            m._reference = (model.rotary_emb.full_attention_inv_freq, (64, 15))
    AttentionInterface.register("longvec_test_reference", _reference_attention)
    AttentionMaskInterface.register("longvec_test_reference", sdpa_mask)
    model.set_attn_implementation("longvec_test_reference")
    assert torch.allclose(_states(model, ids), extended, atol=1e-5)
    # group 1 (every distance true) through the blocked attention is the model itself, padded batches too
    ungrouped = _tiny_rotary_encoder()
    self_extend(ungrouped, 1000, window=40)
    for m in ungrouped.modules():
        if "_longvec_self_extend" in vars(m):
            m.__dict__["_longvec_self_extend"] = (40, 1, *m.__dict__["_longvec_self_extend"][2:])
    assert torch.allclose(_states(ungrouped, ids), before_long, atol=1e-5)
    mask = torch.ones_like(ids)
    mask[1, 250:] = 0  # the second input is 250 tokens long: its padding's band reaches no real token
    with torch.inference_mode():
        padded = [m(input_ids=ids, attention_mask=mask).last_hidden_state for m in (base, ungrouped)]
    assert torch.allclose(padded[0][1, :250], padded[1][1, :250], atol=1e-5)
    assert bool(torch.isfinite(padded[1]).all())


def test_self_extend_refuses_what_it_cannot_extend():
    with pytest.raises(InvalidSettingError, match="past the trained"):
        self_extend(_tiny_rotary_encoder(), 128)
    model = _tiny_rotary_encoder()
    for m in model.modules():
        if hasattr(m, "sliding_window"):
            m.is_causal = True  # as a decoder's attention would be
    with pytest.raises(InvalidSettingError, match="causal"):
        self_extend(model, 1000)
    assert model.config._attn_implementation != "longvec_self_extend"  # refused before anything was patched
    assert not any("_longvec_self_extend" in vars(m) for m in model.modules())


@pytest.fixture(scope="module")
def rotary_model(tmp_path_factory):
    """A sentence-transformers model around a random ModernBERT (trained length 128), with the default model's
    tokenizer: the shape of gte-modernbert, small enough to build here."""
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers 5
        from sentence_transformers.models import Pooling, Transformer
    from transformers import AutoTokenizer

    from longvec.embedder import DEFAULT_MODEL, resolve_model

    root = tmp_path_factory.mktemp("rotary")
    _tiny_rotary_encoder(vocab=30522, cls=101, sep=102).save_pretrained(root / "hf")  # the BERT tokenizer's ids
    AutoTokenizer.from_pretrained(resolve_model(DEFAULT_MODEL)).save_pretrained(root / "hf")
    modules = [Transformer(str(root / "hf"), max_seq_length=128), Pooling(32, "mean")]
    SentenceTransformer(modules=modules).save(str(root / "st"))
    return str(root / "st")


def test_a_rotary_model_extends_by_self_extend_through_the_config(rotary_model):
    plain = load_embedder(EmbedderConfig(model=rotary_model, precision="fp32", backend="torch"))
    grouped = load_embedder(
        EmbedderConfig(model=rotary_model, precision="fp32", backend="torch", extend_to=1024, positions="group")
    )
    assert (plain.max_tokens, grouped.max_tokens) == (128, 1024)
    assert grouped.long_context == {"extend_to": 1024, "positions": "group"}
    assert grouped.fingerprint != plain.fingerprint
    assert np.array_equal(grouped.encode_documents(SHORT), plain.encode_documents(SHORT))
    long = " ".join(f"word{i}" for i in range(600))
    assert len(grouped.tokenizer.encode(long).ids) == 1024  # eight times the trained length, read whole
    assert np.isfinite(grouped.encode_documents([long])).all()
    assert grouped.engine_report.get("backend", "torch") == "torch"
    for refused in ({"backend": "openvino"}, {"packing": True}):  # a traced graph or packed masks would bypass it
        with pytest.raises(InvalidSettingError, match="SelfExtend"):
            load_embedder(
                EmbedderConfig(model=rotary_model, precision="fp32", extend_to=1024, positions="group", **refused)
            )


def test_tempscale_on_a_rotary_encoder_goes_through_its_rotary_scale():
    model = _tiny_rotary_encoder()
    ids = torch.randint(3, 100, (1, 64))
    before = _states(model, ids)
    knobs = temperature_knobs(model)  # the global and the local layers' rotary scales
    assert len(knobs) == 2 and all(power == 2 for _, _, power in knobs)  # cos and sin: logits go as its square
    set_temperature(model, 0.25)
    assert [getattr(m, a) for m, a, _ in knobs] == [2.0, 2.0]  # 1/sqrt(0.25): logits x4
    assert not torch.allclose(_states(model, ids), before, atol=1e-4)
    set_temperature(model, 1.0)
    assert torch.equal(_states(model, ids), before)


def test_a_document_vector_joins_the_chunks_of_a_long_document(tmp_path, fake_embedder):
    long = "\n\n".join(f"Paragraph {i}: alpha beta gamma delta words go here." for i in range(40))
    with Collection.create(tmp_path / "c", embedder=fake_embedder, doc_vector=True) as c:
        c.add([Document("long", long), Document("short", "alpha once")])
        assert c.info()["doc_vector"] is True
        rows = c._store._db.execute("SELECT doc_id, chunk_id, start, symbol FROM chunks ORDER BY id").fetchall()
        long_rows = [r for r in rows if r[0] == "long"]
        assert len(long_rows) > 2 and long_rows[-1][2:] == (0, DOC_SYMBOL)  # one more, from the start
        assert [r for r in rows if r[0] == "short"] == [("short", 0, 0, None)]  # one chunk: no extra vector
        lexical = c._store._db.execute("SELECT terms FROM chunk_terms ORDER BY rowid").fetchall()
        assert lexical[len(long_rows) - 1] == ("",)  # its window repeats its chunks' terms: not indexed again
        counted = c._store._db.execute("SELECT n_tokens FROM documents WHERE doc_id = 'long'").fetchone()[0]
        chunk_tokens = c._store._db.execute("SELECT n_tokens FROM chunks WHERE doc_id = 'long'").fetchall()
        assert counted == sum(n for (n,) in chunk_tokens[:-1])  # the document's text counted once
        with pytest.raises(InvalidInputError, match="doc_vector"):
            c.search("alpha", agg="mean")
    with pytest.raises(ModelMismatchError):
        Collection.open_or_create(tmp_path / "c", embedder=fake_embedder, doc_vector=False)


def test_split_tokens_keeps_documents_that_fit_whole_and_cuts_longer_ones_finer(tmp_path, fake_embedder):
    from longvec.chunking import Chunker

    counter = token_counter(fake_embedder)
    fits = "def add(a, b):\n    total = a + b\n    return total\n"
    body = "".join(f"    value_{i} = compute(value_{i - 1}, {i})\n" for i in range(1, 60))
    long = f"def pipeline(value_0):\n{body}    return value_59\n"

    def chunks(chunker, text):
        return chunker.chunk("d", text, language="python")

    plain, fine, split = Chunker(counter, 256), Chunker(counter, 96), Chunker(counter, 256, split_tokens=96)
    assert chunks(split, fits) == chunks(plain, fits) and len(chunks(plain, fits)) == 1  # fits: whole
    assert chunks(split, long) == chunks(fine, long)  # does not fit: cut at the smaller budget
    assert len(chunks(split, long)) > len(chunks(plain, long)) > 1
    with pytest.raises(ValueError, match="below max_tokens"):
        Chunker(counter, 256, split_tokens=256)
    root = tmp_path / "c"  # the fake embedder reads 32 tokens
    with Collection.create(root, embedder=fake_embedder, split_tokens=16, doc_vector=True) as c:
        c.add([Document("long.py", long, language="python"), Document("fits.py", "x = 1\n", language="python")])
        assert c.info()["split_tokens"] == 16
        assert c.manifest.format_version == 3  # older longvecs refuse it rather than chunk without the split
        rows = c._store._db.execute("SELECT doc_id, symbol, n_tokens FROM chunks").fetchall()
        assert [r[:2] for r in rows if r[0] == "fits.py"] == [("fits.py", None)]
        pieces = [r for r in rows if r[0] == "long.py"]
        assert pieces[-1][1] == DOC_SYMBOL and len(pieces) == len(chunks(Chunker(counter, 16), long)) + 1
        assert all(n <= 16 for _, _, n in pieces[:-1]) and pieces[-1][2] > 16  # pieces fine, the window whole
    with pytest.raises(ModelMismatchError):
        Collection.open_or_create(root, embedder=fake_embedder, split_tokens=24)
    with pytest.raises(InvalidInputError, match="below max_tokens"):
        Collection.create(tmp_path / "bad", embedder=fake_embedder, split_tokens=32)
    with pytest.raises(InvalidInputError, match="truncate"):
        Collection.create(tmp_path / "trunc", embedder=fake_embedder, strategy="truncate", split_tokens=16)


def test_roberta_style_tables_keep_their_leading_rows_and_number_every_token():
    from transformers import RobertaConfig, RobertaModel

    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=66, pad_token_id=1,
    )  # fmt: skip
    model = RobertaModel(config).eval()
    assert position_offset(model) == 2 and usable_positions(model) == 64  # positions start at padding_idx + 1
    old = model.embeddings.position_embeddings.weight.detach().clone()
    short = torch.randint(3, 100, (1, 30))
    before = _states(model, short)
    extend_positions(model, 256, "keep", keep=32)
    table = model.embeddings.position_embeddings.weight
    assert usable_positions(model) == 256 and torch.equal(table[:34], old[:34]) and torch.equal(table[-1], old[-1])
    assert torch.equal(_states(model, short), before)  # inside the kept rows: unchanged
    assert _states(model, torch.randint(3, 100, (1, 256))).shape == (1, 256, 32)  # every position numbered


def test_length_scaled_vectors_do_not_depend_on_their_batch():
    scaled = load_embedder(_config(extend_to=1024, length_scaled=True))
    long = " ".join(f"Line {i} of a long page." for i in range(100))  # ~700 tokens: logits scaled by ~1.2
    assert 600 < _n_tokens(scaled, long) < 1024
    alone = scaled.encode_documents([SHORT[1]])
    beside = scaled.encode_documents([SHORT[1], long])[:1]
    assert np.array_equal(alone, beside)
