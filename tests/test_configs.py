"""Every training config in ``configs/`` parses and fits one step (``fast_dev_run``).

Each config runs as written, through ``python -m zoo.train``'s CLI, with three kinds of override so the
suite stays small and offline: the model shrinks to its registry ``test_overrides`` (the config's
own overrides kept where the tiny variant does not set them), batches and windows get small, and a
config that reads a dataset from disk reads a tiny fixture written in that dataset's real on-disk
format (JSB Chorales json, a MAESTRO-indexed MIDI folder, ABC tunes, a Galaxy10 h5, CIFAR-10
pickles). A new family's configs get this test by adding its fixture to
``tests/<domain>/<task>/config_fixtures.py`` (see ``_family_data_args``).
"""

from __future__ import annotations

import importlib.util
import json
import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml

from zoo.hub import model_entry
from zoo.train import cli_main

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "configs").rglob("*.yaml"))


# ------------------------------------------------------------------------------ fixtures in real formats
def _jsb_json(root: Path) -> Path:
    rng = np.random.default_rng(0)

    def piece(steps: int) -> list[list[int]]:
        base = rng.integers(55, 65, size=(steps, 1))
        return (base + np.array([[12, 7, 4, 0]])).tolist()

    data = {split: [piece(48 + 8 * i) for i in range(n)] for split, n in (("train", 4), ("valid", 2), ("test", 2))}
    path = root / "Jsb16thSeparated.json"
    path.write_text(json.dumps(data))
    return path


def _maestro(root: Path) -> Path:
    import pretty_midi

    rows = ["canonical_composer,canonical_title,split,year,midi_filename,audio_filename,duration"]
    for i, split in enumerate(["train", "train", "train", "validation", "test"]):
        pm = pretty_midi.PrettyMIDI()
        piano = pretty_midi.Instrument(program=0)
        for j in range(24):
            piano.notes.append(pretty_midi.Note(velocity=40 + j, pitch=48 + (i + j) % 24, start=0.1 * j, end=0.1 * j + 0.3))
        pm.instruments.append(piano)
        name = f"2018/piece_{i}.midi"
        (root / "2018").mkdir(parents=True, exist_ok=True)
        pm.write(str(root / name))
        rows.append(f"X,Piece {i},{split},2018,{name},{name[:-5]}.wav,3.0")
    (root / "maestro-v3.0.0.csv").write_text("\n".join(rows) + "\n")
    return root


def _abc_folder(root: Path) -> Path:
    tunes = [f"X:{i}\nT:Tune {i}\nM:4/4\nL:1/8\nK:C\n{'CDEF GABc ' if i % 2 else 'GABc defg '}| c2 B2 A2 G2 | C8 |\n" for i in range(1, 13)]
    root.mkdir(parents=True, exist_ok=True)
    (root / "tunes.abc").write_text("\n".join(tunes))
    return root


def _galaxy10(root: Path) -> Path:
    import h5py

    rng = np.random.default_rng(0)
    path = root / "Galaxy10_DECals.h5"
    with h5py.File(path, "w") as f:
        f["images"] = rng.integers(0, 256, size=(200, 32, 32, 3), dtype=np.uint8)
        f["ans"] = np.arange(200, dtype=np.uint8) % 10
    return path


def _cifar10(root: Path) -> Path:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)

    def dump(name: str, obj: dict) -> None:
        with open(root / name, "wb") as f:
            pickle.dump(obj, f, protocol=2)

    dump("batches.meta", {b"label_names": [f"class{i}".encode() for i in range(10)]})
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        dump(name, {b"data": rng.integers(0, 256, size=(20, 3072), dtype=np.uint8), b"labels": list(range(10)) * 2})
    return root


FIXTURES = {
    "zoo.music.lm.data.ChoralesDataModule": _jsb_json,
    "zoo.music.lm.data.PerformanceDataModule": _maestro,
    "zoo.music.melody.data.MelodyDataModule": _abc_folder,
}
VISION_FIXTURES = {"galaxy10": _galaxy10, "cifar10": _cifar10}


def _family_data_args() -> dict[str, Callable[[dict, Path], list[str]]]:
    """``DATA_ARGS`` of every ``tests/<domain>/<task>/config_fixtures.py``, by datamodule class path.

    A family's file maps its datamodule's class path to ``fn(init_args, root) -> extra CLI args``: it
    writes a tiny fixture in the dataset's real format under ``root`` (or shrinks the offline
    generator) and returns the ``--data.init_args.*`` arguments that point the config at it.
    """
    found: dict[str, Callable[[dict, Path], list[str]]] = {}
    for path in sorted((REPO / "tests").glob("*/*/config_fixtures.py")):
        spec = importlib.util.spec_from_file_location(f"_config_fixtures_{path.parent.parent.name}_{path.parent.name}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        clash = found.keys() & module.DATA_ARGS.keys()
        assert not clash, f"{path}: datamodules {sorted(clash)} already have config fixtures"
        found.update(module.DATA_ARGS)
    return found


FAMILY_DATA_ARGS = _family_data_args()


def _data_args(config: dict, tmp_path: Path) -> list[str]:
    data = config["data"]
    cls, init = data["class_path"], data.get("init_args") or {}
    args = ["--data.init_args.batch_size", "2"]
    if "num_workers" in init:
        args += ["--data.init_args.num_workers", "0"]
    if cls.endswith("ImageClassificationDataModule"):
        args += ["--data.init_args.img_size", "64"]
        path = init.get("path")
        if path is not None:
            kind = "galaxy10" if str(path).endswith(".h5") else "cifar10"
            (tmp_path / kind).mkdir()
            args += ["--data.init_args.path", str(VISION_FIXTURES[kind](tmp_path / kind))]
        return args
    (tmp_path / "data").mkdir()
    if cls in FAMILY_DATA_ARGS:
        return args + FAMILY_DATA_ARGS[cls](init, tmp_path / "data")
    fixture = FIXTURES[cls](tmp_path / "data")
    args += ["--data.init_args.path", str(fixture)]
    if cls.endswith("MelodyDataModule"):
        args += ["--data.init_args.seq_len", "32", "--data.init_args.val_percent", "30", "--data.init_args.test_percent", "30",
                 "--data.init_args.cache_dir", str(tmp_path / "cache")]
    else:
        args += ["--data.init_args.max_len", "64"]
    return args


def _model_args(config: dict) -> list[str]:
    init = config["model"]["init_args"]
    entry = model_entry(init["model_name"])
    overrides = {**(init.get("overrides") or {}), **(entry.test_overrides or {})}
    overrides.pop("num_classes", None)  # a classifier module takes it as its own argument
    if "img_size" in overrides:
        overrides["img_size"] = 64
    return ["--model.init_args.overrides", json.dumps(overrides)]


def test_every_config_is_found():
    assert len(CONFIGS) >= 10, CONFIGS
    assert all("/configs/" in str(c) and len(c.relative_to(REPO / "configs").parts) == 3 for c in CONFIGS), (
        "configs live at configs/<domain>/<task>/<name>.yaml"
    )


@pytest.mark.slow
@pytest.mark.parametrize("config_path", CONFIGS, ids=[str(c.relative_to(REPO / "configs")) for c in CONFIGS])
def test_config_fits_one_step(config_path, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CACHE", str(tmp_path / "zoo_cache"))
    monkeypatch.chdir(tmp_path)
    config = yaml.safe_load(config_path.read_text())
    args = [
        "fit", "--config", str(config_path), "--trainer.fast_dev_run", "1", "--trainer.default_root_dir", str(tmp_path / "runs"),
        "--trainer.enable_progress_bar", "false", "--trainer.precision", "32-true", "--trainer.max_time", "null",
        *_model_args(config), *_data_args(config, tmp_path),
    ]
    cli = cli_main(args)
    assert cli.trainer.state.finished, f"{config_path.name}: fit did not finish"
    assert cli.trainer.global_step == 1
