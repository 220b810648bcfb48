"""ZooCLI (zoo/cli.py) on the tiny regression system of zoo/_testing.py."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint

from zoo import hub
from zoo._testing import TinyMLP, cli_main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def runs(tmp_path, monkeypatch) -> Path:
    # LightningCLI warns when sys.argv carries pytest's own arguments next to args=...
    monkeypatch.setattr(sys, "argv", ["zoo"])
    # _run_version publishes the run version to DDP workers through the environment; undo it after.
    monkeypatch.setenv("ZOO_RUN_VERSION", "")
    return tmp_path / "runs"


def _args(runs: Path, *extra: str, subcommand: str = "fit") -> list[str]:
    return [
        subcommand,
        "--model=zoo._testing.TinyRegressor",
        "--data=zoo._testing.TinyRegressionData",
        f"--trainer.default_root_dir={runs}",
        "--trainer.enable_progress_bar=false",
        "--trainer.enable_model_summary=false",
        *extra,
    ]


def _metrics(csv_path: Path) -> list[dict[str, str]]:
    with csv_path.open() as f:
        return list(csv.DictReader(f))


def test_fit_writes_logs_configs_and_checkpoints(runs):
    cli = cli_main(_args(runs, "--trainer.max_steps=7", "--trainer.log_every_n_steps=1"))
    assert cli.trainer.global_step == 7
    run = runs / "TinyRegressor" / "version_0"
    assert (run / "config.yaml").is_file() and (run / "hparams.yaml").is_file()
    assert list(run.glob("events.out.tfevents.*"))
    checkpoints = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert "last.ckpt" in checkpoints and any(name.startswith("best-epoch=") for name in checkpoints)
    rows = _metrics(run / "csv" / "metrics.csv")
    assert {"train_loss", "val_loss", "lr-Adam"} <= set(rows[0])
    assert [r["lr-Adam"] for r in rows if r["lr-Adam"]][0] == "0.05"

    (checkpoint,) = [c for c in cli.trainer.callbacks if isinstance(c, ModelCheckpoint)]
    assert checkpoint.monitor == "val_loss" and checkpoint.save_last
    assert any(isinstance(c, LearningRateMonitor) for c in cli.trainer.callbacks)
    config = (run / "config.yaml").read_text()
    assert "seed_everything: 1234" in config and "class_path: zoo._testing.TinyRegressor" in config

    # a second run gets the next version; --name picks the experiment directory
    cli_main(_args(runs, "--trainer.max_steps=1", "--trainer.limit_val_batches=0"))
    assert (runs / "TinyRegressor" / "version_1" / "config.yaml").is_file()
    cli_main(_args(runs, "--trainer.max_steps=1", "--trainer.limit_val_batches=0", "--name=my_exp"))
    assert (runs / "my_exp" / "version_0" / "checkpoints" / "last.ckpt").is_file()


def test_fast_dev_run_and_no_logger(runs):
    cli = cli_main(_args(runs, "--trainer.fast_dev_run=1"))
    assert cli.trainer.global_step == 1 and not runs.exists()
    cli = cli_main(_args(runs, "--trainer.max_steps=2", "--trainer.logger=false", "--trainer.limit_val_batches=0"))
    assert not any(isinstance(c, LearningRateMonitor) for c in cli.trainer.callbacks)
    assert (runs / "checkpoints" / "last.ckpt").is_file()


def test_print_config(runs, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(_args(runs, "--model.hidden=12", "--print_config"))
    assert info.value.code == 0
    out = capsys.readouterr().out
    for expected in (
        "seed_everything: 1234",
        f"default_root_dir: {runs}",
        "class_path: zoo._testing.TinyRegressor",
        "hidden: 12",
        "init_from: null",
        "name: null",
    ):
        assert expected in out, expected
    assert not runs.exists()


def test_unknown_option_fails(runs, capsys):
    with pytest.raises(SystemExit) as info:
        cli_main(_args(runs, "--model.hiden=12"))
    assert info.value.code != 0
    assert "hiden" in capsys.readouterr().err


def test_resume_with_ckpt_path(runs):
    cli_main(_args(runs, "--trainer.max_steps=4", "--trainer.log_every_n_steps=1", "--trainer.limit_val_batches=0"))
    last = runs / "TinyRegressor" / "version_0" / "checkpoints" / "last.ckpt"
    saved = {k: v.clone() for k, v in torch.load(last, weights_only=True)["state_dict"].items()}

    # same max_steps and another seed: a resumed run trains no further step, so weights are the checkpoint's
    cli = cli_main(_args(runs, "--trainer.max_steps=4", f"--ckpt_path={last}", "--seed_everything=7"))
    assert cli.trainer.global_step == 4
    for key, value in cli.model.state_dict().items():
        assert torch.equal(value, saved[key]), key

    cli = cli_main(
        _args(runs, "--trainer.max_steps=6", f"--ckpt_path={last}", "--trainer.log_every_n_steps=1", "--name=resumed")
    )
    assert cli.trainer.global_step == 6
    rows = _metrics(runs / "resumed" / "version_0" / "csv" / "metrics.csv")
    assert sorted({int(r["step"]) for r in rows if r["train_loss"]}) == [4, 5]


def test_init_from_loads_weights_only(runs, tmp_path):
    source = TinyMLP(dim=4, hidden=16)
    hub.save_pretrained(source, tmp_path / "pretrained", name="tiny_mlp", config={"dim": 4, "hidden": 16})
    cli = cli_main(_args(runs, f"--model.init_from={tmp_path / 'pretrained'}", subcommand="validate"))
    for key, value in source.state_dict().items():
        assert torch.equal(cli.model.model.state_dict()[key], value), key

    # fine-tune from a Lightning checkpoint of another run: the "model." prefix is stripped
    cli_main(_args(runs, "--trainer.max_steps=2", "--trainer.limit_val_batches=0", "--name=pre"))
    last = runs / "pre" / "version_0" / "checkpoints" / "last.ckpt"
    cli = cli_main(_args(runs, f"--model.init_from={last}", "--trainer.max_steps=1", "--trainer.limit_val_batches=0"))
    trained = torch.load(last, weights_only=True)["state_dict"]
    fresh = TinyMLP()
    hub.load_weights_into(fresh, last)
    assert all(torch.equal(fresh.state_dict()[k], trained[f"model.{k}"]) for k in fresh.state_dict())

    # jsonargparse re-raises errors from the module's constructor as a ValueError quoting them
    with pytest.raises(ValueError, match=r"fc1\.weight: checkpoint \(16, 4\) vs model \(8, 4\)"):
        cli_main(_args(runs, "--model.hidden=8", f"--model.init_from={tmp_path / 'pretrained'}", subcommand="validate"))


@pytest.mark.slow
def test_ddp_two_cpu_processes(runs):
    command = [
        sys.executable,
        "-m",
        "zoo._testing",
        *_args(runs, "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"),
        "--trainer.max_steps=3",
        "--trainer.log_every_n_steps=1",
        "--data.num_samples=64",
    ]
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    run = runs / "TinyRegressor" / "version_0"
    assert not (runs / "TinyRegressor" / "version_1").exists()  # both ranks share one run directory
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 3
    # 48 training samples, batch 8, 2 ranks: DistributedSampler gives each rank 3 batches per epoch
    assert ckpt["loops"]["fit_loop"]["epoch_loop.batch_progress"]["total"]["completed"] == 3
    assert "val_loss" in _metrics(run / "csv" / "metrics.csv")[0]
