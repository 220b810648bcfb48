"""``retrieval_top5.png`` after ``test``: for a few captions, the 5 best videos and the attention over frames.

Each row is one test caption: its top-5 videos (the middle frame of each, the correct one framed in
green, with its similarity) and, on the right, the pooling head's weights over the frames of those
five videos (X-Pool's text-conditioned attention; uniform for mean pooling).
"""

from __future__ import annotations

import textwrap
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor

from zoo.training.figures import FigureCallback, pyplot

__all__ = ["RetrievalFigure", "plot_top5"]

_THUMB = 96  # side of the stored middle frames


class RetrievalFigure(FigureCallback):
    """Collects each test video's middle frame; plots :func:`plot_top5` on rank zero after ``test``."""

    filename = "retrieval_top5.png"

    def __init__(self, num_captions: int = 4, filename: str | None = None) -> None:
        super().__init__(filename)
        self.num_captions = num_captions
        self.thumbs: dict[int, Tensor] = {}
        self.captions: dict[tuple[int, int], str] = {}

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.thumbs, self.captions = {}, {}

    def on_test_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        dm = trainer.datamodule
        mean = torch.tensor(getattr(dm, "mean", (0.5, 0.5, 0.5)))[:, None, None]
        std = torch.tensor(getattr(dm, "std", (0.5, 0.5, 0.5)))[:, None, None]
        frames = batch["frames"]  # (B, F, 3, S, S)
        middle = frames[:, frames.shape[1] // 2].detach().float().cpu() * std + mean  # (B, 3, S, S)
        side = min(_THUMB, middle.shape[-1])
        middle = F.interpolate(middle, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
        counts: dict[int, int] = {}
        for b, v in enumerate(batch["video_index"].tolist()):
            self.thumbs[v] = (middle[b].clamp(0, 1) * 255).to(torch.uint8)
        for row, b in enumerate(batch["text_video"].tolist()):
            v = int(batch["video_index"][b])
            self.captions[(v, counts.get(v, 0))] = batch["captions"][row]
            counts[v] = counts.get(v, 0) + 1

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        results = pl_module.retrieval_results("test")  # every process: the embeddings are gathered
        if not trainer.is_global_zero or not self.thumbs:
            return
        videos = sorted(self.thumbs)
        captions = [self.captions[key] for key in sorted(self.captions)]
        sim, text, frames = results["similarity"], results["text"], results["frames"]
        if len(captions) != sim.shape[0]:  # another process held some videos: show this one's share only
            return
        rows = torch.linspace(0, sim.shape[0] - 1, min(self.num_captions, sim.shape[0])).round().long().tolist()
        panels = []
        for i in rows:
            top = sim[i].topk(min(5, sim.shape[1])).indices  # (5,)
            with torch.no_grad():
                weights = pl_module.model.frame_weights(text[i : i + 1], frames[top])[:, 0].float().cpu()  # (5, F)
            panels.append({
                "caption": captions[i], "target": int(results["video_of_text"][i]), "top": top.tolist(),
                "scores": sim[i, top].tolist(), "weights": weights,
            })
        self.written = plot_top5(panels, [self.thumbs[v] for v in videos], self.path(trainer))


def plot_top5(panels: list[dict[str, Any]], thumbs: list[Tensor], path: Any) -> Any:
    """One row per caption: 5 thumbnails (correct one framed green) + the frame weights of those videos."""
    plt = pyplot()
    fig, axes = plt.subplots(len(panels), 6, figsize=(14, 2.4 * len(panels)), squeeze=False,
                             gridspec_kw={"width_ratios": [1, 1, 1, 1, 1, 1.8]})
    for r, panel in enumerate(panels):
        for c, (v, score) in enumerate(zip(panel["top"], panel["scores"])):
            ax = axes[r, c]
            ax.imshow(thumbs[v].permute(1, 2, 0).numpy())
            ax.set_xticks([])
            ax.set_yticks([])
            hit = v == panel["target"]
            for spine in ax.spines.values():
                spine.set_edgecolor("limegreen" if hit else "lightgray")
                spine.set_linewidth(4 if hit else 1)
            ax.set_title(f"#{c + 1} video {v}  {score:.3f}", fontsize=7)
        axes[r, 0].set_ylabel("\n".join(textwrap.wrap(panel["caption"], 28)), fontsize=7, rotation=0, ha="right", va="center")
        ax = axes[r, 5]
        for c, w in enumerate(panel["weights"]):
            ax.plot(range(1, len(w) + 1), w.numpy(), marker="o", ms=3, label=f"#{c + 1}")
        ax.set_xlabel("frame", fontsize=7)
        ax.set_ylabel("attention weight", fontsize=7)
        ax.tick_params(labelsize=6)
        ax.legend(fontsize=6, ncol=5, loc="upper center")
    fig.suptitle("test: top-5 videos per caption (green = correct) and the pooling weights over frames", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
