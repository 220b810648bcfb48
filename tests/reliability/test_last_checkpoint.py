"""Kind 8: ``last.ckpt`` is the latest state after every save point, and Ctrl-C or SIGTERM writes one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoo._testing import SimulatedCrash, cli_main

REPO = Path(__file__).resolve().parents[2]
ARGS = [
    "--model", "zoo._testing.TinyRegressor", "--data", "zoo._testing.TinyRegressionData",
    "--trainer.max_steps", "40", "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false",
]


def _step(path: Path) -> int:
    return int(torch.load(path, weights_only=True)["global_step"])


@pytest.mark.parametrize("crash_step", [5, 9])
def test_last_follows_every_save_point_even_without_improvement(tmp_path, crash_step):
    # lr = 0: validation never improves after the first save, so Lightning alone would leave last at step 2
    with pytest.raises(SimulatedCrash):
        cli_main(["fit", *ARGS, "--model.init_args.lr", "0.0", "--trainer.default_root_dir", str(tmp_path),
                  "--trainer.callbacks+=zoo._testing.CrashAtStep", f"--trainer.callbacks.step={crash_step}"])
    last = next(tmp_path.rglob("last.ckpt"))
    saved = _step(last)
    assert crash_step - 2 < saved <= crash_step, (saved, crash_step)


def test_ctrl_c_writes_last(tmp_path):
    with pytest.raises(SystemExit):
        cli_main(["fit", *ARGS, "--trainer.default_root_dir", str(tmp_path),
                  "--trainer.callbacks+=zoo._testing.CrashAtStep", "--trainer.callbacks.step=7",
                  "--trainer.callbacks.interrupt=true"])
    assert _step(next(tmp_path.rglob("last.ckpt"))) == 7


def test_sigterm_writes_last_and_exits_nonzero(tmp_path):
    cmd = [sys.executable, "-m", "zoo._testing", "fit", *ARGS, "--trainer.default_root_dir", str(tmp_path),
           "--trainer.callbacks+=zoo._testing.CrashAtStep", "--trainer.callbacks.step=7", "--trainer.callbacks.sigterm=true"]
    out = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=300)
    assert out.returncode != 0, out.stdout + out.stderr
    assert _step(next(tmp_path.rglob("last.ckpt"))) == 7, out.stderr[-2000:]
