"""3-D pose errors: MPJPE (Protocol 1), P-MPJPE (Protocol 2), N-MPJPE (Protocol 3), MPJVE.

Every function takes ``pred`` and ``target`` of shape ``(N, J, 3)`` (numpy arrays or tensors; any
leading shape ``(..., J, 3)`` works) and returns the mean over frames and joints in the input's
units -- a float for numpy input, a 0-d tensor for tensor input. The ``*_per_frame`` forms return the
``(...,)`` per-frame means that the per-action averages of :class:`PerActionError` are built from.

- **MPJPE**: mean Euclidean distance per joint.
- **P-MPJPE**: after a per-frame similarity Procrustes alignment of ``pred`` to ``target``
  (translation, rotation, uniform scale; the reflection fix flips the last singular vector when the
  best orthogonal map has determinant -1, so the alignment is a proper rotation).
- **N-MPJPE**: after the per-frame least-squares scale ``<pred, target> / <pred, pred>`` only.
- **MPJVE**: MPJPE of the first differences along the frame axis (the velocity error).

As the papers report them, the Human3.6M numbers are in millimetres and averaged first over the
frames of each action, then over the actions (:class:`PerActionError`).
"""

from __future__ import annotations

from typing import overload

import numpy as np
import torch
from torch import Tensor
from torchmetrics import Metric

__all__ = [
    "PerActionError",
    "mpjpe",
    "mpjpe_per_frame",
    "mpjve",
    "n_mpjpe",
    "n_mpjpe_per_frame",
    "p_mpjpe",
    "p_mpjpe_per_frame",
    "procrustes_align",
]


def _pair(pred: np.ndarray | Tensor, target: np.ndarray | Tensor, name: str) -> tuple[Tensor, Tensor, bool]:
    numpy_in = isinstance(pred, np.ndarray)
    p = torch.as_tensor(pred)
    t = torch.as_tensor(target, device=p.device)
    if p.shape != t.shape or p.dim() < 2 or p.shape[-1] != 3:
        raise ValueError(f"{name}: pred and target must share a shape (..., J, 3), got {tuple(p.shape)} and {tuple(t.shape)}")
    return p, t, numpy_in


def _out(x: Tensor, numpy_in: bool) -> float | Tensor:
    return float(x) if numpy_in else x


def mpjpe_per_frame(pred: Tensor, target: Tensor) -> Tensor:
    """``(..., J, 3)`` -> ``(...,)``: the mean joint distance of each frame."""
    return torch.linalg.vector_norm(pred - target, dim=-1).mean(dim=-1)


def procrustes_align(pred: Tensor, target: Tensor) -> Tensor:
    """``pred`` mapped onto ``target`` by the per-frame best similarity (``(..., J, 3)``), in float64."""
    p, t = pred.double(), target.double()
    mu_p, mu_t = p.mean(dim=-2, keepdim=True), t.mean(dim=-2, keepdim=True)  # (..., 1, 3)
    p0, t0 = p - mu_p, t - mu_t  # (..., J, 3)
    norm_p = torch.linalg.vector_norm(p0, dim=(-2, -1), keepdim=True).clamp_min(1e-12)  # (..., 1, 1)
    norm_t = torch.linalg.vector_norm(t0, dim=(-2, -1), keepdim=True).clamp_min(1e-12)  # (..., 1, 1)
    p0, t0 = p0 / norm_p, t0 / norm_t
    h = p0.transpose(-1, -2) @ t0  # (..., 3, 3)
    u, s, vt = torch.linalg.svd(h)  # (..., 3, 3), (..., 3), (..., 3, 3)
    # the reflection fix: a determinant -1 map becomes the nearest rotation
    sign = torch.sign(torch.linalg.det(u @ vt))  # (...,)
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    fix = torch.ones_like(s)  # (..., 3)
    fix[..., -1] = sign
    rot = (u * fix.unsqueeze(-2)) @ vt  # (..., 3, 3): p0 @ rot ~ t0
    scale = (s * fix).sum(dim=-1)[..., None, None] * norm_t / norm_p  # (..., 1, 1)
    return scale * ((p - mu_p) @ rot) + mu_t  # (..., J, 3)


def p_mpjpe_per_frame(pred: Tensor, target: Tensor) -> Tensor:
    return mpjpe_per_frame(procrustes_align(pred, target), target.double()).to(pred.dtype)


def n_mpjpe_per_frame(pred: Tensor, target: Tensor) -> Tensor:
    dot = (pred * target).sum(dim=(-2, -1), keepdim=True)  # (..., 1, 1)
    sq = (pred * pred).sum(dim=(-2, -1), keepdim=True).clamp_min(1e-12)  # (..., 1, 1)
    return mpjpe_per_frame(dot / sq * pred, target)


@overload
def mpjpe(pred: np.ndarray, target: np.ndarray) -> float: ...
@overload
def mpjpe(pred: Tensor, target: Tensor) -> Tensor: ...
def mpjpe(pred, target):
    """Protocol 1: mean per-joint position error."""
    p, t, numpy_in = _pair(pred, target, "mpjpe")
    return _out(mpjpe_per_frame(p, t).mean(), numpy_in)


@overload
def p_mpjpe(pred: np.ndarray, target: np.ndarray) -> float: ...
@overload
def p_mpjpe(pred: Tensor, target: Tensor) -> Tensor: ...
def p_mpjpe(pred, target):
    """Protocol 2: MPJPE after per-frame similarity Procrustes alignment (with the reflection fix)."""
    p, t, numpy_in = _pair(pred, target, "p_mpjpe")
    return _out(p_mpjpe_per_frame(p, t).mean(), numpy_in)


@overload
def n_mpjpe(pred: np.ndarray, target: np.ndarray) -> float: ...
@overload
def n_mpjpe(pred: Tensor, target: Tensor) -> Tensor: ...
def n_mpjpe(pred, target):
    """Protocol 3: MPJPE after the per-frame least-squares scale of ``pred``."""
    p, t, numpy_in = _pair(pred, target, "n_mpjpe")
    return _out(n_mpjpe_per_frame(p, t).mean(), numpy_in)


@overload
def mpjve(pred: np.ndarray, target: np.ndarray) -> float: ...
@overload
def mpjve(pred: Tensor, target: Tensor) -> Tensor: ...
def mpjve(pred, target):
    """Mean per-joint velocity error over consecutive frames ``(N, J, 3)`` (``N >= 2``)."""
    p, t, numpy_in = _pair(pred, target, "mpjve")
    if p.dim() != 3 or p.shape[0] < 2:
        raise ValueError(f"mpjve: expected (N >= 2, J, 3) consecutive frames, got {tuple(p.shape)}")
    return _out(mpjpe_per_frame(p[1:] - p[:-1], t[1:] - t[:-1]).mean(), numpy_in)


class PerActionError(Metric):
    """Mean of per-frame errors within each action, then over the actions that occurred (the papers'
    Human3.6M average). ``update(errors (N,), actions (N,) int)``; :meth:`per_action` gives the
    ``(num_actions,)`` means (NaN for absent actions)."""

    full_state_update = False
    higher_is_better = False

    def __init__(self, num_actions: int, scale: float = 1.0) -> None:
        super().__init__()
        if num_actions < 1:
            raise ValueError(f"PerActionError: num_actions must be >= 1, got {num_actions}")
        self.num_actions, self.scale = num_actions, scale
        self.add_state("total", default=torch.zeros(num_actions, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.zeros(num_actions, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, errors: Tensor, actions: Tensor) -> None:
        if errors.shape != actions.shape or errors.dim() != 1:
            raise ValueError(f"PerActionError: errors and actions must be (N,), got {tuple(errors.shape)}, {tuple(actions.shape)}")
        if actions.numel() and (int(actions.min()) < 0 or int(actions.max()) >= self.num_actions):
            raise ValueError(f"PerActionError: action ids must be in [0, {self.num_actions}), got {actions.unique().tolist()}")
        self.total.index_add_(0, actions.long(), errors.detach().double())
        self.count.index_add_(0, actions.long(), torch.ones_like(errors, dtype=torch.float64))

    def per_action(self) -> Tensor:
        return torch.where(self.count > 0, self.total / self.count.clamp_min(1), torch.nan) * self.scale

    def compute(self) -> Tensor:
        values = self.per_action()
        return values[self.count > 0].mean().float()
