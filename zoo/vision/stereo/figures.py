"""The stereo task's pictures: a disparity colour map, and the test figure as a rank-zero callback.

- :func:`colorize`: disparity ``(H, W)`` -> RGB uint8 on a fixed scale (``0 .. vmax``), invalid pixels black;
- :class:`StereoSamplesFigure`: ``stereo_samples.png`` after ``test``: for the first ``num_samples`` pairs of
  every evaluation set, the left image, the predicted and the true disparity (one colour scale per row, the
  true disparity's range) and the absolute error on valid pixels. Reads ``StereoMatcher.evaluate``'s outputs
  (``left``, ``pred``, ``gt``, ``valid``, ``set``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor

from zoo.training.figures import FigureCallback, pyplot

__all__ = ["colorize", "StereoSamplesFigure", "plot_stereo_samples"]


def colorize(disparity: np.ndarray, vmax: float | None = None, valid: np.ndarray | None = None, cmap: str = "turbo") -> np.ndarray:
    """``(H, W, 3)`` uint8: ``disparity / vmax`` through ``cmap`` (``vmax`` default: the finite maximum)."""
    import matplotlib

    d = np.asarray(disparity, dtype=np.float64)
    keep = np.isfinite(d) if valid is None else np.asarray(valid, dtype=bool) & np.isfinite(d)
    vmax = float(vmax) if vmax is not None else float(d[keep].max()) if keep.any() else 1.0
    rgb = matplotlib.colormaps[cmap](np.clip(np.where(keep, d, 0) / max(vmax, 1e-6), 0, 1))[..., :3]
    return (np.where(keep[..., None], rgb, 0) * 255).round().astype(np.uint8)


class StereoSamplesFigure(FigureCallback):
    """``stereo_samples.png``: the first ``num_samples`` test pairs of each evaluation set."""

    filename = "stereo_samples.png"

    def __init__(self, num_samples: int = 2, filename: str | None = None) -> None:
        super().__init__(filename)
        self.num_samples = num_samples
        self.samples: list[tuple[str, Tensor, Tensor, Tensor, Tensor]] = []

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.samples = []

    def on_test_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        for i in range(outputs["pred"].shape[0]):
            if sum(s[0] == outputs["set"] for s in self.samples) >= self.num_samples:
                return
            self.samples.append((outputs["set"],) + tuple(outputs[k][i].detach().cpu() for k in ("left", "pred", "gt", "valid")))

    @rank_zero_only
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.written = plot_stereo_samples(self.samples, self.path(trainer))


def plot_stereo_samples(samples: list[tuple[str, Tensor, Tensor, Tensor, Tensor]], path: str | Path) -> Path:
    """A row per ``(set name, left (3, H, W), pred (1, H, W), gt (1, H, W), valid (1, H, W))``."""
    plt = pyplot()
    rows = max(1, len(samples))
    fig, axes = plt.subplots(rows, 4, figsize=(13, 2.6 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (name, left, pred, gt, valid) in enumerate(samples):
        pred, gt, valid = pred[0].float().numpy(), gt[0].float().numpy(), valid[0].numpy()
        vmax = float(gt[valid].max()) if valid.any() else float(pred.max())
        err = np.abs(pred - gt)
        epe = float(err[valid].mean()) if valid.any() else float("nan")
        axes[r, 0].imshow(left.float().permute(1, 2, 0).clamp(0, 1).numpy())
        axes[r, 0].set_title(f"left ({name})", fontsize=8)
        axes[r, 1].imshow(pred, cmap="turbo", vmin=0, vmax=vmax)
        axes[r, 1].set_title("predicted disparity", fontsize=8)
        im = axes[r, 2].imshow(np.where(valid, gt, np.nan), cmap="turbo", vmin=0, vmax=vmax)
        axes[r, 2].set_title("true disparity", fontsize=8)
        fig.colorbar(im, ax=axes[r, 1:3].tolist(), fraction=0.02, label="px")
        im = axes[r, 3].imshow(np.where(valid, err, np.nan), cmap="inferno", vmin=0, vmax=max(3.0, float(np.nanpercentile(np.where(valid, err, np.nan), 99)) if valid.any() else 3.0))
        axes[r, 3].set_title(f"|error| on valid pixels, EPE {epe:.2f} px", fontsize=8)
        fig.colorbar(im, ax=axes[r, 3], fraction=0.04, label="px")
    if not samples:
        axes[0, 0].text(0.5, 0.5, "no test pairs", ha="center", va="center")
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return Path(path)
