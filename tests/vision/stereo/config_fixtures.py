"""Config fixtures of the stereo task (read by ``tests/test_configs.py``): a tiny SceneFlow tree in the
real FlyingThings3D layout (PNG + PFM), written by the generator the offline default uses."""

from __future__ import annotations

from pathlib import Path

from zoo.vision.stereo.data import generate_synthetic


def _sceneflow_tree(init_args: dict, root: Path) -> list[str]:
    # the registry's test_overrides network takes inputs of at least 128 px
    generate_synthetic(root, num_train=2, num_test=1, size=(128, 160), max_disp=12.0, num_shapes=2)
    return ["--data.init_args.path", str(root), "--data.init_args.dataset", "sceneflow", "--data.init_args.crop_size", "[128, 128]",
            "--data.init_args.val_size", "1", "--data.init_args.motorcycle_scale", "0.25"]


DATA_ARGS = {"zoo.vision.stereo.data.StereoDataModule": _sceneflow_tree}
