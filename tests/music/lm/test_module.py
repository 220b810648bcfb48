"""Training system, CLI, generation and evaluation end to end on tiny fixtures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import pytorch_lightning as pl
import torch

from zoo.music.lm.data import ChoralesDataModule
from zoo.music.lm.module import MusicLM
from zoo.music.lm.tokenizers import ChoraleGrid

REPO = Path(__file__).resolve().parents[3]
TINY = {"num_layers": 1, "d_model": 32, "num_heads": 2, "d_ff": 64, "max_distance": 16, "dropout": 0.0,
        "attn_dropout": 0.0}


def write_npz(path: Path) -> Path:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 6), ("valid", 2), ("test", 2)):
        obj = np.empty(n, dtype=object)
        obj[:] = [np.repeat(np.array([72.0, 67, 60, 48])[None] + rng.integers(-2, 3, (10, 4)), 4, axis=0)
                  for _ in range(n)]
        arrays[split] = obj
    np.savez(path, **arrays)
    return path


def test_cli_fit_fast_dev_run(tmp_path):
    from zoo.music.train import cli_main

    npz = write_npz(tmp_path / "Jsb16thSeparated.npz")
    cli_main([
        "fit", "--config", str(REPO / "configs/music/lm/music_transformer_demo.yaml"),
        "--data.init_args.path", str(npz), "--data.init_args.batch_size", "2", "--data.init_args.max_len", "32",
        "--model.init_args.overrides", json.dumps(TINY),
        "--trainer.fast_dev_run", "2", "--trainer.default_root_dir", str(tmp_path / "runs"),
    ])


def test_module_rejects_mismatched_vocabulary(tmp_path):
    npz = write_npz(tmp_path / "Jsb16thSeparated.npz")
    dm = ChoralesDataModule(path=str(npz), representation="chorale", max_len=16, batch_size=2)
    lm = MusicLM("music_transformer_jsb", overrides=TINY)
    trainer = pl.Trainer(fast_dev_run=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, default_root_dir=str(tmp_path))
    with pytest.raises(ValueError, match="expects the 'jsb16th' vocabulary"):
        trainer.fit(lm, datamodule=dm)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny model trained a few steps: its Lightning .ckpt and its pretrained directory."""
    tmp = tmp_path_factory.mktemp("music_trained")
    npz = write_npz(tmp / "Jsb16thSeparated.npz")
    dm = ChoralesDataModule(path=str(npz), representation="chorale", max_len=32, batch_size=4)
    lm = MusicLM("music_transformer_demo", overrides=TINY, lr=3e-3, warmup_steps=2)
    trainer = pl.Trainer(max_steps=8, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         enable_checkpointing=False, limit_val_batches=1, num_sanity_val_steps=0,
                         default_root_dir=str(tmp))
    trainer.fit(lm, datamodule=dm)
    ckpt = tmp / "tiny.ckpt"
    trainer.save_checkpoint(str(ckpt))
    pretrained = lm.save_pretrained(tmp / "pretrained", metadata={"note": "test"})
    return {"npz": npz, "ckpt": ckpt, "dir": pretrained, "lm": lm}


def test_generate_writes_midi_png_wav_from_pretrained_dir(trained, tmp_path):
    from zoo.music.generate import main

    primer = tmp_path / "primer.mid"
    grid = ChoraleGrid(np.tile(np.array([[72, 67, 60, 48]]), (8, 1)), np.zeros((8, 4), bool))
    grid.to_midi().write(str(primer))
    paths = main(["--checkpoint", str(trained["dir"]), "--out", str(tmp_path / "song.mid"), "--length", "40",
                  "--top_k", "20", "--top_p", "0.95", "--seed", "1", "--primer", str(primer), "--wav"])
    pm = pretty_midi.PrettyMIDI(str(paths["midi"]))
    assert len(pm.instruments) == 4
    # the primer's 8 steps come back at the start of the soprano
    assert pm.instruments[0].notes[0].pitch == 72
    assert paths["png"].stat().st_size > 1000 and paths["wav"].stat().st_size > 1000
    with pytest.raises(ValueError, match="must end in .mid"):
        main(["--checkpoint", str(trained["dir"]), "--out", str(tmp_path / "x.txt"), "--length", "4"])


def test_generate_and_evaluate_from_lightning_ckpt(trained, tmp_path, capsys):
    from zoo.music.generate import load_model_and_tokenizer, main
    from zoo.music.lm.evaluate import main as evaluate_main

    loaded = load_model_and_tokenizer(trained["ckpt"])
    ref = trained["lm"].model.eval()
    x = torch.randint(0, 133, (1, 10))
    torch.testing.assert_close(loaded.model(x), ref(x))
    paths = main(["--checkpoint", str(trained["ckpt"]), "--out", str(tmp_path / "a.mid"), "--length", "16",
                  "--no_cache"])
    assert pretty_midi.PrettyMIDI(str(paths["midi"])).instruments
    results = evaluate_main(["--checkpoint", str(trained["ckpt"]), "--data_path", str(trained["npz"]),
                             "--splits", "val", "test", "--max_len", "32", "--export", str(tmp_path / "exp"),
                             "--card_notes", "trained by a test"])["metrics"]
    out = capsys.readouterr().out
    assert "nll" in out and "ppl" in out and set(results) == {"val", "test"}
    assert 0 < results["test"]["nll"] < np.log(133) + 1
    import zoo

    exported = zoo.load_pretrained(tmp_path / "exp")
    torch.testing.assert_close(exported(x), ref(x))
    card = (tmp_path / "exp" / "README.md").read_text()
    assert "trained by a test" in card and f"{results['test']['nll']:.4f}" in card
    # the same numbers as the LightningModule's own test loop
    dm = ChoralesDataModule(path=str(trained["npz"]), representation="chorale", max_len=32, batch_size=4,
                            transpose=0)
    metrics = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=str(tmp_path)).test(
        trained["lm"], datamodule=dm, verbose=False)[0]
    assert metrics["test/nll"] == pytest.approx(results["test"]["nll"], rel=1e-4)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--sample_stats", "2", "--temperature", "-1"], "temperature"),
        (["--sample_stats", "2", "--top_k", "0"], "top_k"),
        (["--splits", "--sample_stats", "0"], "nothing to do"),
        (["--data_path", "/no/such/file.npz"], "no such file"),
        (["--json", "out.txt"], "must end in .json"),
    ],
)
def test_evaluate_checks_arguments_before_loading(argv, message):
    from zoo.music.evaluate import main

    # the checkpoint does not exist: an argument error must come first
    with pytest.raises(ValueError, match=message):
        main(["--checkpoint", "/no/such/checkpoint.ckpt", *argv])


def test_evaluate_sample_stats(trained, tmp_path):
    from zoo.music.evaluate import main

    report = main(["--checkpoint", str(trained["dir"]), "--splits", "--sample_stats", "2", "--length", "64",
                   "--data_path", str(trained["npz"]), "--json", str(tmp_path / "stats.json")])
    stats = report["sample_stats"]
    assert stats["samples"]["pieces"] == 2 and stats["real test chorales"]["pieces"] == 2
    assert stats["samples"]["out_of_range"] == 0.0  # voice-constrained decoding
    assert 0.0 <= stats["samples"]["in_key"] <= 1.0
    assert json.loads((tmp_path / "stats.json").read_text())["sample_stats"]["samples"]["pieces"] == 2
