"""BoxRPB (Lin et al. 2023, "DETR Doesn't Need Multi-Scale or Locality Design", Plain-DETR).

Cross-attention from object queries to a ``(Hf, Wf)`` feature map gets a bias from each query's
box: the distances from the box's two x-edges to every pixel-centre column go through ``MLP_x``,
the distances from its two y-edges to every row through ``MLP_y``, and the bias of pixel (r, c) is
``MLP_y(...)[r] + MLP_x(...)[c]`` (the paper's axial decomposition: (Hf + Wf) MLP evaluations per
query instead of Hf * Wf). Boxes are normalized ``(cx, cy, w, h)``; pixel centres sit at
``(c + 0.5) * stride``. ``rpe_type="log"`` maps a distance ``d`` to ``sign(d) log2(|d| + 1) / 3``.
The official code names the two MLPs ``cpb_mlp1`` (x) and ``cpb_mlp2`` (y); its converter maps them
to ``cpb_mlp_x`` / ``cpb_mlp_y``.

Three exact forms: ``bias`` materializes ``(B, H, Lq, Hf*Wf)`` (the reference, and the official
code's way); ``score_mod`` indexes the two axial tables per score under FlexAttention; and
``qk_features`` keeps plain SDPA / FlashAttention usable with autograd on every device: q gets the
per-axis bias values as ``Wf + Hf`` extra columns (divided by the attention scale, which SDPA
multiplies back), k gets one-hot column / row indicators of its pixel, so
``scale * q' . k' = scale * q . k + B_x[q, col(k)] + B_y[q, row(k)]``. Memory is
``O(Lq (Hf + Wf))`` per head instead of ``O(Lq Hf Wf)``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from .base import PositionContext, PositionTerm

__all__ = ["BoxRPB"]


def _mlp(hidden: int, num_heads: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(2, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_heads, bias=False))


def _spatial_shape(ctx: PositionContext) -> tuple[int, int]:
    """The bound ``(Hf, Wf)`` as ints: free for a tuple; a tensor (older callers) costs a device sync."""
    shape = ctx.get("spatial_shape")
    if isinstance(shape, Tensor):
        shape = tuple(shape.tolist())
    if isinstance(shape, int) or len(shape) != 2:
        raise ValueError(f"BoxRPB needs spatial_shape (Hf, Wf), got {shape!r}")
    return int(shape[0]), int(shape[1])


class BoxRPB(PositionTerm):
    """Box-to-pixel relative position bias.

    Context: ``boxes (B, Lq, 4)`` and ``spatial_shape``, the feature map's ``(Hf, Wf)`` as a tuple of
    ints (a tensor is accepted too, at the price of a device sync per call).
    """

    required_context = ("boxes", "spatial_shape")

    def __init__(self, num_heads: int, hidden_dim: int = 512, stride: int = 16, rpe_type: str = "linear") -> None:
        super().__init__()
        if rpe_type not in ("linear", "log"):
            raise ValueError(f"rpe_type must be 'linear' or 'log', got {rpe_type!r}")
        self.num_heads = num_heads
        self.stride = stride
        self.rpe_type = rpe_type
        self.cpb_mlp_x = _mlp(hidden_dim, num_heads)
        self.cpb_mlp_y = _mlp(hidden_dim, num_heads)

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, stride={self.stride}, rpe_type={self.rpe_type}"

    def _transform(self, d: Tensor) -> Tensor:
        if self.rpe_type == "log":
            return torch.sign(d) * torch.log2(d.abs() + 1.0) / 3.0
        return d

    def axial(self, ctx: PositionContext) -> tuple[Tensor, Tensor]:
        """``rpe_y (B, Lq, Hf, H)`` and ``rpe_x (B, Lq, Wf, H)``."""
        boxes = ctx.get("boxes")
        hf, wf = _spatial_shape(ctx)
        if boxes.dim() != 3 or boxes.shape[-1] != 4:
            raise ValueError(f"BoxRPB needs boxes of shape (B, Lq, 4) as (cx, cy, w, h), got {tuple(boxes.shape)}")
        weight_dtype = self.cpb_mlp_x[0].weight.dtype
        cx, cy, bw, bh = boxes.to(weight_dtype).unbind(-1)  # (B, Lq) each
        x_edges = torch.stack([cx - bw / 2, cx + bw / 2], -1) * (wf * self.stride)  # (B, Lq, 2) pixels
        y_edges = torch.stack([cy - bh / 2, cy + bh / 2], -1) * (hf * self.stride)
        col = (torch.arange(wf, device=boxes.device, dtype=weight_dtype) + 0.5) * self.stride  # (Wf,)
        row = (torch.arange(hf, device=boxes.device, dtype=weight_dtype) + 0.5) * self.stride  # (Hf,)
        dx = self._transform(x_edges[:, :, None, :] - col[None, None, :, None])  # (B, Lq, Wf, 2)
        dy = self._transform(y_edges[:, :, None, :] - row[None, None, :, None])  # (B, Lq, Hf, 2)
        return self.cpb_mlp_y(dy), self.cpb_mlp_x(dx)

    def bias(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> Tensor:
        hf, wf = _spatial_shape(ctx)
        if k.shape[-2] != hf * wf:
            raise ValueError(f"BoxRPB: spatial_shape {hf}x{wf} does not match {k.shape[-2]} keys")
        if q.shape[1] != self.num_heads:
            raise ValueError(f"BoxRPB has {self.num_heads} heads but q has {q.shape[1]}")
        rpe_y, rpe_x = self.axial(ctx)
        rpe = rpe_y[:, :, :, None, :] + rpe_x[:, :, None, :, :]  # (B, Lq, Hf, Wf, H)
        return rpe.flatten(2, 3).permute(0, 3, 1, 2).to(q.dtype)  # (B, H, Lq, Hf*Wf)

    def has_qk_features(self, ctx: PositionContext, dtype: torch.dtype) -> bool:
        # Columns exist whenever the call binds a valid grid; every float dtype (the values are
        # rounded once to q's dtype, like the materialized bias).
        try:
            _spatial_shape(ctx)
        except (KeyError, ValueError):
            return False
        return "boxes" in ctx.extras

    def qk_features(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> tuple[Tensor, Tensor] | None:
        if not self.has_qk_features(ctx, q.dtype):
            return None
        hf, wf = _spatial_shape(ctx)
        b, h, lk = q.shape[0], q.shape[1], k.shape[-2]
        if lk != hf * wf:
            raise ValueError(f"BoxRPB: spatial_shape {hf}x{wf} does not match {lk} keys")
        if h != self.num_heads:
            raise ValueError(f"BoxRPB has {self.num_heads} heads but q has {h}")
        rpe_y, rpe_x = self.axial(ctx)  # (B, Lq, Hf, H), (B, Lq, Wf, H)
        qf = torch.cat([rpe_x, rpe_y], dim=2).permute(0, 3, 1, 2) / scale  # (B, H, Lq, Wf + Hf)
        pix = torch.arange(lk, device=k.device)  # (Lk,) row-major pixel index r * Wf + c
        cols = torch.arange(wf, device=k.device)  # (Wf,)
        rows = torch.arange(hf, device=k.device)  # (Hf,)
        onehot = torch.cat([pix[:, None] % wf == cols, pix[:, None] // wf == rows], dim=1)  # (Lk, Wf + Hf)
        kf = onehot.to(k.dtype)[None, None].expand(b, h, lk, wf + hf)  # (B, H, Lk, Wf + Hf)
        return qf.to(q.dtype), kf

    def score_mod(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> Callable:
        _, wf = _spatial_shape(ctx)
        rpe_y, rpe_x = self.axial(ctx)
        rpe_y, rpe_x = rpe_y.to(q.dtype), rpe_x.to(q.dtype)

        def box_mod(score, b, h, q_idx, kv_idx):
            return score + rpe_y[b, q_idx, kv_idx // wf, h] + rpe_x[b, q_idx, kv_idx % wf, h]

        return box_mod
