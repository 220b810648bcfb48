"""The image-classification training system: any registered zoo classifier, timm's training tricks.

- loss: cross-entropy; with mixup / cutmix (timm ``Mixup``) soft-target cross-entropy, with label
  smoothing folded into the mixed targets;
- metrics: top-1 and top-5 accuracy (torchmetrics), logged as ``{train,val,test}/acc1|acc5``;
- optimizer: AdamW (no weight decay on norms, biases and position tables), linear warmup then cosine
  decay to ``min_lr_ratio * lr``; optional layer-wise lr decay through the model's ``group_matcher``;
- optional EMA of the weights (timm ``ModelEmaV3``), used for validation and test when enabled;
- after ``test``: ``confusion_matrix.png`` and ``misclassified.png`` (a grid of wrong predictions
  with true / predicted class) in the run's log directory.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics.classification import MulticlassAccuracy, MulticlassConfusionMatrix

from zoo.hub import create_model, load_weights_into, save_pretrained
from zoo.optim import total_steps, warmup_cosine

__all__ = ["ImageClassifier", "plot_confusion_matrix", "plot_misclassified"]


class ImageClassifier(pl.LightningModule):
    """Train ``zoo.create_model(model_name, num_classes=..., **overrides)`` on image batches ``(x, y)``.

    Args:
        model_name: a registered classifier, e.g. ``astroformer_0`` or ``crossformer_t``.
        num_classes: classes of the head; must equal the datamodule's ``num_classes``.
        overrides: other config overrides of the model (e.g. ``img_size``, ``drop_path_rate``).
        init_from: weights to start from (a registered name, a pretrained directory, ``.safetensors``
            or a Lightning ``.ckpt``), loaded strictly into the network only.
        lr, weight_decay, betas: AdamW settings; ``warmup_steps`` of linear warmup, then cosine to
            ``min_lr_ratio * lr`` at the last step.
        layer_decay: layer-wise lr decay factor (``None`` = off), as in timm's ``param_groups_layer_decay``.
        mixup_alpha, cutmix_alpha, mixup_prob: timm Mixup / CutMix (both 0 = off).
        label_smoothing: label smoothing of the (mixed) targets.
        ema_decay: keep an exponential moving average of the weights (``None`` = off).
        max_misclassified: how many wrong test predictions the grid shows.
    """

    monitor = "val/acc1"
    monitor_mode = "max"

    def __init__(
        self,
        model_name: str = "astroformer_0",
        num_classes: int = 10,
        overrides: dict[str, Any] | None = None,
        init_from: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.05,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.01,
        layer_decay: float | None = None,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mixup_prob: float = 1.0,
        label_smoothing: float = 0.0,
        ema_decay: float | None = None,
        max_misclassified: int = 36,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        overrides = dict(overrides or {})
        if "num_classes" in overrides:
            raise ValueError("ImageClassifier: give num_classes as its own argument, not inside overrides")
        self.model = create_model(model_name, num_classes=num_classes, **overrides)
        if init_from:
            load_weights_into(self.model, init_from)
        self.num_classes = num_classes
        self.mixup = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            from timm.data import Mixup

            self.mixup = Mixup(
                mixup_alpha=mixup_alpha,
                cutmix_alpha=cutmix_alpha,
                prob=mixup_prob,
                label_smoothing=label_smoothing,
                num_classes=num_classes,
            )
        self.ema = None
        if ema_decay is not None:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=ema_decay)
        top5 = min(5, num_classes)
        self.metrics = nn.ModuleDict(
            {
                f"{split}_{name}": MulticlassAccuracy(num_classes, top_k=k, average="micro")
                for split in ("train", "val", "test")
                for name, k in (("acc1", 1), ("acc5", top5))
            }
        )
        self.test_confusion = MulticlassConfusionMatrix(num_classes)
        self._wrong: list[tuple[Tensor, int, int]] = []

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if dm is not None and getattr(dm, "num_classes", self.num_classes) != self.num_classes:
            raise ValueError(
                f"ImageClassifier: model.num_classes={self.num_classes} but the data has {dm.num_classes} classes "
                f"({dm.class_names[:5]}...); set --model.init_args.num_classes {dm.num_classes}"
            )

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _eval_net(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    # ------------------------------------------------------------------------------ steps
    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        if self.mixup is not None and x.shape[0] % 2 == 0:  # timm's Mixup pairs the batch with its flip
            x, soft = self.mixup(x, y)
            logits = self.model(x)
            loss = torch.sum(-soft * F.log_softmax(logits, dim=-1), dim=-1).mean()
        else:
            logits = self.model(x)
            loss = F.cross_entropy(logits, y, label_smoothing=self.hparams.label_smoothing)
        self.log("train/loss", loss, prog_bar=True)
        for name in ("acc1", "acc5"):
            self.metrics[f"train_{name}"](logits.detach(), y)
            self.log(f"train/{name}", self.metrics[f"train_{name}"], on_step=False, on_epoch=True)
        return loss

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def _eval_step(self, batch: tuple[Tensor, Tensor], split: str) -> Tensor:
        x, y = batch
        logits = self._eval_net()(x)
        self.log(f"{split}/loss", F.cross_entropy(logits, y), prog_bar=split == "val", sync_dist=True)
        for name in ("acc1", "acc5"):
            self.metrics[f"{split}_{name}"](logits, y)
            self.log(f"{split}/{name}", self.metrics[f"{split}_{name}"], prog_bar=name == "acc1")
        return logits

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_test_epoch_start(self) -> None:
        self.test_confusion.reset()
        self._wrong = []

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        pred = self._eval_step(batch, "test").argmax(-1)
        self.test_confusion.update(pred, y)
        for i in torch.nonzero(pred != y).flatten().tolist():
            if len(self._wrong) < self.hparams.max_misclassified:
                self._wrong.append((x[i].detach().cpu(), int(y[i]), int(pred[i])))

    def on_test_epoch_end(self) -> None:
        if self.trainer.is_global_zero:
            out_dir = Path(self.trainer.log_dir or self.trainer.default_root_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            dm = getattr(self.trainer, "datamodule", None)
            names = list(getattr(dm, "class_names", [])) or [str(i) for i in range(self.num_classes)]
            mean, std = getattr(dm, "mean", (0.5, 0.5, 0.5)), getattr(dm, "std", (0.5, 0.5, 0.5))
            plot_confusion_matrix(self.test_confusion.compute().cpu(), names, out_dir / "confusion_matrix.png")
            plot_misclassified(self._wrong, names, mean, std, out_dir / "misclassified.png")

    def save_pretrained(
        self, directory: str | Path, card: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Path:
        """Write the network (the EMA weights when enabled) as a zoo pretrained directory."""
        import dataclasses

        net = self._eval_net()
        # the training attention backend is not part of the model: ship "auto"
        config = dataclasses.replace(self.model.config, attention_backend="auto")
        return save_pretrained(net, directory, name=self.hparams.model_name, config=config, card=card, metadata=metadata)

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self._eval_net()(x).softmax(-1)

    # ------------------------------------------------------------------------- optimizer
    def configure_optimizers(self) -> dict[str, Any]:
        from timm.optim import param_groups_layer_decay, param_groups_weight_decay

        hp = self.hparams
        skip = set(self.model.no_weight_decay()) if hasattr(self.model, "no_weight_decay") else set()
        if hp.layer_decay is not None:
            groups = param_groups_layer_decay(self.model, hp.weight_decay, skip, layer_decay=hp.layer_decay)
        else:
            groups = param_groups_weight_decay(self.model, hp.weight_decay, skip)
        opt = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas))
        # timm's layer-decay groups carry "lr_scale"; LambdaLR multiplies each group's own initial lr
        for g in opt.param_groups:
            g["lr"] = g["initial_lr"] = hp.lr * g.get("lr_scale", 1.0)
        return {"optimizer": opt, "lr_scheduler": warmup_cosine(opt, total_steps(self), hp.warmup_steps, hp.min_lr_ratio)}


# ------------------------------------------------------------------------------------- figures


def plot_confusion_matrix(matrix: Tensor, class_names: list[str], path: str | Path) -> Path:
    """Row-normalized confusion matrix (true class per row) with counts, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
