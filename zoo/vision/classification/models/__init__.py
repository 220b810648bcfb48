"""Image classifiers: Astroformer (timm MaxxVit layout) and CrossFormer / CrossFormer++.

Importing this package registers every variant twice:

- with timm (in each model file): ``timm.create_model("crossformer_s", num_classes=10)``,
  ``features_only=True``, and ``pretrained=True, pretrained_cfg_overlay=dict(file="official.pth")``
  for a local official checkpoint (converted by the model's strict ``checkpoint_filter_fn``);
- with the zoo (here): ``zoo.create_model("astroformer_1", num_classes=10)`` (overrides are fields of
  the model's config dataclass), ``zoo.list_models("crossformer*")``, and
  ``zoo.load_official("crossformer_s", "crossformer-s.pth")``.
"""

from __future__ import annotations

import torch

from zoo.hub import register_family

from . import astroformer, crossformer
from .astroformer import ASTROFORMER_CONFIGS, Astroformer, AstroformerConfig
from .crossformer import CROSSFORMER_CONFIGS, CrossFormer, CrossFormerConfig

__all__ = [
    "ASTROFORMER_CONFIGS",
    "Astroformer",
    "AstroformerConfig",
    "CROSSFORMER_CONFIGS",
    "CrossFormer",
    "CrossFormerConfig",
]

register_family(
    ASTROFORMER_CONFIGS,
    Astroformer,
    description={
        name: f"Astroformer ({name[-1]}), arXiv 2304.05350; timm MaxxVit layout, attention via the core"
        for name in ASTROFORMER_CONFIGS
    },
    # the same code paths (padding, masks, MBConv, SE) at toy size
    test_overrides=dict(
        embed_dim=(16, 16, 32, 64), depths=(1, 1, 1, 2), stem_width=8, head_hidden_size=32, img_size=64, num_classes=5
    ),
    test_input=lambda model: ((torch.randn(2, 3, model.config.img_size, model.config.img_size),), {}),
    official=astroformer.convert_official,
)

register_family(
    CROSSFORMER_CONFIGS,
    CrossFormer,
    description={
        name: ("CrossFormer++, arXiv 2303.06908" if cfg.use_acl else "CrossFormer, arXiv 2108.00154")
        + "; cross-scale attention with dynamic position bias"
        for name, cfg in CROSSFORMER_CONFIGS.items()
    },
    # the same code paths (padding, masks, LDA, ACL) at toy size
    test_overrides=dict(
        embed_dim=16, depths=(1, 3, 1, 1), num_heads=(1, 2, 2, 4), group_size=(3, 3, 2, 1), interval=(2, 2, 1, 1),
        num_classes=5,
    ),
    test_input=lambda model: ((torch.randn(2, 3, 40, 40),), {}),
    official=crossformer.convert_official,
)
