"""Hungarian matching of DETR queries to ground-truth boxes (``scipy.optimize.linear_sum_assignment``).

The cost of assigning query ``q`` to target ``t`` is, as Deformable-DETR's and Plain-DETR's matcher:

    C = w_class * (focal_pos(p_q[c_t]) - focal_neg(p_q[c_t])) + w_bbox * ||b_q - b_t||_1 - w_giou * GIoU(b_q, b_t)

with ``p = sigmoid(logits)``, ``focal_pos(p) = alpha (1 - p)^gamma (-log(p + eps))``,
``focal_neg(p) = (1 - alpha) p^gamma (-log(1 - p + eps))``, boxes normalized cxcywh, and weights
``(2, 5, 2)`` by default. Each image is matched on its own: ``min(queries, targets)`` pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import box_convert, generalized_box_iou

__all__ = ["HungarianMatcher", "matching_cost"]


def matching_cost(
    logits: Tensor,
    boxes: Tensor,
    labels: Tensor,
    target_boxes: Tensor,
    *,
    cost_class: float = 2.0,
    cost_bbox: float = 5.0,
    cost_giou: float = 2.0,
    alpha: float = 0.25,
    gamma: float = 2.0,
) -> Tensor:
    """The ``(Q, T)`` cost between one image's queries (``logits (Q, C)``, ``boxes (Q, 4)`` cxcywh) and
    its targets (``labels (T,)``, ``target_boxes (T, 4)`` cxcywh)."""
    prob = logits.sigmoid()[:, labels]  # (Q, T)
    neg = (1 - alpha) * prob**gamma * -(1 - prob + 1e-8).log()
    pos = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
    l1 = torch.cdist(boxes, target_boxes.to(boxes.dtype), p=1)  # (Q, T)
    giou = generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(target_boxes.to(boxes.dtype), "cxcywh", "xyxy"))
    return cost_class * (pos - neg) + cost_bbox * l1 - cost_giou * giou


class HungarianMatcher:
    """``matcher(outputs, targets)`` -> per image ``(query indices, target indices)`` int64 tensors.

    ``outputs``: ``pred_logits (B, Q, C)`` and ``pred_boxes (B, Q, 4)``; ``targets``: dicts with
    ``labels (T,)`` and ``boxes (T, 4)``. An image without targets gets two empty index tensors.
    """

    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 alpha: float = 0.25, gamma: float = 2.0) -> None:
        if min(cost_class, cost_bbox, cost_giou) < 0 or cost_class + cost_bbox + cost_giou == 0:
            raise ValueError(f"HungarianMatcher: costs must be >= 0 and not all 0, got {cost_class}, {cost_bbox}, {cost_giou}")
        self.weights = {"cost_class": cost_class, "cost_bbox": cost_bbox, "cost_giou": cost_giou, "alpha": alpha, "gamma": gamma}

    def __repr__(self) -> str:
        return f"HungarianMatcher({', '.join(f'{k}={v}' for k, v in self.weights.items())})"

    @torch.no_grad()
    def __call__(self, outputs: dict[str, Any], targets: Sequence[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]  # (B, Q, C), (B, Q, 4)
        if len(targets) != logits.shape[0]:
            raise ValueError(f"HungarianMatcher: {logits.shape[0]} images of outputs but {len(targets)} targets")
        out = []
        for i, target in enumerate(targets):
            labels = target["labels"]
            if labels.numel() == 0:
                empty = torch.zeros(0, dtype=torch.int64)
                out.append((empty, empty.clone()))
                continue
            if int(labels.max()) >= logits.shape[-1] or int(labels.min()) < 0:
                raise ValueError(
                    f"HungarianMatcher: target labels {labels.tolist()} outside the model's {logits.shape[-1]} classes"
                )
            cost = matching_cost(logits[i], boxes[i], labels, target["boxes"], **self.weights)  # (Q, T)
            rows, cols = linear_sum_assignment(cost.double().cpu().numpy())
            out.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return out
