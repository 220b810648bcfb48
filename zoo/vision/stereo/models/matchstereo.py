"""MatchStereo: a ConvFormer encoder and a MatchAttention decoder for stereo matching.

Paper: Yan et al., "MatchAttention: Matching the Relative Positions for High-Resolution Cross-View
Matching" (arXiv 2510.14260); official inference code TingmanYan/MatchAttention (GPLv3), read for the
architecture, the key names and the parameter counts only.

Network (``forward(left, right)``, images ``(B, 3, H, W)`` in [0, 1], ``H, W`` multiples of 32):

- **encoder**: a MetaFormer ConvFormer (Yu et al. 2022) on both views at once (batch ``2B``,
  left first): a two-conv stem to 1/4 (instance norm, GELU), then per stage a pre-normed stride-2
  conv (from the second stage on) and ``depth`` blocks ``x + SepConv(LN(x))``, ``x + MLP(LN(x))``
  (SepConv: pointwise x2, GELU, 3x3 depthwise, pointwise; LayerNorms without bias). Features are
  channels-last ``(2B, h, w, C)`` at 1/4, 1/8, 1/16, 1/32.
- **initial disparity at 1/32**: a row-wise all-pair correlation of the two views (``q . k / sqrt(C)``
  after a LayerNorm and two projections), softmaxed over disparity (out-of-view disparities score 0 and
  then copy the probability of the first in-view pixel); the disparity is the probability-weighted
  mean of the 5 disparities around the maximum of the 5-tap blurred volume (probabilities below
  uniform dropped). Both views get one: the left's flow is ``-d``, the right's ``+d``.
- **MatchDecoder**, coarse to fine (1/32, 1/16, 1/8, 1/4; ``refine_layers`` layers each, window radius
  ``radii``): every layer carries the current flow ``(x, y)`` (times a learned ``field_scale``) and one
  relative position per head as extra feature channels, then runs
  1. self-MatchAttention centred at each pixel's own position plus its relative position; its input is
     the normed features with the left-right-consistency mask appended (``noc``: 1 where
     ``|f_ref + warp(f_tgt)|_1 < 2`` at this scale, computed from the detached flow); the residual
     update rewrites the flow and relative-position channels;
  2. gated cross-MatchAttention: queries from this view, keys/values from the other, centred at
     ``own position + flow``; ``proj(cat(silu(g(x)) * out, weights))`` with the attention weights of
     every head concatenated; the flow is read back from its channels (``y`` forced to 0);
  3. a ConvGLU (TransNeXt) on the feature channels.
  Between scales a transposed conv merges the refined coarse features with the encoder's, and the
  flow and relative positions are convex-upsampled (x2, masks from the coarse features); the final
  flow is convex-upsampled x4 to full resolution.

Output (a dict, disparities positive in pixels, left image reference: ``x_right = x_left - d``):

- ``"disparity"`` ``(B, 1, H, W)``: the final, convex-upsampled left disparity;
- ``"disparities"``: in training mode every refinement step of the left view, coarse to fine, each
  ``(B, 1, H, W)``: the initial correlation disparity, then per decoder layer its self- and its
  cross-attention estimate (and the convex-upsampled one at each scale change), bilinearly upsampled
  (values times the scale factor), and last ``"disparity"``. In eval mode only ``["disparity"]``, so
  that full-resolution evaluation does not hold ~60 full-size maps;
- ``"occlusion"``: per decoder scale, ``(B, 1, H, W)`` occlusion probabilities of the left view from
  the left-right check of that scale's final flow, ``sigmoid(|f_left + warp(f_right)|_1 - 2)`` in that
  scale's pixels (``>= 0.5`` exactly where the official hard mask says occluded), bilinearly upsampled.
  Unlike the mask the network feeds itself, this one is not detached: a loss on it trains consistency.

What differs from the official code:

- inputs in [0, 1] (the official model takes [0, 255]; both normalize to [-1, 1]);
- the official encoder builds a 1000-class ``head`` and ``res_scale`` parameters in its last two stages
  that its forward never uses; they are not built here, and :func:`convert_official` names and drops
  them. The published counts (8.78 M / 25.2 M / 75.5 M) include those 163,176 / 324,200 / 518,888
  dead parameters; the parameters that compute are the same here, to the one;
- the official forward returns both views' final flow in eval mode and a copy of the left one in
  training; here the final upsampling runs on the left view only (that is all a disparity needs);
- the y-channel is zeroed out of place (``torch.cat``) instead of by an in-place write: same values,
  same gradients;
- MatchAttention is :func:`zoo.core_attention.match_attention` (reference gather, or the fused Triton
  kernel with a backward, which the official release lacks).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from timm.layers import DropPath, trunc_normal_
from torch import Tensor, nn

from zoo.core_attention import match_attention

__all__ = [
    "MATCHSTEREO_CONFIGS",
    "MatchStereo",
    "MatchStereoConfig",
    "OFFICIAL_UNUSED",
    "convert_official",
]

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ config
@dataclass(frozen=True)
class MatchStereoConfig:
    """One MatchStereo variant. Encoder lists go fine to coarse (1/4 ... 1/32), decoder lists coarse to
    fine (1/32 ... 1/4), as in the paper."""

    dims: tuple[int, ...] = (32, 64, 128, 160)  # encoder widths, 1/4 -> 1/32
    depths: tuple[int, ...] = (2, 2, 6, 2)  # ConvFormer blocks per stage
    encoder_mlp_ratio: float = 2.0
    radii: tuple[int, ...] = (2, 2, 1, 1)  # MatchAttention window radius, 1/32 -> 1/4
    refine_layers: tuple[int, ...] = (8, 8, 8, 2)  # decoder layers, 1/32 -> 1/4
    num_heads: tuple[int, ...] = (4, 4, 4, 4)  # decoder heads, 1/32 -> 1/4
    decoder_mlp_ratio: float = 2.0  # ConvGLU hidden = ratio * width
    drop_path_rate: float = 0.0  # stochastic depth over the decoder layers (0 -> rate)
    consistency_threshold: float = 2.0  # left-right check: |f_ref + warp(f_tgt)|_1 < this (pixels)
    attention_backend: str = "auto"  # runtime only: never saved (zoo.hub.config)

    def __post_init__(self) -> None:
        for name in ("dims", "depths", "radii", "refine_layers", "num_heads"):
            object.__setattr__(self, name, tuple(int(x) for x in getattr(self, name)))
        n = len(self.dims)
        lengths = {name: len(getattr(self, name)) for name in ("depths", "radii", "refine_layers", "num_heads")}
        if n < 2 or any(length != n for length in lengths.values()):
            raise ValueError(
                f"MatchStereoConfig: dims, depths, radii, refine_layers and num_heads need one entry per scale "
                f"(at least 2), got dims={n} and {lengths}"
            )
        widths = self.dims[::-1]
        bad = [(c, h) for c, h in zip(widths, self.num_heads) if h < 1 or c % h]
        if bad:
            raise ValueError(f"MatchStereoConfig: decoder width must be divisible by num_heads, got (width, heads) {bad}")
        if min(self.radii) < 0 or min(self.depths) < 1 or min(self.refine_layers) < 1 or min(self.dims) < 2:
            raise ValueError(
                "MatchStereoConfig: radii must be >= 0 and depths, refine_layers >= 1, dims >= 2; got "
                f"radii={self.radii}, depths={self.depths}, refine_layers={self.refine_layers}, dims={self.dims}"
            )

    @property
    def stride(self) -> int:
        """Input size multiple: the coarsest scale is 1/``stride``."""
        return 2 ** (len(self.dims) + 1)

    @property
    def min_size(self) -> int:
        """The smallest input side: every scale's map must hold its (2r + 2)^2 window."""
        return max((2 * r + 2) * self.stride // 2**i for i, r in enumerate(self.radii))


# ------------------------------------------------------------------------------------------------ helpers
def _norm(dim: int, eps: float) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=eps, bias=False)


def _pixel_grid(like: Tensor) -> Tensor:
    """``(1, h, w, 2)`` pixel coordinates ``(x, y)`` of a channels-last map ``(B, h, w, C)``."""
    h, w = like.shape[1], like.shape[2]
    ys, xs = torch.meshgrid(
        torch.arange(h, device=like.device, dtype=like.dtype),
        torch.arange(w, device=like.device, dtype=like.dtype),
        indexing="ij",
    )
    return torch.stack([xs, ys], dim=-1)[None]  # (1, h, w, 2)


def _swap_views(x: Tensor) -> Tensor:
    """``[left; right] -> [right; left]`` along the batch: each view's partner."""
    first, second = x.chunk(2, dim=0)
    return torch.cat([second, first], dim=0)


def _channels_first(x: Tensor) -> Tensor:
    return x.permute(0, 3, 1, 2)


def _channels_last(x: Tensor) -> Tensor:
    return x.permute(0, 2, 3, 1)


def lr_inconsistency(flow: Tensor) -> Tensor:
    """``|f_ref + f_tgt(p + f_ref(p))|_1`` per pixel of both views, ``(2B, h, w, 1)``.

    ``flow`` ``(2B, h, w, 2)`` is ``[left; right]``; the partner's flow is sampled bilinearly (zero
    outside the image) where this pixel's flow points. Matching flows cancel (opposite signs).
    """
    h, w = flow.shape[1], flow.shape[2]
    target = flow + _pixel_grid(flow)  # (2B, h, w, 2) where each pixel lands in the other view
    grid = torch.stack([2 * target[..., 0] / (w - 1) - 1, 2 * target[..., 1] / (h - 1) - 1], dim=-1)
    warped = F.grid_sample(_channels_first(_swap_views(flow)), grid, mode="bilinear", align_corners=True)
    return (flow + _channels_last(warped)).abs().sum(-1, keepdim=True)  # (2B, h, w, 1)


def convex_upsample(field: Tensor, mask: Tensor, factor: int) -> Tensor:
    """RAFT's convex upsampling: each fine pixel is a softmax-weighted mix of its coarse 3x3 neighbours.

    ``field (B, h, w, D)`` (values are scaled by ``factor``: they are pixel offsets), ``mask (B, 9 f^2,
    h, w)`` logits -> ``(B, f h, f w, D)``. The 3x3 neighbourhood is zero-padded at the border.
    """
    b, h, w, d = field.shape
    weights = mask.view(b, 1, 9, factor, factor, h, w).softmax(dim=2)  # (B, 1, 9, f, f, h, w)
    patches = F.unfold(_channels_first(field) * factor, kernel_size=3, padding=1)  # (B, D * 9, h * w)
    patches = patches.view(b, d, 9, 1, 1, h, w)
    fine = (weights * patches).sum(dim=2)  # (B, D, f, f, h, w)
    return fine.permute(0, 4, 2, 5, 3, 1).reshape(b, factor * h, factor * w, d)  # (B, f h, f w, D)


# ------------------------------------------------------------------------------------------------ encoder
class SepConv(nn.Module):
    """MobileNetV2's inverted separable convolution, the ConvFormer token mixer (channels-last)."""

    def __init__(self, dim: int, expansion: float = 2.0) -> None:
        super().__init__()
        hidden = int(expansion * dim)
        self.pwconv1 = nn.Linear(dim, hidden, bias=False)
        self.dwconv = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden, bias=False)
        self.pwconv2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:  # (B, h, w, C)
        x = F.gelu(self.pwconv1(x))  # (B, h, w, 2C)
        x = _channels_last(self.dwconv(_channels_first(x)))  # (B, h, w, 2C)
        return self.pwconv2(x)  # (B, h, w, C)


class ChannelMlp(nn.Module):
    """Two bias-free Linears with a GELU between (the MetaFormer channel MLP)."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, int(ratio * dim), bias=False)
        self.fc2 = nn.Linear(int(ratio * dim), dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ConvFormerBlock(nn.Module):
    """``x + SepConv(LN(x))``, ``x + MLP(LN(x))`` on ``(B, h, w, C)``."""

    def __init__(self, dim: int, mlp_ratio: float) -> None:
        super().__init__()
        self.token_mixer = SepConv(dim)
        self.norm1 = _norm(dim, 1e-6)
        self.norm2 = _norm(dim, 1e-6)
        self.mlp = ChannelMlp(dim, mlp_ratio)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.token_mixer(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Downsampling(nn.Module):
    """Pre-normed stride-2 3x3 conv between stages, channels-last in and out."""

    def __init__(self, dim_in: int, dim_out: int) -> None:
        super().__init__()
        self.pre_norm = _norm(dim_in, 1e-6)
        self.conv = nn.Conv2d(dim_in, dim_out, kernel_size=3, stride=2, padding=1)

    def forward(self, x: Tensor) -> Tensor:  # (B, h, w, C_in) -> (B, h/2, w/2, C_out)
        return _channels_last(self.conv(_channels_first(self.pre_norm(x))))


def _stem(dim: int) -> nn.Sequential:
    """Image -> 1/4: two stride-2 3x3 convs, each followed by an instance norm and a GELU."""
    return nn.Sequential(
        nn.Conv2d(3, dim // 2, kernel_size=3, stride=2, padding=1),
        nn.InstanceNorm2d(dim // 2),
        nn.GELU(),
        nn.Conv2d(dim // 2, dim, kernel_size=3, stride=2, padding=1),
        nn.InstanceNorm2d(dim),
        nn.GELU(),
    )


class ConvFormerEncoder(nn.Module):
    """ConvFormer feature pyramid: ``(B, 3, H, W)`` -> ``[(B, H/4, W/4, C0), ..., (B, H/32, W/32, C3)]``."""

    def __init__(self, dims: tuple[int, ...], depths: tuple[int, ...], mlp_ratio: float) -> None:
        super().__init__()
        self.downsample_layers = nn.ModuleList(
            [_stem(dims[0])] + [Downsampling(a, b) for a, b in zip(dims[:-1], dims[1:])]
        )
        self.stages = nn.ModuleList(
            nn.Sequential(*[ConvFormerBlock(dim, mlp_ratio) for _ in range(depth)]) for dim, depth in zip(dims, depths)
        )

    def forward(self, images: Tensor) -> list[Tensor]:
        features = []
        x = _channels_last(self.downsample_layers[0](images))  # (B, H/4, W/4, C0)
        for i, stage in enumerate(self.stages):
            if i > 0:
                x = self.downsample_layers[i](x)  # (B, h/2, w/2, C_i)
            x = stage(x)
            features.append(x)
        return features


# ------------------------------------------------------------------------------------------------ decoder
class RowCorrelation(nn.Module):
    """The initial disparity at the coarsest scale from an all-pair correlation along each row."""

    window = 5  # disparities averaged around the peak

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.norm = _norm(dim, 1e-5)
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.scale = dim**-0.5

    def forward(self, features: Tensor) -> Tensor:
        """``features (2B, h, w, C)`` of ``[left; right]`` -> flow ``(2B, h, w, 2)`` = ``(-d, 0)`` left,
        ``(+d, 0)`` right."""
        left, right = self.norm(features).chunk(2, dim=0)
        corr = self.q(left) @ self.k(right).transpose(-2, -1) * self.scale  # (B, h, w_left, w_right)
        w = corr.shape[-1]
        x = torch.arange(w, device=corr.device)
        disp = torch.arange(w, device=corr.device)[:, None]  # (D, 1), D = w candidate disparities
        # volume[d, x]: left x against right x - d; right x against left x + d; out of view scores 0
        in_left, in_right = x >= disp, x + disp < w  # (D, w)
        left_vol = corr.gather(-1, (x - disp).clamp(min=0).T.expand(*corr.shape[:2], w, w))  # (B, h, w, D)
        right_vol = corr.transpose(-2, -1).gather(-1, (x + disp).clamp(max=w - 1).T.expand(*corr.shape[:2], w, w))
        volume = torch.cat([
            torch.where(in_left.T, left_vol, 0.0), torch.where(in_right.T, right_vol, 0.0)
        ]).softmax(dim=-1)  # (2B, h, w, D)
        # out-of-view pixels take the probability of the nearest pixel that sees disparity d
        b, h = volume.shape[0] // 2, volume.shape[1]
        nearest = torch.cat([
            torch.maximum(x, disp).expand(b, h, w, w), torch.minimum(x, w - 1 - disp).expand(b, h, w, w)
        ])  # (2B, h, D, w): the pixel to read for (d, x)
        volume = volume.transpose(-2, -1).gather(-1, nearest).transpose(-2, -1)  # (2B, h, w, D)
        d = self.soft_argmax(volume)  # (2B, h, w)
        flow_x = torch.cat([-d[:b], d[b:]])  # (2B, h, w)
        return torch.stack([flow_x, torch.zeros_like(flow_x)], dim=-1)  # (2B, h, w, 2)

    def soft_argmax(self, volume: Tensor) -> Tensor:
        """The mean disparity of the ``window`` around the peak of the blurred volume ``(N, h, w, D)``,
        counting only probabilities above uniform."""
        n_disp, r = volume.shape[-1], self.window // 2
        blurred = F.avg_pool1d(volume.reshape(-1, 1, n_disp), self.window, stride=1, padding=r)
        peak = blurred.view_as(volume).max(dim=-1, keepdim=True).indices.clamp(r, n_disp - 1 - r)  # (N, h, w, 1)
        candidates = (peak + torch.arange(-r, r + 1, device=volume.device)).clamp(0, n_disp - 1)  # (N, h, w, k)
        probs = volume.gather(-1, candidates)
        probs = torch.where(probs < 1.0 / n_disp, 0.0, probs)
        total = probs.sum(-1, keepdim=True).clamp(min=torch.finfo(probs.dtype).tiny)
        return (probs / total * candidates.to(probs.dtype)).sum(-1)  # (N, h, w)


class MatchAttention(nn.Module):
    """Multi-head MatchAttention on channels-last maps, self (within a view) or gated cross (between views).

    ``cross=False``: ``extra`` input channels (the consistency mask) join q/k/v's input. ``cross=True``:
    keys and values come from the partner view, and the output projection reads
    ``cat(silu(g(x)) * out, weights)`` with every head's ``(2r + 2)^2`` weights.
    """

    def __init__(
        self, dim: int, heads: int, head_dim: int, radius: int, *, cross: bool, extra: int = 0, backend: str = "auto"
    ) -> None:
        super().__init__()
        self.heads, self.radius, self.cross, self.backend = heads, radius, cross, backend
        inner = heads * head_dim
        self.q = nn.Linear(dim + extra, inner, bias=False)
        self.k = nn.Linear(dim + extra, inner, bias=False)
        self.v = nn.Linear(dim + extra, inner, bias=False)
        if cross:
            self.g = nn.Sequential(nn.Linear(dim, inner, bias=False), nn.SiLU())
            self.proj = nn.Linear(inner + heads * (2 * radius + 2) ** 2, dim, bias=False)
        else:
            self.proj = nn.Linear(inner, dim, bias=False)

    def _heads(self, t: Tensor) -> Tensor:  # (B, h, w, H * d) -> (B, H, h, w, d)
        b, h, w, _ = t.shape
        return t.view(b, h, w, self.heads, -1).permute(0, 3, 1, 2, 4)

    def forward(self, x: Tensor, centers: Tensor) -> Tensor:
        """``x (2B, h, w, C [+ extra])``, ``centers (2B, h, w, H, 2)`` absolute -> ``(2B, h, w, C)``."""
        keys = _swap_views(x) if self.cross else x
        q, k, v = self._heads(self.q(x)), self._heads(self.k(keys)), self._heads(self.v(keys))  # (2B, H, h, w, d)
        out, weights = match_attention(
            q, k, v, centers.permute(0, 3, 1, 2, 4), self.radius, backend=self.backend, return_weights=True
        )  # (2B, H, h, w, d), (2B, H, h, w, S^2)
        b, _, h, w, _ = out.shape
        out = out.permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)  # (2B, h, w, H * d), head-major
        if self.cross:
            weights = weights.permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)  # (2B, h, w, H * S^2)
            out = torch.cat([self.g(x) * out, weights], dim=-1)
        return self.proj(out)


class ConvGLU(nn.Module):
    """TransNeXt's convolutional GLU: ``fc2(gelu(dwconv3x3(a)) * b)`` with ``a, b = fc1(x)``."""

    def __init__(self, dim: int, ratio: float) -> None:
        super().__init__()
        hidden = int(ratio * dim)
        self.fc1 = nn.Linear(dim, 2 * hidden)
        self.dwconv = nn.Conv2d(hidden, hidden, kernel_size=3, padding=1, groups=hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:  # (B, h, w, C)
        a, b = self.fc1(x).chunk(2, dim=-1)  # (B, h, w, hidden) each
        return self.fc2(F.gelu(_channels_last(self.dwconv(_channels_first(a)))) * b)


class MatchLayer(nn.Module):
    """One decoder layer: self-MatchAttention -> gated cross-MatchAttention -> ConvGLU.

    The flow (2 channels, times ``field_scale``) and one relative position per head (``2H`` channels)
    ride along as feature channels, so each residual update refines them too.
    """

    def __init__(self, dim: int, heads: int, radius: int, mlp_ratio: float, drop_path: float,
                 threshold: float, backend: str) -> None:
        super().__init__()
        self.heads, self.threshold = heads, threshold
        head_dim = dim // heads
        self.match_attention_self = MatchAttention(
            dim + 2 + 2 * heads, heads, head_dim, radius, cross=False, extra=1, backend=backend
        )
        self.norm0 = _norm(dim + 2 + 2 * heads, 1e-5)
        self.match_attention_cross = MatchAttention(dim + 2, heads, head_dim, radius, cross=True, backend=backend)
        self.norm1 = _norm(dim + 2, 1e-5)
        self.mlp = ConvGLU(dim, mlp_ratio)
        self.norm2 = _norm(dim, 1e-5)
        self.field_scale = nn.Parameter(torch.full((1, 1, 1, 2), 0.1))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _read_flow(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Zero the flow's y channel (stereo) and read the flow back: ``(x, flow (2B, h, w, 2))``."""
        x = torch.cat([x[..., :-1], torch.zeros_like(x[..., -1:])], dim=-1)
        return x, x[..., -2:] / self.field_scale.to(x.dtype)

    def forward(self, x: Tensor, rpos: Tensor, flow: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``x (2B, h, w, C)``, ``rpos (2B, h, w, 2H)``, ``flow (2B, h, w, 2)`` -> updated ``x, rpos, flow``
        and the flow after self-attention."""
        b, h, w, _ = x.shape
        consistent = (lr_inconsistency(flow.detach()) < self.threshold).to(x.dtype)  # (2B, h, w, 1)
        grid = _pixel_grid(x)[..., None, :]  # (1, h, w, 1, 2)
        x = torch.cat([x, flow * self.field_scale.to(x.dtype), rpos], dim=-1)  # (2B, h, w, C + 2 + 2H)
        centers = rpos.view(b, h, w, self.heads, 2) + grid  # (2B, h, w, H, 2)
        x = x + self.drop_path(self.match_attention_self(torch.cat([self.norm0(x), consistent], -1), centers))
        x, rpos = x[..., : -2 * self.heads], x[..., -2 * self.heads :]  # (2B, h, w, C + 2), (2B, h, w, 2H)
        x, flow_self = self._read_flow(x)

        centers = flow_self[..., None, :] + grid  # (2B, h, w, H, 2): every head at the current match
        x = x + self.drop_path(self.match_attention_cross(self.norm1(x), centers.expand(-1, -1, -1, self.heads, -1)))
        x, flow = self._read_flow(x)
        x = x[..., :-2]  # (2B, h, w, C)
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        return x, rpos, flow, flow_self


class MatchBlock(nn.Module):
    """The decoder layers of one scale."""

    def __init__(self, dim: int, heads: int, radius: int, num_layers: int, mlp_ratio: float,
                 drop_paths: list[float], threshold: float, backend: str) -> None:
        super().__init__()
        self.heads = heads
        self.layers = nn.ModuleList(
            MatchLayer(dim, heads, radius, mlp_ratio, dp, threshold, backend) for dp in drop_paths[:num_layers]
        )

    def forward(self, x: Tensor, rpos: Tensor, flow: Tensor) -> tuple[Tensor, Tensor, Tensor, list[Tensor]]:
        """``rpos (2B, h, w, 2)`` is shared by the heads on entry and their mean on exit; also returns
        every intermediate flow (self, cross per layer)."""
        b, h, w, _ = x.shape
        rpos = rpos.repeat(1, 1, 1, self.heads)  # (2B, h, w, 2H)
        steps = []
        for layer in self.layers:
            x, rpos, flow, flow_self = layer(x, rpos, flow)
            steps += [flow_self, flow]
        return x, rpos.view(b, h, w, self.heads, 2).mean(dim=-2), flow, steps


class UpConv(nn.Module):
    """Merge the refined coarse features (transposed conv x2) with the encoder's finer ones."""

    def __init__(self, dim_coarse: int, dim_fine: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(dim_coarse, dim_fine, kernel_size=2, stride=2)
        self.conv = nn.Sequential(
            nn.Conv2d(2 * dim_fine, dim_fine, kernel_size=1),
            nn.ReLU(),
            nn.Conv2d(dim_fine, dim_fine, kernel_size=3, padding=1),
        )

    def forward(self, coarse: Tensor, fine: Tensor) -> Tensor:  # channels-last in and out
        x = torch.cat([_channels_first(fine), self.up(_channels_first(coarse))], dim=1)  # (B, 2C, h, w)
        return _channels_last(self.conv(x))


def _mask_head(dim: int, hidden: int, factor: int) -> nn.Sequential:
    """Convex-upsampling mask logits ``(B, 9 f^2, h, w)`` from channels-first features."""
    return nn.Sequential(
        nn.Conv2d(dim, hidden, kernel_size=3, padding=1), nn.ReLU(), nn.Conv2d(hidden, 9 * factor**2, kernel_size=1)
    )


# ------------------------------------------------------------------------------------------------ model
class MatchStereo(nn.Module):
    """MatchStereo: ``model(left, right) -> {"disparity", "disparities", "occlusion"}`` (see the module doc)."""

    def __init__(self, config: MatchStereoConfig) -> None:
        super().__init__()
        self.config = cfg = config
        self.encoder = ConvFormerEncoder(cfg.dims, cfg.depths, cfg.encoder_mlp_ratio)
        widths = cfg.dims[::-1]  # decoder order: coarse to fine
        self.up_decoders = nn.ModuleList(
            [nn.Identity()] + [UpConv(a, b) for a, b in zip(widths[:-1], widths[1:])]
        )
        self.up_masks = nn.ModuleList(
            [nn.Identity()]
            + [_mask_head(c, c, 2) for c in widths[:-1]]
            + [_mask_head(widths[-1], 2 * widths[-1], 4)]  # the last one: 1/4 -> full resolution
        )
        n = sum(cfg.refine_layers)
        rates = [cfg.drop_path_rate * i / max(n - 1, 1) for i in range(n)]  # linear 0 -> rate (meta-safe)
        starts = [sum(cfg.refine_layers[:i]) for i in range(len(widths))]
        self.match_attentions = nn.ModuleList(
            MatchBlock(c, heads, r, n, cfg.decoder_mlp_ratio, rates[s : s + n], cfg.consistency_threshold,
                       cfg.attention_backend)
            for c, heads, r, n, s in zip(widths, cfg.num_heads, cfg.radii, cfg.refine_layers, starts)
        )
        self.init_correlation_volume = RowCorrelation(widths[0])
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)

    def _check_input(self, left: Tensor, right: Tensor) -> None:
        cfg = self.config
        if left.dim() != 4 or left.shape[1] != 3 or left.shape != right.shape:
            raise ValueError(
                f"MatchStereo: left and right must be (B, 3, H, W) of one shape, got {tuple(left.shape)} and "
                f"{tuple(right.shape)}"
            )
        h, w = left.shape[-2:]
        if h % cfg.stride or w % cfg.stride or min(h, w) < cfg.min_size:
            raise ValueError(
                f"MatchStereo: image size {h} x {w} must be a multiple of {cfg.stride} and at least {cfg.min_size} "
                f"(the window at each scale must fit; pad the images, e.g. with replicate padding)"
            )

    def forward(self, left: Tensor, right: Tensor) -> dict[str, Tensor | list[Tensor]]:
        """``left, right (B, 3, H, W)`` in [0, 1] -> the output dict of the module docstring."""
        self._check_input(left, right)
        b, full_h = left.shape[0], left.shape[-2]
        features = self.encoder(torch.cat([left, right], dim=0) * 2 - 1)[::-1]  # coarse to fine, (2B, h, w, C)

        flow = self.init_correlation_volume(features[0])  # (2B, h, w, 2)
        rpos = torch.zeros_like(flow)  # (2B, h, w, 2) self relative positions, shared by the heads
        steps = [flow]
        occlusion = []
        x = features[0]
        for i, block in enumerate(self.match_attentions):
            if i > 0:
                mask = self.up_masks[i](_channels_first(x))  # (2B, 36, h, w) from the refined coarse features
                rpos, flow = convex_upsample(rpos, mask, 2), convex_upsample(flow, mask, 2)
                x = self.up_decoders[i](x, features[i])
                steps.append(flow)
            x, rpos, flow, layer_steps = block(x, rpos, flow)
            steps += layer_steps
            occlusion.append(torch.sigmoid(lr_inconsistency(flow)[:b] - self.config.consistency_threshold))

        final = convex_upsample(flow[:b], self.up_masks[-1](_channels_first(x[:b])), 4)  # (B, H, W, 2)
        disparity = -_channels_first(final[..., :1])  # (B, 1, H, W)

        def full(t: Tensor) -> Tensor:  # (B, h, w, C) at 1/f -> (B, C, H, W)
            return F.interpolate(_channels_first(t), size=tuple(left.shape[-2:]), mode="bilinear", align_corners=False)

        if self.training:
            disparities = [-full(s[:b, ..., :1]) * (full_h / s.shape[1]) for s in steps] + [disparity]
        else:
            disparities = [disparity]
        return {"disparity": disparity, "disparities": disparities, "occlusion": [full(o) for o in occlusion]}


# ------------------------------------------------------------------------------------------------ variants
MATCHSTEREO_CONFIGS: dict[str, MatchStereoConfig] = {
    "matchstereo_t": MatchStereoConfig(dims=(32, 64, 128, 160)),
    "matchstereo_s": MatchStereoConfig(dims=(64, 128, 160, 320)),
    "matchstereo_b": MatchStereoConfig(dims=(128, 256, 320, 512)),
    # CPU-sized, every code path of the real model (configs/vision/stereo/matchstereo_demo.yaml); inputs >= 128 px
    "matchstereo_demo": MatchStereoConfig(
        dims=(16, 24, 32, 48), depths=(1, 1, 2, 1), radii=(1, 1, 1, 1), refine_layers=(2, 2, 2, 1)
    ),
}


# ------------------------------------------------------------------------------------------------ official weights
#: Keys of the official checkpoints that its forward never reads: the ConvFormer's ImageNet head, and the
#: ``res_scale`` of MetaFormer blocks (built for the last two stages, never applied). Dropped by name.
OFFICIAL_UNUSED = (
    re.compile(r"encoder\.head\.(weight|bias)"),
    re.compile(r"encoder\.stages\.\d+\.\d+\.res_scale[12]\.scale"),
)


def convert_official(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """An official MatchStereo checkpoint (``torch.load(path)["model"]``, 646 keys for T/S/B) -> ours.

    Key names are the official ones. The only change is dropping the :data:`OFFICIAL_UNUSED` keys
    (``encoder.head.{weight,bias}`` and the 16 ``encoder.stages.{2,3}.*.res_scale{1,2}.scale``), which are
    listed in the log (INFO) as they are dropped; everything else goes unchanged to the hub's strict
    filter, so a missing, extra or mis-shaped key is an error listing every difference. The variant is
    not guessed: ``load_official("matchstereo_s", ...)`` with a T checkpoint reports the shape mismatches.
    """
    dropped = sorted(k for k in state_dict if any(p.fullmatch(k) for p in OFFICIAL_UNUSED))
    if dropped:
        log.info("MatchStereo official checkpoint: dropping %d keys the official forward never uses: %s",
                 len(dropped), ", ".join(dropped))
    # the encoder stages are nn.Sequential here, ModuleList there: same indices, so the same names
    return {k: v for k, v in state_dict.items() if k not in set(dropped)}
