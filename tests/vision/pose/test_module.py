"""``PoseLifter``: the data checks, test-time flip averaging, the evaluated metrics and the lr rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from zoo.vision.pose.data import H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT, Pose3DDataModule, flip_pose, generate_synthetic
from zoo.vision.pose.metrics import mpjpe
from zoo.vision.pose.module import METRICS, PoseLifter

TINY = dict(num_frames=9, embed_dim=8, spatial_depth=1, temporal_depth=1, spatial_kernels=(1, 3),
            temporal_kernels=(3, 1), drop_path_rate=0.0)


@pytest.fixture(scope="module")
def npz_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("h36m")
    generate_synthetic(root, subjects=("S1", "S9"), actions=("Walking", "Sitting"), frames=12)
    return root


def _data(root, **kwargs) -> Pose3DDataModule:
    args = dict(path=str(root), receptive_field=9, train_subjects=("S1",), test_subjects=("S9",), batch_size=8, flip=False)
    return Pose3DDataModule(**(args | kwargs))


def test_check_data_refuses_other_window_length_and_too_many_actions(npz_dir):
    module = PoseLifter("convformer_27", overrides=TINY, num_actions=2)
    with pytest.raises(ValueError, match="takes 9 frames but the data windows have 27.*receptive_field 9"):
        module.check_data(_data(npz_dir, receptive_field=27))
    with pytest.raises(ValueError, match="2 actions.*num_actions=1.*num_actions 2"):
        PoseLifter("convformer_27", overrides=TINY, num_actions=1).check_data(_data(npz_dir))
    module.check_data(_data(npz_dir))  # a matching datamodule passes


def test_test_time_flip_averages_with_the_mirrored_prediction():
    torch.manual_seed(0)
    module = PoseLifter("videopose3d_27", overrides=dict(filter_widths=(3, 3), channels=16), test_flip=True).eval()
    x = torch.randn(3, 9, 17, 2)
    with torch.no_grad():
        averaged = module.predict_step({"inputs": x}, 0)
        plain = module.model(x)
        mirrored = flip_pose(module.model(flip_pose(x, H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT)), H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT)
    torch.testing.assert_close(averaged, (plain + mirrored) / 2)
    assert not torch.allclose(averaged, plain)  # the flip changes the untrained network's output


def test_evaluate_loader_reports_every_protocol_in_mm(npz_dir):
    torch.manual_seed(0)
    dm = _data(npz_dir, test_stride=3)
    module = PoseLifter("videopose3d_27", overrides=dict(filter_widths=(3, 3), channels=16), num_actions=2, test_flip=False)
    module.check_data(dm)
    values = module.evaluate_loader(dm.test_dataloader(), "test")
    assert set(values) == set(METRICS)
    # the hand-computed per-action average of MPJPE, in millimetres
    module.eval()
    per_action: dict[int, list[float]] = {}
    with torch.no_grad():
        for batch in dm.test_dataloader():
            err = torch.linalg.vector_norm(module.model(batch["inputs"]) - batch["target"], dim=-1).mean(-1)  # (B,)
            for a, e in zip(batch["action"].tolist(), err.tolist()):
                per_action.setdefault(a, []).append(e)
    expected = 1000 * sum(sum(v) / len(v) for v in per_action.values()) / len(per_action)
    assert values["mpjpe"] == pytest.approx(expected, rel=1e-4)
    assert values["p_mpjpe"] <= values["mpjpe"] + 1e-3 and values["n_mpjpe"] <= values["mpjpe"] + 1e-3


def test_training_loss_is_mpjpe_plus_the_optional_velocity_term():
    torch.manual_seed(0)
    batch = {"inputs": torch.randn(4, 9, 17, 2), "prev_inputs": torch.randn(4, 9, 17, 2),
             "target": torch.randn(4, 17, 3), "prev_target": torch.randn(4, 17, 3)}
    plain = PoseLifter("videopose3d_27", overrides=dict(filter_widths=(3, 3), channels=16, dropout=0.0))
    plain.model.eval()  # batch statistics off: the two forms must see the same network
    loss, logs = plain.training_loss(batch)
    with torch.no_grad():
        torch.testing.assert_close(loss, mpjpe(plain.model(batch["inputs"]), batch["target"]))
    assert logs["mpjpe_mm"] == pytest.approx(1000 * float(loss.detach()))
    with_velocity = PoseLifter("videopose3d_27", overrides=dict(filter_widths=(3, 3), channels=16, dropout=0.0), velocity_weight=0.5)
    with_velocity.model.load_state_dict(plain.model.state_dict())
    with_velocity.model.eval()
    total, _ = with_velocity.training_loss(batch)
    with torch.no_grad():
        pred, prev = with_velocity.model(batch["inputs"]), with_velocity.model(batch["prev_inputs"])
    velocity = mpjpe(pred - prev, batch["target"] - batch["prev_target"])
    torch.testing.assert_close(total, loss + 0.5 * velocity)


def test_exponential_lr_decay_after_warmup():
    module = PoseLifter("videopose3d_27", overrides=dict(filter_widths=(3, 3), channels=16), lr=1e-3, warmup_steps=4,
                        lr_decay=0.5, lr_decay_steps=10)
    scheduler = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    factor = scheduler.lr_lambdas[0]
    assert factor(0) == pytest.approx(0.25 * 0.5 ** (0 / 10))
    assert factor(3) == pytest.approx(0.5 ** (3 / 10))
    assert factor(20) == pytest.approx(0.25)
    with pytest.raises(ValueError, match="lr_decay"):
        PoseLifter("videopose3d_27", overrides=dict(filter_widths=(3, 3), channels=16), lr_decay=1.5)


@pytest.mark.slow
def test_cli_fit_then_test_writes_the_figures(npz_dir, tmp_path):
    from zoo.train import cli_main

    common = [
        "--config", "configs/vision/pose/convformer_demo.yaml", "--trainer.default_root_dir", str(tmp_path),
        "--trainer.enable_progress_bar", "false", "--model.init_args.overrides", json.dumps(TINY),
        "--data.init_args.path", str(npz_dir), "--data.init_args.receptive_field", "9", "--data.init_args.batch_size", "4",
        "--data.init_args.train_subjects", '["S1"]', "--data.init_args.test_subjects", '["S9"]',
    ]
    fit = cli_main(["fit", *common, "--trainer.max_steps", "2", "--trainer.val_check_interval", "2"])
    ckpt = Path(fit.trainer.checkpoint_callback.last_model_path)
    assert ckpt.is_file()
    test = cli_main(["test", *common, "--ckpt_path", str(ckpt)])
    results = test.trainer.callback_metrics
    assert {f"test/{m}" for m in METRICS} <= set(results)
    assert all(torch.isfinite(results[f"test/{m}"]) for m in METRICS)
    run = Path(test.trainer.log_dir)
    for name in ("pose_samples.png", "per_action_error.png"):
        assert (run / name).stat().st_size > 1000, name


def test_pose_samples_prefer_one_window_per_action():
    from zoo.vision.pose.figures import PoseSamplesFigure

    fig = PoseSamplesFigure(num_samples=3)
    fig.on_test_epoch_start(None, None)
    for batch_idx, actions in enumerate(([0, 0, 0, 0], [0, 2, 2, 1], [3, 3, 3, 3])):
        n = len(actions)
        outputs = {"inputs": torch.randn(n, 17, 2), "pred": torch.randn(n, 17, 3), "target": torch.randn(n, 17, 3),
                   "action": torch.tensor(actions)}
        fig.on_test_batch_end(None, None, outputs, None, batch_idx)
    assert [s[3] for s in fig.samples] == [0, 2, 1]
