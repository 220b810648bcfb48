"""Kind 7: checkpoints are written atomically (a failing write leaves the previous one readable), and
``--ckpt_path`` hyper-parameters cannot make the CLI import classes from outside the zoo."""

from __future__ import annotations

import errno
import re

import pytest
import torch
from pytorch_lightning.plugins.io.torch_plugin import TorchCheckpointIO

from zoo._testing import cli_main

ARGS = [
    "fit", "--model", "zoo._testing.TinyRegressor", "--data", "zoo._testing.TinyRegressionData",
    "--trainer.val_check_interval", "2", "--trainer.enable_progress_bar", "false",
]


@pytest.mark.parametrize("fail_at", [2, 3, 5])
def test_a_write_failing_half_way_keeps_the_previous_checkpoint(tmp_path, monkeypatch, fail_at):
    original = TorchCheckpointIO.save_checkpoint
    calls = {"n": 0}

    def flaky(self, checkpoint, path, storage_options=None):
        calls["n"] += 1
        if calls["n"] == fail_at:  # the disk fills up in the middle of this file
            with open(path, "wb") as f:
                f.write(b"PK\x03\x04 half a checkpoint")
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return original(self, checkpoint, path, storage_options)

    monkeypatch.setattr(TorchCheckpointIO, "save_checkpoint", flaky)
    with pytest.raises(OSError, match="No space left"):
        cli_main([*ARGS, "--trainer.max_steps", "20", "--trainer.default_root_dir", str(tmp_path / "runs")])
    ckpt_dir = next((tmp_path / "runs").rglob("checkpoints"))
    files = sorted(p.name for p in ckpt_dir.iterdir())
    assert not [f for f in files if f.endswith(".tmp")], files  # no half-written file left behind
    for f in files:  # every checkpoint that exists is complete
        torch.load(ckpt_dir / f, weights_only=True)
    if fail_at > 2:
        assert "last.ckpt" in files


def _checkpoint_naming(tmp_path, class_path: str):
    root = tmp_path / "runs"
    cli_main([*ARGS, "--trainer.max_steps", "2", "--trainer.default_root_dir", str(root), "--name", "src"])
    path = next(root.rglob("last.ckpt"))
    ckpt = torch.load(path, weights_only=True)
    ckpt["hyper_parameters"]["_class_path"] = class_path
    evil = tmp_path / "evil.ckpt"
    torch.save(ckpt, evil)
    return evil


@pytest.mark.parametrize("class_path", ["antigravity.Fly", "os.Popen", "pytorch_lightning.demos.boring_classes.BoringModel"])
def test_ckpt_path_class_outside_the_zoo_is_refused(tmp_path, class_path):
    evil = _checkpoint_naming(tmp_path, class_path)
    with pytest.raises(ValueError, match=rf"name the class '{re.escape(class_path)}'.*ZOO_ALLOWED_CLASS_PATHS"):
        cli_main([*ARGS, "--trainer.max_steps", "3", "--trainer.default_root_dir", str(tmp_path / "r2"), "--ckpt_path", str(evil)])


def test_listed_prefixes_are_allowed(tmp_path, monkeypatch):
    evil = _checkpoint_naming(tmp_path, "zoo._testing.TinyRegressor")
    cli_main([*ARGS, "--trainer.max_steps", "3", "--trainer.default_root_dir", str(tmp_path / "r2"), "--ckpt_path", str(evil)])
    monkeypatch.setenv("ZOO_ALLOWED_CLASS_PATHS", "mylab.models,otherlab.")
    from zoo.training.cli import _allowed_class_path

    assert _allowed_class_path("mylab.models.Net") and not _allowed_class_path("os.system")
