"""Plain-DETR's set criterion: Hungarian-matched sigmoid focal, L1 and GIoU losses on every output group.

For one group of outputs (``pred_logits (B, Q, C)``, ``pred_boxes (B, Q, 4)`` normalized cxcywh) and
targets, with ``N`` the number of target boxes in the batch (summed over processes, at least 1):

- ``loss_ce = sum_{b, q, c} focal(logit[b, q, c], onehot[b, q, c]) / N`` (sigmoid focal loss, alpha
  0.25, gamma 2; an unmatched query's one-hot is all zeros: there is no background logit);
- ``loss_bbox = sum_matched ||b - b_t||_1 / N`` and ``loss_giou = sum_matched (1 - GIoU(b, b_t)) / N``.

The criterion applies that to the last decoder layer (``loss_*``), to each earlier layer's
``aux_outputs`` (``loss_*_<i>``, each matched on its own), to the two-stage proposals ``enc_outputs``
(``loss_*_enc``, matched with every label set to 0: class-agnostic, as Deformable-DETR and the
official Plain-DETR), and, when the model returns them (hybrid matching, training), to the
one-to-many group (``*_one2many``: the same losses against the targets repeated ``k_one2many`` times,
scaled by ``lambda_one2many``). The total is ``sum_name weight[name] * loss[name]`` with weights
``cls 2, bbox 5, giou 2`` for every group, as the released configs.

Reparameterized boxes (the official ``--reparam``): with ``box_space="delta"`` (or the default
``"auto"`` when the outputs carry ``pred_deltas``, i.e. the model has ``reparam=True``) the L1 loss, and
the matcher's L1 cost, are taken in delta space, as the official ``loss_bbox_type="reparam"``:
``loss_bbox = sum_matched ||d - bbox2delta(o, b_t)||_1 / N`` with ``d`` the predicted deltas
(``pred_deltas``), ``o`` the box they were decoded against (``pred_boxes_old``) and ``b_t`` the target,
both boxes in pixels (normalized boxes times the target's ``size``); the GIoU loss stays on the boxes.
The official reparam config also sets the L1 weights to 1 (``--set_cost_bbox 1 --bbox_loss_coef 1``):
pass ``weight_bbox=1`` and a matcher with ``cost_bbox=1`` for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torchvision.ops import box_convert, generalized_box_iou, sigmoid_focal_loss

from .matcher import BOX_SPACES, HungarianMatcher, delta_space, pixel_scale
from .models.plain_detr import bbox2delta

__all__ = ["SetCriterion", "box_losses", "delta_l1_loss", "focal_loss"]


def focal_loss(logits: Tensor, onehot: Tensor, num_boxes: float, alpha: float = 0.25, gamma: float = 2.0) -> Tensor:
    """Sigmoid focal loss summed over every query and class, divided by ``num_boxes``."""
    return sigmoid_focal_loss(logits, onehot, alpha=alpha, gamma=gamma, reduction="sum") / num_boxes


def box_losses(boxes: Tensor, target_boxes: Tensor, num_boxes: float) -> tuple[Tensor, Tensor]:
    """``(L1, GIoU)`` losses of matched ``boxes (M, 4)`` against ``target_boxes (M, 4)`` (cxcywh),
    each summed over the pairs and divided by ``num_boxes``."""
    l1 = (boxes - target_boxes).abs().sum() / num_boxes
    if boxes.shape[0] == 0:
        return l1, boxes.sum() * 0
    # the pairwise GIoU's diagonal, without the eps that generalized_box_iou_loss adds (as the official code)
    giou = generalized_box_iou(box_convert(boxes, "cxcywh", "xyxy"), box_convert(target_boxes, "cxcywh", "xyxy")).diagonal()
    return l1, (1 - giou).sum() / num_boxes


def delta_l1_loss(deltas: Tensor, boxes_old: Tensor, target_boxes: Tensor, num_boxes: float) -> Tensor:
    """The reparam L1: ``sum |deltas - bbox2delta(boxes_old, target_boxes)| / num_boxes`` over matched
    ``(M, 4)`` rows, the boxes cxcywh in pixels."""
    return (deltas - bbox2delta(boxes_old, target_boxes)).abs().sum() / num_boxes


def _num_boxes(targets: Sequence[dict[str, Tensor]], device: torch.device) -> float:
    n = torch.tensor([float(sum(len(t["labels"]) for t in targets))], device=device)
    world = 1
    if dist.is_available() and dist.is_initialized():
        dist.all_reduce(n)
        world = dist.get_world_size()
    return max(float(n) / world, 1.0)


class SetCriterion(nn.Module):
    """``criterion(outputs, targets) -> (total, {name: unweighted loss})`` (see the module docstring).

    Args:
        matcher: the Hungarian matcher (default: costs 2, 5, 2).
        weight_ce, weight_bbox, weight_giou: loss weights.
        alpha, gamma: the focal loss's.
        k_one2many: how many times the targets are repeated for the one-to-many group.
        lambda_one2many: the one-to-many group's weight.
        box_space: where the L1 loss is taken (:data:`~zoo.vision.detection.matcher.BOX_SPACES`):
            ``"box"`` normalized cxcywh, ``"delta"`` the reparam deltas, ``"auto"`` delta when the outputs
            carry ``pred_deltas``. Also the default matcher's.
    """

    def __init__(
        self,
        matcher: HungarianMatcher | None = None,
        weight_ce: float = 2.0,
        weight_bbox: float = 5.0,
        weight_giou: float = 2.0,
        alpha: float = 0.25,
        gamma: float = 2.0,
        k_one2many: int = 6,
        lambda_one2many: float = 1.0,
        box_space: str = "auto",
    ) -> None:
        super().__init__()
        if k_one2many < 1 or lambda_one2many < 0 or min(weight_ce, weight_bbox, weight_giou) < 0:
            raise ValueError(
                f"SetCriterion: need k_one2many >= 1, lambda_one2many >= 0 and weights >= 0; got {k_one2many}, "
                f"{lambda_one2many}, ({weight_ce}, {weight_bbox}, {weight_giou})"
            )
        if box_space not in BOX_SPACES:
            raise ValueError(f"SetCriterion: box_space must be one of {BOX_SPACES}, got {box_space!r}")
        self.box_space = box_space
        self.matcher = matcher or HungarianMatcher(alpha=alpha, gamma=gamma, box_space=box_space)
        self.weights = {"loss_ce": weight_ce, "loss_bbox": weight_bbox, "loss_giou": weight_giou}
        self.alpha, self.gamma = alpha, gamma
        self.k_one2many, self.lambda_one2many = k_one2many, lambda_one2many

    def single(self, outputs: dict[str, Tensor], targets: Sequence[dict[str, Tensor]], num_boxes: float) -> dict[str, Tensor]:
        """``loss_ce``, ``loss_bbox``, ``loss_giou`` of one output group (matched here)."""
        logits, boxes = outputs["pred_logits"], outputs["pred_boxes"]  # (B, Q, C), (B, Q, 4)
        indices = self.matcher(outputs, targets)
        batch = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)]).to(logits.device)  # (M,)
        src = torch.cat([s for s, _ in indices]).to(logits.device)  # (M,)
        labels = torch.cat([t["labels"][j.to(t["labels"].device)] for t, (_, j) in zip(targets, indices)]).to(logits.device)
        target_boxes = torch.cat([t["boxes"][j.to(t["boxes"].device)] for t, (_, j) in zip(targets, indices)])
        onehot = torch.zeros_like(logits)  # (B, Q, C)
        onehot[batch, src, labels] = 1
        l1, giou = box_losses(boxes[batch, src], target_boxes.to(boxes), num_boxes)
        if delta_space(self.box_space, outputs, "SetCriterion"):
            scale = torch.stack([pixel_scale(t, boxes, "SetCriterion") for t in targets])[batch]  # (M, 4)
            old = outputs["pred_boxes_old"][batch, src]  # (M, 4)
            l1 = delta_l1_loss(outputs["pred_deltas"][batch, src], old * scale, target_boxes.to(boxes) * scale, num_boxes)
        return {"loss_ce": focal_loss(logits, onehot, num_boxes, self.alpha, self.gamma), "loss_bbox": l1, "loss_giou": giou}

    def group(self, outputs: dict[str, Any], targets: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
        """The losses of one query group: last layer, ``aux_outputs`` layers and ``enc_outputs``."""
        num_boxes = _num_boxes(targets, outputs["pred_logits"].device)
        losses = self.single(outputs, targets, num_boxes)
        for i, aux in enumerate(outputs.get("aux_outputs") or []):
            losses.update({f"{k}_{i}": v for k, v in self.single(aux, targets, num_boxes).items()})
        if outputs.get("enc_outputs") is not None:
            agnostic = [{**t, "labels": torch.zeros_like(t["labels"])} for t in targets]
            losses.update({f"{k}_enc": v for k, v in self.single(outputs["enc_outputs"], agnostic, num_boxes).items()})
        return losses

    def forward(self, outputs: dict[str, Any], targets: Sequence[dict[str, Tensor]]) -> tuple[Tensor, dict[str, Tensor]]:
        losses = self.group(outputs, targets)
        if "pred_logits_one2many" in outputs:
            many = {"pred_logits": outputs["pred_logits_one2many"], "pred_boxes": outputs["pred_boxes_one2many"],
                    "aux_outputs": outputs.get("aux_outputs_one2many")}
            if "pred_deltas_one2many" in outputs:
                many.update(pred_deltas=outputs["pred_deltas_one2many"], pred_boxes_old=outputs["pred_boxes_old_one2many"])
            repeated = [{**t, "labels": t["labels"].repeat(self.k_one2many), "boxes": t["boxes"].repeat(self.k_one2many, 1)}
                        for t in targets]
            losses.update({f"{k}_one2many": v * self.lambda_one2many for k, v in self.group(many, repeated).items()})
        total = sum(self.weights[name.split("_")[0] + "_" + name.split("_")[1]] * value for name, value in losses.items())
        return total, losses
