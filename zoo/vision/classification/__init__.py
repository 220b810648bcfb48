"""Image classifiers: Astroformer (timm MaxxVit layout) and CrossFormer / CrossFormer++.

Importing this package registers every variant twice:

- with timm: ``timm.create_model("crossformer_s", num_classes=10)``, ``features_only=True``, and
  ``pretrained=True, pretrained_cfg_overlay=dict(file="official.pth")`` for a local official
  checkpoint (converted by the model's strict ``checkpoint_filter_fn``);
- with the zoo: ``zoo.create_model("astroformer_1", num_classes=10)`` (overrides are fields of
  the model's config dataclass), ``zoo.list_models("crossformer*")``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
from torch import nn

from zoo.hub import register_model

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

# tiny variants for the registry-driven tests: same code paths (padding, masks, LDA, ACL, MBConv, SE)
_ASTRO_TINY = dict(
    embed_dim=(16, 16, 32, 64), depths=(1, 1, 1, 2), stem_width=8, head_hidden_size=32, img_size=64, num_classes=5
)
_CROSS_TINY = dict(
    embed_dim=16, depths=(1, 3, 1, 1), num_heads=(1, 2, 2, 4), group_size=(3, 3, 2, 1), interval=(2, 2, 1, 1),
    num_classes=5,
)


def _image_input(size: int) -> Any:
    return lambda model: ((torch.randn(2, 3, size, size),), {})


def _register_astroformer(name: str, config: AstroformerConfig) -> None:
    def factory(**overrides: Any) -> nn.Module:
        return Astroformer(replace(config, **overrides))

    factory.__name__ = factory.__qualname__ = name
    register_model(
        name,
        config=config,
        description=f"Astroformer ({name[-1]}), arXiv 2304.05350; timm MaxxVit layout, attention via the core",
        test_overrides=_ASTRO_TINY,
        test_input=lambda model: ((torch.randn(2, 3, model.config.img_size, model.config.img_size),), {}),
    )(factory)


def _register_crossformer(name: str, config: CrossFormerConfig) -> None:
    def factory(**overrides: Any) -> nn.Module:
        return CrossFormer(replace(config, **overrides))

    factory.__name__ = factory.__qualname__ = name
    paper = "CrossFormer++, arXiv 2303.06908" if config.use_acl else "CrossFormer, arXiv 2108.00154"
    register_model(
        name,
        config=config,
        description=f"{paper}; cross-scale attention with dynamic position bias",
        test_overrides=_CROSS_TINY,
        test_input=_image_input(40),
    )(factory)


for _name, _cfg in ASTROFORMER_CONFIGS.items():
    _register_astroformer(_name, _cfg)
for _name, _cfg in CROSSFORMER_CONFIGS.items():
    _register_crossformer(_name, _cfg)
