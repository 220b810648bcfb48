"""The callbacks ``ZooCLI`` adds to every run: what makes a run safe to kill, resume and trust.

- :class:`FiniteCheck`: a non-finite training loss, non-finite weights after a step, or a
  non-finite monitored validation metric stop the run with an error naming the step, before any
  checkpoint of that state is written (checkpoint callbacks run after every other callback);
- :class:`ZooCheckpoint`: ``ModelCheckpoint`` whose files are written to a temporary file in the same
  directory and moved into place with ``os.replace`` (a full disk or a kill mid-write leaves the
  previous checkpoint intact), whose ``last.ckpt`` is rewritten at *every* save point (Lightning's
  only follows an improved top-k), and which writes ``last.ckpt`` when the run is interrupted
  (Ctrl-C, or SIGTERM, which ``ZooCLI`` turns into the same interrupt) — never on another error;
- :class:`ResumeState`: saves the RNG states (torch, CUDA, numpy, python) and the training sampler's
  position in the checkpoint and restores them, so a killed and resumed run reproduces the
  uninterrupted run's losses exactly (with :class:`~zoo.training.data.ResumableSampler`).
"""

from __future__ import annotations

import math
import os
import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback, ModelCheckpoint

__all__ = ["DivergenceError", "FiniteCheck", "ZooCheckpoint", "ResumeState"]


class DivergenceError(FloatingPointError):
    """Training produced a non-finite loss, weights or monitored metric."""


class FiniteCheck(Callback):
    """Stop the run at the first non-finite loss, weights or monitored validation metric."""

    def __init__(self, check_weights: bool = True) -> None:
        self.check_weights = check_weights

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int) -> None:
        loss = outputs.get("loss") if isinstance(outputs, dict) else outputs
        if isinstance(loss, torch.Tensor) and not bool(torch.isfinite(loss.detach()).all()):
            raise DivergenceError(
                f"non-finite training loss {float(loss.detach().float().reshape(-1)[0])} at step {trainer.global_step} "
                f"(epoch {trainer.current_epoch}, batch {batch_idx}); lower the learning rate or enable gradient clipping"
            )
        if self.check_weights:
            bad = [n for n, p in pl_module.named_parameters() if p.requires_grad and not bool(torch.isfinite(p.detach()).all())]
            if bad:
                raise DivergenceError(
                    f"non-finite weights after step {trainer.global_step}: {', '.join(bad[:10])}"
                    + (f" and {len(bad) - 10} more" if len(bad) > 10 else "")
                )

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        monitor = getattr(pl_module, "monitor", None)
        value = trainer.callback_metrics.get(monitor) if isinstance(monitor, str) else None
        if trainer.sanity_checking or value is None:
            return
        if not math.isfinite(float(value)):
            raise DivergenceError(f"non-finite {monitor} = {float(value)} at step {trainer.global_step}")


class ZooCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` with atomic writes, an always-current ``last.ckpt`` and a save on interrupt."""

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        tmp = os.path.join(os.path.dirname(filepath), f".{os.path.basename(filepath)}.{os.getpid()}.tmp")
        try:
            trainer.save_checkpoint(tmp, self.save_weights_only)
            if trainer.is_global_zero:
                os.replace(tmp, filepath)
        finally:
            if trainer.is_global_zero and os.path.exists(tmp):
                os.remove(tmp)
        trainer.strategy.barrier("zoo_checkpoint")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(self)

    def _save_last_if_stale(self, trainer: pl.Trainer) -> None:
        if self.save_last and not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)  # Lightning rewrites last only after a top-k save

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_epoch_end(trainer, pl_module)
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_if_stale(trainer)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        # an interrupt keeps the latest state; a failure (a diverged run) must not become a checkpoint
        if isinstance(exception, KeyboardInterrupt) and self.save_last and not trainer.sanity_checking:
            if not trainer.fast_dev_run and self._last_global_step_saved != trainer.global_step:
                self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def _rng_state() -> dict[str, Any]:
    # numpy's state as tensors and plain values, so that torch.load(weights_only=True) reads it back
    name, keys, pos, has_gauss, cached = np.random.get_state()
    numpy_state = {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                   "has_gauss": int(has_gauss), "cached": float(cached)}
    state = {"torch": torch.get_rng_state(), "numpy": numpy_state, "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class ResumeState(Callback):
    """RNG states and the training sampler's position, saved with every checkpoint and restored on resume.

    The RNG state is put back right before the first resumed training step (after the resumed epoch's
    data iterator exists), so the global streams continue exactly where the checkpoint left them;
    data augmentation draws from per-example seeds (:class:`~zoo.training.data.SeededDataset`), which
    prefetching cannot reorder.
    """

    key = "zoo_resume"

    def __init__(self) -> None:
        self._pending: dict[str, Any] | None = None

    @staticmethod
    def _sampler(trainer: pl.Trainer) -> Any:
        dm = trainer.datamodule
        return getattr(dm, "train_sampler", None)

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        sampler = self._sampler(trainer)
        done = trainer.fit_loop.epoch_loop.batch_progress.current.completed
        checkpoint[self.key] = {
            "rng": _rng_state(),
            "sampler": None if sampler is None else {**sampler.state_dict(), "batches_done": int(done)},
        }

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]) -> None:
        # runs before the training loader exists: the datamodule builds its sampler at the saved position
        self._pending = checkpoint.get(self.key)
        dm = trainer.datamodule
        if self._pending and self._pending.get("sampler") and hasattr(dm, "resume_train_sampler"):
            dm.resume_train_sampler(self._pending["sampler"])

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int) -> None:
        if self._pending is not None:
            _set_rng_state(self._pending["rng"])
            self._pending = None
