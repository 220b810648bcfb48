"""A tiny regression system for testing :class:`zoo.training.cli.ZooCLI` (DDP workers need importable classes).

Run it like a domain's ``train.py``::

    python -m zoo._testing fit --model zoo._testing.TinyRegressor --data zoo._testing.TinyRegressionData \
        --trainer.max_steps 20
"""

from __future__ import annotations

import os
import signal
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import Dataset, TensorDataset

from .hub import load_weights_into
from .train import cli_main
from .training.data import ZooDataModule

__all__ = ["CrashAtStep", "SimulatedCrash", "TinyMLP", "TinyRegressor", "TinyRegressionData", "cli_main"]


class TinyMLP(nn.Module):
    """Two-layer MLP, ``(B, dim) -> (B, 1)``."""

    def __init__(self, dim: int = 4, hidden: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.drop = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.drop(torch.tanh(self.fc1(x))))  # (B, 1)


class TinyRegressor(pl.LightningModule):
    """Mean-squared-error regression with :class:`TinyMLP`; monitors ``val_loss``."""

    monitor = "val_loss"

    def __init__(
        self, dim: int = 4, hidden: int = 16, lr: float = 0.05, dropout: float = 0.0, init_from: str | None = None
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.model = TinyMLP(dim, hidden, dropout)
        self.lr = lr
        if init_from is not None:
            load_weights_into(self.model, init_from)

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)

    def _loss(self, batch: tuple[Tensor, Tensor]) -> Tensor:
        x, y = batch
        return nn.functional.mse_loss(self(x), y)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        loss = self._loss(batch)
        self.log("train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        self.log("val_loss", self._loss(batch), prog_bar=True, sync_dist=True)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.Adam(self.parameters(), lr=self.lr)


class CrashAtStep(Callback):
    """After optimizer step ``step``: send the process SIGTERM (``sigterm=True``), or raise KeyboardInterrupt
    (``interrupt=True``, Ctrl-C), or else :class:`SimulatedCrash`: a killed run for the reliability tests."""

    def __init__(self, step: int, interrupt: bool = False, sigterm: bool = False) -> None:
        self.step, self.interrupt, self.sigterm = step, interrupt, sigterm

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        if trainer.global_step != self.step:
            return
        if self.sigterm:
            os.kill(os.getpid(), signal.SIGTERM)  # what a scheduler or `kill` sends
        raise KeyboardInterrupt("simulated Ctrl-C") if self.interrupt else SimulatedCrash(f"crash at step {self.step}")


class SimulatedCrash(RuntimeError):
    """The process died (as far as checkpoints can tell)."""


class TinyRegressionData(ZooDataModule):
    """``y = tanh(x @ w) + noise`` with ``x ~ N(0, 1)``, generated from ``seed``; 3/4 train, 1/4 val (and test)."""

    def __init__(self, num_samples: int = 64, dim: int = 4, batch_size: int = 8, noise: float = 0.01, seed: int = 0):
        super().__init__(None, batch_size)
        if num_samples < 4:
            raise ValueError(f"num_samples={num_samples}: expected at least 4 (3/4 train, 1/4 val)")
        self.num_samples, self.dim, self.noise, self.seed = num_samples, dim, noise, seed

    def load_default(self) -> dict[str, Dataset]:
        gen = torch.Generator().manual_seed(self.seed)
        x = torch.randn(self.num_samples, self.dim, generator=gen)  # (N, dim)
        w = torch.randn(self.dim, 1, generator=gen)
        y = torch.tanh(x @ w) + self.noise * torch.randn(self.num_samples, 1, generator=gen)  # (N, 1)
        split = self.num_samples * 3 // 4
        val = TensorDataset(x[split:], y[split:])
        return {"train": TensorDataset(x[:split], y[:split]), "val": val, "test": val}


if __name__ == "__main__":
    cli_main()
