"""Focal, L1 and GIoU losses against hand-computed values; the criterion's groups and weights."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.vision.detection.losses import SetCriterion, box_losses, focal_loss


def test_focal_loss_by_hand():
    logits = torch.tensor([[[0.0, 2.0]]], dtype=torch.float64)  # (1, 1, 2)
    onehot = torch.tensor([[[1.0, 0.0]]], dtype=torch.float64)
    # positive at p = 0.5: 0.25 * 0.5^2 * log 2; negative at p = sigmoid(2): 0.75 * p^2 * -log(1 - p)
    p = 1 / (1 + math.exp(-2.0))
    expected = 0.25 * 0.25 * math.log(2) + 0.75 * p**2 * -math.log(1 - p)
    torch.testing.assert_close(focal_loss(logits, onehot, num_boxes=2.0), torch.tensor(expected / 2, dtype=torch.float64))


def test_box_losses_by_hand():
    # pred [0, 0, 2, 2] vs target [1, 1, 3, 3]: IoU 1/7, enclosing 9, union 7 -> GIoU = 1/7 - 2/9
    pred = torch.tensor([[1.0, 1.0, 2.0, 2.0]], dtype=torch.float64)
    target = torch.tensor([[2.0, 2.0, 2.0, 2.0]], dtype=torch.float64)
    l1, giou = box_losses(pred, target, num_boxes=1.0)
    torch.testing.assert_close(l1, torch.tensor(2.0, dtype=torch.float64))
    torch.testing.assert_close(giou, torch.tensor(1 - (1 / 7 - 2 / 9), dtype=torch.float64))
    l1, giou = box_losses(pred[:0], target[:0], 1.0)
    assert float(l1) == 0 and float(giou) == 0


def _group(q: int, b: int = 1, c: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return {"pred_logits": torch.randn(b, q, c, generator=g, dtype=torch.float64, requires_grad=True),
            "pred_boxes": (torch.rand(b, q, 4, generator=g, dtype=torch.float64) * 0.4 + 0.2).requires_grad_()}


def test_perfect_single_query_by_hand():
    # one query exactly on the one target, confident: only the focal terms of the other logits remain
    out = {"pred_logits": torch.tensor([[[-20.0, 20.0, -20.0]]], dtype=torch.float64),
           "pred_boxes": torch.tensor([[[0.5, 0.5, 0.2, 0.2]]], dtype=torch.float64)}
    target = [{"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.5, 0.2, 0.2]], dtype=torch.float64)}]
    total, losses = SetCriterion()(out, target)
    assert set(losses) == {"loss_ce", "loss_bbox", "loss_giou"}
    assert float(losses["loss_bbox"]) == 0 and abs(float(losses["loss_giou"])) < 1e-12
    assert float(total) < 1e-6


def test_groups_weights_and_one_to_many():
    out = _group(4, b=2)
    out["aux_outputs"] = [_group(4, b=2, seed=1)]
    out["enc_outputs"] = _group(4, b=2, seed=2)
    many = _group(8, b=2, seed=3)
    out.update(pred_logits_one2many=many["pred_logits"], pred_boxes_one2many=many["pred_boxes"],
               aux_outputs_one2many=[_group(8, b=2, seed=4)])
    targets = [{"labels": torch.tensor([0, 2]), "boxes": torch.tensor([[0.3, 0.3, 0.2, 0.2], [0.6, 0.6, 0.1, 0.3]], dtype=torch.float64)},
               {"labels": torch.tensor([1]), "boxes": torch.tensor([[0.5, 0.4, 0.3, 0.2]], dtype=torch.float64)}]
    crit = SetCriterion(k_one2many=2, lambda_one2many=0.5)
    total, losses = crit(out, targets)
    suffixes = ["", "_0", "_enc", "_one2many", "_0_one2many"]
    assert set(losses) == {f"loss_{k}{s}" for k in ("ce", "bbox", "giou") for s in suffixes}
    weights = {"ce": 2, "bbox": 5, "giou": 2}
    torch.testing.assert_close(total, sum(weights[n.split("_")[1]] * v for n, v in losses.items()))
    # the one-to-many group: every target twice, 8 queries, 6 boxes, half weight
    repeated = [{"labels": t["labels"].repeat(2), "boxes": t["boxes"].repeat(2, 1)} for t in targets]
    alone = crit.single({"pred_logits": many["pred_logits"], "pred_boxes": many["pred_boxes"]}, repeated, num_boxes=6.0)
    for k, v in alone.items():
        torch.testing.assert_close(losses[f"{k}_one2many"], 0.5 * v)
    # the two-stage proposals are matched class-agnostically: labels all 0
    agnostic = [{**t, "labels": torch.zeros_like(t["labels"])} for t in targets]
    enc = crit.single(out["enc_outputs"], agnostic, num_boxes=3.0)
    torch.testing.assert_close(losses["loss_ce_enc"], enc["loss_ce"])
    total.backward()
    assert all(g["pred_logits"].grad is not None for g in (out, out["enc_outputs"], many))


def test_bad_settings():
    with pytest.raises(ValueError, match="k_one2many"):
        SetCriterion(k_one2many=0)
