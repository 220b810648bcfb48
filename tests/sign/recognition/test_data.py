"""Readers on fixtures in the real formats: .npy, GISLR parquet, WLASL json (with a missing video), folders."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from zoo.sign.recognition.data import (
    Augment,
    SignDataModule,
    collate_signs,
    generate_synthetic_signs,
    read_gislr_parquet,
    read_landmark_npy,
    read_wlasl_index,
)
from zoo.sign.recognition.encoding import FACE, LEFT_HAND, POSE, RIGHT_HAND


def _gislr_frame(path, frames=(20, 21, 23), drop_left=True):
    rows = []
    for f in frames:
        for kind, n in (("face", 468), ("left_hand", 21), ("pose", 33), ("right_hand", 21)):
            if kind == "left_hand" and drop_left and f == frames[0]:
                continue
            for i in range(n):
                rows.append((f, f"{f}-{kind}-{i}", kind, i, 0.001 * i + f, 0.5, {"face": 1, "left_hand": 2, "pose": 3, "right_hand": 4}[kind]))
    df = pd.DataFrame(rows, columns=["frame", "row_id", "type", "landmark_index", "x", "y", "z"])
    df.to_parquet(path)
    return df


def test_gislr_parquet_is_reordered(tmp_path):
    _gislr_frame(tmp_path / "1.parquet")
    x = read_gislr_parquet(tmp_path / "1.parquet")
    assert x.shape == (3, 543, 3) and x.dtype == np.float32
    assert (x[1, POSE, 2] == 3).all() and (x[1, LEFT_HAND, 2] == 2).all() and (x[1, RIGHT_HAND, 2] == 4).all()
    assert (x[1, FACE, 2] == 1).all()
    assert np.isnan(x[0, LEFT_HAND]).all() and not np.isnan(x[1, LEFT_HAND]).any()
    np.testing.assert_allclose(x[:, 0, 0], [20, 21, 23])  # frames in order, pose landmark 0


def test_gislr_parquet_errors(tmp_path):
    pd.DataFrame({"frame": [0], "type": ["pose"], "x": [0.0]}).to_parquet(tmp_path / "bad.parquet")
    with pytest.raises(ValueError, match="missing"):
        read_gislr_parquet(tmp_path / "bad.parquet")
    pd.DataFrame({"frame": [0], "type": ["pose"], "landmark_index": [40], "x": [0.0], "y": [0.0], "z": [0.0]}).to_parquet(
        tmp_path / "range.parquet"
    )
    with pytest.raises(ValueError, match="landmark_index"):
        read_gislr_parquet(tmp_path / "range.parquet")


def test_npy_reader_layouts(tmp_path):
    x = np.random.default_rng(0).normal(size=(5, 543, 3)).astype(np.float32)
    np.save(tmp_path / "a.npy", x)
    np.testing.assert_array_equal(read_landmark_npy(tmp_path / "a.npy"), x)
    np.save(tmp_path / "flat.npy", x[:, :75].reshape(5, -1))
    np.testing.assert_array_equal(read_landmark_npy(tmp_path / "flat.npy"), x[:, :75])
    # GISLR order: face, left hand, pose, right hand
    g = np.concatenate([x[:, FACE], x[:, LEFT_HAND], x[:, POSE], x[:, RIGHT_HAND]], axis=1)
    np.save(tmp_path / "g.npy", g)
    np.testing.assert_array_equal(read_landmark_npy(tmp_path / "g.npy", layout="gislr"), x)
    np.save(tmp_path / "bad.npy", np.zeros((5, 10, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="bad.npy"):
        read_landmark_npy(tmp_path / "bad.npy")


def test_wlasl_missing_video_is_skipped_with_a_count(tmp_path):
    path = generate_synthetic_signs(tmp_path, num_glosses=3, num_signers=4, repeats=1, test_signers=1, val_signers=1)
    data = json.loads(path.read_text())
    data[0]["instances"].append({"video_id": "gone", "split": "train", "signer_id": 0, "frame_start": 1, "frame_end": -1})
    data[1]["instances"][0]["frame_start"], data[1]["instances"][0]["frame_end"] = 3, 6
    path.write_text(json.dumps(data))
    (tmp_path / "landmarks" / f"{data[2]['instances'][0]['video_id']}.npy").write_bytes(b"corrupt")
    examples, names = read_wlasl_index(path, num_glosses=2)
    assert names == ["sign00", "sign01"] and len(examples) == 9
    dm = SignDataModule(path=str(path), num_glosses=3, batch_size=2)
    with pytest.warns(UserWarning, match=r"skipped 2 of 13"):
        dm.setup()
    assert dm.num_classes == 3
    assert dm.signers["test"] == ["3"] and "3" not in dm.signers["train"]  # unseen test signer
    item = next(x for x, y in zip(dm.datasets["train"].sequences, dm.datasets["train"].labels) if y == 1 and len(x) == 4)
    assert item.shape == (4, 75, 3)  # frames 3..6, 1-based inclusive


def test_folder_and_gislr_layouts(tmp_path):
    rng = np.random.default_rng(0)
    for gloss in ("hello", "thanks"):
        (tmp_path / "f" / gloss).mkdir(parents=True)
        for i in range(12):
            np.save(tmp_path / "f" / gloss / f"v{i}.npy", rng.normal(size=(6, 75, 3)).astype(np.float32))
    dm = SignDataModule(path=str(tmp_path / "f"), val_fraction=0.25, test_fraction=0.25)
    dm.setup()
    assert dm.class_names == ["hello", "thanks"] and sum(len(d) for d in dm.datasets.values()) == 24
    assert all(len(d) > 0 for d in dm.datasets.values())
    root = tmp_path / "gislr"
    (root / "files").mkdir(parents=True)
    rows = []
    for k in range(8):
        _gislr_frame(root / "files" / f"{k}.parquet")
        rows.append({"path": f"files/{k}.parquet", "participant_id": 100 + k % 4, "sequence_id": k, "sign": ["tv", "go"][k % 2]})
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)
    dm = SignDataModule(path=str(root), val_fraction=0.25, test_fraction=0.25)
    dm.setup()
    assert dm.class_names == ["go", "tv"]
    assert not set(dm.signers["test"]) & set(dm.signers["train"])


def test_items_batches_and_augmentation(tmp_path):
    path = generate_synthetic_signs(tmp_path, num_glosses=2, num_signers=4, repeats=2, test_signers=1, val_signers=1)
    dm = SignDataModule(path=str(path), max_frames=16, augment=Augment(), batch_size=3)
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape[0] == 3 and batch["x"].shape[1] <= 16 and batch["x"].shape[2:] == (75, 3)
    assert batch["mask"].dtype == torch.bool and batch["y"].dtype == torch.long
    x = dm.datasets["train"].sequences[0]
    out = Augment(rotation=0, scale=(2, 2), shift=0, speed=(1, 1), drop_frames=0)(x, np.random.default_rng(0))
    assert out.shape == x.shape and not np.allclose(np.nan_to_num(out), np.nan_to_num(x))
    b = collate_signs([{"x": torch.ones(2, 75, 3), "y": 0}, {"x": torch.ones(4, 75, 3), "y": 1}])
    assert b["mask"].tolist() == [[True, True, False, False], [True] * 4]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="encoding"):
        SignDataModule(encoding="pca")
    with pytest.raises(ValueError, match="num_landmarks"):
        SignDataModule(num_landmarks=100)
