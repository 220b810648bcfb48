"""The pose task's test figures, as rank-zero callbacks (:class:`zoo.training.figures.FigureCallback`).

- :class:`PoseSamplesFigure`: ``pose_samples.png``, for a few test windows the centre frame's 2-D input
  skeleton beside the predicted (red) and true (black) 3-D skeletons;
- :class:`PerActionErrorFigure`: ``per_action_error.png``, MPJPE / P-MPJPE / N-MPJPE per action (mm),
  summed over every process.

Both read ``PoseLifter.evaluate``'s outputs (``inputs``, ``pred``, ``target``, ``action``, ``errors``)
and the datamodule's ``action_names``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor

from zoo.training.figures import FigureCallback, pyplot

from .data import H36M_PARENTS

__all__ = ["PerActionErrorFigure", "PoseSamplesFigure", "plot_per_action", "plot_pose_samples"]


def _names(trainer: pl.Trainer, n: int) -> list[str]:
    names = list(getattr(trainer.datamodule, "action_names", []) or [])
    return names + [str(i) for i in range(len(names), n)]


class PoseSamplesFigure(FigureCallback):
    """``pose_samples.png``: ``num_samples`` test windows, one per action first (the first window of
    each action met), then filled with one window per batch."""

    filename = "pose_samples.png"

    def __init__(self, num_samples: int = 4, filename: str | None = None) -> None:
        super().__init__(filename)
        self.num_samples = num_samples
        self.samples: list[tuple[Tensor, Tensor, Tensor, int]] = []
        self.reserve: list[tuple[Tensor, Tensor, Tensor, int]] = []

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.samples, self.reserve = [], []

    def on_test_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        def sample(i: int) -> tuple[Tensor, Tensor, Tensor, int]:
            return tuple(outputs[k][i].detach().cpu() for k in ("inputs", "pred", "target")) + (int(outputs["action"][i]),)

        seen = {s[3] for s in self.samples}
        for i, action in enumerate(outputs["action"].tolist()):
            if len(self.samples) < self.num_samples and action not in seen:
                self.samples.append(sample(i))
                seen.add(action)
        if len(self.reserve) < self.num_samples:
            self.reserve.append(sample(batch_idx % outputs["pred"].shape[0]))

    @rank_zero_only
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        samples = (self.samples + self.reserve)[: self.num_samples]
        names = _names(trainer, 1 + max((s[3] for s in samples), default=0))
        self.written = plot_pose_samples(samples, names, self.path(trainer))


class PerActionErrorFigure(FigureCallback):
    """``per_action_error.png``: grouped bars of MPJPE, P-MPJPE and N-MPJPE per action (mm)."""

    filename = "per_action_error.png"
    kinds = ("mpjpe", "p_mpjpe", "n_mpjpe")

    def __init__(self, filename: str | None = None) -> None:
        super().__init__(filename)
        self.sums: Tensor | None = None
        self.counts: Tensor | None = None

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        n = int(getattr(pl_module, "num_actions", 1))
        self.sums, self.counts = torch.zeros(len(self.kinds), n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)

    def on_test_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        actions = outputs["action"].cpu().long()
        for row, kind in enumerate(self.kinds):
            self.sums[row].index_add_(0, actions, outputs["errors"][kind].detach().cpu().double())
        self.counts.index_add_(0, actions, torch.ones(len(actions), dtype=torch.float64))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        sums = trainer.strategy.reduce(self.sums.to(pl_module.device), reduce_op="sum").cpu()  # every rank calls
        counts = trainer.strategy.reduce(self.counts.to(pl_module.device), reduce_op="sum").cpu()
        if trainer.is_global_zero:
            present = counts > 0
            names = [n for n, p in zip(_names(trainer, len(counts)), present) if p]
            means = (sums[:, present] / counts[present]).numpy()
            self.written = plot_per_action(means, names, [k.replace("_", "-").upper() for k in self.kinds], self.path(trainer))


def _bones(ax: Any, pose: Tensor, color: str, dims: tuple[int, ...]) -> None:
    for j, parent in enumerate(H36M_PARENTS):
        if parent >= 0:
            ax.plot(*[[float(pose[parent, d]), float(pose[j, d])] for d in dims], color=color, lw=1.5)


def plot_pose_samples(samples: list[tuple[Tensor, Tensor, Tensor, int]], action_names: list[str], path: str | Path) -> Path:
    """A row per sample: the 2-D input skeleton and the predicted (red) vs true (black) 3-D skeleton."""
    plt = pyplot()
    rows = max(1, len(samples))
    fig = plt.figure(figsize=(6, 3 * rows))
    for r, (kp, pred, target, action) in enumerate(samples):
        ax2 = fig.add_subplot(rows, 2, 2 * r + 1)
        _bones(ax2, kp, "tab:blue", (0, 1))
        ax2.invert_yaxis()
        ax2.set_aspect("equal")
        ax2.set_title(f"2-D input ({action_names[action]})", fontsize=8)
        ax3 = fig.add_subplot(rows, 2, 2 * r + 2, projection="3d")
        # camera frame: x right, y down, z forward; draw with -y up
        for pose, color in ((target, "black"), (pred, "tab:red")):
            p = torch.stack([pose[:, 0], pose[:, 2], -pose[:, 1]], -1)
            _bones(ax3, p, color, (0, 1, 2))
        err = float(torch.linalg.vector_norm(pred - target, dim=-1).mean()) * 1000
        ax3.set_title(f"pred (red) vs true, {err:.0f} mm", fontsize=8)
        ax3.set_box_aspect((1, 1, 1))
    if not samples:
        fig.text(0.5, 0.5, "no test windows", ha="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)


def plot_per_action(means: Any, action_names: list[str], labels: list[str], path: str | Path) -> Path:
    """Grouped bars: ``means[k, a]`` for metric ``k`` and action ``a``, with the action average in the legend."""
    plt = pyplot()
    n = len(action_names)
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * n + 2), 3.5))
    width = 0.8 / max(1, len(labels))
    for k, label in enumerate(labels):
        avg = float(means[k].mean()) if n else float("nan")
        ax.bar([a + k * width for a in range(n)], means[k], width, label=f"{label} (avg {avg:.1f})")
    ax.set_xticks([a + 0.4 - width / 2 for a in range(n)], action_names, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("error (mm)")
    ax.set_title("test error per action")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
