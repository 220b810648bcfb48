"""Every data reader refuses what it should refuse, naming the file and the field, and skips what it should skip.

Fixtures are written in the real on-disk formats: CIFAR python pickles (protocol 2, byte keys, as the
official Python 2 files), Galaxy10 h5 files through h5py, the JSB Chorales quarter-note pickle and
``Jsb16thSeparated.npz`` / ``.json`` as the published files are laid out, image files written by
Pillow or byte by byte (16-bit PNGs), MIDI through pretty_midi, ABC through music21. Each bad case
corrupts one field of an otherwise valid fixture and asserts a ``ValueError`` whose message names the
file and the field (and, for the chorales, the split, the piece and the step). Image files that do
not decode are skipped with one warning that counts and names them, and the datamodule then iterates
over the remaining ones.
"""

from __future__ import annotations

import io
import json
import logging
import pickle
import struct
import tempfile
import warnings
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pretty_midi
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from zoo.music.lm import data as lm_data
from zoo.music.lm.data import (
    ChoralesDataModule,
    PerformanceDataModule,
    _check_notes,
    load_jsb_pickle,
    load_jsb_separated,
)
from zoo.music.melody import data as melody_data
from zoo.music.melody.data import load_melodies
from zoo.music.melody.tokenizer import PITCH_OFFSET, MelodyTokenizer
from zoo.vision.classification.data import (
    FileImageDataset,
    ImageClassificationDataModule,
    load_rgb,
    read_cifar,
    read_galaxy10,
    read_image_folder,
)


def assert_names(err: pytest.ExceptionInfo, *parts: object) -> None:
    """The error message contains every part (file path, field name, split, piece, ...)."""
    msg = str(err.value)
    for part in parts:
        assert str(part) in msg, f"{part!r} not named in: {msg}"


# =============================================================================================== CIFAR
CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
PER_BATCH = 6


def _dump(path: Path, obj: object) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))  # the official files are Python 2 pickles with byte keys


def _cifar10_batch(i: int) -> dict:
    rng = np.random.default_rng(i)
    return {
        b"batch_label": f"batch {i}".encode(),
        b"labels": [int(x) for x in (np.arange(PER_BATCH) + i) % 10],
        b"data": rng.integers(0, 256, (PER_BATCH, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}_{j}.png".encode() for j in range(PER_BATCH)],
    }


def write_cifar10(root: Path) -> Path:
    root.mkdir()
    _dump(root / "batches.meta", {b"label_names": CIFAR10_NAMES, b"num_cases_per_batch": PER_BATCH, b"num_vis": 3072})
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        _dump(root / name, _cifar10_batch(i))
    return root


def _cifar100_batch(n: int = 8) -> dict:
    rng = np.random.default_rng(1)
    return {
        b"filenames": [b"x.png"] * n,
        b"fine_labels": [int(x) for x in np.arange(n) * 12 % 100],
        b"coarse_labels": [0] * n,
        b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
    }


def write_cifar100(root: Path) -> Path:
    root.mkdir()
    _dump(root / "meta", {b"fine_label_names": [f"c{i}".encode() for i in range(100)], b"coarse_label_names": [b"c"] * 20})
    for split in ("train", "test"):
        _dump(root / split, _cifar100_batch())
    return root


def _set(key: bytes, value: Callable[[dict], object] | object) -> Callable[[dict], dict]:
    def edit(batch: dict) -> dict:
        batch = dict(batch)
        batch[key] = value(batch) if callable(value) else value
        return batch

    return edit


def _drop(key: bytes) -> Callable[[dict], dict]:
    return lambda batch: {k: v for k, v in batch.items() if k != key}


RAGGED = [[0] * 3072, [0] * 3071]

#: (dataset, file to corrupt, edit of its dict, field named, other words the message must hold)
CIFAR_BAD = [
    pytest.param("cifar10", "test_batch", _set(b"labels", lambda b: b[b"labels"][:-1]), "labels", "label per row",
                 id="c10-labels-fewer-than-images"),
    pytest.param("cifar10", "data_batch_3", _set(b"labels", lambda b: b[b"labels"] + [0]), "labels", "label per row",
                 id="c10-labels-more-than-images"),
    pytest.param("cifar10", "test_batch", _set(b"labels", [10] * PER_BATCH), "labels", "[0, 10)", id="c10-label-10"),
    pytest.param("cifar10", "test_batch", _set(b"labels", [-1] + [0] * (PER_BATCH - 1)), "labels", "[0, 10)",
                 id="c10-label-negative"),
    pytest.param("cifar10", "test_batch", _set(b"labels", [0.0] * PER_BATCH), "labels", "integers",
                 id="c10-labels-float"),
    pytest.param("cifar10", "test_batch", _set(b"labels", [b"cat"] * PER_BATCH), "labels", "integers",
                 id="c10-labels-bytes"),
    pytest.param("cifar10", "test_batch", _set(b"labels", [True] * PER_BATCH), "labels", "integers",
                 id="c10-labels-bool"),
    pytest.param("cifar10", "test_batch", _set(b"labels", [1, True, 2, 3, 4, 5]), "labels", "bool",
                 id="c10-labels-one-bool-among-ints"),
    pytest.param("cifar10", "test_batch", _set(b"labels", np.zeros((PER_BATCH, 1), np.int64)), "labels",
                 "label per row", id="c10-labels-2d"),
    pytest.param("cifar10", "test_batch", _drop(b"labels"), "labels", "lacks", id="c10-labels-missing"),
    pytest.param("cifar10", "data_batch_1", _set(b"data", lambda b: b[b"data"].astype(np.float32)), "data",
                 "integers", id="c10-data-float32-0-255"),
    pytest.param("cifar10", "data_batch_1", _set(b"data", lambda b: b[b"data"] / 255.0), "data", "integers",
                 id="c10-data-float64-0-1"),
    pytest.param("cifar10", "data_batch_5", _set(b"data", lambda b: b[b"data"].astype(np.int16) + 200), "data",
                 "0..255", id="c10-data-over-255"),
    pytest.param("cifar10", "data_batch_5", _set(b"data", lambda b: b[b"data"].astype(np.int64) - 1), "data",
                 "0..255", id="c10-data-negative"),
    pytest.param("cifar10", "test_batch", _set(b"data", lambda b: b[b"data"][:, :3071]), "data", "(N, 3072)",
                 id="c10-data-3071-wide"),
    pytest.param("cifar10", "test_batch", _set(b"data", lambda b: b[b"data"].reshape(-1)), "data", "(N, 3072)",
                 id="c10-data-1d"),
    pytest.param("cifar10", "test_batch", _set(b"data", lambda b: b[b"data"].reshape(-1, 3, 32, 32)), "data",
                 "(N, 3072)", id="c10-data-4d"),
    pytest.param("cifar10", "test_batch", _set(b"data", RAGGED), "data", "rectangular", id="c10-data-ragged"),
    pytest.param("cifar10", "test_batch", _drop(b"data"), "data", "lacks", id="c10-data-missing"),
    pytest.param("cifar10", "batches.meta", _set(b"label_names", CIFAR10_NAMES[:9]), "label_names", "10 classes",
                 id="c10-meta-9-names"),
    pytest.param("cifar10", "batches.meta", _set(b"label_names", list(range(10))), "label_names", "strings",
                 id="c10-meta-int-names"),
    pytest.param("cifar10", "batches.meta", _set(b"label_names", b"airplane"), "label_names", "list",
                 id="c10-meta-names-not-list"),
    pytest.param("cifar10", "batches.meta", _drop(b"label_names"), "label_names", "lacks", id="c10-meta-missing"),
    pytest.param("cifar100", "train", _set(b"fine_labels", lambda b: [100] + b[b"fine_labels"][1:]), "fine_labels",
                 "[0, 100)", id="c100-fine-label-100"),
    pytest.param("cifar100", "test", _set(b"fine_labels", lambda b: b[b"fine_labels"][:3]), "fine_labels",
                 "label per row", id="c100-fine-labels-short"),
    pytest.param("cifar100", "test", _set(b"fine_labels", lambda b: [str(x) for x in b[b"fine_labels"]]),
                 "fine_labels", "integers", id="c100-fine-labels-str"),
    pytest.param("cifar100", "test", _drop(b"fine_labels"), "fine_labels", "lacks", id="c100-fine-labels-missing"),
    pytest.param("cifar100", "train", _set(b"data", lambda b: b[b"data"].astype(np.float64)), "data", "integers",
                 id="c100-data-float64"),
    pytest.param("cifar100", "train", _set(b"data", lambda b: b[b"data"].astype(np.uint16) * 2), "data", "0..255",
                 id="c100-data-uint16-over-255"),
    pytest.param("cifar100", "meta", _set(b"fine_label_names", [b"c"] * 99), "fine_label_names", "100 classes",
                 id="c100-meta-99-names"),
]


@pytest.mark.parametrize(("dataset", "name", "edit", "field", "words"), CIFAR_BAD)
def test_cifar_refuses_a_bad_field(tmp_path, dataset, name, edit, field, words):
    root = (write_cifar10 if dataset == "cifar10" else write_cifar100)(tmp_path / dataset)
    target = root / name
    _dump(target, edit(pickle.loads(target.read_bytes(), encoding="bytes")))
    split = "test" if name in ("test_batch", "test") else "train"
    with pytest.raises(ValueError) as err:
        read_cifar(root, split)
    assert_names(err, target, f"'{field}'", words)
    with pytest.raises(ValueError) as err:  # and the datamodule, which reads both splits, too
        ImageClassificationDataModule(str(root))
    assert_names(err, target, f"'{field}'")


def test_cifar_accepts_uint8_valued_int_arrays_and_array_labels(tmp_path):
    root = write_cifar10(tmp_path / "c10")
    batch = pickle.loads((root / "test_batch").read_bytes(), encoding="bytes")
    batch[b"data"] = batch[b"data"].astype(np.int64)  # integer, values 0..255: the same images
    batch[b"labels"] = np.asarray(batch[b"labels"], dtype=np.uint8)
    _dump(root / "test_batch", batch)
    x, y, names = read_cifar(root, "test")
    assert x.dtype == np.uint8 and x.shape == (PER_BATCH, 32, 32, 3) and names[0] == "airplane"
    assert np.array_equal(x[0, :, :, 0].reshape(-1), batch[b"data"][0, :1024])
    assert y.tolist() == batch[b"labels"].tolist()


def test_cifar_refuses_an_empty_batch(tmp_path):
    root = write_cifar10(tmp_path / "c10")
    batch = _cifar10_batch(5)
    batch[b"data"], batch[b"labels"] = np.zeros((0, 3072), np.uint8), []
    # protocol 4: protocol 2 writes the empty buffer as a call of ``bytes``, which the numpy-only unpickler refuses
    (root / "test_batch").write_bytes(pickle.dumps(batch, protocol=4))
    with pytest.raises(ValueError) as err:
        read_cifar(root, "test")
    assert_names(err, root / "test_batch", "'data'", "N >= 1")


@pytest.mark.parametrize("payload", [[1, 2, 3], "a string", 7], ids=["list", "str", "int"])
def test_cifar_refuses_a_pickle_that_is_not_a_dict(tmp_path, payload):
    root = write_cifar10(tmp_path / "c10")
    _dump(root / "test_batch", payload)
    with pytest.raises(ValueError) as err:
        read_cifar(root, "test")
    assert_names(err, root / "test_batch", "pickled dict")


def test_cifar_refuses_an_unknown_split(tmp_path):
    with pytest.raises(ValueError, match="'train' or 'test'"):
        read_cifar(write_cifar10(tmp_path / "c10"), "val")


@settings(max_examples=60, deadline=None, derandomize=True, database=None)
@given(st.lists(st.one_of(st.integers(-3, 12), st.floats(-1, 11), st.booleans(), st.text(max_size=2)),
                min_size=PER_BATCH, max_size=PER_BATCH))
def test_cifar_labels_property(labels):
    """Any label list: read iff every entry is an int in 0..9 (no bools, floats, strings); else named."""
    with tempfile.TemporaryDirectory() as d:
        root = write_cifar10(Path(d) / "c10")
        batch = pickle.loads((root / "test_batch").read_bytes(), encoding="bytes")
        batch[b"labels"] = labels
        _dump(root / "test_batch", batch)
        ok = all(type(x) is int and 0 <= x < 10 for x in labels)
        if ok:
            assert read_cifar(root, "test")[1].tolist() == labels
        else:
            with pytest.raises(ValueError) as err:
                read_cifar(root, "test")
            assert_names(err, root / "test_batch", "'labels'")


# ============================================================================================ Galaxy10
def write_galaxy10(path: Path, n: int = 20, size: int = 8, **override: object) -> Path:
    """A Galaxy10 DECals h5 file; ``override`` replaces (or, as None, removes) a dataset."""
    rng = np.random.default_rng(0)
    datasets: dict[str, object] = {
        "images": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8),
        "ans": (np.arange(n) % 10).astype(np.uint8),
        "ra": rng.random(n),  # the real file has more columns; they are ignored
        **override,
    }
    with h5py.File(path, "w") as f:
        for key, value in datasets.items():
            if isinstance(value, str) and value == "group":
                f.create_group(key)
            elif value is not None:
                f.create_dataset(key, data=value)
    return path


N = 20
GALAXY_BAD = [
    pytest.param({"images": None}, "images", "lacks", id="images-missing"),
    pytest.param({"ans": None}, "ans", "lacks", id="ans-missing"),
    pytest.param({"images": None, "ans": None}, "images', 'ans", "lacks", id="both-missing"),
    pytest.param({"images": "group"}, "images", "group", id="images-a-group"),
    pytest.param({"ans": "group"}, "ans", "group", id="ans-a-group"),
    pytest.param({"ans": (np.arange(N) % 10).reshape(N, 1)}, "ans", "1-D", id="ans-2d-column"),
    pytest.param({"ans": np.eye(10, dtype=np.uint8)[np.arange(N) % 10]}, "ans", "1-D", id="ans-one-hot"),
    pytest.param({"ans": (np.arange(N) % 10).astype(np.float32)}, "ans", "integer", id="ans-float32"),
    pytest.param({"ans": (np.arange(N) % 10).astype(np.float64) + 0.5}, "ans", "integer", id="ans-float64"),
    pytest.param({"ans": np.full(N, 10, np.uint8)}, "ans", "[0, 10)", id="ans-10"),
    pytest.param({"ans": np.full(N, -1, np.int8)}, "ans", "[0, 10)", id="ans-negative"),
    pytest.param({"ans": np.arange(N - 1) % 10}, "ans", "but 19 labels", id="ans-fewer-than-images"),
    pytest.param({"images": np.zeros((N, 8, 8, 3), np.float32)}, "images", "uint8", id="images-float32"),
    pytest.param({"images": np.zeros((N, 8, 8, 3), np.uint16)}, "images", "uint8", id="images-uint16"),
    pytest.param({"images": np.zeros((N, 8, 8), np.uint8)}, "images", "(N, H, W, 3)", id="images-grayscale-3d"),
    pytest.param({"images": np.zeros((N, 8, 8, 4), np.uint8)}, "images", "(N, H, W, 3)", id="images-rgba"),
    pytest.param({"images": np.zeros((N, 3, 8, 8), np.uint8)}, "images", "(N, H, W, 3)", id="images-channels-first"),
    pytest.param({"images": np.zeros((0, 8, 8, 3), np.uint8), "ans": np.zeros(0, np.uint8)}, "images", "no images",
                 id="empty"),
]


@pytest.mark.parametrize(("override", "field", "words"), GALAXY_BAD)
def test_galaxy10_refuses_a_bad_dataset(tmp_path, override, field, words):
    path = write_galaxy10(tmp_path / "Galaxy10_DECals.h5", n=N, **override)
    with pytest.raises(ValueError) as err:
        read_galaxy10(path)
    assert_names(err, path, f"'{field}'", words)
    with pytest.raises(ValueError) as err:
        ImageClassificationDataModule(str(path))
    assert_names(err, path, f"'{field}'")


@pytest.mark.parametrize("dtype", [np.uint8, np.int16, np.int64, np.uint32])
def test_galaxy10_accepts_any_integer_label_dtype(tmp_path, dtype):
    path = write_galaxy10(tmp_path / "g.h5", n=N, ans=(np.arange(N) % 10).astype(dtype))
    reader, labels, _ = read_galaxy10(path)
    assert labels.dtype == np.int64 and labels.tolist() == [i % 10 for i in range(N)]
    assert reader(0).shape == (8, 8, 3)


def test_galaxy10_refuses_a_file_that_is_not_hdf5(tmp_path):
    path = tmp_path / "Galaxy10_DECals.h5"
    path.write_bytes(b"\x89HDF but not really" * 10)
    with pytest.raises(ValueError) as err:
        read_galaxy10(path)
    assert_names(err, path, "HDF5")


# =============================================================================================== images
def png16(arr: np.ndarray, color_type: int) -> bytes:
    """A 16-bit PNG written byte by byte (color type 0 gray, 2 RGB, 4 gray+alpha, 6 RGBA)."""
    h, w = arr.shape[:2]
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", w, h, 16, color_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


def _gray16() -> np.ndarray:
    return (np.arange(6 * 7).reshape(6, 7) * 1531 + 17).astype(np.uint16)  # (H, W) spanning 17..62788


def _rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


def _write_pillow_16bit_png(path: Path) -> np.ndarray:
    a = _gray16()
    Image.fromarray(a).save(path)  # Pillow writes an "I;16" image as a 16-bit grayscale PNG
    assert Image.open(path).mode == "I;16"
    return _rgb((a >> 8).astype(np.uint8))


def _write_raw_16bit_gray_png(path: Path) -> np.ndarray:
    a = _gray16()
    path.write_bytes(png16(a, 0))
    return _rgb((a >> 8).astype(np.uint8))


def _write_raw_16bit_rgb_png(path: Path) -> np.ndarray:
    a = np.stack([_gray16(), _gray16()[::-1], 65535 - _gray16()], axis=-1)  # (H, W, 3)
    path.write_bytes(png16(a, 2))
    return (a >> 8).astype(np.uint8)


def _write_raw_16bit_gray_alpha_png(path: Path) -> np.ndarray:
    a = np.stack([_gray16(), np.full_like(_gray16(), 30000)], axis=-1)  # (H, W, 2)
    path.write_bytes(png16(a, 4))
    return _rgb((a[..., 0] >> 8).astype(np.uint8))


def _write_16bit_tiff(path: Path) -> np.ndarray:
    a = _gray16()
    Image.fromarray(a).save(path, format="TIFF")
    assert Image.open(path).mode == "I;16"
    return _rgb((a >> 8).astype(np.uint8))


def _write_32bit_tiff(path: Path) -> np.ndarray:
    a = np.array([[0, 1 << 23, 5 << 24, (1 << 31) - 1], [-7, 255 << 23, 3, 1 << 30]], dtype=np.int32)
    Image.fromarray(a).save(path, format="TIFF")
    assert Image.open(path).mode == "I"
    return _rgb((np.clip(a.astype(np.int64), 0, None) >> 23).astype(np.uint8))


def _write_palette_png(path: Path, transparency: bool = False) -> np.ndarray:
    palette = np.array([[255, 0, 0], [0, 128, 255], [12, 34, 56], [250, 250, 0]], np.uint8)
    index = (np.arange(5 * 6).reshape(5, 6) % 4).astype(np.uint8)
    img = Image.frombytes("P", index.shape[::-1], index.tobytes())
    img.putpalette(palette.reshape(-1).tolist())
    if transparency:
        img.info["transparency"] = 2
    img.save(path)
    assert Image.open(path).mode == "P"
    return palette[index]


def _write_gray_alpha_png(path: Path) -> np.ndarray:
    gray = (np.arange(20).reshape(4, 5) * 12).astype(np.uint8)
    Image.fromarray(np.stack([gray, 255 - gray], axis=-1)).save(path)  # (H, W, 2) uint8 is "LA"
    assert Image.open(path).mode == "LA"
    return _rgb(gray)


def _write_cmyk_tiff(path: Path) -> np.ndarray:
    cmyk = np.array([[[0, 255, 255, 0], [0, 0, 0, 255], [0, 0, 0, 0], [255, 0, 255, 0]]], np.uint8)  # (1, 4, 4)
    Image.frombytes("CMYK", cmyk.shape[1::-1], cmyk.tobytes()).save(path, format="TIFF")
    assert Image.open(path).mode == "CMYK"
    return np.array([[[255, 0, 0], [0, 0, 0], [255, 255, 255], [0, 255, 0]]], np.uint8)


def _write_bilevel_png(path: Path) -> np.ndarray:
    bits = (np.arange(12).reshape(3, 4) % 2).astype(bool)
    Image.fromarray(bits).save(path)
    return _rgb(np.where(bits, 255, 0).astype(np.uint8))


def _write_float_tiff(path: Path) -> np.ndarray:
    a = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    Image.fromarray(a).save(path, format="TIFF")
    assert Image.open(path).mode == "F"
    return _rgb(np.round(a * 255).astype(np.uint8))


IMAGE_KINDS = [
    pytest.param("a.png", _write_pillow_16bit_png, id="png-16bit-gray-pillow"),
    pytest.param("a.png", _write_raw_16bit_gray_png, id="png-16bit-gray-raw"),
    pytest.param("a.png", _write_raw_16bit_rgb_png, id="png-16bit-rgb-raw"),
    pytest.param("a.png", _write_raw_16bit_gray_alpha_png, id="png-16bit-gray-alpha-raw"),
    pytest.param("a.tiff", _write_16bit_tiff, id="tiff-16bit-gray"),
    pytest.param("a.tiff", _write_32bit_tiff, id="tiff-32bit-signed"),
    pytest.param("a.png", _write_palette_png, id="png-palette"),
    pytest.param("a.png", lambda p: _write_palette_png(p, transparency=True), id="png-palette-transparency"),
    pytest.param("a.png", _write_gray_alpha_png, id="png-gray-alpha"),
    pytest.param("a.tif", _write_cmyk_tiff, id="tiff-cmyk"),
    pytest.param("a.png", _write_bilevel_png, id="png-bilevel"),
    pytest.param("a.tif", _write_float_tiff, id="tiff-float-0-1"),
]


@pytest.mark.parametrize(("name", "write"), IMAGE_KINDS)
def test_images_convert_to_8bit_rgb_by_their_real_depth(tmp_path, name, write):
    path = tmp_path / name
    expected = write(path)  # (H, W, 3) uint8
    got = np.asarray(load_rgb(path))
    assert got.dtype == np.uint8 and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)
    # the dataset that reads at __getitem__ uses the same conversion
    x, y = FileImageDataset([path], [3])[0]
    assert y == 3 and torch.equal(x, torch.from_numpy(expected).permute(2, 0, 1))
    # and the indexer keeps the file
    (tmp_path / "tree" / "c").mkdir(parents=True)
    path.rename(tmp_path / "tree" / "c" / name)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        files, labels, classes = read_image_folder(tmp_path / "tree")
    assert [f.name for f in files] == [name] and labels == [0] and classes == ["c"]


def test_16bit_png_is_not_all_255(tmp_path):
    """The old ``convert("RGB")`` clipped every 16-bit value above 255 to white."""
    path = tmp_path / "dark.png"
    Image.fromarray(np.full((4, 4), 0x4000, np.uint16)).save(path)
    assert np.asarray(Image.open(path).convert("RGB")).max() == 255  # Pillow's own conversion clips
    np.testing.assert_array_equal(np.asarray(load_rgb(path)), np.full((4, 4, 3), 0x40, np.uint8))


def _jpeg_bytes(seed: int = 0, size: int = 48) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(buf, "JPEG")
    return buf.getvalue()


def _png_bytes(value: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((10, 12, 3), value, np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def test_truncated_jpeg_passes_verify_but_not_load_rgb(tmp_path):
    path = tmp_path / "cut.jpg"
    full = _jpeg_bytes()
    path.write_bytes(full[: len(full) // 2])
    with Image.open(path) as img:
        img.verify()  # what the indexer used to check: passes
    with pytest.raises(OSError, match="truncated"):
        load_rgb(path)


#: bad files of an ImageFolder tree: each is skipped, counted and (among the first three) named
BAD_IMAGES = {
    "truncated.jpg": lambda: _jpeg_bytes(1)[: len(_jpeg_bytes(1)) // 2],
    "garbage.png": lambda: b"not an image at all",
    "empty.jpeg": lambda: b"",
    "truncated.png": lambda: _png_bytes(9)[:-30],
    "header_only.jpg": lambda: _jpeg_bytes(2)[:200],
}


def _tree(root: Path, per_class: dict[str, int]) -> None:
    for split, n in per_class.items():
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                (root / split / c / f"{i}.png").write_bytes(_png_bytes(30 * i))


@pytest.mark.parametrize("bad_name", sorted(BAD_IMAGES))
def test_one_bad_image_is_skipped_with_a_warning_naming_it(tmp_path, bad_name):
    _tree(tmp_path, {"train": 3})
    bad = tmp_path / "train" / "dog" / bad_name
    bad.write_bytes(BAD_IMAGES[bad_name]())
    with pytest.warns(RuntimeWarning) as rec:
        files, labels, classes = read_image_folder(tmp_path / "train")
    msgs = [str(w.message) for w in rec if "skipped" in str(w.message)]
    assert len(msgs) == 1 and "skipped 1 unreadable image file(s) of 7" in msgs[0] and str(bad) in msgs[0]
    assert bad not in files and len(files) == 6 and labels.count(1) == 3


def test_many_bad_images_one_counted_warning_naming_the_first_few(tmp_path):
    _tree(tmp_path, {"train": 2})
    for name, make in BAD_IMAGES.items():
        (tmp_path / "train" / "cat" / name).write_bytes(make())
    with pytest.warns(RuntimeWarning) as rec:
        files, _, _ = read_image_folder(tmp_path / "train")
    msgs = [str(w.message) for w in rec if "skipped" in str(w.message)]
    assert len(msgs) == 1, msgs
    assert f"skipped {len(BAD_IMAGES)} unreadable image file(s) of {len(BAD_IMAGES) + 4}" in msgs[0]
    named = [n for n in BAD_IMAGES if n in msgs[0]]
    assert len(named) == 3 and f"and {len(BAD_IMAGES) - 3} more" in msgs[0]
    assert len(files) == 4


@pytest.mark.parametrize("layout", ["split", "flat"])
def test_datamodule_iterates_over_the_remaining_images(tmp_path, layout):
    root = tmp_path / "tree"
    if layout == "split":
        _tree(root, {"train": 4, "val": 2})
        bad = root / "train" / "cat" / "truncated.jpg"
    else:
        _tree(tmp_path, {"tree": 5})
        bad = root / "dog" / "truncated.jpg"
    bad.write_bytes(BAD_IMAGES["truncated.jpg"]())
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable") as rec:
        dm = ImageClassificationDataModule(str(root), img_size=16, batch_size=2, val_fraction=0.2, test_fraction=0.2)
    assert any(str(bad) in str(w.message) for w in rec)
    dm.setup("fit")
    seen = 0
    for loader in (dm.train_dataloader(), dm.val_dataloader(), dm.test_dataloader()):
        for x, y in loader:
            assert x.shape[1:] == (3, 16, 16) and torch.isfinite(x).all()
            seen += len(y)
    assert seen > 0 and all(bad not in ds.files for ds in dm.datasets.values())


def test_a_file_broken_after_indexing_raises_naming_it(tmp_path):
    _tree(tmp_path, {"train": 2})
    files, labels, _ = read_image_folder(tmp_path / "train")
    ds = FileImageDataset(files, labels)
    files[1].write_bytes(b"broken since")
    with pytest.raises(ValueError) as err:
        ds[1]
    assert_names(err, files[1], "cannot decode")


def test_float_image_outside_0_1_is_skipped(tmp_path):
    (tmp_path / "c").mkdir()
    Image.fromarray(np.full((3, 3), 7.5, np.float32)).save(tmp_path / "c" / "f.tif", format="TIFF")
    (tmp_path / "c" / "ok.png").write_bytes(_png_bytes(3))
    with pytest.warns(RuntimeWarning, match=r"skipped 1 .*f\.tif.*outside \[0, 1\]"):
        files, _, _ = read_image_folder(tmp_path)
    assert [f.name for f in files] == ["ok.png"]


# ======================================================================================= JSB chorales
def _quarter_data() -> dict:
    rng = np.random.default_rng(1)

    def step() -> tuple:
        return tuple(np.int64(p) for p in sorted(rng.choice(np.arange(40, 80), size=rng.integers(1, 5), replace=False)))

    return {s: [[step() for _ in range(8)] for _ in range(n)] for s, n in (("train", 3), ("valid", 2), ("test", 2))}


def _with(data: dict, split: str, piece: int | None = None, step: int | None = None, value: object = None) -> dict:
    data = {k: list(v) for k, v in data.items()}
    if piece is None:
        data[split] = value
    elif step is None:
        data[split][piece] = value
    else:
        data[split][piece] = list(data[split][piece])
        data[split][piece][step] = value
    return data


#: (split, piece, step, the replacement, words the message must hold besides file, split, piece, step)
JSB_PICKLE_BAD = [
    pytest.param("train", None, None, {"0": []}, "list of pieces", id="split-dict"),
    pytest.param("valid", None, None, "pieces", "list of pieces", id="split-str"),
    pytest.param("test", None, None, np.zeros((2, 8, 4)), "list of pieces", id="split-ndarray"),
    pytest.param("test", None, None, None, "list of pieces", id="split-none"),
    pytest.param("train", 1, None, 60, "list of time steps", id="piece-int"),
    pytest.param("train", 2, None, [], "empty", id="piece-empty"),
    pytest.param("valid", 0, None, "C E G", "list of time steps", id="piece-str"),
    pytest.param("train", 0, 3, 60, "tuple of MIDI pitches", id="step-int"),
    pytest.param("train", 0, 3, "60", "tuple of MIDI pitches", id="step-str"),
    pytest.param("valid", 1, 5, ("60", "64"), "str", id="pitch-str"),
    pytest.param("valid", 1, 5, (b"<",), "bytes", id="pitch-bytes"),
    pytest.param("test", 0, 7, (60.5,), "not an integer", id="pitch-fraction"),
    pytest.param("test", 0, 7, (np.float32("nan"),), "not an integer", id="pitch-nan"),
    pytest.param("test", 1, 0, (60, 128), "0..127", id="pitch-128"),
    pytest.param("test", 1, 0, (np.int64(-1),), "0..127", id="pitch-negative"),
    pytest.param("train", 2, 2, (True, 60), "bool", id="pitch-bool"),
    pytest.param("train", 2, 2, (None,), "NoneType", id="pitch-none"),
    pytest.param("train", 2, 2, ((60, 64),), "tuple", id="pitch-nested"),
]


@pytest.mark.parametrize(("split", "piece", "step", "value", "words"), JSB_PICKLE_BAD)
def test_jsb_pickle_refuses_a_bad_split_piece_or_pitch(tmp_path, split, piece, step, value, words):
    path = tmp_path / "jsb-chorales-quarter.pkl"
    path.write_bytes(pickle.dumps(_with(_quarter_data(), split, piece, step, value)))
    with pytest.raises(ValueError) as err:
        load_jsb_pickle(path)
    parts = [path, f"split '{split}'", words]
    parts += [] if piece is None else [f"piece {piece}"]
    parts += [] if step is None else [f"step {step}"]
    assert_names(err, *parts)
    with pytest.raises(ValueError) as err:  # through the datamodule too
        ChoralesDataModule(path=str(path)).setup()
    assert_names(err, path, f"split '{split}'")


def test_jsb_pickle_refuses_a_missing_split(tmp_path):
    path = tmp_path / "jsb.pkl"
    data = _quarter_data()
    del data["valid"]
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(ValueError) as err:
        load_jsb_pickle(path)
    assert_names(err, path, "'valid'")


def test_jsb_pickle_accepts_python_ints_integral_floats_and_rests(tmp_path):
    path = tmp_path / "jsb.pkl"
    data = _quarter_data()
    data["train"][0] = [(60, 64, 67, 72), (), (60.0, np.int32(48)), [55]]
    path.write_bytes(pickle.dumps(data))
    grid = load_jsb_pickle(path)["train"][0]
    assert grid.pitches[::4].tolist() == [[72, 67, 64, 60], [-1, -1, -1, -1], [60, -1, -1, 48], [55, -1, -1, -1]]


@settings(max_examples=80, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(
    value=st.one_of(
        st.integers(-5, 140), st.floats(allow_nan=True, allow_infinity=True, width=32), st.booleans(),
        st.text(max_size=3), st.none(),
    ),
    where=st.tuples(st.sampled_from(["train", "valid", "test"]), st.integers(0, 1), st.integers(0, 7)),
)
def test_jsb_pickle_pitch_property(value, where):
    """Any pitch value anywhere: read iff it is an integral number in 0..127 (bools refused), else named."""
    split, piece, step = where
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "jsb.pkl"
        path.write_bytes(pickle.dumps(_with(_quarter_data(), split, piece, step, (value,))))
        is_number = isinstance(value, int | float) and not isinstance(value, bool)
        ok = is_number and np.isfinite(value) and float(value).is_integer() and 0 <= value <= 127
        if ok:
            zoo_split = {"valid": "val"}.get(split, split)
            assert load_jsb_pickle(path)[zoo_split][piece].pitches[4 * step, 0] == int(value)
        else:
            with pytest.raises(ValueError) as err:
                load_jsb_pickle(path)
            assert_names(err, path, f"split '{split}' piece {piece} step {step}")


def _separated_data() -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    base = np.array([72.0, 67.0, 60.0, 48.0])
    data = {}
    for s, n in (("train", 3), ("valid", 2), ("test", 2)):
        pieces = []
        for i in range(n):
            a = base[None] + rng.integers(-3, 4, (16 + 4 * i, 4))
            a[rng.random(len(a)) < 0.1, 1] = np.nan
            pieces.append(a.astype(np.float16))  # the published npz holds float16 pieces
        data[s] = pieces
    return data


def write_separated_npz(path: Path, data: dict) -> Path:
    arrays = {}
    for s, pieces in data.items():
        if isinstance(pieces, list):
            obj = np.empty(len(pieces), dtype=object)
            for i, piece in enumerate(pieces):  # one by one: equal shapes would broadcast into one array
                obj[i] = piece
            arrays[s] = obj
        else:
            arrays[s] = pieces
    np.savez(path, **arrays)
    return path


def write_separated_json(path: Path, data: dict) -> Path:
    def plain(p: object) -> object:
        return np.nan_to_num(p.astype(np.float64), nan=-1).astype(int).tolist() if isinstance(p, np.ndarray) else p

    path.write_text(json.dumps({s: [plain(p) for p in v] if isinstance(v, list) else v for s, v in data.items()}))
    return path


def _piece_with(value: object, t: int = 2, v: int = 1) -> list:
    rows = np.nan_to_num(_separated_data()["train"][1].astype(np.float64), nan=-1).astype(int).tolist()
    rows[t][v] = value
    return rows


#: json: (split, piece or None for the split, replacement, words)
JSON_BAD = [
    pytest.param("train", None, {"0": []}, "list of pieces", id="split-dict"),
    pytest.param("valid", None, "pieces", "list of pieces", id="split-str"),
    pytest.param("test", None, 3, "list of pieces", id="split-int"),
    pytest.param("train", 1, _piece_with("60"), "strings", id="pitch-str"),
    pytest.param("train", 1, _piece_with(128), "step 2 voice 1", id="pitch-128"),
    pytest.param("train", 1, _piece_with(-2), "step 2 voice 1", id="pitch-minus-2"),
    pytest.param("train", 1, _piece_with(60.5), "step 2 voice 1", id="pitch-fraction"),
    pytest.param("train", 1, _piece_with(None), "mixed values", id="pitch-null"),
    pytest.param("train", 1, _piece_with([60]), "(T, 4)", id="pitch-nested-list"),
    pytest.param("valid", 0, [[60, 64, 67]] * 5, "(T, 4)", id="piece-three-voices"),
    pytest.param("valid", 0, [[60, 64, 67, 72], [60, 64]], "(T, 4)", id="piece-ragged"),
    pytest.param("valid", 0, [], "(T, 4)", id="piece-empty"),
    pytest.param("test", 1, [[True, False, True, True]], "booleans", id="piece-bools"),
    pytest.param("test", 1, {"steps": []}, "a dict", id="piece-dict"),
    pytest.param("test", 1, "60 64 67 72", "strings", id="piece-str"),
]


@pytest.mark.parametrize(("split", "piece", "value", "words"), JSON_BAD)
def test_jsb_separated_json_refuses_bad_values(tmp_path, split, piece, value, words):
    data = _separated_data()
    data = {k: list(v) for k, v in data.items()}
    if piece is None:
        data[split] = value
    else:
        data[split][piece] = value
    path = write_separated_json(tmp_path / "Jsb16thSeparated.json", data)
    with pytest.raises(ValueError) as err:
        load_jsb_separated(path)
    assert_names(err, path, f"split '{split}'", words, *([] if piece is None else [f"piece {piece}"]))
    with pytest.raises(ValueError) as err:
        ChoralesDataModule(path=str(tmp_path)).setup()
    assert_names(err, path, f"split '{split}'")


def test_jsb_separated_json_top_level_must_be_the_split_dict(tmp_path):
    path = tmp_path / "Jsb16thSeparated.json"
    path.write_text(json.dumps([[[60, 64, 67, 72]]]))
    with pytest.raises(ValueError) as err:
        load_jsb_separated(path)
    assert_names(err, path, "'train', 'valid', 'test'")


def _npz_piece(value: object, t: int = 3, v: int = 2) -> np.ndarray:
    a = _separated_data()["test"][0].astype(np.float64)
    a[t, v] = value
    return a


#: npz: (split, piece or None, replacement, words)
NPZ_BAD = [
    pytest.param("test", 0, _npz_piece(200), "step 3 voice 2", id="pitch-200"),
    pytest.param("test", 0, _npz_piece(-3), "step 3 voice 2", id="pitch-minus-3"),
    pytest.param("test", 0, _npz_piece(61.25), "step 3 voice 2", id="pitch-fraction"),
    pytest.param("test", 0, _npz_piece(np.inf), "step 3 voice 2", id="pitch-inf"),
    pytest.param("train", 2, np.array([["60", "64", "67", "72"]]), "strings", id="piece-str-array"),
    pytest.param("train", 2, np.zeros((5, 3)), "(T, 4)", id="piece-three-voices"),
    pytest.param("train", 2, np.zeros(5), "(T, 4)", id="piece-1d"),
    pytest.param("train", 2, np.zeros((0, 4)), "(T, 4)", id="piece-empty"),
    pytest.param("valid", None, np.zeros((3, 5)), "(P, T, 4)", id="split-2d-numeric"),
    pytest.param("valid", None, np.array({"a": 1}, dtype=object), "(P, T, 4)", id="split-0d-object"),
]


@pytest.mark.parametrize(("split", "piece", "value", "words"), NPZ_BAD)
def test_jsb_separated_npz_refuses_bad_values(tmp_path, split, piece, value, words):
    data: dict = {k: list(v) for k, v in _separated_data().items()}
    if piece is None:
        data[split] = value
    else:
        data[split][piece] = value
    path = write_separated_npz(tmp_path / "Jsb16thSeparated.npz", data)
    with pytest.raises(ValueError) as err:
        load_jsb_separated(path)
    assert_names(err, path, f"split '{split}'", words, *([] if piece is None else [f"piece {piece}"]))


def test_jsb_separated_npz_missing_split_and_truncated_member(tmp_path):
    data = _separated_data()
    path = tmp_path / "a.npz"
    np.savez(path, train=np.zeros((2, 8, 4)), test=np.zeros((2, 8, 4)))
    with pytest.raises(ValueError) as err:
        load_jsb_separated(path)
    assert_names(err, path, "'valid'")
    # a member whose body is shorter than its header says
    good = write_separated_npz(tmp_path / "good.npz", {"train": np.full((2, 8, 4), 60.0), **{
        k: v for k, v in data.items() if k != "train"}})
    cut = tmp_path / "cut.npz"
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(cut, "w") as dst:
        for name in src.namelist():
            body = src.read(name)
            dst.writestr(name, body[:-40] if name == "train.npy" else body)
    with pytest.raises(ValueError) as err:
        load_jsb_separated(cut)
    assert_names(err, cut, "train.npy", "header")


def test_jsb_separated_accepts_numeric_3d_splits_and_both_silences(tmp_path):
    a = np.full((2, 8, 4), 60.0)
    a[0, 0, 1], a[1, 2, 3] = np.nan, -1
    as_int = np.nan_to_num(a, nan=-1).astype(np.int16)
    path = write_separated_npz(tmp_path / "s.npz", {"train": a, "valid": as_int, "test": list(a)})
    sep = load_jsb_separated(path)
    for s in ("train", "val", "test"):
        assert len(sep[s]) == 2 and sep[s][0].shape == (8, 4) and sep[s][0].dtype == np.float64
    assert np.isnan(sep["train"][0][0, 1]) and np.isnan(sep["train"][1][2, 3]) and np.isnan(sep["val"][1][2, 3])


# ======================================================================================== performances
def _write_midi(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    for i in range(20):
        inst.notes.append(pretty_midi.Note(velocity=int(rng.integers(30, 110)), pitch=int(rng.integers(50, 80)),
                                           start=i * 0.2, end=i * 0.2 + 0.3))
    pm.instruments.append(inst)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))


GOOD_NOTES = np.array([[60, 80, 0.0, 0.5], [64, 70, 0.5, 1.0]])

NOTES_BAD = [
    pytest.param(np.array([[np.nan, 80, 0, 1]]), "non-finite", id="nan"),
    pytest.param(np.array([[60, 80, 0, np.inf]]), "non-finite", id="inf-end"),
    pytest.param(np.array([[128, 80, 0, 1]]), "pitch", id="pitch-128"),
    pytest.param(np.array([[60.5, 80, 0, 1]]), "pitch", id="pitch-fraction"),
    pytest.param(np.array([[60, 200, 0, 1]]), "velocity", id="velocity-200"),
    pytest.param(np.array([[60, -1, 0, 1]]), "velocity", id="velocity-negative"),
    pytest.param(np.array([[60, 80, -0.5, 1]]), "start < 0", id="start-negative"),
    pytest.param(np.array([[60, 80, 1.0, 0.5]]), "end before start", id="end-before-start"),
    pytest.param(np.zeros((2, 3)), "(N, 4)", id="three-columns"),
    pytest.param(np.zeros((2, 4), np.int64), "(N, 4)", id="int-array"),
    pytest.param([[60, 80, 0, 1]], "(N, 4)", id="list"),
]


@pytest.mark.parametrize(("notes", "words"), NOTES_BAD)
def test_note_arrays_are_checked(notes, words):
    one_bad_note = isinstance(notes, np.ndarray) and notes.dtype.kind == "f" and notes.shape == (1, 4)
    if one_bad_note:  # after two good notes: the message names note 2
        notes = np.concatenate([GOOD_NOTES, notes])
    with pytest.raises(ValueError) as err:
        _check_notes(notes, "piece.mid")
    assert_names(err, "piece.mid", words, *(["note 2"] if one_bad_note else []))
    assert _check_notes(GOOD_NOTES.copy(), "ok.mid").shape == (2, 4)


def _performance_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "midi"
    for i in range(6):
        _write_midi(root / f"p{i}.mid", i)
    monkeypatch.setattr(lm_data, "_folder_split", lambda rel: "val" if "p1." in rel else "test" if "p2." in rel
                        else "train")
    return root


@pytest.mark.parametrize("damage", ["out-of-range", "truncated", "object-array", "wrong-shape"])
def test_a_damaged_note_cache_is_parsed_again(tmp_path, monkeypatch, caplog, damage):
    root = _performance_root(tmp_path, monkeypatch)
    cache = tmp_path / "cache"
    dm = PerformanceDataModule(path=str(root), max_len=32, batch_size=2, cache_dir=str(cache))
    dm.setup()
    first = {s: [p.copy() for p in ds.pieces] for s, ds in dm.datasets.items() if hasattr(ds, "pieces")}
    entry = sorted((cache / "notes").glob("*.npy"))[0]
    arr = np.load(entry)
    if damage == "out-of-range":
        arr[0, 0] = 300
        np.save(entry, arr)
    elif damage == "truncated":
        entry.write_bytes(entry.read_bytes()[:-17])
    elif damage == "object-array":
        np.save(entry, np.array([{"pitch": 60}], dtype=object), allow_pickle=True)
    else:
        np.save(entry, arr[:, :3])
    dm2 = PerformanceDataModule(path=str(root), max_len=32, batch_size=2, cache_dir=str(cache))
    with caplog.at_level(logging.WARNING, logger="zoo.music.lm.data"):
        dm2.setup()
    assert any(str(entry) in r.getMessage() and "parsing the MIDI file again" in r.getMessage() for r in caplog.records)
    assert not dm2.skipped
    assert all(np.array_equal(a, b) for s in first for a, b in zip(first[s], dm2.datasets[s].pieces))
    assert np.load(entry).shape[1] == 4  # rewritten
    next(iter(dm2.train_dataloader()))


def _maestro(root: Path, index: object, suffix: str = ".json") -> Path:
    for i in range(3):
        _write_midi(root / "2018" / f"p{i}.midi", i)
    meta = root / f"maestro-v3.0.0{suffix}"
    meta.write_text(index if isinstance(index, str) else json.dumps(index))
    return meta


MAESTRO_BAD = [
    pytest.param([{"split": "train"}], ".json", "row 0", id="json-row-without-midi_filename"),
    pytest.param([{"midi_filename": "2018/p0.midi", "split": "train"}, "2018/p1.midi"], ".json", "row 1",
                 id="json-row-not-object"),
    pytest.param([{"midi_filename": 7, "split": "train"}], ".json", "row 0", id="json-filename-int"),
    pytest.param([{"midi_filename": "2018/p0.midi", "split": "dev"}], ".json", "unknown split", id="json-split-dev"),
    pytest.param({"split": {"0": "train"}, "midi_filename": {"1": "2018/p0.midi"}}, ".json", "same row keys",
                 id="json-columns-disagree"),
    pytest.param({"split": ["train"], "midi_filename": ["2018/p0.midi"]}, ".json", "same row keys",
                 id="json-columns-lists"),
    pytest.param({"rows": []}, ".json", "'split' and 'midi_filename'", id="json-no-columns"),
    pytest.param("{not json", ".json", "not valid JSON", id="json-invalid"),
    pytest.param("split,file\ntrain,2018/p0.midi\n", ".csv", "'midi_filename'", id="csv-missing-column"),
    pytest.param("split,midi_filename\nvalidation\n", ".csv", "row 0", id="csv-short-row"),
    pytest.param("split,midi_filename\nbogus,2018/p0.midi\n", ".csv", "unknown split", id="csv-split-bogus"),
]


@pytest.mark.parametrize(("index", "suffix", "words"), MAESTRO_BAD)
def test_maestro_index_refuses_bad_rows(tmp_path, index, suffix, words):
    meta = _maestro(tmp_path / "maestro", index, suffix)
    with pytest.raises(ValueError) as err:
        PerformanceDataModule(path=str(tmp_path / "maestro"), cache_dir=str(tmp_path / "c")).setup()
    assert_names(err, meta, words)


# ============================================================================================== melodies
ABC = "X:1\nT:One\nM:4/4\nL:1/8\nK:C\nCDEF GABc | c2 B2 A2 G2 |\n"


def _melody_root(root: Path, n: int = 4) -> Path:
    root.mkdir()
    for i in range(n):
        (root / f"t{i}.abc").write_text(ABC.replace("T:One", f"T:T{i}"))
    return root


def _fake_parser(bad_tokens: np.ndarray, bad_name: str) -> Callable:
    def parse(path: Path, tok: MelodyTokenizer, melody_part: object) -> list[np.ndarray]:
        good = np.array([[60 + PITCH_OFFSET, 2], [62 + PITCH_OFFSET, 4], [1, 2]], np.int64)
        return [good, bad_tokens] if path.name == bad_name else [good]

    return parse


MELODY_BAD = [
    pytest.param(np.array([[131, 2], [60, 2]]), "pitch 131", id="pitch-over-vocab"),
    pytest.param(np.array([[0, 2], [60, 2]]), "pitch 0", id="pitch-pad"),
    pytest.param(np.array([[-4, 2], [60, 2]]), "pitch -4", id="pitch-negative"),
    pytest.param(np.array([[60, 0], [60, 2]]), "duration 0", id="duration-pad"),
    pytest.param(np.array([[60, 2], [60, 17]]), "duration 17", id="duration-over-vocab"),
    pytest.param(np.array([[60.0, 2.0], [61.0, 2.0]]), "integer", id="float-tokens"),
    pytest.param(np.array([[60, 2, 1], [61, 2, 1]]), "(N >= 2, 2)", id="three-columns"),
    pytest.param(np.array([[60, 2]]), "(N >= 2, 2)", id="one-token"),
]


@pytest.mark.parametrize(("tokens", "words"), MELODY_BAD)
def test_melody_files_with_out_of_vocabulary_tokens_are_skipped_and_counted(tmp_path, monkeypatch, tokens, words):
    root = _melody_root(tmp_path / "m")
    monkeypatch.setattr(melody_data, "parse_melody_file", _fake_parser(tokens, "t2.abc"))
    with pytest.warns(UserWarning) as rec:
        mel = load_melodies(str(root), cache_dir=str(tmp_path / "c"))
    msgs = [str(w.message) for w in rec if "skipped" in str(w.message)]
    assert len(msgs) == 1 and "skipped 1 of 4 files" in msgs[0] and "t2.abc melody 1" in msgs[0] and words in msgs[0]
    assert sorted(n for n, _ in mel) == ["t0.abc#0", "t1.abc#0", "t3.abc#0"]


@pytest.mark.parametrize("damage", ["out-of-range", "lengths-disagree", "missing-array", "not-npz"])
def test_a_damaged_melody_cache_is_parsed_again(tmp_path, damage):
    root = _melody_root(tmp_path / "m", n=2)
    cache = tmp_path / "c"
    first = load_melodies(str(root), cache_dir=str(cache))
    (entry,) = cache.glob("melodies_*.npz")
    with np.load(entry) as z:
        arrays = dict(z)
    if damage == "out-of-range":
        arrays["tokens"][3, 1] = 99
    elif damage == "lengths-disagree":
        arrays["lengths"][0] += 1
    elif damage == "missing-array":
        del arrays["names"]
    if damage == "not-npz":
        entry.write_bytes(b"PK\x03\x04 truncated")
    else:
        np.savez_compressed(entry, **arrays)
    with pytest.warns(UserWarning, match="damaged melody cache"):
        again = load_melodies(str(root), cache_dir=str(cache))
    assert [n for n, _ in again] == [n for n, _ in first]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(again, first))
    with warnings.catch_warnings():  # the cache was rewritten: the third read is clean
        warnings.simplefilter("error")
        load_melodies(str(root), cache_dir=str(cache))
