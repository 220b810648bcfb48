"""Astroformer: a CoAtNet-style hybrid for classification in the low-data regime.

Paper: Dagli, "Astroformer: More Data Might Not be All You Need for Classification" (ICLR 2023
workshop, arXiv 2304.05350). The official code is a timm fork that adds ``astroformer_0..5`` as
MaxxVit configurations:

- stem: two 3x3 convolutions (the first with stride 2), BatchNorm + GELU between them;
- stages 1-3: MBConv blocks (pre-BatchNorm, depth-wise 3x3, squeeze-excitation, GELU), the first
  block of each stage downsampling by 2;
- stage 4: transformer blocks with *global* attention over the whole stage-4 map and a learned
  relative position bias sized to that map (CoAtNet's ``C-C-C-T`` layout, where CoAtNet uses
  ``C-C-T-T``);
- head: timm's ``NormMlpClassifierHead`` (pool, LayerNorm, ``pre_logits`` MLP of width
  ``head_hidden_size``, linear classifier).

This module *is* timm's ``MaxxVit`` built from those configs, with one change: the transformer
blocks' attention runs through :func:`zoo.core_attention.attention` with
:class:`~zoo.core_attention.positions.RelativeBias2D` as the position term. The replacement keeps
the submodule names (``attn.qkv``, ``attn.rel_pos.relative_position_bias_table``, ``attn.proj``),
so state-dict keys are exactly timm's MaxxVit layout, e.g.
``stages.3.blocks.0.attn.rel_pos.relative_position_bias_table``, and a checkpoint trained with the
official code loads unchanged.

The bias table is sized for the stage-4 map of ``img_size``; a smaller input attends over the
matching sub-window of the table, a larger one is refused (timm's ``set_input_size`` resizes).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from timm.models.maxxvit import Attention2d, MaxxVit, MaxxVitCfg, TransformerBlock2d
from timm.models.maxxvit import checkpoint_filter_fn as _timm_maxxvit_filter
from torch import Tensor, nn

from zoo.core_attention import attention
from zoo.core_attention.positions import RelativeBias2D

from ._timm import register_timm_family, timm_filter

__all__ = [
    "Astroformer", "AstroformerConfig", "ASTROFORMER_CONFIGS", "CoreAttention2d", "checkpoint_filter_fn", "convert_official",
    "create_astroformer",
]


# ----------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class AstroformerConfig:
    """One Astroformer variant (the official ``model_cfgs``) plus the build options."""

    embed_dim: tuple[int, ...] = (96, 192, 384, 768)
    depths: tuple[int, ...] = (2, 3, 5, 2)
    stem_width: int = 64
    head_hidden_size: int = 768
    block_type: tuple[str, ...] = ("C", "C", "C", "T")
    dim_head: int = 32
    img_size: int = 256
    in_chans: int = 3
    num_classes: int = 1000
    drop_rate: float = 0.0
    drop_path_rate: float = 0.0
    attention_backend: str = "auto"

    def __post_init__(self) -> None:
        if not (len(self.embed_dim) == len(self.depths) == len(self.block_type)):
            raise ValueError(
                f"AstroformerConfig: embed_dim {self.embed_dim}, depths {self.depths} and block_type "
                f"{self.block_type} need one entry per stage"
            )
        if set(self.block_type) - {"C", "T"}:
            raise ValueError(f"AstroformerConfig.block_type entries must be 'C' or 'T', got {self.block_type}")
        for s, (t, d) in enumerate(zip(self.block_type, self.embed_dim)):
            if t == "T" and d % self.dim_head:
                raise ValueError(f"stage {s}: width {d} is not a multiple of dim_head {self.dim_head}")
        if self.img_size % 2 ** (len(self.depths) + 1):
            raise ValueError(f"img_size {self.img_size} must be a multiple of {2 ** (len(self.depths) + 1)}")

    def to_timm(self) -> MaxxVitCfg:
        from timm.models.maxxvit import MaxxVitTransformerCfg

        return MaxxVitCfg(
            embed_dim=self.embed_dim,
            depths=self.depths,
            block_type=self.block_type,
            stem_width=self.stem_width,
            head_hidden_size=self.head_hidden_size,
            transformer_cfg=MaxxVitTransformerCfg(dim_head=self.dim_head),
        )


# ---------------------------------------------------------------------------------------- blocks


class CoreAttention2d(nn.Module):
    """timm's ``Attention2d`` (NCHW, 1x1-conv qkv, heads first) computed by the zoo attention core."""

    def __init__(
        self,
        dim: int,
        dim_out: int,
        dim_head: int,
        window_size: tuple[int, int],
        bias: bool = True,
        expand_first: bool = True,
        head_first: bool = True,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        dim_attn = dim_out if expand_first else dim
        self.num_heads = dim_attn // dim_head
        self.dim_head = dim_head
        self.head_first = head_first
        self.backend = backend
        self.qkv = nn.Conv2d(dim, dim_attn * 3, 1, bias=bias)
        self.rel_pos = RelativeBias2D(window_size, self.num_heads)
        self.attn_drop = nn.Dropout(attn_drop)
        self.proj = nn.Conv2d(dim_attn, dim_out, 1, bias=bias)
        self.proj_drop = nn.Dropout(proj_drop)

    @classmethod
    def from_timm(cls, attn: Attention2d, backend: str = "auto") -> CoreAttention2d:
        """The same attention with the same weights (a strict ``load_state_dict`` checks the keys)."""
        dim, dim_attn3 = attn.qkv.in_channels, attn.qkv.out_channels
        new = cls(
            dim,
            attn.proj.out_channels,
            attn.dim_head,
            tuple(attn.rel_pos.window_size),
            bias=attn.qkv.bias is not None,
            expand_first=dim_attn3 // 3 == attn.proj.out_channels,
            head_first=attn.head_first,
            attn_drop=attn.attn_drop.p,
            proj_drop=attn.proj_drop.p,
            backend=backend,
        ).to(device=attn.qkv.weight.device, dtype=attn.qkv.weight.dtype)
        if attn.qkv.weight.device.type != "meta":
            new.load_state_dict(attn.state_dict(), strict=True)
        return new

    def forward(self, x: Tensor, shared_rel_pos: Tensor | None = None) -> Tensor:
        if shared_rel_pos is not None:
            raise ValueError("CoreAttention2d owns its relative position bias; shared_rel_pos is not supported")
        b, _, h, w = x.shape
        if self.head_first:
            q, k, v = self.qkv(x).view(b, self.num_heads, self.dim_head * 3, -1).chunk(3, dim=2)  # (B, H, D, N)
        else:
            q, k, v = self.qkv(x).reshape(b, 3, self.num_heads, self.dim_head, -1).unbind(1)  # (B, H, D, N)
        q, k, v = (t.transpose(-1, -2) for t in (q, k, v))  # (B, H, N, D)
        wh, ww = self.rel_pos.window_size
        if (h, w) == (wh, ww):
            position = self.rel_pos
        elif h <= wh and w <= ww:  # a smaller map: its cells inside the table's window
            ys, xs = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
            cells = (ys * ww + xs).reshape(-1).to(x.device)  # (N,)
            position = self.rel_pos.bind(q_pos=cells, k_pos=cells)
        else:
            raise ValueError(
                f"Astroformer: the transformer stage sees a {h}x{w} map but its relative position table "
                f"covers {wh}x{ww}; build the model with a larger img_size (or call set_input_size)"
            )
        dropout_p = self.attn_drop.p if self.training else 0.0
        x = attention(q, k, v, position=position, dropout_p=dropout_p, backend=self.backend)  # (B, H, N, D)
        x = x.transpose(-1, -2).reshape(b, -1, h, w)  # (B, H*D, h, w)
        return self.proj_drop(self.proj(x))


# ------------------------------------------------------------------------------------------ model


class Astroformer(MaxxVit):
    """timm's MaxxVit with an Astroformer config and the attention core in its transformer blocks.

    The keyword arguments override the config's fields (timm passes ``num_classes``, ``in_chans``,
    ``img_size`` this way).
    """

    def __init__(
        self,
        cfg: AstroformerConfig,
        img_size: int | tuple[int, int] | None = None,
        in_chans: int | None = None,
        num_classes: int | None = None,
        global_pool: str = "avg",
        drop_rate: float | None = None,
        drop_path_rate: float | None = None,
    ) -> None:
        if isinstance(img_size, (tuple, list)):
            if img_size[0] != img_size[1]:
                raise ValueError(f"Astroformer: img_size must be square, got {img_size}")
            img_size = img_size[0]
        given = dict(
            img_size=img_size, in_chans=in_chans, num_classes=num_classes, drop_rate=drop_rate, drop_path_rate=drop_path_rate
        )
        cfg = replace(cfg, **{k: v for k, v in given.items() if v is not None})
        super().__init__(
            cfg.to_timm(),
            img_size=cfg.img_size,
            in_chans=cfg.in_chans,
            num_classes=cfg.num_classes,
            global_pool=global_pool,
            drop_rate=cfg.drop_rate,
            drop_path_rate=cfg.drop_path_rate,
        )
        self.config = cfg
        for stage in self.stages:
            for block in stage.blocks:
                if isinstance(block, TransformerBlock2d):
                    block.attn = CoreAttention2d.from_timm(block.attn, backend=cfg.attention_backend)

    @torch.jit.ignore
    def no_weight_decay(self) -> set[str]:
        return {k for k, _ in self.named_parameters() if "relative_position_bias_table" in k}


# -------------------------------------------------------------------------------------- variants

_BASE = AstroformerConfig()

#: the official ``model_cfgs``
ASTROFORMER_CONFIGS: dict[str, AstroformerConfig] = {
    "astroformer_0": replace(_BASE, embed_dim=(96, 192, 384, 768), depths=(2, 3, 5, 2), stem_width=64, head_hidden_size=768),
    "astroformer_1": replace(_BASE, embed_dim=(96, 192, 384, 768), depths=(2, 6, 14, 2), stem_width=64, head_hidden_size=768),
    "astroformer_2": replace(
        _BASE, embed_dim=(128, 256, 512, 1024), depths=(2, 6, 14, 2), stem_width=128, head_hidden_size=1024
    ),
    "astroformer_3": replace(
        _BASE, embed_dim=(192, 384, 768, 1536), depths=(2, 6, 14, 2), stem_width=192, head_hidden_size=1536
    ),
    "astroformer_4": replace(
        _BASE, embed_dim=(192, 384, 768, 1536), depths=(2, 12, 28, 2), stem_width=192, head_hidden_size=1536
    ),
    "astroformer_5": replace(
        _BASE, embed_dim=(256, 512, 1280, 2048), depths=(2, 12, 28, 2), stem_width=192, head_hidden_size=2048
    ),
}

#: name -> (dataset, parameters in millions, top-1 %) from the official README (10-class heads)
PAPER_RESULTS: dict[str, list[tuple[str, float, float]]] = {
    "astroformer_3": [("Galaxy10 DECals", 161.75, 92.39), ("CIFAR-10", 161.75, 99.12), ("CIFAR-100", 161.95, 87.65)],
    "astroformer_4": [("Galaxy10 DECals", 271.54, 94.86), ("CIFAR-10", 271.54, 98.93), ("CIFAR-100", 271.68, 93.36)],
    "astroformer_5": [("Galaxy10 DECals", 681.25, 94.81), ("CIFAR-10", 655.04, 93.23), ("CIFAR-100", 655.34, 89.38)],
}


# --------------------------------------------------------------------------- official checkpoints


def convert_official(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """An official Astroformer (timm MaxxVit) state dict -> this model's keys.

    The official code is a timm fork, so keys are already timm's MaxxVit layout; timm's MaxxVit
    filter resizes relative position tables trained at another image size. The result goes through
    the hub's strict filter (:func:`zoo.hub.strict_filter`), which lists every key that does not fit.
    """
    return _timm_maxxvit_filter(state_dict, model)


def _cfg(**kwargs: Any) -> dict[str, Any]:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 256, 256),
        "pool_size": (8, 8),
        "crop_pct": 0.95,
        "interpolation": "bicubic",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "first_conv": "stem.conv1",
        "classifier": "head.fc",
        "fixed_input_size": True,
        "paper_ids": "arXiv:2304.05350",
        **kwargs,
    }


#: timm's ``pretrained_filter_fn``: strict, except a classifier sized for other classes is replaced
checkpoint_filter_fn = timm_filter(convert_official, head="head.fc.")

# ------------------------------------------------------------------------------------ entrypoints

create_astroformer = register_timm_family(
    __name__, Astroformer, ASTROFORMER_CONFIGS, {name: _cfg() for name in ASTROFORMER_CONFIGS},
    checkpoint_filter_fn, feature_cfg=dict(flatten_sequential=True),
)
