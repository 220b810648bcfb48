"""timm registration shared by the classifier families (one call per family).

:func:`register_timm_family` gives every variant of a family a timm entrypoint
(``timm.create_model(name, pretrained=..., features_only=..., num_classes=...)``), its pretrained cfg,
and the local-checkpoint route ``pretrained=True, pretrained_cfg_overlay=dict(file=...)`` through the
family's strict official-checkpoint filter.

The head fix: timm drops the classifier of a loaded checkpoint whenever ``num_classes`` differs from
the pretrained cfg's (1000 by default), *after* the filter, so a 10-class official Astroformer loaded
with ``num_classes=10`` silently kept a random head. Here the overlay's ``num_classes`` is the
model's, so timm keeps whatever the filter returns: the checkpoint's head when its shape matches,
the model's own fresh head (timm's fine-tuning behaviour) when it does not.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from torch import Tensor, nn

from zoo.hub import strict_filter, unwrap_state_dict

__all__ = ["register_timm_family", "timm_filter"]


def timm_filter(convert: Callable[[dict[str, Tensor], nn.Module], dict[str, Tensor]], head: str) -> Callable:
    """timm's ``pretrained_filter_fn``: unwrap, ``convert``, then the hub's strict check, where only
    the classifier (keys under ``head``) may be missing or sized for other classes."""

    def filter_fn(state_dict: dict[str, Any], model: nn.Module) -> dict[str, Tensor]:
        converted = convert(unwrap_state_dict(state_dict, source="(timm pretrained_cfg file)"), model)
        return strict_filter(converted, model, source="(timm pretrained_cfg file)", keep_own=(head,))

    return filter_fn


def register_timm_family(
    module: str,
    model_cls: type[nn.Module],
    configs: Mapping[str, Any],
    pretrained_cfgs: Mapping[str, dict[str, Any]],
    filter_fn: Callable,
    feature_cfg: dict[str, Any],
) -> Callable[..., nn.Module]:
    """Register every ``configs`` variant with timm, entrypoints living in ``module``; returns
    ``create(variant, pretrained=False, **kwargs)``."""

    def create(variant: str, pretrained: bool = False, **kwargs: Any) -> nn.Module:
        if pretrained:
            overlay = dict(kwargs.pop("pretrained_cfg_overlay", None) or {})
            overlay.setdefault("num_classes", kwargs.get("num_classes", configs[variant].num_classes))
            kwargs["pretrained_cfg_overlay"] = overlay
        return build_model_with_cfg(
            model_cls, variant, pretrained, model_cfg=configs[variant], pretrained_filter_fn=filter_fn,
            feature_cfg=dict(feature_cfg), **kwargs,  # timm pops keys from it
        )

    namespace = vars(sys.modules[module])
    namespace["default_cfgs"] = generate_default_cfgs({f"{name}.untrained": cfg for name, cfg in pretrained_cfgs.items()})
    for name in configs:
        # timm's entrypoint contract is ``fn(pretrained=False, **kwargs)``; the kwargs reach the typed
        # constructor (or timm's own options such as ``features_only``), where unknown names fail.
        def entrypoint(pretrained: bool = False, _variant: str = name, **kwargs: Any) -> nn.Module:
            return create(_variant, pretrained, **kwargs)

        entrypoint.__name__ = entrypoint.__qualname__ = name
        entrypoint.__module__ = module
        namespace[name] = register_model(entrypoint)
    return create
