"""Readers on fixtures in the real formats: mp4 files written here (one corrupt, one short), MSR-VTT json/csv,
MSVD json + lists, LSMDC tab-separated csv; frame sampling; the batches the module reads."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from zoo.vision.retrieval.data import (
    VideoRetrievalDataModule,
    frame_indices,
    probe_video,
    read_frames,
    read_lsmdc,
    read_msrvtt,
    read_msvd,
    write_mp4,
    write_synthetic_msrvtt,
)


def _clip(frames: int, value: int = 0) -> np.ndarray:
    x = np.zeros((frames, 32, 32, 3), dtype=np.uint8)
    for t in range(frames):
        x[t, :, : 2 + t] = 40 + 8 * t + value  # a growing bar: each frame distinguishable
    return x


def test_mp4_round_trip_and_frame_choice(tmp_path):
    write_mp4(tmp_path / "a.mp4", _clip(20))
    assert probe_video(tmp_path / "a.mp4") == 20
    frames = read_frames(tmp_path / "a.mp4", [0, 9, 19, 30])  # 30 is past the end: the last frame
    assert frames.shape == (4, 3, 32, 32) and frames.dtype == torch.uint8
    widths = [(f[0].float().mean(0) > 20).sum().item() for f in frames]
    assert widths[0] < widths[1] < widths[2] == widths[3]


def test_frame_indices_uniform_and_random():
    assert frame_indices(24, 12, random=False) == [0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22]
    assert frame_indices(120, 12, random=False)[:2] == [4, 14]  # the centre of each 10-frame segment
    torch.manual_seed(0)
    idx = frame_indices(120, 12, random=True)
    assert all(10 * s <= i < 10 * (s + 1) for s, i in enumerate(idx))
    # short videos: every frame once, then the last one repeated (the official padding)
    assert frame_indices(3, 6, random=False) == [0, 1, 2, 2, 2, 2] == frame_indices(3, 6, random=True)


def _msrvtt(root, corrupt: bool = True, short: bool = True):
    write_synthetic_msrvtt(root, num_train=3, num_val=1, num_test=2, frames=12, size=32)
    if corrupt:
        (root / "videos" / "video1.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
    if short:
        write_mp4(root / "videos" / "video2.mp4", _clip(3))
    return root


def test_msrvtt_reader_splits_and_skips_corrupt_videos(tmp_path):
    root = _msrvtt(tmp_path / "msrvtt")
    data = json.loads((root / "MSRVTT_data.json").read_text())
    assert {"videos", "sentences"} <= data.keys() and data["videos"][3]["split"] == "validate"
    assert (root / "MSRVTT_JSFUSION_test.csv").read_text().splitlines()[0] == "key,vid_key,video_id,sentence"
    splits = read_msrvtt(root, "9k")
    assert [v for v, _, _ in splits["train"]] == ["video0", "video1", "video2"]
    assert [v for v, _, _ in splits["val"]] == ["video3"]  # the json's validate videos leave the training csv
    assert [len(c) for _, _, c in splits["test"]] == [1, 1]
    dm = VideoRetrievalDataModule(str(root), image_size=32, context_length=16, num_frames=6, batch_size=4)
    with pytest.warns(UserWarning) as record:
        dm.setup()
    messages = [str(w.message) for w in record]
    assert any("skipped 1 of 3 train videos" in m and "video1.mp4" in m for m in messages)
    assert any("fewer than 6 frames" in m and "video2.mp4" in m for m in messages)
    assert len(dm.datasets["train"]) == 2 * 3  # two videos x three captions
    batch = next(iter(dm.val_dataloader()))
    assert batch["frames"].shape == (1, 6, 3, 32, 32) and batch["tokens"].shape == (3, 16)
    assert batch["text_video"].tolist() == [0, 0, 0] and len(batch["captions"]) == 3


def test_msrvtt_errors_name_the_file(tmp_path):
    root = _msrvtt(tmp_path / "m", corrupt=False, short=False)
    (root / "MSRVTT_JSFUSION_test.csv").write_text("video_id,sentence\nvideo4,a cat\n")
    with pytest.raises(ValueError, match="MSRVTT_JSFUSION_test.csv: expected columns"):
        read_msrvtt(root)
    (root / "MSRVTT_data.json").write_text("{not json")
    with pytest.raises(ValueError, match="MSRVTT_data.json: not valid JSON"):
        read_msrvtt(root)


def test_msvd_and_lsmdc_readers(tmp_path):
    msvd = tmp_path / "msvd"
    (msvd / "YouTubeClips").mkdir(parents=True)
    for vid in ("abc_1_5", "def_2_9", "ghi_0_3"):
        write_mp4(msvd / "YouTubeClips" / f"{vid}.mp4", _clip(6))
    (msvd / "captions_msvd.json").write_text(json.dumps({"abc_1_5": ["a man", "a person"], "def_2_9": ["a dog"], "ghi_0_3": ["x"]}))
    for name, ids in (("train_list.txt", "abc_1_5\n"), ("val_list.txt", "def_2_9\n"), ("test_list.txt", "ghi_0_3\ndef_2_9\n")):
        (msvd / name).write_text(ids)
    splits = read_msvd(msvd)
    assert splits["train"][0][2] == ["a man", "a person"] and len(splits["test"]) == 2
    dm = VideoRetrievalDataModule(str(msvd), dataset="msvd", image_size=32, context_length=16, num_frames=4)
    dm.setup()
    assert len(dm.datasets["train"]) == 2 and len(dm.datasets["test"]) == 2

    lsmdc = tmp_path / "lsmdc"
    (lsmdc / "videos" / "0001_Movie").mkdir(parents=True)
    for i in range(3):
        write_mp4(lsmdc / "videos" / "0001_Movie" / f"0001_Movie_00.00.0{i}.000-00.00.0{i}.500.mp4", _clip(5))
    for i, name in enumerate(("LSMDC16_annos_training.csv", "LSMDC16_annos_val.csv", "LSMDC16_challenge_1000_publictect.csv")):
        (lsmdc / name).write_text(f"0001_Movie_00.00.0{i}.000-00.00.0{i}.500\t0.0\t0.5\t0.0\t0.5\tSomeone opens a door.\n")
    splits = read_lsmdc(lsmdc)
    assert splits["val"][0][2] == ["Someone opens a door."] and splits["test"][0][1] is not None
    (lsmdc / "LSMDC16_annos_val.csv").write_text("\n\tonly a tab\n")
    with pytest.raises(ValueError, match="LSMDC16_annos_val.csv:2"):
        read_lsmdc(lsmdc)


def test_offline_default_is_the_synthetic_msrvtt(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path))
    dm = VideoRetrievalDataModule(image_size=32, context_length=16, num_frames=4, synthetic=(3, 2, 2), batch_size=3, hflip=0.0)
    dm.setup()
    assert (tmp_path / "retrieval" / "synthetic_msrvtt_v1_3_2_2" / "videos" / "video0.mp4").is_file()
    batch = next(iter(dm.train_dataloader()))
    assert batch["frames"].shape == (3, 4, 3, 32, 32) and batch["text_video"].tolist() == [0, 1, 2]
    assert batch["tokens"][:, 0].eq(49406).all()  # open_clip's start-of-text
    with pytest.raises(ValueError, match="dataset must be one of"):
        VideoRetrievalDataModule(dataset="youcook")
