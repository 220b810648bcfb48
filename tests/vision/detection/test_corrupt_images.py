"""Corrupt images in a COCO folder: a non-image named .jpg and a truncated JPEG (its header reads).

The non-image is skipped when the json is indexed; the truncated JPEG is skipped there with
``decode=True``, and otherwise when its item is read, where the next readable image takes its place
so that the loader still yields full batches.
"""

from __future__ import annotations

import io
import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.vision.detection.data import CocoDetection, CocoDetectionDataModule, detr_eval_transform, read_coco

SIZES = [(40, 60), (30, 40), (50, 40), (36, 36), (44, 52)]  # image 2: truncated JPEG, image 4: not an image


def _fixture(root: Path) -> Path:
    rng = np.random.default_rng(1)
    (root / "annotations").mkdir(parents=True)
    (root / "fix").mkdir()
    images, annotations = [], []
    for i, (h, w) in enumerate(SIZES, start=1):
        name = f"{i:03d}.jpg"
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, format="JPEG")
        data = buf.getvalue()
        if i == 2:
            data = data[: len(data) // 2]  # truncated: header and the first scan lines only
        if i == 4:
            data = b"<html>404 Not Found</html>\n"  # a download error saved under an image's name
        (root / "fix" / name).write_bytes(data)
        images.append({"id": i, "file_name": name, "height": h, "width": w})
        annotations.append({"id": i, "image_id": i, "category_id": 1, "bbox": [2, 3, 10, 12], "area": 120.0, "iscrowd": 0})
    doc = {"images": images, "annotations": annotations, "categories": [{"id": 1, "name": "thing"}]}
    (root / "annotations" / "instances_fix.json").write_text(json.dumps(doc))
    return root


def _caught(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        out = fn()
    return out, [str(w.message) for w in caught]


def test_the_fixture_is_what_it_claims(tmp_path):
    root = _fixture(tmp_path)
    with Image.open(root / "fix" / "002.jpg") as img:  # the header reads, the pixels do not
        assert img.format == "JPEG" and img.size == (40, 30)
        with pytest.raises(OSError, match="truncated"):
            img.load()
    with pytest.raises(OSError):
        Image.open(root / "fix" / "004.jpg")


def test_indexing_skips_the_non_image_and_reading_skips_the_truncated_one(tmp_path):
    root = _fixture(tmp_path)
    (images, cats), msgs = _caught(lambda: read_coco(root / "annotations" / "instances_fix.json", root / "fix"))
    assert [im.image_id for im in images] == [1, 2, 3, 5]
    assert any("skipped 1 of 5 images" in m and "004.jpg" in m for m in msgs), msgs
    ds = CocoDetection(images, cats, detr_eval_transform(size=32, max_size=64))
    (_, target), msgs = _caught(lambda: ds[1])  # the truncated 002.jpg: the next image (id 3) in its place
    assert target["image_id"] == 3 and target["orig_size"].tolist() == [50, 40]
    assert len(msgs) == 1 and "skipped 1 of 4 images that could not be decoded" in msgs[0] and "002.jpg" in msgs[0], msgs
    assert "truncated" in msgs[0]
    assert list(ds.unreadable) == [1]
    (_, target), msgs = _caught(lambda: ds[1])  # known bad: replaced again without a second warning
    assert target["image_id"] == 3 and msgs == []
    assert [ds[i][1]["image_id"] for i in (0, 2, 3)] == [1, 3, 5]


def test_decode_at_indexing_skips_both(tmp_path):
    root = _fixture(tmp_path)
    (images, _), msgs = _caught(lambda: read_coco(root / "annotations" / "instances_fix.json", root / "fix", decode=True))
    assert [im.image_id for im in images] == [1, 3, 5]
    assert len(msgs) == 1 and "skipped 2 of 5 images" in msgs[0], msgs
    assert "002.jpg" in msgs[0] and "004.jpg" in msgs[0]


def test_a_dataset_of_only_unreadable_images_is_an_error(tmp_path):
    root = _fixture(tmp_path)
    (images, cats), _ = _caught(lambda: read_coco(root / "annotations" / "instances_fix.json", root / "fix"))
    ds = CocoDetection([im for im in images if im.image_id == 2], cats)
    with pytest.warns(UserWarning, match="skipped 1 of 1"), pytest.raises(ValueError, match=r"none of the 1 images.*002\.jpg"):
        ds[0]


@pytest.mark.parametrize("decode_at_setup", [False, True])
def test_the_loader_still_yields_full_batches(tmp_path, decode_at_setup):
    root = _fixture(tmp_path)
    dm = CocoDetectionDataModule(path=str(root), train_split="fix", val_split="fix", test_split="fix", scales=(32,),
                                 max_size=64, crop_scales=(32,), crop_size=(24, 32), eval_size=32, batch_size=2,
                                 decode_at_setup=decode_at_setup)
    _, msgs = _caught(dm.setup)
    assert sum("skipped" in m for m in msgs) == 1, msgs  # one counted warning at indexing (all splits read one json)
    for loader in (dm.train_dataloader(), dm.val_dataloader()):
        batches, msgs = _caught(lambda loader=loader: list(loader))
        n = len(dm.dataset("val"))  # 4 (the truncated image is read as its successor) or 3 (dropped at setup)
        full = [len(b) for b in torch.utils.data.DataLoader(range(n), batch_size=2, drop_last=loader.drop_last)]
        assert [len(b["targets"]) for b in batches] == full
        assert all(torch.isfinite(b["images"]).all() for b in batches)
        assert len(msgs) == (0 if decode_at_setup else 1), msgs
