"""SLRT: the Sign Language Recognition Transformer of BdSLW401 (Rubaiyeat et al., arXiv 2503.02360).

The paper classifies isolated signs from MediaPipe Holistic landmark sequences with a transformer
encoder of **3 layers and 8 heads** that reads the landmarks directly (no CNN features), fed either
the raw landmarks or their RQE / RQE-SF encoding (:mod:`zoo.sign.recognition.encoding`). There is
no public code; this file is built from the paper's description:

- **frame embedding**: each frame's encoded landmarks ``(L, 3)`` (NaN = not detected) become the
  finite values plus one presence flag per landmark, ``L * 4`` numbers, mapped to ``dim`` by a
  two-layer MLP (Linear, GELU, Linear), plus a learned absolute position embedding per frame;
- **encoder**: ``depth`` pre-norm transformer blocks (LayerNorm, multi-head self-attention through
  :class:`zoo.core_attention.mha.MultiheadAttention`, LayerNorm, GELU MLP), padded frames masked
  out of every attention (``mask (B, T)``, True = a real frame);
- **head**: final LayerNorm, mean over the real frames (or a learned CLS token, ``pool="cls"``),
  dropout, linear classifier.

Choices where the paper leaves the detail open (also in docs/sign/recognition.md): the width
(``dim=256``, MLP ratio 4, dropout 0.1), the pre-norm block, the learned position embedding, the
presence flags (a missing hand is otherwise indistinguishable from a wrist at the reference), and
masked mean pooling. :meth:`SLRT.attention_maps` returns each layer's attention probabilities, computed
by the same core ``attention()`` call with the identity as values (so no second softmax exists here).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from zoo.core_attention import attention
from zoo.core_attention.mha import MultiheadAttention

__all__ = ["SLRT", "SLRTConfig", "SLRT_CONFIGS", "build_slrt"]

POOLS = ("mean", "cls")


# ----------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class SLRTConfig:
    """One SLRT variant: input layout, width and depth, pooling."""

    num_classes: int = 100
    num_landmarks: int = 75  # 75 = pose + both hands, 543 = with the face
    coords: int = 3
    dim: int = 256
    depth: int = 3
    num_heads: int = 8
    mlp_ratio: float = 4.0
    dropout: float = 0.1
    attn_dropout: float = 0.0
    max_frames: int = 256
    pool: str = "mean"
    attention_backend: str = "auto"  # runtime only: never saved (zoo.hub.config)

    def __post_init__(self) -> None:
        if self.pool not in POOLS:
            raise ValueError(f"SLRTConfig.pool must be one of {POOLS}, got {self.pool!r}")
        if self.dim % self.num_heads:
            raise ValueError(f"SLRTConfig: dim ({self.dim}) must be divisible by num_heads ({self.num_heads})")
        for field in ("num_classes", "num_landmarks", "coords", "dim", "depth", "num_heads", "max_frames"):
            if getattr(self, field) < 1:
                raise ValueError(f"SLRTConfig.{field} must be >= 1, got {getattr(self, field)}")


# ----------------------------------------------------------------------------------------- blocks


class FrameEmbedding(nn.Module):
    """``(B, T, L, C)`` encoded landmarks (NaN = missing) -> ``(B, T, dim)``: values + presence flags, MLP."""

    def __init__(self, num_landmarks: int, coords: int, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(num_landmarks * (coords + 1), dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        present = torch.isfinite(x).all(dim=-1, keepdim=True)  # (B, T, L, 1)
        values = torch.where(present, x, torch.zeros_like(x))  # (B, T, L, C)
        feats = torch.cat([values, present.to(x.dtype)], dim=-1).flatten(2)  # (B, T, L * (C + 1))
        return self.fc2(self.act(self.fc1(feats)))  # (B, T, dim)


class Block(nn.Module):
    """Pre-norm transformer encoder block: ``x + MHA(LN(x))``, then ``x + MLP(LN(x))``."""

    def __init__(self, cfg: SLRTConfig) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim)
        self.attn = MultiheadAttention(cfg.dim, cfg.num_heads, dropout=cfg.attn_dropout, backend=cfg.attention_backend)
        self.norm2 = nn.LayerNorm(cfg.dim)
        hidden = int(cfg.dim * cfg.mlp_ratio)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.dim, hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.Linear(hidden, cfg.dim), nn.Dropout(cfg.dropout)
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask=mask))  # (B, T, dim)
        return x + self.mlp(self.norm2(x))  # (B, T, dim)

    def attention_probs(self, x: Tensor, mask: Tensor) -> Tensor:
        """This block's attention probabilities ``(B, H, T, T)`` for the block input ``x (B, T, dim)``."""
        mha, h = self.attn, self.norm1(x)
        q = mha._split(mha.q_proj(h), mha.num_heads)  # (B, H, T, Dh)
        k = mha._split(mha.k_proj(h), mha.num_kv_heads)  # (B, Hkv, T, Dh)
        eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device)  # (T, T)
        values = eye.expand(x.shape[0], mha.num_kv_heads, -1, -1)  # (B, Hkv, T, T): softmax(qk^T) @ I
        return attention(q, k, values, mask=mask, backend="reference")  # (B, H, T, T)


# ----------------------------------------------------------------------------------------- model


class SLRT(nn.Module):
    """Sign Language Recognition Transformer: ``forward(x (B, T, L, C), mask (B, T)) -> logits (B, classes)``."""

    def __init__(self, config: SLRTConfig) -> None:
        super().__init__()
        self.config = config
        self.num_classes = config.num_classes
        self.embed = FrameEmbedding(config.num_landmarks, config.coords, config.dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, config.max_frames, config.dim))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.dim)) if config.pool == "cls" else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList([Block(config) for _ in range(config.depth)])
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, config.num_classes)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)

    def _check(self, x: Tensor, mask: Tensor | None) -> Tensor:
        cfg = self.config
        if x.dim() != 4 or x.shape[2] != cfg.num_landmarks or x.shape[3] != cfg.coords:
            raise ValueError(
                f"SLRT expects encoded landmarks (B, T, {cfg.num_landmarks}, {cfg.coords}), got {tuple(x.shape)}"
            )
        if not 1 <= x.shape[1] <= cfg.max_frames:
            raise ValueError(f"SLRT: {x.shape[1]} frames, the model takes 1..max_frames={cfg.max_frames}")
        if mask is None:
            return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        if mask.shape != x.shape[:2] or mask.dtype != torch.bool:
            raise ValueError(f"SLRT: mask must be bool (B, T) = {tuple(x.shape[:2])}, got {mask.dtype} {tuple(mask.shape)}")
        if not mask.any(dim=1).all():
            raise ValueError("SLRT: every sequence needs at least one unmasked frame")
        return mask

    def _tokens(self, x: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Embedded frames (with the CLS token first when pooling by it) and their key mask."""
        t = self.embed(x) + self.pos_embed[:, : x.shape[1]]  # (B, T, dim)
        if self.cls_token is not None:
            t = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), t], dim=1)  # (B, 1 + T, dim)
            mask = torch.cat([mask.new_ones(x.shape[0], 1), mask], dim=1)  # (B, 1 + T)
        return self.drop(t), mask

    def forward_features(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        """``(B, T, L, C)`` -> normalized tokens ``(B, T [+1], dim)``."""
        mask = self._check(x, mask)
        t, key_mask = self._tokens(x, mask)
        attn_mask = key_mask[:, None, None, :]  # (B, 1, 1, T'): padded frames receive no attention
        for block in self.blocks:
            t = block(t, attn_mask)
        return self.norm(t)

    def forward_head(self, feats: Tensor, mask: Tensor | None = None, pre_logits: bool = False) -> Tensor:
        """Pool ``feats (B, T [+1], dim)`` over the real frames, then classify (``pre_logits``: the pooled vector)."""
        if self.cls_token is not None:
            pooled = feats[:, 0]  # (B, dim)
        else:
            m = torch.ones(feats.shape[:2], dtype=feats.dtype, device=feats.device) if mask is None else mask.to(feats.dtype)
            pooled = (feats * m[..., None]).sum(1) / m.sum(1, keepdim=True).clamp_min(1)  # (B, dim)
        pooled = self.drop(pooled)
        return pooled if pre_logits else self.head(pooled)  # (B, classes)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return self.forward_head(self.forward_features(x, mask), mask)

    def reset_classifier(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.head = nn.Linear(self.config.dim, num_classes)

    @torch.no_grad()
    def attention_maps(self, x: Tensor, mask: Tensor | None = None) -> list[Tensor]:
        """Each layer's attention probabilities ``(B, H, T', T')`` (T' = T, or 1 + T with a CLS token first)."""
        mask = self._check(x, mask)
        t, key_mask = self._tokens(x, mask)
        attn_mask = key_mask[:, None, None, :]
        maps = []
        for block in self.blocks:
            maps.append(block.attention_probs(t, attn_mask))
            t = block(t, attn_mask)
        return maps


def build_slrt(config: SLRTConfig) -> SLRT:
    return SLRT(config)


# ----------------------------------------------------------------------------------------- variants

SLRT_CONFIGS: dict[str, SLRTConfig] = {
    # the paper's encoder (3 layers, 8 heads) on pose + hands
    "slrt": SLRTConfig(),
    # the same with the 468 face landmarks in the input
    "slrt_face": SLRTConfig(num_landmarks=543),
    # a narrow encoder of the same depth and heads, for CPU demos
    "slrt_small": SLRTConfig(dim=128, max_frames=128),
}
