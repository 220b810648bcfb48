"""SLRT: shapes, padding masked out, attention maps from the core, a tiny model overfitting a few sequences."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.hub import count_parameters


def _tiny(**kw):
    return zoo.create_model("slrt", dim=32, depth=2, num_heads=4, max_frames=16, num_classes=3, dropout=0.0, **kw)


def test_registry_names_and_paper_shape():
    assert {"slrt", "slrt_face", "slrt_small"} <= set(zoo.list_models("slrt*"))
    m = zoo.create_model("slrt")
    assert len(m.blocks) == 3 and all(b.attn.num_heads == 8 for b in m.blocks)
    # parameter count by hand: embedding MLP, positions, 3 pre-norm blocks, final norm, head
    d, f, L, c = 256, 1024, 75, 100
    block = 2 * 2 * d + 4 * (d * d + d) + (d * f + f) + (f * d + d)
    expected = (L * 4 * d + d) + (d * d + d) + 256 * d + 3 * block + 2 * d + (d * c + c)
    assert count_parameters(m) == expected


@pytest.mark.parametrize("pool", ["mean", "cls"])
def test_padding_does_not_change_the_output(pool):
    m = _tiny(pool=pool).eval()
    x = torch.randn(1, 6, 75, 3)
    x[0, :2, 33:54] = float("nan")
    padded = torch.cat([x, torch.randn(1, 4, 75, 3)], dim=1)
    mask = torch.tensor([[True] * 6 + [False] * 4])
    torch.testing.assert_close(m(padded, mask), m(x), atol=1e-5, rtol=1e-5)
    maps = m.attention_maps(padded, mask)
    off = 1 if pool == "cls" else 0
    assert len(maps) == 2 and maps[0].shape == (1, 4, 10 + off, 10 + off)
    torch.testing.assert_close(maps[0].sum(-1), torch.ones(1, 4, 10 + off))
    assert maps[0][..., off + 6 :].abs().max() == 0  # padded frames receive no attention


def test_bad_inputs_are_named():
    m = _tiny()
    with pytest.raises(ValueError, match=r"\(B, T, 75, 3\)"):
        m(torch.randn(1, 4, 70, 3))
    with pytest.raises(ValueError, match="max_frames"):
        m(torch.randn(1, 20, 75, 3))
    with pytest.raises(ValueError, match="pool"):
        zoo.create_model("slrt", pool="max")


def test_tiny_model_overfits_a_few_sequences():
    torch.manual_seed(0)
    m = _tiny()
    x = torch.randn(6, 8, 75, 3)
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    mask = torch.ones(6, 8, dtype=torch.bool)
    mask[3:, 5:] = False
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(m(x, mask), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    assert (m.eval()(x, mask).argmax(-1) == y).all()
