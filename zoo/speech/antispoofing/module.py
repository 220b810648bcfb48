"""``AntiSpoofing``: train and evaluate a registered SSL / spectral deepfake detector.

    python -m zoo.speech.train fit --config configs/speech/antispoofing/fusion_demo.yaml
    python -m zoo.speech.train test --config configs/speech/antispoofing/fusion_demo.yaml --ckpt_path runs/.../last.ckpt

- loss: binary cross-entropy on the bona fide logit, weighted per class (``class_weights``; by default
  balanced from the training set's counts, ``N / (2 N_class)``, the weighted-loss answer to ASVspoof's
  9:1 spoof / bona fide imbalance);
- metrics: ``{val,test}/eer`` (pooled EER, a fraction) and ``test/eer_unseen`` (bona fide vs the spoofs
  of attacks absent from training), plus ``{val,test}/loss``;
- after ``test``: the ASVspoof score file, per-attack EER (and min t-DCF with ``asv_scores``), a DET curve
  and a score histogram in the run directory (:class:`~.figures.ScoreReport`).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from pytorch_lightning.callbacks import Callback
from torch import Tensor
from torchmetrics import MeanMetric, Metric
from torchmetrics.utilities import dim_zero_cat

from zoo.training.module import ZooModule

from . import metrics as M
from .figures import ScoreReport

__all__ = ["AntiSpoofing", "EqualErrorRate"]


class EqualErrorRate(Metric):
    """EER (a fraction) of the scores seen, bona fide (label 1) positive.

    With ``required`` a split lacking one class is an error naming the counts (the monitored metric);
    otherwise it gives NaN (``test/eer_unseen`` on a test set without unseen attacks).
    """

    full_state_update = False

    def __init__(self, required: bool = True) -> None:
        super().__init__()
        self.required = required
        self.add_state("scores", default=[], dist_reduce_fx="cat")
        self.add_state("labels", default=[], dist_reduce_fx="cat")

    def update(self, scores: Tensor, labels: Tensor) -> None:
        self.scores.append(scores.detach().float().flatten())
        self.labels.append(labels.detach().long().flatten())

    def compute(self) -> Tensor:
        scores = dim_zero_cat(self.scores).cpu() if self.scores else torch.zeros(0)
        labels = dim_zero_cat(self.labels).cpu() if self.labels else torch.zeros(0, dtype=torch.long)
        bona = int(labels.sum())
        if bona == 0 or bona == labels.numel():
            if self.required:
                raise ValueError(
                    f"EER needs bona fide and spoofed trials; this split has {bona} bona fide of {labels.numel()} "
                    "(is `limit` too small, or the protocol one-sided?)"
                )
            return torch.tensor(float("nan"))
        return torch.tensor(M.eer(scores.numpy(), labels.numpy()))


class AntiSpoofing(ZooModule):
    """Train ``zoo.create_model(model_name, **overrides)`` on ``{"wave", "label", ...}`` batches.

    Args:
        model_name: a registered detector, e.g. ``antispoof_fusion_cross_attention`` (``zoo.list_models("antispoof_*")``).
        class_weights: loss weights ``(spoof, bona fide)``; ``None`` = balanced from the training counts.
        asv_scores: an ASVspoof 2019 ASV score file; min t-DCF is then reported after ``test``.
        overrides, init_from, lr, weight_decay, betas, warmup_steps, min_lr_ratio, layer_decay:
            :class:`~zoo.training.module.ZooModule`'s.
    """

    monitor = "val/eer"
    monitor_mode = "min"

    def __init__(
        self,
        model_name: str = "antispoof_fusion_cross_attention",
        overrides: dict[str, Any] | None = None,
        init_from: str | None = None,
        class_weights: tuple[float, float] | None = None,
        asv_scores: str | None = None,
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        layer_decay: float | None = None,
    ) -> None:
        if class_weights is not None and (len(class_weights) != 2 or min(class_weights) <= 0):
            raise ValueError(f"AntiSpoofing: class_weights must be two positive numbers (spoof, bona fide), got {class_weights}")
        super().__init__(
            model_name, overrides=overrides, init_from=init_from, lr=lr, weight_decay=weight_decay, betas=betas,
            warmup_steps=warmup_steps, min_lr_ratio=min_lr_ratio, layer_decay=layer_decay,
        )
        self.asv_scores = asv_scores
        self.class_weights = tuple(class_weights) if class_weights is not None else None

    def configure_metrics(self, split: str) -> dict[str, Metric]:
        found = {"eer": EqualErrorRate(), "loss": MeanMetric()}
        if split == "test":
            found["eer_unseen"] = EqualErrorRate(required=False)
        return found

    def configure_callbacks(self) -> list[Callback]:
        return [ScoreReport(self.asv_scores)]

    def check_data(self, datamodule: Any) -> None:
        """Balance the loss from the datamodule's training counts (unless ``class_weights`` is given);
        a training set without both classes is refused, since no detector can be fit on it."""
        counts = getattr(datamodule, "class_counts", None)
        if self.class_weights is not None or counts is None:
            return
        spoof, bona = counts
        if min(spoof, bona) == 0:
            raise ValueError(
                f"AntiSpoofing: the training split of {type(datamodule).__name__} has {spoof} spoofed and {bona} "
                "bona fide utterances; both are needed (check the protocol, or give --model.init_args.class_weights)"
            )
        total = spoof + bona
        self.class_weights = (total / (2 * spoof), total / (2 * bona))

    def _loss(self, scores: Tensor, labels: Tensor) -> Tensor:
        spoof_w, bona_w = self.class_weights or (1.0, 1.0)
        weights = torch.where(labels == 1, bona_w, spoof_w).to(scores.dtype)  # (B,)
        return F.binary_cross_entropy_with_logits(scores, labels.to(scores.dtype), weight=weights, reduction="sum") / weights.sum()

    def training_loss(self, batch: dict[str, Any]) -> tuple[Tensor, dict[str, Tensor]]:
        scores = self.model(batch["wave"])  # (B,)
        labels = batch["label"]
        acc = ((scores.detach() > 0).long() == labels).float().mean()
        return self._loss(scores, labels), {"acc": acc}

    def evaluate(self, batch: dict[str, Any], split: str) -> dict[str, Any]:
        scores = self.eval_network()(batch["wave"])  # (B,)
        labels = batch["label"]
        metrics = self.metrics[split]
        metrics["eer"].update(scores, labels)
        metrics["loss"].update(self._loss(scores, labels), weight=labels.shape[0])
        if "eer_unseen" in metrics:
            keep = (labels == 1) | batch["unseen"]  # bona fide + spoofs of attacks absent from training
            metrics["eer_unseen"].update(scores[keep], labels[keep])
        return {"scores": scores, "labels": labels, "attacks": batch["attack"], "utts": batch["utt"]}

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        return self.eval_network()(batch["wave"])  # (B,) bona fide scores
