"""1-D relative position terms: Shaw/Huang relative embeddings and T5 buckets.

* :class:`RelativeEmbedding` -- Shaw et al. 2018 ("Self-Attention with Relative Position
  Representations") as used by the Music Transformer (Huang et al. 2018): a learned vector per
  clipped key-minus-query distance, ``logit_ij += scale * q_i . E[clip(j - i, -K, K)]``.
  The reference uses Huang et al.'s *skewing* for contiguous positions (``q @ E_rel^T`` then a
  pad-free reshape, O(L^2) memory instead of Shaw's O(L^2 D)) and an index gather for arbitrary
  positions (KV cache with offsets, left padding). On CUDA the fused Triton kernel registered as
  ``kernel = "relative_attention"`` (``kernels/relative_attention/``) replaces both.
* :class:`T5Bias` -- Raffel et al. 2020: one learned scalar per head and log-spaced distance bucket.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor, nn

from .base import PositionContext, PositionTerm

__all__ = ["RelativeEmbedding", "T5Bias", "t5_relative_bucket"]


class RelativeEmbedding(PositionTerm):
    """Learned relative embeddings ``E`` of clipped distances, shared across heads or per head.

    Args:
        head_dim: ``D``, the per-head query size.
        max_distance: ``K``; distances beyond ``+-K`` share the edge embedding.
        num_heads: ``None`` for one table shared by all heads, else one table per head.
        causal: keep only non-positive distances (``K + 1`` rows) -- a decoder never looks ahead,
            so the ``K`` rows for positive distances would never receive a gradient.

    ``weight`` has shape ``(R, D)`` or ``(H, R, D)``, ``R = K + 1`` (causal) or ``2K + 1``; row
    ``r + K`` holds distance ``r``.
    """

    kernel = "relative_attention"

    def __init__(
        self,
        head_dim: int,
        max_distance: int,
        num_heads: int | None = None,
        causal: bool = False,
        init_std: float | None = None,
    ) -> None:
        super().__init__()
        if head_dim <= 0 or max_distance < 1:
            raise ValueError(f"RelativeEmbedding needs head_dim > 0 and max_distance >= 1, got {head_dim}, {max_distance}")
        if num_heads is not None and num_heads <= 0:
            raise ValueError(f"num_heads must be None (shared) or positive, got {num_heads}")
        self.head_dim = head_dim
        self.max_distance = max_distance
        self.num_heads = num_heads
        self.causal = causal
        rows = max_distance + 1 if causal else 2 * max_distance + 1
        shape = (rows, head_dim) if num_heads is None else (num_heads, rows, head_dim)
        self.weight = nn.Parameter(torch.randn(shape) * (init_std if init_std is not None else head_dim**-0.5))

    @property
    def max_positive(self) -> int:
        return 0 if self.causal else self.max_distance

    def extra_repr(self) -> str:
        heads = "shared" if self.num_heads is None else f"per-head({self.num_heads})"
        return f"head_dim={self.head_dim}, max_distance={self.max_distance}, {heads}, causal={self.causal}"

    def table(self) -> Tensor:
        """``(Ht, R, D)`` with ``Ht`` 1 (shared) or H."""
        return self.weight[None] if self.weight.dim() == 2 else self.weight

    def relative_index(self, ctx: PositionContext) -> Tensor:
        """Row of ``weight`` for each (query, key): ``(Bp, Lq, Lk)``."""
        rel = ctx.k_pos[:, None, :] - ctx.q_pos[:, :, None]  # (Bp, Lq, Lk)
        return rel.long().clamp(-self.max_distance, self.max_positive) + self.max_distance

    def _check(self, q: Tensor) -> None:
        if q.shape[-1] != self.head_dim:
            raise ValueError(f"RelativeEmbedding(head_dim={self.head_dim}) got queries of head dim {q.shape[-1]}")
        if self.num_heads is not None and q.shape[1] != self.num_heads:
            raise ValueError(f"RelativeEmbedding has {self.num_heads} per-head tables but q has {q.shape[1]} heads")

    def bias(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> Tensor:
        self._check(q)
        lq, lk = q.shape[-2], k.shape[-2]
        # q . E in at least float32, scaled, then rounded once: in fp16 the unscaled dot product of
        # large queries overflows (q x 1e4 gives inf), and it rounds like a second logit otherwise
        wide = torch.promote_types(q.dtype, torch.float32)
        qw, table = q.to(wide), self.table().to(wide)  # (B, H, Lq, D), (Ht, R, D)
        if ctx.default_positions and 0 < lq <= lk:  # the skew's reshape needs a query
            return (self._skewed(qw, table, lq, lk) * scale).to(q.dtype)
        qe = qw @ table.transpose(-1, -2)[None]  # (B, H, Lq, R)
        idx = self.relative_index(ctx)[:, None]  # (Bp, 1, Lq, Lk)
        idx = idx.expand(q.shape[0], q.shape[1], lq, lk)  # (B, H, Lq, Lk)
        return (torch.gather(qe, -1, idx) * scale).to(q.dtype)  # (B, H, Lq, Lk)

    def _skewed(self, q: Tensor, table: Tensor, lq: int, lk: int) -> Tensor:
        """Huang et al.'s skewing for queries at positions ``Lk-Lq .. Lk-1`` and keys ``0 .. Lk-1``.

        Column ``m`` of ``S = q @ E_rel^T`` holds distance ``m - (Lk - 1)``, so the wanted entry
        ``(i, j)`` is ``S[i, j - i + Lq - 1]``; in the row-major flattening that is element
        ``Lq - 1 + i (W - 1) + j``, i.e. a reshape with row stride ``W - 1``: no (L, L, D) tensor
        and no padding column.
        """
        width = lk + lq - 1
        rel = torch.arange(width, device=q.device) - (lk - 1)  # (W,) distances
        rows = rel.clamp(-self.max_distance, self.max_positive) + self.max_distance
        e_rel = table[:, rows]  # (Ht, W, D)
        s = q @ e_rel.transpose(-1, -2)[None]  # (B, H, Lq, W)
        if lq == 1:
            return s  # W == Lk: nothing to skew
        flat = s.flatten(-2)[..., lq - 1 : lq - 1 + lq * (width - 1)]  # (B, H, Lq * (W-1))
        return flat.unflatten(-1, (lq, width - 1))[..., :lk]  # (B, H, Lq, Lk)

    def score_mod(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> Callable:
        """Flex form: ``q @ E^T`` (B, H, Lq, R) precomputed and captured, indexed per score.

        Computed and kept in at least float32 (FlexAttention's scores are float32), as in ``bias``.
        """
        self._check(q)
        wide = torch.promote_types(q.dtype, torch.float32)
        qe = (q.to(wide) @ self.table().to(wide).transpose(-1, -2)[None]) * scale  # (B, H, Lq, R)
        q_pos, k_pos = ctx.q_pos.long(), ctx.k_pos.long()  # (Bp, Lq), (Bp, Lk)
        per_batch = q_pos.shape[0] > 1
        kmax, kpos_hi = self.max_distance, self.max_positive

        def rel_mod(score, b, h, q_idx, kv_idx):
            bp = b if per_batch else 0
            r = (k_pos[bp, kv_idx] - q_pos[bp, q_idx]).clamp(-kmax, kpos_hi) + kmax
            return score + qe[b, h, q_idx, r]

        return rel_mod


def t5_relative_bucket(rel: Tensor, bidirectional: bool, num_buckets: int, max_distance: int) -> Tensor:
    """T5's bucket of each key-minus-query distance ``rel``: exact below ``num_buckets/2``
    (halved again when bidirectional, the other half for the sign), log-spaced up to ``max_distance``."""
    rel = rel.long()
    buckets = torch.zeros_like(rel)
    if bidirectional:
        num_buckets //= 2
        buckets = buckets + (rel > 0).long() * num_buckets
        n = rel.abs()
    else:
        n = (-rel).clamp(min=0)  # only the past: distance of a key before the query
    max_exact = num_buckets // 2
    is_small = n < max_exact
    large = max_exact + (
        torch.log(n.float().clamp(min=1) / max_exact) / math.log(max_distance / max_exact) * (num_buckets - max_exact)
    ).long()
    large = large.clamp(max=num_buckets - 1)
    return buckets + torch.where(is_small, n, large)


class T5Bias(PositionTerm):
    """T5's bucketed relative bias: ``logit_ij += b[h, bucket(j - i)]``.

    The parameter is ``relative_attention_bias.weight`` of shape ``(num_buckets, H)``, the key name
    of Hugging Face's T5, so its weights load unchanged.
    """

    def __init__(self, num_heads: int, num_buckets: int = 32, max_distance: int = 128, bidirectional: bool = True):
        super().__init__()
        if num_buckets < 4 or max_distance <= num_buckets // 4:
            raise ValueError(f"T5Bias needs num_buckets >= 4 and max_distance > num_buckets/4, got {num_buckets}, {max_distance}")
        self.num_heads = num_heads
        self.num_buckets = num_buckets
        self.max_distance = max_distance
        self.bidirectional = bidirectional
        self.relative_attention_bias = nn.Embedding(num_buckets, num_heads)
        nn.init.normal_(self.relative_attention_bias.weight, std=0.02)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, buckets={self.num_buckets}, max_distance={self.max_distance}, bidirectional={self.bidirectional}"

    def _buckets(self, rel: Tensor) -> Tensor:
        return t5_relative_bucket(rel, self.bidirectional, self.num_buckets, self.max_distance)

    def _check(self, q: Tensor) -> None:
        if q.shape[1] != self.num_heads:
            raise ValueError(f"T5Bias has {self.num_heads} heads but q has {q.shape[1]}")

    def bias(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> Tensor:
        self._check(q)
        rel = ctx.k_pos[:, None, :] - ctx.q_pos[:, :, None]  # (Bp, Lq, Lk)
        values = self.relative_attention_bias(self._buckets(rel))  # (Bp, Lq, Lk, H)
        return values.permute(0, 3, 1, 2).to(q.dtype)  # (Bp, H, Lq, Lk)

    def distance_table(self) -> Tensor:
        """``(H, 2M + 1)``, ``M = max_distance``: the bias of each distance ``-M .. M``.

        Every distance beyond ``+-M`` falls in the same (last) bucket as ``+-M``, so clamping a
        distance to ``[-M, M]`` and reading this row gives the bias of any distance, with the
        buckets computed by the same function as :meth:`bias`.
        """
        weight = self.relative_attention_bias.weight  # (num_buckets, H)
        rel = torch.arange(-self.max_distance, self.max_distance + 1, device=weight.device)  # (2M + 1,)
        return weight[self._buckets(rel)].t()  # (H, 2M + 1)

    def score_mod(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> Callable:
        """Flex form: the bucket of ``kv_idx - q_idx`` (or of the bound positions' difference) is
        looked up per score in :meth:`distance_table` -- O(max_distance) captured, no (Lq, Lk) table."""
        self._check(q)  # the same error as bias(): a wrong head count would index past the table
        table = self.distance_table().to(q.dtype)  # (H, 2M + 1)
        md = self.max_distance
        if ctx.default_positions:  # queries are the last Lq of the Lk keys
            offset = k.shape[-2] - q.shape[-2]

            def t5_mod(score, b, h, q_idx, kv_idx):
                return score + table[h, (kv_idx - q_idx - offset).clamp(-md, md) + md]

            return t5_mod
        q_pos, k_pos = ctx.q_pos, ctx.k_pos  # (Bp, Lq), (Bp, Lk)
        per_batch = q_pos.shape[0] > 1 or k_pos.shape[0] > 1
        if per_batch:
            q_pos = q_pos.expand(max(q_pos.shape[0], k_pos.shape[0]), -1)
            k_pos = k_pos.expand(q_pos.shape[0], -1)

        def t5_pos_mod(score, b, h, q_idx, kv_idx):
            bp = b if per_batch else 0
            rel = (k_pos[bp, kv_idx] - q_pos[bp, q_idx]).long()  # as bias(): the difference, then truncated
            return score + table[h, rel.clamp(-md, md) + md]

        return t5_pos_mod
