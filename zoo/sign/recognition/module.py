"""``SignRecognizer``: isolated-sign classification on encoded landmark sequences.

- loss: cross-entropy (optional label smoothing) on ``{"x", "mask", "y"}`` batches (:func:`~.data.collate_signs`);
- metrics (torchmetrics): top-1, top-5 and macro accuracy, WER (= 1 - top-1 for isolated signs, as
  BdSLW401 reports it) and the loss, logged as ``{val,test}/acc1|acc5|macro_acc|wer|loss``;
- after ``test``: ``confusion_matrix.png``, ``per_class_accuracy.png`` (+ ``.csv``) and
  ``attention_maps.png`` in the run directory (callbacks of :mod:`.figures` and :mod:`zoo.training.figures`).
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from torch import Tensor
from torchmetrics import MeanMetric, Metric
from torchmetrics.classification import MulticlassAccuracy

from zoo.training.figures import ConfusionMatrixFigure
from zoo.training.module import ClassHeadModule

from .figures import AttentionMapFigure, PerClassAccuracyFigure
from .metrics import IsolatedWER

__all__ = ["SignRecognizer"]


class SignRecognizer(ClassHeadModule):
    """Train ``zoo.create_model(model_name, num_classes=..., **overrides)`` (an ``slrt*`` model) on sign batches.

    Args:
        model_name: a registered sign model, e.g. ``slrt``.
        num_classes: classes of the head; must equal the datamodule's.
        label_smoothing: of the cross-entropy.
        attention_samples: test sequences drawn in ``attention_maps.png``.
        **kwargs: :class:`~zoo.training.module.ZooModule`'s (``overrides``, ``init_from``, ``lr``, ...).
    """

    monitor = "val/acc1"
    monitor_mode = "max"

    def __init__(
        self,
        model_name: str = "slrt",
        num_classes: int = 100,
        label_smoothing: float = 0.0,
        attention_samples: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(model_name, num_classes=num_classes, **kwargs)
        self.label_smoothing = label_smoothing
        self.attention_samples = attention_samples

    def configure_metrics(self, split: str) -> dict[str, Metric]:
        return {
            "acc1": MulticlassAccuracy(self.num_classes, top_k=1, average="micro"),
            "acc5": MulticlassAccuracy(self.num_classes, top_k=min(5, self.num_classes), average="micro"),
            "macro_acc": MulticlassAccuracy(self.num_classes, average="macro"),
            "wer": IsolatedWER(),
            "loss": MeanMetric(),
        }

    def configure_callbacks(self) -> list[Callback]:
        return [
            ConfusionMatrixFigure(self.num_classes), PerClassAccuracyFigure(self.num_classes),
            AttentionMapFigure(self.attention_samples),
        ]

    def check_data(self, datamodule: Any) -> None:
        super().check_data(datamodule)
        landmarks = getattr(datamodule, "num_landmarks", None)
        if landmarks is not None and landmarks != self.model.config.num_landmarks:
            raise ValueError(
                f"SignRecognizer: the model reads {self.model.config.num_landmarks} landmarks but the data gives "
                f"{landmarks}; set the model's num_landmarks override or the data's num_landmarks"
            )

    def training_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        logits = self.model(batch["x"], batch["mask"])  # (B, C)
        loss = F.cross_entropy(logits, batch["y"], label_smoothing=self.label_smoothing)
        return loss, {"acc1": (logits.detach().argmax(-1) == batch["y"]).float().mean()}

    def evaluate(self, batch: dict[str, Tensor], split: str) -> dict[str, Tensor]:
        x, mask, y = batch["x"], batch["mask"], batch["y"]
        logits = self.eval_network()(x, mask)  # (B, C)
        metrics = self.metrics[split]
        for name in ("acc1", "acc5", "macro_acc", "wer"):
            metrics[name].update(logits, y)
        metrics["loss"].update(F.cross_entropy(logits, y), weight=y.shape[0])
        return {"preds": logits.argmax(-1), "target": y}

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self.eval_network()(batch["x"], batch["mask"]).softmax(-1)
