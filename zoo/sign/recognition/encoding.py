"""Landmark encodings for sign recognition: raw, RQE and RQE-SF (Rubaiyeat et al., arXiv 2503.02360).

The landmarks are MediaPipe Holistic's, one array ``(T, L, 3)`` per video, ``x, y, z`` per landmark,
NaN where a part was not detected (a hand out of view). The zoo's layout (:data:`LAYOUT`) is

==============  ===========  =============================================================
part            rows         MediaPipe
==============  ===========  =============================================================
pose            0 .. 32      ``pose_landmarks`` (0 nose, 11/12 left/right shoulder, ...)
left hand       33 .. 53     ``left_hand_landmarks`` (0 wrist, 1-4 thumb, ..., 17-20 pinky)
right hand      54 .. 74     ``right_hand_landmarks``
face            75 .. 542    ``face_landmarks`` (468), optional: ``L`` is 75 or 543
==============  ===========  =============================================================

(the Kaggle GISLR parquet files order the parts face, left hand, pose, right hand; their reader in
:mod:`zoo.sign.recognition.data` reorders them into this layout).

``encode(landmarks, method)`` returns a float32 array of the same shape, NaN where the input (or the
reference it needs) is missing:

- ``"raw"``: the landmarks as MediaPipe gives them (image-normalized x, y; relative z);
- ``"rqe"``, Relative Quantization Encoding: every part relative to a physiological reference point,
  scale-normalized, quantized:

  * the **body** (pose landmarks) relative to the shoulder midpoint of the same frame;
  * each **hand**: its wrist relative to the shoulder midpoint (where the hand is in the signing
    space), its 20 finger landmarks relative to that hand's own wrist (the hand shape);
  * the **face** relative to the nose (pose landmark 0) of the same frame;
  * everything divided by the signer's shoulder width (the median over the video of the 2-D
    distance between the shoulders), so a signer's size and distance to the camera drop out;
  * then quantized: ``clip(round(v / step), -K, K) * step`` with ``K = round(limit / step)``,
    i.e. ``2K + 1`` bins per axis (default ``step = 0.05`` shoulder widths, ``limit = 3``: 121 bins);

- ``"rqe_sf"``, RQE with shoulders fixed: as RQE, but the reference is the shoulder midpoint *of the
  video* (the median over frames) and the two shoulder landmarks are replaced by their median
  positions, so shoulder jitter (MediaPipe's, or a signer shrugging) moves no other landmark and the
  shoulders themselves are constant; the cost is that whole-body sway is no longer removed.

RQE is invariant to translating and to uniformly scaling the whole body in the frame (the tests check
both); it is not rotation-invariant (a tilted camera stays tilted).

Choices where the paper leaves the detail open (written again in docs/sign/recognition.md): the
reference points (shoulder midpoint for the body and the wrists, the wrist for the fingers, the nose
for the face), the scale (median shoulder width per video, in x-y only because MediaPipe's pose z is
not metric), the bins (a uniform ``step`` and ``limit`` in shoulder widths, values kept as bin
centres so the network sees reals), and RQE-SF's fixed shoulders (the per-video median). When a video
has no frame with both shoulders, the reference is the mean of its visible landmarks and the scale 1.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "LAYOUT",
    "METHODS",
    "NUM_BODY_HANDS",
    "NUM_HOLISTIC",
    "POSE",
    "LEFT_HAND",
    "RIGHT_HAND",
    "FACE",
    "SHOULDERS",
    "encode",
    "num_bins",
    "quantize",
    "shoulder_width",
    "check_landmarks",
]

METHODS = ("raw", "rqe", "rqe_sf")
POSE, LEFT_HAND, RIGHT_HAND, FACE = slice(0, 33), slice(33, 54), slice(54, 75), slice(75, 543)
LAYOUT = {"pose": POSE, "left_hand": LEFT_HAND, "right_hand": RIGHT_HAND, "face": FACE}
NUM_BODY_HANDS, NUM_HOLISTIC = 75, 543
NOSE = 0
SHOULDERS = (11, 12)  # pose indices of the left and right shoulder


def check_landmarks(landmarks: np.ndarray, where: str = "landmarks") -> np.ndarray:
    """``landmarks`` as a float array ``(T, 75 | 543, 3)``, or a ValueError naming ``where``."""
    arr = np.asarray(landmarks)
    if arr.ndim != 3 or arr.shape[1] not in (NUM_BODY_HANDS, NUM_HOLISTIC) or arr.shape[2] != 3:
        raise ValueError(
            f"{where}: expected a Holistic landmark array (T, {NUM_BODY_HANDS} or {NUM_HOLISTIC}, 3) "
            f"(pose 33, left hand 21, right hand 21[, face 468]; x, y, z), got shape {arr.shape}"
        )
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{where}: landmarks must be floating point (NaN = missing), got dtype {arr.dtype}")
    if arr.shape[0] < 1:
        raise ValueError(f"{where}: the landmark array has no frames")
    return arr


def num_bins(step: float, limit: float) -> int:
    """Bins per axis of :func:`quantize`: ``2 * round(limit / step) + 1``."""
    return 2 * int(round(limit / step)) + 1


def quantize(values: np.ndarray, step: float, limit: float) -> np.ndarray:
    """Bin centres of ``values``: ``clip(round(v / step), -K, K) * step``, ``K = round(limit / step)``; NaN stays NaN."""
    if step <= 0 or limit < step:
        raise ValueError(f"quantize: need step > 0 and limit >= step, got step={step}, limit={limit}")
    k = int(round(limit / step))
    return np.clip(np.round(values / step), -k, k) * step


def shoulder_width(landmarks: np.ndarray) -> float:
    """Median over frames of the x-y distance between the shoulders (NaN when no frame has both)."""
    pose = np.asarray(landmarks, dtype=np.float64)[:, POSE]
    d = np.linalg.norm(pose[:, SHOULDERS[0], :2] - pose[:, SHOULDERS[1], :2], axis=-1)  # (T,)
    d = d[np.isfinite(d) & (d > 0)]
    return float(np.median(d)) if d.size else float("nan")


def _fill_missing(ref: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """``ref (T, 3)`` with its NaN rows replaced by ``fallback (3,)``."""
    missing = ~np.isfinite(ref).all(axis=-1)  # (T,)
    ref = ref.copy()
    ref[missing] = fallback
    return ref


def encode(
    landmarks: np.ndarray, method: str = "rqe", *, step: float = 0.05, limit: float = 3.0, quantized: bool = True
) -> np.ndarray:
    """Encode one video's Holistic landmarks ``(T, 75 | 543, 3)`` (NaN = missing) with ``method``.

    ``method`` is ``"raw"``, ``"rqe"`` or ``"rqe_sf"`` (see the module docstring); ``step`` and
    ``limit`` are the quantization bin width and range in shoulder widths; ``quantized=False`` returns
    RQE's relative, scale-normalized coordinates before binning. Returns float32 of the input's shape.
    """
    if method not in METHODS:
        raise ValueError(f"encode: method must be one of {METHODS}, got {method!r}")
    arr = check_landmarks(landmarks)
    if method == "raw":
        return arr.astype(np.float32, copy=True)
    x = arr.astype(np.float64)  # (T, L, 3); float64 so invariances hold to the last bin
    pose = x[:, POSE]  # (T, 33, 3)
    scale = shoulder_width(x)
    mid = pose[:, SHOULDERS].mean(axis=1)  # (T, 3), NaN where a shoulder is missing
    if np.isfinite(scale):
        fallback = np.nanmedian(mid, axis=0)  # (3,)
    else:  # no shoulders anywhere: the visible landmarks' mean, unit scale
        scale = 1.0
        visible = x[np.isfinite(x).all(axis=-1)]  # (N, 3)
        fallback = visible.mean(axis=0) if len(visible) else np.zeros(3)
    if method == "rqe_sf":
        ref = np.broadcast_to(fallback, mid.shape)  # (T, 3): one reference for the video
        fixed = np.nanmedian(pose[:, SHOULDERS], axis=0)  # (2, 3)
        pose = pose.copy()
        pose[:, SHOULDERS] = np.where(np.isfinite(fixed), fixed, fallback)  # constant shoulders
    else:
        ref = _fill_missing(mid, fallback)  # (T, 3): the frame's own shoulder midpoint
    out = np.full_like(x, np.nan)  # (T, L, 3)
    out[:, POSE] = (pose - ref[:, None]) / scale
    for hand in (LEFT_HAND, RIGHT_HAND):
        h = x[:, hand]  # (T, 21, 3)
        wrist = h[:, :1]  # (T, 1, 3)
        out[:, hand.start] = (wrist[:, 0] - ref) / scale  # the hand's place in the signing space
        out[:, hand.start + 1 : hand.stop] = (h[:, 1:] - wrist) / scale  # the hand shape
    if x.shape[1] == NUM_HOLISTIC:
        nose = _fill_missing(x[:, NOSE], fallback)  # (T, 3)
        out[:, FACE] = (x[:, FACE] - nose[:, None]) / scale
    if quantized:
        out = quantize(out, step, limit)
    return out.astype(np.float32)
