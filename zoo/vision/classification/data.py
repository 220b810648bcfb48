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
numpy arrays and plain containers, so a malicious file cannot run code. Every reader checks what it
read before anything trains on it -- CIFAR ``data`` integer ``(N, 3072)`` in 0..255 and ``labels`` /
``fine_labels`` N integers in ``[0, classes)``; Galaxy10 ``images`` uint8 ``(N, H, W, 3)`` and ``ans``
N integers 0-9 -- and a file that fails is refused with a ValueError naming the file and the field.
ImageFolder images are fully decoded once while the tree is indexed (``verify()`` alone passes a
truncated JPEG); the ones that fail are skipped with one warning that counts them and names the first
few. Every image file goes through :func:`load_rgb`, at indexing and in ``__getitem__`` alike: 16-bit
and 32-bit grayscale are scaled by their bit depth (``>> 8`` for 16 bits), palette, grayscale+alpha
and CMYK become RGB, and alpha is dropped as torchvision's loader drops it.

Transforms are timm's (``timm.data.create_transform``): RandomResizedCrop + flips + RandAugment
(``auto_augment="rand-m9-mstd0.5-inc1"``) + random erasing for training, resize + center crop for
evaluation. Mixup / CutMix and label smoothing act on batches and live in
:class:`zoo.vision.classification.module.ImageClassifier`.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
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
    "load_rgb",
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
        if isinstance(images, np.ndarray) and (
            images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3) or len(images) != len(labels)
        ):
            raise ValueError(
                f"ArrayImageDataset needs uint8 images (N, H, W, 1 or 3) with one label each, got {images.dtype} "
                f"{images.shape} and {len(labels)} labels"
            )
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
        x = self.transform(img) if self.transform is not None else torch.from_numpy(np.array(img)).permute(2, 0, 1)
        return x, int(self.labels[self.indices[i]])


class FileImageDataset(Dataset):
    """Image files with labels (an ImageFolder tree after the unreadable files were dropped).

    Each item is decoded by :func:`load_rgb`, the conversion the folder was indexed with; a file that
    stopped decoding since then (changed on disk) raises a ValueError naming it.
    """

    def __init__(
        self, files: Sequence[Path], labels: Sequence[int], transform: Callable[[Image.Image], Tensor] | None = None
    ) -> None:
        if len(files) != len(labels):
            raise ValueError(f"FileImageDataset needs one label per file, got {len(files)} files, {len(labels)} labels")
        self.files = list(files)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.indices = np.arange(len(self.files))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.files)

    def image(self, i: int) -> Image.Image:
        path = self.files[i]
        try:
            return load_rgb(path)
        except Exception as err:  # PIL raises many types for broken files
            raise ValueError(
                f"{path}: cannot decode the image ({type(err).__name__}: {err}); it decoded when the folder was "
                "indexed, so the file changed since"
            ) from err

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        img = self.image(i)
        x = self.transform(img) if self.transform is not None else torch.from_numpy(np.array(img)).permute(2, 0, 1)
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
    """Galaxy10 DECals h5: lazy ``images`` reader, ``ans`` labels, the ten class names.

    Checked up front, each failure a ValueError naming the file and the dataset: both ``images`` and
    ``ans`` present (as datasets), ``images`` uint8 ``(N, H, W, 3)``, ``ans`` 1-D integers 0-9, the same N.
    """
    import h5py

    path = Path(path)
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("images", "ans") if k not in f]
            if missing:
                raise ValueError(f"{path}: Galaxy10 h5 file lacks dataset(s) {missing} (expected 'images' and 'ans')")
            for key in ("images", "ans"):
                if not isinstance(f[key], h5py.Dataset):
                    raise ValueError(f"{path}: Galaxy10 {key!r} is an h5 group, expected a dataset")
            images, ans = f["images"], f["ans"]
            if images.dtype != np.uint8:
                raise ValueError(f"{path}: Galaxy10 dataset 'images' must be uint8, got {images.dtype}")
            if images.ndim != 4 or images.shape[-1] != 3 or min(images.shape[1:3]) < 1:
                raise ValueError(f"{path}: Galaxy10 dataset 'images' must be (N, H, W, 3), got shape {images.shape}")
            if ans.ndim != 1:
                raise ValueError(f"{path}: Galaxy10 dataset 'ans' must be 1-D (a class per image), got {ans.shape}")
            if ans.dtype.kind not in "iu":
                raise ValueError(f"{path}: Galaxy10 dataset 'ans' must hold integer classes 0-9, got dtype {ans.dtype}")
            n_images = images.shape[0]
            labels = ans[:].astype(np.int64)
    except OSError as err:
        raise ValueError(f"{path}: not a readable HDF5 file ({err})") from None
    if n_images != len(labels):
        raise ValueError(f"{path}: Galaxy10 has {n_images} 'images' but {len(labels)} labels in 'ans'")
    if not n_images:
        raise ValueError(f"{path}: Galaxy10 dataset 'images' holds no images")
    _check_classes(labels, 10, f"{path}: Galaxy10 dataset 'ans'")
    return _H5Images(path, "images"), labels, list(GALAXY10_CLASSES)


def _check_classes(labels: np.ndarray, num_classes: int, where: str) -> None:
    if labels.min() < 0 or labels.max() >= num_classes:
        bad = int(np.flatnonzero((labels < 0) | (labels >= num_classes))[0])
        raise ValueError(
            f"{where}: class ids must lie in [0, {num_classes}), entry {bad} is {int(labels[bad])} "
            f"(range [{labels.min()}, {labels.max()}])"
        )


def _integer_array(value: Any, where: str) -> np.ndarray:
    """``value`` as an integer array; floats, bools, strings and ragged lists are refused."""
    try:
        arr = np.asarray(value)
    except (ValueError, TypeError) as err:  # ragged nested lists
        raise ValueError(f"{where} is not a rectangular array ({err})") from None
    if arr.dtype.kind not in "iu":
        raise ValueError(f"{where} must hold integers, got dtype {arr.dtype} ({type(value).__name__})")
    if isinstance(value, list | tuple):  # numpy casts [1, True] to ints: a bool among labels is a broken file
        bools = [i for i, x in enumerate(value) if isinstance(x, bool | np.bool_)]
        if bools:
            raise ValueError(f"{where} must hold integers, entry {bools[0]} is a bool ({value[bools[0]]!r})")
    return arr


def _load_cifar_pickle(path: Path, fields: Sequence[str]) -> dict[str, Any]:
    raw = safe_unpickle(path.read_bytes(), NUMPY_GLOBALS, source=f"{path} (a CIFAR python pickle)", encoding="bytes")
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(raw).__name__}")
    out = {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in raw.items()}
    missing = [k for k in fields if k not in out]
    if missing:
        raise ValueError(f"{path}: CIFAR pickle lacks the field(s) {missing}, has {sorted(map(str, out))}")
    return out


def _cifar_class_names(path: Path, field: str, count: int) -> list[str]:
    names = _load_cifar_pickle(path, [field])[field]
    where = f"{path}: CIFAR field {field!r}"
    if not isinstance(names, list | tuple) or not all(isinstance(n, bytes | str) for n in names):
        raise ValueError(f"{where} must be a list of {count} class-name strings, got {type(names).__name__}")
    if len(names) != count:
        raise ValueError(f"{where} must name {count} classes, got {len(names)}")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


def read_cifar(path: str | Path, split: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """CIFAR-10 (``cifar-10-batches-py``) or CIFAR-100 (``cifar-100-python``, fine labels) python pickles.

    Returns ``uint8 (N, 32, 32, 3)`` images, labels and class names for ``split`` "train" or "test".
    Each batch is checked, a failure a ValueError naming the file and the field: ``data`` an integer
    ``(N, 3072)`` array with values 0..255 (float arrays are refused, not cast), ``labels`` (CIFAR-10)
    or ``fine_labels`` (CIFAR-100) N integers in ``[0, 10)`` / ``[0, 100)``; the meta file names 10 / 100
    classes.
    """
    if split not in ("train", "test"):
        raise ValueError(f"CIFAR split must be 'train' or 'test', got {split!r}")
    root = Path(path)
    if (root / "batches.meta").is_file():
        files = [root / f"data_batch_{i}" for i in range(1, 6)] if split == "train" else [root / "test_batch"]
        label_key, names = "labels", _cifar_class_names(root / "batches.meta", "label_names", 10)
    elif (root / "meta").is_file():
        files = [root / split]
        label_key, names = "fine_labels", _cifar_class_names(root / "meta", "fine_label_names", 100)
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
        batch = _load_cifar_pickle(f, ["data", label_key])
        data = _integer_array(batch["data"], f"{f}: CIFAR field 'data'")
        if data.ndim != 2 or data.shape[1] != 3072 or not len(data):
            raise ValueError(f"{f}: CIFAR field 'data' must be (N, 3072) with N >= 1, got shape {data.shape}")
        if data.min() < 0 or data.max() > 255:
            raise ValueError(f"{f}: CIFAR field 'data' must hold 0..255, got range [{data.min()}, {data.max()}]")
        y = _integer_array(batch[label_key], f"{f}: CIFAR field {label_key!r}")
        if y.ndim != 1 or len(y) != len(data):
            raise ValueError(
                f"{f}: CIFAR field {label_key!r} must hold a label per row of 'data' ({len(data)}), got shape {y.shape}"
            )
        _check_classes(y, len(names), f"{f}: CIFAR field {label_key!r}")
        images.append(data.astype(np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))  # (N, 32, 32, 3)
        labels.append(y.astype(np.int64))
    return np.concatenate(images), np.concatenate(labels), names


def _rawmode(img: Image.Image) -> str | None:
    """The decoder's raw mode (``"I;16B"``, ``"I;12"``, ...): the file's sample layout, gone after ``load``."""
    try:
        args = img.tile[0][3]
    except (IndexError, TypeError):
        return None
    if isinstance(args, tuple):
        args = args[0] if args else None
    return args if isinstance(args, str) else None


def _integer_depth(mode: str, rawmode: str | None) -> tuple[int, bool]:
    """(bits, signed) of an integer grayscale image: from the raw mode, else the mode; bare ``"I"`` is 32-bit signed."""
    for name in (rawmode, mode):
        m = re.fullmatch(r"I;(\d+)([A-Z]*)", name or "")
        if m:
            return int(m.group(1)), "S" in m.group(2)
    return 32, True


def _to_rgb(img: Image.Image, rawmode: str | None) -> Image.Image:
    """A decoded image as 8-bit RGB, its intensities scaled by its real bit depth."""
    mode = img.mode
    if mode.startswith("I"):  # "I;16", "I;16B", "I;16L", "I;16N", "I": convert("L") would clip to 255
        bits, signed = _integer_depth(mode, rawmode)
        top = (1 << (bits - 1 if signed else bits)) - 1
        arr = np.clip(np.asarray(img).astype(np.int64), 0, top) >> max(top.bit_length() - 8, 0)  # (H, W)
        return Image.fromarray(arr.astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        arr = np.asarray(img)  # (H, W) float32
        if not np.isfinite(arr).all() or arr.min() < 0 or arr.max() > 1:
            raise ValueError(f"float image with values outside [0, 1] ([{arr.min()}, {arr.max()}]): scale unknown")
        return Image.fromarray(np.round(arr * 255).astype(np.uint8), "L").convert("RGB")
    if mode in ("P", "PA"):
        img = img.convert("RGBA")  # a palette's transparency resolves through RGBA, then alpha is dropped
    return img.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """Decode the image file ``path`` completely and return it as 8-bit RGB.

    A truncated or corrupt file raises here (``Image.verify`` does not decode, so it passes truncated
    JPEGs). 16/32-bit grayscale is scaled by its bit depth (``>> 8`` for 16-bit), palette / grayscale+
    alpha / CMYK are converted to RGB and alpha is dropped (as torchvision's ``pil_loader`` does).
    """
    with Image.open(path) as img:
        rawmode = _rawmode(img)
        img.load()
        return _to_rgb(img, rawmode)


def _decode_error(path: Path) -> str | None:
    """None when ``path`` decodes to RGB, else why it does not."""
    try:
        load_rgb(path)
    except Exception as err:  # PIL raises many types for broken files
        return f"{type(err).__name__}: {err}"
    return None


def read_image_folder(root: str | Path, classes: Sequence[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    """``root/<class>/<image>`` files and labels.

    Every image is decoded once here (threads; PIL releases the GIL while decoding) through the same
    :func:`load_rgb` that ``FileImageDataset`` uses, so a file that would crash a training step is
    dropped now, with one warning that counts the dropped files and names the first few.
    """
    root = Path(root)
    if classes is None:
        classes = sorted(p.name for p in root.iterdir() if p.is_dir())
    if not classes:
        raise ValueError(f"{root}: an ImageFolder tree needs one sub-directory per class, found none")
    candidates: list[tuple[Path, int]] = []
    for label, name in enumerate(classes):
        folder = root / name
        if not folder.is_dir():
            raise ValueError(f"{root}: class folder {name!r} missing (classes come from the train split: {list(classes)})")
        candidates += [(f, label) for f in sorted(folder.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES]
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        errors = list(pool.map(_decode_error, [f for f, _ in candidates]))
    files = [f for (f, _), err in zip(candidates, errors) if err is None]
    labels = [label for (_, label), err in zip(candidates, errors) if err is None]
    bad = [f"{f} ({err})" for (f, _), err in zip(candidates, errors) if err is not None]
    if bad:
        more = f"; and {len(bad) - 3} more" if len(bad) > 3 else ""
        warnings.warn(
            f"{root}: skipped {len(bad)} unreadable image file(s) of {len(candidates)}: {'; '.join(bad[:3])}{more}",
            RuntimeWarning,
            stacklevel=2,
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
