"""RIPO through the music CLI: fit + test on a fixture folder, with the shipped config."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from zoo.music.melody.module import MelodyLM

ABC = """X:{n}
T:Tune {n}
M:4/4
L:1/8
K:D
{body}
"""
BODIES = ["DEFG ABcd | e2 d2 c2 B2 | A2 F2 E2 D2 | D8 |", "A2 FA dAFA | G2 EG cGEG | FAdf edcB | A8 |",
          "d2 fd Adfd | c2 ec Acec | dcBA GFED | D8 |", "FGAB c2 A2 | B2 G2 E4 | FGAB c2 e2 | d8 |"]


def _folder(root: Path) -> Path:
    root.mkdir(parents=True)
    for i in range(12):
        (root / f"tune{i}.abc").write_text(ABC.format(n=i, body=" ".join(BODIES[j % 4] for j in range(i, i + 3))))
    return root


def test_fit_and_test_through_cli(tmp_path):
    from zoo.music.train import cli_main

    data = _folder(tmp_path / "abc")
    config = Path(__file__).parents[3] / "configs" / "music" / "melody" / "ripo_folk.yaml"
    common = [
        "--config", str(config),
        "--data.init_args.path", str(data), "--data.init_args.cache_dir", str(tmp_path / "cache"),
        "--data.init_args.seq_len", "16", "--data.init_args.batch_size", "4",
        "--data.init_args.val_percent", "25", "--data.init_args.test_percent", "25",
        "--model.init_args.overrides", "{dim: 32, num_heads: 2, ff_dim: 64, depth: 1, max_len: 16}",
        "--trainer.default_root_dir", str(tmp_path / "runs"), "--trainer.enable_progress_bar", "false",
    ]
    args = ["fit", *common, "--trainer.max_steps", "4", "--trainer.val_check_interval", "2",
            "--trainer.log_every_n_steps", "1"]
    cli = cli_main(args)
    assert isinstance(cli.model, MelodyLM)
    metrics = cli.trainer.callback_metrics
    for name in ("val/pitch_nll", "val/duration_nll", "val/pitch_acc", "val/duration_acc", "val/nll"):
        assert name in metrics, sorted(metrics)
    assert 0.0 <= float(metrics["val/pitch_acc"]) <= 1.0
    ckpt = cli.trainer.checkpoint_callback.last_model_path
    assert ckpt and Path(ckpt).exists()
    # melody continuation from a primer through python -m zoo.music.generate
    import pretty_midi

    from zoo.music.generate import main as generate_main

    paths = generate_main(["--checkpoint", ckpt, "--out", str(tmp_path / "gen.mid"), "--primer",
                           str(data / "tune0.abc"), "--length", "6", "--top_k", "8", "--seed", "1"])
    notes = pretty_midi.PrettyMIDI(str(paths["midi"])).instruments[0].notes
    assert len(notes) >= 10 and notes[0].pitch == 62  # the primer starts on D4
    paths = generate_main(["--checkpoint", ckpt, "--out", str(tmp_path / "free.mid"), "--length", "4"])
    assert paths["png"].exists()

    cli = cli_main(["test", *common, "--ckpt_path", ckpt])
    assert "test/pitch_nll" in cli.trainer.callback_metrics
    # python -m zoo.music.evaluate gives the numbers the module's own test loop logs
    from zoo.music.evaluate import main as evaluate_main

    report = evaluate_main(["--checkpoint", ckpt, "--data_path", str(data), "--splits", "test", "--max_len", "16",
                            "--batch_size", "4", "--val_percent", "25", "--test_percent", "25"])
    # the CLI's test split came from the same folder, split the same way (25 / 25)
    for name in ("pitch_nll", "duration_nll", "pitch_acc", "duration_acc", "nll"):
        assert report["metrics"]["test"][name] == pytest.approx(float(cli.trainer.callback_metrics[f"test/{name}"]), rel=1e-4)
    csvs = list((tmp_path / "runs").rglob("metrics.csv"))
    assert csvs and "val/pitch_nll" in next(csv.reader(open(csvs[0])))


def test_vocabulary_mismatch_is_reported():
    with pytest.raises(ValueError, match="pitch tokens|vocab"):
        module = MelodyLM(overrides=dict(dim=32, num_heads=2, ff_dim=64, depth=1, pitch_vocab=20))
        import torch

        module(torch.full((1, 3), 60), torch.ones(1, 3, dtype=torch.long))
