"""The relative-attention reference (``reference.py``) against the formula and the attention core.

The kernel tests trust this reference, so it is checked on its own: forward against a per-(i, j)
loop written from Shaw et al.'s formula, forward and backward against the core's skewing
reference (``attention(..., backend="reference")`` with a ``RelativeEmbedding``), which shares
no code with it.
"""

import math

import pytest
import torch

from zoo.core_attention import attention, positions
from zoo.core_attention.kernels.relative_attention import relative_attention_reference

DT = torch.float64


def _inputs(b, h, lq, lk, d, kmax, causal, per_head, seed=0):
    g = torch.Generator().manual_seed(seed)
    rows = kmax + 1 if causal else 2 * kmax + 1
    q = torch.randn(b, h, lq, d, generator=g, dtype=DT)
    k = torch.randn(b, h, lk, d, generator=g, dtype=DT)
    v = torch.randn(b, h, lk, d, generator=g, dtype=DT)
    weight = torch.randn(*((h,) if per_head else ()), rows, d, generator=g, dtype=DT)
    kpm = torch.rand(b, lk, generator=g) > 0.3
    kpm[:, -1] = True  # every query of the non-causal cases sees a key
    return q, k, v, weight, kpm


# (B, H, Lq, Lk, D, K, causal, per_head)
CASES = [
    (2, 2, 6, 6, 4, 2, False, False),
    (2, 2, 6, 6, 4, 2, True, True),
    (1, 3, 3, 8, 4, 3, True, False),  # Lq < Lk: the queries are the last three keys
    (1, 2, 5, 5, 4, 9, False, True),  # K beyond the sequence: nothing is clipped
]


def _id(c):
    b, h, lq, lk, d, kmax, causal, per_head = c
    return f"B{b}-H{h}-Lq{lq}-Lk{lk}-D{d}-K{kmax}-{'causal' if causal else 'bidir'}-{'perhead' if per_head else 'shared'}"


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_reference_matches_loop_over_pairs(case):
    b, h, lq, lk, d, kmax, causal, per_head = case
    q, k, v, weight, kpm = _inputs(*case)
    scale = 0.4
    got = relative_attention_reference(q, k, v, weight, kmax, causal=causal, key_padding_mask=kpm, scale=scale)
    khi = 0 if causal else kmax
    for bb in range(b):
        for hh in range(h):
            table = weight[hh] if per_head else weight
            for i in range(lq):
                qi = i + lk - lq
                keys = [j for j in range(lk) if kpm[bb, j] and (not causal or j <= qi)]
                if not keys:
                    assert not got[bb, hh, i].any()
                    continue
                logits = [
                    scale * float(q[bb, hh, i] @ (k[bb, hh, j] + table[min(max(j - qi, -kmax), khi) + kmax]))
                    for j in keys
                ]
                top = max(logits)
                w = [math.exp(x - top) for x in logits]
                want = sum(wi * v[bb, hh, j] for wi, j in zip(w, keys)) / sum(w)
                torch.testing.assert_close(got[bb, hh, i], want)


@pytest.mark.parametrize("case", CASES, ids=[_id(c) for c in CASES])
def test_reference_matches_core_skewing_forward_and_backward(case):
    b, h, lq, lk, d, kmax, causal, per_head = case
    q, k, v, weight, kpm = _inputs(*case)
    term = positions.RelativeEmbedding(d, kmax, num_heads=h if per_head else None, causal=causal).to(DT)
    with torch.no_grad():
        term.weight.copy_(weight)
    dout = torch.randn(b, h, lq, d, dtype=DT)
    mask = kpm[:, None, None, :]  # (B, 1, 1, Lk)

    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    core = attention(*leaves, position=term, mask=mask, causal=causal, backend="reference")
    want = (core, *torch.autograd.grad(core, [*leaves, term.weight], dout))

    leaves = [t.clone().requires_grad_() for t in (q, k, v, weight)]
    out = relative_attention_reference(*leaves, kmax, causal=causal, key_padding_mask=kpm)
    got = (out, *torch.autograd.grad(out, leaves, dout))
    for name, g, w in zip(["out", "dq", "dk", "dv", "dweight"], got, want):
        torch.testing.assert_close(g, w, msg=lambda m, n=name: f"{n}: {m}")


def test_query_with_no_visible_key_outputs_zero_with_finite_gradients():
    q, k, v, weight, _ = _inputs(1, 1, 5, 5, 4, 2, True, False)
    kpm = torch.ones(1, 5, dtype=torch.bool)
    kpm[0, :2] = False  # causal: queries 0 and 1 see no key
    leaves = [t.clone().requires_grad_() for t in (q, k, v, weight)]
    out = relative_attention_reference(*leaves, 2, causal=True, key_padding_mask=kpm)
    assert not out[0, :, :2].any()
    assert out[0, :, 2:].abs().sum(-1).gt(0).all()
    out.square().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in leaves)


def test_half_precision_normalizes_in_float32():
    q, k, v, weight, kpm = _inputs(1, 2, 7, 7, 8, 3, False, False)
    low = [t.to(torch.bfloat16) for t in (q, k, v, weight)]
    out = relative_attention_reference(*low, 3, causal=False, key_padding_mask=kpm)
    assert out.dtype == torch.bfloat16
    exact = relative_attention_reference(*(t.double() for t in low), 3, causal=False, key_padding_mask=kpm)
    torch.testing.assert_close(out.double(), exact, atol=2e-2, rtol=2e-2)
