"""StereoMatcher: the sequence loss and the occlusion term on hand-made outputs, the z-buffer occlusion
target against the generator's exact one, the one-cycle schedule, a tiny overfit and a fit + test run."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from zoo.hub import model_entry
from zoo.vision.stereo.data import StereoDataModule, render_pair
from zoo.vision.stereo.module import (
    StereoMatcher,
    infer_disparity,
    occlusion_loss,
    occlusion_target,
    pad_to_multiple,
    sequence_loss,
)

TINY = {**(model_entry("matchstereo_demo").test_overrides or {}), "attention_backend": "reference"}


def _module(**kwargs) -> StereoMatcher:
    return StereoMatcher("matchstereo_demo", overrides=TINY, **kwargs)


def test_sequence_loss_weights_the_last_prediction_most():
    gt = torch.full((1, 1, 2, 2), 5.0)
    valid = torch.tensor([[[[True, True], [True, False]]]])
    preds = [gt + 4.0, gt - 2.0, gt + torch.tensor([[[[1.0, 1.0], [1.0, 100.0]]]])]  # L1: 4, 2, 1 (invalid 100 ignored)
    total, terms = sequence_loss(preds, gt, valid, gamma=0.5)
    assert [float(t) for t in terms] == pytest.approx([4.0, 2.0, 1.0])
    assert float(total) == pytest.approx(0.25 * 4 + 0.5 * 2 + 1.0)
    zero, _ = sequence_loss(preds, gt, torch.zeros_like(valid))
    assert float(zero) == 0.0
    with pytest.raises(ValueError, match="no disparity predictions"):
        sequence_loss([], gt, valid)
    with pytest.raises(ValueError, match="differ in shape"):
        sequence_loss([gt[..., :1]], gt, valid)


def test_occlusion_target_matches_the_generators_exact_occlusion():
    agree = []
    for seed in range(3):
        pair = render_pair(np.random.default_rng(seed), 64, 96, max_disp=24.0)
        disp = torch.from_numpy(pair["disparity"])[None, None]
        occluded, known = occlusion_target(disp, torch.ones_like(disp, dtype=torch.bool))
        exact = torch.from_numpy(pair["occluded"])[None, None]
        assert known.all() and exact.any()
        agree.append(float((occluded == exact).float().mean()))
    assert min(agree) > 0.97, agree


def test_occlusion_target_hand_made_row_and_the_datasets_mask():
    # a foreground pixel (d=3) at x=4 lands on x_r=1, where the background pixel at x=2 (d=1) lands too
    disp = torch.tensor([[[[1.0, 1.0, 1.0, 1.0, 3.0, 1.0]]]])
    valid = torch.ones_like(disp, dtype=torch.bool)
    occluded, _ = occlusion_target(disp, valid)
    assert occluded[0, 0, 0].tolist() == [True, False, True, False, False, False]  # x=0: x - d < 0; x=2: hidden
    noc = torch.tensor([[[[True, False, True, True, True, True]]]])
    occluded, known = occlusion_target(disp, valid, noc)
    assert occluded[0, 0, 0].tolist() == [False, True, False, False, False, False] and known.all()


def test_occlusion_loss_is_the_bce_on_known_pixels_and_has_gradient():
    target = torch.tensor([[[[True, False, False]]]])
    known = torch.tensor([[[[True, True, False]]]])
    p = torch.tensor([[[[0.8, 0.4, 0.9]]]], requires_grad=True)
    loss = occlusion_loss([p, p], target, known)
    expected = -(np.log(0.8) + np.log(0.6)) / 2
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)
    loss.backward()
    assert p.grad[0, 0, 0, 2] == 0 and p.grad[0, 0, 0, 0] < 0 < p.grad[0, 0, 0, 1]


def test_losses_on_a_hand_made_output_dict():
    module = _module(occlusion_weight=2.0, max_disp=10.0, loss_gamma=0.9)
    gt = torch.tensor([[[[2.0, 4.0, 20.0]]]])  # 20 >= max_disp: ignored
    batch = {"disparity": gt, "valid": torch.ones_like(gt, dtype=torch.bool), "noc": torch.tensor([[[[True, False, True]]]])}
    out = {"disparities": [gt + 1, gt + 0.5], "occlusion": [torch.tensor([[[[0.5, 0.5, 0.5]]]])], "disparity": gt + 0.5}
    loss, logs = module.losses(out, batch)
    assert float(logs["sequence_l1"]) == pytest.approx(0.9 * 1 + 0.5)
    assert float(logs["occlusion_bce"]) == pytest.approx(np.log(2), rel=1e-5)
    assert float(loss) == pytest.approx(0.9 + 0.5 + 2 * np.log(2), rel=1e-5)
    assert float(logs["occluded_fraction"]) == pytest.approx(0.5)


def test_padding_and_cropping_back():
    images, size = pad_to_multiple([torch.rand(1, 3, 50, 70)], 32)
    assert images[0].shape[-2:] == (64, 96) and size == (50, 70)
    torch.testing.assert_close(images[0][..., 50:, :70], images[0][..., 49:50, :70].expand(-1, -1, 14, -1))

    class Shift(torch.nn.Module):
        def forward(self, left, right):
            assert left.shape[-1] % 32 == 0
            return {"disparity": left[:, :1] * 0 + 3.0, "disparities": [left[:, :1]], "occlusion": []}

    out = infer_disparity(Shift(), torch.rand(2, 3, 40, 45), torch.rand(2, 3, 40, 45))
    assert out["disparity"].shape == (2, 1, 40, 45) and out["disparities"][0].shape == (2, 1, 40, 45)


def test_one_cycle_schedule_and_argument_checks(monkeypatch):
    import zoo.vision.stereo.module as stereo_module

    monkeypatch.setattr(stereo_module, "total_steps", lambda module: 99)  # + 1 margin: 100 scheduler steps
    module = _module(lr=1e-3, pct_start=0.25)
    opt = module.configure_optimizers()
    scheduler, optimizer = opt["lr_scheduler"]["scheduler"], opt["optimizer"]
    assert isinstance(optimizer, torch.optim.AdamW) and len(optimizer.param_groups) == 2  # decay / no-decay
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[0] == pytest.approx(1e-3 / 25) and max(lrs) == pytest.approx(1e-3)
    assert 20 <= int(np.argmax(lrs)) <= 26 and lrs[-1] < 1e-3 / 25 / 100
    with pytest.raises(ValueError, match="extra_eval within"):
        _module(extra_eval=("booster",))
    with pytest.raises(ValueError, match="extra sets"):
        _module(extra_eval=()).check_data(StereoDataModule())


@pytest.mark.slow
def test_tiny_model_overfits_one_synthetic_pair():
    torch.manual_seed(0)
    pair = render_pair(np.random.default_rng(0), 128, 128, max_disp=16.0, num_shapes=2)
    batch = {k: torch.from_numpy(np.ascontiguousarray(pair[k])).permute(2, 0, 1)[None].float() for k in ("left", "right")}
    batch["disparity"] = torch.from_numpy(pair["disparity"])[None, None]
    batch["valid"] = torch.ones_like(batch["disparity"], dtype=torch.bool)
    module = _module(lr=2e-3, occlusion_weight=0.1)
    optimizer = torch.optim.AdamW(module.model.parameters(), lr=2e-3)
    epes = []
    for _ in range(40):
        loss, logs = module.training_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.model.parameters(), 1.0)
        optimizer.step()
        epes.append(float(logs["epe_last"]))
    assert min(epes[-5:]) < 0.5 * epes[0], epes


@pytest.mark.slow
def test_fit_and_test_write_metrics_for_each_set_and_the_figure(tmp_path, monkeypatch):
    pytest.importorskip("skimage")
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    dm = StereoDataModule(crop_size=(128, 128), synthetic_train=2, synthetic_test=1, synthetic_size=(128, 160),
                          synthetic_max_disp=12.0, val_size=1, batch_size=1, motorcycle_scale=0.25)
    module = _module()
    trainer = pl.Trainer(max_steps=2, limit_val_batches=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         default_root_dir=tmp_path, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    (results,) = trainer.test(module, datamodule=dm, verbose=False)[:1]
    for prefix in ("test/", "test/motorcycle_"):
        for name in ("epe", "d1", "d1_3px", "bad1", "bad2", "bad3"):
            assert np.isfinite(results[prefix + name]), (prefix + name, results)
    assert 0 <= results["test/bad3"] <= results["test/bad2"] <= results["test/bad1"] <= 100
    assert (tmp_path / "stereo_samples.png").stat().st_size > 10_000
    # evaluate_loader: the same metrics without a Trainer
    values = module.evaluate_loader(dm.test_dataloader()[0], "test")
    assert values["epe"] == pytest.approx(results["test/epe"], rel=1e-4)
