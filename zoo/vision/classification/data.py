"""Image classification data: ImageFolder trees, Galaxy10 DECals, CIFAR-10/100, scikit-learn digits.

One ``LightningDataModule`` reads every format; ``format="auto"`` recognizes it from ``path``:

==========================  ===========================================================================
format                      on disk
==========================  ===========================================================================
``digits`` (``path=None``)  scikit-learn's bundled 8x8 digits (1797 images, 10 classes), offline default
``galaxy10``                ``Galaxy10_DECals.h5``: ``images (N, 256, 256, 3) uint8``, ``ans (N,)`` 0-9
``cifar10``                 ``cifar-10-batches-py/``: ``data_batch_1..5``, ``test_batch``, ``batches.meta``
``cifar100``                ``cifar-100-python/``: ``train``, ``test``, ``meta`` (fine labels)
``imagefolder``             ``root/<class>/<image>``, or ``root/{train,val[,test]}/<class>/<image>``
==========================  ===========================================================================

Datasets that ship without a split (digits, Galaxy10, a flat ImageFolder) are split into
train/val/test by a deterministic stratified split (``val_fraction``, ``test_fraction``, ``seed``).
CIFAR's test batch is the test split and its validation split is carved from the training batches.

The CIFAR files are Python pickles: they are read with a restricted unpickler that only rebuilds
numpy arrays and plain containers, so a malicious file cannot run code. Unreadable images of an
ImageFolder tree are skipped with one warning that counts them.

Transforms are timm's (``timm.data.create_transform``): RandomResizedCrop + flips + RandAugment
(``auto_augment="rand-m9-mstd0.5-inc1"``) + random erasing for training, resize + center crop for
evaluation. Mixup / CutMix and label smoothing act on batches and live in
:class:`zoo.vision.classification.module.ImageClassifier`.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from zoo.training.data import NUMPY_GLOBALS, ZooDataModule, safe_unpickle

__all__ = [
    "GALAXY10_CLASSES",
    "ArrayImageDataset",
    "FileImageDataset",
    "ImageClassificationDataModule",
    "read_cifar",
    "read_digits",
    "read_galaxy10",
    "read_image_folder",
    "stratified_split",
]

GALAXY10_CLASSES = (
    "Disturbed",
    "Merging",
    "Round Smooth",
    "In-between Round Smooth",
    "Cigar Shaped Smooth",
    "Barred Spiral",
    "Unbarred Tight Spiral",
    "Unbarred Loose Spiral",
    "Edge-on without Bulge",
    "Edge-on with Bulge",
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm")
FORMATS = ("auto", "digits", "galaxy10", "cifar10", "cifar100", "imagefolder")


# ----------------------------------------------------------------------------------------- datasets


class ArrayImageDataset(Dataset):
    """Images held as a ``uint8`` array ``(N, H, W, C)`` (C = 1 or 3), or read lazily from an h5 dataset."""

    def __init__(
        self,
        images: np.ndarray | Callable[[int], np.ndarray],
        labels: np.ndarray,
        indices: np.ndarray | None = None,
        transform: Callable[[Image.Image], Tensor] | None = None,
    ) -> None:
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.indices = np.arange(len(self.labels)) if indices is None else np.asarray(indices)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    def image(self, i: int) -> Image.Image:
        j = int(self.indices[i])
        arr = self.images(j) if callable(self.images) else self.images[j]
        arr = np.asarray(arr)
        if arr.ndim == 3 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        return Image.fromarray(arr).convert("RGB")

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        img = self.image(i)
        x = self.transform(img) if self.transform is not None else torch.from_numpy(np.asarray(img)).permute(2, 0, 1)
        return x, int(self.labels[self.indices[i]])


class FileImageDataset(Dataset):
    """Image files with labels (an ImageFolder tree after the unreadable files were dropped)."""

    def __init__(
        self, files: Sequence[Path], labels: Sequence[int], transform: Callable[[Image.Image], Tensor] | None = None
    ) -> None:
        self.files = list(files)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.indices = np.arange(len(self.files))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def image(self, i: int) -> Image.Image:
        with Image.open(self.files[i]) as img:
            return img.convert("RGB")

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        img = self.image(i)
        x = self.transform(img) if self.transform is not None else torch.from_numpy(np.asarray(img)).permute(2, 0, 1)
        return x, int(self.labels[i])


class _H5Images:
    """Lazy, per-process handle on an h5 ``images`` dataset (h5py handles do not survive fork)."""

    def __init__(self, path: Path, key: str) -> None:
        self.path, self.key = path, key
        self._file: Any = None

    def __call__(self, i: int) -> np.ndarray:
        if self._file is None:
            import h5py

            self._file = h5py.File(self.path, "r")
        return self._file[self.key][i]

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "key": self.key, "_file": None}


# ------------------------------------------------------------------------------------------ readers


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic stratified train/val/test indices (every class keeps its proportion)."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(f"val_fraction + test_fraction must be in [0, 1), got {val_fraction} + {test_fraction}")
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        idx = idx[rng.permutation(len(idx))]
        n_test = int(round(len(idx) * test_fraction))
        n_val = int(round(len(idx) * val_fraction))
        test.append(idx[:n_test])
        val.append(idx[n_test : n_test + n_val])
        train.append(idx[n_test + n_val :])
    return tuple(np.sort(np.concatenate(part)) for part in (train, val, test))  # type: ignore[return-value]


def read_digits() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """scikit-learn's digits as ``uint8 (1797, 8, 8, 1)`` (0-16 scaled to 0-255), labels, class names."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)[..., None]
    return images, digits.target.astype(np.int64), [str(i) for i in range(10)]


def read_galaxy10(path: str | Path) -> tuple[_H5Images, np.ndarray, list[str]]:
    """Galaxy10 DECals h5: lazy ``images`` reader, ``ans`` labels (checked), the ten class names."""
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("images", "ans") if k not in f]
            if missing:
                raise ValueError(f"{path}: Galaxy10 h5 file lacks dataset(s) {missing} (expected 'images' and 'ans')")
            shape = f["images"].shape
            labels = np.asarray(f["ans"][:], dtype=np.int64)
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 file ({err})") from None
    if len(shape) != 4 or shape[-1] != 3 or shape[0] != len(labels):
        raise ValueError(
            f"{path}: expected images (N, H, W, 3) and ans (N,), got images {shape} and ans {labels.shape}"
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{path}: Galaxy10 labels must be 0-9, got range [{labels.min()}, {labels.max()}]")
    return _H5Images(path, "images"), labels, list(GALAXY10_CLASSES)


def _load_cifar_pickle(path: Path) -> dict[str, Any]:
    raw = safe_unpickle(path.read_bytes(), NUMPY_GLOBALS, source=f"{path} (a CIFAR python pickle)", encoding="bytes")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(raw).__name__}")
    return {(k.decode() if isinstance(k, bytes) else k): v for k, v in raw.items()}


def read_cifar(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """CIFAR-10 (``cifar-10-batches-py``) or CIFAR-100 (``cifar-100-python``, fine labels) python pickles.

    Returns ``uint8 (N, 32, 32, 3)`` images, labels and class names for ``split`` "train" or "test".
    """
    root = Path(path)
    if (root / "batches.meta").is_file():
        files = [root / f"data_batch_{i}" for i in range(1, 6)] if split == "train" else [root / "test_batch"]
        label_key, names = "labels", _load_cifar_pickle(root / "batches.meta")["label_names"]
    elif (root / "meta").is_file():
        files = [root / ("train" if split == "train" else "test")]
        label_key, names = "fine_labels", _load_cifar_pickle(root / "meta")["fine_label_names"]
    else:
        raise ValueError(
            f"{root}: not a CIFAR python directory (expected batches.meta + data_batch_1..5 + test_batch "
            "for CIFAR-10, or meta + train + test for CIFAR-100)"
        )
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise ValueError(f"{root}: missing CIFAR file(s) {missing}")
    images, labels = [], []
    for f in files:
        batch = _load_cifar_pickle(f)
        if "data" not in batch or label_key not in batch:
            raise ValueError(f"{f}: CIFAR batch needs 'data' and '{label_key}', has {sorted(batch)}")
        data = np.asarray(batch["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"{f}: CIFAR data must be (N, 3072) uint8, got {data.shape}")
        images.append(data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # (N, 32, 32, 3)
        labels.append(np.asarray(batch[label_key], dtype=np.int64))
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in names]
    return np.concatenate(images), np.concatenate(labels), names


def read_image_folder(root: str | Path, classes: Sequence[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """``root/<class>/<image>`` files and labels; unreadable images are dropped with one counted warning."""
    root = Path(root)
    if classes is None:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root}: an ImageFolder tree needs one sub-directory per class, found none")
    files, labels, bad = [], [], []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            raise ValueError(f"{root}: class folder {name!r} missing (classes come from the train split: {list(classes)})")
        for f in sorted(folder.rglob("*")):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as img:
                    img.verify()
            except Exception:  # PIL raises many types for broken files
                bad.append(f)
                continue
            files.append(f)
            labels.append(label)
    if bad:
        warnings.warn(
            f"{root}: skipped {len(bad)} unreadable image file(s), e.g. {bad[0]}", RuntimeWarning, stacklevel=2
        )
    if not files:
        raise ValueError(f"{root}: no readable images ({', '.join(IMAGE_SUFFIXES)}) under the class folders")
    return files, labels, list(classes)


def detect_format(path: str | Path | None) -> str:
    """The ``format`` of ``path`` (see the module table)."""
    if path is None:
        return "digits"
    p = Path(path)
    if p.is_file() and p.suffix.lower() in (".h5", ".hdf5"):
        return "galaxy10"
    if p.is_dir():
        if (p / "batches.meta").is_file():
            return "cifar10"
        if (p / "meta").is_file() and (p / "train").is_file():
            return "cifar100"
        if any(c.is_dir() for c in p.iterdir()):
            return "imagefolder"
    raise ValueError(
        f"data path {str(p)!r}: cannot tell its format (expected a Galaxy10 .h5 file, a CIFAR python directory "
        "or an ImageFolder tree); pass format= explicitly"
    )


# ------------------------------------------------------------------------------------- datamodule


class ImageClassificationDataModule(ZooDataModule):
    """Image classification from any of the formats above, with timm transforms.

    Args:
        path: dataset location; ``None`` uses scikit-learn's digits (offline default).
        format: ``auto`` or one of ``digits, galaxy10, cifar10, cifar100, imagefolder``.
        img_size: side of the square network input.
        batch_size, num_workers: loader settings.
        val_fraction, test_fraction, seed: the stratified split where the data has none.
        scale, ratio: RandomResizedCrop ranges for training.
        hflip, vflip: flip probabilities (galaxies have no up/down: Astroformer uses both).
        auto_augment: timm policy string, e.g. ``rand-m9-mstd0.5-inc1`` (RandAugment); None = off.
        re_prob: random erasing probability.
        color_jitter: timm's color jitter strength (ignored when ``auto_augment`` is set).
        interpolation, crop_pct, mean, std: timm transform settings for evaluation and normalization.
        limit: keep only the first ``limit`` images of each split (quick experiments and tests).
    """

    drop_last_train = True  # BatchNorm statistics and mixup pairs want full batches

    def __init__(
        self,
        path: str | None = None,
        format: str = "auto",
        img_size: int = 64,
        batch_size: int = 32,
        num_workers: int = 0,
        val_fraction: float = 0.1,
        test_fraction: float = 0.1,
        seed: int = 0,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3.0 / 4.0, 4.0 / 3.0),
        hflip: float = 0.5,
        vflip: float = 0.0,
        auto_augment: str | None = None,
        re_prob: float = 0.0,
        color_jitter: float | None = None,
        interpolation: str = "bicubic",
        crop_pct: float = 1.0,
        mean: tuple[float, float, float] = (0.5, 0.5, 0.5),
        std: tuple[float, float, float] = (0.5, 0.5, 0.5),
        limit: int | None = None,
    ) -> None:
        super().__init__(path, batch_size, num_workers, limit)
        if format not in FORMATS:
            raise ValueError(f"format must be one of {FORMATS}, got {format!r}")
        if path is not None and not Path(path).exists():
            raise ValueError(f"data path {path!r} does not exist")
        if img_size < 8:
            raise ValueError(f"img_size must be >= 8, got {img_size}")
        self.save_hyperparameters()
        self.format = detect_format(path) if format == "auto" else format
        self.img_size = img_size
        self.mean, self.std = tuple(mean), tuple(std)
        self.class_names: list[str] = []
        self._prepare_index()

    # -------------------------------------------------------------------------------- reading
    def _prepare_index(self) -> None:
        """Read labels and class names now (cheap), so ``num_classes`` is known before ``setup``."""
        hp = self.hparams
        split = lambda labels: stratified_split(labels, hp.val_fraction, hp.test_fraction, hp.seed)  # noqa: E731
        if self.format == "digits":
            images, labels, self.class_names = read_digits()
            parts = split(labels)
            self._make = lambda t, i: ArrayImageDataset(images, labels, parts[i], t)
        elif self.format == "galaxy10":
            reader, labels, self.class_names = read_galaxy10(self.path)
            parts = split(labels)
            self._make = lambda t, i: ArrayImageDataset(reader, labels, parts[i], t)
        elif self.format in ("cifar10", "cifar100"):
            train_x, train_y, self.class_names = read_cifar(self.path, "train")
            test_x, test_y, _ = read_cifar(self.path, "test")
            tr, va, _ = stratified_split(train_y, hp.val_fraction, 0.0, hp.seed)
            self._make = lambda t, i: (
                ArrayImageDataset(train_x, train_y, tr, t) if i == 0
                else ArrayImageDataset(train_x, train_y, va, t) if i == 1
                else ArrayImageDataset(test_x, test_y, None, t)
            )
        else:
            root = Path(self.path)
            if (root / "train").is_dir():
                files, labels, self.class_names = read_image_folder(root / "train")
                per_split = {0: (files, labels)}
                for i, name in ((1, "val"), (2, "test")):
                    if (root / name).is_dir():
                        f, lab, _ = read_image_folder(root / name, self.class_names)
                        per_split[i] = (f, lab)
                if 1 not in per_split:
                    raise ValueError(f"{root}: has train/ but no val/ split")
                per_split.setdefault(2, per_split[1])
                self._make = lambda t, i: FileImageDataset(*per_split[i], transform=t)
            else:
                files, labels, self.class_names = read_image_folder(root)
                parts = split(np.asarray(labels))
                self._make = lambda t, i: FileImageDataset(
                    [files[j] for j in parts[i]], [labels[j] for j in parts[i]], transform=t
                )

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def transform(self, training: bool) -> Callable[[Image.Image], Tensor]:
        from timm.data import create_transform

        hp = self.hparams
        if training:
            return create_transform(
                self.img_size,
                is_training=True,
                scale=tuple(hp.scale),
                ratio=tuple(hp.ratio),
                hflip=hp.hflip,
                vflip=hp.vflip,
                color_jitter=hp.color_jitter if hp.color_jitter is not None else 0.0,
                auto_augment=hp.auto_augment,
                interpolation=hp.interpolation,
                re_prob=hp.re_prob,
                mean=self.mean,
                std=self.std,
            )
        return create_transform(
            self.img_size,
            is_training=False,
            interpolation=hp.interpolation,
            crop_pct=hp.crop_pct,
            mean=self.mean,
            std=self.std,
        )

    def _datasets(self) -> dict[str, Dataset]:
        train_t, eval_t = self.transform(True), self.transform(False)
        return {"train": self._make(train_t, 0), "val": self._make(eval_t, 1), "test": self._make(eval_t, 2)}

    def load_default(self) -> dict[str, Dataset]:
        """scikit-learn's digits (indexed in the constructor)."""
        return self._datasets()

    def load_path(self, path: Path) -> dict[str, Dataset]:
        """Galaxy10 / CIFAR / ImageFolder at ``path`` (indexed in the constructor)."""
        return self._datasets()
