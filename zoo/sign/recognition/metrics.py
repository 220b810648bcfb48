"""Sign recognition metrics: word error rate as the paper reports it.

BdSLW401 (arXiv 2503.02360) reports WER for isolated signs. :func:`word_error_rate` is the general
Levenshtein WER, ``(substitutions + deletions + insertions) / reference words``; for isolated signs
every reference is one word and every hypothesis one word, so WER = 1 - top-1 accuracy
(:class:`IsolatedWER`, the metric the module logs as ``wer``).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["IsolatedWER", "edit_distance", "word_error_rate"]


def edit_distance(hyp: Sequence[str], ref: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences."""
    prev = list(range(len(ref) + 1))
    for i, h in enumerate(hyp, 1):
        cur = [i]
        for j, r in enumerate(ref, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (h != r)))
        prev = cur
    return prev[-1]


def word_error_rate(hyps: Sequence[Sequence[str]], refs: Sequence[Sequence[str]]) -> float:
    """Corpus WER: total edit distance over total reference words."""
    if len(hyps) != len(refs):
        raise ValueError(f"word_error_rate: {len(hyps)} hypotheses for {len(refs)} references")
    words = sum(len(r) for r in refs)
    if words == 0:
        raise ValueError("word_error_rate: the references have no words")
    return sum(edit_distance(h, r) for h, r in zip(hyps, refs)) / words


class IsolatedWER(Metric):
    """WER of isolated-sign predictions: wrong top-1 predictions over predictions."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("errors", default=torch.tensor(0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        self.errors += (logits.argmax(-1) != target).sum()
        self.total += target.numel()

    def compute(self) -> Tensor:
        return self.errors.float() / self.total.clamp_min(1)
