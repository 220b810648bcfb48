"""Optimizer pieces shared by the domains' LightningModules."""

from __future__ import annotations

import math
from typing import Any

import torch


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


def adamw(
    model: torch.nn.Module,
    lr: float,
    betas: tuple[float, float] | list[float],
    weight_decay: float,
    no_decay_keywords: tuple[str, ...] = (),
) -> torch.optim.AdamW:
    """AdamW where only matrix weights decay: biases, norms and any parameter whose name contains
    one of ``no_decay_keywords`` (embeddings, relative-position tables, ...) get no weight decay."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            keep = p.dim() == 2 and not any(word in name for word in no_decay_keywords)
            (decay if keep else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
