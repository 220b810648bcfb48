"""RIPO transformer and its baselines: shapes, causality, exact backends, overfit, save/load."""

from __future__ import annotations

import pytest
import torch

from zoo.core_attention.positions.music import MusicRelative
from zoo.hub import create_model, load_pretrained, save_pretrained
from zoo.music.melody.models.ripo import CONFIGS, PAD, REST, SUSTAIN, RIPOConfig, RIPOTransformer, _test_input

TINY = dict(dim=32, depth=2, num_heads=2, ff_dim=64, max_len=16, dropout=0.0)
NAMES = ["ripo_transformer", "ripo_music_transformer_baseline", "ripo_vanilla_baseline"]


def _batch(b=2, l=10, seed=0):
    g = torch.Generator().manual_seed(seed)
    pitch = torch.randint(60, 85, (b, l), generator=g)
    pitch[0, 2], pitch[0, 5] = REST, SUSTAIN
    pitch[-1, -3:] = PAD
    duration = torch.randint(1, 17, (b, l), generator=g)
    duration[-1, -3:] = PAD
    return pitch, duration


@pytest.mark.parametrize("name", NAMES)
def test_shapes_and_causality(name):
    torch.manual_seed(0)
    model = create_model(name, **TINY).eval()
    pitch, duration = _batch()
    p, d = model(pitch, duration)
    assert p.shape == (2, 10, 131) and d.shape == (2, 10, 17)
    assert torch.isfinite(p).all() and torch.isfinite(d).all()
    pitch2, duration2 = pitch.clone(), duration.clone()
    pitch2[:, 6:] = 70
    duration2[:, 6:] = 3
    p2, d2 = model(pitch2, duration2)
    torch.testing.assert_close(p2[:, :6], p[:, :6])
    torch.testing.assert_close(d2[:, :6], d[:, :6])


def test_variants_are_data():
    assert CONFIGS["ripo_transformer"].embedding == "fme" and CONFIGS["ripo_transformer"].relative_pitch
    mt, va = CONFIGS["ripo_music_transformer_baseline"], CONFIGS["ripo_vanilla_baseline"]
    assert mt.relative_index and not (mt.relative_pitch or mt.relative_onset) and mt.embedding == "learned"
    assert not (va.relative_index or va.relative_pitch or va.relative_onset)
    # the official configuration: d_model 256, 8 heads, FF 2048, 2 layers, bases 9919 / 7920
    cfg = CONFIGS["ripo_transformer"]
    assert (cfg.dim, cfg.num_heads, cfg.ff_dim, cfg.depth) == (256, 8, 2048, 2)
    assert (cfg.pitch_base, cfg.duration_base) == (9919.0, 7920.0)


def test_parameter_count_formula():
    """The RIPO model is the Music Transformer baseline plus the FME embeddings and the relative terms."""
    cfg = CONFIGS["ripo_transformer"]
    d, v_p, v_d = cfg.dim, cfg.pitch_vocab, cfg.duration_vocab
    ripo = RIPOTransformer(cfg)
    mt = RIPOTransformer(CONFIGS["ripo_music_transformer_baseline"])
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    fme = 2 * (d // 2 + d) + 3 * d + d  # two FMEs (frequencies + bias), 3 + 1 special embeddings
    learned = (v_p + v_d) * d
    relative = cfg.depth * (2 * (d // 2 + d * d + d) + d)  # pitch + onset: freqs, Linear(d, d); nonquant e
    assert n(ripo) - n(mt) == fme - learned + relative
    term = ripo.blocks[0].attn.position[1]
    assert isinstance(term, MusicRelative) and term.num_features == 2 * (d + 2)


@pytest.mark.parametrize("norm_layout", ["pre", "post", "official"])
def test_reference_and_sdpa_backends_agree_float64(norm_layout):
    torch.manual_seed(0)
    ref = RIPOTransformer(RIPOConfig(**TINY, attention_backend="reference", norm_layout=norm_layout)).double().eval()
    fast = RIPOTransformer(RIPOConfig(**TINY, attention_backend="sdpa", norm_layout=norm_layout)).double().eval()
    fast.load_state_dict(ref.state_dict())
    pitch, duration = _batch()
    out_r = ref(pitch, duration)
    out_f = fast(pitch, duration)
    for a, b in zip(out_r, out_f):
        torch.testing.assert_close(b, a)
    (out_r[0].sum() + out_r[1].square().sum()).backward()
    (out_f[0].sum() + out_f[1].square().sum()).backward()
    for (name, pa), pb in zip(ref.named_parameters(), fast.parameters()):
        torch.testing.assert_close(pb.grad, pa.grad, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("name", NAMES)
def test_tiny_overfit(name):
    torch.manual_seed(0)
    model = create_model(name, **TINY)
    pitch, duration = _batch(b=4, l=12, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(40):
        p, d = model(pitch[:, :-1], duration[:, :-1])
        tp, td = pitch[:, 1:], duration[:, 1:]
        loss = torch.nn.functional.cross_entropy(p.flatten(0, 1), tp.flatten(), ignore_index=PAD)
        loss = loss + torch.nn.functional.cross_entropy(d.flatten(0, 1), td.flatten(), ignore_index=PAD)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses[::10]


def test_save_load_roundtrip_and_generate(tmp_path):
    torch.manual_seed(0)
    model = create_model("ripo_transformer", **TINY).eval()
    save_pretrained(model, tmp_path / "ripo", name="ripo_transformer")
    loaded = load_pretrained(str(tmp_path / "ripo")).eval()
    (args, _) = _test_input(model)
    for a, b in zip(model(*args), loaded(*args)):
        torch.testing.assert_close(b, a)
    pitch, duration = model.generate(args[0][0, :4], args[1][0, :4], steps=5, top_k=5,
                                     generator=torch.Generator().manual_seed(0))
    assert pitch.shape == (1, 9) and duration.shape == (1, 9)
    assert (pitch[:, 4:] != PAD).all() and (duration[:, 4:] != PAD).all()


def test_bad_inputs_raise():
    model = create_model("ripo_transformer", **TINY)
    with pytest.raises(ValueError, match="pitch tokens"):
        model(torch.full((1, 4), 200), torch.ones(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="equal shape"):
        model(torch.ones(1, 4, dtype=torch.long), torch.ones(1, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="embedding"):
        RIPOConfig(embedding="onehot")
    with pytest.raises(ValueError, match="unknown|did you mean|not a field|Unknown"):
        create_model("ripo_transformer", dimm=3)


def test_shipped_checkpoint_loads_and_predicts():
    from pathlib import Path

    directory = Path(__file__).parents[4] / "checkpoints" / "ripo_folk"
    assert (directory / "model.safetensors").is_file(), "the shipped checkpoints/ripo_folk is missing"
    model = load_pretrained(str(directory)).eval()
    assert model.config == CONFIGS["ripo_folk"]
    # an ascending-descending G major scale in eighths: the trained model must beat a uniform guess by far
    midi = [67, 69, 71, 72, 74, 76, 78, 79, 78, 76, 74, 72, 71, 69, 67]
    pitch = torch.tensor([[m + 3 for m in midi]])
    duration = torch.full_like(pitch, 2)
    with torch.no_grad():
        p, d = model(pitch[:, :-1], duration[:, :-1])
    nll_p = torch.nn.functional.cross_entropy(p[0], pitch[0, 1:]).item()
    nll_d = torch.nn.functional.cross_entropy(d[0], duration[0, 1:]).item()
    assert nll_p < 0.5 * torch.log(torch.tensor(131.0)).item() and nll_d < 1.0, (nll_p, nll_d)
