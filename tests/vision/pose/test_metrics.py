"""Pose metrics against hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from zoo.vision.pose.metrics import PerActionError, mpjpe, mpjve, n_mpjpe, p_mpjpe


def _pose(n: int = 5, j: int = 17, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, j, 3))


def test_mpjpe_hand_computed():
    target = np.zeros((2, 2, 3))
    pred = np.array([[[3.0, 4, 0], [0, 0, 1]], [[0, 0, 0], [0, 2, 0]]])
    assert mpjpe(pred, target) == pytest.approx((5 + 1 + 0 + 2) / 4)
    out = mpjpe(torch.tensor(pred), torch.tensor(target))
    assert isinstance(out, torch.Tensor) and float(out) == pytest.approx(2.0)


def test_rotated_scaled_copy():
    """A rotated + scaled + shifted copy has P-MPJPE 0; N-MPJPE ignores the scale, so it equals the
    N-MPJPE of the rotation alone, and the hand-computed optimal-scale error."""
    target = _pose()
    rot = Rotation.from_euler("xyz", [0.3, -0.2, 0.5]).as_matrix()
    rotated = target @ rot.T
    copy = 1.7 * rotated + np.array([0.1, -0.2, 0.3])
    assert p_mpjpe(copy, target) == pytest.approx(0.0, abs=1e-9)
    assert n_mpjpe(1.7 * rotated, target) == pytest.approx(n_mpjpe(rotated, target), rel=1e-9)
    s = (rotated * target).sum((1, 2)) / (rotated**2).sum((1, 2))  # per-frame least-squares scale
    expected = np.linalg.norm(s[:, None, None] * rotated - target, axis=-1).mean()
    assert n_mpjpe(1.7 * rotated, target) == pytest.approx(expected, rel=1e-9)
    assert n_mpjpe(1.7 * rotated, target) > 0.01


def test_p_mpjpe_reflection_fix():
    """A mirrored pose cannot be aligned by a rotation: P-MPJPE stays > 0 (no reflection allowed)."""
    target = _pose(seed=1)
    mirrored = target * np.array([-1.0, 1, 1])
    assert p_mpjpe(mirrored, target) > 0.1
    # and the aligned error is never above the unaligned one
    noisy = target + 0.1 * _pose(seed=2)
    assert p_mpjpe(noisy, target) <= mpjpe(noisy, target) + 1e-12


def test_mpjve_and_shape_errors():
    target = np.zeros((3, 1, 3))
    pred = np.array([[[0.0, 0, 0]], [[1, 0, 0]], [[1, 0, 0]]])  # velocities (1,0,0), (0,0,0)
    assert mpjve(pred, target) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="share a shape"):
        mpjpe(np.zeros((2, 17, 3)), np.zeros((2, 16, 3)))
    with pytest.raises(ValueError, match="N >= 2"):
        mpjve(np.zeros((1, 17, 3)), np.zeros((1, 17, 3)))


def test_per_action_average():
    m = PerActionError(3, scale=1000.0)
    m.update(torch.tensor([0.01, 0.03, 0.1]), torch.tensor([0, 0, 2]))
    per = m.per_action()
    assert per[0] == pytest.approx(20.0) and math.isnan(per[1]) and per[2] == pytest.approx(100.0)
    assert float(m.compute()) == pytest.approx(60.0)  # mean over actions, not over frames (45)
    with pytest.raises(ValueError, match="action ids"):
        m.update(torch.tensor([0.1]), torch.tensor([3]))
