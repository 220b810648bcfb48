"""``python -m zoo.sign.extract``: shared dumps rewritten as .npy; videos through MediaPipe when installed."""

from __future__ import annotations

import importlib.util

import numpy as np
import pandas as pd
import pytest

from zoo.sign import extract
from zoo.sign.recognition.data import read_landmark_npy

HAS_MEDIAPIPE = importlib.util.find_spec("mediapipe") is not None


def test_dumps_are_converted_and_bad_ones_counted(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    x = np.random.default_rng(0).normal(size=(4, 75, 3)).astype(np.float32)
    np.save(src / "a.npy", x)
    rows = [(0, "pose", i, 0.1, 0.2, 0.3) for i in range(33)]
    pd.DataFrame(rows, columns=["frame", "type", "landmark_index", "x", "y", "z"]).to_parquet(src / "b.parquet")
    (src / "c.npy").write_bytes(b"not numpy")
    with pytest.warns(UserWarning, match="skipped 1 of 3"):
        written = extract.main([str(src), str(tmp_path / "out")])
    assert sorted(p.name for p in written) == ["a.npy", "b.npy"]
    np.testing.assert_array_equal(read_landmark_npy(tmp_path / "out" / "a.npy"), x)
    b = read_landmark_npy(tmp_path / "out" / "b.npy")
    assert b.shape == (1, 543, 3) and np.isnan(b[0, 33:]).all() and np.allclose(b[0, :33], [0.1, 0.2, 0.3])


@pytest.mark.skipif(HAS_MEDIAPIPE, reason="mediapipe is installed")
def test_video_without_mediapipe_names_the_extra(tmp_path):
    (tmp_path / "clip.mp4").write_bytes(b"")
    with pytest.raises(ImportError, match=r"attention-zoo\[mediapipe\]"):
        extract.convert(tmp_path / "clip.mp4", tmp_path / "out")


@pytest.mark.skipif(not HAS_MEDIAPIPE, reason="needs the optional extra: pip install 'attention-zoo[mediapipe]'")
def test_video_through_holistic(tmp_path):
    import av

    path = tmp_path / "clip.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for i in range(5):
            frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), 20 * i, dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    arr = extract.extract_video(path)
    assert arr.shape == (5, 543, 3) and arr.dtype == np.float32
