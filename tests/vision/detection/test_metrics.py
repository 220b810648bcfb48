"""COCO metrics: perfect detections score 1, shuffled ones less; post-processing; the results json."""

from __future__ import annotations

import json

import pytest
import torch
from torchvision.ops import box_convert

pytest.importorskip("pycocotools")

from zoo.vision.detection.metrics import COCO_STATS, CocoMeanAP, coco_results, postprocess, write_results_json  # noqa: E402


def _targets():
    """Three images: small / medium / large boxes of two categories, a crowd region, one empty image."""
    def ann(boxes, labels, crowd):
        boxes = torch.tensor(boxes, dtype=torch.float64).reshape(-1, 4)
        return {"boxes": boxes, "labels": torch.tensor(labels, dtype=torch.long), "iscrowd": torch.tensor(crowd, dtype=torch.long),
                "area": boxes[:, 2] * boxes[:, 3]}
    return [
        {"image_id": 11, "annotations": ann([[10, 10, 20, 20], [100, 50, 120, 90], [0, 0, 5, 5]], [1, 3, 3], [0, 0, 1])},
        {"image_id": 12, "annotations": ann([[30, 40, 40, 40], [200, 10, 6, 8]], [3, 1], [0, 0])},
        {"image_id": 13, "annotations": ann([], [], [])},
    ]


def _perfect(targets):
    dets = []
    for t in targets:
        a = t["annotations"]
        keep = a["iscrowd"] == 0
        dets.append({"boxes": box_convert(a["boxes"][keep].reshape(-1, 4), "xywh", "xyxy"),
                     "scores": torch.linspace(0.9, 0.8, int(keep.sum())), "labels": a["labels"][keep]})
    return dets


def test_perfect_detections_score_one():
    metric = CocoMeanAP()
    targets = _targets()
    metric.update(_perfect(targets)[:2], targets[:2])
    metric.update(_perfect(targets)[2:], targets[2:])
    stats = dict(zip(COCO_STATS, metric.compute().tolist()))
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
        assert stats[name] == pytest.approx(1.0), (name, stats)


def test_shuffled_boxes_score_lower_and_a_detection_on_a_crowd_is_ignored():
    targets = _targets()
    dets = _perfect(targets)
    metric = CocoMeanAP()
    on_crowd = {"boxes": torch.tensor([[0.0, 0, 5, 5]], dtype=torch.float64), "scores": torch.tensor([0.99]),
                "labels": torch.tensor([3])}
    with_crowd = [{k: torch.cat([v, on_crowd[k].to(v)]) for k, v in dets[0].items()}] + dets[1:]
    metric.update(with_crowd, targets)
    assert float(metric.compute()[0]) == pytest.approx(1.0)
    metric.reset()
    shuffled = [dict(d) for d in dets]
    shuffled[0]["boxes"] = dets[0]["boxes"].flip(0)  # each box given to the other object
    metric.update(shuffled, targets)
    ap = float(metric.compute()[0])
    assert 0 <= ap < 0.9


def test_repeated_images_count_once_and_no_detections():
    targets = _targets()
    metric = CocoMeanAP()
    dets = _perfect(targets)
    metric.update(dets, targets)
    metric.update(dets[:1], targets[:1])  # a distributed sampler's padding repeats an image
    assert float(metric.compute()[0]) == pytest.approx(1.0)
    empty = CocoMeanAP()
    none = [{"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.long)}] * 3
    empty.update(none, targets)
    assert float(empty.compute()[0]) == 0.0


def test_postprocess_topk_and_scaling():
    logits = torch.full((1, 3, 4), -10.0)
    logits[0, 1, 2] = 5.0
    logits[0, 2, 0] = 3.0
    boxes = torch.tensor([[[0.5, 0.5, 0.2, 0.2], [0.25, 0.5, 0.5, 1.0], [0.5, 0.5, 1.0, 1.0]]])
    (out,) = postprocess(logits, boxes, torch.tensor([[100, 200]]), topk=2)
    assert out["labels"].tolist() == [2, 0]
    torch.testing.assert_close(out["boxes"], torch.tensor([[0.0, 0, 100, 100], [0, 0, 200, 100]]))
    (out,) = postprocess(logits, boxes, torch.tensor([[100, 200]]), topk=100)
    assert len(out["scores"]) == 12  # at most every (query, class) pair


def test_results_json(tmp_path):
    dets = [{"boxes": torch.tensor([[1.0, 2.0, 11.0, 22.0]]), "scores": torch.tensor([0.5]), "labels": torch.tensor([7])}]
    path = write_results_json(tmp_path / "r" / "results.json", coco_results(dets, [42]))
    assert json.loads(path.read_text()) == [{"image_id": 42, "category_id": 7, "bbox": [1.0, 2.0, 10.0, 20.0], "score": 0.5}]
