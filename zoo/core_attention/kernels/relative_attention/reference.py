"""Relative attention in plain PyTorch: the readable, exact form of the fused kernel in ``triton.py``.

    logits[i, j] = scale * (q_i . k_j + q_i . E[clip(j - i', -K, Khi) + K]),   i' = i + Lk - Lq
    out = softmax(logits over the visible keys) v

It takes the kernel's arguments and follows its conventions (queries are the last ``Lq`` of the
``Lk`` keys; ``Khi = K`` for a ``2K + 1``-row table, ``0`` for a causal ``K + 1``-row one; a query
that sees no key outputs zeros), so the two are interchangeable and the tests compare them forward
and backward. It materializes the ``(B, H, Lq, Lk)`` logits -- O(L^2) memory, the price of being
obvious -- but never Shaw et al.'s ``(Lq, Lk, D)`` tensor: the relative logits are gathered from
``q @ E^T``, one dot product per (query, table row). The attention core's ``backend="reference"``
computes the same function with Huang et al.'s skewing instead of the gather
(:class:`zoo.core_attention.positions.RelativeEmbedding`).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["relative_attention_reference"]


def relative_attention_reference(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    weight: Tensor,
    max_distance: int,
    *,
    causal: bool,
    key_padding_mask: Tensor | None = None,
    scale: float | None = None,
    dropout_p: float = 0.0,
    dropout_mask: Tensor | None = None,
) -> Tensor:
    """``softmax(scale * (q k^T + q E_rel^T)) v`` with materialized logits; arguments as the kernel's.

    Args:
        q: ``(B, H, Lq, D)``.
        k, v: ``(B, H, Lk, D)``.
        weight: ``(R, D)`` shared or ``(H, R, D)`` per head, ``R = 2K + 1`` or ``K + 1`` (causal).
        max_distance: ``K``.
        causal: key ``j`` is visible only if ``j <= i + Lk - Lq``.
        key_padding_mask: bool ``(B, Lk)`` or ``(1, Lk)``, True = attend.
        scale: defaults to ``1 / sqrt(D)``.
        dropout_p, dropout_mask: attention dropout with a given mask, bool broadcastable to
            ``(B, H, Lq, Lk)``, True = kept; kept probabilities are scaled by ``1 / (1 - dropout_p)``
            (the kernel's mask for a seed comes from ``triton.dropout_mask``).

    Returns:
        ``(B, H, Lq, D)``. Half-precision logits are normalized in float32, as the kernel does.
    """
    b, h, lq, d = q.shape
    lk = k.shape[2]
    scale = d**-0.5 if scale is None else scale
    khi = weight.shape[-2] - 1 - max_distance  # K (bidirectional table) or 0 (causal table)
    q_pos = torch.arange(lk - lq, lk, device=q.device)  # (Lq,) the queries are the last Lq keys
    k_pos = torch.arange(lk, device=q.device)  # (Lk,)
    rows = (k_pos[None, :] - q_pos[:, None]).clamp(-max_distance, khi) + max_distance  # (Lq, Lk) table rows
    qe = q @ weight.to(q.dtype).transpose(-1, -2)  # (B, H, Lq, R): q_i . E[r] for every row r
    rel = qe.gather(-1, rows.expand(b, h, lq, lk))  # (B, H, Lq, Lk)
    logits = scale * (q @ k.transpose(-1, -2) + rel)  # (B, H, Lq, Lk)
    visible = torch.ones(lq, lk, dtype=torch.bool, device=q.device)  # (Lq, Lk)
    if causal:
        visible = k_pos[None, :] <= q_pos[:, None]
    if key_padding_mask is not None:
        visible = visible & key_padding_mask[:, None, None, :]  # (B, 1, Lq, Lk)
    logits = logits.masked_fill(~visible, float("-inf"))
    acc = torch.float32 if logits.dtype in (torch.float16, torch.bfloat16) else logits.dtype
    probs = torch.softmax(logits.to(acc), dim=-1)  # (B, H, Lq, Lk)
    # a query that sees no key has a row of NaNs here; the kernel gives it a zero output
    probs = probs.masked_fill(~visible.any(-1, keepdim=True), 0.0)
    if (dropout_mask is None) != (dropout_p == 0.0):
        raise ValueError(f"relative_attention_reference: dropout needs both dropout_p > 0 and dropout_mask, "
                         f"got dropout_p={dropout_p} and dropout_mask={'None' if dropout_mask is None else 'a mask'}")
    if dropout_mask is not None:
        probs = probs * dropout_mask / (1.0 - dropout_p)  # (B, H, Lq, Lk)
    return probs.to(q.dtype) @ v  # (B, H, Lq, D)
