"""The stereo readers on fixtures written in the benchmarks' real formats, augmentation, the generator."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from zoo.vision.stereo.data import (
    StereoAugment,
    StereoDataModule,
    StereoPairs,
    eth3d_samples,
    generate_synthetic,
    kitti_samples,
    middlebury_samples,
    read_image,
    read_kitti_disparity,
    read_middlebury_calib,
    read_pfm,
    read_sample,
    render_pair,
    sceneflow_samples,
    write_pfm,
)


def _png(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _kitti_png(path: Path, disp: np.ndarray) -> Path:
    """A KITTI disparity PNG written by hand: uint16, round(d * 256), 0 = invalid."""
    raw = np.where(np.isfinite(disp) & (disp > 0), np.round(np.nan_to_num(disp) * 256), 0).astype(np.uint16)
    return _png(path, raw)


# ------------------------------------------------------------------------------------------ PFM
def test_pfm_big_endian_written_by_hand_is_flipped_to_top_to_bottom(tmp_path):
    # 2 rows x 3 columns, stored bottom row first, big-endian (positive scale), one value +inf
    bottom, top = [4.0, 5.0, float("inf")], [1.0, 2.0, 3.0]
    data = struct.pack(">6f", *bottom, *top)
    path = tmp_path / "big.pfm"
    path.write_bytes(b"Pf\n3 2\n1.0\n" + data)
    out = read_pfm(path)
    assert out.dtype == np.float32 and out.shape == (2, 3)
    np.testing.assert_array_equal(out[0], top)
    np.testing.assert_array_equal(out[1], bottom)


def test_pfm_little_endian_colour_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    grey = rng.normal(size=(5, 7)).astype(np.float32)
    colour = rng.normal(size=(4, 6, 3)).astype(np.float32)
    for image, little in ((grey, True), (grey, False), (colour, True), (colour, False)):
        path = write_pfm(tmp_path / f"x_{image.ndim}_{little}.pfm", image, little_endian=little)
        header = path.read_bytes().split(b"\n")[:3]
        assert header[0] == (b"PF" if image.ndim == 3 else b"Pf") and float(header[2]) == (-1.0 if little else 1.0)
        np.testing.assert_array_equal(read_pfm(path), image)
    # little-endian data really is little-endian: the first stored float is the bottom-left pixel
    path = write_pfm(tmp_path / "le.pfm", grey, little_endian=True)
    offset = len(b"Pf\n7 5\n-1.0\n")
    assert struct.unpack("<f", path.read_bytes()[offset : offset + 4])[0] == grey[-1, 0]


@pytest.mark.parametrize(
    "content, match",
    [
        (b"P6\n3 2\n255\n", "not a PFM file"),
        (b"Pf\n3\n", "header ends"),
        (b"Pf\nthree 2\n-1.0\n", "bad PFM header"),
        (b"Pf\n3 2\n0\n" + bytes(24), "scale 0"),
        (b"Pf\n3 2\n-1.0\n" + bytes(20), "has 5 floats"),
    ],
    ids=["magic", "short-header", "text-size", "zero-scale", "truncated"],
)
def test_pfm_bad_files_fail_naming_the_file(tmp_path, content, match):
    path = tmp_path / "bad.pfm"
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as err:
        read_pfm(path)
    assert "bad.pfm" in str(err.value)


# ------------------------------------------------------------------------------------------ KITTI
def test_kitti_disparity_uint16_over_256_zero_invalid(tmp_path):
    raw = np.array([[0, 256, 513], [65535, 0, 1]], dtype=np.uint16)
    path = _png(tmp_path / "000000_10.png", raw)
    with Image.open(path) as img:
        assert img.mode.startswith("I")  # a real 16-bit PNG
    disp, valid = read_kitti_disparity(path)
    np.testing.assert_array_equal(valid, raw > 0)
    np.testing.assert_allclose(disp, raw / 256.0)
    _png(tmp_path / "eight.png", raw.astype(np.uint8))
    with pytest.raises(ValueError, match="eight.png.*16-bit"):
        read_kitti_disparity(tmp_path / "eight.png")


@pytest.mark.parametrize("version", [2015, 2012])
def test_kitti_layouts(tmp_path, version):
    dirs = {2015: ("image_2", "image_3", "disp_occ_0", "disp_noc_0"), 2012: ("colored_0", "colored_1", "disp_occ", "disp_noc")}
    left, right, occ, noc = (tmp_path / "training" / d for d in dirs[version])
    disp = np.full((6, 8), 3.5, dtype=np.float32)
    disp[0, 0] = 0  # invalid
    disp_noc = disp.copy()
    disp_noc[:, -2:] = 0  # occluded: in disp_occ but not in disp_noc
    for i in range(2):
        _png(left / f"00000{i}_10.png", _rgb(6, 8, i))
        _png(right / f"00000{i}_10.png", _rgb(6, 8, i + 5))
        _png(left / f"00000{i}_11.png", _rgb(6, 8, i))  # the second frame has no ground truth
        _kitti_png(occ / f"00000{i}_10.png", disp)
        _kitti_png(noc / f"00000{i}_10.png", disp_noc)
    samples = kitti_samples(tmp_path, version)
    assert [s.name for s in samples] == ["000000_10", "000001_10"]
    item = read_sample(samples[1])
    assert item["left"].shape == (6, 8, 3) and item["left"].max() <= 1
    np.testing.assert_allclose(item["disparity"][1:], 3.5)
    assert not item["valid"][0, 0] and item["valid"].sum() == 47
    assert item["noc"].sum() == 47 - 12 and not item["noc"][:, -2:].any()


# ------------------------------------------------------------------------------------------ Middlebury / ETH3D
CALIB = """cam0=[1758.23 0 953.34; 0 1758.23 552.29; 0 0 1]
cam1=[1758.23 0 953.34; 0 1758.23 552.29; 0 0 1]
doffs=0
baseline=111.53
width=8
height=6
ndisp=290
isint=0
vmin=55
vmax=142
dyavg=0
dymax=0
"""


def _scene(folder: Path, gt_folder: Path | None = None, seed: int = 0) -> np.ndarray:
    gt_folder = gt_folder or folder
    _png(folder / "im0.png", _rgb(6, 8, seed))
    _png(folder / "im1.png", _rgb(6, 8, seed + 1))
    (folder / "calib.txt").write_text(CALIB)
    disp = np.linspace(1, 20, 48, dtype=np.float32).reshape(6, 8)
    disp[2, 3] = np.inf  # Middlebury's invalid
    write_pfm(gt_folder / "disp0GT.pfm", disp)
    mask = np.full((6, 8), 255, dtype=np.uint8)
    mask[:, :2] = 128  # occluded
    mask[5, 7] = 0  # unknown
    _png(gt_folder / "mask0nocc.png", mask)
    return disp


def test_middlebury_folder_with_calib(tmp_path):
    disp = _scene(tmp_path / "trainingQ" / "Adirondack")
    calib = read_middlebury_calib(tmp_path / "trainingQ" / "Adirondack" / "calib.txt")
    assert calib["ndisp"] == 290 and isinstance(calib["ndisp"], int) and calib["baseline"] == pytest.approx(111.53)
    assert calib["cam0"].shape == (3, 3) and calib["cam0"][0, 2] == pytest.approx(953.34)
    (samples,) = middlebury_samples(tmp_path)
    item = read_sample(samples)
    assert not item["valid"][2, 3] and item["valid"].sum() == 47
    np.testing.assert_array_equal(item["disparity"][item["valid"]], disp[np.isfinite(disp)])
    expected_noc = np.ones((6, 8), dtype=bool)
    expected_noc[:, :2] = False
    expected_noc[5, 7] = expected_noc[2, 3] = False
    np.testing.assert_array_equal(item["noc"], expected_noc)
    bad = tmp_path / "bad_calib.txt"
    bad.write_text("width=8\n")
    with pytest.raises(ValueError, match="bad_calib.txt: no 'ndisp='"):
        read_middlebury_calib(bad)
    bad.write_text("ndisp 290\n")
    with pytest.raises(ValueError, match=r"bad_calib.txt:1: expected 'key=value'"):
        read_middlebury_calib(bad)


def test_eth3d_ground_truth_in_its_own_tree(tmp_path):
    _scene(tmp_path / "two_view_training" / "delivery_area_1l", tmp_path / "two_view_training_gt" / "delivery_area_1l")
    _scene(tmp_path / "two_view_training" / "electro_1l", seed=3)  # gt beside the images
    (tmp_path / "two_view_test" / "lakeside_1l").mkdir(parents=True)  # test scenes have no gt: not listed
    _png(tmp_path / "two_view_test" / "lakeside_1l" / "im0.png", _rgb(6, 8))
    samples = eth3d_samples(tmp_path)
    assert [s.name for s in samples] == ["delivery_area_1l", "electro_1l"]
    assert samples[0].disparity.parent.parent.name == "two_view_training_gt"
    assert read_sample(samples[0])["noc"].sum() == 6 * 6 - 2


# ------------------------------------------------------------------------------------------ SceneFlow
def test_sceneflow_trees_and_corrupt_pairs_skipped_with_a_count(tmp_path):
    def pair(tree: str, rel: str, h: int = 6) -> None:
        base = tmp_path / tree
        _png(base / "frames_cleanpass" / rel / "left" / "0006.png", _rgb(h, 8))
        _png(base / "frames_cleanpass" / rel / "right" / "0006.png", _rgb(h, 8, 1))
        write_pfm(base / "disparity" / rel / "left" / "0006.pfm", np.full((6, 8), 2.0, dtype=np.float32))

    pair("FlyingThings3D", "TRAIN/A/0000")
    pair("FlyingThings3D", "TRAIN/B/0001", h=7)  # image size disagrees with its disparity
    pair("FlyingThings3D", "TEST/C/0002")
    pair("Monkaa", "a_rain_of_stones_x2")
    pair("Driving", "15mm_focallength/scene_backwards/fast")
    (tmp_path / "Monkaa" / "disparity" / "a_rain_of_stones_x2" / "left" / "0006.pfm").write_bytes(b"Pf\n8 6\n-1.0\n" + bytes(10))
    train = sceneflow_samples(tmp_path, "train")
    assert len(train) == 4 and {s.name.split("/")[0] for s in train} == {"FlyingThings3D", "Monkaa", "Driving"}
    assert [s.name for s in sceneflow_samples(tmp_path, "test")] == ["FlyingThings3D/TEST/C/0002/left/0006"]
    with pytest.warns(UserWarning, match=r"skipped 2 of 4 .*differs.*PFM file shorter"):
        pairs = StereoPairs.checked(train, "sceneflow pairs")
    assert len(pairs) == 2
    item = pairs[0]
    assert item["left"].shape == (3, 6, 8) and item["disparity"].shape == (1, 6, 8) and item["valid"].all()


# ------------------------------------------------------------------------------------------ augmentation
def test_augment_crops_jitters_and_erases_only_the_right_view():
    torch.manual_seed(0)
    item = {"left": torch.rand(3, 40, 50), "right": torch.rand(3, 40, 50), "disparity": torch.rand(1, 40, 50) * 10,
            "valid": torch.ones(1, 40, 50, dtype=torch.bool)}
    aug = StereoAugment((32, 48), brightness=0, contrast=0, saturation=0, hue=0, eraser_prob=1.0, eraser_size=(0.3, 0.4))
    out = aug(dict(item))
    assert out["left"].shape == (3, 32, 48) and out["valid"].shape == (1, 32, 48)
    # find the crop: the left view is untouched by a zero jitter and no eraser
    hits = [(y, x) for y in range(9) for x in range(3) if torch.equal(item["left"][:, y : y + 32, x : x + 48], out["left"])]
    assert len(hits) == 1
    y, x = hits[0]
    torch.testing.assert_close(out["disparity"], item["disparity"][:, y : y + 32, x : x + 48])
    changed = (out["right"] != item["right"][:, y : y + 32, x : x + 48]).any(0)
    assert 0.05 < changed.float().mean() < 0.5  # one or two mean-colour patches
    erased = out["right"][:, changed]
    assert (erased.std(dim=1) < 1e-6).any() or erased.unique(dim=1).shape[1] <= 2
    # padding: a smaller image is padded with invalid pixels
    small = {k: v[..., :20, :30] for k, v in item.items()}
    padded = StereoAugment((32, 48), eraser_prob=0)(small)
    assert padded["valid"].sum() == 20 * 30


def test_augment_colour_symmetric_or_asymmetric():
    torch.manual_seed(0)
    img = torch.rand(3, 16, 16)
    sym = StereoAugment((16, 16), asymmetric_prob=0.0, eraser_prob=0.0)
    left, right = sym.colour(img, img.clone())
    assert not torch.allclose(left, img, atol=1e-3)
    torch.testing.assert_close(left, right)  # one draw for both views
    asym = StereoAugment((16, 16), asymmetric_prob=1.0, eraser_prob=0.0)
    left, right = asym.colour(img, img.clone())
    assert not torch.allclose(left, right, atol=1e-3)


def test_datamodule_without_colour_jitter_only_crops():
    # the demo config's setting: a training item is the crop of the pair, colours and right view unchanged
    torch.manual_seed(0)
    augment = StereoDataModule(crop_size=(16, 16), colour_jitter=False, asymmetric_prob=1.0, eraser_prob=0.0).augment
    left, right = torch.rand(3, 16, 24), torch.rand(3, 16, 24)
    item = {"left": left, "right": right, "disparity": torch.ones(1, 16, 24), "valid": torch.ones(1, 16, 24, dtype=torch.bool)}
    out = augment(dict(item))
    x = [x for x in range(9) if torch.equal(left[..., x : x + 16], out["left"])]
    assert len(x) == 1 and torch.equal(out["right"], right[..., x[0] : x[0] + 16])
    jittered = StereoDataModule(crop_size=(16, 16), eraser_prob=0.0).augment.colour(left, right)[0]
    assert not torch.allclose(jittered, left, atol=1e-3)


def test_max_disp_filter_and_scaling(tmp_path):
    _scene(tmp_path / "Scene")
    (sample,) = middlebury_samples(tmp_path)
    item = StereoPairs([sample], max_disp=10.0)[0]
    assert item["valid"].sum() == int((np.linspace(1, 20, 48) < 10).sum()) - 1  # less the inf pixel
    assert (item["disparity"][~item["valid"]] == 0).all()
    half = StereoPairs([sample], scale=0.5)[0]
    assert half["left"].shape == (3, 3, 4)
    full = read_sample(sample)["disparity"]
    torch.testing.assert_close(half["disparity"][0, 0, 0], torch.tensor(full[1, 1] * 0.5))  # nearest pixel, scaled


# ------------------------------------------------------------------------------------------ synthetic
def test_render_pair_is_photo_consistent_outside_occlusions():
    pair = render_pair(np.random.default_rng(1), 48, 64, max_disp=16.0, num_shapes=3)
    left, right, disp, occ = (torch.from_numpy(pair[k]) for k in ("left", "right", "disparity", "occluded"))
    assert 1.0 <= float(disp.min()) and float(disp.max()) <= 16.0 and 0 < float(occ.float().mean()) < 0.5
    xs = torch.arange(64, dtype=torch.float64)[None] - disp.double()  # (H, W) right-image column
    grid = torch.stack([xs / 63 * 2 - 1, torch.linspace(-1, 1, 48, dtype=torch.float64)[:, None].expand(48, 64)], -1)
    warped = torch.nn.functional.grid_sample(right.permute(2, 0, 1)[None], grid[None], align_corners=True)[0].permute(1, 2, 0)
    err = (warped - left).abs().mean(-1)
    assert float(err[~occ].mean()) < 0.03 < float(err[occ].mean())


def test_synthetic_default_is_written_in_the_flyingthings_layout_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    dm = StereoDataModule(crop_size=(32, 64), synthetic_train=3, synthetic_test=2, synthetic_size=(40, 72),
                          synthetic_max_disp=12.0, val_size=1, batch_size=2, extra_eval=())
    dm.setup("fit")
    root = next((tmp_path / "cache" / "vision" / "stereo").glob("synthetic_ft3d_*"))
    left = root / "FlyingThings3D" / "frames_cleanpass" / "TRAIN" / "A" / "0000" / "left" / "0006.png"
    assert left.exists() and (root / "FlyingThings3D" / "disparity" / "TEST" / "A" / "0000" / "left" / "0007.pfm").exists()
    assert read_image(left).shape == (40, 72, 3)
    assert [len(dm.dataset(s)) for s in ("train", "val", "test")] == [3, 1, 2]
    batch = next(iter(dm.train_dataloader()))
    assert batch["left"].shape == (2, 3, 32, 64) and batch["valid"].dtype == torch.bool
    (val_loader,) = dm.val_dataloader()
    val = next(iter(val_loader))
    assert val["left"].shape == (1, 3, 40, 72) and float(val["disparity"].max()) <= 12.0


def _warp_error(item: dict, sign: float) -> torch.Tensor:
    """``|right(x + sign * d) - left(x)|`` (channel mean) on valid pixels whose match is inside the image."""
    h, w = item["disparity"].shape[-2:]
    xs = torch.arange(w, dtype=torch.float64)[None] + sign * item["disparity"][0].double()  # (H, W) right-image column
    grid = torch.stack([xs / (w - 1) * 2 - 1, torch.linspace(-1, 1, h, dtype=torch.float64)[:, None].expand(h, w)], -1)
    warped = torch.nn.functional.grid_sample(item["right"].double()[None], grid[None], align_corners=True)[0]
    return (warped - item["left"].double()).abs().mean(0)[item["valid"][0] & (xs >= 0) & (xs <= w - 1)]


def test_training_items_read_back_are_photo_consistent_with_the_left_reference_sign(tmp_path):
    # through the files, the reader and the crop: right(x - d) reproduces left(x); x + d does not
    generate_synthetic(tmp_path, num_train=2, num_test=0, size=(40, 80), max_disp=12.0, num_shapes=2)
    augment = StereoAugment((32, 48), asymmetric_prob=0.0, eraser_prob=0.0, brightness=0, contrast=0, saturation=0, hue=0)
    pairs = StereoPairs(sceneflow_samples(tmp_path, "train"), augment=augment, max_disp=64.0)
    for item in (pairs[0], pairs[1]):
        assert float(_warp_error(item, -1.0).median()) < 0.03 < float(_warp_error(item, +1.0).median())


def test_generator_refuses_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="max_disp > 2"):
        generate_synthetic(tmp_path, max_disp=1.0)
    with pytest.raises(ValueError, match="dataset must be one of"):
        StereoDataModule(dataset="kitti")
    with pytest.raises(ValueError, match="extra_eval: unknown sets"):
        StereoDataModule(extra_eval=("booster",))


def test_motorcycle_pair_from_scikit_image(tmp_path, monkeypatch):
    pytest.importorskip("skimage")
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "cache"))
    dm = StereoDataModule(synthetic_train=1, synthetic_test=1, synthetic_size=(32, 32), synthetic_max_disp=8.0, val_size=1,
                          motorcycle_scale=0.25)
    dm.setup("test")
    _, moto_loader = dm.test_dataloader()
    item = next(iter(moto_loader))
    assert item["left"].shape == (1, 3, 125, 185)  # 500 x 741 at a quarter
    assert 0.8 < float(item["valid"].float().mean()) < 0.99  # +inf pixels of the ground truth are invalid
    assert 1.0 < float(item["disparity"][item["valid"]].min()) and float(item["disparity"].max()) < 60 * 0.25 + 0.1
