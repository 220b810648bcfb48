"""Each fusion's output shape and gradient flow into both branches; config errors; a tiny model
overfitting 8 utterances of the synthetic corpus."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import zoo
from zoo.speech.antispoofing.data import spoof, synthesize_bonafide
from zoo.speech.antispoofing.features import frames_for
from zoo.speech.antispoofing.metrics import eer
from zoo.speech.antispoofing.models import FUSION_CONFIGS, FusionConfig

TINY = dict(
    ssl_conv_dim=16, ssl_embed_dim=32, ssl_layers=2, ssl_heads=2, ssl_ff_dim=64, ssl_pos_conv_kernel=16,
    ssl_pos_conv_groups=4, n_coeffs=8, d_model=32, fusion_heads=2, dropout=0.0,
)


def test_the_four_fusions_are_listed():
    assert sorted(zoo.list_models("*fusion*")) == sorted(
        f"antispoof_fusion_{f}" for f in ("concat", "cross_attention", "mutual_cross_attention", "gated")
    )


@pytest.mark.parametrize("name", sorted(FUSION_CONFIGS))
def test_fusion_shapes_and_gradients_reach_both_branches(name):
    model = zoo.create_model(name, **TINY, spectral=("lfcc",))
    wave = torch.randn(3, 6400)
    fused = model.forward_features(wave)
    cfg = model.config
    length = frames_for(6400) if cfg.uses_ssl else 6400 // 160 + 1  # SSL frames set the length when present
    assert fused.shape == (3, length, 32)
    scores = model(wave)
    assert scores.shape == (3,)
    scores.sum().backward()

    def grad_norm(prefix: str) -> float:
        return sum(float(p.grad.abs().sum()) for n, p in model.named_parameters() if n.startswith(prefix) and p.grad is not None)

    if cfg.uses_ssl:
        assert grad_norm("ssl.model.feature_extractor") > 0 and grad_norm("ssl.layer_weights") > 0
    else:
        assert model.ssl is None
    if cfg.uses_spectral:
        assert grad_norm("spectral_encoders.lfcc") > 0
    else:
        assert not hasattr(model, "spectral_encoders")


def test_every_spectral_feature_and_wavlm_build():
    model = zoo.create_model("antispoof_fusion_mutual_cross_attention", **TINY, ssl_arch="wavlm", spectral=("mfcc", "lfcc", "cqcc"))
    assert model(torch.randn(2, 4000)).shape == (2,)


@pytest.mark.parametrize(
    "overrides, match",
    [
        (dict(fusion="sum"), "fusion must be one of"),
        (dict(spectral=("plp",)), "spectral must be"),
        (dict(spectral=()), "needs at least one"),
        (dict(ssl_layer=3, ssl_layers=2), "ssl_layer"),
        (dict(d_model=30, fusion_heads=4), "divisible"),
        (dict(ssl_arch="hubert"), "ssl_arch"),
    ],
)
def test_config_errors_name_the_field(overrides, match):
    with pytest.raises(ValueError, match=match):
        FusionConfig(**overrides)


def test_tiny_model_overfits_eight_utterances():
    rng = np.random.default_rng(0)
    speaker = {"f0": 120.0, "formant_scale": 1.0, "jitter": 0.01, "shimmer": 0.05, "breathiness": 0.2}
    waves = [synthesize_bonafide(rng, speaker, 0.5) for _ in range(8)]
    waves = [w if i < 4 else spoof(w, "A01" if i < 6 else "A06", rng) for i, w in enumerate(waves)]
    x = torch.from_numpy(np.stack([w[:8000] for w in waves]))  # (8, 8000)
    y = torch.tensor([1, 1, 1, 1, 0, 0, 0, 0])
    torch.manual_seed(0)
    model = zoo.create_model("antispoof_fusion_cross_attention", **TINY)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(60):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), y.float())
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        scores = model(x)
    assert loss.item() < 0.05
    assert eer(scores.numpy(), y.numpy()) == 0.0
