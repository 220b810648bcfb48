"""Human3.6M in VideoPose3D's files: the npz readers, camera-frame targets, windows, flips, and the
offline generator that writes synthetic motion in the same format.

On disk (``path`` is a directory holding both):

``data_3d_h36m.npz``
    ``positions_3d``: ``{subject: {action: (T, 32, 3) float}}`` in metres, world frame (z up).
``data_2d_h36m_<source>.npz`` (``source`` = ``gt``, ``cpn_ft_h36m_dbb``, ...)
    ``positions_2d``: ``{subject: {action: [4 x (T, 17, 2)]}}`` in pixels, one array per camera in
    the order of :data:`zoo.vision.pose.cameras.CAMERA_IDS`; ``metadata``: ``{"num_joints": 17,
    "keypoints_symmetry": [left ids, right ids]}``.

Both keys hold pickled object arrays. They are read with the zoo's restricted unpickler
(:func:`zoo.training.data.safe_unpickle`, numpy arrays and plain containers only), never with
``np.load(allow_pickle=True)``, so a malicious file cannot run code. A missing file or key, or a
top level that is not the nested dict, is a ``ValueError`` naming the file; a single sequence with the
wrong shape or non-finite values is skipped with one counted warning (:func:`zoo.training.data.read_each`).

Preparation (as VideoPose3D does it): the 32 mocap joints are reduced to the 17 of
:data:`H36M_KEPT_JOINTS`; each camera's 3-D sequence is moved to that camera's frame
(:func:`~zoo.vision.pose.cameras.world_to_camera` with the subject's extrinsics) and made
root-relative (joint 0 set to zero); 2-D keypoints are normalized to screen coordinates
(``x`` in ``[-1, 1]``); 3-D and 2-D sequences are cut to their common length. Splits: train S1, S5,
S6, S7, S8; test S9, S11 (S11 "Directions" dropped, its video is corrupt in the original release);
``val`` is the test subjects too (the benchmark has no validation split; the papers select on it),
with its own frame stride. Training windows get a horizontal flip with probability 0.5 (x negated in
2-D and 3-D, left/right joints swapped); :class:`~zoo.vision.pose.module.PoseLifter` averages the
prediction with the flipped one at test time.

Offline default: :func:`generate_synthetic` drives a 17-joint skeleton with Human3.6M bone lengths
(scaled per subject) by smooth joint-angle trajectories for a few actions, places it in the capture
area, projects it through the real cameras, and writes the two npz files into
``zoo.training.data.cache_dir("vision", "pose", ...)``; they are read back through the same reader.
"""

from __future__ import annotations

import io
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib import format as npy_format
from torch import Tensor
from torch.utils.data import Dataset

from zoo.training.data import NUMPY_GLOBALS, ZooDataModule, cache_dir, read_each, safe_unpickle

from . import cameras

__all__ = [
    "H36M_JOINTS_LEFT",
    "H36M_JOINTS_RIGHT",
    "H36M_KEPT_JOINTS",
    "H36M_PARENTS",
    "PoseSequence",
    "PoseWindows",
    "Pose3DDataModule",
    "action_name",
    "flip_pose",
    "generate_synthetic",
    "prepare_sequences",
    "read_npz_object",
    "read_positions_2d",
    "read_positions_3d",
]

#: the 17 of the 32 mocap joints every Human3.6M lifting paper keeps (VideoPose3D's remove_joints)
H36M_KEPT_JOINTS: tuple[int, ...] = (0, 1, 2, 3, 6, 7, 8, 12, 13, 14, 15, 17, 18, 19, 25, 26, 27)
#: parents of the 17 kept joints: hip, R leg (1-3), L leg (4-6), spine, thorax, nose, head, L arm (11-13), R arm (14-16)
H36M_PARENTS: tuple[int, ...] = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 9, 8, 11, 12, 8, 14, 15)
H36M_JOINTS_LEFT: tuple[int, ...] = (4, 5, 6, 11, 12, 13)
H36M_JOINTS_RIGHT: tuple[int, ...] = (1, 2, 3, 14, 15, 16)
#: parents in the 32-joint mocap skeleton (the generator fills the dropped joints from them)
_PARENTS_32: tuple[int, ...] = (
    -1, 0, 1, 2, 3, 4, 0, 6, 7, 8, 9, 0, 11, 12, 13, 14, 12, 16, 17, 18, 19, 20, 19, 22, 12, 24, 25, 26, 27, 28, 27, 30,
)
TRAIN_SUBJECTS: tuple[str, ...] = ("S1", "S5", "S6", "S7", "S8")
TEST_SUBJECTS: tuple[str, ...] = ("S9", "S11")


def action_name(action: str) -> str:
    """``"Directions 1"`` -> ``"Directions"``: the action a sequence is averaged under."""
    return re.sub(r"\s*\d+$", "", action).strip() or action


# ------------------------------------------------------------------------------------------ readers
def read_npz_object(path: Path, key: str) -> Any:
    """The pickled object stored under ``key`` of an npz file, unpickled with the restricted unpickler."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = {n.removesuffix(".npy"): n for n in zf.namelist()}
            if key not in names:
                raise ValueError(f"{path}: no {key!r} array (has {sorted(names)})")
            raw = zf.read(names[key])
    except (zipfile.BadZipFile, OSError) as err:
        raise ValueError(f"{path}: not a readable npz file ({err})") from err
    buf = io.BytesIO(raw)
    try:
        version = npy_format.read_magic(buf)
        header = npy_format.read_array_header_1_0 if version == (1, 0) else npy_format.read_array_header_2_0
        shape, _, dtype = header(buf)
    except ValueError as err:
        raise ValueError(f"{path}: {key!r} is not an npy array ({err})") from err
    if dtype.hasobject:
        arr = safe_unpickle(buf.read(), NUMPY_GLOBALS, source=f"{path}:{key}")
    else:
        arr = np.frombuffer(buf.read(), dtype=dtype).reshape(shape)
    if isinstance(arr, np.ndarray) and arr.dtype == object and arr.shape == ():
        return arr.item()
    return arr


def _nested(obj: Any, path: Path, key: str) -> dict[str, dict[str, Any]]:
    if not isinstance(obj, dict) or not all(isinstance(v, dict) for v in obj.values()):
        raise ValueError(f"{path}: {key} must be a dict subject -> action -> arrays, got {type(obj).__name__}")
    return obj


def _check_array(value: Any, shape: tuple[int | None, ...], what: str) -> np.ndarray:
    arr = np.asarray(value)
    if arr.dtype.kind not in "fiu" or arr.ndim != len(shape) or any(s is not None and s != a for s, a in zip(shape, arr.shape)):
        expected = "(" + ", ".join("T" if s is None else str(s) for s in shape) + ")"
        raise ValueError(f"{what}: expected a numeric {expected} array, got {arr.dtype} {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what}: has non-finite values")
    return arr.astype(np.float32)


def read_positions_3d(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """``data_3d_h36m.npz`` -> ``{subject: {action: (T, 17, 3)}}`` (metres, world), joints reduced.

    Accepts 32-joint (mocap) or already reduced 17-joint arrays; bad sequences are skipped with a
    counted warning."""
    data = _nested(read_npz_object(path, "positions_3d"), path, "positions_3d")
    items = [(s, a, v) for s, acts in data.items() for a, v in acts.items()]

    def read(item: tuple[str, str, Any]) -> np.ndarray:
        s, a, v = item
        arr = _check_array(v, (None, None, 3), f"{path}: positions_3d[{s!r}][{a!r}]")
        if arr.shape[1] == 32:
            return arr[:, H36M_KEPT_JOINTS]
        if arr.shape[1] == 17:
            return arr
        raise ValueError(f"{path}: positions_3d[{s!r}][{a!r}]: expected 32 or 17 joints, got {arr.shape[1]}")

    out: dict[str, dict[str, np.ndarray]] = {}
    for (s, a, _), arr in read_each(items, read, what=f"3-D sequences in {path}", name=lambda it: f"{it[0]}/{it[1]}"):
        out.setdefault(s, {})[a] = arr
    return out


def read_positions_2d(path: Path) -> tuple[dict[str, dict[str, list[np.ndarray]]], dict[str, Any]]:
    """``data_2d_h36m_<source>.npz`` -> ``({subject: {action: [4 x (T, 17, 2)]}}, metadata)`` (pixels)."""
    data = _nested(read_npz_object(path, "positions_2d"), path, "positions_2d")
    metadata = read_npz_object(path, "metadata")
    if not isinstance(metadata, dict) or "num_joints" not in metadata or "keypoints_symmetry" not in metadata:
        raise ValueError(f"{path}: metadata must be a dict with num_joints and keypoints_symmetry, got {metadata!r}")
    joints = int(metadata["num_joints"])
    sym = [list(map(int, side)) for side in metadata["keypoints_symmetry"]]
    if len(sym) != 2 or len(sym[0]) != len(sym[1]) or any(not 0 <= i < joints for side in sym for i in side):
        raise ValueError(f"{path}: metadata keypoints_symmetry must be two equal lists of joint ids < {joints}, got {sym}")
    items = [(s, a, v) for s, acts in data.items() for a, v in acts.items()]

    def read(item: tuple[str, str, Any]) -> list[np.ndarray]:
        s, a, v = item
        if not isinstance(v, (list, tuple)) or len(v) != len(cameras.CAMERA_IDS):
            raise ValueError(f"{path}: positions_2d[{s!r}][{a!r}] must list {len(cameras.CAMERA_IDS)} camera arrays")
        return [_check_array(c, (None, joints, 2), f"{path}: positions_2d[{s!r}][{a!r}][{i}]") for i, c in enumerate(v)]

    out: dict[str, dict[str, list[np.ndarray]]] = {}
    for (s, a, _), arrs in read_each(items, read, what=f"2-D sequences in {path}", name=lambda it: f"{it[0]}/{it[1]}"):
        out.setdefault(s, {})[a] = arrs
    return out, {"num_joints": joints, "keypoints_symmetry": sym}


# ------------------------------------------------------------------------------------------ sequences
@dataclass(frozen=True)
class PoseSequence:
    """One (subject, action, camera) sequence: normalized 2-D keypoints and root-relative camera-frame 3-D."""

    subject: str
    action: str
    camera: int
    keypoints: np.ndarray  # (T, J, 2) screen coordinates
    positions: np.ndarray  # (T, J, 3) metres, camera frame, root-relative


def prepare_sequences(
    positions_3d: dict[str, dict[str, np.ndarray]],
    positions_2d: dict[str, dict[str, list[np.ndarray]]],
    subjects: Sequence[str],
    *,
    drop: Sequence[tuple[str, str]] = (("S11", "Directions"),),
    source: str = "",
) -> list[PoseSequence]:
    """Camera-frame, root-relative 3-D and normalized 2-D for every camera of ``subjects``' actions
    present in both files; ``drop`` lists ``(subject, action name)`` pairs left out."""
    out = []
    for subject in subjects:
        if subject not in positions_3d or subject not in positions_2d:
            raise ValueError(f"{source}: subject {subject} is missing from the 3-D or the 2-D file")
        for action, world in positions_3d[subject].items():
            if (subject, action_name(action)) in set(drop) or action not in positions_2d[subject]:
                continue
            for index, kp in enumerate(positions_2d[subject][action]):
                cam = cameras.camera(subject, index)
                length = min(len(world), len(kp))
                pos = cameras.world_to_camera(world[:length], cam.orientation, cam.translation)  # (T, J, 3)
                pos = pos - pos[:, :1]  # root-relative
                pos[:, 0] = 0.0
                screen = cameras.normalize_screen(kp[:length], cam.res_w, cam.res_h).astype(np.float32)  # (T, J, 2)
                out.append(PoseSequence(subject, action, index, screen, pos.astype(np.float32)))
    return out


def flip_pose(x: Tensor, left: Sequence[int], right: Sequence[int]) -> Tensor:
    """Mirror poses ``(..., J, D)`` horizontally: negate x and swap the ``left`` / ``right`` joints."""
    out = x.clone()
    out[..., 0] = -out[..., 0]
    out[..., list(left) + list(right), :] = out[..., list(right) + list(left), :]
    return out


class PoseWindows(Dataset):
    """Windows of ``receptive_field`` frames centred on every ``stride``-th frame (edges replicated).

    Items are dicts: ``inputs (F, J, 2)``, ``target (J, 3)`` (the centre frame), ``prev_inputs`` /
    ``prev_target`` (the window centred one frame earlier, for velocity terms) and ``action`` (an id
    into ``action_names``). With ``flip`` each item is mirrored with probability 0.5.
    """

    def __init__(
        self,
        sequences: list[PoseSequence],
        receptive_field: int,
        action_names: Sequence[str],
        *,
        stride: int = 1,
        flip: bool = False,
        keypoints_symmetry: tuple[Sequence[int], Sequence[int]] = (H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT),
    ) -> None:
        if receptive_field < 1 or receptive_field % 2 == 0:
            raise ValueError(f"receptive_field must be odd and >= 1, got {receptive_field}")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}")
        self.sequences, self.receptive_field, self.flip = sequences, receptive_field, flip
        self.kps_left, self.kps_right = (list(s) for s in keypoints_symmetry)
        ids = {name: i for i, name in enumerate(action_names)}
        self.actions = [ids[action_name(s.action)] for s in sequences]
        self.index = [(i, t) for i, s in enumerate(sequences) for t in range(0, len(s.keypoints), stride)]

    def __len__(self) -> int:
        return len(self.index)

    def _window(self, seq: PoseSequence, centre: int) -> tuple[Tensor, Tensor]:
        pad = self.receptive_field // 2
        frames = np.clip(np.arange(centre - pad, centre + pad + 1), 0, len(seq.keypoints) - 1)
        return torch.from_numpy(seq.keypoints[frames]), torch.from_numpy(seq.positions[centre])

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        s, t = self.index[i]
        seq = self.sequences[s]
        inputs, target = self._window(seq, t)  # (F, J, 2), (J, 3)
        prev_inputs, prev_target = self._window(seq, max(t - 1, 0))
        item = {"inputs": inputs, "target": target, "prev_inputs": prev_inputs, "prev_target": prev_target}
        if self.flip and torch.rand(()) < 0.5:
            for key in ("inputs", "prev_inputs"):
                item[key] = flip_pose(item[key], self.kps_left, self.kps_right)
            for key in ("target", "prev_target"):
                item[key] = flip_pose(item[key], H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT)
        item["action"] = torch.tensor(self.actions[s])
        return item


# ------------------------------------------------------------------------------------------ generator
#: rest-pose offsets from the parent (metres, body frame: x to the subject's left, y forward, z up);
#: bone lengths close to the Human3.6M subjects' means
_REST_OFFSETS = np.array(
    [
        [0, 0, 0], [-0.13, 0, 0], [0, 0, -0.45], [0, 0, -0.44],  # hip, R hip, R knee, R ankle
        [0.13, 0, 0], [0, 0, -0.45], [0, 0, -0.44],  # L hip, L knee, L ankle
        [0, 0.01, 0.23], [0, 0, 0.25], [0, 0.06, 0.10], [0, -0.02, 0.11],  # spine, thorax, nose, head
        [0.15, 0, -0.02], [0, 0, -0.28], [0, 0, -0.25],  # L shoulder, elbow, wrist
        [-0.15, 0, -0.02], [0, 0, -0.28], [0, 0, -0.25],  # R shoulder, elbow, wrist
    ],
    dtype=np.float64,
)
SYNTHETIC_ACTIONS: tuple[str, ...] = ("Directions", "Walking", "Sitting", "Greeting", "Phoning")
SYNTHETIC_SUBJECT_SCALE: dict[str, float] = {"S1": 0.96, "S5": 0.92, "S6": 1.05, "S7": 0.98, "S8": 1.03, "S9": 1.0, "S11": 1.02}


def _rotations(angles: np.ndarray) -> np.ndarray:
    """``(..., 3)`` x/y/z angles -> ``(..., 3, 3)`` rotations ``Rz @ Ry @ Rx``."""
    cx, cy, cz = np.cos(angles[..., 0]), np.cos(angles[..., 1]), np.cos(angles[..., 2])
    sx, sy, sz = np.sin(angles[..., 0]), np.sin(angles[..., 1]), np.sin(angles[..., 2])
    one, zero = np.ones_like(cx), np.zeros_like(cx)
    rx = np.stack([one, zero, zero, zero, cx, -sx, zero, sx, cx], -1).reshape(*cx.shape, 3, 3)
    ry = np.stack([cy, zero, sy, zero, one, zero, -sy, zero, cy], -1).reshape(*cx.shape, 3, 3)
    rz = np.stack([cz, -sz, zero, sz, cz, zero, zero, zero, one], -1).reshape(*cx.shape, 3, 3)
    return rz @ ry @ rx


def _action_angles(action: str, t: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Joint angles ``(T, 17, 3)`` and the root position ``(T, 3)`` (metres, world) of one take."""
    n = len(t)
    ang = np.zeros((n, 17, 3))
    # a smooth random component on every joint: three low-frequency sinusoids with random phases
    freqs = rng.uniform(0.1, 0.6, size=(3, 17, 3))
    phases = rng.uniform(0, 2 * np.pi, size=(3, 17, 3))
    ang += 0.08 * np.sin(2 * np.pi * freqs[None] * t[:, None, None, None] + phases[None]).sum(1)
    w = 2 * np.pi * rng.uniform(0.8, 1.1)  # gait / gesture angular frequency (rad/s)
    s = np.sin(w * t)
    centre = rng.uniform(-0.5, 0.5, size=2)
    yaw = rng.uniform(-np.pi, np.pi) + 0.2 * np.sin(0.3 * t)
    height = np.full(n, 0.92)
    if action == "Walking":
        ang[:, 1, 0] += 0.45 * s
        ang[:, 4, 0] -= 0.45 * s
        ang[:, 2, 0] -= 0.35 * (1 + np.sin(w * t - 1.0))
        ang[:, 5, 0] -= 0.35 * (1 - np.sin(w * t + 1.0))
        ang[:, 11, 0] -= 0.35 * s
        ang[:, 14, 0] += 0.35 * s
        ang[:, 12, 0] += 0.3
        ang[:, 15, 0] += 0.3
        yaw = yaw + 0.25 * t  # walking a circle
        radius = 1.2
        root_xy = centre + radius * np.stack([np.cos(0.25 * t), np.sin(0.25 * t)], -1) - [radius, 0]
        height = height + 0.02 * np.sin(2 * w * t)
    else:
        root_xy = centre + 0.1 * np.stack([np.sin(0.2 * t), np.cos(0.17 * t)], -1)
    if action == "Directions":
        ang[:, 7, 2] += 0.5 * np.sin(0.5 * w * t)
        ang[:, 14, 0] += 1.2 + 0.3 * s
        ang[:, 14, 1] += 0.4 * np.sin(0.5 * w * t)
    elif action == "Sitting":
        ang[:, 1, 0] += 1.45
        ang[:, 4, 0] += 1.45
        ang[:, 2, 0] -= 1.5
        ang[:, 5, 0] -= 1.5
        ang[:, 7, 0] += 0.2 + 0.1 * s
        ang[:, 11, 0] += 0.6 + 0.2 * s
        ang[:, 12, 0] += 1.0
        height = height - 0.42
    elif action == "Greeting":
        ang[:, 11, 1] -= 2.4
        ang[:, 12, 1] -= 0.6 + 0.5 * s  # waving forearm
        ang[:, 7, 0] += 0.15 * np.sin(0.5 * w * t)
    elif action == "Phoning":
        ang[:, 14, 0] += 0.8
        ang[:, 15, 0] += 2.3  # hand at the head
        ang[:, 10, 2] += 0.3 * np.sin(0.4 * w * t)
        ang[:, 1, 0] += 0.2 * s
        ang[:, 4, 0] -= 0.2 * s
    ang[:, 0, 2] += yaw
    return ang, np.concatenate([root_xy, height[:, None]], axis=-1)


def _forward_kinematics(angles: np.ndarray, root: np.ndarray, scale: float) -> np.ndarray:
    """``(T, 17, 3)`` angles + ``(T, 3)`` root -> ``(T, 17, 3)`` world positions."""
    rot = _rotations(angles)  # (T, 17, 3, 3)
    glob = np.empty_like(rot)
    pos = np.empty(angles.shape[:2] + (3,))
    for j, parent in enumerate(H36M_PARENTS):
        if parent < 0:
            glob[:, j], pos[:, j] = rot[:, j], root
        else:
            glob[:, j] = glob[:, parent] @ rot[:, j]
            pos[:, j] = pos[:, parent] + np.einsum("tab,b->ta", glob[:, parent], scale * _REST_OFFSETS[j])
    return pos


def _to_32_joints(pos17: np.ndarray) -> np.ndarray:
    """The 17 kept joints in their mocap slots; every dropped joint copies its nearest kept ancestor."""
    out = np.zeros((len(pos17), 32, 3), dtype=np.float32)
    slot = {m: i for i, m in enumerate(H36M_KEPT_JOINTS)}
    for m in range(32):
        a = m
        while a not in slot:
            a = _PARENTS_32[a]
        out[:, m] = pos17[:, slot[a]]
    return out


def generate_synthetic(
    root: Path,
    *,
    subjects: Sequence[str] = TRAIN_SUBJECTS + TEST_SUBJECTS,
    actions: Sequence[str] = SYNTHETIC_ACTIONS,
    frames: int = 400,
    fps: float = 50.0,
    seed: int = 0,
) -> tuple[Path, Path]:
    """Write ``data_3d_h36m.npz`` and ``data_2d_h36m_gt.npz`` of synthetic motion under ``root``.

    One take (``"<action> 1"``) per subject and action; 3-D in metres in the world frame with 32
    joints, 2-D the distorted projection of the 17 kept joints through the subject's four real
    cameras, in pixels."""
    if frames < 2:
        raise ValueError(f"generate_synthetic: frames must be >= 2, got {frames}")
    unknown = [s for s in subjects if s not in SYNTHETIC_SUBJECT_SCALE]
    if unknown:
        raise ValueError(f"generate_synthetic: no camera extrinsics for subjects {unknown}")
    rng = np.random.default_rng(seed)
    t = np.arange(frames) / fps
    pos3d: dict[str, dict[str, np.ndarray]] = {}
    pos2d: dict[str, dict[str, list[np.ndarray]]] = {}
    for subject in subjects:
        for action in actions:
            angles, root_pos = _action_angles(action, t, rng)
            world = _forward_kinematics(angles, root_pos, SYNTHETIC_SUBJECT_SCALE[subject]).astype(np.float32)
            take = f"{action} 1"
            pos3d.setdefault(subject, {})[take] = _to_32_joints(world)
            views = []
            for index in range(len(cameras.CAMERA_IDS)):
                cam = cameras.camera(subject, index)
                screen = cameras.project(cameras.world_to_camera(world, cam.orientation, cam.translation), cam.intrinsic)
                views.append(cameras.image_coordinates(screen, cam.res_w, cam.res_h).astype(np.float32))
            pos2d.setdefault(subject, {})[take] = views
    root.mkdir(parents=True, exist_ok=True)
    path_3d, path_2d = root / "data_3d_h36m.npz", root / "data_2d_h36m_gt.npz"
    meta = {"num_joints": 17, "keypoints_symmetry": [list(H36M_JOINTS_LEFT), list(H36M_JOINTS_RIGHT)]}
    for path, arrays in ((path_3d, {"positions_3d": pos3d}), (path_2d, {"positions_2d": pos2d, "metadata": meta})):
        tmp = path.with_name(path.stem + ".tmp.npz")
        np.savez_compressed(tmp, **arrays)
        tmp.replace(path)  # atomic: a half-written cache is never read
    return path_3d, path_2d


# ------------------------------------------------------------------------------------------ datamodule
class Pose3DDataModule(ZooDataModule):
    """Human3.6M windows from VideoPose3D's npz files (``path``), or the synthetic offline default.

    Args:
        path: directory with ``data_3d_h36m.npz`` and ``data_2d_h36m_<source>.npz``; ``None`` = synthetic.
        source: the 2-D detections: ``gt``, ``cpn_ft_h36m_dbb``, ...
        receptive_field: frames per window; must equal the model's ``num_frames``.
        train_stride, val_stride, test_stride: every n-th frame is a window centre.
        train_subjects, test_subjects: the protocol's splits (``val`` = the test subjects).
        flip: horizontal-flip augmentation of training windows.
        synthetic_frames: frames per synthetic take (offline default only).
        batch_size, num_workers, limit: :class:`~zoo.training.data.ZooDataModule`'s.
    """

    def __init__(
        self,
        path: str | None = None,
        source: str = "gt",
        receptive_field: int = 27,
        train_stride: int = 1,
        val_stride: int = 1,
        test_stride: int = 1,
        train_subjects: tuple[str, ...] = TRAIN_SUBJECTS,
        test_subjects: tuple[str, ...] = TEST_SUBJECTS,
        flip: bool = True,
        synthetic_frames: int = 400,
        batch_size: int = 256,
        num_workers: int = 0,
        limit: int | None = None,
    ) -> None:
        super().__init__(path=path, batch_size=batch_size, num_workers=num_workers, limit=limit)
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", source):
            raise ValueError(f"source must name a data_2d_h36m_<source>.npz file, got {source!r}")
        for name, value in (("train_stride", train_stride), ("val_stride", val_stride), ("test_stride", test_stride)):
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if receptive_field < 1 or receptive_field % 2 == 0:
            raise ValueError(f"receptive_field must be odd and >= 1, got {receptive_field}")
        self.source, self.receptive_field, self.flip = source, receptive_field, flip
        self.strides = {"train": train_stride, "val": val_stride, "test": test_stride}
        self.train_subjects, self.test_subjects = tuple(train_subjects), tuple(test_subjects)
        self.synthetic_frames = synthetic_frames
        self.action_names: list[str] = []
        self.keypoints_symmetry: tuple[list[int], list[int]] = (list(H36M_JOINTS_LEFT), list(H36M_JOINTS_RIGHT))

    def load_default(self) -> dict[str, Dataset]:
        if self.source != "gt":
            raise ValueError(f"the synthetic default has only 2-D source 'gt', got source={self.source!r}")
        root = cache_dir("vision", "pose", f"synthetic_h36m_v1_{self.synthetic_frames}")
        if not ((root / "data_3d_h36m.npz").exists() and (root / "data_2d_h36m_gt.npz").exists()):
            generate_synthetic(root, frames=self.synthetic_frames)
        return self.load_path(root)

    def load_path(self, path: Path) -> dict[str, Dataset]:
        path_3d, path_2d = path / "data_3d_h36m.npz", path / f"data_2d_h36m_{self.source}.npz"
        for p in (path_3d, path_2d):
            if not p.is_file():
                raise ValueError(f"Pose3DDataModule: {p} does not exist (path={str(path)!r}, source={self.source!r})")
        pos3d = read_positions_3d(path_3d)
        pos2d, meta = read_positions_2d(path_2d)
        if meta["num_joints"] != len(H36M_PARENTS):
            raise ValueError(f"{path_2d}: metadata num_joints={meta['num_joints']}, expected {len(H36M_PARENTS)}")
        self.keypoints_symmetry = (meta["keypoints_symmetry"][0], meta["keypoints_symmetry"][1])
        train = prepare_sequences(pos3d, pos2d, self.train_subjects, source=str(path))
        test = prepare_sequences(pos3d, pos2d, self.test_subjects, source=str(path))
        self.action_names = sorted({action_name(s.action) for s in train + test})

        def windows(seqs: list[PoseSequence], split: str) -> PoseWindows:
            return PoseWindows(
                seqs, self.receptive_field, self.action_names, stride=self.strides[split],
                flip=self.flip and split == "train", keypoints_symmetry=self.keypoints_symmetry,
            )

        return {"train": windows(train, "train"), "val": windows(test, "val"), "test": windows(test, "test")}
