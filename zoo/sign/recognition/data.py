"""Sign recognition data: Holistic landmark files, WLASL / GISLR / folder indexes, a synthetic-sign generator.

Landmark files (one video each, read by :func:`read_landmarks`; the layout is :data:`~.encoding.LAYOUT`):

==================  ===============================================================================
``<name>.npy``      float ``(T, 75 | 543, 3)`` (or flattened ``(T, L * 3)``), NaN = not detected; in the
                    zoo's part order (pose, left hand, right hand, face) or, with ``layout="gislr"``,
                    Kaggle's (face, left hand, pose, right hand)
``<name>.parquet``  the Kaggle GISLR layout: one row per (frame, landmark), columns ``frame, type,
                    landmark_index, x, y, z`` (``type`` in face / left_hand / pose / right_hand)
==================  ===============================================================================

Datasets (``SignDataModule(path=..., format="auto")``):

==========  ====================================================================================
``wlasl``   ``WLASL_v0.3.json`` (a list of ``{"gloss", "instances": [{"video_id", "split",
            "frame_start", "frame_end", "signer_id", ...}]}``) with a folder of landmark files named
            ``<video_id>.npy`` / ``.parquet`` (``landmarks_dir``, default ``landmarks/`` beside the
            json). WLASL-K (100 / 300 / 1000 / 2000) = the first K glosses (``num_glosses``).
            ``frame_start`` is 1-based, ``frame_end`` inclusive, -1 = to the end. Splits: the json's
            (``split="json"``) or re-drawn by ``signer_id`` (``split="signer"``: unseen test signers)
``gislr``   Kaggle GISLR: ``train.csv`` (``path, participant_id, sequence_id, sign``) + its parquet
            files; split by ``participant_id`` (unseen test signers)
``folder``  ``<gloss>/<video_id>.npy|.parquet`` (BdSLW-style), or ``{train,val,test}/<gloss>/...``;
            without split folders a deterministic stratified split per gloss
==========  ====================================================================================

Missing or corrupt landmark files are skipped with one counted warning
(:func:`zoo.training.data.read_each`). The offline default (``path=None``) is
:func:`generate_synthetic_signs`: synthetic signs written as ``.npy`` landmark files plus a
``WLASL_v0.3.json`` whose splits are by signer, read back through the WLASL reader. Per gloss it draws a
characteristic hand shape (finger curls and spread, possibly changing during the sign), a wrist
trajectory in the signing space and whether the other hand joins; per signer, a body size, a position in
the frame, a camera tilt, a speed, a hand size, shoulder jitter and body sway; per repetition, small
changes of path and timing, landmark noise and missed hand detections.

Augmentation (training only, on the raw landmarks before encoding): rotation about the shoulder
midpoint, scaling, shifting, temporal resampling (speed) and dropped frames.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from zoo.training.data import SPLITS, ZooDataModule, cache_dir, read_each

from .encoding import FACE, LEFT_HAND, METHODS, NUM_BODY_HANDS, NUM_HOLISTIC, POSE, RIGHT_HAND, check_landmarks, encode

__all__ = [
    "Augment",
    "GISLR_TYPES",
    "LandmarkSequenceDataset",
    "SignDataModule",
    "SignExample",
    "collate_signs",
    "detect_format",
    "generate_synthetic_signs",
    "read_folder_index",
    "read_gislr_index",
    "read_gislr_parquet",
    "read_landmark_npy",
    "read_landmarks",
    "read_wlasl_index",
    "signer_splits",
]

#: GISLR's part order and sizes, and where each part goes in the zoo layout
GISLR_TYPES = {"face": (468, FACE), "left_hand": (21, LEFT_HAND), "pose": (33, POSE), "right_hand": (21, RIGHT_HAND)}
LANDMARK_SUFFIXES = (".npy", ".parquet")
FORMATS = ("auto", "wlasl", "gislr", "folder")


# ----------------------------------------------------------------------------------------- readers


def _from_gislr_order(arr: np.ndarray) -> np.ndarray:
    """``(T, 543, 3)`` in GISLR's part order -> the zoo layout."""
    out = np.empty_like(arr)
    start = 0
    for size, target in GISLR_TYPES.values():
        out[:, target] = arr[:, start : start + size]
        start += size
    return out


def read_landmark_npy(path: str | Path, layout: str = "holistic") -> np.ndarray:
    """A ``.npy`` landmark file as float32 ``(T, 75 | 543, 3)`` in the zoo layout.

    ``layout="gislr"`` reads 543-landmark arrays stored in GISLR's part order. Never unpickles.
    """
    if layout not in ("holistic", "gislr"):
        raise ValueError(f"read_landmark_npy: layout must be 'holistic' or 'gislr', got {layout!r}")
    arr = np.load(path, allow_pickle=False)
    if arr.ndim == 2 and arr.shape[1] in (NUM_BODY_HANDS * 3, NUM_HOLISTIC * 3):
        arr = arr.reshape(arr.shape[0], -1, 3)
    arr = check_landmarks(arr, str(path)).astype(np.float32)
    if layout == "gislr":
        if arr.shape[1] != NUM_HOLISTIC:
            raise ValueError(f"{path}: layout='gislr' needs all {NUM_HOLISTIC} landmarks, got {arr.shape[1]}")
        arr = _from_gislr_order(arr)
    return arr


def read_gislr_parquet(path: str | Path) -> np.ndarray:
    """A Kaggle GISLR parquet file (``frame, type, landmark_index, x, y, z``) as float32 ``(T, 543, 3)``.

    Frames are the file's distinct ``frame`` values in order; landmarks absent from a frame are NaN.
    """
    import pandas as pd

    df = pd.read_parquet(path, columns=None)
    need = ["frame", "type", "landmark_index", "x", "y", "z"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"{path}: a GISLR landmark file needs columns {need}; missing {missing}")
    if len(df) == 0:
        raise ValueError(f"{path}: the GISLR landmark file has no rows")
    unknown = sorted(set(df["type"].astype(str)) - set(GISLR_TYPES))
    if unknown:
        raise ValueError(f"{path}: unknown landmark types {unknown}; GISLR has {list(GISLR_TYPES)}")
    frames, frame_idx = np.unique(df["frame"].to_numpy(), return_inverse=True)
    out = np.full((len(frames), NUM_HOLISTIC, 3), np.nan, dtype=np.float32)
    types = df["type"].astype(str).to_numpy()
    index = df["landmark_index"].to_numpy()
    xyz = df[["x", "y", "z"]].to_numpy(dtype=np.float32)  # (N, 3)
    for name, (size, target) in GISLR_TYPES.items():
        rows = types == name
        idx = index[rows]
        if len(idx) and (idx.min() < 0 or idx.max() >= size):
            raise ValueError(f"{path}: {name} landmark_index must lie in [0, {size}), got {int(idx.min())}..{int(idx.max())}")
        out[frame_idx[rows], target.start + idx.astype(np.int64)] = xyz[rows]
    return out


def read_landmarks(path: str | Path, layout: str = "holistic") -> np.ndarray:
    """One video's landmarks from ``.npy`` or GISLR ``.parquet``, float32 ``(T, 75 | 543, 3)``."""
    path = Path(path)
    if path.suffix == ".npy":
        return read_landmark_npy(path, layout)
    if path.suffix == ".parquet":
        return read_gislr_parquet(path)
    raise ValueError(f"{path}: landmark files are {LANDMARK_SUFFIXES}, got {path.suffix!r}")


@dataclass(frozen=True)
class SignExample:
    """One video of the index: its landmark file, class, split, signer and frame range (1-based, inclusive)."""

    path: Path
    label: int
    split: str
    signer: str
    frame_start: int = 1
    frame_end: int = -1


def _wlasl_json(path: Path) -> Path:
    if path.is_file():
        return path
    found = sorted(path.glob("WLASL*.json"))
    if not found:
        raise ValueError(f"{path}: no WLASL json (WLASL_v0.3.json) in this folder")
    return found[-1]


def _landmark_file(folder: Path, stem: str) -> Path:
    for suffix in LANDMARK_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    return folder / f"{stem}.npy"  # missing: read_each reports it


def read_wlasl_index(
    path: str | Path, landmarks_dir: str | Path | None = None, num_glosses: int | None = None
) -> tuple[list[SignExample], list[str]]:
    """WLASL's json (file, or the folder holding it) -> examples and gloss names (the first ``num_glosses``)."""
    json_path = _wlasl_json(Path(path))
    try:
        data = json.loads(json_path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{json_path}: not a readable WLASL json ({err})") from err
    if not isinstance(data, list) or not all(isinstance(e, dict) and "gloss" in e and "instances" in e for e in data):
        raise ValueError(f"{json_path}: WLASL json must be a list of {{'gloss', 'instances'}} entries")
    if num_glosses is not None:
        if not 1 <= num_glosses <= len(data):
            raise ValueError(f"{json_path}: num_glosses must lie in [1, {len(data)}], got {num_glosses}")
        data = data[:num_glosses]
    folder = Path(landmarks_dir) if landmarks_dir is not None else json_path.parent / "landmarks"
    examples = []
    for label, entry in enumerate(data):
        for k, inst in enumerate(entry["instances"]):
            if "video_id" not in inst or "split" not in inst:
                raise ValueError(f"{json_path}: gloss {entry['gloss']!r} instance {k} lacks 'video_id' or 'split'")
            split = {"validation": "val", "valid": "val"}.get(inst["split"], inst["split"])
            if split not in SPLITS:
                raise ValueError(f"{json_path}: instance {inst['video_id']} has split {inst['split']!r}, expected train/val/test")
            examples.append(
                SignExample(
                    _landmark_file(folder, str(inst["video_id"])), label, split, str(inst.get("signer_id", "")),
                    int(inst.get("frame_start", 1)), int(inst.get("frame_end", -1)),
                )
            )
    return examples, [str(e["gloss"]) for e in data]


def signer_splits(signers: Sequence[str], val_fraction: float, test_fraction: float, seed: int) -> dict[str, str]:
    """Assign whole signers to train / val / test (deterministic in ``seed``), so test signers are unseen."""
    unique = sorted(set(signers))
    if len(unique) < 3:
        raise ValueError(f"a signer split needs at least 3 signers, got {len(unique)}: {unique}")
    order = [unique[i] for i in np.random.default_rng(seed).permutation(len(unique))]
    n_test = max(1, int(round(test_fraction * len(unique))))
    n_val = max(1, int(round(val_fraction * len(unique))))
    n_val = min(n_val, len(unique) - n_test - 1)
    return {s: "test" if i < n_test else "val" if i < n_test + n_val else "train" for i, s in enumerate(order)}


def read_gislr_index(
    root: str | Path, val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[SignExample], list[str]]:
    """Kaggle GISLR ``train.csv`` (``path, participant_id, sequence_id, sign``) -> examples split by participant."""
    import pandas as pd

    root = Path(root)
    csv = root / "train.csv"
    try:
        df = pd.read_csv(csv)
    except (OSError, pd.errors.ParserError) as err:
        raise ValueError(f"{csv}: not a readable GISLR index ({err})") from err
    missing = [c for c in ("path", "participant_id", "sign") if c not in df.columns]
    if missing:
        raise ValueError(f"{csv}: GISLR train.csv needs columns path, participant_id, sign; missing {missing}")
    names = sorted(df["sign"].astype(str).unique())
    label = {n: i for i, n in enumerate(names)}
    split = signer_splits(df["participant_id"].astype(str).tolist(), val_fraction, test_fraction, seed)
    examples = [
        SignExample(root / str(p), label[str(s)], split[str(pid)], str(pid))
        for p, pid, s in zip(df["path"], df["participant_id"], df["sign"])
    ]
    return examples, names


def _stable_fraction(text: str, seed: int) -> float:
    digest = hashlib.sha1(f"{seed}:{text}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def read_folder_index(
    root: str | Path, val_fraction: float, test_fraction: float, seed: int
) -> tuple[list[SignExample], list[str]]:
    """``<gloss>/<video>.npy|.parquet`` (split per gloss by a stable hash) or ``{train,val,test}/<gloss>/...``."""
    root = Path(root)
    split_dirs = [s for s in SPLITS if (root / s).is_dir()]
    if split_dirs and set(split_dirs) != set(SPLITS):
        raise ValueError(f"{root}: has split folders {split_dirs}; give all of train/, val/, test/ or none")
    bases = {s: root / s for s in SPLITS} if split_dirs else {"": root}
    names = sorted(p.name for p in next(iter(bases.values())).iterdir() if p.is_dir())
    if not names:
        raise ValueError(f"{root}: no gloss folders (<gloss>/<video_id>.npy)")
    label = {n: i for i, n in enumerate(names)}
    examples = []
    for split, base in bases.items():
        for gloss_dir in sorted(p for p in base.iterdir() if p.is_dir()):
            if gloss_dir.name not in label:
                raise ValueError(f"{gloss_dir}: gloss {gloss_dir.name!r} is not among the train split's glosses")
            for f in sorted(p for p in gloss_dir.iterdir() if p.suffix in LANDMARK_SUFFIXES):
                if split:
                    s = split
                else:
                    u = _stable_fraction(f"{gloss_dir.name}/{f.name}", seed)
                    s = "test" if u < test_fraction else "val" if u < test_fraction + val_fraction else "train"
                examples.append(SignExample(f, label[gloss_dir.name], s, ""))
    if not examples:
        raise ValueError(f"{root}: no landmark files ({', '.join(LANDMARK_SUFFIXES)}) in the gloss folders")
    return examples, names


def detect_format(path: str | Path) -> str:
    """``wlasl`` (a WLASL json, or a folder with one), ``gislr`` (a folder with ``train.csv``) or ``folder``."""
    path = Path(path)
    if path.is_file():
        if path.suffix == ".json":
            return "wlasl"
        raise ValueError(f"{path}: a sign dataset path is a WLASL json or a folder, got a {path.suffix or 'plain'} file")
    if any(path.glob("WLASL*.json")):
        return "wlasl"
    if (path / "train.csv").exists():
        return "gislr"
    return "folder"


# ----------------------------------------------------------------------------------------- augmentation


@dataclass(frozen=True)
class Augment:
    """Training augmentation of raw landmarks: rotation (degrees, about the shoulder midpoint), scale
    range, shift (image units), speed range (temporal resampling) and the probability of dropping a frame."""

    rotation: float = 10.0
    scale: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.05
    speed: tuple[float, float] = (0.8, 1.25)
    drop_frames: float = 0.05

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``x (T, L, 3)`` -> augmented ``(T', L, 3)``."""
        x = x.astype(np.float32, copy=True)
        centre = np.nanmedian(x[:, POSE][:, [11, 12], :2].reshape(-1, 2), axis=0)  # (2,)
        if not np.isfinite(centre).all():
            centre = np.zeros(2, dtype=np.float32)
        a = np.deg2rad(rng.uniform(-self.rotation, self.rotation))
        rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]], dtype=np.float32)
        s = rng.uniform(*self.scale)
        shift = rng.uniform(-self.shift, self.shift, size=2).astype(np.float32)
        x[..., :2] = ((x[..., :2] - centre) @ rot.T) * s + centre + shift  # (T, L, 2)
        x[..., 2] *= s
        t = x.shape[0]
        new_t = max(2, int(round(t / rng.uniform(*self.speed))))
        x = x[np.round(np.linspace(0, t - 1, new_t)).astype(np.int64)]  # (T', L, 3)
        keep = rng.random(len(x)) >= self.drop_frames
        if keep.sum() >= 2:
            x = x[keep]
        return x


# ----------------------------------------------------------------------------------------- datasets


def _subsample(x: np.ndarray, max_frames: int) -> np.ndarray:
    if len(x) <= max_frames:
        return x
    return x[np.round(np.linspace(0, len(x) - 1, max_frames)).astype(np.int64)]


class LandmarkSequenceDataset(Dataset):
    """Landmark sequences ``(T, L, 3)`` with labels -> ``{"x": encoded (T', L, 3), "y": label}``.

    Each item is (optionally) augmented, cut to ``max_frames`` by uniform subsampling and encoded with
    ``encoding`` (:func:`~.encoding.encode`); the randomness comes from numpy's global RNG, which
    :class:`~zoo.training.data.SeededDataset` seeds per example and epoch.
    """

    def __init__(
        self,
        sequences: Sequence[np.ndarray],
        labels: Sequence[int],
        encoding: str = "rqe",
        max_frames: int = 64,
        augment: Augment | None = None,
        step: float = 0.05,
        limit: float = 3.0,
    ) -> None:
        if len(sequences) != len(labels):
            raise ValueError(f"LandmarkSequenceDataset: {len(sequences)} sequences but {len(labels)} labels")
        if encoding not in METHODS:
            raise ValueError(f"encoding must be one of {METHODS}, got {encoding!r}")
        self.sequences, self.labels = list(sequences), [int(v) for v in labels]
        self.encoding, self.max_frames, self.augment = encoding, max_frames, augment
        self.step, self.limit = step, limit

    def __len__(self) -> int:
        return len(self.sequences)

    def __getitem__(self, i: int) -> dict[str, Any]:
        x = self.sequences[i]
        if self.augment is not None:
            x = self.augment(x, np.random.default_rng(np.random.randint(2**31)))
        x = encode(_subsample(x, self.max_frames), self.encoding, step=self.step, limit=self.limit)  # (T, L, 3)
        return {"x": torch.from_numpy(x), "y": self.labels[i]}


def collate_signs(items: list[dict[str, Any]]) -> dict[str, Tensor]:
    """Pad to the longest sequence: ``x (B, T, L, 3)`` (padding 0), ``mask (B, T)`` True = real frame, ``y (B,)``."""
    t = max(item["x"].shape[0] for item in items)
    x = torch.zeros((len(items), t) + tuple(items[0]["x"].shape[1:]))
    mask = torch.zeros(len(items), t, dtype=torch.bool)
    for b, item in enumerate(items):
        n = item["x"].shape[0]
        x[b, :n] = item["x"]
        mask[b, :n] = True
    return {"x": x, "mask": mask, "y": torch.tensor([item["y"] for item in items], dtype=torch.long)}


# ----------------------------------------------------------------------------------------- generator

# a front-facing body in shoulder widths, origin at the shoulder midpoint, y down; MediaPipe's "left" is
# the signer's left, i.e. the image's right (+x)
_POSE_TEMPLATE = np.array(
    [
        (0.0, -0.95), (0.07, -1.05), (0.12, -1.06), (0.17, -1.05), (-0.07, -1.05), (-0.12, -1.06), (-0.17, -1.05),
        (0.25, -1.0), (-0.25, -1.0), (0.06, -0.82), (-0.06, -0.82), (0.5, 0.0), (-0.5, 0.0),
        (0.6, 0.7), (-0.6, 0.7), (0.55, 1.3), (-0.55, 1.3), (0.57, 1.4), (-0.57, 1.4), (0.55, 1.42), (-0.55, 1.42),
        (0.52, 1.38), (-0.52, 1.38), (0.35, 1.5), (-0.35, 1.5), (0.36, 2.4), (-0.36, 2.4), (0.36, 3.3), (-0.36, 3.3),
        (0.38, 3.4), (-0.38, 3.4), (0.3, 3.45), (-0.3, 3.45),
    ],
    dtype=np.float64,
)
_FINGER_X = np.array([-0.045, -0.015, 0.015, 0.045])  # index, middle, ring, pinky bases (right hand, palm to camera)
_FINGER_LEN = np.array([[0.08, 0.05, 0.04], [0.09, 0.055, 0.04], [0.085, 0.05, 0.038], [0.065, 0.04, 0.032]])


def _hand_shape(curl: np.ndarray, spread: float) -> np.ndarray:
    """21 right-hand landmarks in hand units (wrist at 0, fingers up) for ``curl (T, 5)`` in [0, 1]: ``(T, 21, 3)``."""
    t = curl.shape[0]
    out = np.zeros((t, 21, 3))
    # thumb: CMC, MCP, IP, TIP from the wrist, pointing up and out (-x), curling across the palm
    th = curl[:, 0]
    base_angle = np.deg2rad(-50 + 40 * th)  # (T,) from vertical, negative = towards -x
    pos = np.zeros((t, 3))
    for j, seg in enumerate((0.05, 0.05, 0.035, 0.03)):
        ang = base_angle + np.deg2rad(35 * th * j)
        bend = np.deg2rad(30 * th * j)
        pos = pos + seg * np.stack([np.sin(ang) * np.cos(bend), -np.cos(ang) * np.cos(bend), np.sin(bend)], -1)
        out[:, 1 + j] = pos
    for f in range(4):
        c = curl[:, 1 + f]
        splay = np.deg2rad(spread * (f - 1.5) * 8)
        base = np.stack([np.full(t, _FINGER_X[f]), np.full(t, -0.11 + 0.01 * abs(f - 1.5)), np.zeros(t)], -1)
        out[:, 5 + 4 * f] = base
        pos, theta = base, np.zeros(t)
        for j, seg in enumerate(_FINGER_LEN[f]):
            theta = theta + np.deg2rad(75) * c  # each joint bends towards the palm (+z)
            d = np.stack([np.sin(splay) * np.cos(theta), -np.cos(splay) * np.cos(theta), np.sin(theta)], -1)
            pos = pos + seg * d
            out[:, 6 + 4 * f + j] = pos
    return out


def _smoothstep(u: np.ndarray) -> np.ndarray:
    return u * u * (3 - 2 * u)


@dataclass(frozen=True)
class _Gloss:
    start: np.ndarray  # (2,) wrist start, shoulder widths
    end: np.ndarray  # (2,)
    wiggle: float  # amplitude of the oscillation across the path
    cycles: int
    curl_a: np.ndarray  # (5,) hand shape at the start
    curl_b: np.ndarray  # (5,) and at the end
    spread: float
    angle: float  # in-plane hand rotation (radians)
    two_handed: bool


@dataclass(frozen=True)
class _Signer:
    width: float  # shoulder width in image units
    centre: np.ndarray  # (2,) shoulder midpoint in the image
    tilt: float  # camera roll (radians)
    frames: int  # frames for one sign at speed 1
    hand: float  # hand size, shoulder widths per hand unit
    jitter: float  # shoulder jitter (shoulder widths)
    sway: float  # body sway amplitude (shoulder widths)


def _draw_gloss(rng: np.random.Generator) -> _Gloss:
    start = np.array([rng.uniform(-0.9, 0.4), rng.uniform(-1.1, 0.8)])
    end = np.array([rng.uniform(-0.9, 0.4), rng.uniform(-1.1, 0.8)])
    curl_a = rng.uniform(0, 1, 5)
    curl_b = rng.uniform(0, 1, 5) if rng.random() < 0.5 else curl_a  # half the signs change hand shape
    return _Gloss(
        start, end, rng.uniform(0.0, 0.25), int(rng.integers(0, 4)), curl_a, curl_b, rng.uniform(0, 1),
        rng.uniform(-0.6, 0.6), bool(rng.random() < 0.4),
    )


def _draw_signer(rng: np.random.Generator) -> _Signer:
    return _Signer(
        rng.uniform(0.14, 0.32), np.array([rng.uniform(0.35, 0.65), rng.uniform(0.45, 0.7)]), np.deg2rad(rng.uniform(-8, 8)),
        int(rng.integers(24, 48)), rng.uniform(1.6, 2.0), rng.uniform(0.0, 0.04), rng.uniform(0.0, 0.12),
    )


def _render_sign(g: _Gloss, s: _Signer, rng: np.random.Generator) -> np.ndarray:
    """One repetition of gloss ``g`` by signer ``s``: ``(T, 75, 3)`` float32 image-normalized landmarks."""
    sign_t = max(8, int(round(s.frames * rng.uniform(0.85, 1.15))))
    rest_a, rest_b = int(rng.integers(2, 8)), int(rng.integers(2, 8))
    t = rest_a + sign_t + rest_b
    u = np.clip((np.arange(t) - rest_a) / max(1, sign_t - 1), 0, 1)  # (T,) progress through the sign
    start = g.start + rng.normal(0, 0.05, 2)
    end = g.end + rng.normal(0, 0.05, 2)
    path = start + (end - start) * _smoothstep(u)[:, None]  # (T, 2)
    normal = np.array([-(end - start)[1], (end - start)[0]]) / (np.linalg.norm(end - start) + 1e-6)
    path = path + g.wiggle * np.sin(2 * np.pi * g.cycles * u)[:, None] * normal  # (T, 2)
    rest = np.array([-0.55, 1.35])  # the right wrist at rest
    ramp = np.clip(np.minimum(np.arange(t) - rest_a + 4, rest_a + sign_t + 3 - np.arange(t)) / 4, 0, 1)  # (T,)
    right_wrist = rest + (path - rest) * ramp[:, None]  # (T, 2)

    pose = np.zeros((t, 33, 3))
    pose[:, :, :2] = _POSE_TEMPLATE
    sway = s.sway * np.stack([np.sin(2 * np.pi * (u * 0.7 + rng.random())), 0.3 * np.sin(2 * np.pi * u)], -1)  # (T, 2)
    pose[:, :, :2] += sway[:, None]
    pose[:, 11:13, :2] += rng.normal(0, s.jitter + 1e-9, (t, 2, 2))  # shoulder jitter
    curl = g.curl_a + (g.curl_b - g.curl_a) * _smoothstep(u)[:, None]  # (T, 5)
    hands = np.full((t, 42, 3), np.nan)
    for side in (1, 0):  # the right hand (image left, -x), then the left
        if side == 1:
            wrist = right_wrist + sway
        else:
            if not g.two_handed:
                continue  # resting out of view: MediaPipe reports no hand
            wrist = np.stack([-right_wrist[:, 0], right_wrist[:, 1]], -1) + sway
        shape = _hand_shape(curl, g.spread) * s.hand  # (T, 21, 3) shoulder widths
        angle = g.angle * (1 if side else -1)
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        shape[..., :2] = shape[..., :2] @ rot.T
        if side == 0:
            shape[..., 0] *= -1  # the left hand mirrors the right
        h = shape.copy()
        h[..., :2] += wrist[:, None]
        lo = 0 if side == 0 else 21
        hands[:, lo : lo + 21] = h
        shoulder = 11 if side == 0 else 12
        wrist_i, elbow_i = (15, 13) if side == 0 else (16, 14)
        pose[:, wrist_i] = h[:, 0]
        sh = pose[:, shoulder, :2]
        out = np.array([0.35 if side == 0 else -0.35, 0.25])
        pose[:, elbow_i, :2] = sh + 0.5 * (h[:, 0, :2] - sh) + out
        for k, j in ((17 if side == 0 else 18, 17), (19 if side == 0 else 20, 5), (21 if side == 0 else 22, 2)):
            pose[:, k] = h[:, j]
    # the hand is detected only while it is raised; a few random misses
    lifted = (ramp > 0.2) & (rng.random(t) > 0.03)
    hands[~lifted, 21:] = np.nan
    if g.two_handed:
        hands[~((ramp > 0.2) & (rng.random(t) > 0.03)), :21] = np.nan
    body = np.concatenate([pose, hands], axis=1)  # (T, 75, 3): pose, left hand, right hand
    body[..., :2] += rng.normal(0, 0.004, body[..., :2].shape)
    rot = np.array([[np.cos(s.tilt), -np.sin(s.tilt)], [np.sin(s.tilt), np.cos(s.tilt)]])
    img = np.empty_like(body)
    img[..., :2] = (body[..., :2] @ rot.T) * s.width + s.centre
    img[..., 2] = body[..., 2] * s.width
    return img.astype(np.float32)


def generate_synthetic_signs(
    root: str | Path, num_glosses: int = 20, num_signers: int = 12, repeats: int = 5, test_signers: int = 2,
    val_signers: int = 2, seed: int = 0,
) -> Path:
    """Write a synthetic sign dataset in the WLASL layout under ``root``; return the json's path.

    ``root/landmarks/<video_id>.npy`` (float32 ``(T, 75, 3)``) and ``root/WLASL_v0.3.json`` with
    ``signer_id`` and splits by signer: the last ``test_signers`` signers are the test split, the
    ``val_signers`` before them validation, so no test signer is seen in training.
    """
    if num_signers < test_signers + val_signers + 1:
        raise ValueError(f"generate_synthetic_signs: {num_signers} signers leave none for training")
    root = Path(root)
    (root / "landmarks").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    glosses = [_draw_gloss(rng) for _ in range(num_glosses)]
    signers = [_draw_signer(rng) for _ in range(num_signers)]
    entries = []
    for gi, g in enumerate(glosses):
        instances = []
        for si, s in enumerate(signers):
            split = "test" if si >= num_signers - test_signers else "val" if si >= num_signers - test_signers - val_signers else "train"
            for r in range(repeats):
                video_id = f"{gi:03d}{si:02d}{r:02d}"
                np.save(root / "landmarks" / f"{video_id}.npy", _render_sign(g, s, rng))
                instances.append({"video_id": video_id, "split": split, "signer_id": si, "frame_start": 1, "frame_end": -1})
        entries.append({"gloss": f"sign{gi:02d}", "instances": instances})
    path = root / "WLASL_v0.3.json"
    path.write_text(json.dumps(entries))
    return path


# ----------------------------------------------------------------------------------------- datamodule


def _read_example(example: SignExample, num_landmarks: int, layout: str) -> np.ndarray:
    x = read_landmarks(example.path, layout)
    if x.shape[1] < num_landmarks:
        raise ValueError(f"{example.path}: has {x.shape[1]} landmarks, the model reads {num_landmarks} (with the face)")
    start = max(example.frame_start, 1) - 1
    stop = None if example.frame_end is None or example.frame_end < 0 else example.frame_end
    x = x[start:stop, :num_landmarks]
    if len(x) == 0:
        raise ValueError(f"{example.path}: frame range {example.frame_start}..{example.frame_end} is empty")
    return x


class SignDataModule(ZooDataModule):
    """Isolated-sign landmark sequences for :class:`~zoo.sign.recognition.module.SignRecognizer`.

    Args:
        path: a WLASL json (or its folder), a GISLR folder, a ``<gloss>/<video>.npy`` folder; ``None`` =
            the synthetic signs (:func:`generate_synthetic_signs`, cached under ``zoo.training.data.cache_dir``).
        format: ``auto`` | ``wlasl`` | ``gislr`` | ``folder``.
        encoding: ``raw`` | ``rqe`` | ``rqe_sf`` (:func:`~zoo.sign.recognition.encoding.encode`).
        quant_step, quant_limit: RQE's quantization bin width and range, in shoulder widths.
        num_landmarks: 75 (pose + hands) or 543 (with the face); must equal the model's.
        layout: the part order of 543-landmark ``.npy`` files (``holistic`` or ``gislr``).
        landmarks_dir: WLASL's landmark folder (default ``landmarks/`` beside the json).
        num_glosses: WLASL-K: keep the first K glosses.
        split: WLASL ``json`` (the file's splits) or ``signer`` (re-drawn by signer_id).
        val_fraction, test_fraction, seed: signer / folder splits.
        max_frames: longer sequences are uniformly subsampled to this many frames.
        augment: training augmentation (``None`` = off).
        synthetic_glosses, synthetic_signers, synthetic_repeats: size of the offline default.
        batch_size, num_workers, limit: :class:`~zoo.training.data.ZooDataModule`'s.
    """

    def __init__(
        self,
        path: str | None = None,
        format: str = "auto",
        encoding: str = "rqe",
        quant_step: float = 0.05,
        quant_limit: float = 3.0,
        num_landmarks: int = NUM_BODY_HANDS,
        layout: str = "holistic",
        landmarks_dir: str | None = None,
        num_glosses: int | None = None,
        split: str = "json",
        val_fraction: float = 0.15,
        test_fraction: float = 0.15,
        seed: int = 0,
        max_frames: int = 64,
        augment: Augment | None = None,
        synthetic_glosses: int = 20,
        synthetic_signers: int = 12,
        synthetic_repeats: int = 5,
        batch_size: int = 32,
        num_workers: int = 0,
        limit: int | None = None,
    ) -> None:
        super().__init__(path, batch_size, num_workers, limit)
        if format not in FORMATS:
            raise ValueError(f"SignDataModule: format must be one of {FORMATS}, got {format!r}")
        if encoding not in METHODS:
            raise ValueError(f"SignDataModule: encoding must be one of {METHODS}, got {encoding!r}")
        if num_landmarks not in (NUM_BODY_HANDS, NUM_HOLISTIC):
            raise ValueError(f"SignDataModule: num_landmarks must be {NUM_BODY_HANDS} or {NUM_HOLISTIC}, got {num_landmarks}")
        if split not in ("json", "signer"):
            raise ValueError(f"SignDataModule: split must be 'json' or 'signer', got {split!r}")
        if max_frames < 2:
            raise ValueError(f"SignDataModule: max_frames must be >= 2, got {max_frames}")
        self.format, self.encoding, self.quant_step, self.quant_limit = format, encoding, quant_step, quant_limit
        self.num_landmarks, self.layout, self.landmarks_dir = num_landmarks, layout, landmarks_dir
        self.num_glosses, self.split, self.seed = num_glosses, split, seed
        self.val_fraction, self.test_fraction, self.max_frames, self.augment = val_fraction, test_fraction, max_frames, augment
        self.synthetic = dict(num_glosses=synthetic_glosses, num_signers=synthetic_signers, repeats=synthetic_repeats)
        self.class_names: list[str] = []
        self.signers: dict[str, list[str]] = {}

    @property
    def num_classes(self) -> int:
        self.setup()
        return len(self.class_names)

    def _synthetic_root(self) -> Path:
        key = hashlib.sha1(json.dumps({**self.synthetic, "seed": self.seed, "v": 1}, sort_keys=True).encode()).hexdigest()[:10]
        root = cache_dir("sign", f"synthetic_{key}")
        if not (root / "WLASL_v0.3.json").exists():
            tmp = root.with_name(root.name + f".tmp{np.random.randint(1 << 30)}")
            generate_synthetic_signs(tmp, seed=self.seed, **self.synthetic)
            try:
                tmp.rename(root)
            except OSError:  # another process wrote it first
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
        return root / "WLASL_v0.3.json"

    def load_default(self) -> dict[str, Dataset]:
        return self._build(*read_wlasl_index(self._synthetic_root()))

    def load_path(self, path: Path) -> dict[str, Dataset]:
        fmt = detect_format(path) if self.format == "auto" else self.format
        if fmt == "wlasl":
            examples, names = read_wlasl_index(path, self.landmarks_dir, self.num_glosses)
            if self.split == "signer":
                if any(not e.signer for e in examples):
                    raise ValueError(f"{path}: split='signer' needs a signer_id on every WLASL instance")
                by = signer_splits([e.signer for e in examples], self.val_fraction, self.test_fraction, self.seed)
                examples = [SignExample(**{**asdict(e), "split": by[e.signer]}) for e in examples]
        elif fmt == "gislr":
            examples, names = read_gislr_index(path, self.val_fraction, self.test_fraction, self.seed)
        else:
            examples, names = read_folder_index(path, self.val_fraction, self.test_fraction, self.seed)
        return self._build(examples, names)

    def _build(self, examples: list[SignExample], names: list[str]) -> dict[str, Dataset]:
        self.class_names = names
        read = read_each(
            examples, lambda e: _read_example(e, self.num_landmarks, self.layout), what=f"landmark files of {self.path or 'the synthetic signs'}",
            name=lambda e: str(e.path), errors=(OSError, ValueError),
        )
        out: dict[str, Dataset] = {}
        for split in SPLITS:
            rows = [(e, x) for e, x in read if e.split == split]
            self.signers[split] = sorted({e.signer for e, _ in rows})
            out[split] = LandmarkSequenceDataset(
                [x for _, x in rows], [e.label for e, _ in rows], self.encoding, self.max_frames,
                self.augment if split == "train" else None, self.quant_step, self.quant_limit,
            )
        return out

    def collate_fn(self) -> Callable[[list[Any]], Any]:
        return collate_signs
