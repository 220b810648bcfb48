"""The VideoPose3D npz readers on fixtures in the real nested-dict format, windows and flips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.vision.pose import cameras
from zoo.vision.pose.data import (
    H36M_JOINTS_LEFT,
    H36M_JOINTS_RIGHT,
    H36M_KEPT_JOINTS,
    Pose3DDataModule,
    PoseWindows,
    flip_pose,
    generate_synthetic,
    prepare_sequences,
    read_positions_2d,
    read_positions_3d,
)

META = {"num_joints": 17, "keypoints_symmetry": [list(H36M_JOINTS_LEFT), list(H36M_JOINTS_RIGHT)]}


def _write(root: Path, pos3d: dict, pos2d: dict, meta: dict = META) -> Path:
    np.savez_compressed(root / "data_3d_h36m.npz", positions_3d=pos3d)
    np.savez_compressed(root / "data_2d_h36m_gt.npz", positions_2d=pos2d, metadata=meta)
    return root


def test_readers_reduce_joints_and_skip_bad_sequences(tmp_path):
    rng = np.random.default_rng(0)
    good = rng.normal(size=(6, 32, 3)).astype(np.float32)
    bad = good.copy()
    bad[2, 5, 0] = np.nan
    _write(tmp_path, {"S1": {"Walking 1": good, "Eating": bad}}, {"S1": {"Walking 1": [rng.normal(size=(6, 17, 2))] * 4}})
    with pytest.warns(UserWarning, match=r"skipped 1 of 2 3-D sequences.*S1/Eating.*non-finite"):
        pos3d = read_positions_3d(tmp_path / "data_3d_h36m.npz")
    assert list(pos3d["S1"]) == ["Walking 1"]
    np.testing.assert_array_equal(pos3d["S1"]["Walking 1"], good[:, H36M_KEPT_JOINTS])
    pos2d, meta = read_positions_2d(tmp_path / "data_2d_h36m_gt.npz")
    assert len(pos2d["S1"]["Walking 1"]) == 4 and meta["num_joints"] == 17


def test_readers_refuse_wrong_files(tmp_path):
    (tmp_path / "data_3d_h36m.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="data_3d_h36m.npz: not a readable npz"):
        read_positions_3d(tmp_path / "data_3d_h36m.npz")
    np.savez(tmp_path / "data_3d_h36m.npz", other=np.zeros(3))
    with pytest.raises(ValueError, match="no 'positions_3d'"):
        read_positions_3d(tmp_path / "data_3d_h36m.npz")
    np.savez(tmp_path / "d2.npz", positions_2d={"S1": {}}, metadata={"num_joints": 17})
    with pytest.raises(ValueError, match="keypoints_symmetry"):
        read_positions_2d(tmp_path / "d2.npz")
    with pytest.raises(ValueError, match="does not exist"):
        Pose3DDataModule(path=str(tmp_path), source="cpn_ft_h36m_dbb").setup()


def test_reader_never_runs_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    np.savez(tmp_path / "data_3d_h36m.npz", positions_3d=np.array({"S1": {"x": Evil()}}, dtype=object))
    with pytest.raises(ValueError, match="refusing to unpickle builtins.print"):
        read_positions_3d(tmp_path / "data_3d_h36m.npz")


def test_prepare_targets_are_camera_frame_root_relative_and_screen_normalized(tmp_path):
    generate_synthetic(tmp_path, subjects=("S1", "S11"), actions=("Directions", "Walking"), frames=8)
    pos3d = read_positions_3d(tmp_path / "data_3d_h36m.npz")
    pos2d, _ = read_positions_2d(tmp_path / "data_2d_h36m_gt.npz")
    seqs = prepare_sequences(pos3d, pos2d, ("S1", "S11"))
    assert {(s.subject, s.action) for s in seqs} == {("S1", "Directions 1"), ("S1", "Walking 1"), ("S11", "Walking 1")}
    s = next(q for q in seqs if q.subject == "S1" and q.camera == 2)
    cam = cameras.camera("S1", 2)
    world = pos3d["S1"][s.action]
    expected = cameras.world_to_camera(world, cam.orientation, cam.translation)
    np.testing.assert_allclose(s.positions, expected - expected[:, :1], atol=1e-5)
    assert (s.positions[:, 0] == 0).all()
    # the 2-D keypoints are the projection of the 3-D joints through that camera, normalized
    np.testing.assert_allclose(s.keypoints, cameras.project(expected, cam.intrinsic), atol=1e-4)
    assert np.abs(s.keypoints).max() < 1


def test_windows_pad_edges_and_flip_swaps_sides(tmp_path):
    generate_synthetic(tmp_path, subjects=("S1",), actions=("Walking",), frames=6)
    seqs = prepare_sequences(read_positions_3d(tmp_path / "data_3d_h36m.npz"), read_positions_2d(tmp_path / "data_2d_h36m_gt.npz")[0], ("S1",))
    ds = PoseWindows(seqs[:1], 5, ["Walking"])
    item = ds[0]
    assert item["inputs"].shape == (5, 17, 2) and item["target"].shape == (17, 3)
    torch.testing.assert_close(item["inputs"][0], item["inputs"][2])  # frame 0 replicated at the edge
    torch.testing.assert_close(item["prev_target"], item["target"])
    x = torch.arange(17 * 3, dtype=torch.float32).view(17, 3)
    flipped = flip_pose(x, H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT)
    assert flipped[1, 0] == -x[4, 0] and flipped[4, 1] == x[1, 1] and flipped[14, 2] == x[11, 2]
    assert flipped[0, 0] == -x[0, 0] and flipped[7, 1] == x[7, 1]  # centre joints only mirrored
    torch.testing.assert_close(flip_pose(flipped, H36M_JOINTS_LEFT, H36M_JOINTS_RIGHT), x)


def test_datamodule_offline_default_splits(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path))
    dm = Pose3DDataModule(receptive_field=9, synthetic_frames=10, batch_size=4, test_stride=5)
    dm.setup()
    assert (tmp_path / "vision/pose/synthetic_h36m_v1_10/data_2d_h36m_gt.npz").is_file()
    train, test = dm.datasets["train"], dm.datasets["test"]
    assert {s.subject for s in train.sequences} == {"S1", "S5", "S6", "S7", "S8"}
    assert {s.subject for s in test.sequences} == {"S9", "S11"}
    assert ("S11", "Directions 1") not in {(s.subject, s.action) for s in test.sequences}
    assert len(train) == 5 * 5 * 4 * 10 and len(test) == (2 * 5 - 1) * 4 * 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["inputs"].shape == (4, 9, 17, 2) and batch["action"].shape == (4,)
