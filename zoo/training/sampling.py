"""The one next-token sampler every generator uses: temperature, top-k and nucleus (top-p).

The nucleus rule, everywhere: sort by probability and drop a token when the probability mass
strictly *before* it already reaches ``top_p``; the token that crosses ``top_p`` is kept, and so is
the most likely token always. ``temperature == 0`` is greedy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["sample_next", "check_sampling"]


def check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise a ValueError naming the argument when a sampling setting is out of range."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def sample_next(
    logits: Tensor,
    *,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    forbid: Sequence[int] = (),
    generator: torch.Generator | None = None,
) -> Tensor:
    """One token per row from ``logits (B, V)``; ``forbid`` lists token ids never sampled (e.g. PAD)."""
    check_sampling(temperature, top_k, top_p)
    logits = logits.float()  # (B, V)
    if forbid:
        logits = logits.index_fill(-1, torch.as_tensor(list(forbid), device=logits.device), float("-inf"))
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature  # (B, V)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)  # (B, V)
        probs = sorted_logits.softmax(-1)  # (B, V)
        drop = probs.cumsum(-1) - probs >= top_p  # (B, V) mass strictly before reaches top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)[:, 0]  # (B,)
