"""BoxRPB's feature-column form equals its materialized bias, forward and backward, in float64.

``qk_features`` appends the per-axis bias values to q and one-hot column / row indicators to k; the
reference backend materializes ``(B, H, Lq, Hf*Wf)``. Gradients are compared for q, k, v, the boxes
and both MLPs' parameters; FlexAttention (no CPU backward) is compared forward.
"""

from __future__ import annotations

import pytest
import torch

from zoo.core_attention import MultiheadAttention, attention, positions, select_backend
from zoo.core_attention.positions.base import PositionContext

DT = torch.float64


def _case(b: int, h: int, lq: int, hf: int, wf: int, d: int, rpe_type: str, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    term = positions.BoxRPB(h, hidden_dim=16, stride=8, rpe_type=rpe_type).to(DT)
    with torch.no_grad():  # non-trivial second layers (the official init is not zero, but be sure)
        for p in term.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=DT) * 0.5)
    q = torch.randn(b, h, lq, d, generator=g, dtype=DT, requires_grad=True)
    k = torch.randn(b, h, hf * wf, d, generator=g, dtype=DT, requires_grad=True)
    v = torch.randn(b, h, hf * wf, d, generator=g, dtype=DT, requires_grad=True)
    boxes = torch.rand(b, lq, 4, generator=g, dtype=DT).mul(0.8).add(0.1).requires_grad_(True)
    return term, q, k, v, boxes


def _grads(out, leaves):
    w = torch.randn(out.shape, generator=torch.Generator().manual_seed(7), dtype=out.dtype)
    return torch.autograd.grad((out * w).sum(), leaves)


CASES = [
    pytest.param(2, 4, 5, 3, 4, 16, "linear", id="B2-H4-Lq5-3x4-D16-linear"),
    pytest.param(1, 2, 7, 5, 2, 8, "log", id="B1-H2-Lq7-5x2-D8-log"),
    pytest.param(2, 8, 3, 1, 6, 32, "log", id="B2-H8-Lq3-1x6-D32-log"),
]


@pytest.mark.parametrize("b,h,lq,hf,wf,d,rpe_type", CASES)
@pytest.mark.parametrize("masked", [False, True], ids=["nomask", "keypad"])
def test_features_equal_materialized_forward_backward(b, h, lq, hf, wf, d, rpe_type, masked):
    term, q, k, v, boxes = _case(b, h, lq, hf, wf, d, rpe_type)
    mask = None
    if masked:
        mask = torch.ones(b, 1, 1, hf * wf, dtype=torch.bool)
        mask[0, ..., -wf:] = False  # the last row of sample 0 is padding
    bound = term.bind(boxes=boxes, spatial_shape=(hf, wf))
    leaves = [q, k, v, boxes, *term.parameters()]
    ref = attention(q, k, v, position=bound, mask=mask, backend="reference")
    out = attention(q, k, v, position=bound, mask=mask, backend="sdpa")
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    for got, want in zip(_grads(out, leaves), _grads(ref, leaves)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-11)
    with torch.no_grad():
        flex = attention(q, k, v, position=bound, mask=mask, backend="flex")
    torch.testing.assert_close(flex, ref.detach(), rtol=1e-10, atol=1e-12)


def test_feature_columns_reproduce_the_bias_exactly():
    """``scale * qf @ kf^T`` is the bias itself (no per-row shift), so the form is exact."""
    term, q, k, _, boxes = _case(2, 4, 5, 3, 4, 16, "log")
    ctx = PositionContext(q_pos=torch.arange(5)[None], k_pos=torch.arange(12)[None],
                          extras={"boxes": boxes, "spatial_shape": (3, 4)})
    scale = 0.25
    qf, kf = term.qk_features(q, k, ctx, scale)
    assert qf.shape == (2, 4, 5, 7) and kf.shape == (2, 4, 12, 7)
    torch.testing.assert_close(scale * qf @ kf.transpose(-1, -2), term.bias(q, k, ctx, scale), rtol=1e-12, atol=1e-12)
    # each key has exactly one column and one row indicator
    assert torch.equal(kf[0, 0].sum(-1), torch.full((12,), 2.0, dtype=DT))


def test_has_qk_features_is_honest_and_auto_takes_sdpa():
    term = positions.BoxRPB(2, hidden_dim=8)
    q = torch.randn(1, 2, 3, 8)
    kv = torch.randn(1, 2, 6, 8)
    good = PositionContext(q_pos=torch.arange(3)[None], k_pos=torch.arange(6)[None],
                           extras={"boxes": torch.rand(1, 3, 4), "spatial_shape": (2, 3)})
    bad = PositionContext(q_pos=torch.arange(3)[None], k_pos=torch.arange(6)[None],
                          extras={"boxes": torch.rand(1, 3, 4), "spatial_shape": (6,)})
    assert term.has_qk_features(good, torch.float32)
    assert not term.has_qk_features(bad, torch.float32)
    assert term.qk_features(q, kv, bad, 1.0) is None
    bound = [term.bind(boxes=torch.rand(1, 3, 4), spatial_shape=(2, 3))]
    assert select_backend(q, kv, kv, bound, None, False, 0.0) == "sdpa"  # CPU training runs without the dense bias


def test_features_check_the_grid_against_the_keys():
    term = positions.BoxRPB(2, hidden_dim=8)
    q = torch.randn(1, 2, 3, 4)
    kv = torch.randn(1, 2, 6, 4)
    with pytest.raises(ValueError, match=r"spatial_shape 2x2 does not match 6 keys"):
        attention(q, kv, kv, position=term.bind(boxes=torch.rand(1, 3, 4), spatial_shape=(2, 2)), backend="sdpa")


def test_multihead_cross_attention_sdpa_equals_reference():
    """The module path the detector uses: MHA with an owned BoxRPB, features vs dense bias."""
    torch.manual_seed(0)
    ref = MultiheadAttention(32, 4, position=positions.BoxRPB(4, hidden_dim=16), backend="reference").to(DT)
    fast = MultiheadAttention(32, 4, position=positions.BoxRPB(4, hidden_dim=16), backend="sdpa").to(DT)
    fast.load_state_dict(ref.state_dict())
    x = torch.randn(2, 6, 32, dtype=DT)
    mem = torch.randn(2, 4 * 5, 32, dtype=DT)
    ctx = {"boxes": torch.rand(2, 6, 4, dtype=DT), "spatial_shape": (4, 5)}
    a, b = ref(x, mem, position_context=ctx), fast(x, mem, position_context=ctx)
    torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    ga = torch.autograd.grad(a.sum(), list(ref.parameters()))
    gb = torch.autograd.grad(b.sum(), list(fast.parameters()))
    for x1, x2 in zip(gb, ga):
        torch.testing.assert_close(x1, x2, rtol=1e-9, atol=1e-11)
