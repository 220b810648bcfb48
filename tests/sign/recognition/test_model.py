"""SLRT against independent references: the parameter count from the architecture's formula, padding
that cannot change a prediction, attention rows that are distributions, and a tiny model overfitting."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import zoo
from zoo.sign.recognition.models import SLRT, SLRTConfig

TINY = dict(dim=32, depth=2, num_heads=4, max_frames=16, num_classes=4, dropout=0.0)


def _expected_params(c: SLRTConfig) -> int:
    """Counted by hand from the model description: embedding MLP, position table, blocks, head."""
    d, h = c.dim, int(c.dim * c.mlp_ratio)
    embed = c.num_landmarks * (c.coords + 1) * d + d + d * d + d
    block = 2 * 2 * d + 4 * (d * d + d) + (d * h + h) + (h * d + d)  # 2 LayerNorms, q/k/v/out, MLP
    cls = d if c.pool == "cls" else 0
    return embed + c.max_frames * d + cls + c.depth * block + 2 * d + d * c.num_classes + c.num_classes


def test_registry_lists_the_family():
    assert {"slrt", "slrt_face", "slrt_small"} <= set(zoo.list_models("slrt*"))


@pytest.mark.parametrize("name", ["slrt", "slrt_face", "slrt_small"])
def test_parameter_count_matches_the_formula(name):
    model = zoo.create_model(name)
    assert sum(p.numel() for p in model.parameters()) == _expected_params(model.config)
    assert model.config.depth == 3 and model.config.num_heads == 8  # the paper's encoder


def test_cls_pool_parameter_count():
    model = SLRT(SLRTConfig(**TINY, pool="cls"))
    assert sum(p.numel() for p in model.parameters()) == _expected_params(model.config)


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_padding_does_not_change_the_prediction(pool):
    torch.manual_seed(0)
    model = SLRT(SLRTConfig(**TINY, pool=pool)).eval()
    x = torch.randn(1, 7, 75, 3)
    x[0, 2:4, 33:54] = float("nan")  # a missing hand
    padded = torch.cat([x, 100 * torch.randn(1, 5, 75, 3)], dim=1)  # garbage in the padding
    mask = torch.tensor([[True] * 7 + [False] * 5])
    torch.testing.assert_close(model(padded, mask), model(x), atol=1e-5, rtol=1e-5)
    assert torch.isfinite(model(x)).all()


def test_attention_maps_are_distributions_over_real_frames():
    torch.manual_seed(0)
    model = SLRT(SLRTConfig(**TINY)).eval()
    x, mask = torch.randn(2, 9, 75, 3), torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    maps = model.attention_maps(x, mask)
    assert len(maps) == 2 and maps[0].shape == (2, 4, 9, 9)
    for m in maps:
        torch.testing.assert_close(m.sum(-1), torch.ones(2, 4, 9))
        assert m[1, :, :, 6:].abs().max() == 0  # no attention to padded frames


def test_bad_input_is_refused():
    model = SLRT(SLRTConfig(**TINY))
    with pytest.raises(ValueError, match=r"\(B, T, 75, 3\)"):
        model(torch.randn(1, 5, 70, 3))
    with pytest.raises(ValueError, match="max_frames=16"):
        model(torch.randn(1, 17, 75, 3))
    with pytest.raises(ValueError, match="at least one"):
        model(torch.randn(1, 5, 75, 3), torch.zeros(1, 5, dtype=torch.bool))
    with pytest.raises(ValueError, match="divisible"):
        SLRTConfig(dim=30, num_heads=4)


def test_tiny_model_overfits_a_few_sequences():
    torch.manual_seed(0)
    model = SLRT(SLRTConfig(**TINY))
    x = torch.randn(8, 10, 75, 3)
    x[::3, :, 33:54] = float("nan")
    y = torch.arange(8) % 4
    mask = torch.ones(8, 10, dtype=torch.bool)
    mask[4:, 7:] = False
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(80):
        loss = F.cross_entropy(model(x, mask), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    assert loss.item() < 0.05
    assert (model(x, mask).argmax(-1) == y).all()
