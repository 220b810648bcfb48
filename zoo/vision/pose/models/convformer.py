"""ConvFormer: 3-D human pose lifted from a 2-D keypoint sequence by convolutional transformers.

Paper: Diaz-Arias & Shin, "ConvFormer: Parameter Reduction in Transformer Models for 3D Human Pose
Estimation by Leveraging Dynamic Multi-Headed Convolutional Attention" (arXiv 2304.02147; The Visual
Computer 40, 2024). There is no public code; this file is built from the paper's description:

- a **spatial ConvFormer** over the ``J = 17`` joints of every frame (per-joint linear embedding of the
  2-D keypoint, learned joint position embedding, pre-norm blocks), then a **temporal ConvFormer** over
  the ``F`` frames, whose tokens are the frames' concatenated joint features (``J * C``, learned frame
  position embedding), then the centre frame's root-relative 3-D pose: a learned weighted mean over
  frames, LayerNorm and a linear map to ``J * 3`` (the PoseFormer-style lifting layout the paper keeps);
- **dynamic multi-headed convolutional self-attention** (DMCA): queries, keys and values come from
  convolutions instead of linear maps, and every head has its own kernel size (``*_kernels``, one odd
  size per head): heads with different receptive fields. The convolutions are modules in front of
  :func:`zoo.core_attention.attention`, which computes the softmax attention itself;
- the **temporal joints profile**: in the temporal stage the q/k/v convolution treats the ``F`` frames
  as its channels and slides over the joints, so every q/k/v entry at a frame fuses the *whole*
  sequence of a local neighbourhood of joints at once.

Choices the paper leaves open (also in ``docs/vision/pose.md``):

1. **Spatial q/k/v convolution**: a 1-D convolution along the joint axis (joints in Human3.6M's
   17-joint order, whose index neighbours are mostly kinematic neighbours), ``C -> 3 * C / H`` channels
   per head with that head's kernel, zero "same" padding. Heads sharing a kernel size share one
   ``Conv1d`` (heads are ordered by kernel group; the output projection makes the order immaterial).
2. **Temporal joints profile** as a separable convolution: a pointwise frame mixing ``F -> 3F``
   (``Conv1d(F, 3F, 1)`` over the ``(C, J)`` features, the "complete temporal information"), then per
   head a depthwise convolution over the joint axis of each feature channel with the head's kernel
   (the "local neighbourhood of joints"). The literal dense ``F -> F`` convolution with a ``k``-wide
   kernel would cost ``3 F^2 k`` weights per head (about 1.4 M per head per layer at 243 frames),
   which contradicts the paper's parameter-reduction claim; the separable form costs ``3 F^2 + 3 F C k``.
   The temporal features are laid out channel-major ``(C, J)`` so the kernel runs over joints.
3. **Heads and kernels**: 8 heads in both stages with kernels ``(1, 1, 3, 3, 5, 5, 7, 7)``;
   ``C = 32``, 4 spatial + 4 temporal blocks, MLP ratio 2, drop path 0.1 (PoseFormer's sizes, which the
   paper compares against). Attention output projection and MLPs stay linear.
4. **Variants** differ only in the receptive field (27 / 81 / 243 frames), as the paper's tables do.
5. **Lifting head**: PoseFormer's (the learned weighted mean over frames, LayerNorm, ``Linear(J C, 3 J)``),
   the centre frame only; the predicted root is not forced to zero (the target's is).
6. **Positions**: learned joint and frame position tables (trunc-normal 0.02, no weight decay) are kept
   beside the convolutional projections; the paper does not say whether the convolutions replace them.

Shapes: ``forward(keypoints (B, F, J, 2)) -> (B, J, 3)``, the centre frame, root-relative.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from timm.layers import DropPath, Mlp, trunc_normal_
from timm.models.vision_transformer import init_weights_vit_timm
from torch import Tensor, nn

from zoo.core_attention import attention

__all__ = ["CONVFORMER_CONFIGS", "ConvFormer", "ConvFormerConfig", "ConvProjectionAttention"]


# ----------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ConvFormerConfig:
    num_frames: int = 27
    num_joints: int = 17
    in_dim: int = 2
    out_dim: int = 3
    embed_dim: int = 32  # C, per joint
    spatial_depth: int = 4
    temporal_depth: int = 4
    spatial_kernels: tuple[int, ...] = (1, 1, 3, 3, 5, 5, 7, 7)  # one per head
    temporal_kernels: tuple[int, ...] = (1, 1, 3, 3, 5, 5, 7, 7)  # one per head
    mlp_ratio: float = 2.0
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    attention_backend: str = "auto"  # runtime only, never saved

    def __post_init__(self) -> None:
        if self.num_frames < 1 or self.num_frames % 2 == 0:
            raise ValueError(f"ConvFormerConfig.num_frames must be odd (a centre frame), got {self.num_frames}")
        for name in ("spatial_kernels", "temporal_kernels"):
            kernels = tuple(getattr(self, name))
            object.__setattr__(self, name, kernels)
            if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
                raise ValueError(f"ConvFormerConfig.{name} must be odd kernel sizes, one per head, got {kernels}")
            if self.embed_dim % len(kernels):
                raise ValueError(f"ConvFormerConfig: embed_dim={self.embed_dim} is not divisible by {len(kernels)} heads ({name})")


# ----------------------------------------------------------------------------------------- blocks


def _kernel_groups(kernels: tuple[int, ...]) -> list[tuple[int, int]]:
    """``[(kernel, heads with it)]`` in order of first appearance."""
    order: dict[int, int] = {}
    for k in kernels:
        order[k] = order.get(k, 0) + 1
    return list(order.items())


class JointConvQKV(nn.Module):
    """Spatial q/k/v: per head a 1-D convolution along the token (joint) axis with its own kernel.

    ``(B, L, C) -> 3 x (B, H, L, C / H)``.
    """

    def __init__(self, dim: int, kernels: tuple[int, ...]) -> None:
        super().__init__()
        self.num_heads, self.head_dim = len(kernels), dim // len(kernels)
        self.groups = _kernel_groups(kernels)
        self.convs = nn.ModuleList(
            nn.Conv1d(dim, 3 * n * self.head_dim, k, padding=k // 2) for k, n in self.groups
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, length, _ = x.shape
        xt = x.transpose(1, 2)  # (B, C, L)
        parts = [conv(xt).view(b, 3, n, self.head_dim, length) for conv, (_, n) in zip(self.convs, self.groups)]
        qkv = torch.cat(parts, dim=2).permute(1, 0, 2, 4, 3)  # (3, B, H, L, d)
        return qkv[0], qkv[1], qkv[2]


class TemporalJointsProfileQKV(nn.Module):
    """Temporal q/k/v from the temporal joints profile: frames are the channels.

    A pointwise frame mixing ``F -> 3F`` (every frame of the sequence at once), then per head a
    depthwise convolution over the joints of each of the head's feature channels with the head's
    kernel. ``(B, F, C * J) -> 3 x (B, H, F, (C / H) * J)`` with features laid out ``(C, J)``.
    """

    def __init__(self, num_frames: int, channels: int, num_joints: int, kernels: tuple[int, ...]) -> None:
        super().__init__()
        self.num_frames, self.channels, self.num_joints = num_frames, channels, num_joints
        self.num_heads, self.head_channels = len(kernels), channels // len(kernels)
        self.groups = _kernel_groups(kernels)
        self.frame_mix = nn.Conv1d(num_frames, 3 * num_frames, 1)
        self.joint_convs = nn.ModuleList(
            nn.Conv1d(3 * num_frames * n * self.head_channels, 3 * num_frames * n * self.head_channels, k,
                      padding=k // 2, groups=3 * num_frames * n * self.head_channels)
            for k, n in self.groups
        )

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        b, f, _ = x.shape
        if f != self.num_frames:
            raise ValueError(f"TemporalJointsProfileQKV: built for {self.num_frames} frames, got {f}")
        c, j, hc = self.channels, self.num_joints, self.head_channels
        mixed = self.frame_mix(x).view(b, 3 * f, c, j)  # (B, 3F, C, J)
        parts, start = [], 0
        for conv, (_, n) in zip(self.joint_convs, self.groups):
            chunk = mixed[:, :, start : start + n * hc]  # (B, 3F, n*hc, J)
            out = conv(chunk.reshape(b, 3 * f * n * hc, j))  # (B, 3F*n*hc, J)
            parts.append(out.view(b, 3, f, n, hc * j))
            start += n * hc
        qkv = torch.cat(parts, dim=3).permute(1, 0, 3, 2, 4)  # (3, B, H, F, hc*J)
        return qkv[0], qkv[1], qkv[2]


class ConvProjectionAttention(nn.Module):
    """DMCA: q/k/v from a convolutional projection, softmax attention through the zoo core, a linear
    output projection. ``(B, L, D) -> (B, L, D)``."""

    def __init__(self, qkv: nn.Module, dim: int, attn_drop: float, proj_drop: float, backend: str) -> None:
        super().__init__()
        self.qkv = qkv
        self.proj = nn.Linear(dim, dim)
        self.attn_drop, self.proj_drop = attn_drop, nn.Dropout(proj_drop)
        self.backend = backend

    def forward(self, x: Tensor) -> Tensor:
        b, length, dim = x.shape
        q, k, v = self.qkv(x)  # (B, H, L, d) each
        out = attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0, backend=self.backend)  # (B, H, L, d)
        out = out.transpose(1, 2).reshape(b, length, dim)  # (B, L, D)
        return self.proj_drop(self.proj(out))


class ConvFormerBlock(nn.Module):
    """Pre-norm transformer block around a :class:`ConvProjectionAttention`."""

    def __init__(self, attn: ConvProjectionAttention, dim: int, mlp_ratio: float, drop: float, drop_path: float) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), attn
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))  # (B, L, D)
        return x + self.drop_path(self.mlp(self.norm2(x)))  # (B, L, D)


# ----------------------------------------------------------------------------------------- model


class ConvFormer(nn.Module):
    """Spatial ConvFormer over joints, temporal ConvFormer over frames, centre-frame 3-D regression."""

    def __init__(self, config: ConvFormerConfig) -> None:
        super().__init__()
        self.config = cfg = config
        c, j, f = cfg.embed_dim, cfg.num_joints, cfg.num_frames
        dim_t = c * j
        rates = torch.linspace(0, cfg.drop_path_rate, cfg.spatial_depth + cfg.temporal_depth).tolist()
        self.joint_embed = nn.Linear(cfg.in_dim, c)
        self.spatial_pos = nn.Parameter(torch.zeros(1, j, c))
        self.temporal_pos = nn.Parameter(torch.zeros(1, f, dim_t))
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.spatial_blocks = nn.ModuleList(
            ConvFormerBlock(
                ConvProjectionAttention(JointConvQKV(c, cfg.spatial_kernels), c, cfg.attn_drop_rate, cfg.drop_rate, cfg.attention_backend),
                c, cfg.mlp_ratio, cfg.drop_rate, rates[i],
            )
            for i in range(cfg.spatial_depth)
        )
        self.spatial_norm = nn.LayerNorm(c)
        self.temporal_blocks = nn.ModuleList(
            ConvFormerBlock(
                ConvProjectionAttention(
                    TemporalJointsProfileQKV(f, c, j, cfg.temporal_kernels), dim_t, cfg.attn_drop_rate, cfg.drop_rate,
                    cfg.attention_backend,
                ),
                dim_t, cfg.mlp_ratio, cfg.drop_rate, rates[cfg.spatial_depth + i],
            )
            for i in range(cfg.temporal_depth)
        )
        self.temporal_norm = nn.LayerNorm(dim_t)
        self.frame_weights = nn.Conv1d(f, 1, 1)  # learned weighted mean over frames
        self.head = nn.Sequential(nn.LayerNorm(dim_t), nn.Linear(dim_t, j * cfg.out_dim))
        trunc_normal_(self.spatial_pos, std=0.02)
        trunc_normal_(self.temporal_pos, std=0.02)
        self.apply(partial(init_weights_vit_timm, needs_reset=False))  # trunc-normal(0.02) linears, zero biases

    def no_weight_decay(self) -> set[str]:
        return {"spatial_pos", "temporal_pos"}

    def forward_features(self, keypoints: Tensor) -> Tensor:
        """``(B, F, J, in_dim) -> (B, F, C * J)`` temporal features (channel-major ``(C, J)``)."""
        cfg = self.config
        if keypoints.dim() != 4 or tuple(keypoints.shape[1:]) != (cfg.num_frames, cfg.num_joints, cfg.in_dim):
            raise ValueError(
                f"ConvFormer expects keypoints (B, {cfg.num_frames}, {cfg.num_joints}, {cfg.in_dim}), got {tuple(keypoints.shape)}"
            )
        b, f, j, _ = keypoints.shape
        x = self.joint_embed(keypoints.reshape(b * f, j, cfg.in_dim))  # (B*F, J, C)
        x = self.pos_drop(x + self.spatial_pos)
        for block in self.spatial_blocks:
            x = block(x)  # (B*F, J, C)
        x = self.spatial_norm(x)
        x = x.view(b, f, j, -1).transpose(2, 3).reshape(b, f, -1)  # (B, F, C*J), channel-major
        x = self.pos_drop(x + self.temporal_pos)
        for block in self.temporal_blocks:
            x = block(x)  # (B, F, C*J)
        return self.temporal_norm(x)

    def forward(self, keypoints: Tensor) -> Tensor:
        x = self.forward_features(keypoints)  # (B, F, C*J)
        x = self.frame_weights(x).squeeze(1)  # (B, C*J)
        return self.head(x).view(x.shape[0], self.config.num_joints, self.config.out_dim)  # (B, J, 3)


# ----------------------------------------------------------------------------------------- variants

CONVFORMER_CONFIGS: dict[str, ConvFormerConfig] = {
    f"convformer_{frames}": ConvFormerConfig(num_frames=frames) for frames in (27, 81, 243)
}
