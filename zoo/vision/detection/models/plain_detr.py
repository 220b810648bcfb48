"""Plain-DETR: COCO detection from one stride-16 map, no encoder, a global decoder with BoxRPB.

Paper: Lin et al., "DETR Doesn't Need Multi-Scale or Locality Design" (ICCV 2023, arXiv 2308.01904);
official code impiga/Plain-DETR, whose released configs (``configs/swinv2_small_sup_pt_{boxrpe,ape}.sh``)
are the variants here. The network, as the official code builds it:

* a SwinV2-S backbone (:mod:`.swin`, the official detection variant: pad-before-shift, eps 1e-6, both
  stage-4 blocks global) read only at stride 32, upsampled once by a 2x2 transposed conv to stride 16
  (768 -> 384 channels), then ``Conv1x1 + GroupNorm(32)`` to ``d_model = 256``; **no encoder**;
* two-stage proposals: the stride-16 memory is re-projected to strides 8/16/32/64 (transposed conv /
  identity / conv / conv-LN-GELU-conv), every cell proposes a box (``0.05 * 2^level`` wide, or
  ``50 * 2^level`` pixels with ``reparam``), scored by the last class head; the top ``Nq`` proposals
  (detached) are the initial reference boxes and, through a sine embedding + ``Linear + LayerNorm``,
  the query positions; **mixed query selection** takes the content queries from a learned table;
* a 6-layer **pre-norm** decoder (self-attention, cross-attention, FFN 2048, a final LayerNorm) whose
  cross-attention is global over the map with :class:`~zoo.core_attention.positions.BoxRPB` from each
  query's current reference box (``use_boxrpb``), or plain attention with the sine position embedding
  added to the keys (the APE baseline);
* **iterative box refinement** (one class / box head per layer, the boxes refined layer by layer and
  detached between layers) with **look-forward-twice** (a layer's prediction keeps the gradient of the
  previous layer's refinement);
* **hybrid matching**: ``num_queries_one2one`` (300) queries for the one-to-one loss plus
  ``num_queries_one2many`` (1500) trained against ground truth repeated ``k`` times, the two groups kept
  apart by a self-attention mask; in eval only the one-to-one queries (and proposals) are computed;
* **reparameterized boxes** (``reparam``): proposals and references in absolute pixels, refined by
  delta encoding (``delta2bbox``, clipped to the valid image), BoxRPB fed the pixel boxes directly.

What differs from the official code (also in ``docs/vision/detection.md``):

1. The class / box heads are stored once (``class_embed.i``, ``bbox_embed.i``); the official model also
   registers them under ``transformer.decoder.``; its converter checks both copies are equal.
2. The padding mask is a hard mask (``-inf``) in the cross-attention, where the official code adds
   ``-100`` to padded keys (a difference of ``e^-100`` in the weights).
3. Without ``two_stage`` the reference boxes come from ``Linear(d, 4)`` of the query position (the
   official code predicts 2-d points there, which its BoxRPB decoder cannot take).
4. Outputs with ``reparam`` are normalized by each image's valid size, like every other variant, so the
   loss and the evaluation see one box convention (the official code returns pixel boxes there); the
   official L1 on the deltas is :class:`~zoo.vision.detection.losses.SetCriterion`'s ``box_space="delta"``,
   which maps both back to pixels with each target's ``size``.
5. Everything runs in the module's dtype (float64 included); the official code forces some float32.

Input: ``images (B, 3, H, W)`` ImageNet-normalized and zero-padded, in the model's dtype, ``pad_mask (B, H, W)``
True on padding (right of and below each image). Inputs that would fail deep inside are a ``ValueError``
saying what was expected: a wrong shape or dtype, a mask that is not a padded layout, an input too small
for the two-stage proposal levels, or fewer proposals than queries (the message gives the smallest input).
Output: a dict, see :meth:`PlainDETR.forward`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zoo.core_attention import attention, positions

from .swin import SwinTransformerV2

__all__ = ["PLAIN_DETR_CONFIGS", "PlainDETR", "PlainDETRConfig", "bbox2delta", "convert_official", "delta2bbox"]


# ----------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class PlainDETRConfig:
    num_classes: int = 91  # COCO's ids 1..90 plus the unused 0, as the official code
    # backbone (SwinV2, the official "swin_v2_small_window16_2global")
    embed_dim: int = 96
    depths: tuple[int, ...] = (2, 2, 18, 2)
    backbone_heads: tuple[int, ...] = (3, 6, 12, 24)
    window_size: int = 16
    pretrained_window_sizes: tuple[int, ...] = (16, 16, 16, 8)
    global_blocks: tuple[tuple[int, ...], ...] = ((), (), (), (0, 1))
    drop_path_rate: float = 0.1
    # detector
    d_model: int = 256
    num_heads: int = 8
    dim_feedforward: int = 2048
    num_decoder_layers: int = 6
    dropout: float = 0.0
    num_queries_one2one: int = 300
    num_queries_one2many: int = 1500
    use_boxrpb: bool = True
    rpe_hidden_dim: int = 512
    rpe_type: str = "linear"
    position_embedding: str = "sine"  # "sine" (normalized) | "sine_unnorm" (the reparam config's)
    proposal_strides: tuple[int, ...] = (8, 16, 32, 64)
    two_stage: bool = True
    mixed_selection: bool = True
    look_forward_twice: bool = True
    box_refine: bool = True
    reparam: bool = False
    attention_backend: str = "auto"  # runtime only, never saved

    def __post_init__(self) -> None:
        for name in ("depths", "backbone_heads", "pretrained_window_sizes", "proposal_strides"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        object.__setattr__(self, "global_blocks", tuple(tuple(int(i) for i in g) for g in self.global_blocks))
        if self.d_model % self.num_heads:
            raise ValueError(f"PlainDETRConfig: d_model={self.d_model} is not divisible by num_heads={self.num_heads}")
        if self.d_model % 32:
            raise ValueError(f"PlainDETRConfig: d_model={self.d_model} must be a multiple of 32 (GroupNorm(32))")
        if self.num_queries_one2one < 1 or self.num_queries_one2many < 0:
            raise ValueError(
                f"PlainDETRConfig: num_queries_one2one must be >= 1 and num_queries_one2many >= 0, got "
                f"{self.num_queries_one2one} and {self.num_queries_one2many}"
            )
        if self.rpe_type not in ("linear", "log"):
            raise ValueError(f"PlainDETRConfig.rpe_type must be 'linear' or 'log', got {self.rpe_type!r}")
        if self.position_embedding not in ("sine", "sine_unnorm"):
            raise ValueError(
                f"PlainDETRConfig.position_embedding must be 'sine' or 'sine_unnorm', got {self.position_embedding!r}"
            )
        if self.look_forward_twice and not self.box_refine:
            raise ValueError("PlainDETRConfig: look_forward_twice needs box_refine (it acts on refined boxes)")
        if self.reparam and not (self.two_stage and self.box_refine):
            raise ValueError("PlainDETRConfig: reparam needs two_stage and box_refine (as the official code)")
        if self.two_stage and 16 not in self.proposal_strides:
            raise ValueError(f"PlainDETRConfig.proposal_strides must include the map's stride 16, got {self.proposal_strides}")
        if any(s < 1 or (s & (s - 1)) for s in self.proposal_strides):
            raise ValueError(f"PlainDETRConfig.proposal_strides must be powers of two, got {self.proposal_strides}")

    @property
    def num_queries(self) -> int:
        return self.num_queries_one2one + self.num_queries_one2many


# ----------------------------------------------------------------------------------------- box helpers


def inverse_sigmoid(x: Tensor, eps: float = 1e-5) -> Tensor:
    x = x.clamp(0, 1)
    return torch.log(x.clamp(min=eps) / (1 - x).clamp(min=eps))


def box_xyxy_to_cxcywh(x: Tensor) -> Tensor:
    x0, y0, x1, y1 = x.unbind(-1)
    return torch.stack([(x0 + x1) / 2, (y0 + y1) / 2, x1 - x0, y1 - y0], dim=-1)


def delta2bbox(proposals: Tensor, deltas: Tensor, max_shape: tuple[Tensor, Tensor], wh_ratio_clip: float = 16 / 1000) -> Tensor:
    """Decode ``deltas (..., 4)`` against ``proposals (..., 4)`` cxcywh pixels -> xyxy pixels, clipped to
    ``max_shape = (valid_h, valid_w)`` (each broadcastable to the boxes' leading dims + 1)."""
    max_ratio = abs(math.log(wh_ratio_clip))
    pxy, pwh = proposals[..., :2], proposals[..., 2:]
    gxy = pxy + pwh * deltas[..., :2]
    gwh = pwh * deltas[..., 2:].clamp(-max_ratio, max_ratio).exp()
    x1y1, x2y2 = gxy - gwh / 2, gxy + gwh / 2
    valid_h, valid_w = max_shape
    zero = torch.zeros_like(valid_w)
    x1 = torch.minimum(torch.maximum(x1y1[..., :1], zero), valid_w)
    y1 = torch.minimum(torch.maximum(x1y1[..., 1:], zero), valid_h)
    x2 = torch.minimum(torch.maximum(x2y2[..., :1], zero), valid_w)
    y2 = torch.minimum(torch.maximum(x2y2[..., 1:], zero), valid_h)
    return torch.cat([x1, y1, x2, y2], dim=-1)


def bbox2delta(boxes: Tensor, target: Tensor) -> Tensor:
    """The deltas ``(..., 4)`` that the official reparam loss regresses: ``target`` against ``boxes``
    (both cxcywh pixels, broadcast): ``((tx - x) / (w + 0.1), (ty - y) / (h + 0.1), log(tw / (w + 0.1)),
    log(th / (h + 0.1)))``. The official ``box_ops.bbox2delta``'s 0.1-pixel guard makes it not quite the
    inverse of :func:`delta2bbox` (which scales by ``w``, ``h``); kept, since the loss is defined by it."""
    x, y, w, h = boxes.unbind(-1)
    tx, ty, tw, th = target.unbind(-1)
    return torch.stack([(tx - x) / (w + 0.1), (ty - y) / (h + 0.1), torch.log(tw / (w + 0.1)), torch.log(th / (h + 0.1))], -1)


def sine_box_embedding(boxes: Tensor, d_model: int, temperature: float = 10000.0) -> Tensor:
    """``(B, N, 4)`` -> ``(B, N, 2 d_model)``: every coordinate's sine/cosine embedding of width d/2."""
    feats = d_model // 2
    dim_t = torch.arange(feats, device=boxes.device, dtype=boxes.dtype)
    dim_t = temperature ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / feats)
    pos = boxes[..., None] * (2 * math.pi) / dim_t  # (B, N, 4, feats)
    return torch.stack([pos[..., 0::2].sin(), pos[..., 1::2].cos()], dim=-1).flatten(2)  # (B, N, 4 feats)


def sine_position_embedding(mask: Tensor, d_model: int, normalize: bool, dtype: torch.dtype) -> Tensor:
    """DETR's 2-D sine embedding of the unpadded cells of ``mask (B, H, W)`` (True = pad) -> ``(B, d, H, W)``."""
    feats = d_model // 2
    not_mask = (~mask).to(dtype)
    y = not_mask.cumsum(1)  # (B, H, W)
    x = not_mask.cumsum(2)
    if normalize:
        y = (y - 0.5) / (y[:, -1:, :] + 1e-6) * (2 * math.pi)
        x = (x - 0.5) / (x[:, :, -1:] + 1e-6) * (2 * math.pi)
    else:
        y, x = (y - 0.5) * (2 * math.pi), (x - 0.5) * (2 * math.pi)
    dim_t = torch.arange(feats, device=mask.device, dtype=dtype)
    dim_t = 10000.0 ** (2 * torch.div(dim_t, 2, rounding_mode="floor") / feats)
    px, py = x[..., None] / dim_t, y[..., None] / dim_t  # (B, H, W, feats)
    px = torch.stack([px[..., 0::2].sin(), px[..., 1::2].cos()], dim=4).flatten(3)
    py = torch.stack([py[..., 0::2].sin(), py[..., 1::2].cos()], dim=4).flatten(3)
    return torch.cat([py, px], dim=3).permute(0, 3, 1, 2)  # (B, d, H, W)


# ----------------------------------------------------------------------------------------- blocks


class MLP(nn.Module):
    """``num_layers`` linear layers with ReLU between (the box head)."""

    def __init__(self, dim_in: int, hidden: int, dim_out: int, num_layers: int) -> None:
        super().__init__()
        dims = [dim_in] + [hidden] * (num_layers - 1)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims, dims[1:] + [dim_out]))

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


def _rescale(d: int, in_stride: int, out_stride: int) -> nn.Module:
    """The official ``enc_output_proj`` entry from stride ``in_stride`` to ``out_stride``."""
    if out_stride == in_stride:
        return nn.Identity()
    conv = nn.Conv2d if out_stride > in_stride else nn.ConvTranspose2d
    steps = int(math.log2(max(out_stride, in_stride) // min(out_stride, in_stride)))
    layers: list[nn.Module] = []
    for _ in range(steps - 1):
        layers += [conv(d, d, kernel_size=2, stride=2), _LN2dWrapper(d), nn.GELU()]
    layers.append(conv(d, d, kernel_size=2, stride=2))
    return nn.Sequential(*layers)


class _LN2dWrapper(nn.Module):
    def __init__(self, d: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(d)

    def forward(self, x: Tensor) -> Tensor:
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class DecoderAttention(nn.Module):
    """Multi-head attention whose keys and values come from different inputs (DETR adds the position to
    q and k only), through :func:`zoo.core_attention.attention` with the layer's own position terms."""

    def __init__(self, dim: int, num_heads: int, position: positions.PositionTerm | None, dropout: float,
                 backend: str) -> None:
        super().__init__()
        self.num_heads, self.head_dim, self.dropout, self.backend = num_heads, dim // num_heads, dropout, backend
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(dim, dim) for _ in range(4))
        self.position = nn.ModuleList([] if position is None else [position])

    def _split(self, x: Tensor) -> Tensor:
        return x.unflatten(-1, (self.num_heads, self.head_dim)).transpose(1, 2)  # (B, H, L, Dh)

    def _bound(self, context: dict | None) -> list:
        return [t.bind(**context) for t in self.position] if context else []

    def forward(self, query: Tensor, key: Tensor, value: Tensor, mask: Tensor | None = None,
                position_context: dict | None = None) -> Tensor:
        """``query (B, Lq, d)``, ``key, value (B, Lk, d)``, ``mask`` bool broadcastable to (B, H, Lq, Lk)."""
        q, k, v = self._split(self.q_proj(query)), self._split(self.k_proj(key)), self._split(self.v_proj(value))
        out = attention(q, k, v, position=self._bound(position_context), mask=mask,
                        dropout_p=self.dropout if self.training else 0.0, backend=self.backend)  # (B, H, Lq, Dh)
        return self.out_proj(out.transpose(1, 2).flatten(2))  # (B, Lq, d)

    def weights(self, query: Tensor, key: Tensor, mask: Tensor | None = None,
                position_context: dict | None = None) -> Tensor:
        """The attention probabilities ``(B, H, Lq, Lk)``, materialized (the reference path)."""
        q, k = self._split(self.q_proj(query)), self._split(self.k_proj(key))
        scale = self.head_dim**-0.5
        scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, Lq, Lk)
        for bound in self._bound(position_context):
            ctx = bound.make_context(q.shape[2], k.shape[2], False, q.device)
            scores = scores + bound.term.bias(q, k, ctx, scale)
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(-1)


class DecoderLayer(nn.Module):
    """Pre-norm: ``x += SelfAttn(LN(x) + pos)``; ``x += CrossAttn(LN(x) + pos, map)``; ``x += FFN(LN(x))``."""

    def __init__(self, cfg: PlainDETRConfig) -> None:
        super().__init__()
        d = cfg.d_model
        self.self_attn = DecoderAttention(d, cfg.num_heads, None, cfg.dropout, cfg.attention_backend)
        rpb = (positions.BoxRPB(cfg.num_heads, hidden_dim=cfg.rpe_hidden_dim, stride=16, rpe_type=cfg.rpe_type)
               if cfg.use_boxrpb else None)
        self.cross_attn = DecoderAttention(d, cfg.num_heads, rpb, 0.0, cfg.attention_backend)
        self.norm1, self.norm2, self.norm3 = nn.LayerNorm(d), nn.LayerNorm(d), nn.LayerNorm(d)
        self.linear1 = nn.Linear(d, cfg.dim_feedforward)
        self.linear2 = nn.Linear(cfg.dim_feedforward, d)
        self.dropout = nn.Dropout(cfg.dropout)
        self.use_boxrpb = cfg.use_boxrpb

    def self_attention(self, tgt: Tensor, query_pos: Tensor, self_mask: Tensor | None) -> Tensor:
        x = self.norm2(tgt)
        q = x + query_pos
        return tgt + self.dropout(self.self_attn(q, q, x, mask=self_mask))

    def cross_context(self, boxes: Tensor, spatial_shape: tuple[int, int]) -> dict | None:
        return {"boxes": boxes, "spatial_shape": spatial_shape} if self.use_boxrpb else None

    def forward(self, tgt: Tensor, query_pos: Tensor, boxes: Tensor, key: Tensor, value: Tensor,
                spatial_shape: tuple[int, int], key_mask: Tensor | None, self_mask: Tensor | None) -> Tensor:
        """``tgt, query_pos (B, Nq, d)``, ``boxes (B, Nq, 4)`` normalized to the padded map, ``key`` (map +
        position) and ``value`` (map) ``(B, HW, d)``, ``key_mask (B, 1, 1, HW)`` True = attend."""
        tgt = self.self_attention(tgt, query_pos, self_mask)
        x = self.norm1(tgt) + query_pos
        tgt = tgt + self.dropout(self.cross_attn(x, key, value, mask=key_mask,
                                                 position_context=self.cross_context(boxes, spatial_shape)))
        x = self.linear2(self.dropout(F.relu(self.linear1(self.norm3(tgt)))))
        return tgt + self.dropout(x)


# ----------------------------------------------------------------------------------------- model


class PlainDETR(nn.Module):
    """Plain-DETR; ``forward(images, pad_mask=None) -> dict``; see the module docstring."""

    def __init__(self, config: PlainDETRConfig) -> None:
        super().__init__()
        self.config = cfg = config
        d = cfg.d_model
        self.backbone = SwinTransformerV2(
            embed_dim=cfg.embed_dim, depths=cfg.depths, num_heads=cfg.backbone_heads, window_size=cfg.window_size,
            pretrained_window_sizes=cfg.pretrained_window_sizes, global_blocks=cfg.global_blocks,
            drop_path_rate=cfg.drop_path_rate, out_indices=(len(cfg.depths) - 1,), backend=cfg.attention_backend,
        )
        c32 = self.backbone.num_features[-1]
        self.upsample = nn.ConvTranspose2d(c32, c32 // 2, kernel_size=2, stride=2)  # stride 32 -> 16
        self.input_proj = nn.Sequential(nn.Conv2d(c32 // 2, d, kernel_size=1), nn.GroupNorm(32, d))
        self.level_embed = nn.Parameter(torch.empty(1, d))
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.num_decoder_layers))
        self.final_norm = nn.LayerNorm(d)
        num_pred = cfg.num_decoder_layers + (1 if cfg.two_stage else 0)
        class_embed, bbox_embed = nn.Linear(d, cfg.num_classes), MLP(d, d, 4, 3)
        # box refinement: a head per decoder layer (+1 for the proposals); otherwise one shared head
        copies = num_pred if cfg.box_refine else 1
        self.class_embed = nn.ModuleList(copy.deepcopy(class_embed) for _ in range(copies))
        self.bbox_embed = nn.ModuleList(copy.deepcopy(bbox_embed) for _ in range(copies))
        if cfg.two_stage:
            self.enc_output = nn.Linear(d, d)
            self.enc_output_norm = nn.LayerNorm(d)
            self.pos_trans = nn.Linear(2 * d, 2 * d)
            self.pos_trans_norm = nn.LayerNorm(2 * d)
            self.enc_output_proj = nn.ModuleList(_rescale(d, 16, s) for s in cfg.proposal_strides)
            if cfg.mixed_selection:
                self.query_embed = nn.Embedding(cfg.num_queries, d)
        else:
            self.query_embed = nn.Embedding(cfg.num_queries, 2 * d)
            self.reference_points = nn.Linear(d, 4)
        self._reset_parameters()

    # ------------------------------------------------------------------ init
    def _reset_parameters(self) -> None:
        cfg = self.config
        for name, p in self.named_parameters():
            if not name.startswith("backbone.") and p.dim() > 1:
                nn.init.xavier_uniform_(p)
        nn.init.normal_(self.level_embed)
        for m in self.layers.modules():  # the official decoder re-init ("stolen from Swin")
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        nn.init.zeros_(self.input_proj[0].bias)
        prior = -math.log((1 - 0.01) / 0.01)
        for head in self.class_embed:
            nn.init.constant_(head.bias, prior)
        for i, head in enumerate(self.bbox_embed):
            nn.init.zeros_(head.layers[-1].weight)
            nn.init.zeros_(head.layers[-1].bias)
            if i == 0 and not cfg.two_stage:
                nn.init.constant_(head.layers[-1].bias[2:], -2.0)

    # ------------------------------------------------------------------ helpers
    def _head(self, heads: nn.ModuleList, i: int) -> nn.Module:
        return heads[i] if len(heads) > 1 else heads[0]

    def _check_input(self, images: Tensor, pad_mask: Tensor | None) -> None:
        """Refuse, with what was expected, inputs that would otherwise fail deep inside (or silently)."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"PlainDETR: images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        dtype = self.level_embed.dtype
        if images.dtype != dtype:
            raise ValueError(
                f"PlainDETR: images are {images.dtype} but the model's weights are {dtype}; pass ImageNet-normalized "
                f"float images of the model's dtype (e.g. images.to({dtype}))"
            )
        b, _, h, w = images.shape
        if pad_mask is None:
            return
        if pad_mask.shape != (b, h, w) or pad_mask.dtype != torch.bool:
            raise ValueError(
                f"PlainDETR: pad_mask must be a bool tensor of shape (B, H, W) = {(b, h, w)} (True on padding), "
                f"got {pad_mask.dtype} {tuple(pad_mask.shape)}"
            )
        valid_h, valid_w = (~pad_mask[:, :, 0]).sum(1), (~pad_mask[:, 0, :]).sum(1)  # (B,) each
        rows = torch.arange(h, device=pad_mask.device)[None, :, None] >= valid_h[:, None, None]  # (B, H, 1)
        cols = torch.arange(w, device=pad_mask.device)[None, None, :] >= valid_w[:, None, None]  # (B, 1, W)
        bad = ((valid_h == 0) | (valid_w == 0) | ((rows | cols) != pad_mask).flatten(1).any(1)).nonzero().flatten()
        if len(bad):
            raise ValueError(
                f"PlainDETR: pad_mask of image(s) {bad.tolist()} is not a padded layout: each image must keep at least "
                "one pixel, its top-left rectangle valid (False) and only the rows below / columns right of it "
                "True (the layout of collate_detection)"
            )

    def _check_map(self, image_hw: tuple[int, int], map_hw: tuple[int, int], num_queries: int) -> None:
        """The two-stage selection needs every proposal level non-empty and ``num_queries`` proposals."""
        cfg = self.config
        if not cfg.two_stage:
            return
        (h, w), (hf, wf) = image_hw, map_hw
        counts = self._proposal_counts(hf, wf)
        if min(counts) >= 1 and sum(counts) >= num_queries:
            return  # the usual case: no search for the hint below
        strides = "/".join(str(s) for s in cfg.proposal_strides)
        cells = 1  # the smallest square stride-32 map that would do; a side-s input has ceil(s / 32) cells
        while min(c := self._proposal_counts(2 * cells, 2 * cells)) < 1 or sum(c) < num_queries:
            cells += 1
        side = 32 * (cells - 1) + 1
        hint = (f"use a larger input (a square input needs at least {side}x{side} pixels) or fewer queries "
                "(num_queries_one2one, and num_queries_one2many in training)")
        if min(counts) < 1:
            raise ValueError(
                f"PlainDETR: a {h}x{w} input gives a {hf}x{wf} stride-16 map, too small for the two-stage proposal "
                f"levels of strides {strides} (their maps: {[self._level_shape(hf, wf, s) for s in cfg.proposal_strides]}); "
                + hint
            )
        if sum(counts) < num_queries:
            group = (f"{cfg.num_queries_one2one} one-to-one + {num_queries - cfg.num_queries_one2one} one-to-many"
                     if num_queries > cfg.num_queries_one2one else "one-to-one")
            raise ValueError(
                f"PlainDETR: a {h}x{w} input gives a {hf}x{wf} stride-16 map with {sum(counts)} two-stage proposals "
                f"(levels of strides {strides}: {counts}), but {num_queries} queries ({group}) are asked; " + hint
            )

    def _features(self, images: Tensor, pad_mask: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """The stride-16 map ``(B, d, Hf, Wf)``, its pad mask ``(B, Hf, Wf)`` and position embedding."""
        self._check_input(images, pad_mask)
        b, _, h, w = images.shape
        if pad_mask is None:
            pad_mask = torch.zeros(b, h, w, dtype=torch.bool, device=images.device)
        feat = self.backbone(images)[len(self.config.depths) - 1]  # (B, C32, H/32, W/32)
        src = self.input_proj(self.upsample(feat))  # (B, d, Hf, Wf)
        mask = F.interpolate(pad_mask[None].to(src.dtype), size=src.shape[-2:])[0].to(torch.bool)  # (B, Hf, Wf)
        pos = sine_position_embedding(mask, self.config.d_model, self.config.position_embedding == "sine", src.dtype)
        return src, mask, pos

    def _proposals(self, memory: Tensor, mask: Tensor, hf: int, wf: int, num: int):
        """Two-stage: score every cell of the 4-level re-projection of the map; keep the top ``num``.

        Returns the proposals' class logits and boxes (all cells), the top boxes (detached; normalized to
        the valid image, or pixels with ``reparam``), ``max_shape`` (valid pixel size, reparam only), and
        with ``reparam`` the cells' anchor boxes (pixels) and deltas (the delta-space loss's inputs).
        """
        cfg = self.config
        b, _, d = memory.shape
        grid_mem = memory.transpose(1, 2).reshape(b, d, hf, wf)
        mems, masks, props = [], [], []
        for lvl, (proj, stride) in enumerate(zip(self.enc_output_proj, cfg.proposal_strides)):
            m = proj(grid_mem)  # (B, d, h_l, w_l)
            mk = F.interpolate(mask[None].to(memory.dtype), size=m.shape[-2:])[0].to(torch.bool)  # (B, h_l, w_l)
            hl, wl = m.shape[-2:]
            gy, gx = torch.meshgrid(torch.arange(hl, device=m.device, dtype=m.dtype),
                                    torch.arange(wl, device=m.device, dtype=m.dtype), indexing="ij")
            grid = torch.stack([gx, gy], dim=-1)[None] + 0.5  # (1, h_l, w_l, 2)
            if cfg.reparam:
                center = (grid * stride).expand(b, -1, -1, -1)
                wh = torch.full_like(center, 50.0 * 2.0**lvl)
            else:
                valid = torch.stack([(~mk[:, 0, :]).sum(1), (~mk[:, :, 0]).sum(1)], -1).to(m.dtype)  # (B, 2) w, h
                center = grid / valid[:, None, None, :]
                wh = torch.full_like(center, 0.05 * 2.0**lvl)
            props.append(torch.cat([center, wh], -1).reshape(b, -1, 4))
            mems.append(m.flatten(2).transpose(1, 2))
            masks.append(mk.flatten(1))
        proposals, out_mask, out_mem = torch.cat(props, 1), torch.cat(masks, 1), torch.cat(mems, 1)  # (B, S, .)
        max_shape = None
        if cfg.reparam:
            h0, w0 = self._level_shape(hf, wf, cfg.proposal_strides[0])
            m0 = out_mask[:, : h0 * w0].view(b, h0, w0)
            stride0 = cfg.proposal_strides[0]
            valid_h = (~m0[:, :, 0]).sum(1, keepdim=True).to(memory.dtype) * stride0  # (B, 1)
            valid_w = (~m0[:, 0, :]).sum(1, keepdim=True).to(memory.dtype) * stride0
            size = torch.cat([valid_w, valid_h, valid_w, valid_h], -1)[:, None]  # (B, 1, 4)
            ok = ((proposals > 0.01 * size) & (proposals < 0.99 * size)).all(-1, keepdim=True)
            fill = float(max(h0, w0) * stride0)  # the official max(H_, W_) * stride of the first level
            proposals = proposals.masked_fill(out_mask[..., None], fill).masked_fill(~ok, fill)
            max_shape = (valid_h[:, None, :], valid_w[:, None, :])  # (B, 1, 1) each
        else:
            ok = ((proposals > 0.01) & (proposals < 0.99)).all(-1, keepdim=True)
            proposals = torch.log(proposals / (1 - proposals))
            proposals = proposals.masked_fill(out_mask[..., None], float("inf")).masked_fill(~ok, float("inf"))
        out_mem = out_mem.masked_fill(out_mask[..., None], 0.0).masked_fill(~ok, 0.0)
        out_mem = self.enc_output_norm(self.enc_output(out_mem))  # (B, S, d)
        last = cfg.num_decoder_layers
        enc_logits = self._head(self.class_embed, last)(out_mem)  # (B, S, C)
        delta = self._head(self.bbox_embed, last)(out_mem)  # (B, S, 4)
        if cfg.reparam:
            enc_boxes = box_xyxy_to_cxcywh(delta2bbox(proposals, delta, max_shape))  # pixels
        else:
            enc_boxes = delta + proposals  # unsigmoided
        top = torch.topk(enc_logits[..., 0], num, dim=1).indices  # (B, num)
        ref = torch.gather(enc_boxes, 1, top[..., None].expand(-1, -1, 4)).detach()
        ref = ref if cfg.reparam else ref.sigmoid()
        enc_boxes = enc_boxes if cfg.reparam else enc_boxes.sigmoid()
        anchors = (proposals, delta) if cfg.reparam else None
        return enc_logits, enc_boxes, ref, max_shape, anchors

    def _proposal_counts(self, hf: int, wf: int) -> list[int]:
        """How many cells (proposals) each two-stage level has for a stride-16 ``(Hf, Wf)`` map."""
        return [math.prod(self._level_shape(hf, wf, s)) for s in self.config.proposal_strides]

    @staticmethod
    def _level_shape(hf: int, wf: int, stride: int) -> tuple[int, int]:
        """The map size of the stride-``stride`` re-projection of a stride-16 ``(Hf, Wf)`` map."""
        if stride <= 16:
            f = 16 // stride
            return hf * f, wf * f
        h, w = hf, wf
        for _ in range(int(math.log2(stride // 16))):
            h, w = h // 2, w // 2
        return h, w

    # ------------------------------------------------------------------ forward
    def forward(self, images: Tensor, pad_mask: Tensor | None = None) -> dict:
        """``images (B, 3, H, W)``, ``pad_mask (B, H, W)`` True on padding ->

        ``pred_logits (B, Q1, C)``, ``pred_boxes (B, Q1, 4)`` (normalized cxcywh of the valid image) of the
        last layer's one-to-one queries; ``aux_outputs`` (earlier layers); ``enc_outputs`` (two-stage
        proposals, every cell); in training with hybrid matching also ``pred_logits_one2many``,
        ``pred_boxes_one2many`` and ``aux_outputs_one2many``. With ``reparam`` every group also carries
        ``pred_deltas`` (the box head's raw output) and ``pred_boxes_old`` (the box it was decoded
        against, normalized like ``pred_boxes``), the official outputs of the same names.
        """
        return self._run(images, pad_mask)[0]

    def _run(self, images: Tensor, pad_mask: Tensor | None, keep_attention_inputs: bool = False):
        cfg = self.config
        src, mask, pos = self._features(images, pad_mask)
        b, d, hf, wf = src.shape
        memory = src.flatten(2).transpose(1, 2)  # (B, HW, d)
        key = memory + (pos.flatten(2).transpose(1, 2) + self.level_embed[0])  # (B, HW, d)
        key_mask = ~mask.flatten(1)[:, None, None, :]  # (B, 1, 1, HW) True = attend
        nq1 = cfg.num_queries_one2one
        hybrid = self.training and cfg.num_queries_one2many > 0
        nq = cfg.num_queries if hybrid else nq1
        valid_hw = torch.stack([(~mask[:, :, 0]).sum(1), (~mask[:, 0, :]).sum(1)], -1).to(src.dtype)  # (B, 2)
        valid_ratio = (valid_hw / torch.tensor([hf, wf], device=src.device, dtype=src.dtype)).flip(-1)  # (B, 2) w, h
        out: dict = {}
        max_shape = None
        if cfg.two_stage:
            self._check_map(tuple(images.shape[-2:]), (hf, wf), nq)
            enc_logits, enc_boxes, ref, max_shape, enc_anchors = self._proposals(memory, mask, hf, wf, nq)
            pos_trans = self.pos_trans_norm(self.pos_trans(sine_box_embedding(ref, d)))  # (B, Nq, 2d)
            query_pos, tgt = pos_trans[..., :d], pos_trans[..., d:]
            if cfg.mixed_selection:
                tgt = self.query_embed.weight[:nq][None].expand(b, -1, -1)
            out["enc_outputs"] = {"pred_logits": enc_logits, "pred_boxes": enc_boxes}
        else:
            query_pos, tgt = self.query_embed.weight[:nq].split(d, dim=-1)
            query_pos, tgt = query_pos[None].expand(b, -1, -1), tgt[None].expand(b, -1, -1)
            ref = self.reference_points(query_pos).sigmoid()  # (B, Nq, 4)
        self_mask = None
        if hybrid:  # the two query groups never see each other
            group = torch.arange(nq, device=src.device) >= nq1
            self_mask = group[:, None] == group[None, :]  # (Nq, Nq) True = attend

        px_scale = torch.tensor([wf, hf, wf, hf], device=src.device, dtype=src.dtype) * 16.0  # padded map, pixels
        logits, boxes, attn_inputs = [], [], []
        olds, deltas = [], []  # reparam: the box each layer's delta was decoded against, and the delta
        x, prev_box = tgt, None
        for lid, layer in enumerate(self.layers):
            if cfg.reparam:
                rpb_boxes = ref / px_scale  # pixels -> fraction of the padded map, which BoxRPB scales back
            else:
                rpb_boxes = ref * valid_ratio.repeat(1, 2)[:, None]  # (B, Nq, 4) normalized to the padded map
            if keep_attention_inputs:
                attn_inputs.append((x, query_pos, rpb_boxes))
            x = layer(x, query_pos, rpb_boxes, key, memory, (hf, wf), key_mask, self_mask)
            hs = self.final_norm(x)  # (B, Nq, d)
            delta = self._head(self.bbox_embed, lid)(hs)  # (B, Nq, 4)
            # look-forward-twice: layer i's output box is built on layer i-1's refined box *with* its
            # gradient; otherwise on the detached reference this layer attended with
            base = prev_box if (cfg.look_forward_twice and prev_box is not None) else ref
            box = self._decode(base, delta, max_shape)
            logits.append(self._head(self.class_embed, lid)(hs))
            boxes.append(box)
            olds.append(base)
            deltas.append(delta)
            if cfg.box_refine:
                prev_box = self._decode(ref, delta, max_shape)  # the same values as ``box``
                ref = prev_box.detach()
        if cfg.reparam:
            valid_pixels = self._valid_pixels(images, pad_mask)  # (B, 1, 4)
            boxes = [bx / valid_pixels for bx in boxes]
            olds = [o / valid_pixels for o in olds]
            out["enc_outputs"]["pred_boxes"] = out["enc_outputs"]["pred_boxes"] / valid_pixels
            anchors, enc_delta = enc_anchors
            out["enc_outputs"].update(pred_boxes_old=anchors / valid_pixels, pred_deltas=enc_delta)

        def group(lid: int, queries: slice) -> dict[str, Tensor]:
            g = {"pred_logits": logits[lid][:, queries], "pred_boxes": boxes[lid][:, queries]}
            if cfg.reparam:  # the delta-space L1 (SetCriterion's box_space="delta") needs both
                g.update(pred_boxes_old=olds[lid][:, queries], pred_deltas=deltas[lid][:, queries])
            return g

        one2one, one2many, last = slice(0, nq1), slice(nq1, None), len(logits) - 1
        out.update(group(last, one2one))
        out["aux_outputs"] = [group(lid, one2one) for lid in range(last)]
        if hybrid:
            out.update({f"{k}_one2many": v for k, v in group(last, one2many).items()})
            out["aux_outputs_one2many"] = [group(lid, one2many) for lid in range(last)]
        return out, (attn_inputs, key, memory, key_mask, (hf, wf))

    def _decode(self, ref: Tensor, delta: Tensor, max_shape: tuple[Tensor, Tensor] | None) -> Tensor:
        if self.config.reparam:
            return box_xyxy_to_cxcywh(delta2bbox(ref, delta, max_shape))
        return (delta + inverse_sigmoid(ref)).sigmoid()

    @staticmethod
    def _valid_pixels(images: Tensor, pad_mask: Tensor | None) -> Tensor:
        b, _, h, w = images.shape
        if pad_mask is None:
            hw = torch.tensor([w, h, w, h], device=images.device, dtype=images.dtype).expand(b, 4)
        else:
            vh = (~pad_mask[:, :, 0]).sum(1).to(images.dtype)
            vw = (~pad_mask[:, 0, :]).sum(1).to(images.dtype)
            hw = torch.stack([vw, vh, vw, vh], -1)
        return hw[:, None]  # (B, 1, 4)

    @torch.no_grad()
    def cross_attention_map(self, images: Tensor, pad_mask: Tensor | None = None, layer: int = -1) -> Tensor:
        """``(B, heads, Q1, Hf, Wf)``: the one-to-one queries' cross-attention weights over the map in
        decoder layer ``layer``, computed on the reference (materialized) path."""
        n = len(self.layers)
        if not -n <= layer < n:
            raise ValueError(f"PlainDETR.cross_attention_map: layer must be in [-{n}, {n - 1}] ({n} decoder layers), got {layer}")
        was_training = self.training
        self.eval()
        try:
            _, (inputs, key, memory, key_mask, (hf, wf)) = self._run(images, pad_mask, keep_attention_inputs=True)
        finally:
            self.train(was_training)
        x, query_pos, rpb_boxes = inputs[layer]
        dec = self.layers[layer]
        x = dec.self_attention(x, query_pos, None)  # eval: one-to-one queries only, no group mask
        probs = dec.cross_attn.weights(dec.norm1(x) + query_pos, key, key_mask,
                                       dec.cross_context(rpb_boxes, (hf, wf)))  # (B, H, Q1, HW)
        return probs.unflatten(-1, (hf, wf))


# ----------------------------------------------------------------------------------------- variants

_DEMO = dict(
    embed_dim=32, depths=(1, 1, 2, 2), backbone_heads=(1, 2, 4, 8), window_size=8, pretrained_window_sizes=(8, 8, 8, 4),
    drop_path_rate=0.0, d_model=64, num_heads=4, dim_feedforward=256, num_decoder_layers=3, num_queries_one2one=50,
    num_queries_one2many=100, rpe_hidden_dim=64,
)

PLAIN_DETR_CONFIGS: dict[str, PlainDETRConfig] = {
    # configs/swinv2_small_sup_pt_boxrpe.sh: 46.1 AP (COCO val, 12 epochs, supervised SwinV2-S)
    "plain_detr_swinv2_s_boxrpb": PlainDETRConfig(),
    # configs/swinv2_small_sup_pt_ape.sh: the same detector with plain attention + sine APE
    "plain_detr_swinv2_s_ape": PlainDETRConfig(use_boxrpb=False),
    # the CPU demo: the same code at toy width (configs/vision/detection/plain_detr_demo.yaml)
    "plain_detr_demo": PlainDETRConfig(**_DEMO),
    "plain_detr_demo_ape": PlainDETRConfig(**_DEMO, use_boxrpb=False),
}


# ----------------------------------------------------------------------------------------- official weights


def _split_in_proj(out: dict[str, Tensor], prefix: str, weight: Tensor, bias: Tensor | None) -> None:
    for name, part in zip(("q_proj", "k_proj", "v_proj"), weight.chunk(3, dim=0)):
        out[f"{prefix}{name}.weight"] = part
    if bias is not None:
        for name, part in zip(("q_proj", "k_proj", "v_proj"), bias.chunk(3, dim=0)):
            out[f"{prefix}{name}.bias"] = part


_RENAMES = (  # official prefix -> ours, first match wins
    ("backbone.0.net.body.", "backbone."),
    ("backbone.0.upsample.0.", "upsample."),
    ("input_proj.0.", "input_proj."),
    ("transformer.decoder.final_layer_norm.", "final_norm."),
    ("transformer.decoder.layers.", "layers."),
    ("transformer.", ""),
)


def convert_official(state_dict: dict[str, Tensor], model: PlainDETR) -> dict[str, Tensor]:
    """impiga/Plain-DETR's ``model`` state dict -> ours.

    Renames the module paths (``backbone.0.net.body.`` -> ``backbone.``, ``transformer.decoder.layers.`` ->
    ``layers.``, ...), splits ``nn.MultiheadAttention``'s ``in_proj`` into q/k/v, maps the BoxRPB MLPs
    ``cpb_mlp1`` (x) / ``cpb_mlp2`` (y) to ``position.0.cpb_mlp_x`` / ``cpb_mlp_y`` and SwinV2's
    ``attn.cpb_mlp`` to ``attn.rel_pos.cpb_mlp``; drops the recomputed SwinV2 buffers
    (``relative_coords_table``, ``relative_position_index``). The class / box heads the official model
    also registers under ``transformer.decoder.`` (and, without box refinement, once per layer) are the
    same tensors: each copy is checked equal to the one kept, then dropped. Any other key is passed on,
    so :func:`zoo.hub.checkpoints.strict_filter` lists what does not fit.
    """
    out: dict[str, Tensor] = {}
    heads: dict[str, Tensor] = {}
    in_proj: dict[str, dict[str, Tensor]] = {}
    for key, value in state_dict.items():
        if key.endswith(("relative_coords_table", "relative_position_index")):
            continue
        if key.startswith(("transformer.decoder.class_embed.", "transformer.decoder.bbox_embed.")):
            heads[key[len("transformer.decoder."):]] = value
            continue
        new = key
        for old, repl in _RENAMES:
            if new.startswith(old):
                new = repl + new[len(old):]
                break
        new = new.replace(".attn.cpb_mlp.", ".attn.rel_pos.cpb_mlp.")
        new = new.replace(".cross_attn.cpb_mlp1.", ".cross_attn.position.0.cpb_mlp_x.")
        new = new.replace(".cross_attn.cpb_mlp2.", ".cross_attn.position.0.cpb_mlp_y.")
        for old, repl in ((".cross_attn.q.", ".cross_attn.q_proj."), (".cross_attn.k.", ".cross_attn.k_proj."),
                          (".cross_attn.v.", ".cross_attn.v_proj."), (".cross_attn.proj.", ".cross_attn.out_proj.")):
            new = new.replace(old, repl)
        if new.endswith((".self_attn.in_proj_weight", ".self_attn.in_proj_bias")):
            prefix, leaf = new.rsplit(".", 1)
            in_proj.setdefault(prefix + ".", {})[leaf] = value
            continue
        out[new] = value
    for prefix, parts in in_proj.items():
        if "in_proj_weight" not in parts:
            raise ValueError(f"{prefix}in_proj_bias without {prefix}in_proj_weight")
        _split_in_proj(out, prefix, parts["in_proj_weight"], parts.get("in_proj_bias"))
    # the heads: one copy per distinct module in our model; every official alias must equal it
    kept = {k for k in model.state_dict() if k.startswith(("class_embed.", "bbox_embed."))}
    for key in sorted(k for k in out if k.startswith(("class_embed.", "bbox_embed."))):
        head, index, rest = key.split(".", 2)
        if key in kept:
            continue
        alias = f"{head}.0.{rest}"
        if len(model.class_embed) == 1 and alias in out:  # shared head, stored per layer by the official code
            if not torch.equal(out[key], out[alias]):
                raise ValueError(f"{key} differs from {alias}, but this model shares one head across layers "
                                 "(box_refine=False); the checkpoint needs box_refine=True")
            del out[key]
    for key, value in heads.items():
        if key in out and not torch.equal(out[key], value):
            raise ValueError(f"transformer.decoder.{key} differs from {key}: the official model shares these heads")
        if key not in out:
            head, index, rest = key.split(".", 2)
            alias = f"{head}.0.{rest}"
            if len(model.class_embed) == 1 and alias in out and torch.equal(out[alias], value):
                continue
            out[key] = value  # reported by the strict filter
    return out
