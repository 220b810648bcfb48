"""``ImageClassifier``: any registered zoo classifier with timm's training tricks.

- loss: cross-entropy; with mixup / cutmix (timm ``Mixup``) soft-target cross-entropy, with label
  smoothing folded into the mixed targets;
- metrics: top-1 and top-5 accuracy and the loss (torchmetrics), logged as ``{val,test}/acc1|acc5|loss``;
- optimizer: :class:`~zoo.training.module.ZooModule`'s (AdamW, warmup + cosine, optional layer decay);
- optional EMA of the weights (timm ``ModelEmaV3``), used for validation, test and export when enabled;
- after ``test``: ``confusion_matrix.png`` and ``misclassified.png`` in the run directory (callbacks of
  :mod:`zoo.training.figures`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from torch import Tensor, nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy

from zoo.training.figures import ConfusionMatrixFigure, MisclassifiedFigure
from zoo.training.module import ClassHeadModule

__all__ = ["ImageClassifier"]


class ImageClassifier(ClassHeadModule):
    """Train ``zoo.create_model(model_name, num_classes=..., **overrides)`` on image batches ``(x, y)``.

    Args:
        model_name: a registered classifier, e.g. ``astroformer_0`` or ``crossformer_t``.
        num_classes: classes of the head; must equal the datamodule's ``num_classes``.
        mixup_alpha, cutmix_alpha, mixup_prob: timm Mixup / CutMix (both 0 = off).
        label_smoothing: label smoothing of the (mixed) targets.
        ema_decay: keep an exponential moving average of the weights (``None`` = off).
        max_misclassified: how many wrong test predictions the grid shows.
        weight_decay, min_lr_ratio: AdamW / schedule defaults of the vision recipe.
        **kwargs: :class:`~zoo.training.module.ZooModule`'s (``overrides``, ``init_from``, ``lr``,
            ``layer_decay``, ...).
    """

    monitor = "val/acc1"
    monitor_mode = "max"

    def __init__(
        self,
        model_name: str = "astroformer_0",
        num_classes: int = 10,
        mixup_alpha: float = 0.0,
        cutmix_alpha: float = 0.0,
        mixup_prob: float = 1.0,
        label_smoothing: float = 0.0,
        ema_decay: float | None = None,
        max_misclassified: int = 36,
        weight_decay: float = 0.05,
        min_lr_ratio: float = 0.01,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name, num_classes=num_classes, weight_decay=weight_decay, min_lr_ratio=min_lr_ratio, **kwargs)
        self.label_smoothing = label_smoothing
        self.max_misclassified = max_misclassified
        self.mixup = None
        if mixup_alpha > 0 or cutmix_alpha > 0:
            from timm.data import Mixup

            self.mixup = Mixup(
                mixup_alpha=mixup_alpha, cutmix_alpha=cutmix_alpha, prob=mixup_prob,
                label_smoothing=label_smoothing, num_classes=num_classes,
            )
        self.ema = None
        if ema_decay is not None:
            from timm.utils import ModelEmaV3

            self.ema = ModelEmaV3(self.model, decay=ema_decay)

    def configure_metrics(self, split: str) -> dict[str, Metric]:
        top5 = min(5, self.num_classes)
        return {
            "acc1": MulticlassAccuracy(self.num_classes, top_k=1, average="micro"),
            "acc5": MulticlassAccuracy(self.num_classes, top_k=top5, average="micro"),
            "loss": MeanMetric(),
        }

    def configure_callbacks(self) -> list[Callback]:
        return [ConfusionMatrixFigure(self.num_classes), MisclassifiedFigure(self.max_misclassified)]

    def eval_network(self) -> nn.Module:
        return self.ema.module if self.ema is not None else self.model

    def training_loss(self, batch: tuple[Tensor, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        x, y = batch
        if self.mixup is not None and x.shape[0] % 2 == 0:  # timm's Mixup pairs the batch with its flip
            x, soft = self.mixup(x, y)
            logits = self.model(x)  # (B, C)
            loss = torch.sum(-soft * F.log_softmax(logits, dim=-1), dim=-1).mean()
        else:
            logits = self.model(x)  # (B, C)
            loss = F.cross_entropy(logits, y, label_smoothing=self.label_smoothing)
        return loss, {"acc1": (logits.detach().argmax(-1) == y).float().mean()}

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if self.ema is not None:
            self.ema.update(self.model, step=self.global_step)

    def evaluate(self, batch: tuple[Tensor, Tensor], split: str) -> dict[str, Tensor]:
        x, y = batch
        logits = self.eval_network()(x)  # (B, C)
        metrics = self.metrics[split]
        metrics["acc1"].update(logits, y)
        metrics["acc5"].update(logits, y)
        metrics["loss"].update(F.cross_entropy(logits, y), weight=y.shape[0])
        return {"inputs": x, "preds": logits.argmax(-1), "target": y}

    def predict_step(self, batch: Any, batch_idx: int) -> Tensor:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        return self.eval_network()(x).softmax(-1)
