"""``convert_official``: the official RIPO transformer's state dict -> ``RIPOTransformer``.

The official model is ``RIPO_transformer`` (model/model.py, model/layers.py,
model/FME_music_positional_encoding.py of guozixunnicolas/FundamentalMusicEmbedding). Its key
layout is written out below from ``RIPO_transformer(**ripo_transformer.yaml).state_dict()``;
``official_forward`` re-implements its eval forward from that code (tokenizer_plain's relative
matrices included), independently of ours. The parity tests build official-layout state dicts
with random values, convert them, load them strictly and compare logits at non-pad positions.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.music.melody.models.ripo import RIPOConfig, RIPOTransformer, convert_official

# official RIPO_transformer(...).state_dict(): per-layer keys (transformer_encoder.layers.<i>.) and the rest,
# in its order; shapes with d = d_model, f = dim_feedforward, e = rows of E (max_seq), h = head dim
OFFICIAL_LAYER_KEYS = {
    "self_attn.E": ("e", "h"),
    **{f"self_attn.{n}.{p}": ("d", "d") if p == "weight" else ("d",)
       for n in ("Wq", "Wk", "Wv", "fc", "pitch_relnn", "dur_relnn") for p in ("weight", "bias")},
    "linear1.weight": ("f", "d"), "linear1.bias": ("f",),
    "linear2.weight": ("d", "f"), "linear2.bias": ("d",),
    "norm1.weight": ("d",), "norm1.bias": ("d",), "norm2.weight": ("d",), "norm2.bias": ("d",),
}
OFFICIAL_FME_KEYS = {
    "fusion_layer.fusion.weight": ("d", "2d"), "fusion_layer.fusion.bias": ("d",),
    "pitch_embedding.translation_bias": (1, "d"), "pitch_embedding.angles": (1, "d"),
    "pitch_embedding_supplement.weight": (3, "d"),
    "relative_pitch_embedding_supplement.weight": (1, "d"),
    "pitch_senn.weight": ("d", "d"), "pitch_senn.bias": ("d",),
    "dur_embedding.translation_bias": (1, "d"), "dur_embedding.angles": (1, "d"),
    "dur_embedding_supplement.weight": (1, "d"),
    "dur_senn.weight": ("d", "d"), "dur_senn.bias": ("d",),
    "pitch_ffn.weight": ("vp", "d"), "pitch_ffn.bias": ("vp",),
    "dur_ffn.weight": ("vd", "d"), "dur_ffn.bias": ("vd",),
}
OFFICIAL_LEARNED_KEYS = {  # type "nn" embeddings (the music transformer baseline checkpoint)
    "fusion_layer.fusion.weight": ("d", "2d"), "fusion_layer.fusion.bias": ("d",),
    "pitch_embedding.weight": ("vp", "d"), "dur_embedding.weight": ("vd", "d"),
    "pitch_ffn.weight": ("vp", "d"), "pitch_ffn.bias": ("vp",),
    "dur_ffn.weight": ("vd", "d"), "dur_ffn.bias": ("vd",),
}
PE_ROWS = 5000  # Music_PositionalEncoding(max_len=5000)


def official_config(**overrides) -> RIPOConfig:
    """The ``RIPOConfig`` an official checkpoint converts to, tiny unless overridden."""
    base = dict(dim=16, num_heads=2, depth=2, ff_dim=32, max_len=11, pitch_vocab=128, duration_vocab=17,
                norm_layout="official", dropout=0.0)
    return RIPOConfig(**(base | overrides))


def official_pe(d: int) -> torch.Tensor:
    """``Music_PositionalEncoding.pe``, computed as there."""
    position = torch.arange(PE_ROWS).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
    pe = torch.zeros(PE_ROWS, 1, d)
    pe[:, 0, 0::2] = torch.sin(position * div_term)
    pe[:, 0, 1::2] = torch.cos(position * div_term)
    return pe


def official_angles(base: float, d: int) -> torch.Tensor:
    """``Fundamental_Music_Embedding.angles`` at init, ``(1, d)`` float32: one frequency per component."""
    i = torch.arange(d)
    return (1 / torch.pow(base, (2 * (i // 2)) / d))[None]


def official_state_dict(cfg: RIPOConfig, *, seed: int = 0, attention: str = "rgl_rel_pitch_dur", tied: bool = False) -> dict:
    """Random values in the official layout for ``cfg``, float64; sin and cos angles drifted apart, as
    in any trained checkpoint (``tied=True``: equal per pair, as initialised)."""
    g = torch.Generator().manual_seed(seed)
    d = cfg.dim
    size = {"d": d, "2d": 2 * d, "f": cfg.ff_dim, "e": cfg.max_len + 1, "h": d // cfg.num_heads,
            "vp": cfg.pitch_vocab, "vd": cfg.duration_vocab}
    sd = {"pos_encoder.pe": official_pe(d).double()}
    for i in range(cfg.depth):
        for key, shape in OFFICIAL_LAYER_KEYS.items():
            if (key == "self_attn.E" and attention == "mha") or ("relnn" in key and attention != "rgl_rel_pitch_dur"):
                continue
            shape = tuple(size[s] for s in shape)
            value = torch.randn(shape, generator=g, dtype=torch.float64) / math.sqrt(shape[-1])
            if key.startswith("norm"):
                centre = 1.0 if key.endswith("weight") else 0.0
                value = centre + 0.3 * torch.randn(shape, generator=g, dtype=torch.float64)
            sd[f"transformer_encoder.layers.{i}.{key}"] = value
    for key, shape in (OFFICIAL_FME_KEYS if cfg.embedding == "fme" else OFFICIAL_LEARNED_KEYS).items():
        shape = tuple(size[s] if isinstance(s, str) else s for s in shape)
        sd[key] = torch.randn(shape, generator=g, dtype=torch.float64) / math.sqrt(shape[-1])
    if cfg.embedding == "fme":
        for attr, base in (("pitch", 9919.0), ("dur", 7920.0)):
            jitter = 1 + 0.5 * torch.rand(d // 2 if tied else d, generator=g, dtype=torch.float64)  # as if trained
            if tied:
                jitter = jitter.repeat_interleave(2)  # (d,) [j0, j0, j1, j1, ...]
            sd[f"{attr}_embedding.angles"] = (official_angles(base, d)[0].double() * jitter)[None]  # (1, d)
            sd[f"{attr}_embedding.translation_bias"] = torch.rand(1, d, generator=g, dtype=torch.float64)
    return sd


# ----------------------------------------------------------------------------------------- official forward
def fme(x: torch.Tensor, angles: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``Fundamental_Music_Embedding.__call__`` / ``FMS``: sin on even, cos on odd components."""
    a = x[..., None].to(angles.dtype) * angles.reshape(-1)  # (..., d)
    out = torch.empty_like(a)
    out[..., 0::2], out[..., 1::2] = a[..., 0::2].sin(), a[..., 1::2].cos()
    return out if bias is None else out + bias.reshape(-1)


def official_forward(sd: dict, cfg: RIPOConfig, pitch, dur, *, inner_norm1: bool = True):
    """Eval forward of the official RIPO_transformer on end-padded ``pitch, dur (B, L)`` tokens.

    Each official TransformerEncoderLayer computes ``norm1(x + attn(norm1(x)))``: its ``_sa_block``
    reads ``self.norm1(x)`` ahead of the post-norm branch. ``inner_norm1=False`` drops that inner norm1.
    """
    d, heads = cfg.dim, cfg.num_heads
    bsz, length = pitch.shape

    def lin(name, x):
        return F.linear(x, sd[name + ".weight"], sd[name + ".bias"])

    # tokenizer_plain.calculate_relative: onsets in quarter notes, pad durations count -999
    quarters = torch.where(dur == 0, -999.0, dur * 0.25).double()  # (B, L)
    cum = torch.cumsum(F.pad(quarters, (1, 0))[:, :-1], -1)  # (B, L) exclusive
    pad = dur == 0
    onset = torch.where(pad, (quarters * ~pad).sum(-1, keepdim=True), cum)  # pads get the total duration
    dur_rel = torch.where(pad[:, :, None] | pad[:, None, :], 0.0, cum[:, :, None] - cum[:, None, :])  # (B, L, L)
    nq = pitch < 3  # pad, rest, sustain
    pair_nq = nq[:, :, None] | nq[:, None, :]  # (B, L, L)
    pitch_rel = torch.where(pair_nq, 0, pitch[:, :, None] - pitch[:, None, :])  # (B, L, L)

    if cfg.embedding == "fme":
        p_emb = torch.where(nq[..., None], sd["pitch_embedding_supplement.weight"][torch.where(nq, pitch, 0)],
                            fme(pitch, sd["pitch_embedding.angles"], sd["pitch_embedding.translation_bias"]))
        d_emb = torch.where(pad[..., None], sd["dur_embedding_supplement.weight"][0],
                            fme(dur, sd["dur_embedding.angles"], sd["dur_embedding.translation_bias"]))
        e = sd["relative_pitch_embedding_supplement.weight"][0]
        rel_pitch = lin("pitch_senn", torch.where(pair_nq[..., None], e, fme(pitch_rel, sd["pitch_embedding.angles"])))
        rel_dur = lin("dur_senn", fme(dur_rel, sd["dur_embedding.angles"]))  # (B, L, L, d)
    else:
        p_emb, d_emb = sd["pitch_embedding.weight"][pitch], sd["dur_embedding.weight"][dur]
    x = lin("fusion_layer.fusion", torch.cat([p_emb, d_emb], -1)) * math.sqrt(d)  # (B, L, d)
    x = x + sd["pos_encoder.pe"][:length, 0]
    if cfg.onset_encoding:
        timing = official_angles(10001, d).double()  # float32 there (not in its state dict)
        x = x + fme(onset, timing) + fme(onset % 4, timing)

    causal = torch.triu(torch.ones(length, length, dtype=torch.bool), 1)  # (L, L)
    mask = (pitch == 0)[:, None, :, None] | causal  # key_padding_mask[:, None, :, None]: it masks pad *query* rows
    dist = torch.arange(length)[None, :] - torch.arange(length)[:, None]  # (L, L) j - i
    for i in range(cfg.depth):
        pre = f"transformer_encoder.layers.{i}."

        def ln(name, y, pre=pre):
            return F.layer_norm(y, (d,), sd[pre + name + ".weight"], sd[pre + name + ".bias"])

        a_in = ln("norm1", x) if inner_norm1 else x
        q, k, v = (
            lin(pre + "self_attn." + n, a_in).view(bsz, length, heads, -1).transpose(1, 2) for n in ("Wq", "Wk", "Wv")
        )  # (B, H, L, h) each
        s = q @ k.transpose(-1, -2)  # (B, H, L, L)
        if cfg.relative_index:
            table = sd[pre + "self_attn.E"]  # (e, h) row e - 1 + r: distance r
            rows = (table.shape[0] - 1 + dist).clamp(max=table.shape[0] - 1)  # (L, L)
            s = s + torch.einsum("bhid,ijd->bhij", q, table[rows]) * (dist <= 0)  # _qe_masking + _skewing
        if cfg.relative_pitch:
            rp = lin(pre + "self_attn.pitch_relnn", rel_pitch).view(bsz, length, length, heads, -1)
            s = s + torch.einsum("bhid,bijhd->bhij", q, rp)
        if cfg.relative_onset:
            ro = lin(pre + "self_attn.dur_relnn", rel_dur).view(bsz, length, length, heads, -1)
            s = s + torch.einsum("bhid,bijhd->bhij", q, ro)
        s = (s / math.sqrt(d // heads)).masked_fill(mask, -9e15)
        o = (s.softmax(-1) @ v).transpose(1, 2).reshape(bsz, length, d)  # (B, L, d)
        x = ln("norm1", x + lin(pre + "self_attn.fc", o))
        x = ln("norm2", x + lin(pre + "linear2", F.relu(lin(pre + "linear1", x))))
    return lin("pitch_ffn", x), lin("dur_ffn", x)


def melodies(length: int = 12, seed: int = 0):
    """Three end-padded melodies with rests and sustains; the first fills ``length``."""
    g = torch.Generator().manual_seed(seed)
    pitch = torch.randint(3 + 40, 3 + 90, (3, length), generator=g)
    dur = torch.randint(1, 17, (3, length), generator=g)
    pitch[0, 2], pitch[1, 4], pitch[2, 1] = 1, 2, 1
    pitch[0, 7], pitch[1, 0] = 2, 1
    for b, n in enumerate((length, length - 3, 5)):
        pitch[b, n:], dur[b, n:] = 0, 0
    return pitch, dur


def converted_model(cfg: RIPOConfig, sd: dict) -> RIPOTransformer:
    model = RIPOTransformer(cfg).double().eval()
    model.load_state_dict(convert_official(sd, model), strict=True)
    return model


# ----------------------------------------------------------------------------------------- parity
VARIANTS = {
    "ripo": (dict(), "rgl_rel_pitch_dur"),
    "music_transformer": (dict(embedding="learned", relative_pitch=False, relative_onset=False, onset_encoding=False),
                          "rgl_rel_pitch_dur"),
    "music_transformer-rgl_vanilla": (
        dict(embedding="learned", relative_pitch=False, relative_onset=False, onset_encoding=False), "rgl_vanilla"),
    "vanilla-mha": (dict(embedding="learned", relative_index=False, relative_pitch=False, relative_onset=False,
                         onset_encoding=False), "mha"),
}


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_parity_with_official_forward(variant, backend):
    overrides, attention = VARIANTS[variant]
    cfg = official_config(attention_backend=backend, **overrides)
    sd = official_state_dict(cfg, attention=attention)
    model = converted_model(cfg, sd)
    pitch, dur = melodies()
    with torch.no_grad():
        ours = model(pitch, dur)
    theirs = official_forward(sd, cfg, pitch, dur)
    valid = pitch != 0
    for a, b in zip(ours, theirs):
        assert a.dtype == torch.float64
        # our global / modulo onset angles are float32 whatever the model dtype (measured 5e-8)
        torch.testing.assert_close(a[valid], b[valid], rtol=0, atol=1e-6 if cfg.onset_encoding else 1e-12)
        assert b[valid].abs().max() > 0.5  # not vacuous


def test_attention_input_norm_is_required():
    """The official inner norm1 changes the function: the same weights without it compute the official
    network minus that norm1, not the official one, so the converter refuses any other norm layout."""
    cfg = official_config()
    sd = official_state_dict(cfg)
    plain = converted_model(cfg, sd)
    for block in plain.blocks:
        block.attention_input_norm = False
    pitch, dur = melodies()
    with torch.no_grad():
        ours, _ = plain(pitch, dur)
    official, _ = official_forward(sd, cfg, pitch, dur)
    without_inner_norm1, _ = official_forward(sd, cfg, pitch, dur, inner_norm1=False)
    valid = pitch != 0
    assert (ours[valid] - official[valid]).abs().max() > 0.05
    torch.testing.assert_close(ours[valid], without_inner_norm1[valid], rtol=0, atol=1e-6)
    for layout in ("pre", "post"):
        with pytest.raises(ValueError, match=rf"norm_layout='{layout}' \(the official network is norm_layout='official'"):
            convert_official(sd, RIPOTransformer(dataclasses.replace(cfg, norm_layout=layout)).double())


def test_norm_layout_is_checked():
    with pytest.raises(ValueError, match="norm_layout must be 'pre', 'post' or 'official'"):
        RIPOConfig(norm_layout="postnorm")
    with pytest.raises(ValueError, match="relative_dim must be None"):
        official_config(relative_dim=8)


def test_drifted_and_tied_angles_both_convert_exactly():
    """Trained official FMEs have different sin and cos frequencies; initialised ones equal: both exact."""
    cfg = official_config()
    pitch, dur = melodies()
    valid = pitch != 0
    for tied in (False, True):
        sd = official_state_dict(cfg, tied=tied)
        assert torch.equal(sd["pitch_embedding.angles"][0, 0::2], sd["pitch_embedding.angles"][0, 1::2]) == tied
        with torch.no_grad():
            ours = converted_model(cfg, sd)(pitch, dur)
        theirs = official_forward(sd, cfg, pitch, dur)
        for a, b in zip(ours, theirs):
            torch.testing.assert_close(a[valid], b[valid], rtol=0, atol=1e-6)


def test_converted_tensors_are_the_expected_products():
    cfg = official_config()
    sd = official_state_dict(cfg)
    model = RIPOTransformer(cfg).double()
    out = convert_official(sd, model)
    e = sd["relative_pitch_embedding_supplement.weight"][0]
    for i in range(cfg.depth):
        src, dst = f"transformer_encoder.layers.{i}.self_attn.", f"blocks.{i}.attn.position.1."
        for ours, theirs in (("pitch", "pitch"), ("onset", "dur")):
            w2, b2 = sd[f"{src}{theirs}_relnn.weight"], sd[f"{src}{theirs}_relnn.bias"]
            w1, b1 = sd[f"{theirs}_senn.weight"], sd[f"{theirs}_senn.bias"]
            torch.testing.assert_close(out[f"{dst}proj.{ours}.weight"], w2 @ w1)
            torch.testing.assert_close(out[f"{dst}proj.{ours}.bias"], w2 @ b1 + b2)
            assert f"{dst}fms.{ours}.frequencies" not in out  # tied to the token FMEs, read from there
            if ours == "pitch":
                torch.testing.assert_close(out[dst + "nonquant.pitch"], w2 @ (w1 @ e + b1) + b2)
        assert torch.equal(out[f"blocks.{i}.attn.position.0.weight"], sd[src + "E"])
        assert torch.equal(out[f"blocks.{i}.attn.q_proj.weight"], sd[src + "Wq.weight"])
        assert torch.equal(out[f"blocks.{i}.attn.out_proj.bias"], sd[src + "fc.bias"])
        assert torch.equal(out[f"blocks.{i}.ff.3.weight"], sd[f"transformer_encoder.layers.{i}.linear2.weight"])
    assert torch.equal(out["pitch_fme.frequencies"], sd["pitch_embedding.angles"][0])  # one per component
    assert model.blocks[1].attn.position[1].shift_module("onset") is model.duration_fme
    assert torch.equal(out["duration_fme.bias"], sd["dur_embedding.translation_bias"][0])
    assert torch.equal(out["pitch_special.weight"], sd["pitch_embedding_supplement.weight"])
    assert torch.equal(out["global_onset.frequencies"], official_angles(10001, cfg.dim)[0, 0::2].double())
    assert torch.equal(out["pitch_head.weight"], sd["pitch_ffn.weight"])


def test_published_layout_and_config():
    """The full-size official layout (60 keys, float32 as saved) converts into
    RIPOConfig(pitch_vocab=128, max_len=245, norm_layout="official") and computes the
    official forward in float32."""
    cfg = RIPOConfig(pitch_vocab=128, max_len=245, norm_layout="official")
    sd = {k: v.float() for k, v in official_state_dict(cfg).items()}
    assert len(sd) == 60 and sd["transformer_encoder.layers.1.self_attn.E"].shape == (246, 32)
    model = RIPOTransformer(cfg).eval()
    model.load_state_dict(convert_official(sd, model), strict=True)
    pitch, dur = melodies()
    with torch.no_grad():
        ours = model(pitch, dur)
    theirs = official_forward({k: v.double() for k, v in sd.items()}, cfg, pitch, dur)
    valid = pitch != 0
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a[valid].double(), b[valid], rtol=0, atol=1e-5)  # measured 2.4e-6


def test_load_official_reads_the_training_scripts_file(tmp_path):
    """main_train.py saves ``torch.save(model.state_dict(), "best_loss.pth")``: a bare float32 state dict."""
    tiny = dict(dim=16, depth=2, num_heads=2, ff_dim=32)
    cfg = RIPOConfig(pitch_vocab=128, max_len=245, norm_layout="official", **tiny)
    sd = {k: v.float() for k, v in official_state_dict(cfg).items()}
    torch.save(sd, tmp_path / "best_loss.pth")
    model = zoo.load_official(
        "ripo_transformer", tmp_path / "best_loss.pth", pitch_vocab=128, max_len=245, norm_layout="official", **tiny,
    ).eval()
    assert model.config == dataclasses.replace(cfg, dropout=model.config.dropout)
    pitch, dur = melodies()
    with torch.no_grad():
        ours = model(pitch, dur)
    theirs = official_forward({k: v.double() for k, v in sd.items()}, cfg, pitch, dur)
    valid = pitch != 0
    for a, b in zip(ours, theirs):
        assert a.dtype == torch.float32
        torch.testing.assert_close(a[valid].double(), b[valid], rtol=0, atol=1e-5)
        assert b[valid].abs().max() > 0.5
    with pytest.raises(ValueError, match="cannot convert to ripo_transformer: .*norm_layout='post'"):
        zoo.load_official("ripo_transformer", tmp_path / "best_loss.pth", pitch_vocab=128, max_len=245,
                          norm_layout="post", **tiny)


# ----------------------------------------------------------------------------------------- refusals
def _refusal(edit, *, cfg=None, match):
    cfg = cfg or official_config()
    sd = official_state_dict(official_config())
    edit(sd)
    with pytest.raises(ValueError, match=match):
        convert_official(sd, RIPOTransformer(cfg).double())



REFUSALS = {
    "wrong-shape": (lambda sd: sd.__setitem__("transformer_encoder.layers.1.linear1.weight", torch.zeros(33, 16)),
                    r"wrong shapes: \['transformer_encoder\.layers\.1\.linear1\.weight: "
                    r"expected \(32, 16\), got \(33, 16\)"),
    "missing-key": (lambda sd: sd.pop("dur_senn.bias"), r"missing keys: \['dur_senn\.bias'\]"),
    "unexpected-key": (lambda sd: sd.__setitem__("transformer_encoder.layers.2.norm1.weight", torch.ones(16)),
                       r"unexpected keys: \['transformer_encoder\.layers\.2\.norm1\.weight'\]"),
    "not-a-tensor": (lambda sd: sd.__setitem__("pitch_ffn.bias", [0.0] * 128), r"not tensors: \['pitch_ffn\.bias'\]"),
    "ddp-prefix": (lambda sd: sd.__setitem__("module.pitch_ffn.bias", sd.pop("pitch_ffn.bias")),
                   r"missing keys: \['pitch_ffn\.bias'\].*module\.pitch_ffn\.bias.*strip the DDP 'module\.' prefix"),
    "edited-index-encoding": (lambda sd: sd["pos_encoder.pe"].add_(1e-3), r"pos_encoder\.pe.*0\.001"),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_name_the_key(case):
    edit, match = REFUSALS[case]
    _refusal(edit, match=match)


CONFIG_REFUSALS = {
    "pre-norm": (dict(norm_layout="pre"), "norm_layout='pre'"),
    "post-norm": (dict(norm_layout="post"), "norm_layout='post'"),
    "max_len": (dict(max_len=16), r"self_attn\.E: expected \(17, 8\), got \(12, 8\)"),
    "pitch_vocab": (dict(pitch_vocab=131), r"pitch_ffn\.weight: expected \(131, 16\), got \(128, 16\)"),
    "heads": (dict(num_heads=4), r"self_attn\.E: expected \(12, 4\), got \(12, 8\)"),
    "depth": (dict(depth=3), r"missing keys: \['transformer_encoder\.layers\.2\."),
    "learned-on-fme": (dict(embedding="learned", relative_pitch=False, relative_onset=False, onset_encoding=False),
                       r"unexpected keys: .*pitch_embedding\.angles.*use embedding='fme'"),
    "no-relative-index": (dict(relative_index=False), r"unexpected keys: .*self_attn\.E"),
    "fme-without-onset-term": (dict(relative_onset=False), "relative_pitch=relative_onset=onset_encoding=True"),
    "bar_length": (dict(bar_length=3.0), "bar_length=3.0"),
    "duration_step": (dict(duration_step=0.125), "duration_step=0.125"),
}


@pytest.mark.parametrize("case", list(CONFIG_REFUSALS))
def test_incompatible_configs_are_refused(case):
    overrides, match = CONFIG_REFUSALS[case]
    _refusal(lambda sd: None, cfg=official_config(**overrides), match=match)
