"""The LightningModule: the EER metric, the class-weighted loss, and fit + test through the zoo's CLI
writing the score file, the EER summary and the figures."""

from __future__ import annotations

import json

import pytest
import torch

from zoo.speech.antispoofing.module import AntiSpoofing, EqualErrorRate
from zoo.train import cli_main

TINY = dict(
    ssl_conv_dim=16, ssl_embed_dim=32, ssl_layers=2, ssl_heads=2, ssl_ff_dim=64, ssl_pos_conv_kernel=16,
    ssl_pos_conv_groups=4, n_coeffs=8, d_model=32, fusion_heads=2,
)


def test_eer_metric_accumulates_batches():
    m = EqualErrorRate()
    m.update(torch.tensor([0.9, 0.1]), torch.tensor([1, 0]))
    m.update(torch.tensor([0.4, 0.6]), torch.tensor([1, 0]))
    assert float(m.compute()) == pytest.approx(0.5)  # scores 0.9 0.4 | 0.1 0.6: threshold 0.6 -> 1/2 and 1/2
    one_sided = EqualErrorRate()
    one_sided.update(torch.tensor([0.9]), torch.tensor([1]))
    with pytest.raises(ValueError, match="bona fide and spoofed"):
        one_sided.compute()
    optional = EqualErrorRate(required=False)
    optional.update(torch.tensor([0.9]), torch.tensor([1]))
    assert torch.isnan(optional.compute())


def test_class_weighted_loss():
    module = AntiSpoofing("antispoof_spectral_only", overrides={"n_coeffs": 8, "d_model": 32, "fusion_heads": 2},
                          class_weights=(1.0, 3.0))
    scores, labels = torch.tensor([2.0, -1.0]), torch.tensor([1, 0])
    per = torch.nn.functional.binary_cross_entropy_with_logits(scores, labels.float(), reduction="none")
    assert float(module._loss(scores, labels)) == pytest.approx(float((3 * per[0] + per[1]) / 4))
    with pytest.raises(ValueError, match="class_weights"):
        AntiSpoofing("antispoof_spectral_only", class_weights=(1.0, 0.0))



def test_check_data_balances_the_loss_and_refuses_a_one_sided_training_set():
    class Counts:  # a datamodule's ``class_counts``: (spoof, bona fide) training utterances
        def __init__(self, spoof: int, bona: int) -> None:
            self.class_counts = (spoof, bona)

    small = {"n_coeffs": 8, "d_model": 32, "fusion_heads": 2}
    module = AntiSpoofing("antispoof_spectral_only", overrides=small)
    module.check_data(Counts(90, 10))
    assert module.class_weights == pytest.approx((100 / 180, 100 / 20))
    given = AntiSpoofing("antispoof_spectral_only", overrides=small, class_weights=(0.1, 0.9))
    given.check_data(Counts(90, 10))
    assert given.class_weights == (0.1, 0.9)
    with pytest.raises(ValueError, match="0 bona fide"):
        AntiSpoofing("antispoof_spectral_only", overrides=small).check_data(Counts(5, 0))

def test_fit_and_test_write_scores_and_figures(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    common = [
        "--model.class_path", "zoo.speech.antispoofing.module.AntiSpoofing",
        "--model.init_args.model_name", "antispoof_fusion_gated", "--model.init_args.overrides", json.dumps(TINY),
        "--data.class_path", "zoo.speech.antispoofing.data.ASVspoofDataModule", "--data.init_args.path", str(tiny_corpus),
        "--data.init_args.crop_seconds", "0.5", "--data.init_args.eval_seconds", "0.5", "--data.init_args.batch_size", "4",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "runs"), "--name", "tiny",
    ]
    fit = cli_main(["fit", *common, "--trainer.max_steps", "3"])
    assert fit.trainer.global_step == 3
    assert fit.model.class_weights == pytest.approx((12 / 16, 12 / 8))  # 8 spoofs and 4 bona fide in training
    test = cli_main(["test", *common, "--ckpt_path", str(next((tmp_path / "runs").rglob("last.ckpt")))])
    logged = test.trainer.callback_metrics
    assert 0 <= float(logged["test/eer"]) <= 1 and 0 <= float(logged["test/eer_unseen"]) <= 1
    run = next(p.parent for p in (tmp_path / "runs").rglob("eer_test.json"))
    summary = json.loads((run / "eer_test.json").read_text())
    assert summary["unseen_attacks"] == ["A05", "A06"] and set(summary["eer_per_attack"]) == {f"A0{i}" for i in range(1, 7)}
    assert summary["eer"] == pytest.approx(float(logged["test/eer"]), abs=1e-6)
    lines = (run / "scores_test.txt").read_text().splitlines()
    assert len(lines) == summary["trials"] and lines[0].split()[2] in ("bonafide", "spoof")
    assert (run / "det_curve.png").stat().st_size > 0 and (run / "score_histogram.png").stat().st_size > 0
