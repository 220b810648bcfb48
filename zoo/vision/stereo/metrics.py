"""Stereo metrics on valid (and, where given, non-occluded) ground-truth pixels.

- :func:`epe`: end-point error, the mean absolute disparity error in pixels;
- :func:`d1`: KITTI's D1, the fraction of pixels whose error is > 3 px **and** > 5 % of the true disparity;
- :func:`d1_raft`: the fraction with error > 3 px only, what RAFT-Stereo's validation scripts call D1;
- :func:`bad_n`: the fraction with error > ``n`` px (bad-1, bad-2, bad-3 for ``n`` = 1, 2, 3).

Each takes ``pred, gt (B, 1, H, W)`` (or any equal shapes), ``valid`` (bool, same shape) and an optional
``noc`` (non-occluded, bool) that further restricts the pixels; ``per_image=True`` returns one value per
image ``(B,)`` (NaN where an image has no valid pixel), else the value over every selected pixel.
:class:`StereoErrors` averages a metric over images (each image weighs the same, as RAFT-Stereo's and most
papers' validation tables), skipping images without valid pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = ["METRICS", "epe", "d1", "d1_raft", "bad_n", "per_image_errors", "StereoErrors"]

#: the metric names :func:`per_image_errors` returns, in table order
METRICS: tuple[str, ...] = ("epe", "d1", "d1_3px", "bad1", "bad2", "bad3")


def _selected(pred: Tensor, gt: Tensor, valid: Tensor, noc: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
    if pred.shape != gt.shape or valid.shape != gt.shape or (noc is not None and noc.shape != gt.shape):
        shapes = f"pred {tuple(pred.shape)}, gt {tuple(gt.shape)}, valid {tuple(valid.shape)}"
        raise ValueError(f"stereo metrics: shapes differ ({shapes}{'' if noc is None else f', noc {tuple(noc.shape)}'})")
    if valid.dtype != torch.bool or (noc is not None and noc.dtype != torch.bool):
        raise ValueError(f"stereo metrics: valid and noc must be bool masks, got {valid.dtype}, {None if noc is None else noc.dtype}")
    mask = valid & torch.isfinite(gt) if noc is None else valid & noc & torch.isfinite(gt)
    err = (pred.float() - torch.where(mask, gt, torch.zeros((), dtype=gt.dtype)).float()).abs()
    return err, gt.float(), mask


def _reduce(values: Tensor, mask: Tensor, per_image: bool) -> Tensor:
    values = torch.where(mask, values.float(), torch.zeros(()))
    if per_image:
        dims = tuple(range(1, values.dim()))
        count = mask.sum(dims)
        return torch.where(count > 0, values.sum(dims) / count.clamp_min(1), torch.full_like(count, float("nan"), dtype=values.dtype))
    count = mask.sum()
    return values.sum() / count if count > 0 else values.new_tensor(float("nan"))


def epe(pred: Tensor, gt: Tensor, valid: Tensor, noc: Tensor | None = None, per_image: bool = False) -> Tensor:
    """Mean absolute disparity error (px) over the selected pixels."""
    err, _, mask = _selected(pred, gt, valid, noc)
    return _reduce(err, mask, per_image)


def d1(pred: Tensor, gt: Tensor, valid: Tensor, noc: Tensor | None = None, per_image: bool = False) -> Tensor:
    """KITTI's D1: fraction (in [0, 1]) of pixels with error > 3 px and > 5 % of the true disparity."""
    err, target, mask = _selected(pred, gt, valid, noc)
    return _reduce((err > 3.0) & (err > 0.05 * target.abs()), mask, per_image)


def d1_raft(pred: Tensor, gt: Tensor, valid: Tensor, noc: Tensor | None = None, per_image: bool = False) -> Tensor:
    """RAFT-Stereo's validation "D1": fraction of pixels with error > 3 px (no relative condition)."""
    return bad_n(pred, gt, valid, 3.0, noc, per_image)


def bad_n(pred: Tensor, gt: Tensor, valid: Tensor, n: float, noc: Tensor | None = None, per_image: bool = False) -> Tensor:
    """Fraction of pixels with error > ``n`` px (bad-1 / bad-2 / bad-3 ...)."""
    if n < 0:
        raise ValueError(f"bad_n: n must be >= 0, got {n}")
    err, _, mask = _selected(pred, gt, valid, noc)
    return _reduce(err > n, mask, per_image)


def per_image_errors(pred: Tensor, gt: Tensor, valid: Tensor, noc: Tensor | None = None) -> dict[str, Tensor]:
    """Every metric of :data:`METRICS` per image, ``{name: (B,)}``."""
    return {
        "epe": epe(pred, gt, valid, noc, per_image=True),
        "d1": d1(pred, gt, valid, noc, per_image=True),
        "d1_3px": d1_raft(pred, gt, valid, noc, per_image=True),
        "bad1": bad_n(pred, gt, valid, 1.0, noc, per_image=True),
        "bad2": bad_n(pred, gt, valid, 2.0, noc, per_image=True),
        "bad3": bad_n(pred, gt, valid, 3.0, noc, per_image=True),
    }


class StereoErrors(Metric):
    """The mean over images of one per-image value (``update(values (B,))``, NaN entries skipped); the
    fractions (D1, bad-n) scaled by ``scale`` (100 for percentages). NaN before any valid image."""

    full_state_update = False

    def __init__(self, scale: float = 1.0) -> None:
        super().__init__()
        self.scale = scale
        self.add_state("total", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, values: Tensor) -> None:
        values = values.detach().double().reshape(-1)
        keep = torch.isfinite(values)
        self.total += values[keep].sum()
        self.count += keep.sum()

    def compute(self) -> Tensor:
        if self.count == 0:
            return self.total.new_tensor(float("nan"))
        return self.scale * self.total / self.count
