"""Kind 1: runs started at once in the same ``runs/`` never share a ``version_N``."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from zoo.training.cli import _run_version

REPO = Path(__file__).resolve().parents[2]


def test_reservations_racing_in_threads_are_distinct(tmp_path, monkeypatch):
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    (tmp_path / "exp" / "version_3").mkdir(parents=True)  # an earlier run
    got: list[int] = []
    barrier = threading.Barrier(12)

    def reserve():
        barrier.wait()
        got.append(_run_version(tmp_path / "exp"))

    threads = [threading.Thread(target=reserve) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(got) == list(range(4, 16))
    assert all((tmp_path / "exp" / f"version_{v}").is_dir() for v in got)


@pytest.mark.slow
def test_three_fit_runs_started_at_once(tmp_path):
    args = [
        sys.executable, "-m", "zoo._testing", "fit", "--model", "zoo._testing.TinyRegressor",
        "--data", "zoo._testing.TinyRegressionData", "--trainer.max_steps", "3", "--trainer.enable_progress_bar", "false",
        "--trainer.default_root_dir", str(tmp_path / "runs"), "--name", "same",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("ZOO_RUN_VERSION", None)
    procs = [subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for _ in range(3)]
    outs = [p.communicate(timeout=300)[0].decode() for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], outs
    versions = sorted(p.name for p in (tmp_path / "runs" / "same").iterdir())
    assert versions == ["version_0", "version_1", "version_2"]
    for v in versions:
        run = tmp_path / "runs" / "same" / v
        assert (run / "config.yaml").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
