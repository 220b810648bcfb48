"""Rotary position embedding (Su et al. 2021, RoFormer): rotate q and k by position-dependent angles.

Pairs are formed GPT-NeoX / LLaMA style (first half with second half of the rotated dims); only
the first ``rotary_dim`` dims rotate (partial rotary as in GPT-J/NeoX). A pure q/k transform: every
backend applies it before the dot product, so attention stays plain SDPA/FlashAttention.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .base import PositionContext, PositionTerm

__all__ = ["Rotary", "apply_rotary"]


def apply_rotary(x: Tensor, pos: Tensor, inv_freq: Tensor) -> Tensor:
    """Rotate the first ``2 * len(inv_freq)`` dims of ``x (B, H, L, D)`` at positions ``pos (Bp, L)``.

    The rotation runs in at least float32 and is rounded to x's dtype once: in half precision
    ``x1 cos - x2 sin`` would round each product and the difference.
    """
    rd = 2 * inv_freq.shape[0]
    wide = torch.promote_types(x.dtype, torch.float32)
    angles = pos.to(torch.float32)[..., None] * inv_freq  # (Bp, L, rd/2)
    cos = angles.cos()[:, None].to(wide)  # (Bp, 1, L, rd/2)
    sin = angles.sin()[:, None].to(wide)
    x_rot, x_pass = x[..., :rd].to(wide), x[..., rd:]
    x1, x2 = x_rot.chunk(2, dim=-1)  # (B, H, L, rd/2) each
    rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)  # (B, H, L, rd)
    return torch.cat([rotated, x_pass], dim=-1)


class Rotary(PositionTerm):
    """RoPE over query/key positions; ``base`` 10000 as in the paper."""

    def __init__(self, head_dim: int, rotary_dim: int | None = None, base: float = 10000.0) -> None:
        super().__init__()
        rotary_dim = head_dim if rotary_dim is None else rotary_dim
        if rotary_dim % 2 or not 0 < rotary_dim <= head_dim:
            raise ValueError(f"rotary_dim must be even and in (0, head_dim={head_dim}], got {rotary_dim}")
        self.head_dim = head_dim
        self.rotary_dim = rotary_dim
        self.base = base
        inv_freq = base ** (-torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim)  # (rd/2,)
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, rotary_dim={self.rotary_dim}, base={self.base}"

    @property
    def adds_bias(self) -> bool:
        return False

    def transform_qk(self, q: Tensor, k: Tensor, ctx: PositionContext) -> tuple[Tensor, Tensor]:
        if q.shape[-1] != self.head_dim or k.shape[-1] != self.head_dim:
            raise ValueError(f"Rotary(head_dim={self.head_dim}) got q/k head dims {q.shape[-1]}, {k.shape[-1]}")
        return apply_rotary(q, ctx.q_pos, self.inv_freq), apply_rotary(k, ctx.k_pos, self.inv_freq)

    def bias(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> None:
        return None
