"""MatchAttention in plain PyTorch: the readable, exact form of the fused kernel in ``triton.py``.

For one query with (already clamped) centre ``c = (cx, cy)`` in key-pixel coordinates, the window is
the ``S x S`` block of keys (``S = 2r + 2``) whose top-left corner is ``floor(c) - r``; the four
overlapping ``(S - 1) x (S - 1)`` sub-windows (nw, ne, sw, se: shifted by 0 or 1 pixel in x and y)
are softmaxed on their own and blended with the bilinear weights of the fractional part of ``c``:

    s_t   = -scale * ||q - k_t||_1                               t in the S x S window
    P_t   = sum_{u in {nw, ne, sw, se}, t in u} w_u softmax_u(s)_t
    out   = sum_t P_t v_t

It gathers the ``(B, H, N, S^2, D)`` window keys and values -- memory the fused kernel never
spends -- and leaves every derivative to autograd, so it is the yardstick the kernel's forward and
backward are tested against (``tests/core_attention/kernels/test_match_attention.py``, itself checked
against a per-query loop). Arguments and conventions are those of
:func:`zoo.core_attention.kernels.match_attention.match_attention`, which also clamps the centres
before calling it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["bilinear_weights", "match_attention_reference"]


def bilinear_weights(frac: Tensor) -> Tensor:
    """The BilinearSoftmax blend ``(..., 4)`` = (nw, ne, sw, se) of a centre's fractional part ``(..., 2)``."""
    fx, fy = frac[..., 0], frac[..., 1]
    return torch.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], dim=-1)


def match_attention_reference(
    q: Tensor, k: Tensor, v: Tensor, centers: Tensor, radius: int, scale: float
) -> tuple[Tensor, Tensor]:
    """MatchAttention with gathered windows; centres must already keep the window inside the key map.

    Args:
        q: ``(B, H, Hq, Wq, D)``.
        k: ``(B, H, Hk, Wk, D)``.
        v: ``(B, H, Hk, Wk, Dv)``.
        centers: ``(B, H, Hq, Wq, 2)`` (x, y), with ``r <= x <= Wk - 1 - r - eps`` and likewise y.
        radius: ``r``; the window is ``(2r + 2) x (2r + 2)``.
        scale: multiplies the negative L1 distance.

    Returns:
        ``out (B, H, Hq, Wq, Dv)`` and the effective weights ``P (B, H, Hq, Wq, (2r + 2)^2)``, flattened
        row-major over (dy, dx) of the window. Half-precision scores are softmaxed in float32.
    """
    b, h, hq, wq, d = q.shape
    hk, wk = k.shape[2], k.shape[3]
    side = 2 * radius + 2
    corner = torch.floor(centers.detach()).to(torch.long)  # (B, H, Hq, Wq, 2) integer part: no gradient
    weights = bilinear_weights(centers - corner.to(centers.dtype))  # (B, H, Hq, Wq, 4)
    steps = torch.arange(side, device=q.device) - radius  # (S,) -r .. r + 1
    ix = corner[..., 0, None] + steps  # (B, H, Hq, Wq, S)
    iy = corner[..., 1, None] + steps  # (B, H, Hq, Wq, S)
    index = (iy[..., :, None] * wk + ix[..., None, :]).reshape(b, h, hq * wq * side * side)  # (B, H, N*S*S)

    def window(t: Tensor) -> Tensor:  # (B, H, Hk, Wk, C) -> (B, H, Hq, Wq, S, S, C)
        flat = t.reshape(b, h, hk * wk, t.shape[-1])  # (B, H, Nk, C)
        picked = torch.gather(flat, 2, index[..., None].expand(-1, -1, -1, t.shape[-1]))  # (B, H, N*S*S, C)
        return picked.view(b, h, hq, wq, side, side, t.shape[-1])

    k_win = window(k)  # (B, H, Hq, Wq, S, S, D)
    v_win = window(v)  # (B, H, Hq, Wq, S, S, Dv)
    compute = torch.float32 if q.dtype in (torch.float16, torch.bfloat16) else q.dtype
    scores = -(q[..., None, None, :] - k_win).abs().to(compute).sum(-1) * scale  # (B, H, Hq, Wq, S, S)

    # sub-window u starts at (dy, dx) = (u // 2, u % 2) in the window; F.pad puts it back in place
    probs = torch.zeros_like(scores)  # (B, H, Hq, Wq, S, S)
    for u, (oy, ox) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        sub = scores[..., oy : oy + side - 1, ox : ox + side - 1]  # (B, H, Hq, Wq, S-1, S-1)
        soft = sub.flatten(-2).softmax(-1).view_as(sub) * weights[..., u, None, None].to(compute)
        probs = probs + F.pad(soft, (ox, 1 - ox, oy, 1 - oy))
    out = (probs[..., None].to(v.dtype) * v_win).sum((-3, -2))  # (B, H, Hq, Wq, Dv)
    return out, probs.flatten(-2).to(q.dtype)
