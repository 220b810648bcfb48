"""SignRecognizer end to end on a tiny synthetic WLASL fixture: fit, test, metrics, figures; WER."""

from __future__ import annotations

import pytest
import pytorch_lightning as pl
import torch

from zoo.sign.recognition.data import SignDataModule, generate_synthetic_signs
from zoo.sign.recognition.metrics import IsolatedWER, word_error_rate
from zoo.sign.recognition.module import SignRecognizer


def test_word_error_rate_by_hand_and_isolated():
    assert word_error_rate([["a", "b", "c"]], [["a", "x", "c", "d"]]) == pytest.approx(2 / 4)
    assert word_error_rate([[]], [["a", "b"]]) == 1.0
    m = IsolatedWER()
    logits = torch.eye(3)[[0, 1, 1, 2]]
    target = torch.tensor([0, 1, 2, 2])
    m.update(logits, target)
    hyps = [[str(int(p))] for p in logits.argmax(-1)]
    assert m.compute().item() == pytest.approx(word_error_rate(hyps, [[str(int(t))] for t in target])) == 0.25


@pytest.mark.slow
def test_fit_and_test_write_metrics_and_figures(tmp_path):
    path = generate_synthetic_signs(tmp_path / "data", num_glosses=3, num_signers=4, repeats=2, test_signers=1, val_signers=1)
    dm = SignDataModule(path=str(path), max_frames=12, batch_size=4)
    model = SignRecognizer(
        "slrt", num_classes=3, overrides=dict(dim=32, depth=1, num_heads=4, max_frames=12), warmup_steps=2
    )
    trainer = pl.Trainer(
        max_steps=4, default_root_dir=tmp_path, enable_progress_bar=False, logger=pl.loggers.CSVLogger(tmp_path),
        enable_checkpointing=False,
    )
    trainer.fit(model, dm)
    (out,) = trainer.test(model, dm)
    assert {"test/acc1", "test/acc5", "test/wer", "test/macro_acc", "test/loss"} <= set(out)
    assert out["test/wer"] == pytest.approx(1 - out["test/acc1"])
    run = tmp_path / "lightning_logs" / "version_0"
    for name in ("confusion_matrix.png", "per_class_accuracy.png", "per_class_accuracy.csv", "attention_maps.png"):
        assert (run / name).stat().st_size > 0, name


def test_class_count_mismatch_is_named(tmp_path):
    path = generate_synthetic_signs(tmp_path, num_glosses=3, num_signers=4, repeats=1, test_signers=1, val_signers=1)
    model = SignRecognizer("slrt", num_classes=5, overrides=dict(dim=32, depth=1, num_heads=4))
    trainer = pl.Trainer(max_steps=1, default_root_dir=tmp_path, enable_progress_bar=False, logger=False)
    with pytest.raises(ValueError, match="num_classes 3"):
        trainer.fit(model, SignDataModule(path=str(path), batch_size=2))
