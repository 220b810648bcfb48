"""Reparameterized boxes: the delta-space L1 loss and cost (the official ``--reparam``) against
hand-computed values, and the model's ``pred_deltas`` / ``pred_boxes_old`` outputs."""

from __future__ import annotations

import math

import pytest
import torch

import zoo
from zoo.hub import model_entry
from zoo.vision.detection.losses import SetCriterion
from zoo.vision.detection.matcher import HungarianMatcher
from zoo.vision.detection.models import _images
from zoo.vision.detection.models.plain_detr import bbox2delta, box_xyxy_to_cxcywh, delta2bbox

F64 = torch.float64
SIZE = torch.tensor([100, 200])  # (h, w) of the transformed image: boxes scale by [200, 100, 200, 100]
SCALE = torch.tensor([200.0, 100.0, 200.0, 100.0], dtype=F64)


def test_bbox2delta_by_hand():
    old = torch.tensor([50.0, 40.0, 20.0, 10.0], dtype=F64)  # cxcywh pixels
    target = torch.tensor([60.0, 50.0, 40.0, 20.0], dtype=F64)
    expected = [10 / 20.1, 10 / 10.1, math.log(40 / 20.1), math.log(20 / 10.1)]  # the official 0.1-pixel guard
    torch.testing.assert_close(bbox2delta(old, target), torch.tensor(expected, dtype=F64))
    # broadcast (Q, 1, 4) x (1, T, 4) -> (Q, T, 4), as the matcher uses it
    assert bbox2delta(old.expand(3, 4)[:, None], target.expand(2, 4)[None]).shape == (3, 2, 4)


def _one_query(delta: list[float]) -> dict[str, torch.Tensor]:
    old = torch.tensor([[[50.0, 40.0, 20.0, 10.0]]], dtype=F64) / SCALE  # normalized like pred_boxes
    deltas = torch.tensor([[delta]], dtype=F64, requires_grad=True)
    boxes = torch.tensor([[[0.3, 0.5, 0.2, 0.2]]], dtype=F64)
    return {"pred_logits": torch.tensor([[[3.0]]], dtype=F64), "pred_boxes": boxes, "pred_boxes_old": old, "pred_deltas": deltas}


def test_delta_l1_loss_by_hand():
    out = _one_query([0.5, 1.0, 0.7, 0.6])
    target = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[60.0, 50.0, 40.0, 20.0]], dtype=F64) / SCALE, "size": SIZE}]
    _, losses = SetCriterion()(out, target)  # "auto": the outputs carry pred_deltas
    expected = (abs(0.5 - 10 / 20.1) + abs(1.0 - 10 / 10.1) + abs(0.7 - math.log(40 / 20.1))
                + abs(0.6 - math.log(20 / 10.1)))
    torch.testing.assert_close(losses["loss_bbox"], torch.tensor(expected, dtype=F64))
    _, plain = SetCriterion(box_space="box")(out, target)  # the normalized-box L1 of the same pair
    torch.testing.assert_close(plain["loss_bbox"], torch.tensor(0.0, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(plain["loss_giou"], losses["loss_giou"])  # GIoU is the same in both spaces
    losses["loss_bbox"].backward()
    torch.testing.assert_close(out["pred_deltas"].grad, torch.tensor([[[1.0, 1.0, 1.0, -1.0]]], dtype=F64))  # sign(d - target)


def test_delta_space_matching_by_hand():
    # query 0 sits on the target in box space but predicts far-off deltas; query 1's deltas are exact
    target_px = torch.tensor([[60.0, 50.0, 40.0, 20.0]], dtype=F64)
    old = torch.tensor([[50.0, 40.0, 20.0, 10.0], [70.0, 45.0, 30.0, 30.0]], dtype=F64)
    exact = bbox2delta(old[1], target_px[0])
    out = {"pred_logits": torch.zeros(1, 2, 1, dtype=F64),
           "pred_boxes": torch.stack([target_px[0], old[1]])[None] / SCALE,
           "pred_boxes_old": old[None] / SCALE,
           "pred_deltas": torch.stack([torch.tensor([2.0, 2.0, 2.0, 2.0], dtype=F64), exact])[None]}
    target = [{"labels": torch.tensor([0]), "boxes": target_px / SCALE, "size": SIZE}]
    l1_only = dict(cost_class=0.0, cost_bbox=1.0, cost_giou=0.0)
    [(rows, cols)] = HungarianMatcher(**l1_only)(out, target)
    assert rows.tolist() == [1] and cols.tolist() == [0]
    [(rows, _)] = HungarianMatcher(**l1_only, box_space="box")(out, target)
    assert rows.tolist() == [0]


def test_delta_space_needs_deltas_and_sizes():
    out = _one_query([0.0, 0.0, 0.0, 0.0])
    target = [{"labels": torch.tensor([0]), "boxes": torch.tensor([[0.3, 0.5, 0.2, 0.2]], dtype=F64)}]
    with pytest.raises(ValueError, match=r"needs each target's 'size'"):
        SetCriterion()(out, target)
    plain = {k: out[k] for k in ("pred_logits", "pred_boxes")}
    with pytest.raises(ValueError, match=r"box_space='delta' needs outputs with 'pred_deltas'"):
        SetCriterion(box_space="delta")(plain, [{**target[0], "size": SIZE}])
    with pytest.raises(ValueError, match="box_space must be one of"):
        SetCriterion(box_space="pixels")


def test_reparam_model_outputs_decode_to_its_boxes():
    torch.manual_seed(0)
    model = zoo.create_model("plain_detr_demo", **{**model_entry("plain_detr_demo").test_overrides, "reparam": True,
                                                   "position_embedding": "sine_unnorm"}).double().train()
    (images, _), _ = _images(model)
    mask = torch.zeros(2, 64, 96, dtype=torch.bool)
    mask[1, 48:] = mask[1, :, 64:] = True  # valid 48x64: a multiple of the stride, so the clip size is the valid size
    with torch.no_grad():  # non-zero deltas: the box heads start at zero
        for head in model.bbox_embed:
            head.layers[-1].weight.normal_(0, 0.5)
    out = model(images.double(), mask)
    valid = torch.tensor([[96.0, 64.0, 96.0, 64.0], [64.0, 48.0, 64.0, 48.0]], dtype=F64)[:, None]  # (B, 1, 4) w, h
    groups = [out, *out["aux_outputs"], out["enc_outputs"]]
    groups += [{k[: -len("_one2many")]: v for k, v in out.items() if k.endswith("_one2many") and k.startswith("pred_")}]
    groups += out["aux_outputs_one2many"]
    for g in groups:
        max_shape = (valid[..., 1:2], valid[..., 0:1])  # (B, 1, 1) valid h, w
        decoded = box_xyxy_to_cxcywh(delta2bbox(g["pred_boxes_old"] * valid, g["pred_deltas"], max_shape))
        torch.testing.assert_close(decoded / valid, g["pred_boxes"])
    assert not torch.equal(out["pred_deltas"], torch.zeros_like(out["pred_deltas"]))
    # layer 0 decodes against the selected proposals; layer 1 against layer 0's (look-forward-twice) box
    torch.testing.assert_close(out["pred_boxes_old"], out["aux_outputs"][0]["pred_boxes"])
    # the criterion picks delta space by itself for this model
    gen = torch.Generator().manual_seed(0)
    targets = [{"labels": torch.tensor([1, 2]), "boxes": torch.rand(2, 4, generator=gen, dtype=F64) * 0.3 + 0.2,
                "size": torch.tensor([64, 96])},
               {"labels": torch.tensor([0]), "boxes": torch.tensor([[0.5, 0.5, 0.3, 0.4]], dtype=F64), "size": torch.tensor([48, 64])}]
    total, auto = SetCriterion(k_one2many=2)(out, targets)
    _, delta = SetCriterion(k_one2many=2, box_space="delta")(out, targets)
    _, box = SetCriterion(k_one2many=2, box_space="box")(out, targets)
    assert auto.keys() == delta.keys() and all(torch.equal(auto[k], delta[k]) for k in auto)
    assert not torch.allclose(auto["loss_bbox"], box["loss_bbox"])
    assert all(torch.isfinite(v) for v in auto.values())
    total.backward()
