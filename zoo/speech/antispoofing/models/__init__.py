"""Speech deepfake detectors: SSL and spectral features fused (arXiv 2507.20417).

Importing this package registers, with the zoo (``zoo.list_models("antispoof_*")``):

- the four fusions ``antispoof_fusion_{concat,cross_attention,mutual_cross_attention,gated}``
  (``zoo.list_models("*fusion*")``);
- the baselines ``antispoof_ssl_only`` and ``antispoof_spectral_only``;

each at the XLS-R 300M size with LFCC (overrides are :class:`FusionConfig` fields, e.g.
``spectral=("cqcc",)``, ``ssl_arch="wavlm"``, ``ssl_layer=6``, ``freeze_ssl=True``), and
``zoo.load_official(name, "xlsr.safetensors")`` initializes the SSL branch from a local Hugging Face or
fairseq checkpoint.
"""

from __future__ import annotations

import torch

from zoo.hub import register_family

from .fusion import FUSION_CONFIGS, FUSIONS, FusionConfig, FusionDetector, convert_official

__all__ = ["FUSIONS", "FUSION_CONFIGS", "FusionConfig", "FusionDetector"]

_DESCRIPTIONS = {
    "concat": "concatenation",
    "cross_attention": "cross-attention (SSL frames query the spectral frames)",
    "mutual_cross_attention": "mutual cross-attention (both directions, combined)",
    "gated": "a learned per-dimension gate",
    "ssl_only": "no fusion: the SSL-only baseline",
    "spectral_only": "no fusion: the spectral-only baseline",
}

register_family(
    FUSION_CONFIGS,
    FusionDetector,
    description={
        name: f"SSL (XLS-R 300M size) + LFCC deepfake detector, arXiv 2507.20417; {_DESCRIPTIONS[cfg.fusion]}"
        for name, cfg in FUSION_CONFIGS.items()
    },
    # the same code paths (weighted layer sum, every spectral feature, the fusion) at toy size
    test_overrides=dict(
        ssl_conv_dim=16, ssl_embed_dim=32, ssl_layers=2, ssl_heads=2, ssl_ff_dim=64, ssl_pos_conv_kernel=16,
        ssl_pos_conv_groups=4, spectral=("mfcc", "lfcc"), n_coeffs=8, d_model=32, fusion_heads=2,
    ),
    test_input=lambda model: ((torch.randn(2, 4000),), {}),
    official=convert_official,
)
