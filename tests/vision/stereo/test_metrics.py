"""The stereo metrics on hand-made cases: KITTI's D1 rule against RAFT-Stereo's, bad-n, masks, averaging."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.vision.stereo.metrics import METRICS, StereoErrors, bad_n, d1, d1_raft, epe, per_image_errors


def _case() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    # five pixels: errors 0.5, 1.5, 2.5, 4 (gt 100: 4 < 5 % of 100), 4 (gt 20: 4 > 5 % of 20); one invalid with error 50
    gt = torch.tensor([10.0, 10.0, 10.0, 100.0, 20.0, 10.0]).view(1, 1, 1, 6)
    pred = gt + torch.tensor([0.5, -1.5, 2.5, 4.0, -4.0, 50.0]).view(1, 1, 1, 6)
    valid = torch.tensor([True, True, True, True, True, False]).view(1, 1, 1, 6)
    return pred, gt, valid


def test_hand_made_values():
    pred, gt, valid = _case()
    assert float(epe(pred, gt, valid)) == pytest.approx((0.5 + 1.5 + 2.5 + 4 + 4) / 5)
    assert float(d1(pred, gt, valid)) == pytest.approx(1 / 5)  # only the gt-20 pixel: > 3 px and > 1 px
    assert float(d1_raft(pred, gt, valid)) == pytest.approx(2 / 5)  # both 4-px errors
    assert float(bad_n(pred, gt, valid, 1)) == pytest.approx(4 / 5)
    assert float(bad_n(pred, gt, valid, 2)) == pytest.approx(3 / 5)
    assert float(bad_n(pred, gt, valid, 3)) == pytest.approx(2 / 5)


def test_noc_mask_restricts_and_per_image_values():
    pred, gt, valid = _case()
    noc = torch.tensor([True, True, True, False, False, True]).view(1, 1, 1, 6)
    assert float(epe(pred, gt, valid, noc)) == pytest.approx((0.5 + 1.5 + 2.5) / 3)
    assert float(d1(pred, gt, valid, noc)) == 0.0
    both = torch.cat([pred, gt])  # second image: a perfect prediction
    values = per_image_errors(both, torch.cat([gt, gt]), torch.cat([valid, valid]))
    assert set(values) == set(METRICS)
    assert values["epe"].tolist() == pytest.approx([2.5, 0.0])
    assert values["d1"].tolist() == pytest.approx([0.2, 0.0])
    empty = epe(pred, gt, torch.zeros_like(valid), per_image=True)
    assert math.isnan(float(empty[0]))


def test_inf_ground_truth_is_never_counted():
    pred, gt, valid = _case()
    gt = gt.clone()
    gt[..., 0] = float("inf")
    assert float(epe(pred, gt, valid)) == pytest.approx((1.5 + 2.5 + 4 + 4) / 4)


def test_bad_arguments():
    pred, gt, valid = _case()
    with pytest.raises(ValueError, match="shapes differ"):
        epe(pred, gt[..., :3], valid)
    with pytest.raises(ValueError, match="bool masks"):
        epe(pred, gt, valid.float())
    with pytest.raises(ValueError, match="n must be >= 0"):
        bad_n(pred, gt, valid, -1)


def test_stereo_errors_average_over_images_skipping_empty_ones():
    metric = StereoErrors(scale=100.0)
    with pytest.warns(UserWarning, match="before the ``update``"):
        assert math.isnan(float(metric.compute()))
    metric.update(torch.tensor([0.1, float("nan")]))
    metric.update(torch.tensor([0.3]))
    assert float(metric.compute()) == pytest.approx(20.0)
