"""Config fixtures of the detection task (read by ``tests/test_configs.py``): a tiny COCO-format dataset
(JPEGs + ``instances_<split>.json``) written by the same generator the offline default uses."""

from __future__ import annotations

from pathlib import Path

from zoo.vision.detection.data import write_synthetic_coco


def _coco(init_args: dict, root: Path) -> list[str]:
    write_synthetic_coco(root, {"train": 4, "val": 2, "test": 2}, image_size=(64, 80))
    return ["--data.init_args.path", str(root), "--data.init_args.train_split", "train", "--data.init_args.val_split", "val",
            "--data.init_args.test_split", "test", "--data.init_args.scales", "[64]", "--data.init_args.max_size", "96",
            "--data.init_args.crop_scales", "[64]", "--data.init_args.crop_size", "[48, 64]", "--data.init_args.eval_size", "64",
            "--model.init_args.num_classes", "4"]


DATA_ARGS = {"zoo.vision.detection.data.CocoDetectionDataModule": _coco}
