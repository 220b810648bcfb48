"""``ZooModule``: the training system every task shares; a task writes its loss and its evaluation.

    class MyTask(ZooModule):
        monitor, monitor_mode = "val/acc", "max"

        def configure_metrics(self, split):            # fresh torchmetrics per split
            return {"acc": MeanMetric()}
        def training_loss(self, batch):                # loss, or (loss, {name: value} to log)
            ...
        def evaluate(self, batch, split):              # update self.metrics[split]
            ...

What the base does, once for every task:

- builds the network from the registry (``model_name`` + ``overrides``), loads ``init_from``
  weights strictly (fine-tuning) and checks the overrides against the model's config;
- logs ``train/loss`` (+ the extras ``training_loss`` returns) every step, and at the end of each
  ``val`` / ``test`` epoch every metric of the split's :class:`~torchmetrics.MetricCollection` as
  ``<split>/<name>`` (plus :meth:`derived_metrics`), with the monitored one on the progress bar;
- AdamW with the zoo's decay rule, linear warmup then cosine (:mod:`zoo.training.optim`);
- ``save_pretrained`` of the evaluated network (EMA weights where a task keeps them).

Side effects (figures) are callbacks a task returns from ``configure_callbacks``
(:mod:`zoo.training.figures`).
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.utilities import move_data_to_device
from torch import Tensor, nn
from torchmetrics import Metric, MetricCollection

from zoo.hub import create_model, load_weights_into, save_pretrained

from .optim import OptimConfig, build_optimizer, total_steps

__all__ = ["ClassHeadModule", "ZooModule"]


class ZooModule(pl.LightningModule):
    """Base of every task's LightningModule.

    Args:
        model_name: a registered model (``zoo.list_models()``).
        overrides: config overrides of that model; unknown keys fail with the valid field names.
        init_from: a registered name, pretrained directory, ``.safetensors`` or ``.ckpt`` whose weights
            (only) initialize the network.
        lr, weight_decay, betas: AdamW.
        warmup_steps: linear warmup length in optimizer steps; then cosine to ``min_lr_ratio * lr``.
        layer_decay: layer-wise lr decay (timm's, through the model's ``group_matcher``); None = off.
    """

    #: the metric checkpoints and early stopping follow, ``"<split>/<name>"``
    monitor: ClassVar[str | None] = None
    monitor_mode: ClassVar[str] = "min"
    #: the evaluated splits, each with its own MetricCollection
    eval_splits: ClassVar[tuple[str, ...]] = ("val", "test")

    def __init__(
        self,
        model_name: str,
        overrides: dict[str, Any] | None = None,
        init_from: str | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        layer_decay: float | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.optim = OptimConfig(lr, weight_decay, tuple(betas), warmup_steps, min_lr_ratio, layer_decay)
        if lr <= 0 or weight_decay < 0 or warmup_steps < 0 or not 0 <= min_lr_ratio <= 1:
            raise ValueError(
                f"{type(self).__name__}: need lr > 0, weight_decay >= 0, warmup_steps >= 0 and min_lr_ratio in "
                f"[0, 1]; got {self.optim}"
            )
        self.model: nn.Module = create_model(model_name, **self.model_overrides(dict(overrides or {})))
        if init_from:
            load_weights_into(self.model, init_from)
        self.metrics = nn.ModuleDict(
            {split: MetricCollection(dict(self.configure_metrics(split)), compute_groups=False) for split in self.eval_splits}
        )

    # ------------------------------------------------------------------ what a task writes
    def model_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """The overrides ``create_model`` gets; a task adds its own arguments here (``num_classes``)."""
        return overrides

    def configure_metrics(self, split: str) -> dict[str, Metric]:
        """Fresh metrics for ``split``, by the name they are logged under."""
        raise TypeError(f"{type(self).__name__} must define configure_metrics(split)")

    def training_loss(self, batch: Any) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
        """The loss to minimize, optionally with more values to log as ``train/<name>``."""
        raise TypeError(f"{type(self).__name__} must define training_loss(batch)")

    def evaluate(self, batch: Any, split: str) -> Any:
        """Update ``self.metrics[split]`` with one batch; the return value reaches callbacks."""
        raise TypeError(f"{type(self).__name__} must define evaluate(batch, split)")

    def derived_metrics(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        """Metrics computed from the epoch's values (perplexity from NLL, ...)."""
        return {}

    def check_data(self, datamodule: Any) -> None:
        """Refuse a datamodule this model cannot read (another vocabulary, class count, ...); called
        in ``setup`` and by standalone evaluation, with the error naming both sides."""

    def eval_network(self) -> nn.Module:
        """The network evaluation and ``save_pretrained`` use (a task with EMA returns the average)."""
        return self.model

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        if datamodule is not None:
            self.check_data(datamodule)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def training_step(self, batch: Any, batch_idx: int) -> Tensor:
        out = self.training_loss(batch)
        loss, extras = out if isinstance(out, tuple) else (out, {})
        size = _batch_size(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=size)
        for name, value in extras.items():
            self.log(f"train/{name}", value, batch_size=size)
        return loss

    def validation_step(self, batch: Any, batch_idx: int) -> Any:
        return self.evaluate(batch, "val")

    def test_step(self, batch: Any, batch_idx: int) -> Any:
        return self.evaluate(batch, "test")

    def on_validation_epoch_end(self) -> None:
        self._log_split("val")

    def on_test_epoch_end(self) -> None:
        self._log_split("test")

    def _log_split(self, split: str) -> None:
        metrics = self.metrics[split]
        if not any(m.update_count for m in metrics.values()):
            return
        values = {name: m.compute() for name, m in metrics.items()}
        values.update(self.derived_metrics(values))
        for name, value in values.items():
            key = f"{split}/{name}"
            self.log(key, value, prog_bar=key == self.monitor)
        metrics.reset()

    @torch.no_grad()
    def evaluate_loader(self, loader: Iterable[Any], split: str = "test") -> dict[str, float]:
        """The task's metrics over ``loader`` without a Trainer (command-line evaluation tools).

        Runs :meth:`evaluate` on every batch in eval mode and returns the computed and derived
        metrics as floats, exactly what ``test`` would log under ``<split>/``; ``split`` picks the
        metric slot (``val`` or ``test``), so any split's data can be scored through it.
        """
        if split not in self.metrics:
            raise ValueError(f"{type(self).__name__}: split must be one of {sorted(self.metrics)}, got {split!r}")
        was_training = self.training
        self.eval()
        metrics = self.metrics[split]
        metrics.reset()
        device = next(self.parameters()).device
        try:
            for batch in loader:
                self.evaluate(move_data_to_device(batch, device), split)
            if not any(m.update_count for m in metrics.values()):
                raise ValueError(f"{type(self).__name__}: the evaluation data gave no {split} values (empty or all padding)")
            values = {name: m.compute() for name, m in metrics.items()}
            values.update(self.derived_metrics(values))
        finally:
            metrics.reset()
            self.train(was_training)
        return {name: float(value) for name, value in values.items()}

    def configure_optimizers(self) -> dict[str, Any]:
        return build_optimizer(self.model, self.optim, total_steps(self))

    # ------------------------------------------------------------------ export
    def save_pretrained(
        self, directory: str | Path, card: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Path:
        """Write the evaluated network as a zoo pretrained directory (safetensors + config.json + card)."""
        return save_pretrained(
            self.eval_network(), directory, name=self.hparams.model_name, config=self.model.config,
            card=card, metadata=metadata,
        )


class ClassHeadModule(ZooModule):
    """A :class:`ZooModule` whose network ends in ``num_classes`` logits, given as the task's own argument.

    ``num_classes`` reaches ``create_model`` (never inside ``overrides``: that fails); ``None`` keeps
    the model's default (then :attr:`num_classes` reads the built model's config). :meth:`check_data`
    refuses a datamodule whose ``num_classes`` differs, or, with ``exact_class_count = False``, is larger
    (a detector's logits only need to cover the data's category ids).
    """

    #: True: the data's class count must equal the head's; False: it must not exceed it
    exact_class_count: ClassVar[bool] = True

    def __init__(self, model_name: str, *args: Any, num_classes: int | None = None, **kwargs: Any) -> None:
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"{type(self).__name__}: num_classes must be >= 1, got {num_classes}")
        self._num_classes_arg = num_classes
        super().__init__(model_name, *args, **kwargs)

    @property
    def num_classes(self) -> int:
        """The head's class count: the argument, else the model's config."""
        if self._num_classes_arg is not None:
            return int(self._num_classes_arg)
        return int(self.model.config.num_classes)

    def model_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        if "num_classes" in overrides:
            raise ValueError(f"{type(self).__name__}: give num_classes as its own argument, not inside overrides")
        if self._num_classes_arg is None:
            return overrides
        return {**overrides, "num_classes": self._num_classes_arg}

    def check_data(self, datamodule: Any) -> None:
        have = getattr(datamodule, "num_classes", None)
        if have is None:
            return
        wrong = have != self.num_classes if self.exact_class_count else have > self.num_classes
        if wrong:
            names = getattr(datamodule, "class_names", None)
            shown = f" ({list(names)[:5]}...)" if names else ""
            raise ValueError(
                f"{type(self).__name__}: model.num_classes={self.num_classes} but the data has {have} classes{shown} "
                f"(model {self.hparams.model_name}); set --model.init_args.num_classes {have}"
            )


def _batch_size(batch: Any) -> int | None:
    """The leading size of the first tensor in a batch (tensor, sequence or dict), for logging."""
    if isinstance(batch, Tensor):
        return batch.shape[0]
    items = batch.values() if isinstance(batch, dict) else batch if isinstance(batch, (list, tuple)) else ()
    for item in items:
        if isinstance(item, Tensor) and item.dim() > 0:
            return item.shape[0]
    return None
