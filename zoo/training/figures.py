"""Figures as Lightning callbacks: each writes a PNG into the run directory, on rank zero only.

A task returns the ones it wants from ``LightningModule.configure_callbacks``; the callback reads
what it needs from the task's ``test_step`` outputs (``evaluate``'s return value) and from the
datamodule (class names, normalization), so the module holds no plotting code.

- :class:`ConfusionMatrixFigure`: the test confusion matrix, summed over every process;
- :class:`MisclassifiedFigure`: a grid of wrongly classified test images (rank zero's share).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor

__all__ = [
    "pyplot",
    "FigureCallback",
    "ConfusionMatrixFigure",
    "MisclassifiedFigure",
    "plot_confusion_matrix",
    "plot_misclassified",
    "run_dir",
]


def run_dir(trainer: pl.Trainer) -> Path:
    """The run's log directory (``runs/<name>/version_N``), created if needed."""
    out = Path(trainer.log_dir or trainer.default_root_dir)
    out.mkdir(parents=True, exist_ok=True)
    return out


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the headless Agg backend (figure callbacks run on servers)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


class FigureCallback(Callback):
    """Base of the figure callbacks: ``filename`` in the run directory, written by rank zero."""

    filename = "figure.png"

    def __init__(self, filename: str | None = None) -> None:
        self.filename = filename or self.filename
        self.written: Path | None = None

    def path(self, trainer: pl.Trainer) -> Path:
        return run_dir(trainer) / self.filename


def _class_names(trainer: pl.Trainer, n: int) -> list[str]:
    names = list(getattr(trainer.datamodule, "class_names", []) or [])
    return names if len(names) == n else [str(i) for i in range(n)]


class ConfusionMatrixFigure(FigureCallback):
    """``confusion_matrix.png`` after ``test``, from ``{"preds", "target"}`` test-step outputs."""

    filename = "confusion_matrix.png"

    def __init__(self, num_classes: int, filename: str | None = None) -> None:
        super().__init__(filename)
        self.num_classes = num_classes
        self.matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.matrix.zero_()

    def on_test_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        pairs = outputs["target"].cpu() * self.num_classes + outputs["preds"].cpu()  # (B,)
        self.matrix += torch.bincount(pairs, minlength=self.num_classes**2).view(self.num_classes, self.num_classes)

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        total = trainer.strategy.reduce(self.matrix.to(pl_module.device), reduce_op="sum")  # every rank calls
        if trainer.is_global_zero:
            self.written = plot_confusion_matrix(total.cpu(), _class_names(trainer, self.num_classes), self.path(trainer))


class MisclassifiedFigure(FigureCallback):
    """``misclassified.png`` after ``test``: up to ``max_images`` wrong predictions, ``true -> predicted``,
    from ``{"inputs", "preds", "target"}`` test-step outputs, de-normalized with the datamodule's
    ``mean`` / ``std``."""

    filename = "misclassified.png"

    def __init__(self, max_images: int = 36, filename: str | None = None) -> None:
        super().__init__(filename)
        self.max_images = max_images
        self.wrong: list[tuple[Tensor, int, int]] = []

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.wrong = []

    def on_test_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        preds, target = outputs["preds"], outputs["target"]
        for i in torch.nonzero(preds != target).flatten().tolist():
            if len(self.wrong) >= self.max_images:
                return
            self.wrong.append((outputs["inputs"][i].detach().cpu(), int(target[i]), int(preds[i])))

    @rank_zero_only
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        dm = trainer.datamodule
        n = int(getattr(pl_module, "num_classes", 0)) or 1 + max((max(t, p) for _, t, p in self.wrong), default=0)
        mean, std = getattr(dm, "mean", (0.5, 0.5, 0.5)), getattr(dm, "std", (0.5, 0.5, 0.5))
        self.written = plot_misclassified(self.wrong, _class_names(trainer, n), mean, std, self.path(trainer))


def plot_confusion_matrix(matrix: Tensor, class_names: list[str], path: str | Path) -> Path:
    """Row-normalized confusion matrix (true class per row) with counts, as a PNG."""
    plt = pyplot()
    m = matrix.double()
    rates = m / m.sum(dim=1, keepdim=True).clamp_min(1)
    n = len(class_names)
    fig, ax = plt.subplots(figsize=(max(4, 0.6 * n + 2), max(4, 0.6 * n + 1.5)))
    im = ax.imshow(rates.numpy(), cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(n), class_names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), class_names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if n <= 20:
        for i in range(n):
            for j in range(n):
                ax.text(j, i, int(m[i, j]), ha="center", va="center", fontsize=7, color="black" if rates[i, j] < 0.6 else "white")
    acc = float(m.diag().sum() / m.sum().clamp_min(1))
    ax.set_title(f"test confusion matrix (top-1 {100 * acc:.1f}%)")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_misclassified(
    wrong: list[tuple[Tensor, int, int]],
    class_names: list[str],
    mean: tuple[float, ...],
    std: tuple[float, ...],
    path: str | Path,
) -> Path:
    """A grid of wrongly classified test images (de-normalized), titled ``true -> predicted``."""
    plt = pyplot()
    cols = max(1, min(6, len(wrong)))
    rows = max(1, math.ceil(len(wrong) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    m, s = torch.tensor(mean)[:, None, None], torch.tensor(std)[:, None, None]
    for ax, (img, true, pred) in zip(axes.flat, wrong):
        ax.imshow((img.float() * s + m).clamp(0, 1).permute(1, 2, 0).numpy())
        ax.set_title(f"{class_names[true]} -> {class_names[pred]}", fontsize=7)
    if not wrong:
        axes[0, 0].text(0.5, 0.5, "no misclassified test images", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
