"""``MelodyLM``: melody completion with RIPO and its baselines.

    python -m zoo.music.train fit --config configs/music/melody/ripo_folk.yaml

Loss: cross-entropy on the next pitch plus ``duration_weight`` x cross-entropy on the next
duration, over non-pad targets (the official RIPO loss with weight 1). Metrics per split
(``val`` / ``test``), exact token-weighted means: ``pitch_nll``, ``duration_nll`` (nats per
note), ``nll`` (their sum, the monitored value), ``pitch_acc``, ``duration_acc``.
"""

from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor
from torchmetrics import MeanMetric, Metric

from zoo.training.module import ZooModule

from .tokenizer import PAD

__all__ = ["MelodyLM"]


class MelodyLM(ZooModule):
    """Trains a registered melody model (``ripo_*``) on batches of :class:`~zoo.music.melody.data.MelodyDataModule`.

    Args:
        model_name: ``ripo_transformer``, ``ripo_music_transformer_baseline`` or ``ripo_vanilla_baseline``.
        duration_weight: weight of the duration cross-entropy in the training loss.
        betas: AdamW betas (the Transformer's 0.98).
        warmup_steps: linear warmup length in optimizer steps.
        **kwargs: :class:`~zoo.training.module.ZooModule`'s (``overrides``, ``init_from``, ``lr``, ...).
    """

    monitor = "val/nll"
    monitor_mode = "min"

    def __init__(
        self,
        model_name: str = "ripo_transformer",
        duration_weight: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.98),
        warmup_steps: int = 100,
        **kwargs: Any,
    ) -> None:
        if duration_weight < 0:
            raise ValueError(f"MelodyLM: duration_weight must be >= 0, got {duration_weight}")
        super().__init__(model_name, betas=betas, warmup_steps=warmup_steps, **kwargs)
        self.duration_weight = duration_weight
        if not hasattr(self.model, "pitch_head"):
            raise ValueError(f"MelodyLM needs a (pitch, duration) model such as ripo_transformer, got {model_name!r}")

    def check_data(self, datamodule: Any) -> None:
        tok = getattr(datamodule, "tokenizer", None)
        if tok is None:
            return
        cfg = self.model.config
        if (tok.pitch_vocab, tok.duration_vocab, tok.step) != (cfg.pitch_vocab, cfg.duration_vocab, cfg.duration_step):
            raise ValueError(
                f"model {self.hparams.model_name} expects pitch/duration vocabularies {cfg.pitch_vocab}/"
                f"{cfg.duration_vocab} with step {cfg.duration_step}, the datamodule yields "
                f"{tok.pitch_vocab}/{tok.duration_vocab} with step {tok.step}"
            )

    def configure_metrics(self, split: str) -> dict[str, Metric]:
        return {name: MeanMetric() for name in ("pitch_nll", "duration_nll", "pitch_acc", "duration_acc")}

    def _losses(self, batch: dict[str, Tensor]) -> tuple[dict[str, Tensor], Tensor, tuple[Tensor, Tensor]]:
        pl_, dl = self.model(batch["pitch"], batch["duration"])  # (B, L, Vp), (B, L, Vd)
        tp, td = batch["target_pitch"], batch["target_duration"]  # (B, L)
        valid = tp != PAD
        sums = {
            "pitch_nll": F.cross_entropy(pl_.flatten(0, 1).float(), tp.flatten(), ignore_index=PAD, reduction="sum"),
            # a pad duration only occurs with a pad pitch; ignore by the pitch mask
            "duration_nll": F.cross_entropy(
                dl.flatten(0, 1).float(), td.masked_fill(~valid, -100).flatten(), ignore_index=-100, reduction="sum"
            ),
        }
        return sums, valid.sum(), (pl_, dl)

    def training_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        sums, count, _ = self._losses(batch)
        n = count.clamp(min=1)
        loss = (sums["pitch_nll"] + self.duration_weight * sums["duration_nll"]) / n
        return loss, {"pitch_nll": sums["pitch_nll"] / n, "duration_nll": sums["duration_nll"] / n}

    def evaluate(self, batch: dict[str, Tensor], split: str) -> None:
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
        for name, value in values.items():
            self.metrics[split][name].update(value, weight=count)

    def derived_metrics(self, values: dict[str, Tensor]) -> dict[str, Tensor]:
        return {"nll": values["pitch_nll"] + values["duration_nll"]}

    def predict_step(self, batch: dict[str, Tensor], batch_idx: int) -> tuple[Tensor, Tensor]:
        pl_, dl = self.model(batch["pitch"], batch["duration"])
        return pl_.log_softmax(-1), dl.log_softmax(-1)
