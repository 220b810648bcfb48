"""``python -m zoo.sign.extract``: video files -> Holistic landmark files, or a shared landmark dump -> ``.npy``.

    python -m zoo.sign.extract videos/ landmarks/                 # every video under videos/ (MediaPipe)
    python -m zoo.sign.extract clip.mp4 landmarks/
    python -m zoo.sign.extract gislr/train_landmark_files/ landmarks/   # GISLR parquet -> .npy

Videos go through MediaPipe Holistic (the optional extra: ``pip install 'attention-zoo[mediapipe]'``;
its 0.10.x wheels carry the models, so extraction runs offline). Every frame becomes a row of the
zoo layout (:data:`zoo.sign.recognition.encoding.LAYOUT`: pose 33, left hand 21, right hand 21, face
468; x, y, z), NaN where Holistic found no such part; the output is ``<stem>.npy`` float32
``(T, 543, 3)``. Landmark dumps people already share (``.npy``, Kaggle GISLR ``.parquet``) are read
with :func:`zoo.sign.recognition.data.read_landmarks` and rewritten in the same layout; unreadable
inputs are skipped with one counted warning.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from zoo.training.data import read_each

__all__ = ["VIDEO_SUFFIXES", "extract_video", "convert", "main"]

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
_PARTS = (("pose_landmarks", 0, 33), ("left_hand_landmarks", 33, 21), ("right_hand_landmarks", 54, 21), ("face_landmarks", 75, 468))


def _mediapipe():
    try:
        import mediapipe as mp
    except ImportError as err:
        raise ImportError(
            "zoo.sign.extract needs MediaPipe Holistic to read videos: pip install 'attention-zoo[mediapipe]' "
            "(mediapipe 0.10.x, whose wheels carry the models)"
        ) from err
    return mp


def extract_video(path: str | Path, model_complexity: int = 1) -> np.ndarray:
    """Run MediaPipe Holistic over a video (decoded with PyAV): float32 ``(T, 543, 3)``, NaN = not detected."""
    import av

    mp = _mediapipe()
    frames = []
    with mp.solutions.holistic.Holistic(static_image_mode=False, model_complexity=model_complexity) as holistic:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                result = holistic.process(frame.to_ndarray(format="rgb24"))
                row = np.full((543, 3), np.nan, dtype=np.float32)
                for attr, start, size in _PARTS:
                    part = getattr(result, attr)
                    if part is not None:
                        row[start : start + size] = [(p.x, p.y, p.z) for p in part.landmark][:size]
                frames.append(row)
    if not frames:
        raise ValueError(f"{path}: no video frames could be decoded")
    return np.stack(frames)  # (T, 543, 3)


def _inputs(source: Path) -> list[Path]:
    if source.is_file():
        return [source]
    if not source.is_dir():
        raise ValueError(f"zoo.sign.extract: {source} is neither a file nor a folder")
    found = sorted(p for p in source.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES + (".npy", ".parquet"))
    if not found:
        raise ValueError(f"zoo.sign.extract: no videos ({', '.join(VIDEO_SUFFIXES)}) or landmark files under {source}")
    return found


def _read_one(path: Path) -> np.ndarray:
    if path.suffix.lower() in VIDEO_SUFFIXES:
        return extract_video(path)
    from zoo.sign.recognition.data import read_landmarks

    return read_landmarks(path)


def convert(source: str | Path, out_dir: str | Path) -> list[Path]:
    """Write ``out_dir/<stem>.npy`` for every video or landmark file at ``source``; return the written paths."""
    inputs = _inputs(Path(source))
    if any(p.suffix.lower() in VIDEO_SUFFIXES for p in inputs):
        _mediapipe()  # fail once, clearly, before the per-file loop would skip every video
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path, arr in read_each(inputs, _read_one, what=f"inputs under {source}", errors=(OSError, ValueError)):
        target = out_dir / f"{path.stem}.npy"
        np.save(target, arr.astype(np.float32))
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> list[Path]:
    parser = argparse.ArgumentParser(prog="python -m zoo.sign.extract", description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a video, a landmark file (.npy / GISLR .parquet) or a folder of them")
    parser.add_argument("out_dir", help="where <stem>.npy landmark files are written")
    args = parser.parse_args(argv)
    written = convert(args.source, args.out_dir)
    print(f"wrote {len(written)} landmark files to {args.out_dir}")
    return written


if __name__ == "__main__":
    main()
