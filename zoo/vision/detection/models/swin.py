"""Swin Transformer V2 (Liu et al. 2022, arXiv 2111.09883) as Plain-DETR's official code builds it.

Plain-DETR (Lin et al. 2023) keeps SwinV2's blocks (cosine attention with a learned per-head logit scale,
the continuous position bias ``16 sigmoid(MLP(log-spaced offsets))``, residual post-norm) but builds the
detection variant, which is not timm's ``SwinTransformerV2``:

* any input size: the patch embedding pads to a multiple of the patch size, patch merging pads odd maps,
  and every windowed block pads the map to a multiple of the window *before* the cyclic shift; the
  padded (zero) tokens take part in the attention unmasked, as in the official code;
* the window is never shrunk to the map and the shift mask is built on the padded map (``-100`` between
  regions, as Swin's);
* blocks listed in ``global_blocks`` attend over the whole map, with the position bias computed for the
  map's own size (the released configs make both stage-4 blocks global);
* LayerNorm eps ``1e-6`` everywhere, and only the stages in ``out_indices`` get an output norm
  (``norm3`` for Plain-DETR, which reads only the stride-32 map);
* q and k are normalized as ``x / (||x|| + 5e-5)`` (not ``F.normalize``) and the logit scale is clamped
  at ``log(100)``.

The official code computes its LayerNorms and the bias MLP's last layer in float32 whatever the input;
here everything runs in the module's dtype, so ``.double()`` is float64 throughout.

Attention goes through :func:`zoo.core_attention.attention` with :class:`ContinuousPositionBias`, a
position term that owns the bias MLP (``cpb_mlp``, the official name) and adds the shift mask.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp
from torch import Tensor, nn

from zoo.core_attention import attention
from zoo.core_attention.positions.base import PositionContext, PositionTerm

__all__ = ["ContinuousPositionBias", "SwinTransformerV2", "window_partition", "window_reverse"]

_EPS = 1e-6  # the official code's LayerNorm eps


def _norm(dim: int) -> nn.LayerNorm:
    return nn.LayerNorm(dim, eps=_EPS)


def window_partition(x: Tensor, window: int) -> Tensor:
    """``(B, H, W, C)`` with ``H, W`` multiples of ``window`` -> ``(B * nW, window * window, C)``."""
    b, h, w, c = x.shape
    x = x.view(b, h // window, window, w // window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, window * window, c)


def window_reverse(windows: Tensor, window: int, h: int, w: int) -> Tensor:
    """Inverse of :func:`window_partition`: ``(B * nW, window * window, C)`` -> ``(B, H, W, C)``."""
    c = windows.shape[-1]
    x = windows.view(-1, h // window, w // window, window, window, c)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


class ContinuousPositionBias(PositionTerm):
    """SwinV2's log-spaced continuous position bias over a ``(Gh, Gw)`` grid of tokens.

    Offsets ``(dy, dx)`` between grid cells are divided by ``pretrained - 1`` (or ``G - 1`` without a
    pretrained size), scaled to ``[-8, 8]``, mapped by ``sign(t) log2(|t| + 1) / 3`` and fed to a
    2 -> 512 -> heads MLP; the bias is ``16 sigmoid(MLP)``. Context: ``grid (Gh, Gw)`` (ints) and an
    optional ``shift_mask (nW, L, L)`` float, added per window (the batch is ``B * nW`` windows).
    """

    required_context = ("grid",)
    optional_context = ("shift_mask",)

    def __init__(self, num_heads: int, pretrained_window: int = 0, hidden: int = 512) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.pretrained_window = pretrained_window
        self.cpb_mlp = nn.Sequential(nn.Linear(2, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_heads, bias=False))

    def extra_repr(self) -> str:
        return f"num_heads={self.num_heads}, pretrained_window={self.pretrained_window}"

    def table(self, gh: int, gw: int) -> Tensor:
        """``(2Gh-1, 2Gw-1, heads)`` bias for every offset, before the index lookup."""
        weight = self.cpb_mlp[0].weight
        dy = torch.arange(1 - gh, gh, device=weight.device, dtype=weight.dtype)
        dx = torch.arange(1 - gw, gw, device=weight.device, dtype=weight.dtype)
        den_y, den_x = (self.pretrained_window - 1,) * 2 if self.pretrained_window > 0 else (gh - 1, gw - 1)
        coords = torch.stack(torch.meshgrid(dy / den_y, dx / den_x, indexing="ij"), dim=-1) * 8  # (2Gh-1, 2Gw-1, 2)
        coords = torch.sign(coords) * torch.log2(coords.abs() + 1.0) / math.log2(8)
        return self.cpb_mlp(coords)

    def bias(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> Tensor:
        gh, gw = ctx.get("grid")
        if q.shape[-2] != gh * gw or k.shape[-2] != gh * gw:
            raise ValueError(f"ContinuousPositionBias: grid {gh}x{gw} does not match {q.shape[-2]} tokens")
        yy, xx = torch.meshgrid(torch.arange(gh, device=q.device), torch.arange(gw, device=q.device), indexing="ij")
        yy, xx = yy.flatten(), xx.flatten()  # (L,)
        index = (yy[:, None] - yy[None] + gh - 1) * (2 * gw - 1) + (xx[:, None] - xx[None] + gw - 1)  # (L, L)
        table = self.table(gh, gw).flatten(0, 1)  # ((2Gh-1)(2Gw-1), heads)
        bias = 16 * torch.sigmoid(table[index].permute(2, 0, 1))  # (heads, L, L)
        shift = ctx.extras.get("shift_mask")
        if shift is None:
            return bias[None].to(q.dtype)  # (1, heads, L, L)
        nw = shift.shape[0]
        full = bias[None, None] + shift[None, :, None]  # (1, nW, heads, L, L)
        return full.expand(q.shape[0] // nw, -1, -1, -1, -1).flatten(0, 1).to(q.dtype)  # (B * nW, heads, L, L)


class CosineAttention(nn.Module):
    """SwinV2 attention over windows or the whole map. Parameter names are the official ones."""

    def __init__(self, dim: int, num_heads: int, pretrained_window: int, backend: str = "auto") -> None:
        super().__init__()
        self.num_heads = num_heads
        self.backend = backend
        self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(num_heads, 1, 1)))
        self.rel_pos = ContinuousPositionBias(num_heads, pretrained_window)
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, grid: tuple[int, int], shift_mask: Tensor | None = None) -> Tensor:
        """``x (B', L, C)`` tokens of ``B'`` grids of ``grid = (Gh, Gw)`` cells -> ``(B', L, C)``."""
        b, n, c = x.shape
        qkv_bias = torch.cat([self.q_bias, torch.zeros_like(self.v_bias), self.v_bias])
        qkv = F.linear(x, self.qkv.weight, qkv_bias).view(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B', H, L, Dh) each
        q = q / (q.norm(dim=-1, keepdim=True) + 5e-5)
        k = k / (k.norm(dim=-1, keepdim=True) + 5e-5)
        logit_scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp()  # (H, 1, 1)
        context = {"grid": grid} if shift_mask is None else {"grid": grid, "shift_mask": shift_mask}
        out = attention(q * logit_scale, k, v, position=self.rel_pos.bind(**context), scale=1.0,
                        backend=self.backend)  # (B', H, L, Dh)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class SwinV2Block(nn.Module):
    """Residual post-norm block; windowed (with optional cyclic shift) or global."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int, is_global: bool, pretrained_window: int,
                 mlp_ratio: float, drop_path: float, backend: str) -> None:
        super().__init__()
        self.window, self.shift, self.is_global = window, shift, is_global
        self.attn = CosineAttention(dim, num_heads, pretrained_window, backend)
        self.norm1 = _norm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.norm2 = _norm(dim)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def _windowed(self, x: Tensor, shift_mask: Tensor) -> Tensor:
        b, h, w, c = x.shape
        ws = self.window
        x = F.pad(x, (0, 0, 0, (ws - w % ws) % ws, 0, (ws - h % ws) % ws))  # (B, Hp, Wp, C): pad, then shift
        hp, wp = x.shape[1:3]
        if self.shift:
            x = torch.roll(x, shifts=(-self.shift, -self.shift), dims=(1, 2))
        out = self.attn(window_partition(x, ws), (ws, ws), shift_mask if self.shift else None)  # (B nW, ws^2, C)
        x = window_reverse(out, ws, hp, wp)  # (B, Hp, Wp, C)
        if self.shift:
            x = torch.roll(x, shifts=(self.shift, self.shift), dims=(1, 2))
        return x[:, :h, :w]

    def forward(self, x: Tensor, shift_mask: Tensor) -> Tensor:
        """``x (B, H, W, C)`` -> ``(B, H, W, C)``."""
        b, h, w, c = x.shape
        if self.is_global:
            y = self.attn(x.reshape(b, h * w, c), (h, w)).view(b, h, w, c)
        else:
            y = self._windowed(x, shift_mask)
        x = x + self.drop_path(self.norm1(y))
        return x + self.drop_path(self.norm2(self.mlp(x)))


class PatchMerging(nn.Module):
    """2x2 merge (odd maps padded), then SwinV2's reduction-before-norm."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = _norm(2 * dim)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[1:3]
        x = F.pad(x, (0, 0, 0, w % 2, 0, h % 2))  # (B, H', W', C) even
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], dim=-1)
        return self.norm(self.reduction(x))  # (B, H'/2, W'/2, 2C)


def shift_mask(hp: int, wp: int, window: int, shift: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(nW, ws^2, ws^2)``: 0 inside one region of the shifted padded map, -100 across regions."""
    img = torch.zeros(hp, wp, device=device, dtype=dtype)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, hs in enumerate(bounds):
        for j, wsl in enumerate(bounds):
            img[hs, wsl] = 3 * i + j
    regions = window_partition(img[None, :, :, None], window)[..., 0]  # (nW, ws^2)
    diff = regions[:, None, :] - regions[:, :, None]  # (nW, ws^2, ws^2)
    return torch.where(diff != 0, torch.full_like(diff, -100.0), torch.zeros_like(diff))


class SwinStage(nn.Module):
    def __init__(self, dim: int, depth: int, num_heads: int, window: int, pretrained_window: int,
                 global_blocks: Sequence[int], mlp_ratio: float, drop_paths: Sequence[float], downsample: bool,
                 backend: str) -> None:
        super().__init__()
        self.window = window
        self.blocks = nn.ModuleList(
            SwinV2Block(dim, num_heads, window, 0 if i % 2 == 0 else window // 2, i in global_blocks,
                        pretrained_window, mlp_ratio, drop_paths[i], backend)
            for i in range(depth)
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x (B, H, W, C)`` -> the stage output ``(B, H, W, C)`` and the next stage's input."""
        h, w = x.shape[1:3]
        ws = self.window
        mask = shift_mask(math.ceil(h / ws) * ws, math.ceil(w / ws) * ws, ws, ws // 2, x.device, x.dtype)
        for block in self.blocks:
            x = block(x, mask)
        return x, (self.downsample(x) if self.downsample is not None else x)


class PatchEmbed(nn.Module):
    def __init__(self, patch: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)
        self.norm = _norm(dim)

    def forward(self, x: Tensor) -> Tensor:
        h, w = x.shape[-2:]
        x = F.pad(x, (0, (-w) % self.patch, 0, (-h) % self.patch))  # (B, 3, H', W') multiples of the patch
        return self.norm(self.proj(x).permute(0, 2, 3, 1))  # (B, H/4, W/4, C)


class SwinTransformerV2(nn.Module):
    """The backbone: ``(B, 3, H, W)`` -> ``{stage index: (B, C_i, H_i, W_i)}`` for ``out_indices``.

    Module names follow the official ``SwinTransformerV2`` (``patch_embed``, ``layers.{i}.blocks.{j}``,
    ``layers.{i}.downsample``, ``norm{i}``); the only renames are ``attn.cpb_mlp`` ->
    ``attn.rel_pos.cpb_mlp`` and the official persistent buffers ``relative_coords_table`` /
    ``relative_position_index``, which are recomputed here.
    """

    def __init__(
        self,
        embed_dim: int = 96,
        depths: Sequence[int] = (2, 2, 18, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 16,
        pretrained_window_sizes: Sequence[int] = (16, 16, 16, 8),
        global_blocks: Sequence[Sequence[int]] = ((), (), (), (0, 1)),
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        patch_size: int = 4,
        out_indices: Sequence[int] = (3,),
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if not (len(depths) == len(num_heads) == len(pretrained_window_sizes) == len(global_blocks)):
            raise ValueError(
                f"depths {tuple(depths)}, num_heads {tuple(num_heads)}, pretrained_window_sizes "
                f"{tuple(pretrained_window_sizes)} and global_blocks {tuple(global_blocks)} must have one entry per stage"
            )
        self.out_indices = tuple(out_indices)
        self.num_features = [embed_dim * 2**i for i in range(len(depths))]
        self.patch_embed = PatchEmbed(patch_size, 3, embed_dim)
        total = sum(depths)
        dpr = [drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linspace(0, rate, total)
        self.layers = nn.ModuleList()
        for i, depth in enumerate(depths):
            start = sum(depths[:i])
            self.layers.append(SwinStage(
                self.num_features[i], depth, num_heads[i], window_size, pretrained_window_sizes[i], global_blocks[i],
                mlp_ratio, dpr[start : start + depth], downsample=i < len(depths) - 1, backend=backend,
            ))
        for i in self.out_indices:
            self.add_module(f"norm{i}", _norm(self.num_features[i]))
        self.apply(_init_weights)
        for stage in self.layers:  # the official res-post-norm init: every block starts as the identity
            for block in stage.blocks:
                for norm in (block.norm1, block.norm2):
                    nn.init.zeros_(norm.weight)
                    nn.init.zeros_(norm.bias)

    def forward(self, x: Tensor) -> dict[int, Tensor]:
        x = self.patch_embed(x)  # (B, H/4, W/4, C)
        outs: dict[int, Tensor] = {}
        for i, stage in enumerate(self.layers):
            out, x = stage(x)
            if i in self.out_indices:
                outs[i] = getattr(self, f"norm{i}")(out).permute(0, 3, 1, 2)  # (B, C_i, H_i, W_i)
        return outs


def _init_weights(m: nn.Module, init: Callable[[Tensor], object] = lambda w: nn.init.trunc_normal_(w, std=0.02)) -> None:
    if isinstance(m, nn.Linear):
        init(m.weight)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
