"""Kind 9: a killed and resumed run reproduces the uninterrupted run's losses exactly (CPU).

The run shuffles its data and uses dropout, so the shuffle order, the epoch position and every RNG
stream have to come back from the checkpoint for the losses to match bit for bit.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from zoo._testing import SimulatedCrash, cli_main

BASE = [
    "--model", "zoo._testing.TinyRegressor", "--model.init_args.dropout", "0.3",
    "--data", "zoo._testing.TinyRegressionData", "--data.init_args.num_samples", "64",
    "--trainer.max_steps", "20", "--trainer.val_check_interval", "4", "--trainer.log_every_n_steps", "1",
    "--trainer.enable_progress_bar", "false", "--seed_everything", "7",
]


def _losses(run_dir: Path) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return {int(r["step"]): float(r["train_loss"]) for r in csv.DictReader(f) if r.get("train_loss")}


@pytest.mark.parametrize("crash_step", [9, 13], ids=["after-a-mid-epoch-save", "after-an-epoch"])
def test_killed_and_resumed_run_reproduces_the_losses(tmp_path, crash_step):
    root = str(tmp_path / "runs")
    cli_main(["fit", *BASE, "--trainer.default_root_dir", root, "--name", "full"])
    full = _losses(tmp_path / "runs" / "full" / "version_0")
    assert len(full) == 20

    crash = ["--trainer.callbacks+=zoo._testing.CrashAtStep", f"--trainer.callbacks.step={crash_step}"]
    with pytest.raises(SimulatedCrash):
        cli_main(["fit", *BASE, "--trainer.default_root_dir", root, "--name", "crashed", *crash])
    last = tmp_path / "runs" / "crashed" / "version_0" / "checkpoints" / "last.ckpt"
    assert last.is_file()
    cli_main(["fit", *BASE, "--trainer.default_root_dir", root, "--name", "resumed", "--ckpt_path", str(last)])
    resumed = _losses(tmp_path / "runs" / "resumed" / "version_0")
    saved_at = torch.load(last, weights_only=True)["global_step"]  # the last save point before the crash
    assert 0 < saved_at < crash_step and sorted(resumed) == list(range(saved_at, 20))
    for step in resumed:
        assert resumed[step] == full[step], f"step {step}: resumed {resumed[step]!r} != uninterrupted {full[step]!r}"
