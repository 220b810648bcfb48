"""``MusicLM``: autoregressive music language models (Music Transformer and friends).

Loss: next-token cross-entropy (optional label smoothing) over non-PAD targets. Metrics per split:
``<split>/nll`` (nats per token, exact token-weighted mean over the split), ``<split>/ppl`` (exp of it)
and ``<split>/acc`` (next-token accuracy). Optimizer and schedule: :class:`~zoo.training.module.ZooModule`'s;
gradient clipping is the Trainer's ``gradient_clip_val``.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric, Metric

from zoo.training.module import ZooModule

from .metrics import token_nll

__all__ = ["MusicLM"]


class MusicLM(ZooModule):
    """Trains a registered music model on token windows ``{"tokens": (B, L + 1)}``.

    Args:
        model_name: a registered model (``zoo.list_models("music_*")``).
        label_smoothing: for the training loss only (validation/test NLL are never smoothed).
        weight_decay, betas, warmup_steps: AdamW and warmup defaults of the Transformer recipe.
        **kwargs: :class:`~zoo.training.module.ZooModule`'s (``overrides``, ``init_from``, ``lr``, ...).
    """

    monitor = "val/nll"
    monitor_mode = "min"

    def __init__(
        self,
        model_name: str = "music_transformer_demo",
        label_smoothing: float = 0.0,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.98),
        warmup_steps: int = 200,
        **kwargs: Any,
    ) -> None:
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        super().__init__(model_name, weight_decay=weight_decay, betas=betas, warmup_steps=warmup_steps, **kwargs)
        self.label_smoothing = label_smoothing
        self.config = self.model.config
        self.pad_id = 0  # replaced by the datamodule's tokenizer in setup()

    def check_data(self, datamodule: Any) -> None:
        tokenizer = getattr(datamodule, "tokenizer", None)
        if tokenizer is None:
            return
        if tokenizer.kind != self.config.tokenizer or tokenizer.vocab_size != self.config.vocab_size:
            raise ValueError(
                f"model {self.hparams.model_name} expects the {self.config.tokenizer!r} vocabulary "
                f"({self.config.vocab_size} tokens) but the datamodule yields {tokenizer.kind!r} "
                f"({tokenizer.vocab_size} tokens)"
            )
        self.pad_id = tokenizer.pad_id

    def configure_metrics(self, split: str) -> dict[str, Metric]:
        return {"nll": MeanMetric(), "acc": MeanMetric()}

    def _logits(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        """Logits ``(B, L, V)`` of the inputs ``tokens[:, :-1]`` and the targets ``tokens[:, 1:]``."""
        tokens = batch["tokens"]  # (B, L + 1)
        inputs, targets = tokens[:, :-1], tokens[:, 1:]
        start = batch.get("start")
        logits = self.model(inputs) if start is None else self.model(inputs, start=start)  # (B, L, V)
        return logits, targets

    def training_loss(self, batch: dict[str, Tensor]) -> Tensor:
        logits, targets = self._logits(batch)
        return F.cross_entropy(
            logits.flatten(0, 1).float(), targets.flatten(), ignore_index=self.pad_id,
            label_smoothing=self.label_smoothing,
        )

    def evaluate(self, batch: dict[str, Tensor], split: str) -> None:
        logits, targets = self._logits(batch)
        nll, count = token_nll(logits, targets, self.pad_id)
        if count > 0:
            correct = ((logits.argmax(-1) == targets) & (targets != self.pad_id)).sum()
            self.metrics[split]["nll"].update(nll / count, weight=count)
            self.metrics[split]["acc"].update(correct / count, weight=count)

    def derived_metrics(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"ppl": torch.exp(values["nll"])}

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        return self._logits(batch)[0].log_softmax(-1)
