"""Hungarian matching of DETR queries to ground-truth boxes (``scipy.optimize.linear_sum_assignment``).

The cost of assigning query ``q`` to target ``t`` is, as Deformable-DETR's and Plain-DETR's matcher:

    C = w_class * (focal_pos(p_q[c_t]) - focal_neg(p_q[c_t])) + w_bbox * ||b_q - b_t||_1 - w_giou * GIoU(b_q, b_t)

with ``p = sigmoid(logits)``, ``focal_pos(p) = alpha (1 - p)^gamma (-log(p + eps))``,
``focal_neg(p) = (1 - alpha) p^gamma (-log(1 - p + eps))``, boxes normalized cxcywh, and weights
``(2, 5, 2)`` by default. Each image is matched on its own: ``min(queries, targets)`` pairs.

With reparameterized boxes (the official ``--reparam``; ``box_space="delta"``, or ``"auto"`` when the
outputs carry ``pred_deltas``) the L1 term is measured in delta space, as the official matcher's
``cost_bbox_type="reparam"``: ``||d_q - bbox2delta(o_q, b_t)||_1`` with ``d_q`` the query's predicted
deltas, ``o_q`` the box they were decoded against (``pred_boxes_old``) and both boxes in pixels
(normalized boxes times the target's ``size``); the GIoU term is unchanged (GIoU does not change when
the axes are scaled).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from scipy.optimize import linear_sum_assignment
from torch import Tensor
from torchvision.ops import box_convert, generalized_box_iou

from .models.plain_detr import bbox2delta

__all__ = ["BOX_SPACES", "HungarianMatcher", "delta_space", "matching_cost", "pixel_scale"]

#: where the box L1 is measured: "box" (normalized cxcywh), "delta" (the reparam deltas), "auto" (delta
#: when the outputs carry ``pred_deltas``, i.e. the model has ``reparam``)
BOX_SPACES = ("auto", "box", "delta")


def delta_space(box_space: str, outputs: dict[str, Any], where: str) -> bool:
    """Whether ``outputs`` are to be compared in delta space under ``box_space``."""
    has = "pred_deltas" in outputs and "pred_boxes_old" in outputs
    if box_space == "delta" and not has:
        raise ValueError(f"{where}: box_space='delta' needs outputs with 'pred_deltas' and 'pred_boxes_old' "
                         f"(a model with reparam=True), got keys {sorted(outputs)}")
    return has if box_space == "auto" else box_space == "delta"


def pixel_scale(target: dict[str, Any], like: Tensor, where: str) -> Tensor:
    """``(4,)`` ``[w, h, w, h]`` of a target's ``size`` (the transformed image's ``(h, w)``)."""
    if "size" not in target:
        raise ValueError(f"{where}: the delta-space L1 needs each target's 'size' (h, w) to work in pixels, "
                         f"got target keys {sorted(target)}")
    return torch.as_tensor(target["size"]).to(like).flip(0).repeat(2)  # (h, w) -> (w, h, w, h)


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
    deltas: Tensor | None = None,
    boxes_old: Tensor | None = None,
    scale: Tensor | None = None,
) -> Tensor:
    """The ``(Q, T)`` cost between one image's queries (``logits (Q, C)``, ``boxes (Q, 4)`` cxcywh) and
    its targets (``labels (T,)``, ``target_boxes (T, 4)`` cxcywh).

    Given ``deltas (Q, 4)``, ``boxes_old (Q, 4)`` and the pixel ``scale (4,)``, the L1 term is the
    delta-space one (see the module docstring)."""
    prob = logits.sigmoid()[:, labels]  # (Q, T)
    neg = (1 - alpha) * prob**gamma * -(1 - prob + 1e-8).log()
    pos = alpha * (1 - prob) ** gamma * -(prob + 1e-8).log()
    if deltas is None:
        l1 = torch.cdist(boxes, target_boxes.to(boxes.dtype), p=1)  # (Q, T)
    else:
        target_deltas = bbox2delta((boxes_old * scale)[:, None], (target_boxes.to(boxes.dtype) * scale)[None])  # (Q, T, 4)
        l1 = (deltas[:, None] - target_deltas).abs().sum(-1)  # (Q, T)
    giou = generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(target_boxes.to(boxes.dtype), "cxcywh", "xyxy"))
    return cost_class * (pos - neg) + cost_bbox * l1 - cost_giou * giou


class HungarianMatcher:
    """``matcher(outputs, targets)`` -> per image ``(query indices, target indices)`` int64 tensors.

    ``outputs``: ``pred_logits (B, Q, C)`` and ``pred_boxes (B, Q, 4)``; ``targets``: dicts with
    ``labels (T,)`` and ``boxes (T, 4)``. An image without targets gets two empty index tensors.
    ``box_space`` (:data:`BOX_SPACES`): where the L1 cost is measured; in delta space the outputs also
    need ``pred_deltas`` / ``pred_boxes_old`` and the targets ``size``.
    """

    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 alpha: float = 0.25, gamma: float = 2.0, box_space: str = "auto") -> None:
        if min(cost_class, cost_bbox, cost_giou) < 0 or cost_class + cost_bbox + cost_giou == 0:
            raise ValueError(f"HungarianMatcher: costs must be >= 0 and not all 0, got {cost_class}, {cost_bbox}, {cost_giou}")
        if box_space not in BOX_SPACES:
            raise ValueError(f"HungarianMatcher: box_space must be one of {BOX_SPACES}, got {box_space!r}")
        self.weights = {"cost_class": cost_class, "cost_bbox": cost_bbox, "cost_giou": cost_giou, "alpha": alpha, "gamma": gamma}
        self.box_space = box_space

    def __repr__(self) -> str:
        return f"HungarianMatcher({', '.join(f'{k}={v}' for k, v in self.weights.items())}, box_space={self.box_space!r})"

    @torch.no_grad()
    def __call__(self, outputs: dict[str, Any], targets: Sequence[dict[str, Tensor]]) -> list[tuple[Tensor, Tensor]]:
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]  # (B, Q, C), (B, Q, 4)
        if len(targets) != logits.shape[0]:
            raise ValueError(f"HungarianMatcher: {logits.shape[0]} images of outputs but {len(targets)} targets")
        in_deltas = delta_space(self.box_space, outputs, "HungarianMatcher")
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
            extra = {}
            if in_deltas:
                extra = {"deltas": outputs["pred_deltas"][i], "boxes_old": outputs["pred_boxes_old"][i],
                         "scale": pixel_scale(target, boxes, "HungarianMatcher")}
            cost = matching_cost(logits[i], boxes[i], labels, target["boxes"], **self.weights, **extra)  # (Q, T)
            rows, cols = linear_sum_assignment(cost.double().cpu().numpy())
            out.append((torch.as_tensor(rows, dtype=torch.int64), torch.as_tensor(cols, dtype=torch.int64)))
        return out
