"""Each position term's exact form equals a naive per-(i, j) loop written from the papers' formulas."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.core_attention import attention, positions
from zoo.core_attention.positions.base import BoundPosition

DT = torch.float64


def _ctx(term, lq, lk, causal=False, **context):
    return BoundPosition(term, context).make_context(lq, lk, causal, torch.device("cpu"))


def _qk(b=2, h=3, lq=7, lk=7, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, h, lq, d, generator=g, dtype=DT), torch.randn(b, h, lk, d, generator=g, dtype=DT)


# ------------------------------------------------------------------ RelativeEmbedding (Shaw / Huang)
@pytest.mark.parametrize("per_head", [False, True], ids=["shared", "perhead"])
@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
@pytest.mark.parametrize("lq,lk,kmax", [(7, 7, 3), (7, 7, 10), (1, 9, 4), (4, 11, 2)], ids=lambda x: str(x))
def test_relative_embedding_matches_loop(per_head, causal, lq, lk, kmax):
    h, d = 3, 8
    term = positions.RelativeEmbedding(d, kmax, num_heads=h if per_head else None, causal=causal).to(DT)
    q, k = _qk(h=h, lq=lq, lk=lk, d=d)
    scale = 0.37
    got = term.bias(q, k, _ctx(term, lq, lk, causal), scale)
    khi = 0 if causal else kmax
    want = torch.zeros(2, h, lq, lk, dtype=DT)
    for b in range(2):
        for hh in range(h):
            for i in range(lq):
                qi = i + lk - lq  # queries are the last Lq positions
                for j in range(lk):
                    row = min(max(j - qi, -kmax), khi) + kmax
                    e = term.weight[hh, row] if per_head else term.weight[row]
                    want[b, hh, i, j] = scale * (q[b, hh, i] @ e)
    torch.testing.assert_close(got, want)


def test_relative_embedding_explicit_positions_use_gather():
    """Left padding: per-sample positions shift distances; the gather path equals the loop."""
    d, kmax = 8, 3
    term = positions.RelativeEmbedding(d, kmax).to(DT)
    q, k = _qk(lq=5, lk=5, d=d)
    pos = torch.tensor([[0, 1, 2, 3, 4], [-2, -1, 0, 1, 2]])  # sample 1 left-padded by 2
    got = term.bias(q, k, _ctx(term, 5, 5, q_pos=pos, k_pos=pos), 1.0)
    for b in range(2):
        for i in range(5):
            for j in range(5):
                row = min(max(int(pos[b, j] - pos[b, i]), -kmax), kmax) + kmax
                torch.testing.assert_close(got[b, :, i, j], q[b, :, i] @ term.weight[row])


def test_relative_embedding_skew_equals_gather():
    term = positions.RelativeEmbedding(8, 6).to(DT)
    q, k = _qk(lq=9, lk=13)
    skew = term.bias(q, k, _ctx(term, 9, 13), 1.0)
    gather = term.bias(q, k, _ctx(term, 9, 13, q_pos=torch.arange(4, 13), k_pos=torch.arange(13)), 1.0)
    torch.testing.assert_close(skew, gather)


# ------------------------------------------------------------------ T5
def _t5_bucket_scalar(rel: int, bidirectional: bool, num_buckets: int, max_distance: int) -> int:
    """The T5 paper's bucketing, one distance at a time, in plain Python."""
    ret = 0
    if bidirectional:
        num_buckets //= 2
        if rel > 0:
            ret += num_buckets
        n = abs(rel)
    else:
        n = max(-rel, 0)
    max_exact = num_buckets // 2
    if n < max_exact:
        return ret + n
    val = max_exact + int(math.log(n / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact))
    return ret + min(val, num_buckets - 1)


@pytest.mark.parametrize("bidirectional", [True, False])
def test_t5_bias_matches_loop(bidirectional):
    h = 3
    term = positions.T5Bias(h, num_buckets=8, max_distance=20, bidirectional=bidirectional).to(DT)
    lq = lk = 40
    q, k = _qk(h=h, lq=lq, lk=lk)
    got = term.bias(q, k, _ctx(term, lq, lk), 1.0)
    table = term.relative_attention_bias.weight
    for i in range(lq):
        for j in range(lk):
            bucket = _t5_bucket_scalar(j - i, bidirectional, 8, 20)
            torch.testing.assert_close(got[0, :, i, j], table[bucket])


# ------------------------------------------------------------------ ALiBi
def test_alibi_slopes_follow_the_paper():
    torch.testing.assert_close(positions.alibi_slopes(8), torch.tensor([2.0 ** -(i + 1) for i in range(8)]))
    # non power of two: slopes of 4 heads, then every other slope of 8 heads
    want6 = [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]
    torch.testing.assert_close(positions.alibi_slopes(6), torch.tensor(want6))


def test_alibi_matches_loop():
    h = 4
    term = positions.ALiBi(h)
    q, k = _qk(h=h, lq=6, lk=9)
    got = term.bias(q, k, _ctx(term, 6, 9), 1.0)
    slopes = positions.alibi_slopes(h).double()
    for hh in range(h):
        for i in range(6):
            for j in range(9):
                assert got[0, hh, i, j].item() == pytest.approx(-slopes[hh].item() * abs(j - (i + 3)))


def test_alibi_causal_features_equal_bias_up_to_row_constant():
    h = 4
    term = positions.ALiBi(h)
    q, k = _qk(h=h, lq=6, lk=9)
    ctx = _ctx(term, 6, 9, causal=True)
    qf, kf = term.qk_features(q, k, ctx, 0.5)
    via_features = 0.5 * qf @ kf.transpose(-1, -2)  # (B, H, Lq, Lk)
    diff = via_features - term.bias(q, k, ctx, 0.5)
    # on the keys a causal query may see, the difference is constant along the row (softmax ignores it)
    visible = torch.arange(9)[None, :] <= torch.arange(6)[:, None] + 3  # (Lq, Lk)
    row_const = diff[..., :1].expand_as(diff)
    torch.testing.assert_close(diff[..., visible], row_const[..., visible])
    assert term.qk_features(q, k, _ctx(term, 6, 9, causal=False), 0.5) is None


# ------------------------------------------------------------------ Rotary
def test_rotary_matches_loop_and_is_relative():
    d, rd, base = 8, 6, 10000.0
    term = positions.Rotary(d, rotary_dim=rd, base=base)
    q, k = _qk(h=1, lq=5, lk=5, d=d)
    qr, kr = term.transform_qk(q, k, _ctx(term, 5, 5))
    half = rd // 2
    for p in range(5):
        x = q[0, 0, p]
        want = x.clone()
        for t in range(half):
            a = p * base ** (-2 * t / rd)
            want[t] = x[t] * math.cos(a) - x[t + half] * math.sin(a)
            want[t + half] = x[t + half] * math.cos(a) + x[t] * math.sin(a)
        torch.testing.assert_close(qr[0, 0, p], want)
    # dot products depend on the distance only: shifting every position changes nothing
    shift = torch.arange(5) + 11
    qs, ks = term.transform_qk(q, k, _ctx(term, 5, 5, q_pos=shift, k_pos=shift))
    torch.testing.assert_close(qr @ kr.transpose(-1, -2), qs @ ks.transpose(-1, -2))


# ------------------------------------------------------------------ BoxRPB
@pytest.mark.parametrize("rpe_type", ["linear", "log"])
def test_box_rpb_matches_loop(rpe_type):
    h, hf, wf, stride = 2, 3, 4, 8
    term = positions.BoxRPB(h, hidden_dim=16, stride=stride, rpe_type=rpe_type).to(DT)
    boxes = torch.tensor([[[0.5, 0.5, 0.4, 0.6], [0.2, 0.7, 0.1, 0.2]]], dtype=DT)  # (1, 2, 4) cxcywh
    q, k = _qk(b=1, h=h, lq=2, lk=hf * wf)
    got = term.bias(q, k, _ctx(term, 2, hf * wf, boxes=boxes, spatial_shape=(hf, wf)), 1.0)

    def f(d):
        return math.copysign(math.log2(abs(d) + 1) / 3, d) if rpe_type == "log" else d

    for qi in range(2):
        cx, cy, bw, bh = boxes[0, qi].tolist()
        x1, x2 = (cx - bw / 2) * wf * stride, (cx + bw / 2) * wf * stride
        y1, y2 = (cy - bh / 2) * hf * stride, (cy + bh / 2) * hf * stride
        for r in range(hf):
            for c in range(wf):
                px, py = (c + 0.5) * stride, (r + 0.5) * stride
                bx = term.cpb_mlp_x(torch.tensor([f(x1 - px), f(x2 - px)], dtype=DT))
                by = term.cpb_mlp_y(torch.tensor([f(y1 - py), f(y2 - py)], dtype=DT))
                torch.testing.assert_close(got[0, :, qi, r * wf + c], bx + by)


def test_box_rpb_needs_its_context():
    term = positions.BoxRPB(2, hidden_dim=8)
    q = torch.randn(1, 2, 3, 4)
    kv = torch.randn(1, 2, 6, 4)
    with pytest.raises(ValueError, match=r"BoxRPB needs context \['boxes', 'spatial_shape'\]"):
        attention(q, kv, kv, position=term, backend="reference")
    with pytest.raises(ValueError, match="unknown context"):
        term.bind(boxez=torch.zeros(1))
    with pytest.raises(ValueError, match=r"spatial_shape 2x2 does not match 6 keys"):
        attention(q, kv, kv, position=term.bind(boxes=torch.rand(1, 3, 4), spatial_shape=(2, 2)), backend="reference")


def test_box_rpb_spatial_shape_as_tuple_matches_tensor_without_a_sync(monkeypatch):
    term = positions.BoxRPB(2, hidden_dim=8, stride=4).to(DT)
    boxes = torch.rand(2, 3, 4, dtype=DT)
    q, k = _qk(b=2, h=2, lq=3, lk=6)
    from_tensor = term.bias(q, k, _ctx(term, 3, 6, boxes=boxes, spatial_shape=torch.tensor([2, 3])), 1.0)

    def sync(*args, **kwargs):
        raise AssertionError("a tensor's value was read into Python")

    for name in ("tolist", "item", "__int__"):
        monkeypatch.setattr(torch.Tensor, name, sync)
    ctx = _ctx(term, 3, 6, boxes=boxes, spatial_shape=(2, 3))
    torch.testing.assert_close(term.bias(q, k, ctx, 1.0), from_tensor)
    with pytest.raises(ValueError, match=r"BoxRPB needs spatial_shape \(Hf, Wf\), got \(6,\)"):
        term.bias(q, k, _ctx(term, 3, 6, boxes=boxes, spatial_shape=(6,)), 1.0)
