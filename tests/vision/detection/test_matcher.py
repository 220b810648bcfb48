"""The Hungarian matcher against brute force over every assignment, on tiny cases."""

from __future__ import annotations

import itertools

import pytest
import torch
from torchvision.ops import box_convert, generalized_box_iou

from zoo.vision.detection.matcher import HungarianMatcher, matching_cost


def _random_case(seed: int, queries: int, targets: int, classes: int = 5):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(1, queries, classes, generator=g, dtype=torch.float64)
    centre = torch.rand(1, queries, 2, generator=g, dtype=torch.float64) * 0.6 + 0.2
    boxes = torch.cat([centre, torch.rand(1, queries, 2, generator=g, dtype=torch.float64) * 0.3 + 0.05], -1)
    t_centre = torch.rand(targets, 2, generator=g, dtype=torch.float64) * 0.6 + 0.2
    t_boxes = torch.cat([t_centre, torch.rand(targets, 2, generator=g, dtype=torch.float64) * 0.3 + 0.05], -1)
    labels = torch.randint(0, classes, (targets,), generator=g)
    return {"pred_logits": logits, "pred_boxes": boxes}, [{"labels": labels, "boxes": t_boxes}]


def test_cost_is_the_focal_l1_giou_formula():
    out, (t,) = _random_case(0, 3, 2)
    cost = matching_cost(out["pred_logits"][0], out["pred_boxes"][0], t["labels"], t["boxes"])
    for q in range(3):
        for j in range(2):
            p = torch.sigmoid(out["pred_logits"][0, q, t["labels"][j]])
            focal = 0.25 * (1 - p) ** 2 * -torch.log(p + 1e-8) - 0.75 * p**2 * -torch.log(1 - p + 1e-8)
            l1 = (out["pred_boxes"][0, q] - t["boxes"][j]).abs().sum()
            xyxy = box_convert(torch.stack([out["pred_boxes"][0, q], t["boxes"][j]]), "cxcywh", "xyxy")
            giou = generalized_box_iou(xyxy[:1], xyxy[1:])[0, 0]
            torch.testing.assert_close(cost[q, j], 2 * focal + 5 * l1 - 2 * giou)


@pytest.mark.parametrize("queries, targets", [(1, 1), (3, 2), (4, 4), (5, 3), (6, 1)])
@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force(queries, targets, seed):
    out, tgt = _random_case(seed * 17 + queries, queries, targets)
    (rows, cols), = HungarianMatcher()(out, tgt)
    assert len(rows) == len(cols) == targets and len(set(rows.tolist())) == targets
    cost = matching_cost(out["pred_logits"][0], out["pred_boxes"][0], tgt[0]["labels"], tgt[0]["boxes"])
    best = min(sum(cost[q, j] for j, q in enumerate(perm)) for perm in itertools.permutations(range(queries), targets))
    torch.testing.assert_close(cost[rows, cols].sum(), best)


def test_zero_targets_and_batches():
    out, tgt = _random_case(1, 4, 2)
    out = {k: torch.cat([v, v]) for k, v in out.items()}
    tgt = [tgt[0], {"labels": torch.zeros(0, dtype=torch.long), "boxes": torch.zeros(0, 4, dtype=torch.float64)}]
    (r0, c0), (r1, c1) = HungarianMatcher()(out, tgt)
    assert len(r0) == 2 and r1.numel() == 0 and c1.numel() == 0 and r1.dtype == torch.int64


def test_errors():
    out, tgt = _random_case(2, 3, 1, classes=4)
    tgt[0]["labels"] = torch.tensor([4])
    with pytest.raises(ValueError, match="outside the model's 4 classes"):
        HungarianMatcher()(out, tgt)
    with pytest.raises(ValueError, match="2 targets"):
        HungarianMatcher()(out, tgt * 2)
    with pytest.raises(ValueError, match="costs"):
        HungarianMatcher(0, 0, 0)
