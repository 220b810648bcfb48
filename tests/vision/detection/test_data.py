"""The COCO reader on fixtures written in the real format, DETR's augmentation, padding, the datamodule."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors

from zoo.vision.detection.data import (
    CocoDetection,
    CocoDetectionDataModule,
    RandomSizeCrop,
    collate_detection,
    detr_eval_transform,
    detr_train_transform,
    read_coco,
    write_synthetic_coco,
)


def _coco_fixture(root: Path) -> Path:
    """Four images: two objects + a crowd box; no annotations; a degenerate box; a corrupt JPEG."""
    (root / "annotations").mkdir(parents=True)
    (root / "imgs").mkdir()
    rng = np.random.default_rng(0)
    images = []
    for i, (h, w) in enumerate([(40, 60), (30, 30), (50, 40), (20, 20)], start=1):
        name = f"{i:03d}.jpg"
        if i == 4:
            (root / "imgs" / name).write_bytes(b"\xff\xd8 this is not a jpeg")
        else:
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "imgs" / name)
        images.append({"id": i, "file_name": name, "height": h, "width": w})
    annotations = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [5, 5, 10, 20], "area": 150.0, "iscrowd": 0},
        {"id": 2, "image_id": 1, "category_id": 3, "bbox": [50, 30, 20, 20], "area": 100.0, "iscrowd": 0},  # clipped
        {"id": 3, "image_id": 1, "category_id": 3, "bbox": [20, 0, 10, 10], "area": 80.0, "iscrowd": 1},
        {"id": 4, "image_id": 3, "category_id": 7, "bbox": [10, 10, 0, 5], "area": 0.0, "iscrowd": 0},  # degenerate
        {"id": 5, "image_id": 3, "category_id": 7, "bbox": [45, 10, 5, 5], "area": 25.0, "iscrowd": 0},  # outside
        {"id": 6, "image_id": 3, "category_id": 3, "bbox": [1, 2, 3, 4], "area": 12.0, "iscrowd": 0},
    ]
    doc = {"images": images, "annotations": annotations, "categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]}
    (root / "annotations" / "instances_fix.json").write_text(json.dumps(doc))
    return root


def _read(root: Path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, cats = read_coco(root / "annotations" / "instances_fix.json", root / "imgs")
    return images, cats, [str(w.message) for w in caught]


def test_reader_keeps_ids_drops_degenerate_skips_corrupt(tmp_path):
    images, cats, msgs = _read(_coco_fixture(tmp_path))
    assert cats == {3: "cat", 7: "dog"}
    assert [im.image_id for im in images] == [1, 2, 3]  # the corrupt JPEG is skipped
    assert any("skipped 1 of 4 images" in m and "004.jpg" in m for m in msgs), msgs
    assert any("dropped 2 of 6 annotations" in m for m in msgs), msgs
    one, empty, three = images
    np.testing.assert_allclose(one.boxes, [[5, 5, 15, 25], [50, 30, 60, 40], [20, 0, 30, 10]])  # clipped to 60x40
    assert one.labels.tolist() == [7, 3, 3] and one.iscrowd.tolist() == [0, 0, 1]
    assert len(empty.labels) == 0
    assert three.labels.tolist() == [3] and three.area.tolist() == [12.0]


def test_dataset_targets_follow_the_contract(tmp_path):
    images, cats, _ = _read(_coco_fixture(tmp_path))
    ds = CocoDetection(images, cats, detr_eval_transform(size=80, max_size=200))
    assert ds.num_classes == 8 and ds.class_names[3] == "cat" and ds.class_names[7] == "dog" and ds.class_names[0] == "N/A"
    assert ds.category_index == {3: 0, 7: 1}
    image, target = ds[0]
    assert image.shape == (3, 80, 120) and image.dtype == torch.float32
    assert target["labels"].tolist() == [7, 3]  # the crowd box is not a training target
    torch.testing.assert_close(target["boxes"], torch.tensor([[10 / 60, 15 / 40, 10 / 60, 20 / 40], [55 / 60, 35 / 40, 10 / 60, 10 / 40]]))
    assert target["orig_size"].tolist() == [40, 60] and target["size"].tolist() == [80, 120] and target["image_id"] == 1
    ann = target["annotations"]
    assert ann["iscrowd"].tolist() == [0, 0, 1] and ann["boxes"][2].tolist() == [20, 0, 10, 10]
    image, target = ds[1]  # no annotations
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)


@pytest.mark.parametrize("breakage, message", [
    ("missing", "does not exist"), ("garbage", "not a readable json"), ("no_images", "needs lists"),
    ("unknown_category", "category_id 99"), ("unknown_image", "image_id 42"), ("bad_bbox", "bbox must be four"),
])
def test_reader_errors_name_the_file(tmp_path, breakage, message):
    root = _coco_fixture(tmp_path)
    path = root / "annotations" / "instances_fix.json"
    doc = json.loads(path.read_text())
    if breakage == "missing":
        path.unlink()
    elif breakage == "garbage":
        path.write_text("{not json")
    elif breakage == "no_images":
        del doc["images"]
        path.write_text(json.dumps(doc))
    else:
        key, value = {"unknown_category": ("category_id", 99), "unknown_image": ("image_id", 42), "bad_bbox": ("bbox", [1, 2])}[breakage]
        doc["annotations"][0][key] = value
        path.write_text(json.dumps(doc))
    with pytest.raises(ValueError, match=message) as err:
        read_coco(path, root / "imgs")
    assert "instances_fix.json" in str(err.value)


def test_missing_image_folder(tmp_path):
    root = _coco_fixture(tmp_path)
    with pytest.raises(ValueError, match="image folder .*nowhere"):
        read_coco(root / "annotations" / "instances_fix.json", root / "nowhere")


def test_train_augmentation_keeps_boxes_on_their_pixels():
    # one white square on black: after flip / resize / crop the box must still frame the white pixels
    pixels = torch.zeros(3, 120, 160, dtype=torch.uint8)
    pixels[:, 30:70, 100:140] = 255
    transform = detr_train_transform(scales=(64, 96), max_size=200, crop_scales=(80, 100), crop_size=(60, 90))
    seen_flip = False
    for seed in range(12):
        torch.manual_seed(seed)
        boxes = tv_tensors.BoundingBoxes(torch.tensor([[100.0, 30, 140, 70]]), format="XYXY", canvas_size=(120, 160))
        image, target = transform(tv_tensors.Image(pixels), {"boxes": boxes, "labels": torch.tensor([5])})
        assert min(image.shape[-2:]) in (64, 96) and max(image.shape[-2:]) <= 200
        white = image[0] > 0  # normalized: black < 0 < white
        if target["boxes"].shape[0] == 0:
            assert white.sum() < 40  # the crop cut the square (almost) away
            continue
        assert target["labels"].tolist() == [5]
        ys, xs = torch.nonzero(white, as_tuple=True)
        x0, y0, x1, y1 = target["boxes"][0].tolist()
        assert abs(xs.min() - x0) <= 2 and abs(xs.max() + 1 - x1) <= 2 and abs(ys.min() - y0) <= 2 and abs(ys.max() + 1 - y1) <= 2
        seen_flip |= x0 < image.shape[-1] / 2
    assert seen_flip


def test_random_size_crop_bounds():
    crop = RandomSizeCrop(20, 30)
    for seed in range(10):
        torch.manual_seed(seed)
        out = crop(tv_tensors.Image(torch.zeros(3, 50, 25)))
        assert 20 <= out.shape[-2] <= 30 and 20 <= out.shape[-1] <= 25
    with pytest.raises(ValueError, match="min_size"):
        RandomSizeCrop(10, 5)


def test_collate_pads_with_mask():
    a = (torch.ones(3, 4, 6), {"labels": torch.tensor([1])})
    b = (torch.ones(3, 5, 3), {"labels": torch.tensor([2])})
    batch = collate_detection([a, b])
    assert batch["images"].shape == (2, 3, 5, 6)
    mask = batch["pad_mask"]
    assert not mask[0, :4, :6].any() and mask[0, 4].all()
    assert not mask[1, :5, :3].any() and mask[1, :, 3:].all()
    assert (batch["images"][mask.unsqueeze(1).expand(-1, 3, -1, -1)] == 0).all()
    assert [t["labels"].item() for t in batch["targets"]] == [1, 2]


def test_synthetic_default_round_trips(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path))
    dm = CocoDetectionDataModule(synthetic_sizes=(12, 4, 4), synthetic_image_size=(64, 80), scales=(64,), max_size=100,
                                 crop_scales=(64,), crop_size=(48, 64), eval_size=64, batch_size=3)
    dm.setup()
    root = next(tmp_path.glob("vision/detection/synthetic_coco_v1_*"))
    for split in ("train", "val", "test"):
        doc = json.loads((root / "annotations" / f"instances_{split}.json").read_text())
        assert {c["id"] for c in doc["categories"]} == {1, 2, 3} and len(doc["images"]) == len(dm.dataset(split))
        with Image.open(root / split / doc["images"][0]["file_name"]) as img:
            assert img.format == "JPEG"
    assert dm.num_classes == 4 and dm.class_names[1:] == ["square", "disc", "triangle"]
    batch = next(iter(dm.val_dataloader()))
    assert batch["images"].shape[:2] == (3, 3) and batch["pad_mask"].dtype == torch.bool
    ids = [t["image_id"] for t in batch["targets"]]
    assert len(set(ids)) == 3
    train = next(iter(dm.train_dataloader()))
    assert all(((t["boxes"] >= 0) & (t["boxes"] <= 1)).all() for t in train["targets"])


def test_synthetic_boxes_frame_their_shapes(tmp_path):
    root = write_synthetic_coco(tmp_path, {"train": 6}, image_size=(64, 96), seed=3)
    images, _ = read_coco(root / "annotations" / "instances_train.json", root / "train")
    checked = 0
    for rec in images:
        pixels = np.asarray(Image.open(rec.path).convert("RGB")).astype(float)
        for (x0, y0, x1, y1), crowd in zip(rec.boxes.astype(int), rec.iscrowd):
            if crowd:
                continue
            inside = pixels[y0:y1, x0:x1]
            # the shape's colour dominates its box centre: one channel far above the others
            centre = inside[(y1 - y0) // 2, (x1 - x0) // 2]
            assert centre.max() - np.median(centre) > 60, (rec.path, centre)
            checked += 1
    assert checked >= 5
