"""Stereo data in the benchmarks' own files, augmentation, and the offline synthetic default.

==================  ===================================================================================
``dataset``         on disk under ``path``
==================  ===================================================================================
``sceneflow``       ``FlyingThings3D/frames_<pass>/{TRAIN,TEST}/<A|B|C>/<seq>/{left,right}/<frame>.png`` with
                    ``FlyingThings3D/disparity/<same>/left/<frame>.pfm``; ``Monkaa/frames_<pass>/<scene>/...``
                    and ``Driving/frames_<pass>/<focal>/<direction>/<speed>/...`` the same way (any subset of
                    the three trees). Disparity: PFM, rows stored bottom to top, every pixel valid.
``kitti2015``       ``training/image_2/<id>_10.png``, ``training/image_3/...``, ``training/disp_occ_0/<id>_10.png``
                    (uint16 PNG, disparity * 256, 0 = invalid), ``training/disp_noc_0/...`` (non-occluded).
``kitti2012``       ``training/colored_0``, ``colored_1``, ``disp_occ``, ``disp_noc``, same encoding.
``middlebury``      one folder per scene anywhere below ``path``: ``im0.png``, ``im1.png``, ``disp0GT.pfm``
                    (``inf`` = invalid), ``mask0nocc.png`` (255 non-occluded, 128 occluded, 0 unknown),
                    ``calib.txt`` (``cam0=[...]``, ``doffs``, ``baseline``, ``width``, ``height``, ``ndisp``, ...).
``eth3d``           ``two_view_training/<scene>/{im0,im1}.png`` with ``disp0GT.pfm`` and ``mask0nocc.png``
                    in the scene folder or in ``two_view_training_gt/<scene>/`` (the two archives).
==================  ===================================================================================

Splits. SceneFlow: train = FlyingThings3D ``TRAIN`` + Monkaa + Driving, test = FlyingThings3D ``TEST``,
val = ``val_size`` pairs of ``TEST`` evenly spaced. KITTI / Middlebury / ETH3D: every ``holdout_every``-th
pair (sorted by name) is held out for val and test, the rest is train (``holdout_every=1``: all held out,
an evaluation-only set). A pair whose files do not open or disagree in size is skipped with one counted
warning (:func:`zoo.training.data.read_each`); the check reads headers only (PFM header and file
size, PNG header), so a corrupt PNG body fails later with an error naming the file.

Items are ``{"left", "right": (3, H, W) float in [0, 1], "disparity": (1, H, W) float, "valid": (1, H, W)
bool}`` plus ``"noc"`` (non-occluded, bool) for the datasets that ship it. ``valid`` is finite, positive
ground truth below ``max_disp`` (training filter; ``None`` keeps all). Disparity is in pixels of the left
image, ``x_right = x_left - d``.

Training augmentation (:class:`StereoAugment`): a random crop; colour jitter (brightness, contrast,
saturation, hue) drawn once for both views, or independently per view with probability
``asymmetric_prob`` (RAFT-Stereo's asymmetric colour augmentation); and with probability
``eraser_prob`` one to two rectangles of the right image filled with its mean colour (RAFT-Stereo's
occlusion "eraser"), which the disparity of the left image does not see.

Offline default (:func:`generate_synthetic`): textured slanted planes (a background and several shapes at
different depths) rendered into both views by an exact inverse warp with a z-buffer, written as PNG + PFM
in the FlyingThings3D layout under ``cache_dir("vision", "stereo", ...)`` and read back by the SceneFlow
reader; its ``TEST`` part is the held-out split. Every evaluation also scores the real Middlebury 2014
"Motorcycle" pair that scikit-image ships (``skimage.data.stereo_motorcycle()``, 500 x 741, ground truth
with ``+inf`` = invalid): :func:`write_motorcycle` writes it as a Middlebury folder (``im0.png``, ``im1.png``,
``disp0GT.pfm``; no calib or occlusion mask, which scikit-image does not ship) read by the Middlebury
reader, downscaled by ``motorcycle_scale`` (images: antialiased bilinear; disparity: the value of the
nearest source pixel times the factor, so invalid pixels stay invalid and edges are not blended).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from zoo.training.data import ZooDataModule, cache_dir, read_each

__all__ = [
    "DATASETS",
    "EXTRA_EVAL_SETS",
    "StereoSample",
    "StereoPairs",
    "StereoAugment",
    "StereoDataModule",
    "read_pfm",
    "write_pfm",
    "read_kitti_disparity",
    "write_kitti_disparity",
    "read_image",
    "read_middlebury_calib",
    "read_sample",
    "sceneflow_samples",
    "kitti_samples",
    "middlebury_samples",
    "eth3d_samples",
    "generate_synthetic",
    "write_motorcycle",
]

DATASETS: tuple[str, ...] = ("sceneflow", "kitti2015", "kitti2012", "middlebury", "eth3d")
#: evaluation sets scored beside a datamodule's own val / test split
EXTRA_EVAL_SETS: tuple[str, ...] = ("motorcycle",)


# ------------------------------------------------------------------------------------------ file formats
def _pfm_header(f: Any, path: Path) -> tuple[int, int, int, str, int]:
    """``(height, width, channels, byte order, data offset)`` of an open PFM file."""
    magic = f.readline().rstrip(b"\r\n")
    if magic not in (b"PF", b"Pf"):
        raise ValueError(f"{path}: not a PFM file (first line {magic[:20]!r}, expected 'PF' colour or 'Pf' grey)")
    tokens: list[bytes] = []
    while len(tokens) < 3:  # width, height, scale; a header may break or comment lines anywhere
        line = f.readline()
        if not line:
            raise ValueError(f"{path}: PFM header ends before 'width height' and 'scale'")
        tokens += line.split(b"#", 1)[0].split()
    try:
        width, height, scale = int(tokens[0]), int(tokens[1]), float(tokens[2])
    except ValueError:
        raise ValueError(f"{path}: bad PFM header {b' '.join(tokens[:3])!r}, expected 'width height' then 'scale'") from None
    if width <= 0 or height <= 0 or scale == 0 or len(tokens) > 3:
        raise ValueError(f"{path}: bad PFM header: width {width}, height {height}, scale {scale} (scale 0 or extra tokens)")
    return height, width, 3 if magic == b"PF" else 1, "<" if scale < 0 else ">", f.tell()


def read_pfm(path: str | Path) -> np.ndarray:
    """A PFM image as float32 ``(H, W)`` (``Pf``) or ``(H, W, 3)`` (``PF``), rows top to bottom.

    PFM stores rows bottom to top; a negative scale means little-endian data, a positive one big-endian."""
    path = Path(path)
    with open(path, "rb") as f:
        height, width, channels, order, _ = _pfm_header(f, path)
        data = np.frombuffer(f.read(), dtype=np.dtype(f"{order}f4"))
    expected = height * width * channels
    if data.size < expected:
        raise ValueError(f"{path}: PFM data has {data.size} floats, the header says {width} x {height} x {channels} = {expected}")
    image = data[:expected].reshape(height, width, channels)[::-1].astype(np.float32)  # bottom-to-top -> top-to-bottom
    return image[..., 0] if channels == 1 else image


def write_pfm(path: str | Path, image: np.ndarray, little_endian: bool = True) -> Path:
    """Write ``(H, W)`` or ``(H, W, 3)`` floats as PFM (scale -1 little-endian, +1 big-endian)."""
    image = np.asarray(image, dtype=np.float32)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] != 3):
        raise ValueError(f"write_pfm {path}: expected (H, W) or (H, W, 3), got shape {image.shape}")
    channels = 1 if image.ndim == 2 else 3
    height, width = image.shape[:2]
    rows = image.reshape(height, width, channels)[::-1]  # PFM rows bottom to top
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    header = f"{'PF' if channels == 3 else 'Pf'}\n{width} {height}\n{-1.0 if little_endian else 1.0}\n".encode()
    path.write_bytes(header + rows.astype("<f4" if little_endian else ">f4").tobytes())
    return path


def read_kitti_disparity(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """KITTI's uint16 PNG: ``(disparity float32 (H, W) in pixels, valid bool (H, W))``; 0 = invalid."""
    path = Path(path)
    with Image.open(path) as img:
        raw = np.array(img)
    if raw.ndim != 2 or raw.dtype not in (np.uint16, np.int32, np.uint8) or img.mode not in ("I;16", "I;16B", "I", "L"):
        raise ValueError(f"{path}: KITTI disparity must be a 16-bit grey PNG, got mode {img.mode} shape {raw.shape}")
    if img.mode == "L":
        raise ValueError(f"{path}: KITTI disparity must be 16-bit (disparity * 256), got an 8-bit grey PNG")
    valid = raw > 0
    return (raw.astype(np.float32) / 256.0) * valid, valid


def write_kitti_disparity(path: str | Path, disparity: np.ndarray, valid: np.ndarray | None = None) -> Path:
    """Write disparity as KITTI's uint16 PNG (``round(d * 256)``, 0 where not ``valid``)."""
    d = np.asarray(disparity, dtype=np.float64)
    keep = np.isfinite(d) & (d > 0) if valid is None else np.asarray(valid, dtype=bool) & np.isfinite(d)
    raw = np.where(keep, np.clip(np.round(d * 256.0), 1, 65535), 0).astype(np.uint16)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(raw).save(path)
    return path


def read_image(path: str | Path) -> np.ndarray:
    """An image file as float32 ``(H, W, 3)`` in [0, 1] (grey repeated, alpha dropped, 16-bit scaled)."""
    path = Path(path)
    with Image.open(path) as img:
        if img.mode in ("I;16", "I;16B", "I"):
            arr = np.array(img).astype(np.float32) / 65535.0
            return np.repeat(arr[..., None], 3, axis=2)
        return np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0


def read_middlebury_calib(path: str | Path) -> dict[str, Any]:
    """Middlebury v3 ``calib.txt``: ``{"cam0": (3, 3) array, "cam1": ..., "doffs": float, "baseline": float,
    "width": int, "height": int, "ndisp": int, "isint": int, "vmin": int, "vmax": int, ...}``."""
    path = Path(path)
    out: dict[str, Any] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if not sep or not key:
            raise ValueError(f"{path}:{n}: expected 'key=value', got {line!r}")
        try:
            if value.startswith("["):
                rows = [r.split() for r in value.strip("[]").split(";")]
                out[key] = np.array(rows, dtype=np.float64)
            elif re.fullmatch(r"[+-]?\d+", value):
                out[key] = int(value)
            else:
                out[key] = float(value)
        except ValueError:
            raise ValueError(f"{path}:{n}: cannot parse {key}={value!r}") from None
    if "ndisp" not in out:
        raise ValueError(f"{path}: no 'ndisp=' line (the disparity range Middlebury's calib.txt gives)")
    return out


# ------------------------------------------------------------------------------------------ layouts
@dataclass(frozen=True)
class StereoSample:
    """The files of one stereo pair. ``disparity_format``: ``pfm`` (``inf`` / ``nan`` = invalid) or ``kitti``
    (uint16 PNG); ``noc``: a non-occlusion file, ``mask`` (255 = non-occluded) or ``kitti`` (a ``disp_noc`` PNG)."""

    name: str
    left: Path
    right: Path
    disparity: Path
    disparity_format: str = "pfm"
    noc: Path | None = None
    noc_format: str = "mask"


def _frames(tree: Path, pass_name: str, pattern: str) -> list[StereoSample]:
    out = []
    for left in sorted(tree.glob(f"frames_{pass_name}/{pattern}/left/*.png")):
        rel = left.relative_to(tree / f"frames_{pass_name}")
        out.append(StereoSample(
            name=f"{tree.name}/{rel.with_suffix('').as_posix()}", left=left, right=left.parent.parent / "right" / left.name,
            disparity=(tree / "disparity" / rel).with_suffix(".pfm"),
        ))
    return out


def sceneflow_samples(root: str | Path, part: str, pass_name: str = "cleanpass") -> list[StereoSample]:
    """SceneFlow pairs under ``root``: ``part="train"`` (FlyingThings3D TRAIN + Monkaa + Driving) or ``"test"``
    (FlyingThings3D TEST)."""
    root = Path(root)
    if part not in ("train", "test") or pass_name not in ("cleanpass", "finalpass"):
        raise ValueError(f"sceneflow_samples: part must be train|test and pass cleanpass|finalpass, got {part!r}, {pass_name!r}")
    if part == "test":
        return _frames(root / "FlyingThings3D", pass_name, "TEST/*/*")
    return (_frames(root / "FlyingThings3D", pass_name, "TRAIN/*/*") + _frames(root / "Monkaa", pass_name, "*")
            + _frames(root / "Driving", pass_name, "*/*/*"))


def kitti_samples(root: str | Path, version: int = 2015) -> list[StereoSample]:
    """The ``training`` pairs of KITTI 2015 (``image_2/3``, ``disp_occ_0`` / ``disp_noc_0``) or 2012
    (``colored_0/1``, ``disp_occ`` / ``disp_noc``); only frame ``_10`` has ground truth."""
    names = {2015: ("image_2", "image_3", "disp_occ_0", "disp_noc_0"), 2012: ("colored_0", "colored_1", "disp_occ", "disp_noc")}
    if version not in names:
        raise ValueError(f"kitti_samples: version must be 2012 or 2015, got {version}")
    left_dir, right_dir, occ_dir, noc_dir = (Path(root) / "training" / n for n in names[version])
    out = []
    for left in sorted(left_dir.glob("*_10.png")):
        noc = noc_dir / left.name
        out.append(StereoSample(left.stem, left, right_dir / left.name, occ_dir / left.name, "kitti",
                                noc if noc.exists() else None, "kitti"))
    return out


def _scene_folder(im0: Path, gt_dir: Path) -> StereoSample:
    noc = gt_dir / "mask0nocc.png"
    return StereoSample(im0.parent.name, im0, im0.parent / "im1.png", gt_dir / "disp0GT.pfm", "pfm", noc if noc.exists() else None)


def middlebury_samples(root: str | Path) -> list[StereoSample]:
    """Every Middlebury v3 scene folder (``im0.png`` + ``disp0GT.pfm``) below ``root``."""
    return [_scene_folder(p, p.parent) for p in sorted(Path(root).rglob("im0.png")) if (p.parent / "disp0GT.pfm").exists()]


def eth3d_samples(root: str | Path) -> list[StereoSample]:
    """ETH3D two-view pairs: ground truth beside the images or in the ``two_view_training_gt`` tree."""
    out = []
    for im0 in sorted(Path(root).rglob("im0.png")):
        gt_dir = im0.parent
        if not (gt_dir / "disp0GT.pfm").exists():
            gt_dir = im0.parent.parent.with_name(im0.parent.parent.name + "_gt") / im0.parent.name
        if (gt_dir / "disp0GT.pfm").exists():
            out.append(_scene_folder(im0, gt_dir))
    return out


def _read_disparity(path: Path, fmt: str) -> tuple[np.ndarray, np.ndarray]:
    if fmt == "kitti":
        return read_kitti_disparity(path)
    disp = read_pfm(path)
    if disp.ndim == 3:  # some writers store disparity in a colour PFM; SceneFlow's is grey
        disp = disp[..., 0]
    valid = np.isfinite(disp)
    return np.where(valid, disp, 0).astype(np.float32), valid


def _read_noc(sample: StereoSample) -> np.ndarray | None:
    if sample.noc is None:
        return None
    if sample.noc_format == "kitti":
        return read_kitti_disparity(sample.noc)[1]
    with Image.open(sample.noc) as img:
        return np.array(img.convert("L")) == 255


def read_sample(sample: StereoSample) -> dict[str, np.ndarray]:
    """``{"left", "right": (H, W, 3) float, "disparity": (H, W), "valid": (H, W) bool[, "noc"]}`` of one pair;
    a ValueError names the file when the sizes disagree."""
    out = {"left": read_image(sample.left), "right": read_image(sample.right)}
    out["disparity"], out["valid"] = _read_disparity(sample.disparity, sample.disparity_format)
    noc = _read_noc(sample)
    if noc is not None:
        out["noc"] = noc & out["valid"]
    shape = out["left"].shape[:2]
    for key, value in out.items():
        if value.shape[:2] != shape:
            path = getattr(sample, {"right": "right", "disparity": "disparity", "valid": "disparity"}.get(key, "noc"))
            raise ValueError(f"{path}: size {value.shape[1]} x {value.shape[0]} differs from {sample.left}'s {shape[1]} x {shape[0]}")
    return out


def _probe(sample: StereoSample) -> tuple[int, int]:
    """The pair's ``(H, W)`` from headers only; raises on a missing, unreadable or size-mismatched file."""
    sizes = {}
    for path in (sample.left, sample.right) + ((sample.noc,) if sample.noc is not None else ()):
        with Image.open(path) as img:
            sizes[path] = img.size[::-1]
    if sample.disparity_format == "pfm":
        with open(sample.disparity, "rb") as f:
            height, width, channels, _, offset = _pfm_header(f, sample.disparity)
        if sample.disparity.stat().st_size < offset + 4 * height * width * channels:
            raise ValueError(f"{sample.disparity}: PFM file shorter than its {width} x {height} x {channels} header")
        sizes[sample.disparity] = (height, width)
    else:
        with Image.open(sample.disparity) as img:
            sizes[sample.disparity] = img.size[::-1]
    shape = sizes[sample.left]
    for path, size in sizes.items():
        if size != shape:
            raise ValueError(f"{path}: size {size[1]} x {size[0]} differs from {sample.left}'s {shape[1]} x {shape[0]}")
    return shape


# ------------------------------------------------------------------------------------------ augmentation
class StereoAugment:
    """Training augmentation of a ``(left, right, disparity, valid[, noc])`` item (see the module docstring).

    Args:
        crop_size: ``(height, width)`` of the random crop; a smaller image is zero-padded (padding invalid).
        brightness, contrast, saturation, hue: colour-jitter ranges (torchvision's ``ColorJitter``).
        asymmetric_prob: chance that the two views get independent jitter.
        eraser_prob: chance of 1-2 mean-colour rectangles in the right view; ``eraser_size`` their side range
            as a fraction of the crop's shorter side.
    """

    def __init__(
        self,
        crop_size: tuple[int, int] = (320, 736),
        brightness: float = 0.4,
        contrast: float = 0.4,
        saturation: float = 0.4,
        hue: float = 0.5 / math.pi,
        asymmetric_prob: float = 0.2,
        eraser_prob: float = 0.5,
        eraser_size: tuple[float, float] = (0.15, 0.3),
    ) -> None:
        from torchvision.transforms import ColorJitter

        if len(crop_size) != 2 or min(crop_size) < 1:
            raise ValueError(f"StereoAugment: crop_size must be (height, width) >= 1, got {crop_size}")
        for name, p in (("asymmetric_prob", asymmetric_prob), ("eraser_prob", eraser_prob)):
            if not 0 <= p <= 1:
                raise ValueError(f"StereoAugment: {name} must be in [0, 1], got {p}")
        if not 0 < eraser_size[0] <= eraser_size[1] <= 1:
            raise ValueError(f"StereoAugment: eraser_size must be 0 < low <= high <= 1, got {eraser_size}")
        self.crop_size = (int(crop_size[0]), int(crop_size[1]))
        self.jitter = ColorJitter(brightness, contrast, saturation, hue)
        self.asymmetric_prob, self.eraser_prob, self.eraser_size = asymmetric_prob, eraser_prob, tuple(eraser_size)

    def crop(self, item: dict[str, Tensor]) -> dict[str, Tensor]:
        height, width = item["left"].shape[-2:]
        ch, cw = self.crop_size
        pad_h, pad_w = max(0, ch - height), max(0, cw - width)
        if pad_h or pad_w:
            item = {k: F.pad(v, (0, pad_w, 0, pad_h)) for k, v in item.items()}  # bool pads with False
            height, width = height + pad_h, width + pad_w
        y0 = int(torch.randint(0, height - ch + 1, ()))
        x0 = int(torch.randint(0, width - cw + 1, ()))
        return {k: v[..., y0 : y0 + ch, x0 : x0 + cw] for k, v in item.items()}

    def colour(self, left: Tensor, right: Tensor) -> tuple[Tensor, Tensor]:
        if float(torch.rand(())) < self.asymmetric_prob:
            return self.jitter(left), self.jitter(right)
        both = self.jitter(torch.cat([left, right], dim=-1))  # (3, H, 2W): one draw for both views
        return both[..., : left.shape[-1]], both[..., left.shape[-1] :]

    def erase(self, right: Tensor) -> Tensor:
        if float(torch.rand(())) >= self.eraser_prob:
            return right
        right = right.clone()
        height, width = right.shape[-2:]
        mean = right.mean(dim=(-2, -1), keepdim=True)  # (3, 1, 1)
        side = min(height, width)
        lo, hi = (max(1, int(f * side)) for f in self.eraser_size)
        for _ in range(int(torch.randint(1, 3, ()))):
            dy, dx = (int(torch.randint(lo, hi + 1, ())) for _ in range(2))
            y0, x0 = int(torch.randint(0, max(1, height - dy + 1), ())), int(torch.randint(0, max(1, width - dx + 1), ()))
            right[:, y0 : y0 + dy, x0 : x0 + dx] = mean
        return right

    def __call__(self, item: dict[str, Tensor]) -> dict[str, Tensor]:
        item = self.crop(item)
        item["left"], item["right"] = self.colour(item["left"], item["right"])
        item["right"] = self.erase(item["right"])
        return item


# ------------------------------------------------------------------------------------------ dataset
def _resize_nearest(array: Tensor, size: tuple[int, int]) -> Tensor:
    """``(C, H, W)`` sampled at the nearest source pixel of each target pixel centre."""
    height, width = array.shape[-2:]
    ys = ((torch.arange(size[0]) + 0.5) * height / size[0]).long().clamp(max=height - 1)
    xs = ((torch.arange(size[1]) + 0.5) * width / size[1]).long().clamp(max=width - 1)
    return array[:, ys][:, :, xs]


class StereoPairs(Dataset):
    """Stereo pairs read from their files (:func:`read_sample`), as tensors.

    Args:
        samples: the pairs (corrupt ones already skipped: build with :meth:`checked`).
        augment: training augmentation, or ``None``.
        max_disp: ground truth at or above it becomes invalid (training filter); ``None`` keeps all.
        scale: resize factor applied on reading (images bilinear, antialiased; disparity nearest, times ``scale``).
    """

    def __init__(
        self, samples: Sequence[StereoSample], augment: StereoAugment | None = None, max_disp: float | None = None,
        scale: float = 1.0,
    ) -> None:
        if scale <= 0 or (max_disp is not None and max_disp <= 0):
            raise ValueError(f"StereoPairs: need scale > 0 and max_disp None or > 0, got {scale}, {max_disp}")
        self.samples, self.augment, self.max_disp, self.scale = list(samples), augment, max_disp, scale

    @classmethod
    def checked(cls, samples: Sequence[StereoSample], what: str, **kwargs: Any) -> StereoPairs:
        """The pairs whose files open and agree in size; the others skipped with one counted warning."""
        good = read_each(samples, _probe, what=what, name=lambda s: s.name, require_one=False)
        return cls([s for s, _ in good], **kwargs)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        raw = read_sample(self.samples[index])
        item = {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in raw.items()}
        item = {k: (v.permute(2, 0, 1) if v.dim() == 3 else v[None]) for k, v in item.items()}  # (C, H, W)
        if self.scale != 1.0:
            height, width = item["left"].shape[-2:]
            size = (max(1, round(height * self.scale)), max(1, round(width * self.scale)))
            for key in ("left", "right"):
                item[key] = F.interpolate(item[key][None], size=size, mode="bilinear", antialias=True, align_corners=False)[0]
            for key in ("disparity", "valid", "noc"):
                if key in item:
                    item[key] = _resize_nearest(item[key], size)
            item["disparity"] = item["disparity"] * (size[1] / width)
        if self.augment is not None:
            item = self.augment(item)
        valid = item["valid"] & torch.isfinite(item["disparity"]) & (item["disparity"] > 0)
        if self.max_disp is not None:
            valid &= item["disparity"] < self.max_disp
        item["valid"] = valid
        item["disparity"] = torch.where(valid, item["disparity"], torch.zeros(()))
        if "noc" in item:
            item["noc"] = item["noc"] & valid
        item["left"], item["right"] = item["left"].clamp(0, 1).contiguous(), item["right"].clamp(0, 1).contiguous()
        return item


# ------------------------------------------------------------------------------------------ synthetic data
def _texture(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """``(height, width, 3)`` in [0, 1]: random colours over multi-octave value noise plus stripes."""
    out = np.zeros((height, width, 3), dtype=np.float64)
    for cell, weight in ((32, 0.35), (12, 0.3), (4, 0.2), (1.5, 0.15)):  # noise cell size in pixels
        coarse = torch.from_numpy(rng.random((1, 3, max(2, round(height / cell)), max(2, round(width / cell)))))
        out += weight * F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)[0].permute(1, 2, 0).numpy()
    yy, xx = np.mgrid[0:height, 0:width]
    angle, freq = rng.uniform(0, np.pi), rng.uniform(0.15, 0.6)
    stripes = 0.5 + 0.5 * np.sin(freq * (np.cos(angle) * xx + np.sin(angle) * yy))
    out = 0.7 * out + 0.3 * stripes[..., None] * rng.random(3)
    return np.clip((out - out.min()) / max(1e-6, np.ptp(out)), 0, 1)


@dataclass
class _Layer:
    """A textured plane ``d(x, y) = a x + b y + c`` (left-image coordinates) inside a shape."""

    a: float
    b: float
    c: float
    texture: np.ndarray  # (H, W + margin, 3), left-image x from 0
    inside: Callable[[np.ndarray, np.ndarray], np.ndarray]  # (x, y) -> bool, left-image coordinates


def _plane(rng: np.random.Generator, lo: float, hi: float, width: int, height: int, slope: float) -> tuple[float, float, float]:
    """A plane whose disparity stays within [lo, hi] over the image."""
    a, b = rng.uniform(-slope, slope), rng.uniform(-slope, slope)
    span = abs(a) * width + abs(b) * height
    if span >= hi - lo:
        a, b = a * 0.5 * (hi - lo) / span, b * 0.5 * (hi - lo) / span
        span = abs(a) * width + abs(b) * height
    low = rng.uniform(lo, hi - span)  # the plane's minimum over the image
    c = low - min(0.0, a * width) - min(0.0, b * height)
    return a, b, c


def _shape(rng: np.random.Generator, width: int, height: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    cx, cy = rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height
    rx, ry = rng.uniform(0.08, 0.3) * width, rng.uniform(0.08, 0.3) * height
    theta = rng.uniform(0, np.pi)
    kind = rng.integers(3)

    def inside(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        u = (np.cos(theta) * (x - cx) + np.sin(theta) * (y - cy)) / rx
        v = (-np.sin(theta) * (x - cx) + np.cos(theta) * (y - cy)) / ry
        if kind == 0:
            return u**2 + v**2 <= 1  # ellipse
        if kind == 1:
            return (np.abs(u) <= 1) & (np.abs(v) <= 1)  # rotated rectangle
        return (v >= -1) & (v <= 1) & (np.abs(u) <= (1 - v) / 2)  # triangle

    return inside


def _sample_row(texture: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Linear interpolation of ``texture (H, W', 3)`` at float column ``x (H, W)`` of each row."""
    width = texture.shape[1]
    x = np.clip(x, 0, width - 1)
    x0 = np.floor(x).astype(np.int64)
    x1 = np.minimum(x0 + 1, width - 1)
    w = (x - x0)[..., None]
    rows = np.arange(texture.shape[0])[:, None]
    return (1 - w) * texture[rows, x0] + w * texture[rows, x1]


def render_pair(
    rng: np.random.Generator, height: int, width: int, max_disp: float, num_shapes: int = 4, slope: float = 0.05
) -> dict[str, np.ndarray]:
    """One synthetic scene: ``{"left", "right": (H, W, 3) in [0, 1], "disparity": (H, W), "occluded": (H, W) bool}``.

    Layers (a background plane and ``num_shapes`` shapes, nearer ones with larger disparity) are rendered into
    each view by inverting its plane equation: the left view at ``x``, the right view at the left-image
    position ``x = (x_r + b y + c) / (1 - a)`` that maps to ``x_r``; the nearest covering layer wins (z-buffer).
    A left pixel is occluded when the right view shows a nearer layer at ``x - d``, or ``x - d`` leaves the image.
    """
    margin = int(math.ceil(max_disp)) + 2
    bounds = np.linspace(1.0, max_disp * 0.95, num_shapes + 2)  # depth bands: background first
    layers = [_Layer(*_plane(rng, bounds[0], bounds[1], width, height, slope * 0.5), _texture(rng, height, width + margin),
                     lambda x, y: np.ones(np.shape(x), dtype=bool))]
    for k in range(num_shapes):
        a, b, c = _plane(rng, bounds[k + 1], bounds[k + 2], width, height, slope)
        layers.append(_Layer(a, b, c, _texture(rng, height, width + margin), _shape(rng, width, height)))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)

    def composite(x_of: Callable[[_Layer], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        image, disp = np.zeros((height, width, 3)), np.full((height, width), -np.inf)
        for layer in layers:
            x = x_of(layer)  # (H, W) left-image column of this layer at each target pixel
            d = layer.a * x + layer.b * yy + layer.c
            hit = layer.inside(x, yy) & (d > disp)
            image[hit] = _sample_row(layer.texture, x)[hit]
            disp[hit] = d[hit]
        return image, disp

    left, disp = composite(lambda layer: xx)
    right, disp_right = composite(lambda layer: (xx + layer.b * yy + layer.c) / (1 - layer.a))
    # occlusion: what the right view shows at x - d (linearly interpolated z-buffer) is nearer than d
    xr = xx - disp
    seen = _sample_row(disp_right[..., None], xr)[..., 0]
    occluded = (xr < 0) | (xr > width - 1) | (seen > disp + 0.5)
    noise = lambda: rng.normal(0, 0.01, (height, width, 3))  # sensor noise, independent per view
    return {"left": np.clip(left + noise(), 0, 1), "right": np.clip(right + noise(), 0, 1),
            "disparity": disp.astype(np.float32), "occluded": occluded}


def _write_png(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)).save(path)


def generate_synthetic(
    root: str | Path,
    num_train: int = 64,
    num_test: int = 16,
    size: tuple[int, int] = (128, 192),
    max_disp: float = 32.0,
    num_shapes: int = 4,
    frames_per_sequence: int = 10,
    seed: int = 0,
) -> Path:
    """Write synthetic pairs in the FlyingThings3D layout under ``root`` (``root/FlyingThings3D/...``):
    ``frames_cleanpass/{TRAIN,TEST}/A/<seq>/{left,right}/<frame>.png`` and ``disparity/.../left/<frame>.pfm``
    (little-endian, as SceneFlow's). Frames are numbered from 0006 as FlyingThings3D's. Returns ``root``."""
    if num_train < 0 or num_test < 0 or min(size) < 8 or max_disp <= 2 or frames_per_sequence < 1:
        raise ValueError(
            f"generate_synthetic: need num_train, num_test >= 0, size >= 8, max_disp > 2, frames_per_sequence >= 1; got "
            f"{num_train}, {num_test}, {size}, {max_disp}, {frames_per_sequence}"
        )
    root = Path(root)
    tree = root / "FlyingThings3D"
    for part, count, part_seed in (("TRAIN", num_train, seed), ("TEST", num_test, seed + 10_007)):
        rng = np.random.default_rng(part_seed)
        for i in range(count):
            seq, frame = f"{i // frames_per_sequence:04d}", f"{6 + i % frames_per_sequence:04d}"
            pair = render_pair(rng, size[0], size[1], max_disp, num_shapes)
            rel = Path(part) / "A" / seq
            _write_png(tree / "frames_cleanpass" / rel / "left" / f"{frame}.png", pair["left"])
            _write_png(tree / "frames_cleanpass" / rel / "right" / f"{frame}.png", pair["right"])
            write_pfm(tree / "disparity" / rel / "left" / f"{frame}.pfm", pair["disparity"])
    return root


def write_motorcycle(root: str | Path) -> Path:
    """Write scikit-image's Middlebury 2014 "Motorcycle" pair as a Middlebury folder ``root/Motorcycle``
    (``im0.png``, ``im1.png``, ``disp0GT.pfm`` with ``inf`` = invalid). Returns ``root``."""
    try:
        from skimage.data import stereo_motorcycle
    except ImportError as err:
        raise ImportError("the Motorcycle evaluation pair needs scikit-image (pip install scikit-image)") from err
    left, right, disp = stereo_motorcycle()
    folder = Path(root) / "Motorcycle"
    _write_png(folder / "im0.png", left / 255.0)
    _write_png(folder / "im1.png", right / 255.0)
    write_pfm(folder / "disp0GT.pfm", np.where(np.isfinite(disp), disp, np.inf).astype(np.float32))
    return Path(root)


# ------------------------------------------------------------------------------------------ datamodule
def _collate(items: list[dict[str, Tensor]]) -> dict[str, Tensor]:
    keys = set(items[0])
    if any(set(item) != keys for item in items):
        raise ValueError(f"stereo batch: items disagree in keys ({sorted(keys)} vs others); mixed datasets with and without 'noc'")
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


class StereoDataModule(ZooDataModule):
    """Stereo pairs of one benchmark (``path`` + ``dataset``), or the synthetic FlyingThings3D-format default.

    Args:
        path: the dataset root in its real layout (see the module docstring); ``None`` = synthetic.
        dataset: one of :data:`DATASETS` (ignored for the synthetic default, which is ``sceneflow``).
        pass_name: SceneFlow's ``cleanpass`` or ``finalpass``.
        crop_size: training crop ``(height, width)``; multiples of 32 for MatchStereo.
        max_disp: training ground truth at or above it is invalid.
        asymmetric_prob, eraser_prob: :class:`StereoAugment`'s.
        colour_jitter: jitter brightness, contrast, saturation and hue (:class:`StereoAugment`'s ranges); ``False``
            keeps the colours (the synthetic views share a camera: the CPU demo learns faster without it).
        val_size: SceneFlow's validation pairs (evenly spaced over ``TEST``).
        holdout_every: KITTI / Middlebury / ETH3D: every n-th pair is val / test.
        eval_scale: resize factor of the evaluated pairs (Middlebury at half or quarter size, ...).
        extra_eval: sets scored beside val / test (each its own loader): ``("motorcycle",)`` or ``()``.
        motorcycle_scale: the factor the Motorcycle pair is evaluated at (its disparity scaled too).
        synthetic_train, synthetic_test, synthetic_size, synthetic_max_disp: the generator's.
        batch_size, num_workers, limit: :class:`~zoo.training.data.ZooDataModule`'s (evaluation batches hold
            one pair, as the benchmark images differ in size).
    """

    def __init__(
        self,
        path: str | None = None,
        dataset: str = "sceneflow",
        pass_name: str = "cleanpass",
        crop_size: tuple[int, int] = (320, 736),
        max_disp: float = 192.0,
        asymmetric_prob: float = 0.2,
        eraser_prob: float = 0.5,
        colour_jitter: bool = True,
        val_size: int = 200,
        holdout_every: int = 5,
        eval_scale: float = 1.0,
        extra_eval: tuple[str, ...] = ("motorcycle",),
        motorcycle_scale: float = 0.5,
        synthetic_train: int = 64,
        synthetic_test: int = 16,
        synthetic_size: tuple[int, int] = (128, 192),
        synthetic_max_disp: float = 32.0,
        batch_size: int = 8,
        num_workers: int = 0,
        limit: int | None = None,
    ) -> None:
        super().__init__(path=path, batch_size=batch_size, num_workers=num_workers, limit=limit)
        if dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")
        unknown = [name for name in extra_eval if name not in EXTRA_EVAL_SETS]
        if unknown:
            raise ValueError(f"extra_eval: unknown sets {unknown}; known: {EXTRA_EVAL_SETS}")
        if val_size < 1 or holdout_every < 1 or eval_scale <= 0 or motorcycle_scale <= 0 or max_disp <= 0:
            raise ValueError(
                "need val_size >= 1, holdout_every >= 1, eval_scale > 0, motorcycle_scale > 0, max_disp > 0; got "
                f"{val_size}, {holdout_every}, {eval_scale}, {motorcycle_scale}, {max_disp}"
            )
        no_jitter = {} if colour_jitter else dict(brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
        self.augment = StereoAugment(tuple(crop_size), asymmetric_prob=asymmetric_prob, eraser_prob=eraser_prob, **no_jitter)
        self.dataset_name, self.pass_name, self.max_disp = dataset, pass_name, max_disp
        self.val_size, self.holdout_every, self.eval_scale = val_size, holdout_every, eval_scale
        self.extra_eval, self.motorcycle_scale = tuple(extra_eval), motorcycle_scale
        self.synthetic = dict(num_train=synthetic_train, num_test=synthetic_test, size=tuple(synthetic_size),
                              max_disp=synthetic_max_disp)
        self.extra_datasets: dict[str, Dataset] = {}

    @property
    def eval_sets(self) -> tuple[str, ...]:
        """The evaluation loaders of ``val`` and ``test`` in order: ``""`` (the split itself), then :attr:`extra_eval`."""
        return ("",) + self.extra_eval

    def load_default(self) -> dict[str, Dataset]:
        s = self.synthetic
        key = f"synthetic_ft3d_v1_{s['num_train']}_{s['num_test']}_{s['size'][0]}x{s['size'][1]}_{s['max_disp']:g}"
        root = cache_dir("vision", "stereo", key)
        if not (root / "complete").exists():
            generate_synthetic(root, **s)
            (root / "complete").write_text("")  # written last: an interrupted generation is redone
        self.dataset_name = "sceneflow"
        return self.load_path(root)

    def load_path(self, path: Path) -> dict[str, Dataset]:
        train_kw = dict(augment=self.augment, max_disp=self.max_disp)
        eval_kw = dict(scale=self.eval_scale)
        what = f"{self.dataset_name} pairs under {path}"
        if self.dataset_name == "sceneflow":
            train = StereoPairs.checked(sceneflow_samples(path, "train", self.pass_name), what, **train_kw)
            test = StereoPairs.checked(sceneflow_samples(path, "test", self.pass_name), what, **eval_kw)
            step = max(1, len(test) // self.val_size)
            val = StereoPairs(test.samples[::step][: self.val_size], **eval_kw)
        else:
            finder = {"kitti2015": lambda p: kitti_samples(p, 2015), "kitti2012": lambda p: kitti_samples(p, 2012),
                      "middlebury": middlebury_samples, "eth3d": eth3d_samples}[self.dataset_name]
            pairs = StereoPairs.checked(finder(path), what)
            held = [s for i, s in enumerate(pairs.samples) if i % self.holdout_every == 0]
            train = StereoPairs([s for i, s in enumerate(pairs.samples) if i % self.holdout_every], **train_kw)
            val = test = StereoPairs(held, **eval_kw)
        if not len(train) + len(test):
            raise ValueError(f"StereoDataModule: no {self.dataset_name} pairs with ground truth under {path}")
        return {"train": train, "val": val, "test": test}

    def setup(self, stage: str | None = None) -> None:
        super().setup(stage)
        if "motorcycle" in self.extra_eval and "motorcycle" not in self.extra_datasets:
            root = cache_dir("vision", "stereo", "middlebury2014_motorcycle_skimage")
            if not (root / "Motorcycle" / "disp0GT.pfm").exists():
                write_motorcycle(root)
            self.extra_datasets["motorcycle"] = StereoPairs(middlebury_samples(root), scale=self.motorcycle_scale)

    def collate_fn(self) -> Callable[[list[Any]], Any]:
        return _collate

    def _eval_loaders(self, split: str) -> list[DataLoader]:
        datasets = [self.dataset(split)] + [self.extra_datasets[name] for name in self.extra_eval]
        for name, ds in zip(self.eval_sets, datasets):
            if len(ds) == 0:
                raise ValueError(f"StereoDataModule: the {split} set {name or self.dataset_name!r} of {self.path or 'the default data'} is empty")
        return [DataLoader(ds, batch_size=1, shuffle=False, num_workers=self.num_workers, collate_fn=_collate) for ds in datasets]

    def val_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("val")

    def test_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

    def predict_dataloader(self) -> list[DataLoader]:
        return self._eval_loaders("test")

