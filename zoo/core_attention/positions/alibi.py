"""ALiBi (Press et al. 2022, "Train Short, Test Long"): ``logit_ij -= m_h * |i - j|``.

Slopes are the paper's geometric sequence ``2^(-8 k / n)`` for a power-of-two head count ``n``;
otherwise the slopes of the nearest lower power of two plus every other slope of the next one.

Fast form: when causal, ``-m (i - j) = -m i + m j`` and the ``-m i`` part is constant along a
softmax row, so the whole term is one extra q/k column (``1`` against ``m j / scale``) and
attention stays on FlashAttention. Bidirectional ALiBi (``|i - j|``) has no such rank-1 form and
uses the flex ``score_mod`` or the materialized bias.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from .base import PositionContext, PositionTerm

__all__ = ["ALiBi", "alibi_slopes"]


def alibi_slopes(num_heads: int) -> Tensor:
    """The paper's head slopes, ``(num_heads,)`` float32."""
    if num_heads <= 0:
        raise ValueError(f"num_heads must be positive, got {num_heads}")

    def power_of_two(n: int) -> list[float]:
        start = 2.0 ** (-8.0 / n)
        return [start ** (i + 1) for i in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_two(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        slopes = power_of_two(closest) + power_of_two(2 * closest)[0::2][: num_heads - closest]
    return torch.tensor(slopes, dtype=torch.float32)


class ALiBi(PositionTerm):
    """Linear distance penalty per head; no parameters (slopes are a buffer)."""

    def __init__(self, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.register_buffer("slopes", alibi_slopes(num_heads), persistent=False)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}"

    def _check(self, q: Tensor) -> None:
        if q.shape[1] != self.num_heads:
            raise ValueError(f"ALiBi has {self.num_heads} slopes but q has {q.shape[1]} heads")

    def bias(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> Tensor:
        self._check(q)
        # slope * distance in at least float32, rounded once to q's dtype: in half precision (the
        # slopes of a model cast to fp16) the product would round twice and grow with the distance
        wide = torch.promote_types(q.dtype, torch.float32)
        dist = (ctx.k_pos[:, None, :] - ctx.q_pos[:, :, None]).abs().to(wide)  # (Bp, Lq, Lk)
        return (-self.slopes.to(wide)[None, :, None, None] * dist[:, None]).to(q.dtype)  # (Bp, H, Lq, Lk)

    def has_qk_features(self, ctx: PositionContext, dtype: torch.dtype) -> bool:
        # Exact only when every attended key is at or before its query (causal), and only in
        # float32/64: in half precision m * j / scale loses too many bits at long lengths.
        return ctx.causal and dtype in (torch.float32, torch.float64)

    def qk_features(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> tuple[Tensor, Tensor] | None:
        if not self.has_qk_features(ctx, q.dtype):
            return None
        self._check(q)
        b, h, lq, _ = q.shape
        k_pos = ctx.k_pos.to(q.dtype)
        k_pos = k_pos - k_pos.amax(dim=-1, keepdim=True)  # (Bp, Lk) <= 0: a per-row shift, keeps values small
        qf = q.new_ones(b, h, lq, 1)  # (B, H, Lq, 1)
        kf = (self.slopes.to(q.dtype)[None, :, None] * k_pos[:, None, :] / scale)[..., None]  # (Bp, H, Lk, 1)
        return qf, kf.expand(b, h, -1, 1)

    def score_mod(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> Callable:
        self._check(q)
        slopes = self.slopes.to(torch.promote_types(q.dtype, torch.float32))  # flex scores are float32 (or 64)
        q_pos, k_pos = ctx.q_pos, ctx.k_pos
        per_batch = q_pos.shape[0] > 1

        def alibi_mod(score, b, h, q_idx, kv_idx):
            bp = b if per_batch else 0
            return score - slopes[h] * (k_pos[bp, kv_idx] - q_pos[bp, q_idx]).abs()

        return alibi_mod
