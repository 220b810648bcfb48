"""Token-level metrics of music language models."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["token_nll"]


def token_nll(logits: Tensor, targets: Tensor, pad_id: int) -> tuple[Tensor, Tensor]:
    """Summed NLL (nats) of the non-PAD ``targets (B, L)`` under ``logits (B, L, V)``, and their count."""
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=pad_id, reduction="sum")
    return nll, (targets != pad_id).sum()
