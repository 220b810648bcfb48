"""LightningModule for autoregressive music language models (Music Transformer and friends).

Loss: next-token cross-entropy (optional label smoothing) over non-PAD targets. Metrics per split:
``<split>/nll`` (nats per token, exact token-weighted mean over the split), ``<split>/ppl`` (exp of it)
and ``<split>/acc`` (next-token accuracy). Optimizer: AdamW, linear warmup then cosine decay to
``min_lr_ratio * lr`` over the run's optimizer steps; gradient clipping is the Trainer's
``gradient_clip_val``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

import zoo.music.models  # noqa: F401  (registers the music models)
from zoo.hub import create_model, load_weights_into, save_pretrained
from zoo.optim import adamw, total_steps, warmup_cosine

__all__ = ["MusicLM", "token_nll"]


def token_nll(logits: Tensor, targets: Tensor, pad_id: int) -> tuple[Tensor, Tensor]:
    """Summed NLL (nats) of the non-PAD ``targets (B, L)`` under ``logits (B, L, V)``, and their count."""
    nll = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=pad_id, reduction="sum")
    return nll, (targets != pad_id).sum()


class MusicLM(pl.LightningModule):
    """Trains a registered music model on token windows ``{"tokens": (B, L + 1)}``.

    Args:
        model_name: a registered model (``zoo.list_models("music_*")``).
        overrides: config overrides for it, e.g. ``{num_layers: 2, dropout: 0.0}``; unknown keys fail.
        lr, weight_decay, betas: AdamW.
        warmup_steps: linear warmup length in optimizer steps.
        min_lr_ratio: the cosine schedule ends at ``lr * min_lr_ratio``.
        label_smoothing: for the training loss only (validation/test NLL are never smoothed).
        init_from: a registered name, pretrained directory, ``.safetensors`` or ``.ckpt`` whose weights
            (only) initialize the network (fine-tuning).
    """

    monitor = "val/nll"
    monitor_mode = "min"

    def __init__(
        self,
        model_name: str = "music_transformer_demo",
        overrides: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.98),
        warmup_steps: int = 200,
        min_lr_ratio: float = 0.1,
        label_smoothing: float = 0.0,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.save_hyperparameters()
        self.model: nn.Module = create_model(model_name, **(overrides or {}))
        self.config = self.model.config
        if init_from:
            load_weights_into(self.model, init_from)
        self.pad_id = 0  # replaced by the datamodule's tokenizer in setup()
        self.metrics = nn.ModuleDict()
        for split in ("val", "test"):
            self.metrics[f"{split}_nll"] = MeanMetric()
            self.metrics[f"{split}_acc"] = MeanMetric()

    # ------------------------------------------------------------------ data contract
    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        tokenizer = getattr(dm, "tokenizer", None)
        if tokenizer is None:
            return
        if tokenizer.kind != self.config.tokenizer or tokenizer.vocab_size != self.config.vocab_size:
            raise ValueError(
                f"model {self.hparams.model_name} expects the {self.config.tokenizer!r} vocabulary "
                f"({self.config.vocab_size} tokens) but the datamodule yields {tokenizer.kind!r} "
                f"({tokenizer.vocab_size} tokens)"
            )
        self.pad_id = tokenizer.pad_id

    def forward(self, tokens: Tensor) -> Tensor:
        return self.model(tokens)

    def _split_batch(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        tokens = batch["tokens"]  # (B, L + 1)
        return tokens[:, :-1], tokens[:, 1:]

    # ------------------------------------------------------------------ steps
    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        inputs, targets = self._split_batch(batch)
        logits = self.model(inputs)  # (B, L, V)
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(), targets.flatten(), ignore_index=self.pad_id,
            label_smoothing=self.hparams.label_smoothing,
        )
        self.log("train/loss", loss, prog_bar=True, batch_size=inputs.shape[0])
        return loss

    def _eval_step(self, batch: dict[str, Tensor], split: str) -> None:
        inputs, targets = self._split_batch(batch)
        logits = self.model(inputs)  # (B, L, V)
        nll, count = token_nll(logits, targets, self.pad_id)
        if count > 0:
            self.metrics[f"{split}_nll"].update(nll / count, weight=count)
            correct = ((logits.argmax(-1) == targets) & (targets != self.pad_id)).sum()
            self.metrics[f"{split}_acc"].update(correct / count, weight=count)

    def _eval_epoch_end(self, split: str) -> None:
        nll_metric, acc_metric = self.metrics[f"{split}_nll"], self.metrics[f"{split}_acc"]
        if nll_metric.update_count == 0:
            return
        nll = nll_metric.compute()
        self.log(f"{split}/nll", nll, prog_bar=True)
        self.log(f"{split}/ppl", torch.exp(nll))
        self.log(f"{split}/acc", acc_metric.compute())
        nll_metric.reset()
        acc_metric.reset()

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        inputs, _ = self._split_batch(batch)
        return self.model(inputs).log_softmax(-1)

    # ------------------------------------------------------------------ optimization
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        # weights of linear layers decay; biases, norms, embeddings and relative tables do not
        opt = adamw(self.model, hp.lr, hp.betas, hp.weight_decay, no_decay_keywords=("embed", "position"))
        return {"optimizer": opt, "lr_scheduler": warmup_cosine(opt, total_steps(self), hp.warmup_steps, hp.min_lr_ratio)}

    # ------------------------------------------------------------------ export
    def save_pretrained(
        self, directory: str | Path, card: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Path:
        """Write the network as a zoo pretrained directory (safetensors + config.json + card)."""
        # the training backend (e.g. "sdpa" on CPU) is not part of the model: ship "auto"
        config = dataclasses.replace(self.model.config, backend="auto")
        return save_pretrained(
            self.model, directory, name=self.hparams.model_name, config=config,
            card=card, metadata=metadata,
        )
