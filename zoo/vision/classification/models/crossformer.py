"""CrossFormer and CrossFormer++: vision transformers built on cross-scale attention.

Papers: Wang et al., "CrossFormer: A Versatile Vision Transformer Hinging on Cross-scale Attention"
(ICLR 2022, arXiv 2108.00154) and "CrossFormer++: ..." (TPAMI, arXiv 2303.06908).

- **Cross-scale embedding** (CEL): every stage starts with several convolutions of different kernel
  sizes but one stride, concatenated along channels (stage 1: kernels 4/8/16/32, stride 4; later
  stages: kernels 2/4, stride 2). Smaller kernels get more channels.
- **Long/short distance attention**: blocks alternate SDA (attention inside adjacent ``G x G``
  groups) and LDA (attention among tokens sampled with interval ``I``). When the feature map is not
  a multiple of ``G`` (SDA) or ``G * I`` (LDA) it is zero-padded at the bottom/right and the padded
  keys are masked out, so any input resolution works. A map no larger than the group uses one
  SDA group the size of the map (as the official code does for the last stage).
- **Dynamic position bias** (DPB): an MLP of the offset ``(dy, dx)`` gives the per-head bias
  (:class:`zoo.core_attention.positions.DynamicPositionBias`); attention itself goes through
  :func:`zoo.core_attention.attention`.
- **CrossFormer++** changes the group sizes per stage (progressive group size, ``G = 4, 4, 14, 7``,
  ``I = 4, 2, 1, 1``) and adds the *amplitude cooling layer* (ACL): after every third block of a
  stage (except the last block) a depth-wise 3x3 convolution and a LayerNorm.

State-dict keys are the official ones (``patch_embed.projs.{k}``, ``layers.{s}.blocks.{b}.attn.pos.
pos_proj``, ``...attn.qkv``, ``...mlp.fc1``, ``...ex_conv``, ``layers.{s}.downsample.reductions.{k}``,
``norm``, ``head``), so official checkpoints load through :func:`checkpoint_filter_fn`.

Differences from the official code: the map size is read per call (the official classifier fixes it
at construction), padding and masking are applied in every stage (the official classification code
of CrossFormer v1 requires divisible maps), and a group whose keys are all padding attends to all of
its keys (the official ``-1e6`` additive mask does the same thing implicitly); such groups only
produce padding outputs, which are discarded.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, trunc_normal_
from torch import Tensor, nn

from zoo.core_attention import attention
from zoo.core_attention.positions import DynamicPositionBias

from ._timm import register_timm_family, timm_filter

__all__ = [
    "CrossFormer",
    "CrossFormerConfig",
    "CROSSFORMER_CONFIGS",
    "checkpoint_filter_fn",
    "convert_official",
    "create_crossformer",
]


# ----------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class CrossFormerConfig:
    """One CrossFormer / CrossFormer++ variant. Field names follow the official ``MODEL.CROS`` keys."""

    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 6, 2)
    num_heads: tuple[int, ...] = (3, 6, 12, 24)
    group_size: tuple[int, ...] = (7, 7, 7, 7)
    interval: tuple[int, ...] = (8, 4, 2, 1)
    patch_size: tuple[int, ...] = (4, 8, 16, 32)  # stage-1 cross-scale kernels; stride = the first
    merge_size: tuple[tuple[int, ...], ...] = ((2, 4), (2, 4), (2, 4))  # later stages' kernels, stride 2
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    use_acl: bool = False  # CrossFormer++ amplitude cooling layers
    dpb_residual: bool = False
    num_classes: int = 1000
    in_chans: int = 3
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    attention_backend: str = "auto"

    def __post_init__(self) -> None:
        n = len(self.depths)
        for name in ("num_heads", "group_size", "interval"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"CrossFormerConfig.{name} needs {n} entries (one per stage), got {getattr(self, name)}")
        if len(self.merge_size) != n - 1:
            raise ValueError(f"CrossFormerConfig.merge_size needs {n - 1} entries, got {self.merge_size}")
        for s in range(n):
            dim = self.embed_dim * 2**s
            if dim % self.num_heads[s]:
                raise ValueError(f"stage {s}: width {dim} is not divisible by num_heads {self.num_heads[s]}")
            if dim // 16 < 1:
                raise ValueError(f"embed_dim {self.embed_dim} too small: the position MLP width is dim // 16")
        if min(self.group_size) < 1 or min(self.interval) < 1:
            raise ValueError(f"group_size and interval must be >= 1, got {self.group_size}, {self.interval}")


# ----------------------------------------------------------------------------------------- blocks


def _split_dims(total: int, kernels: tuple[int, ...]) -> list[int]:
    """Channels per kernel: halves for all but the last kernel, which takes the remainder (official)."""
    n = len(kernels)
    return [total // 2 ** (i + 1) if i < n - 1 else total // 2**i for i in range(n)]


class PatchEmbed(nn.Module):
    """Stage-1 cross-scale embedding: convolutions with kernels ``patch_size`` and stride ``patch_size[0]``."""

    def __init__(self, patch_size: tuple[int, ...], in_chans: int, embed_dim: int) -> None:
        super().__init__()
        stride = patch_size[0]
        self.projs = nn.ModuleList(
            nn.Conv2d(in_chans, d, kernel_size=ps, stride=stride, padding=(ps - stride) // 2)
            for ps, d in zip(patch_size, _split_dims(embed_dim, patch_size))
        )
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.cat([proj(x) for proj in self.projs], dim=1)  # (B, C, H/4, W/4): same size for every kernel
        return self.norm(x.permute(0, 2, 3, 1))  # (B, H, W, C)


class PatchMerging(nn.Module):
    """Cross-scale embedding between stages: LayerNorm, then stride-2 convolutions of several kernels."""

    def __init__(self, dim: int, patch_size: tuple[int, ...]) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.reductions = nn.ModuleList(
            nn.Conv2d(dim, d, kernel_size=ps, stride=2, padding=(ps - 2) // 2)
            for ps, d in zip(patch_size, _split_dims(2 * dim, patch_size))
        )

    def forward(self, x: Tensor) -> Tensor:
        if min(x.shape[1:3]) < 2:
            raise ValueError(f"CrossFormer: a {x.shape[1]}x{x.shape[2]} feature map is too small to downsample")
        x = self.norm(x).permute(0, 3, 1, 2)  # (B, C, H, W)
        x = torch.cat([red(x) for red in self.reductions], dim=1)  # (B, 2C, H/2, W/2)
        return x.permute(0, 2, 3, 1)  # (B, H/2, W/2, 2C)


def group_tokens(x: Tensor, group: int, interval: int, long_distance: bool) -> Tensor:
    """``(B, Hp, Wp, C)`` -> ``(B * groups, G * G, C)``.

    SDA groups are adjacent ``G x G`` patches. LDA splits the map into regions of ``G*I x G*I``;
    inside a region, group ``(i, j)`` takes the tokens at rows ``i, i + I, ...`` and columns
    ``j, j + I, ...`` (the official ``(Rh, G, I, Rw, G, I)`` factorization).
    """
    b, hp, wp, c = x.shape
    g, i = group, interval
    if long_distance:
        x = x.reshape(b, hp // (g * i), g, i, wp // (g * i), g, i, c)  # (B, Rh, G, I, Rw, G, I, C)
        x = x.permute(0, 1, 4, 3, 6, 2, 5, 7)  # (B, Rh, Rw, I, I, G, G, C)
    else:
        x = x.reshape(b, hp // g, g, wp // g, g, c).permute(0, 1, 3, 2, 4, 5)  # (B, Hp/G, Wp/G, G, G, C)
    return x.reshape(-1, g * g, c)


def ungroup_tokens(x: Tensor, batch: int, hp: int, wp: int, group: int, interval: int, long_distance: bool) -> Tensor:
    """Inverse of :func:`group_tokens`: ``(B * groups, G * G, C)`` -> ``(B, Hp, Wp, C)``."""
    g, i, c = group, interval, x.shape[-1]
    if long_distance:
        x = x.reshape(batch, hp // (g * i), wp // (g * i), i, i, g, g, c)  # (B, Rh, Rw, I, I, G, G, C)
        x = x.permute(0, 1, 5, 3, 2, 6, 4, 7)  # (B, Rh, G, I, Rw, G, I, C)
    else:
        x = x.reshape(batch, hp // g, wp // g, g, g, c).permute(0, 1, 3, 2, 4, 5)  # (B, Hp/G, G, Wp/G, G, C)
    return x.reshape(batch, hp, wp, c)


class CrossScaleAttention(nn.Module):
    """Multi-head self-attention inside groups, with CrossFormer's dynamic position bias ``pos``."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        qkv_bias: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        dpb_residual: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.backend = backend
        # the official attention builds DynamicPosBias(dim // 4), whose width is a quarter of that
        self.pos = DynamicPositionBias(num_heads, (dim // 4) // 4, residual=dpb_residual)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: Tensor, group: int, key_mask: Tensor | None = None) -> Tensor:
        """``x (B_, G*G, C)``; ``key_mask`` bool ``(B_, 1, 1, G*G)``, True = real token."""
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B_, H, N, D) each
        position = self.pos.bind(group_size=(group, group))
        x = attention(
            q,
            k,
            v,
            position=position,
            mask=key_mask,
            dropout_p=self.attn_drop if self.training else 0.0,
            backend=self.backend,
        )  # (B_, H, N, D)
        x = x.transpose(1, 2).reshape(b, n, c)
        return self.proj_drop(self.proj(x))


class CrossFormerBlock(nn.Module):
    """Pre-norm SDA or LDA attention + MLP, optionally followed by the CrossFormer++ cooling layer."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        group_size: int,
        interval: int,
        long_distance: bool,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
        use_acl: bool = False,
        dpb_residual: bool = False,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.group_size = group_size
        self.interval = interval
        self.long_distance = long_distance
        self.norm1 = nn.LayerNorm(dim)
        self.attn = CrossScaleAttention(dim, num_heads, qkv_bias, attn_drop, drop, dpb_residual, backend)
        self.drop_path = DropPath(drop_path) if drop_path > 0.0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=drop)
        self.use_acl = use_acl
        if use_acl:
            self.ex_conv = nn.Conv2d(dim, dim, 3, padding=1, groups=dim)
            self.ex_ln = nn.LayerNorm(dim)

    def _attend(self, x: Tensor) -> Tensor:
        b, h, w, c = x.shape
        g, i, lda = self.group_size, self.interval, self.long_distance
        if min(h, w) <= g:  # the whole (small) map is one group: plain SDA
            g, i, lda = min(h, w), 1, False
        div = g * i if lda else g
        pad_h, pad_w = (-h) % div, (-w) % div
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))  # (B, Hp, Wp, C), zeros at the bottom/right
        hp, wp = h + pad_h, w + pad_w
        key_mask = None
        if pad_h or pad_w:
            real = torch.zeros(1, hp, wp, 1, dtype=torch.bool, device=x.device)
            real[:, :h, :w] = True
            key_mask = group_tokens(real, g, i, lda)[..., 0]  # (groups, G*G)
            # groups made only of padding would have nothing to attend to; their outputs are dropped
            key_mask = key_mask | ~key_mask.any(-1, keepdim=True)
            key_mask = key_mask.repeat(b, 1)[:, None, None, :]  # (B * groups, 1, 1, G*G)
        out = self.attn(group_tokens(x, g, i, lda), g, key_mask)  # (B * groups, G*G, C)
        out = ungroup_tokens(out, b, hp, wp, g, i, lda)  # (B, Hp, Wp, C)
        return out[:, :h, :w]

    def forward(self, x: Tensor) -> Tensor:
        """``x (B, H, W, C)`` -> ``(B, H, W, C)``."""
        x = x + self.drop_path(self._attend(self.norm1(x)))
        x = x + self.drop_path(self.mlp(self.norm2(x)))
        if self.use_acl:
            x = self.ex_conv(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)  # depth-wise 3x3, (B, H, W, C)
            x = self.ex_ln(x)
        return x


class CrossFormerStage(nn.Module):
    """Blocks alternating SDA / LDA, then the next stage's cross-scale embedding (official layout)."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        group_size: int,
        interval: int,
        merge_size: tuple[int, ...] | None,
        drop_path: list[float],
        cfg: CrossFormerConfig,
    ) -> None:
        super().__init__()
        self.grad_checkpointing = False
        self.blocks = nn.ModuleList(
            CrossFormerBlock(
                dim,
                num_heads,
                group_size,
                interval,
                long_distance=b % 2 == 1,
                mlp_ratio=cfg.mlp_ratio,
                qkv_bias=cfg.qkv_bias,
                drop=cfg.drop_rate,
                attn_drop=cfg.attn_drop_rate,
                drop_path=drop_path[b],
                use_acl=cfg.use_acl and (b + 1) % 3 == 0 and b < depth - 1,
                dpb_residual=cfg.dpb_residual,
                backend=cfg.attention_backend,
            )
            for b in range(depth)
        )
        self.downsample = PatchMerging(dim, merge_size) if merge_size is not None else None

    def forward_blocks(self, x: Tensor) -> Tensor:
        for blk in self.blocks:
            if self.grad_checkpointing and self.training and not torch.jit.is_scripting():
                x = torch.utils.checkpoint.checkpoint(blk, x, use_reentrant=False)
            else:
                x = blk(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        x = self.forward_blocks(x)
        return self.downsample(x) if self.downsample is not None else x


# ------------------------------------------------------------------------------------------ model


class CrossFormer(nn.Module):
    """CrossFormer / CrossFormer++ classifier with timm's model interface.

    ``forward_features`` returns the normalized last map ``(B, H/32, W/32, C)`` (channels last, as
    timm's Swin); ``forward_head`` averages it and applies ``head``. The keyword arguments override
    the config's fields of the same name (timm passes ``num_classes`` / ``in_chans`` this way).
    """

    def __init__(
        self,
        cfg: CrossFormerConfig,
        num_classes: int | None = None,
        in_chans: int | None = None,
        drop_rate: float | None = None,
        drop_path_rate: float | None = None,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        given = dict(num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate, drop_path_rate=drop_path_rate)
        cfg = replace(cfg, **{k: v for k, v in given.items() if v is not None})
        if global_pool not in ("avg", ""):
            raise ValueError(f"CrossFormer: global_pool must be 'avg' or '' (no pooling), got {global_pool!r}")
        self.config = cfg
        self.num_classes = cfg.num_classes
        self.global_pool = global_pool
        n = len(cfg.depths)
        dims = [cfg.embed_dim * 2**s for s in range(n)]
        self.num_features = self.head_hidden_size = dims[-1]

        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        total = sum(cfg.depths)
        dpr = [cfg.drop_path_rate * i / max(total - 1, 1) for i in range(total)]  # linear stochastic depth
        self.layers = nn.ModuleList()
        self.feature_info = []
        stride = cfg.patch_size[0]
        for s in range(n):
            start = sum(cfg.depths[:s])
            self.layers.append(
                CrossFormerStage(
                    dims[s],
                    cfg.depths[s],
                    cfg.num_heads[s],
                    cfg.group_size[s],
                    cfg.interval[s],
                    cfg.merge_size[s] if s < n - 1 else None,
                    dpr[start : start + cfg.depths[s]],
                    cfg,
                )
            )
            self.feature_info.append(dict(num_chs=dims[s], reduction=stride, module=f"layers.{s}"))
            stride *= 2
        self.norm = nn.LayerNorm(self.num_features)
        self.head_drop = nn.Dropout(cfg.drop_rate)
        self.head = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # -------------------------------------------------------------------------- timm interface
    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return set()

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, Any]:
        return dict(
            stem=r"^patch_embed",
            blocks=r"^layers\.(\d+)"
            if coarse
            else [(r"^layers\.(\d+)\.downsample", (0,)), (r"^layers\.(\d+)\.\w+\.(\d+)", None), (r"^norm", (99999,))],
        )

    @torch.jit.ignore
    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for layer in self.layers:
            layer.grad_checkpointing = enable

    @torch.jit.ignore
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            if global_pool not in ("avg", ""):
                raise ValueError(f"CrossFormer: global_pool must be 'avg' or '', got {global_pool!r}")
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_intermediates(
        self,
        x: Tensor,
        indices: int | list[int] | tuple[int, ...] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[Tensor] | tuple[Tensor, list[Tensor]]:
        """Each selected stage's output before its downsampling, ``(B, C_s, H_s, W_s)`` (or NHWC)."""
        if output_fmt not in ("NCHW", "NHWC"):
            raise ValueError(f"output_fmt must be 'NCHW' or 'NHWC', got {output_fmt!r}")
        take = _take_indices(len(self.layers), indices)
        intermediates = []
        x = self.pos_drop(self.patch_embed(x))  # (B, H, W, C)
        last = max(take)
        stages = self.layers if not stop_early else self.layers[: last + 1]
        for s, stage in enumerate(stages):
            x = stage.forward_blocks(x)
            if s in take:
                feat = self.norm(x) if norm and s == len(self.layers) - 1 else x
                intermediates.append(feat.permute(0, 3, 1, 2).contiguous() if output_fmt == "NCHW" else feat)
            if stage.downsample is not None:
                x = stage.downsample(x)
        if intermediates_only:
            return intermediates
        return self.norm(x), intermediates

    def prune_intermediate_layers(
        self, indices: int | list[int] | tuple[int, ...] = 1, prune_norm: bool = False, prune_head: bool = True
    ) -> list[int]:
        take = _take_indices(len(self.layers), indices)
        last = max(take)
        self.layers = self.layers[: last + 1]
        self.layers[-1].downsample = None  # its output is never used
        if prune_norm:
            self.norm = nn.Identity()
        if prune_head:
            self.reset_classifier(0, "")
        return take

    def forward_features(self, x: Tensor) -> Tensor:
        x = self.pos_drop(self.patch_embed(x))  # (B, H/4, W/4, C)
        for stage in self.layers:
            x = stage(x)
        return self.norm(x)  # (B, H/32, W/32, 8C)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        if self.global_pool == "avg":
            x = x.mean(dim=(1, 2))  # (B, C)
        x = self.head_drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


def _take_indices(n: int, indices: int | list[int] | tuple[int, ...] | None) -> list[int]:
    """timm's convention: an int ``k`` means the last ``k`` stages; a list selects (negative from the end)."""
    if indices is None:
        return list(range(n))
    if isinstance(indices, int):
        if not 0 < indices <= n:
            raise ValueError(f"indices must be in 1..{n} stages, got {indices}")
        return list(range(n - indices, n))
    take = [i % n if -n <= i < n else -1 for i in indices]
    if -1 in take:
        raise ValueError(f"stage indices must be in [-{n}, {n}), got {list(indices)}")
    return take


# --------------------------------------------------------------------------------------- variants

_V1 = CrossFormerConfig()
_PP = CrossFormerConfig(group_size=(4, 4, 14, 7), interval=(4, 2, 1, 1), use_acl=True)

#: name -> config; the papers' parameter counts (ImageNet-1k head) and top-1 are in PAPER_RESULTS
CROSSFORMER_CONFIGS: dict[str, CrossFormerConfig] = {
    "crossformer_t": replace(_V1, embed_dim=64, depths=(1, 1, 8, 6), num_heads=(2, 4, 8, 16), drop_path_rate=0.1),
    "crossformer_s": replace(_V1, embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.2),
    "crossformer_b": replace(_V1, embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3),
    "crossformer_l": replace(_V1, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5),
    "crossformerpp_s": replace(_PP, embed_dim=64, depths=(2, 2, 18, 2), num_heads=(2, 4, 8, 16), drop_path_rate=0.2),
    "crossformerpp_b": replace(_PP, embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24), drop_path_rate=0.3),
    "crossformerpp_l": replace(_PP, embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5),
    "crossformerpp_h": replace(_PP, embed_dim=128, depths=(6, 6, 18, 2), num_heads=(4, 8, 16, 32), drop_path_rate=0.5),
}

#: name -> (parameters in millions, ImageNet-1k top-1 %) as reported by the papers / official README
PAPER_RESULTS: dict[str, tuple[float, float]] = {
    "crossformer_t": (27.8, 81.5),
    "crossformer_s": (30.7, 82.5),
    "crossformer_b": (52.0, 83.4),
    "crossformer_l": (92.0, 84.0),
    "crossformerpp_s": (23.3, 83.2),
    "crossformerpp_b": (52.0, 84.2),
    "crossformerpp_l": (92.0, 84.7),
    "crossformerpp_h": (96.0, 84.9),
}


# ------------------------------------------------------------------------- official checkpoints

#: buffers that old official checkpoints saved and that this implementation recomputes per call
_OFFICIAL_BUFFERS = ("attn.biases", "attn.relative_position_index", "attn_mask")


def convert_official(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """An official CrossFormer / CrossFormer++ state dict -> this model's keys.

    The key layout is the official one; old checkpoints also saved buffers this implementation
    recomputes per call (``attn.biases``, ``attn.relative_position_index``, ``attn_mask``): they are
    dropped. Everything else goes through the hub's strict filter (:func:`zoo.hub.strict_filter`).
    """
    return {k: v for k, v in state_dict.items() if not k.endswith(_OFFICIAL_BUFFERS)}


#: timm's ``pretrained_filter_fn``: strict, except a classifier sized for other classes is replaced
checkpoint_filter_fn = timm_filter(convert_official, head="head.")


# ----------------------------------------------------------------------------------- entrypoints


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "patch_embed.projs.0",
        "classifier": "head",
        "license": "mit",
        "paper_ids": "arXiv:2108.00154",
        **kwargs,
    }


create_crossformer = register_timm_family(
    __name__, CrossFormer, CROSSFORMER_CONFIGS,
    {name: _cfg(paper_ids="arXiv:2303.06908" if "pp" in name else "arXiv:2108.00154") for name in CROSSFORMER_CONFIGS},
    checkpoint_filter_fn, feature_cfg=dict(feature_cls="getter", out_indices=(0, 1, 2, 3)),
)
