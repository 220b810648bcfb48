"""LightningModule for melody completion with RIPO and its baselines.

    python -m zoo.music.train fit --config configs/music/ripo_folk.yaml

Loss: cross-entropy on the next pitch plus ``duration_weight`` x cross-entropy on the next
duration, over non-pad targets (the official RIPO loss with weight 1). Metrics per split
(``val`` / ``test``), exact token-weighted means: ``pitch_nll``, ``duration_nll`` (nats per
note), ``nll`` (their sum, the monitored value), ``pitch_acc``, ``duration_acc``.
Optimizer: AdamW, linear warmup then cosine decay to ``min_lr_ratio * lr``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch.nn.functional as F
from torch import Tensor, nn
from torchmetrics import MeanMetric

import zoo.music.models  # noqa: F401  (registers the music models)
from zoo.hub import create_model, load_weights_into, save_pretrained
from zoo.optim import adamw, total_steps, warmup_cosine

from .melody import PAD

__all__ = ["MelodyLM"]

_METRICS = ("pitch_nll", "duration_nll", "pitch_acc", "duration_acc")


class MelodyLM(pl.LightningModule):
    """Trains a registered melody model (``ripo_*``) on batches of :class:`~zoo.music.melody.MelodyDataModule`.

    Args:
        model_name: ``ripo_transformer``, ``ripo_music_transformer_baseline`` or ``ripo_vanilla_baseline``.
        overrides: config overrides, e.g. ``{dim: 128, num_heads: 4}``; unknown keys fail.
        lr, weight_decay, betas: AdamW.
        warmup_steps: linear warmup length in optimizer steps.
        min_lr_ratio: the cosine schedule ends at ``lr * min_lr_ratio``.
        duration_weight: weight of the duration cross-entropy in the training loss.
        init_from: registered name, pretrained directory, ``.safetensors`` or ``.ckpt`` to take weights from.
    """

    monitor = "val/nll"
    monitor_mode = "min"

    def __init__(
        self,
        model_name: str = "ripo_transformer",
        overrides: dict[str, Any] | None = None,
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        betas: tuple[float, float] = (0.9, 0.98),
        warmup_steps: int = 100,
        min_lr_ratio: float = 0.1,
        duration_weight: float = 1.0,
        init_from: str | None = None,
    ) -> None:
        super().__init__()
        if warmup_steps < 0 or duration_weight < 0:
            raise ValueError("MelodyLM: warmup_steps and duration_weight must be >= 0")
        self.save_hyperparameters()
        self.model: nn.Module = create_model(model_name, **(overrides or {}))
        if not hasattr(self.model, "pitch_head"):
            raise ValueError(f"MelodyLM needs a (pitch, duration) model such as ripo_transformer, got {model_name!r}")
        if init_from:
            load_weights_into(self.model, init_from)
        self.metrics = nn.ModuleDict({f"{s}_{m}": MeanMetric() for s in ("val", "test") for m in _METRICS})

    def setup(self, stage: str) -> None:
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        tok = getattr(dm, "tokenizer", None)
        if tok is None:
            return
        cfg = self.model.config
        if (tok.pitch_vocab, tok.duration_vocab, tok.step) != (cfg.pitch_vocab, cfg.duration_vocab, cfg.duration_step):
            raise ValueError(
                f"model {self.hparams.model_name} expects pitch/duration vocabularies {cfg.pitch_vocab}/"
                f"{cfg.duration_vocab} with step {cfg.duration_step}, the datamodule yields "
                f"{tok.pitch_vocab}/{tok.duration_vocab} with step {tok.step}"
            )

    def forward(self, pitch: Tensor, duration: Tensor) -> tuple[Tensor, Tensor]:
        return self.model(pitch, duration)

    def _losses(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor, tuple[Tensor, Tensor]]:
        pl_, dl = self.model(batch["pitch"], batch["duration"])  # (B, L, Vp), (B, L, Vd)
        tp, td = batch["target_pitch"], batch["target_duration"]  # (B, L)
        valid = tp != PAD
        count = valid.sum()
        sums = {
            "pitch_nll": F.cross_entropy(pl_.flatten(0, 1).float(), tp.flatten(), ignore_index=PAD, reduction="sum"),
            # a pad duration only occurs with a pad pitch; ignore by the pitch mask
            "duration_nll": F.cross_entropy(
                dl.flatten(0, 1).float(), td.masked_fill(~valid, -100).flatten(), ignore_index=-100, reduction="sum"
            ),
        }
        return sums, count, (pl_, dl)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        sums, count, _ = self._losses(batch)
        n = count.clamp(min=1)
        loss = (sums["pitch_nll"] + self.hparams.duration_weight * sums["duration_nll"]) / n
        bs = batch["pitch"].shape[0]
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/pitch_nll", sums["pitch_nll"] / n, batch_size=bs)
        self.log("train/duration_nll", sums["duration_nll"] / n, batch_size=bs)
        return loss

    def _eval_step(self, batch: dict[str, Tensor], split: str) -> None:
        sums, count, (pl_, dl) = self._losses(batch)
        if count == 0:
            return
        valid = batch["target_pitch"] != PAD
        values = {
            "pitch_nll": sums["pitch_nll"] / count,
            "duration_nll": sums["duration_nll"] / count,
            "pitch_acc": ((pl_.argmax(-1) == batch["target_pitch"]) & valid).sum() / count,
            "duration_acc": ((dl.argmax(-1) == batch["target_duration"]) & valid).sum() / count,
        }
        for name, v in values.items():
            self.metrics[f"{split}_{name}"].update(v, weight=count)

    def _eval_epoch_end(self, split: str) -> None:
        if self.metrics[f"{split}_pitch_nll"].update_count == 0:
            return
        out = {m: self.metrics[f"{split}_{m}"].compute() for m in _METRICS}
        for m, v in out.items():
            self.log(f"{split}/{m}", v)
            self.metrics[f"{split}_{m}"].reset()
        self.log(f"{split}/nll", out["pitch_nll"] + out["duration_nll"], prog_bar=True)

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def on_validation_epoch_end(self) -> None:
        self._eval_epoch_end("val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def on_test_epoch_end(self) -> None:
        self._eval_epoch_end("test")

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> tuple[Tensor, Tensor]:
        pl_, dl = self.model(batch["pitch"], batch["duration"])
        return pl_.log_softmax(-1), dl.log_softmax(-1)

    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        # Linear weights decay; biases, norms, embeddings, FME frequencies and relative tables do not
        tables = ("embedding", "special", "position", "fme", "onset")
        opt = adamw(self.model, hp.lr, hp.betas, hp.weight_decay, no_decay_keywords=tables)
        schedule = warmup_cosine(opt, total_steps(self), self.hparams.warmup_steps, self.hparams.min_lr_ratio)
        return {"optimizer": opt, "lr_scheduler": schedule}

    def save_pretrained(
        self, directory: str | Path, card: str | None = None, metadata: dict[str, Any] | None = None
    ) -> Path:
        """Write the network as a zoo pretrained directory (safetensors + config.json + card)."""
        return save_pretrained(
            self.model, directory, name=self.hparams.model_name, config=self.model.config, card=card, metadata=metadata
        )
