"""Figure callbacks of sign recognition (PNGs in the run directory after ``test``, rank zero only).

- :class:`PerClassAccuracyFigure`: ``per_class_accuracy.png`` + ``per_class_accuracy.csv``;
- :class:`AttentionMapFigure`: ``attention_maps.png``: for a few test sequences, which frames the last
  encoder layer attends to (attention each frame receives, averaged over heads and real query frames)
  and which landmarks matter (occlusion: the drop of the true class's probability when one landmark is
  marked missing; the transformer attends over frames, not landmarks, so landmark relevance is measured).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import rank_zero_only

from zoo.training.figures import FigureCallback, pyplot, run_dir

__all__ = ["AttentionMapFigure", "PerClassAccuracyFigure", "landmark_occlusion"]


class PerClassAccuracyFigure(FigureCallback):
    """Test accuracy per class, from ``{"preds", "target"}`` test-step outputs."""

    filename = "per_class_accuracy.png"

    def __init__(self, num_classes: int, filename: str | None = None) -> None:
        super().__init__(filename)
        self.num_classes = num_classes
        self.correct = torch.zeros(num_classes, dtype=torch.long)
        self.count = torch.zeros(num_classes, dtype=torch.long)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.correct.zero_()
        self.count.zero_()

    def on_test_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        t, p = outputs["target"].cpu(), outputs["preds"].cpu()
        self.count += torch.bincount(t, minlength=self.num_classes)
        self.correct += torch.bincount(t[p == t], minlength=self.num_classes)

    @rank_zero_only
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        names = list(getattr(trainer.datamodule, "class_names", []) or []) or [str(i) for i in range(self.num_classes)]
        acc = (self.correct.double() / self.count.clamp_min(1)).numpy()
        with open(run_dir(trainer) / "per_class_accuracy.csv", "w") as f:
            f.write("class,accuracy,count\n")
            for n, a, c in zip(names, acc, self.count.tolist()):
                f.write(f"{n},{a:.4f},{c}\n")
        plt = pyplot()
        fig, ax = plt.subplots(figsize=(max(4, 0.35 * self.num_classes + 1), 3))
        ax.bar(range(self.num_classes), acc)
        ax.set_xticks(range(self.num_classes), names[: self.num_classes], rotation=60, ha="right", fontsize=7)
        ax.set_ylim(0, 1)
        ax.set_ylabel("test accuracy")
        fig.tight_layout()
        fig.savefig(self.path(trainer), dpi=110)
        plt.close(fig)
        self.written = self.path(trainer)


@torch.no_grad()
def landmark_occlusion(model: torch.nn.Module, x: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """``(B, L)``: drop of the true class's probability when landmark ``l`` is marked missing (NaN) in every frame."""
    base = model(x, mask).softmax(-1).gather(1, target[:, None])[:, 0]  # (B,)
    drops = []
    for l in range(x.shape[2]):
        xo = x.clone()
        xo[:, :, l] = float("nan")
        drops.append(base - model(xo, mask).softmax(-1).gather(1, target[:, None])[:, 0])
    return torch.stack(drops, 1)  # (B, L)


class AttentionMapFigure(FigureCallback):
    """Frame attention and landmark occlusion of the first ``num_samples`` test sequences."""

    filename = "attention_maps.png"

    def __init__(self, num_samples: int = 4, filename: str | None = None) -> None:
        super().__init__(filename)
        self.num_samples = num_samples
        self.batch: dict[str, torch.Tensor] | None = None

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.batch = None

    def on_test_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.batch is None:
            self.batch = {k: v[: self.num_samples].detach().cpu() for k, v in batch.items()}

    @rank_zero_only
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.batch is None:
            return
        model = pl_module.eval_network()
        device = next(model.parameters()).device
        x, mask, y = (self.batch[k].to(device) for k in ("x", "mask", "y"))
        with torch.inference_mode(False), torch.no_grad():
            x, mask, y = x.clone(), mask.clone(), y.clone()
            last = model.attention_maps(x, mask)[-1].float()  # (B, H, T', T')
            occl = landmark_occlusion(model, x, mask, y).cpu().numpy()  # (B, L)
        offset = last.shape[-1] - x.shape[1]  # 1 with a CLS token
        received = last.mean(1)[:, offset:, offset:]  # (B, T, T)
        m = mask.float()
        frame_attn = ((received * m[:, :, None]).sum(1) / m.sum(1, keepdim=True)).cpu().numpy()  # (B, T)
        names = list(getattr(trainer.datamodule, "class_names", []) or [])
        plt = pyplot()
        b = x.shape[0]
        fig, axes = plt.subplots(b, 3, figsize=(13, 2.6 * b), squeeze=False)
        for i in range(b):
            n = int(mask[i].sum())
            label = names[int(y[i])] if int(y[i]) < len(names) else str(int(y[i]))
            axes[i, 0].imshow(received[i, :n, :n].cpu().numpy(), cmap="viridis")
            axes[i, 0].set_title(f"{label}: last-layer attention (query x key)", fontsize=8)
            axes[i, 1].bar(range(n), frame_attn[i, :n])
            axes[i, 1].set_title("attention received per frame", fontsize=8)
            axes[i, 2].bar(range(occl.shape[1]), occl[i], color=_part_colors(occl.shape[1]))
            axes[i, 2].set_title("landmark occlusion: pose (grey), left hand (blue), right hand (red)", fontsize=8)
        fig.tight_layout()
        fig.savefig(self.path(trainer), dpi=100)
        plt.close(fig)
        self.written = self.path(trainer)


def _part_colors(num_landmarks: int) -> list[str]:
    colors = np.array(["grey"] * 33 + ["tab:blue"] * 21 + ["tab:red"] * 21 + ["tab:green"] * max(0, num_landmarks - 75))
    return colors[:num_landmarks].tolist()
