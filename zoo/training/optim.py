"""The optimizer every ZooModule uses: AdamW over decay / no-decay groups, warmup then cosine.

Which parameters decay (one rule for every family):

- every parameter with ``dim() >= 2`` decays: linear and convolution kernels alike;
- except normalization parameters (any ``nn.modules.batchnorm._NormBase``, ``LayerNorm``,
  ``GroupNorm``, ``RMSNorm``, ``LocalResponseNorm``), biases and other ``dim() < 2`` tensors;
- except position tables: the parameters a position term (``zoo.core_attention.positions``) owns
  directly, such as relative-embedding and 2-D bias tables. The MLPs inside a term (CrossFormer's
  dynamic position bias, Plain-DETR's BoxRPB) decay like any linear layer here, as CrossFormer's
  official code does; Plain-DETR's official recipe exempts its BoxRPB MLPs (``cpb_mlp``), which
  ``zoo.vision.detection.module.PlainDETRDetector`` builds its own groups for;
- except the names ``model.no_weight_decay()`` returns (timm's convention: embeddings tied to an
  output layer, learned frequencies, ...).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["OptimConfig", "no_weight_decay_names", "param_groups", "build_optimizer", "warmup_cosine", "total_steps"]

_NORMS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.LocalResponseNorm,
    nn.RMSNorm,
)


@dataclass(frozen=True)
class OptimConfig:
    """Settings of :func:`build_optimizer` (AdamW + :func:`warmup_cosine`)."""

    lr: float = 1e-3
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    layer_decay: float | None = None


def no_weight_decay_names(model: nn.Module) -> set[str]:
    """Names of the trainable parameters that get no weight decay (see the module docstring)."""
    from zoo.core_attention.positions import PositionTerm

    skip = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    names: set[str] = set()
    for module_name, module in model.named_modules():
        own = module.named_parameters(prefix=module_name, recurse=False)
        for name, p in own:
            if p.dim() < 2 or isinstance(module, _NORMS) or isinstance(module, PositionTerm) or name in skip:
                names.add(name)
            elif name.endswith(".bias") or name == "bias":
                names.add(name)
    return names


def param_groups(model: nn.Module, weight_decay: float, layer_decay: float | None = None) -> list[dict[str, Any]]:
    """Decay / no-decay parameter groups; with ``layer_decay``, timm's layer-wise lr decay groups
    (``lr_scale`` per group, through the model's ``group_matcher``) split by the same rule."""
    skip = no_weight_decay_names(model)
    if layer_decay is not None:
        from timm.optim import param_groups_layer_decay

        return param_groups_layer_decay(model, weight_decay, no_weight_decay_list=sorted(skip), layer_decay=layer_decay)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (no_decay if name in skip else decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def warmup_cosine(
    optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, min_lr_ratio: float
) -> dict[str, Any]:
    """Linear warmup over ``warmup_steps``, then cosine decay to ``min_lr_ratio`` times each group's lr.

    Returns Lightning's ``lr_scheduler`` dict, stepped every optimizer step. ``total_steps`` is
    usually ``trainer.estimated_stepping_batches``; warmup is capped so at least one step decays.
    """
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
    total = max(1, int(total_steps))
    warmup = min(max(0, warmup_steps), total - 1)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return {"scheduler": torch.optim.lr_scheduler.LambdaLR(optimizer, schedule), "interval": "step"}


def total_steps(module: Any) -> int:
    """Optimizer steps of the whole fit, or 1 when the module is not attached to a trainer."""
    return max(1, int(module.trainer.estimated_stepping_batches)) if module._trainer is not None else 1


def build_optimizer(model: nn.Module, config: OptimConfig, steps: int) -> dict[str, Any]:
    """AdamW over :func:`param_groups` with :func:`warmup_cosine` over ``steps``: Lightning's
    ``configure_optimizers`` dict."""
    if config.lr <= 0 or config.weight_decay < 0 or config.warmup_steps < 0:
        raise ValueError(f"optimizer settings need lr > 0, weight_decay >= 0, warmup_steps >= 0; got {config}")
    groups = param_groups(model, config.weight_decay, config.layer_decay)
    opt = torch.optim.AdamW(groups, lr=config.lr, betas=tuple(config.betas))
    # layer-decay groups carry "lr_scale"; LambdaLR multiplies each group's own initial lr
    for g in opt.param_groups:
        g["lr"] = g["initial_lr"] = config.lr * g.get("lr_scale", 1.0)
    return {"optimizer": opt, "lr_scheduler": warmup_cosine(opt, steps, config.warmup_steps, config.min_lr_ratio)}
