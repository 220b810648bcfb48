"""After ``test``: the ASVspoof score file, per-attack EERs (and min t-DCF), a DET curve and a score histogram.

:class:`ScoreReport` collects the ``{"scores", "labels", "attacks", "utts"}`` that
:meth:`zoo.speech.antispoofing.module.AntiSpoofing.evaluate` returns for each test batch, gathers them
from every process, and on rank zero writes into the run directory:

- ``scores_test.txt``: ``UTT ATTACK KEY SCORE`` per line (:func:`~.metrics.write_scores`);
- ``eer_test.json``: pooled EER, unseen-attack EER, EER per attack, and min t-DCF when an ASVspoof 2019
  ASV score file is given (``asv_scores``);
- ``det_curve.png`` and ``score_histogram.png``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from scipy.stats import norm

from zoo.training.figures import FigureCallback, pyplot

from . import metrics as M

__all__ = ["ScoreReport", "plot_det", "plot_histogram"]


class ScoreReport(FigureCallback):
    """Score file, EER summary and figures after ``test`` (see the module docstring)."""

    filename = "det_curve.png"

    def __init__(self, asv_scores: str | None = None, filename: str | None = None) -> None:
        super().__init__(filename)
        self.asv_scores = asv_scores
        self.rows: list[tuple[str, str, int, float]] = []
        self.summary: dict[str, Any] = {}

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.rows = []

    def on_test_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        scores = outputs["scores"].detach().float().cpu().tolist()
        labels = outputs["labels"].cpu().tolist()
        self.rows += list(zip(outputs["utts"], outputs["attacks"], labels, scores))

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        rows = self.rows
        if trainer.world_size > 1:
            gathered: list[Any] = [None] * trainer.world_size
            torch.distributed.all_gather_object(gathered, rows)
            rows = [r for part in gathered for r in part]
        if not trainer.is_global_zero or not rows:
            return
        out = Path(self.path(trainer)).parent
        utts, attacks, labels, scores = (list(c) for c in zip(*rows))
        M.write_scores(out / "scores_test.txt", utts, attacks, labels, scores)
        self.summary = summarize(np.asarray(scores), np.asarray(labels), attacks, getattr(trainer.datamodule, "seen_attacks", set()))
        if self.asv_scores is not None:
            asv = M.read_asv_scores(self.asv_scores)
            self.summary["min_tdcf"] = M.min_tdcf(scores, labels, asv["target"], asv["nontarget"], asv["spoof"])
        (out / "eer_test.json").write_text(json.dumps(self.summary, indent=2) + "\n")
        labels_arr = np.asarray(labels)
        bona, spoof = np.asarray(scores)[labels_arr == 1], np.asarray(scores)[labels_arr == 0]
        if bona.size and spoof.size:
            self.written = plot_det(bona, spoof, self.path(trainer))
            plot_histogram(bona, spoof, out / "score_histogram.png")


def summarize(scores: np.ndarray, labels: np.ndarray, attacks: list[str], seen: set[str]) -> dict[str, Any]:
    """Pooled EER, EER against the attacks not in ``seen``, and EER per attack (fractions; NaN where a class is missing)."""
    summary: dict[str, Any] = {"trials": int(labels.size), "bonafide": int(labels.sum())}
    has_both = 0 < labels.sum() < labels.size
    summary["eer"] = M.eer(scores, labels) if has_both else float("nan")
    unseen = np.array([lab == 0 and a not in seen for a, lab in zip(attacks, labels)])
    keep = (labels == 1) | unseen
    summary["eer_unseen"] = M.eer(scores[keep], labels[keep]) if has_both and unseen.any() else float("nan")
    summary["unseen_attacks"] = sorted({a for a, u in zip(attacks, unseen) if u})
    summary["eer_per_attack"] = M.per_attack_eer(scores, labels, attacks) if has_both else {}
    return summary


def plot_det(bona: np.ndarray, spoof: np.ndarray, path: str | Path) -> Path:
    """The DET curve (miss vs false-alarm rate on normal-deviate axes) with its EER point."""
    plt = pyplot()
    miss, fa, _ = M.det_curve(bona, spoof)
    clip = lambda p: norm.ppf(np.clip(p, 1e-4, 1 - 1e-4))  # noqa: E731
    i = int(np.argmin(np.abs(miss - fa)))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(clip(fa), clip(miss), lw=1.5)
    ax.plot(clip(fa[i]), clip(miss[i]), "o", color="C3", label=f"EER {100 * (miss[i] + fa[i]) / 2:.2f}%")
    ticks = np.array([0.001, 0.01, 0.05, 0.2, 0.5, 0.8, 0.95])
    ax.set_xticks(norm.ppf(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_yticks(norm.ppf(ticks), [f"{100 * t:g}" for t in ticks])
    ax.set_xlabel("false alarm rate (%): spoofs accepted")
    ax.set_ylabel("miss rate (%): bona fide rejected")
    ax.set_title("test DET curve")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def plot_histogram(bona: np.ndarray, spoof: np.ndarray, path: str | Path) -> Path:
    """Histograms of the bona fide and spoof scores on one axis."""
    plt = pyplot()
    bins = np.linspace(min(bona.min(), spoof.min()), max(bona.max(), spoof.max()) + 1e-9, 40)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(spoof, bins=bins, alpha=0.6, density=True, label=f"spoof ({spoof.size})", color="C3")
    ax.hist(bona, bins=bins, alpha=0.6, density=True, label=f"bona fide ({bona.size})", color="C0")
    ax.set_xlabel("score (higher = more likely bona fide)")
    ax.set_ylabel("density")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
