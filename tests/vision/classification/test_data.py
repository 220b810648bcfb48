"""ImageClassificationDataModule readers on tiny fixtures written in each dataset's real format."""

from __future__ import annotations

import pickle

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from zoo.vision.classification.data import (
    GALAXY10_CLASSES,
    ImageClassificationDataModule,
    read_cifar,
    read_galaxy10,
    stratified_split,
)


def _write_galaxy10(path, n=40, size=24):
    rng = np.random.default_rng(0)
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8))
        f.create_dataset("ans", data=(np.arange(n) % 10).astype(np.uint8))
        f.create_dataset("ra", data=rng.random(n))  # the real file has more columns; they are ignored
    return path


def _write_cifar10(root, per_batch=6):
    root.mkdir()
    rng = np.random.default_rng(0)

    def dump(name, obj):
        with open(root / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)  # the official files are Python 2 pickles with byte keys

    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    dump("batches.meta", {b"label_names": names, b"num_cases_per_batch": per_batch, b"num_vis": 3072})
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        dump(
            name,
            {
                b"batch_label": name.encode(),
                b"labels": [int(x) for x in (np.arange(per_batch) + i) % 10],
                b"data": rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8),
                b"filenames": [f"img_{i}_{j}.png".encode() for j in range(per_batch)],
            },
        )
    return root


def _write_cifar100(root, n=8):
    root.mkdir()
    rng = np.random.default_rng(1)
    fine = [f"class_{i}".encode() for i in range(100)]
    with open(root / "meta", "wb") as f:
        pickle.dump({b"fine_label_names": fine, b"coarse_label_names": [b"c"] * 20}, f, protocol=2)
    for split in ("train", "test"):
        with open(root / split, "wb") as f:
            pickle.dump(
                {
                    b"filenames": [b"x.png"] * n,
                    b"fine_labels": list(range(n)),
                    b"coarse_labels": [0] * n,
                    b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                },
                f,
                protocol=2,
            )
    return root


def test_galaxy10_reader_and_stratified_split(tmp_path):
    path = _write_galaxy10(tmp_path / "Galaxy10_DECals.h5")
    reader, labels, names = read_galaxy10(path)
    assert names == list(GALAXY10_CLASSES) and labels.tolist() == [i % 10 for i in range(40)]
    assert reader(3).shape == (24, 24, 3)
    dm = ImageClassificationDataModule(str(path), img_size=16, batch_size=4, val_fraction=0.25, test_fraction=0.25)
    assert dm.format == "galaxy10" and dm.num_classes == 10
    dm.setup("fit")
    sizes = {k: len(v) for k, v in dm.datasets.items()}
    assert sizes == {"train": 20, "val": 10, "test": 10}
    # stratified: every class in every split; deterministic
    for split in ("train", "val", "test"):
        ds = dm.datasets[split]
        assert sorted(set(labels[ds.indices].tolist())) == list(range(10))
    again = ImageClassificationDataModule(str(path), img_size=16, val_fraction=0.25, test_fraction=0.25)
    again.setup("fit")
    assert np.array_equal(again.datasets["val"].indices, dm.datasets["val"].indices)
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 3, 16, 16) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_galaxy10_refuses_wrong_layout(tmp_path):
    path = tmp_path / "bad.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="lacks dataset"):
        read_galaxy10(path)


def test_cifar10_and_cifar100_readers(tmp_path):
    root = _write_cifar10(tmp_path / "cifar-10-batches-py")
    x, y, names = read_cifar(root, "train")
    assert x.shape == (30, 32, 32, 3) and x.dtype == np.uint8 and len(y) == 30 and names[0] == "airplane"
    # channel-major rows of 1024 values: the first row of the data is the red plane
    raw = pickle.load(open(root / "data_batch_1", "rb"), encoding="bytes")[b"data"]
    assert np.array_equal(x[0, :, :, 0].reshape(-1), raw[0, :1024])
    dm = ImageClassificationDataModule(str(root), img_size=32, batch_size=4, val_fraction=0.2)
    dm.setup("fit")
    assert dm.format == "cifar10" and len(dm.datasets["test"]) == 6 and len(dm.datasets["val"]) == 6

    root100 = _write_cifar100(tmp_path / "cifar-100-python")
    x, y, names = read_cifar(root100, "test")
    assert x.shape == (8, 32, 32, 3) and len(names) == 100 and y.tolist() == list(range(8))
    assert ImageClassificationDataModule(str(root100)).format == "cifar100"


def test_cifar_reader_refuses_code_in_pickle(tmp_path):
    root = _write_cifar10(tmp_path / "cifar-10-batches-py")

    class Evil:
        def __reduce__(self):
            return (print, ("owned",))

    with open(root / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": [0]}, f)
    with pytest.raises(ValueError, match=r"CIFAR python pickle.*refusing to unpickle builtins\.print"):
        read_cifar(root, "test")


def test_image_folder_with_a_corrupt_file(tmp_path):
    root = tmp_path / "tree"
    for split, n in (("train", 4), ("val", 2)):
        for c in ("cat", "dog"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((10, 12, 3), 40 * i, np.uint8)).save(root / split / c / f"{i}.png")
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"not an image")
    with pytest.warns(RuntimeWarning, match="skipped 1 unreadable"):
        dm = ImageClassificationDataModule(str(root), img_size=16, batch_size=2)
    assert dm.format == "imagefolder" and dm.class_names == ["cat", "dog"]
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 8 and len(dm.datasets["val"]) == 4
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (2, 3, 16, 16)


def test_digits_default_and_bad_arguments():
    dm = ImageClassificationDataModule(img_size=16, batch_size=8, auto_augment="rand-m9-mstd0.5-inc1", re_prob=0.25)
    assert dm.format == "digits" and dm.num_classes == 10
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (8, 3, 16, 16)
    with pytest.raises(ValueError, match="does not exist"):
        ImageClassificationDataModule("/nonexistent/galaxy.h5")
    with pytest.raises(ValueError, match="format must be"):
        ImageClassificationDataModule(format="mnist")
    with pytest.raises(ValueError, match="val_fraction"):
        stratified_split(np.zeros(4, int), 0.6, 0.5, 0)
