"""Config fixtures of the pose task (read by ``tests/test_configs.py``): a tiny synthetic Human3.6M
in VideoPose3D's real npz format, written by the same generator the offline default uses."""

from __future__ import annotations

from pathlib import Path

from zoo.vision.pose.data import generate_synthetic


def _pose_npz(init_args: dict, root: Path) -> list[str]:
    generate_synthetic(root, subjects=("S1", "S9"), actions=("Walking", "Sitting"), frames=12)
    source_args = ["--data.init_args.source", "gt"] if init_args.get("source", "gt") != "gt" else []
    # the registry's test_overrides of both families give 9-frame networks
    return ["--data.init_args.path", str(root), *source_args, "--data.init_args.receptive_field", "9", "--data.init_args.train_subjects", '["S1"]',
            "--data.init_args.test_subjects", '["S9"]', "--data.init_args.val_stride", "4",
            "--data.init_args.test_stride", "4"]


DATA_ARGS = {"zoo.vision.pose.data.Pose3DDataModule": _pose_npz}
