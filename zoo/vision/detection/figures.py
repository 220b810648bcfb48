"""The detection task's side effects, as rank-zero callbacks reading ``PlainDETRDetector.evaluate``'s outputs
(``images``, ``pad_mask``, ``targets``, ``detections`` in original-image pixels).

- :class:`CocoResultsWriter`: ``val_results.json`` / ``test_results.json`` (COCO results format) in the
  run directory after each evaluation epoch, gathered from every process;
- :class:`DetectionsFigure`: ``detections.png`` after ``test``: a few test images with the ground-truth
  boxes (green, dashed) and the detections above ``score_threshold`` (red, with class and score);
- :class:`CrossAttentionFigure`: ``cross_attention.png`` after ``test``: for the first test image, the
  last decoder layer's cross-attention of its most confident query over the feature map (mean over
  heads; each head beside it), from ``model.cross_attention_map`` (the materialized reference path).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.distributed as dist
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.utilities import rank_zero_only
from torch import Tensor
from torchvision.ops import box_convert

from zoo.training.figures import FigureCallback, pyplot, run_dir

from .metrics import coco_results, write_results_json

__all__ = [
    "CocoResultsWriter", "CrossAttentionFigure", "DetectionsFigure", "plot_cross_attention", "plot_detections",
]


#: the stride of Plain-DETR's one feature map, in input pixels
FEATURE_STRIDE = 16


def _class_names(trainer: pl.Trainer) -> list[str]:
    return list(getattr(trainer.datamodule, "class_names", []) or [])


def _name(names: list[str], label: int) -> str:
    return names[label] if 0 <= label < len(names) else str(label)


def _denormalize(image: Tensor, mask: Tensor, trainer: pl.Trainer) -> Tensor:
    """``(3, H, W)`` normalized + padded -> ``(h, w, 3)`` in [0, 1], the padding cut away."""
    h, w = int((~mask).any(1).sum()), int((~mask).any(0).sum())
    dm = trainer.datamodule
    mean = torch.tensor(getattr(dm, "mean", (0.0, 0.0, 0.0)))[:, None, None]
    std = torch.tensor(getattr(dm, "std", (1.0, 1.0, 1.0)))[:, None, None]
    return (image[:, :h, :w].detach().float().cpu() * std + mean).clamp(0, 1).permute(1, 2, 0)


class CocoResultsWriter(Callback):
    """``<split>_results.json``: every evaluated image's detections, as COCO results entries."""

    def __init__(self) -> None:
        self.results: list[dict[str, Any]] = []

    def _start(self, trainer: pl.Trainer) -> None:
        self.results = []

    def _batch(self, outputs: Any) -> None:
        self.results.extend(coco_results(outputs["detections"], [t["image_id"] for t in outputs["targets"]]))

    def _end(self, trainer: pl.Trainer, split: str) -> None:
        results = self.results
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            gathered: list[Any] = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, results)
            results = [r for part in gathered for r in part]
        if trainer.is_global_zero and not trainer.sanity_checking:
            write_results_json(run_dir(trainer) / f"{split}_results.json", results)
        self.results = []

    def on_validation_epoch_start(self, trainer, pl_module) -> None:
        self._start(trainer)

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self._start(trainer)

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch(outputs)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._batch(outputs)

    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        self._end(trainer, "val")

    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self._end(trainer, "test")


class DetectionsFigure(FigureCallback):
    """``detections.png``: ``num_images`` test images with ground truth and their best ``max_boxes``
detections scoring at least ``score_threshold``."""

    filename = "detections.png"

    def __init__(self, num_images: int = 4, score_threshold: float = 0.3, max_boxes: int = 10, filename: str | None = None) -> None:
        super().__init__(filename)
        self.num_images, self.score_threshold, self.max_boxes = num_images, score_threshold, max_boxes
        self.samples: list[tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]] = []

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.samples = []

    def on_test_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        for i, (target, det) in enumerate(zip(outputs["targets"], outputs["detections"])):
            if len(self.samples) >= self.num_images:
                return
            image = _denormalize(outputs["images"][i], outputs["pad_mask"][i], trainer)  # (h, w, 3)
            h, w = image.shape[:2]
            gt = box_convert(target["boxes"].detach().float().cpu(), "cxcywh", "xyxy") * torch.tensor([w, h, w, h])
            oh, ow = target["orig_size"].tolist()
            keep = (det["scores"] >= self.score_threshold).nonzero().flatten()[: self.max_boxes]  # scores sorted
            boxes = det["boxes"][keep].detach().float().cpu() * torch.tensor([w / ow, h / oh, w / ow, h / oh])
            self.samples.append((image, gt, target["labels"].cpu(), boxes, det["labels"][keep].cpu(), det["scores"][keep].cpu()))

    @rank_zero_only
    def on_test_epoch_end(self, trainer, pl_module) -> None:
        self.written = plot_detections(self.samples, _class_names(trainer), self.path(trainer))


class CrossAttentionFigure(FigureCallback):
    """``cross_attention.png``: the most confident query's cross-attention over the first test image."""

    filename = "cross_attention.png"

    def __init__(self, filename: str | None = None) -> None:
        super().__init__(filename)
        self.sample: dict[str, Any] | None = None

    def on_test_epoch_start(self, trainer, pl_module) -> None:
        self.sample = None

    @torch.no_grad()
    def on_test_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.sample is not None or not trainer.is_global_zero:
            return
        network = pl_module.eval_network()
        if not hasattr(network, "cross_attention_map"):
            warnings.warn(f"{type(network).__name__} has no cross_attention_map: no {self.filename}", stacklevel=2)
            self.sample = {}
            return
        images = outputs["images"][:1].to(next(network.parameters()).dtype)
        mask = outputs["pad_mask"][:1]
        out = network(images, mask)
        prob = out["pred_logits"][0].sigmoid()  # (Q, C)
        score, label = prob.max(-1)  # (Q,)
        query = int(score.argmax())
        attn = network.cross_attention_map(images, mask)[0, :, query].float().cpu()  # (heads, Hf, Wf)
        image = _denormalize(outputs["images"][0], mask[0], trainer)
        h, w = image.shape[:2]
        box = box_convert(out["pred_boxes"][0, query].float().cpu(), "cxcywh", "xyxy") * torch.tensor([w, h, w, h])
        self.sample = {"image": image, "attention": attn, "box": box, "label": int(label[query]),
                       "score": float(score[query]), "query": query}

    @rank_zero_only
    def on_test_epoch_end(self, trainer, pl_module) -> None:
        if self.sample:
            self.written = plot_cross_attention(self.sample, _class_names(trainer), self.path(trainer))


def plot_detections(samples: list[tuple[Tensor, ...]], class_names: list[str], path: str | Path) -> Path:
    """A row of images with ground truth (green, dashed) and detections (red, class and score)."""
    plt = pyplot()
    from matplotlib.patches import Rectangle

    cols = max(1, min(4, len(samples)))
    rows = max(1, -(-len(samples) // cols))
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, (image, gt, _gt_labels, boxes, labels, scores) in zip(axes.flat, samples):
        ax.imshow(image.numpy())
        ax.set_xlim(0, image.shape[1])
        ax.set_ylim(image.shape[0], 0)
        for x0, y0, x1, y1 in gt.tolist():
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="lime", lw=1.5, ls="--"))
        for (x0, y0, x1, y1), lab, s in zip(boxes.tolist(), labels.tolist(), scores.tolist()):
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="red", lw=1.2))
            ax.text(max(x0, 0), max(y0, 0), f"{_name(class_names, lab)} {s:.2f}", color="white", fontsize=6, va="top", clip_on=True,
                    bbox={"facecolor": "red", "alpha": 0.6, "pad": 0.5, "lw": 0})
        ax.set_title(f"{len(gt)} true (green), {len(boxes)} detected (red)", fontsize=7)
    if not samples:
        axes[0, 0].text(0.5, 0.5, "no test images", ha="center", va="center")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def plot_cross_attention(sample: dict[str, Any], class_names: list[str], path: str | Path) -> Path:
    """The image with the query's box and its mean-over-heads attention, then each head's map."""
    plt = pyplot()
    from matplotlib.patches import Rectangle

    attn, image = sample["attention"], sample["image"]  # (heads, Hf, Wf), (h, w, 3)
    heads = attn.shape[0]
    hf, wf = attn.shape[-2:]
    extent = (0, wf * FEATURE_STRIDE, hf * FEATURE_STRIDE, 0)  # the map covers the (padded) canvas from its top-left
    cols = min(heads, 4)
    fig, axes = plt.subplots(1 + -(-heads // cols), max(2, cols), figsize=(2.6 * max(2, cols), 2.6 * (1 + -(-heads // cols))),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    x0, y0, x1, y1 = sample["box"].tolist()
    title = f"query {sample['query']}: {_name(class_names, sample['label'])} {sample['score']:.2f}"
    for ax, overlay in ((axes[0, 0], None), (axes[0, 1], attn.mean(0))):
        ax.imshow(image.numpy())
        if overlay is not None:
            ax.imshow(overlay.numpy(), cmap="magma", alpha=0.6, extent=extent, interpolation="nearest")
            ax.set_xlim(0, image.shape[1])
            ax.set_ylim(image.shape[0], 0)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, ec="cyan", lw=1.5))
        ax.set_title(title if overlay is None else "cross-attention, mean of heads", fontsize=7)
    for h in range(heads):
        ax = axes[1 + h // cols, h % cols]
        ax.imshow(attn[h].numpy(), cmap="magma", interpolation="nearest")
        ax.set_title(f"head {h}", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)
