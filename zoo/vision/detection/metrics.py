"""COCO detection metrics: the official top-k post-processing and pycocotools' COCOeval.

- :func:`postprocess`: as the official ``PostProcess``: the ``topk`` (100) highest ``sigmoid(logit)``
  over every (query, class) pair of an image, each with its query's box in corner pixels of the
  original image;
- :class:`CocoMeanAP`: a torchmetrics ``Metric`` gathering detections and ground truth (crowd
  annotations included, as ignore regions) over the epoch and every process, scored by
  ``pycocotools.cocoeval.COCOeval`` (iou type ``bbox``, areas from the annotations); ``compute``
  returns the twelve COCO numbers in the order of :data:`COCO_STATS` (AP, AP50, AP75, APs, APm, APl,
  AR1, AR10, AR100, ARs, ARm, ARl); -1 where the data have no ground truth of that kind, as COCOeval;
- :func:`coco_results` / :func:`write_results_json`: detections as a COCO results json
  (``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric
from torchvision.ops import box_convert

__all__ = ["COCO_STATS", "CocoMeanAP", "coco_results", "coco_eval", "postprocess", "write_results_json"]

COCO_STATS: tuple[str, ...] = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")


@torch.no_grad()
def postprocess(logits: Tensor, boxes: Tensor, sizes: Tensor, topk: int = 100) -> list[dict[str, Tensor]]:
    """Per image ``{"scores" (k,), "labels" (k,), "boxes" (k, 4) xyxy pixels}`` from ``logits (B, Q, C)``,
    normalized cxcywh ``boxes (B, Q, 4)`` and ``sizes (B, 2)`` ``(h, w)`` to scale to; ``k = min(topk, Q C)``."""
    b, q, c = logits.shape
    prob = logits.sigmoid().reshape(b, q * c)  # (B, Q C)
    scores, index = prob.topk(min(topk, q * c), dim=1)  # (B, k)
    query, labels = index // c, index % c  # (B, k)
    xyxy = box_convert(boxes, "cxcywh", "xyxy")  # (B, Q, 4)
    xyxy = torch.gather(xyxy, 1, query[..., None].expand(-1, -1, 4))  # (B, k, 4)
    h, w = sizes.to(xyxy).unbind(-1)  # (B,)
    xyxy = xyxy * torch.stack([w, h, w, h], -1)[:, None]  # (B, k, 4) pixels
    return [{"scores": s, "labels": lab, "boxes": bx} for s, lab, bx in zip(scores, labels, xyxy)]


def coco_results(detections: Sequence[dict[str, Tensor]], image_ids: Sequence[int]) -> list[dict[str, Any]]:
    """COCO results entries (``bbox`` as ``[x, y, w, h]`` pixels) of :func:`postprocess` outputs."""
    out = []
    for det, image_id in zip(detections, image_ids):
        xywh = box_convert(det["boxes"].detach().double().cpu(), "xyxy", "xywh").tolist()
        for box, score, label in zip(xywh, det["scores"].tolist(), det["labels"].tolist()):
            out.append({"image_id": int(image_id), "category_id": int(label), "bbox": [round(v, 3) for v in box],
                        "score": round(float(score), 5)})
    return out


def write_results_json(path: str | Path, results: list[dict[str, Any]]) -> Path:
    """Write COCO results entries as json (atomically: aside, then renamed)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(results))
    tmp.replace(path)
    return path


def _pycocotools() -> tuple[Any, Any]:
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError("COCO metrics need pycocotools: pip install pycocotools") from err
    return COCO, COCOeval


def coco_eval(images: Sequence[int], ground_truth: list[dict[str, Any]], results: list[dict[str, Any]]) -> np.ndarray:
    """The twelve COCOeval ``bbox`` numbers of ``results`` against ``ground_truth`` annotations
    (``{"image_id", "category_id", "bbox", "area", "iscrowd"}``) over ``images``."""
    COCO, COCOeval = _pycocotools()
    categories = sorted({a["category_id"] for a in ground_truth})
    if not ground_truth:
        return np.full(len(COCO_STATS), -1.0)
    if not results:  # COCOeval needs one detection; with none, every recall and precision is 0
        return np.zeros(len(COCO_STATS))
    gt = COCO()
    gt.dataset = {"images": [{"id": int(i)} for i in images], "categories": [{"id": c} for c in categories],
                  "annotations": [{**a, "id": k + 1} for k, a in enumerate(ground_truth)]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dt = gt.loadRes([dict(r) for r in results])
        ev = COCOeval(gt, dt, "bbox")
        ev.params.imgIds = [int(i) for i in images]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return np.asarray(ev.stats, dtype=np.float64)


def _first_copy(rows: np.ndarray, copies: dict[int, int]) -> np.ndarray:
    """Rows (image id in column 0) with each image's block kept once: a distributed sampler pads the
    last batch with repeated images, whose rows then appear ``copies[id]`` times in equal blocks."""
    if not rows.size or all(k == 1 for k in copies.values()):
        return rows
    keep = np.ones(len(rows), dtype=bool)
    for image_id, k in copies.items():
        if k > 1:
            where = np.flatnonzero(rows[:, 0] == image_id)
            keep[where[len(where) // k:]] = False
    return rows[keep]


class CocoMeanAP(Metric):
    """COCO box AP of an epoch's detections; ``compute()`` -> the ``(12,)`` stats of :data:`COCO_STATS`.

    ``update(detections, targets)``: :func:`postprocess` outputs (pixels of the original image) and
    the data's targets (``image_id`` and ``annotations``: ``boxes`` xywh pixels, ``labels``,
    ``iscrowd``, ``area``).
    """

    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("images", default=[], dist_reduce_fx="cat")
        self.add_state("detections", default=[], dist_reduce_fx="cat")
        self.add_state("ground_truth", default=[], dist_reduce_fx="cat")

    def update(self, detections: Sequence[dict[str, Tensor]], targets: Sequence[dict[str, Any]]) -> None:
        if len(detections) != len(targets):
            raise ValueError(f"CocoMeanAP: {len(detections)} detections for {len(targets)} targets")
        for det, target in zip(detections, targets):
            image_id = float(target["image_id"])
            xywh = box_convert(det["boxes"].detach().double(), "xyxy", "xywh")  # (k, 4)
            k = len(xywh)
            self.images.append(torch.tensor([image_id], dtype=torch.float64, device=self.device))
            self.detections.append(torch.cat([
                xywh.new_full((k, 1), image_id), xywh, det["scores"].detach().double()[:, None], det["labels"].double()[:, None],
            ], 1).to(self.device))  # (k, 7): image, x, y, w, h, score, label
            ann = target["annotations"]
            boxes = ann["boxes"].double().to(self.device).reshape(-1, 4)
            m = len(boxes)
            self.ground_truth.append(torch.cat([
                boxes.new_full((m, 1), image_id), boxes, ann["labels"].double().to(boxes)[:, None],
                ann["iscrowd"].double().to(boxes)[:, None], ann["area"].double().to(boxes)[:, None],
            ], 1))  # (m, 8): image, x, y, w, h, label, iscrowd, area

    @staticmethod
    def _rows(state: Any, width: int) -> np.ndarray:
        if isinstance(state, list):
            state = torch.cat(state) if state else torch.zeros(0, width, dtype=torch.float64)
        return state.reshape(-1, width).double().cpu().numpy()

    def compute(self) -> Tensor:
        ids, counts = np.unique(self._rows(self.images, 1)[:, 0].astype(np.int64), return_counts=True)
        copies = dict(zip(ids.tolist(), counts.tolist()))
        dets = _first_copy(self._rows(self.detections, 7), copies)
        gts = _first_copy(self._rows(self.ground_truth, 8), copies)
        results = [{"image_id": int(r[0]), "bbox": r[1:5].tolist(), "score": float(r[5]), "category_id": int(r[6])} for r in dets]
        truth = [{"image_id": int(r[0]), "bbox": r[1:5].tolist(), "category_id": int(r[5]), "iscrowd": int(r[6]),
                  "area": float(r[7])} for r in gts]
        return torch.tensor(coco_eval(ids.tolist(), truth, results), dtype=torch.float32)
