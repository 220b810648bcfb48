"""ImageClassifier + the vision CLI: a tiny run fits, tests, and writes its figures."""

from __future__ import annotations

from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch

from zoo.vision.classification.data import ImageClassificationDataModule
from zoo.vision.classification.module import ImageClassifier

TINY_ASTRO = dict(
    embed_dim=(8, 16, 16, 32), depths=(1, 1, 1, 1), stem_width=8, head_hidden_size=16, img_size=32,
    attention_backend="reference",
)


def test_module_step_mixup_ema_layer_decay():
    module = ImageClassifier(
        "astroformer_0", num_classes=10, overrides=TINY_ASTRO, mixup_alpha=0.8, cutmix_alpha=1.0,
        label_smoothing=0.1, ema_decay=0.9, layer_decay=0.8, warmup_steps=2,
    )
    dm = ImageClassificationDataModule(img_size=32, batch_size=8, limit=16)
    trainer = pl.Trainer(
        max_steps=3, limit_val_batches=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False,
    )
    before = [p.detach().clone() for p in module.ema.module.parameters()]
    trainer.fit(module, dm)
    assert trainer.global_step == 3
    after = list(module.ema.module.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, after))
    assert "val/acc1" in trainer.callback_metrics and "val/acc5" in trainer.callback_metrics
    scales = {round(g.get("lr_scale", 1.0), 4) for g in trainer.optimizers[0].param_groups}
    assert len(scales) > 1  # layer-wise decay made several lr groups


def test_module_save_pretrained_round_trip(tmp_path):
    import zoo

    module = ImageClassifier("crossformer_t", num_classes=3, overrides=dict(
        embed_dim=16, depths=(1, 1, 1, 1), num_heads=(1, 2, 2, 4), attention_backend="reference"
    ))
    path = module.save_pretrained(tmp_path / "cf")
    loaded = zoo.load_pretrained(path).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), module.model.eval()(x))
    assert loaded.config.attention_backend == "auto" and loaded.num_classes == 3


def test_module_refuses_class_mismatch():
    module = ImageClassifier("astroformer_0", num_classes=7, overrides=TINY_ASTRO)
    trainer = pl.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    with pytest.raises(ValueError, match="num_classes=7 but the data has 10"):
        trainer.fit(module, ImageClassificationDataModule(img_size=32, limit=8))


def test_cli_fit_then_test_writes_figures(tmp_path):
    from zoo.vision.train import cli_main

    config = Path(__file__).resolve().parents[3] / "configs" / "vision" / "classification" / "digits_demo.yaml"
    common = [
        "--config", str(config),
        "--trainer.default_root_dir", str(tmp_path),
        "--data.init_args.limit", "64",
        "--data.init_args.batch_size", "32",
    ]
    cli_main(["fit", *common, "--trainer.max_epochs", "1", "--trainer.enable_progress_bar", "false"])
    ckpt = next(tmp_path.rglob("last.ckpt"))
    cli_main(["test", *common, "--ckpt_path", str(ckpt), "--trainer.enable_progress_bar", "false"])
    assert next(tmp_path.rglob("confusion_matrix.png")).stat().st_size > 1000
    assert next(tmp_path.rglob("misclassified.png")).stat().st_size > 1000
