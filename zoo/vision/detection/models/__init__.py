"""Plain-DETR (Lin et al. 2023, arXiv 2308.01904): detection on one stride-16 map with BoxRPB.

Importing this package registers ``plain_detr_swinv2_s_boxrpb`` and ``plain_detr_swinv2_s_ape`` (the released
configs) and the CPU demo configs ``plain_detr_demo`` / ``plain_detr_demo_ape``::

    model = zoo.create_model("plain_detr_demo", num_classes=4)
    out = model(images, pad_mask)              # {"pred_logits": (B, 50, 4), "pred_boxes": (B, 50, 4), ...}
    model = zoo.load_official("plain_detr_swinv2_s_boxrpb", "plaindetr_swinv2_small_sup_pt_boxrpe.pth")
"""

from __future__ import annotations

import torch

from zoo.hub import register_family

from .plain_detr import PLAIN_DETR_CONFIGS, PlainDETR, PlainDETRConfig, convert_official

__all__ = ["PLAIN_DETR_CONFIGS", "PlainDETR", "PlainDETRConfig", "convert_official"]


def _images(model: torch.nn.Module) -> tuple[tuple[torch.Tensor, ...], dict]:
    """Two images padded to 64x96 (the second's right and bottom are padding): sizes that need padding
    to the backbone's windows."""
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 64, 96, generator=gen)
    pad_mask = torch.zeros(2, 64, 96, dtype=torch.bool)
    pad_mask[1, 48:] = True
    pad_mask[1, :, 72:] = True
    images[pad_mask[:, None].expand_as(images)] = 0.0
    return (images, pad_mask), {}


register_family(
    PLAIN_DETR_CONFIGS,
    PlainDETR,
    description={
        "plain_detr_swinv2_s_boxrpb": "Plain-DETR, SwinV2-S, BoxRPB decoder, the released boxrpe config "
        "(two-stage, mixed selection, box refine, look-forward-twice, hybrid 300+1500); 46.1 AP in the paper",
        "plain_detr_swinv2_s_ape": "Plain-DETR, SwinV2-S, the plain global decoder with sine APE (no BoxRPB), "
        "the released ape config",
        "plain_detr_demo": "Plain-DETR at toy width for the CPU demo (embed 32, d 64, 3 layers, 50+100 queries), BoxRPB",
        "plain_detr_demo_ape": "plain_detr_demo without BoxRPB, the demo's comparison",
    },
    # every code path (windowed + shifted + global blocks, 4 proposal levels, hybrid groups) at toy size
    test_overrides=dict(
        embed_dim=8, depths=(1, 2, 1, 2), backbone_heads=(1, 1, 2, 2), window_size=4, pretrained_window_sizes=(4, 4, 4, 2),
        d_model=32, num_heads=2, dim_feedforward=32, num_decoder_layers=2, num_queries_one2one=5,
        num_queries_one2many=10, rpe_hidden_dim=16, num_classes=3,
    ),
    test_input=_images,
    official=convert_official,
)
