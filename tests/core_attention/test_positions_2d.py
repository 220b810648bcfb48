"""RelativeBias2D and DynamicPositionBias: exact bias vs naive loops, timm parity, flex score_mod."""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch

from zoo.core_attention.positions.base import BoundPosition
from zoo.core_attention.positions.table2d import DynamicPositionBias, RelativeBias2D


def _ctx(term, lq, lk, **context):
    return BoundPosition(term, context).make_context(lq, lk, False, torch.device("cpu"))


def _offset_rows(wh: int, ww: int) -> dict[tuple[int, int], int]:
    """Row of each offset, enumerated the slow way: dy outer, dx inner."""
    offsets = itertools.product(range(-(wh - 1), wh), range(-(ww - 1), ww))
    return {off: r for r, off in enumerate(offsets)}


def _naive_table_bias(table, wh, ww, q_cells, k_cells):
    """bias[h, i, j] = table[row(dy, dx), h] with (dy, dx) = cell(q_i) - cell(k_j), by loops."""
    rows = _offset_rows(wh, ww)
    out = torch.zeros(table.shape[1], len(q_cells), len(k_cells), dtype=table.dtype)
    for i, qc in enumerate(q_cells):
        for j, kc in enumerate(k_cells):
            (qy, qx), (ky, kx) = divmod(qc, ww), divmod(kc, ww)
            out[:, i, j] = table[rows[(qy - ky, qx - kx)]]
    return out


@pytest.mark.parametrize("window", [(3, 3), (2, 4), (4, 3)], ids=lambda w: f"W{w[0]}x{w[1]}")
def test_relative_bias_2d_matches_naive_loop(window):
    wh, ww = window
    term = RelativeBias2D(window, num_heads=3).double()
    n = wh * ww
    q = torch.randn(2, 3, n, 4, dtype=torch.float64)
    got = term.bias(q, q, _ctx(term, n, n), scale=0.5)
    want = _naive_table_bias(term.relative_position_bias_table.detach(), wh, ww, range(n), range(n))
    assert got.shape == (1, 3, n, n)
    torch.testing.assert_close(got[0], want, rtol=0, atol=0)

    # explicit positions: a subset of cells (queries and keys differ)
    q_cells, k_cells = [0, n - 1, 2], [1, 3, n - 1, 0]
    ctx = _ctx(term, 3, 4, q_pos=torch.tensor(q_cells), k_pos=torch.tensor(k_cells))
    got = term.bias(q[:, :, :3], q[:, :, :4], ctx, scale=0.5)
    want = _naive_table_bias(term.relative_position_bias_table.detach(), wh, ww, q_cells, k_cells)
    torch.testing.assert_close(got[0], want, rtol=0, atol=0)


def test_relative_bias_2d_is_timm_relposbias():
    from timm.layers import RelPosBias

    ours, theirs = RelativeBias2D((4, 5), num_heads=2), RelPosBias(window_size=(4, 5), num_heads=2)
    assert set(ours.state_dict()) == set(theirs.state_dict()) == {"relative_position_bias_table"}
    assert ours.relative_position_bias_table.shape == theirs.relative_position_bias_table.shape
    assert torch.equal(ours.relative_position_index, theirs.relative_position_index)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    torch.testing.assert_close(ours.get_bias(), theirs.get_bias())
    ours.set_window_size((5, 5))
    theirs.set_window_size((5, 5))
    torch.testing.assert_close(ours.get_bias(), theirs.get_bias())


def test_relative_bias_2d_refuses_out_of_window_and_wrong_heads():
    term = RelativeBias2D(2, num_heads=2)
    q = torch.randn(1, 2, 5, 4)
    with pytest.raises(ValueError, match="2x2 window"):
        term.bias(q, q, _ctx(term, 5, 5), scale=1.0)
    with pytest.raises(ValueError, match="must index cells"):
        term.bias(q[:, :, :2], q[:, :, :2], _ctx(term, 2, 2, q_pos=torch.tensor([0, 4])), scale=1.0)
    with pytest.raises(ValueError, match="heads"):
        term.bias(torch.randn(1, 3, 4, 4), torch.randn(1, 3, 4, 4), _ctx(term, 4, 4), scale=1.0)
    with pytest.raises(ValueError, match="window_size"):
        RelativeBias2D((0, 3), num_heads=2)


@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual"])
def test_dynamic_position_bias_matches_naive_loop(residual):
    term = DynamicPositionBias(num_heads=2, hidden_dim=8, group_size=3, residual=residual).double()
    keys = set(term.state_dict())
    assert {"pos_proj.weight", "pos1.0.weight", "pos1.2.weight", "pos2.2.bias", "pos3.2.weight"} <= keys

    def mlp_one(dy, dx):  # the official forward, one offset at a time
        x = term.pos_proj(torch.tensor([float(dy), float(dx)], dtype=torch.float64))
        if residual:
            x = x + term.pos1(x)
            x = x + term.pos2(x)
            return term.pos3(x)
        return term.pos3(term.pos2(term.pos1(x)))

    for gh, gw, ctx_size in [(3, 3, None), (2, 4, torch.tensor([2, 4])), (4, 4, torch.tensor(4))]:
        n = gh * gw
        q = torch.randn(1, 2, n, 4, dtype=torch.float64)
        ctx = _ctx(term, n, n) if ctx_size is None else _ctx(term, n, n, group_size=ctx_size)
        got = term.bias(q, q, ctx, scale=1.0)[0]
        want = torch.zeros(2, n, n, dtype=torch.float64)
        with torch.no_grad():
            for i, j in itertools.product(range(n), range(n)):
                (qy, qx), (ky, kx) = divmod(i, gw), divmod(j, gw)
                want[:, i, j] = mlp_one(qy - ky, qx - kx)
        torch.testing.assert_close(got.detach(), want, rtol=1e-12, atol=1e-12)


def test_dynamic_position_bias_gradient_reaches_mlp():
    term = DynamicPositionBias(num_heads=2, hidden_dim=4, group_size=2)
    q = torch.randn(1, 2, 4, 4)
    term.bias(q, q, _ctx(term, 4, 4), scale=1.0).square().sum().backward()
    assert term.pos_proj.weight.grad is not None and term.pos_proj.weight.grad.abs().sum() > 0


def _score_grid(mod, b, h, lq, lk):
    bi, hi, qi, ki = torch.meshgrid(
        torch.arange(b), torch.arange(h), torch.arange(lq), torch.arange(lk), indexing="ij"
    )
    return mod(torch.zeros(b, h, lq, lk, dtype=torch.float64), bi, hi, qi, ki)


@pytest.mark.parametrize("kind", ["table", "dynamic"])
def test_score_mod_equals_bias(kind):
    if kind == "table":
        term = RelativeBias2D((3, 4), num_heads=2).double()
    else:
        term = DynamicPositionBias(num_heads=2, hidden_dim=8, group_size=(3, 4)).double()
    q = torch.randn(2, 2, 12, 8, dtype=torch.float64)
    k, v = torch.randn_like(q), torch.randn_like(q)
    ctx = _ctx(term, 12, 12)
    bias = term.bias(q, k, ctx, scale=1.0).detach()
    mod = term.score_mod(q, k, ctx, scale=1.0)
    torch.testing.assert_close(_score_grid(mod, 2, 2, 12, 12).detach(), bias.expand(2, -1, -1, -1))
    # per-batch explicit positions
    q_pos = torch.stack([torch.arange(12), torch.arange(12).flip(0)])
    ctx = _ctx(term, 12, 12, q_pos=q_pos)
    bias = term.bias(q, k, ctx, scale=1.0).detach()
    mod = term.score_mod(q, k, ctx, scale=1.0)
    torch.testing.assert_close(_score_grid(mod, 2, 2, 12, 12).detach(), bias)

    # and through FlexAttention itself (eager on CPU): same output as softmax with the bias
    from torch.nn.attention.flex_attention import flex_attention

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = flex_attention(q, k, v, score_mod=mod)
    ref = torch.softmax(q @ k.transpose(-1, -2) / 8**0.5 + bias, dim=-1) @ v
    torch.testing.assert_close(out, ref)


def test_through_core_attention_reference():
    from zoo import core_attention as core

    term = RelativeBias2D((2, 3), num_heads=2).double()
    q, k, v = (torch.randn(1, 2, 6, 4, dtype=torch.float64) for _ in range(3))
    out = core.attention(q, k, v, position=term, backend="reference")
    ref = torch.softmax(q @ k.transpose(-1, -2) / 2.0 + term.get_bias(), dim=-1) @ v
    torch.testing.assert_close(out, ref)
    dpb = DynamicPositionBias(num_heads=2, hidden_dim=4, group_size=3).double()
    out = core.attention(q, k, v, position=dpb.bind(group_size=torch.tensor([2, 3])), backend="reference")
    ref = torch.softmax(q @ k.transpose(-1, -2) / 2.0 + dpb.get_bias((2, 3)), dim=-1) @ v
    torch.testing.assert_close(out, ref)


def _forbid_reading_tensor_values(monkeypatch):
    """Make any read of a tensor's value into Python (a device sync on GPUs) fail the test."""

    def sync(*args, **kwargs):
        raise AssertionError("a tensor's value was read into Python")

    for name in ("tolist", "item", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, sync)


@pytest.mark.parametrize("size", [(2, 3), 2, (2,)], ids=["pair", "int", "one-tuple"])
def test_group_size_context_as_python_values_matches_tensor_without_a_sync(size, monkeypatch):
    dpb = DynamicPositionBias(num_heads=2, hidden_dim=4, group_size=3).double()
    window = (size, size) if isinstance(size, int) else size * (2 // len(size))
    n = window[0] * window[1]
    q = torch.randn(1, 2, n, 4, dtype=torch.float64)
    from_tensor = dpb.bias(q, q, _ctx(dpb, n, n, group_size=torch.tensor(size)), scale=1.0)
    _forbid_reading_tensor_values(monkeypatch)
    from_python = dpb.bias(q, q, _ctx(dpb, n, n, group_size=size), scale=1.0)
    torch.testing.assert_close(from_python, from_tensor)
    torch.testing.assert_close(from_python, dpb.get_bias(window))


def test_group_size_context_of_wrong_length_is_a_clear_error():
    dpb = DynamicPositionBias(num_heads=2, hidden_dim=4, group_size=3)
    q = torch.randn(1, 2, 8, 4)
    with pytest.raises(ValueError, match=r"context group_size must be G or \(Gh, Gw\), got \(2, 2, 2\)"):
        dpb.bias(q, q, _ctx(dpb, 8, 8, group_size=(2, 2, 2)), scale=1.0)
