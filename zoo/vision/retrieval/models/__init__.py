"""Text-video retrieval models: X-Pool and the mean-pooling baseline, on a CLIP ViT backbone.

Importing this package registers ``xpool_vit_b32``, ``xpool_vit_b16`` and ``meanpool_vit_b32``:
``zoo.create_model("xpool_vit_b32")`` (random weights; ``XPoolConfig`` fields as overrides),
``zoo.load_official("xpool_vit_b32", "xpool_msrvtt9k.pth")`` for an official checkpoint, and
:func:`~.xpool.load_clip_weights` for local OpenAI / open_clip / Hugging Face CLIP weights.
"""

from __future__ import annotations

import torch

from zoo.hub import register_family

from . import xpool
from .xpool import XPOOL_CONFIGS, XPool, XPoolConfig, load_clip_weights

__all__ = ["XPOOL_CONFIGS", "XPool", "XPoolConfig", "load_clip_weights"]

#: a CLIP of the same code paths at toy size (the demo's backbone): 32x32 frames in 8x8 patches
TINY_CLIP = dict(
    embed_dim=32, image_size=32, patch_size=8, vision_width=32, vision_layers=2, vision_heads=2,
    text_width=32, text_layers=2, text_heads=2, context_length=16,
)


def _test_input(model: XPool) -> tuple[tuple[torch.Tensor, ...], dict]:
    cfg = model.config
    tokens = torch.randint(1, cfg.vocab_size - 1, (3, 7))
    tokens[:, 0], tokens[torch.arange(3), torch.tensor([6, 4, 5])] = cfg.vocab_size - 2, cfg.vocab_size - 1  # SOT ... EOT
    return (tokens, torch.randn(2, 4, 3, cfg.image_size, cfg.image_size)), {}


register_family(
    XPOOL_CONFIGS,
    XPool,
    description={
        "xpool_vit_b32": "X-Pool (Gorti et al., CVPR 2022) on CLIP ViT-B/32: text-conditioned attention over frames",
        "xpool_vit_b16": "X-Pool (Gorti et al., CVPR 2022) on CLIP ViT-B/16: text-conditioned attention over frames",
        "meanpool_vit_b32": "CLIP ViT-B/32 with mean pooling over frames (CLIP4Clip meanP baseline of X-Pool)",
    },
    test_overrides=TINY_CLIP,
    test_input=_test_input,
    official=xpool.convert_official,
)
