"""COCO object detection: the ``instances_*.json`` reader, DETR's augmentation on
``torchvision.transforms.v2`` boxes, padded batches, and an offline generator writing the same format.

On disk (``path`` is the COCO root; split names are arguments, COCO 2017's by default)::

    <path>/annotations/instances_<split>.json     # {"images", "annotations", "categories"}
    <path>/<split>/<file_name>                      # JPEG / PNG images named by the json

Reading (as the official Plain-DETR / DETR ``ConvertCocoPolysToMask``):

- category ids stay COCO's own ids: the detector has ``num_classes = max id + 1`` logits indexed by
  the id (COCO: 91, ids 12, 26, ... unused), so an official checkpoint's class head reads the same;
  the mapping is exposed as :attr:`CocoDetection.category_names` / :attr:`CocoDetection.class_names`
  and :attr:`CocoDetection.category_index` (id -> contiguous index, for users who want one);
- ``[x, y, w, h]`` boxes are turned into corners and clipped to the image; a box whose width or height
  is not positive after clipping is dropped, all of a file's counted in one warning;
- crowd annotations (``iscrowd = 1``) are not training targets; they are kept in each item's
  ``annotations`` for evaluation, where COCOeval treats them as regions to ignore;
- an image that cannot be opened (missing, not an image, size differing from the json's) is skipped
  with one counted warning (:func:`zoo.training.data.read_each`); the file is opened up to its header
  at construction (``decode=True``: decoded in full, which also catches truncated files there) and
  decoded when the item is read, where an image that fails (a truncated JPEG) is skipped with a
  warning that counts the skipped images and the next readable image takes its place, so batches
  stay full (the count is per process: each loader worker counts its own);
- a missing json or image folder, a json that does not parse, or an annotation naming an unknown image
  or category, is a ``ValueError`` naming the file.

Items are ``(image, target)``: ``image (3, H, W)`` float normalized with ImageNet mean / std and
``target`` the loss's contract: ``labels (n,)`` (COCO ids), ``boxes (n, 4)`` normalized cxcywh
relative to the transformed image, ``image_id``, ``orig_size`` and ``size`` ``(h, w)`` tensors, and
``annotations``: the image's non-degenerate annotations incl. crowd, in original pixels
(``boxes (m, 4)`` xywh, ``labels``, ``iscrowd``, ``area``) for :class:`~zoo.vision.detection.metrics.CocoMeanAP`.
:func:`collate_detection` pads a batch to its largest image: ``{"images", "pad_mask", "targets"}``
with ``pad_mask (B, H, W)`` True on padding (DETR's ``NestedTensor`` convention).

Augmentation (DETR's, which Plain-DETR trains with): horizontal flip; then either a multi-scale resize
(shorter side drawn from ``scales``, longer side at most ``max_size``) or a resize to one of
``crop_scales``, a random crop of ``crop_size`` and the multi-scale resize. Evaluation resizes the
shorter side to ``eval_size`` (at most ``max_size``).

Offline default: :func:`write_synthetic_coco` draws coloured squares, discs and triangles on textured
backgrounds, writes the JPEGs and ``instances_{train,val,test}.json`` under
``zoo.training.data.cache_dir("vision", "detection", ...)``, and the datamodule reads them back through
:func:`read_coco`; ``test`` is the held-out split the demo reports.
"""

from __future__ import annotations

import json
import shutil
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFilter
from torch import Tensor
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.ops import box_convert
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from zoo.training.data import ZooDataModule, cache_dir, read_each

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SYNTHETIC_CATEGORIES",
    "CocoDetection",
    "CocoImage",
    "CocoDetectionDataModule",
    "RandomSizeCrop",
    "collate_detection",
    "detr_eval_transform",
    "detr_train_transform",
    "read_coco",
    "write_synthetic_coco",
]

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
#: DETR's training scales: the shorter side, 480..800 step 32
COCO_SCALES: tuple[int, ...] = tuple(range(480, 801, 32))


# ------------------------------------------------------------------------------------------ reader
@dataclass(frozen=True)
class CocoImage:
    """One image of a COCO json with its usable annotations (corners clipped to the image)."""

    image_id: int
    path: Path
    height: int
    width: int
    boxes: np.ndarray  # (m, 4) float64 xyxy pixels, non-degenerate
    labels: np.ndarray  # (m,) int64 COCO category ids
    iscrowd: np.ndarray  # (m,) int64
    area: np.ndarray  # (m,) float64, the json's (segmentation) area: COCOeval's small / medium / large


def _load_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"COCO annotation file {path} does not exist")
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: not a readable json file ({err})") from err
    missing = [k for k in ("images", "annotations", "categories") if not isinstance(data, dict) or not isinstance(data.get(k), list)]
    if missing:
        raise ValueError(f"{path}: a COCO instances file needs lists {missing} at its top level")
    return data


def _field(entry: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if not isinstance(entry, dict) or not isinstance(entry.get(key), kind) or isinstance(entry.get(key), bool):
        raise ValueError(f"{where}: expected a {key!r} field of type {kind}, got {entry!r:.200}")
    return entry[key]


def _open_image(path: Path, height: int, width: int, decode: bool = False) -> None:
    """Open ``path`` up to its header (or, with ``decode``, decode it all) and check its size against the json's."""
    with Image.open(path) as img:
        if img.size != (width, height):
            raise ValueError(f"image is {img.size[0]}x{img.size[1]}, the json says {width}x{height}")
        if decode:
            img.load()  # a truncated JPEG has a valid header and fails only here


def _decode_rgb(path: Path) -> Tensor:
    """``(3, H, W)`` uint8: the whole file decoded (PIL raises ``OSError`` on a truncated one)."""
    with Image.open(path) as img:
        return torch.from_numpy(np.asarray(img.convert("RGB")).copy()).permute(2, 0, 1)


def read_coco(
    annotation_file: str | Path, image_dir: str | Path, decode: bool = False
) -> tuple[list[CocoImage], dict[int, str]]:
    """The images (with their annotations) and ``{category id: name}`` of one COCO instances file.

    Degenerate boxes are dropped and unreadable images skipped, each kind counted in one warning;
    malformed json is a ``ValueError`` naming the file (see the module docstring). Images are opened up
    to their header; ``decode=True`` decodes each one fully, so that a truncated file (whose header
    reads) is skipped here too, at the price of one decode per image."""
    annotation_file, image_dir = Path(annotation_file), Path(image_dir)
    data = _load_json(annotation_file)
    if not image_dir.is_dir():
        raise ValueError(f"COCO image folder {image_dir} does not exist (annotations: {annotation_file})")
    where = str(annotation_file)
    categories: dict[int, str] = {}
    for c in data["categories"]:
        categories[_field(c, "id", int, f"{where}: categories")] = str(c.get("name", c["id"]))
    if not categories or min(categories) < 0:
        raise ValueError(f"{where}: needs at least one category with a non-negative id, got {sorted(categories)}")
    images: dict[int, dict[str, Any]] = {}
    for im in data["images"]:
        image_id = _field(im, "id", int, f"{where}: images")
        images[image_id] = {
            "file": _field(im, "file_name", str, f"{where}: image {image_id}"),
            "height": _field(im, "height", int, f"{where}: image {image_id}"),
            "width": _field(im, "width", int, f"{where}: image {image_id}"),
            "anns": [],
        }
    degenerate = []
    for i, ann in enumerate(data["annotations"]):
        at = f"{where}: annotation {ann.get('id', i) if isinstance(ann, dict) else i}"
        image_id, category = _field(ann, "image_id", int, at), _field(ann, "category_id", int, at)
        bbox = _field(ann, "bbox", list, at)
        if image_id not in images:
            raise ValueError(f"{at}: image_id {image_id} is not in the file's images")
        if category not in categories:
            raise ValueError(f"{at}: category_id {category} is not in the file's categories {sorted(categories)}")
        if len(bbox) != 4 or not all(isinstance(v, (int, float)) and np.isfinite(v) for v in bbox):
            raise ValueError(f"{at}: bbox must be four finite numbers [x, y, w, h], got {bbox}")
        im = images[image_id]
        x0, y0 = min(max(bbox[0], 0.0), im["width"]), min(max(bbox[1], 0.0), im["height"])
        x1, y1 = min(max(bbox[0] + bbox[2], 0.0), im["width"]), min(max(bbox[1] + bbox[3], 0.0), im["height"])
        if x1 <= x0 or y1 <= y0:
            degenerate.append(f"{ann.get('id', i)} (image {image_id}, bbox {bbox})")
            continue
        area = float(ann.get("area", (x1 - x0) * (y1 - y0)))
        im["anns"].append((x0, y0, x1, y1, category, int(ann.get("iscrowd", 0)), area))
    if degenerate:
        warnings.warn(
            f"{where}: dropped {len(degenerate)} of {len(data['annotations'])} annotations whose box has no area "
            f"inside the image; first: {'; '.join(degenerate[:3])}",
            stacklevel=2,
        )

    def read(image_id: int) -> CocoImage:
        im = images[image_id]
        path = image_dir / im["file"]
        _open_image(path, im["height"], im["width"], decode)
        anns = np.asarray(im["anns"], dtype=np.float64).reshape(-1, 7)
        return CocoImage(image_id, path, im["height"], im["width"], anns[:, :4], anns[:, 4].astype(np.int64),
                         anns[:, 5].astype(np.int64), anns[:, 6])

    good = read_each(sorted(images), read, what=f"images of {annotation_file} in {image_dir}",
                     name=lambda i: images[i]["file"], errors=(OSError, ValueError))
    return [img for _, img in good], categories


# ------------------------------------------------------------------------------------------ transforms
class RandomSizeCrop(v2.Transform):
    """DETR's ``RandomSizeCrop``: a random crop of width in ``[min_size, min(W, max_size)]`` and height in
    ``[min_size, min(H, max_size)]`` (sides smaller than ``min_size`` are kept whole)."""

    def __init__(self, min_size: int, max_size: int) -> None:
        super().__init__()
        if not 0 < min_size <= max_size:
            raise ValueError(f"RandomSizeCrop: need 0 < min_size <= max_size, got {min_size}, {max_size}")
        self.min_size, self.max_size = min_size, max_size

    def make_params(self, flat_inputs: list[Any]) -> dict[str, Any]:
        height, width = next(TF.get_size(x) for x in flat_inputs if isinstance(x, tv_tensors.Image))
        w = int(torch.randint(min(self.min_size, width), min(width, self.max_size) + 1, ()))
        h = int(torch.randint(min(self.min_size, height), min(height, self.max_size) + 1, ()))
        top, left = int(torch.randint(0, height - h + 1, ())), int(torch.randint(0, width - w + 1, ()))
        return {"top": top, "left": left, "height": h, "width": w}

    def transform(self, inpt: Any, params: dict[str, Any]) -> Any:
        if isinstance(inpt, (tv_tensors.Image, tv_tensors.BoundingBoxes)):
            return TF.crop(inpt, **params)
        return inpt


def _normalize(mean: Sequence[float], std: Sequence[float]) -> list[v2.Transform]:
    return [v2.ToDtype(torch.float32, scale=True), v2.Normalize(list(mean), list(std))]


def detr_train_transform(
    scales: Sequence[int] = COCO_SCALES,
    max_size: int = 1333,
    crop_scales: Sequence[int] = (400, 500, 600),
    crop_size: tuple[int, int] = (384, 600),
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
) -> v2.Compose:
    """DETR's training augmentation on ``(Image, {"boxes": BoundingBoxes, "labels"})`` samples."""
    multi_scale = v2.RandomShortestSize(list(scales), max_size=max_size)
    return v2.Compose([
        v2.RandomHorizontalFlip(),
        v2.RandomChoice([
            multi_scale,
            v2.Compose([v2.RandomShortestSize(list(crop_scales)), RandomSizeCrop(*crop_size), multi_scale]),
        ]),
        v2.ClampBoundingBoxes(),
        v2.SanitizeBoundingBoxes(min_size=1.0, labels_getter=lambda sample: sample[1]["labels"]),
        *_normalize(mean, std),
    ])


def detr_eval_transform(
    size: int = 800, max_size: int = 1333, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD
) -> v2.Compose:
    """Evaluation: the shorter side resized to ``size``, the longer at most ``max_size``; normalize."""
    return v2.Compose([v2.Resize(size, max_size=max_size), *_normalize(mean, std)])


# ------------------------------------------------------------------------------------------ dataset
class CocoDetection(Dataset):
    """The images of one COCO split as ``(image, target)`` items (see the module docstring)."""

    def __init__(self, images: list[CocoImage], categories: dict[int, str], transform: v2.Transform | None = None) -> None:
        self.images, self.transform = images, transform
        #: index -> why: the images that failed to decode when read (in this process), and were replaced
        self.unreadable: dict[int, str] = {}
        self.category_names = dict(sorted(categories.items()))
        self.category_index = {cid: i for i, cid in enumerate(self.category_names)}
        self.num_classes = max(self.category_names) + 1
        self.class_names = [self.category_names.get(i, "N/A") for i in range(self.num_classes)]

    def __len__(self) -> int:
        return len(self.images)

    def _read(self, index: int) -> tuple[CocoImage, Tensor]:
        """The record and decoded pixels of ``index``, or of the next image that decodes.

        An image that indexing let through (its header reads) but that fails to decode, e.g. a truncated
        JPEG, is skipped with a warning counting the skipped images so far, and the next readable image
        is returned in its place: a batch stays full, and evaluation keeps one copy of a repeated image."""
        n = len(self.images)
        for step in range(n):
            i = (index + step) % n
            if i in self.unreadable:
                continue
            rec = self.images[i]
            try:
                pixels = _decode_rgb(rec.path)  # (3, H, W) uint8
                if tuple(pixels.shape[1:]) != (rec.height, rec.width):
                    raise ValueError(f"decoded {pixels.shape[2]}x{pixels.shape[1]}, the json says {rec.width}x{rec.height}")
            except (OSError, ValueError, SyntaxError) as err:  # PIL: OSError (truncated), SyntaxError (bad header)
                self.unreadable[i] = f"{type(err).__name__}: {str(err)[:160]}"
                warnings.warn(
                    f"CocoDetection: skipped {len(self.unreadable)} of {n} images that could not be decoded so far; "
                    f"this one: {rec.path} ({self.unreadable[i]}); reading the next image in its place",
                    stacklevel=3,
                )
                continue
            return rec, pixels
        raise ValueError(f"CocoDetection: none of the {n} images could be decoded; first: "
                         f"{'; '.join(f'{self.images[i].path} ({why})' for i, why in list(self.unreadable.items())[:3])}")

    def __getitem__(self, index: int) -> tuple[Tensor, dict[str, Any]]:
        rec, pixels = self._read(index)
        keep = rec.iscrowd == 0
        image = tv_tensors.Image(pixels)
        boxes = tv_tensors.BoundingBoxes(torch.from_numpy(rec.boxes[keep]).float(), format="XYXY",
                                         canvas_size=(rec.height, rec.width))
        sample = (image, {"boxes": boxes, "labels": torch.from_numpy(rec.labels[keep])})
        if self.transform is not None:
            sample = self.transform(*sample)
        image, target = sample
        if image.dtype == torch.uint8:  # no transform: still the model's float input
            image = TF.normalize(TF.to_dtype(image, torch.float32, scale=True), list(IMAGENET_MEAN), list(IMAGENET_STD))
        h, w = image.shape[-2:]
        scale = torch.tensor([w, h, w, h], dtype=torch.float32)
        boxes = box_convert(target["boxes"].as_subclass(Tensor).float(), "xyxy", "cxcywh") / scale  # (n, 4)
        xywh = rec.boxes.copy()
        xywh[:, 2:] -= xywh[:, :2]
        return image.as_subclass(Tensor), {
            "labels": target["labels"].long(),
            "boxes": boxes,
            "image_id": rec.image_id,
            "orig_size": torch.tensor([rec.height, rec.width]),
            "size": torch.tensor([h, w]),
            "annotations": {
                "boxes": torch.from_numpy(xywh),  # (m, 4) xywh original pixels, float64
                "labels": torch.from_numpy(rec.labels),
                "iscrowd": torch.from_numpy(rec.iscrowd),
                "area": torch.from_numpy(rec.area),
            },
        }


def collate_detection(batch: list[tuple[Tensor, dict[str, Any]]]) -> dict[str, Any]:
    """Pad images to the batch's largest height and width: ``images (B, 3, H, W)`` (zeros in the
    padding), ``pad_mask (B, H, W)`` True on padded pixels, ``targets`` the list of target dicts."""
    if not batch:
        raise ValueError("collate_detection: empty batch")
    height = max(img.shape[-2] for img, _ in batch)
    width = max(img.shape[-1] for img, _ in batch)
    images = batch[0][0].new_zeros(len(batch), 3, height, width)  # (B, 3, H, W)
    pad_mask = torch.ones(len(batch), height, width, dtype=torch.bool)  # (B, H, W)
    for i, (img, _) in enumerate(batch):
        images[i, :, : img.shape[-2], : img.shape[-1]] = img
        pad_mask[i, : img.shape[-2], : img.shape[-1]] = False
    return {"images": images, "pad_mask": pad_mask, "targets": [t for _, t in batch]}


# ------------------------------------------------------------------------------------------ generator
#: the synthetic default's categories: COCO-style ids (from 1) and names
SYNTHETIC_CATEGORIES: dict[int, str] = {1: "square", 2: "disc", 3: "triangle"}
_COLOURS = {1: (220, 40, 40), 2: (40, 190, 60), 3: (50, 80, 230)}


def _background(rng: np.random.Generator, height: int, width: int) -> Image.Image:
    """A textured background: a colour gradient, blurred noise and a few faint stripes."""
    base = rng.uniform(60, 200, size=3)
    ramp = rng.uniform(-50, 50, size=3)
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    direction = rng.uniform(0, 2 * np.pi)
    t = np.cos(direction) * xx + np.sin(direction) * yy  # (H, W)
    img = base[None, None] + ramp[None, None] * t[..., None] + rng.normal(0, 18, size=(height, width, 3))
    period = rng.uniform(6, 20)
    img += 10 * np.sin(2 * np.pi * (xx if rng.random() < 0.5 else yy) * max(height, width) / period)[..., None]
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    return pil.filter(ImageFilter.GaussianBlur(radius=float(rng.uniform(0.5, 1.5))))


def _draw(draw: ImageDraw.ImageDraw, category: int, box: tuple[float, float, float, float], colour: tuple[int, ...]) -> None:
    x0, y0, x1, y1 = box
    if category == 1:
        draw.rectangle([x0, y0, x1 - 1, y1 - 1], fill=colour)
    elif category == 2:
        draw.ellipse([x0, y0, x1 - 1, y1 - 1], fill=colour)
    else:
        draw.polygon([(x0, y1 - 1), (x1 - 1, y1 - 1), ((x0 + x1 - 1) / 2, y0)], fill=colour)


def _synthetic_image(rng: np.random.Generator, size: tuple[int, int], max_objects: int) -> tuple[Image.Image, list[dict[str, Any]]]:
    """One image with 0..``max_objects`` non-overlapping shapes, maybe a crowd of tiny discs."""
    height = int(rng.integers(size[0], size[1] + 1))
    width = int(rng.integers(size[0], size[1] + 1))
    img = _background(rng, height, width)
    draw = ImageDraw.Draw(img)
    anns: list[dict[str, Any]] = []
    placed: list[tuple[float, float, float, float]] = []

    def free(box: tuple[float, float, float, float], margin: float = 2) -> bool:
        return all(box[2] + margin <= p[0] or p[2] + margin <= box[0] or box[3] + margin <= p[1] or p[3] + margin <= box[1]
                   for p in placed)

    if rng.random() < 0.15:  # a crowd: a cluster of tiny discs, one iscrowd box around them
        s = int(min(height, width) * 0.3)
        x0, y0 = int(rng.integers(0, width - s)), int(rng.integers(0, height - s))
        for _ in range(6):
            r = int(rng.integers(2, 4))
            cx, cy = rng.integers(x0 + r, x0 + s - r), rng.integers(y0 + r, y0 + s - r)
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=_COLOURS[2])
        placed.append((x0, y0, x0 + s, y0 + s))
        anns.append({"category_id": 2, "bbox": [x0, y0, s, s], "iscrowd": 1, "area": float(s * s) / 4})
    lo, hi = max(8, min(height, width) // 8), max(12, min(height, width) // 2)
    for _ in range(int(rng.integers(1, max_objects + 1)) if rng.random() > 0.05 else 0):
        for _try in range(20):
            w = int(rng.integers(lo, hi + 1))
            h = int(np.clip(w * rng.uniform(0.7, 1.4), lo, hi))
            x0, y0 = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
            box = (x0, y0, x0 + w, y0 + h)
            if free(box):
                break
        else:
            continue
        category = int(rng.integers(1, len(SYNTHETIC_CATEGORIES) + 1))
        colour = tuple(int(np.clip(c + rng.integers(-30, 31), 0, 255)) for c in _COLOURS[category])
        _draw(draw, category, box, colour)
        placed.append(box)
        area = w * h * {1: 1.0, 2: np.pi / 4, 3: 0.5}[category]
        anns.append({"category_id": category, "bbox": [x0, y0, w, h], "iscrowd": 0, "area": float(area)})
    return img, anns


def write_synthetic_coco(
    root: str | Path,
    sizes: dict[str, int] | None = None,
    *,
    image_size: tuple[int, int] = (96, 160),
    max_objects: int = 4,
    seed: int = 0,
) -> Path:
    """Write a small COCO-format dataset under ``root``: ``<split>/*.jpg`` and
    ``annotations/instances_<split>.json`` for each ``{split: number of images}`` (default train 600,
    val 60, test 120), image sides drawn from ``image_size``, categories :data:`SYNTHETIC_CATEGORIES`.
    About 15% of the images hold a crowd annotation and 5% no annotation at all."""
    root = Path(root)
    sizes = dict(sizes or {"train": 600, "val": 60, "test": 120})
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    image_id, ann_id = 1, 1
    for split, n in sizes.items():
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for _ in range(n):
            img, anns = _synthetic_image(rng, image_size, max_objects)
            name = f"{image_id:012d}.jpg"
            img.save(root / split / name, quality=92)
            images.append({"id": image_id, "file_name": name, "height": img.height, "width": img.width})
            for ann in anns:
                annotations.append({"id": ann_id, "image_id": image_id, **ann})
                ann_id += 1
            image_id += 1
        categories = [{"id": cid, "name": name, "supercategory": "shape"} for cid, name in SYNTHETIC_CATEGORIES.items()]
        doc = {"info": {"description": "zoo synthetic shapes"}, "images": images, "annotations": annotations,
               "categories": categories}
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(doc))
    return root


# ------------------------------------------------------------------------------------------ datamodule
class CocoDetectionDataModule(ZooDataModule):
    """COCO detection from ``path`` (a COCO root), or the synthetic offline default.

    Args:
        path: the COCO root (``annotations/instances_<split>.json`` + ``<split>/``); ``None`` = synthetic.
        train_split, val_split, test_split: the split names of ``path`` (COCO's test images have no
            public labels, so ``test`` reads ``val2017`` by default).
        scales, max_size, crop_scales, crop_size: DETR's augmentation (:func:`detr_train_transform`).
        eval_size: the evaluation resize of the shorter side.
        synthetic_sizes: images per split of the offline default; synthetic_image_size: its side range.
        decode_at_setup: decode every image once while indexing (:func:`read_coco`'s ``decode``), so that
            truncated files are dropped before training rather than replaced when read.
        batch_size, num_workers, limit: :class:`~zoo.training.data.ZooDataModule`'s.
    """

    def __init__(
        self,
        path: str | None = None,
        train_split: str = "train2017",
        val_split: str = "val2017",
        test_split: str = "val2017",
        scales: tuple[int, ...] = COCO_SCALES,
        max_size: int = 1333,
        crop_scales: tuple[int, ...] = (400, 500, 600),
        crop_size: tuple[int, int] = (384, 600),
        eval_size: int = 800,
        synthetic_sizes: tuple[int, int, int] = (600, 60, 120),
        synthetic_image_size: tuple[int, int] = (96, 160),
        decode_at_setup: bool = False,
        batch_size: int = 2,
        num_workers: int = 0,
        limit: int | None = None,
    ) -> None:
        super().__init__(path=path, batch_size=batch_size, num_workers=num_workers, limit=limit)
        if not scales or min(scales) < 1 or max_size < max(scales) or eval_size < 1 or eval_size >= max_size:
            raise ValueError(
                f"CocoDetectionDataModule: need scales >= 1, eval_size >= 1, max_size >= every scale and max_size > eval_size; "
                f"got scales={scales}, eval_size={eval_size}, max_size={max_size}"
            )
        if len(synthetic_sizes) != 3 or min(synthetic_sizes) < 1:
            raise ValueError(f"synthetic_sizes must be three positive image counts (train, val, test), got {synthetic_sizes}")
        self.splits = {"train": train_split, "val": val_split, "test": test_split}
        self.train_transform = detr_train_transform(scales, max_size, crop_scales, tuple(crop_size))
        self.eval_transform = detr_eval_transform(eval_size, max_size)
        self.synthetic_sizes, self.synthetic_image_size = tuple(synthetic_sizes), tuple(synthetic_image_size)
        self.decode_at_setup = decode_at_setup
        self.mean, self.std = IMAGENET_MEAN, IMAGENET_STD
        self.class_names: list[str] = []
        self.num_classes = 0

    def collate_fn(self) -> Any:
        return collate_detection

    def load_default(self) -> dict[str, Dataset]:
        (lo, hi), (train, val, test) = self.synthetic_image_size, self.synthetic_sizes
        root = cache_dir("vision", "detection", f"synthetic_coco_v1_{train}_{val}_{test}_{lo}_{hi}")
        if not (root / "annotations" / "instances_test.json").is_file():
            tmp = root.with_name(root.name + ".partial")  # written aside, then renamed: never half a dataset
            shutil.rmtree(tmp, ignore_errors=True)
            write_synthetic_coco(tmp, {"train": train, "val": val, "test": test}, image_size=(lo, hi))
            shutil.rmtree(root, ignore_errors=True)
            tmp.rename(root)
        self.splits = {"train": "train", "val": "val", "test": "test"}
        return self.load_path(root)

    def load_path(self, path: Path) -> dict[str, Dataset]:
        out: dict[str, Dataset] = {}
        read: dict[str, tuple[list[CocoImage], dict[int, str]]] = {}
        for split, name in self.splits.items():
            if name not in read:
                read[name] = read_coco(path / "annotations" / f"instances_{name}.json", path / name, self.decode_at_setup)
            images, categories = read[name]
            out[split] = CocoDetection(images, categories, self.train_transform if split == "train" else self.eval_transform)
        self.num_classes = max(ds.num_classes for ds in out.values())
        self.class_names = max((ds.class_names for ds in out.values()), key=len)
        return out
