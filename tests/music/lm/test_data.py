"""Chorale and performance datamodules on fixtures written in the real on-disk formats."""

from __future__ import annotations

import json
import logging
import pickle
from pathlib import Path

import numpy as np
import pretty_midi
import pytest
import torch

from zoo.music.lm.data import (
    ChoralesDataModule,
    PerformanceDataModule,
    _score_to_grid,
    load_jsb_pickle,
    load_jsb_separated,
    split_music21,
)
from zoo.music.lm.tokenizers import ChoraleGrid

SHARED = Path(__file__).resolve().parents[4] / "shared" / "data" / "jsb_chorales"


def _piece(rng: np.random.Generator, steps: int) -> np.ndarray:
    base = np.array([72.0, 67.0, 60.0, 48.0])
    arr = np.repeat(base[None] + rng.integers(-3, 4, (steps // 4 + 1, 4)), 4, axis=0)[:steps]
    arr[rng.random(steps) < 0.05, 1] = np.nan
    return arr


def write_separated_npz(path: Path, counts=(6, 3, 3), steps=40) -> dict[str, list[np.ndarray]]:
    rng = np.random.default_rng(0)
    data = {s: [_piece(rng, steps + 4 * i) for i in range(n)] for s, n in zip(("train", "valid", "test"), counts)}
    arrays = {}
    for s, pieces in data.items():
        obj = np.empty(len(pieces), dtype=object)
        obj[:] = pieces
        arrays[s] = obj
    np.savez(path, **arrays)
    return data


def write_quarter_pickle(path: Path) -> None:
    rng = np.random.default_rng(1)
    data = {
        s: [[tuple(np.int64(p) for p in sorted(rng.choice(np.arange(40, 80), size=rng.integers(1, 5), replace=False)))
             for _ in range(12)] for _ in range(n)]
        for s, n in (("train", 4), ("valid", 2), ("test", 2))
    }
    path.write_bytes(pickle.dumps(data))


def test_separated_npz_and_json_readers(tmp_path):
    data = write_separated_npz(tmp_path / "Jsb16thSeparated.npz")
    loaded = load_jsb_separated(tmp_path / "Jsb16thSeparated.npz")
    for s, key in zip(("train", "val", "test"), ("train", "valid", "test")):  # the file's "valid" is our "val"
        assert len(loaded[s]) == len(data[key])
        np.testing.assert_array_equal(np.nan_to_num(loaded[s][0], nan=-1), np.nan_to_num(data[key][0], nan=-1))
    as_json = {s: [np.nan_to_num(a, nan=-1).tolist() for a in v] for s, v in data.items()}
    (tmp_path / "j.json").write_text(json.dumps(as_json))
    loaded_json = load_jsb_separated(tmp_path / "j.json")
    np.testing.assert_array_equal(np.isnan(loaded_json["train"][0]), np.isnan(data["train"][0]))


def test_pickle_reader_is_safe_and_expands_quarters(tmp_path):
    write_quarter_pickle(tmp_path / "jsb.pkl")
    splits = load_jsb_pickle(tmp_path / "jsb.pkl")
    assert [len(splits[s]) for s in ("train", "val", "test")] == [4, 2, 2]
    assert len(splits["train"][0]) == 48  # 12 quarters -> 48 sixteenths
    evil = tmp_path / "evil.pkl"

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil.write_bytes(pickle.dumps({"train": [Evil()], "valid": [], "test": []}))
    with pytest.raises(ValueError, match="refusing to unpickle"):
        load_jsb_pickle(evil)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a valid .npz"):
        load_jsb_separated(bad)


@pytest.mark.parametrize("representation", ["chorale", "jsb16th"])
def test_chorales_datamodule_on_npz(tmp_path, representation):
    write_separated_npz(tmp_path / "Jsb16thSeparated.npz")
    dm = ChoralesDataModule(path=str(tmp_path), representation=representation, max_len=32, batch_size=4)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))["tokens"]
    assert batch.shape == (4, 33) and int(batch.max()) < dm.tokenizer.vocab_size
    # evaluation windows cover every token of every piece exactly once
    n_targets = sum(int((b["tokens"][:, 1:] != dm.tokenizer.pad_id).sum()) for b in dm.val_dataloader())
    expected = sum(len(dm.tokenizer.encode(g, add_bos=True, add_eos=True)) - 1 for g in dm.splits["val"])
    assert n_targets == expected
    with pytest.raises(ValueError, match="does not exist"):
        ChoralesDataModule(path=str(tmp_path / "missing.npz")).setup()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no Jsb16thSeparated"):
        ChoralesDataModule(path=str(tmp_path / "empty")).setup()


def test_training_windows_start_on_step_boundaries(tmp_path):
    write_separated_npz(tmp_path / "Jsb16thSeparated.npz", steps=80)
    dm = ChoralesDataModule(path=str(tmp_path), representation="jsb16th", max_len=16, batch_size=2, transpose=0,
                            add_eos=False)
    dm.setup()
    full = dm.tokenizer.encode(dm.splits["train"][0], add_bos=True, add_eos=False)
    for _ in range(10):
        item = dm.datasets["train"][0]
        window, start = item["tokens"].tolist(), item["start"]
        assert start == 0 or (start - 1) % 4 == 0, start
        assert full[start: start + 17] == window  # "start" is the window's absolute position


def test_music21_split_is_fixed_deterministic_and_disjoint():
    grids = [(n, ChoraleGrid(np.full((4, 4), 60 + n % 20), np.zeros((4, 4), bool))) for n in range(1, 101)]
    a = split_music21(grids)
    b = split_music21(list(reversed(grids)))
    assert [len(a[s]) for s in ("train", "val", "test")] == [80, 10, 10]
    for s in a:
        assert all(x == y for x, y in zip(a[s], b[s]))
    ids = {s: {id(g) for g in a[s]} for s in a}
    assert not (ids["train"] & ids["val"]) and not (ids["train"] & ids["test"]) and not (ids["val"] & ids["test"])


def test_music21_score_to_grid_one_chorale():
    from music21 import corpus

    score = corpus.parse("bach/bwv269")
    grid = _score_to_grid(score)
    assert grid.pitches.shape[1] == 4 and len(grid) == int(score.highestTime * 4)
    sounding = grid.pitches[grid.pitches >= 0]
    assert 30 < sounding.min() and sounding.max() < 90
    # soprano above bass wherever both sound
    both = (grid.pitches[:, 0] >= 0) & (grid.pitches[:, 3] >= 0)
    assert (grid.pitches[both, 0] > grid.pitches[both, 3]).all()


@pytest.mark.skipif(not (SHARED / "Jsb16thSeparated.npz").is_file(), reason="shared JSB data not present")
def test_shared_jsb_files_have_the_paper_split():
    sep = load_jsb_separated(SHARED / "Jsb16thSeparated.npz")
    assert [len(sep[s]) for s in ("train", "val", "test")] == [229, 76, 77]
    quarter = load_jsb_pickle(SHARED / "jsb-chorales-quarter.pkl")
    assert [len(quarter[s]) for s in ("train", "val", "test")] == [229, 76, 77]


# ------------------------------------------------------------------------------------------ performance
def _write_midi(path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    for i in range(30):
        start = i * 0.2
        inst.notes.append(pretty_midi.Note(velocity=int(rng.integers(30, 110)), pitch=int(rng.integers(50, 80)),
                                           start=start, end=start + 0.3))
    pm.instruments.append(inst)
    path.parent.mkdir(parents=True, exist_ok=True)
    pm.write(str(path))


def test_performance_folder_skips_corrupt_files_and_caches(tmp_path, caplog, monkeypatch):
    root = tmp_path / "midi"
    for i in range(12):
        _write_midi(root / f"sub{i % 2}" / f"p{i}.mid", i)
    (root / "garbage.mid").write_bytes(b"\x00\x01 not midi")
    good = (root / "sub0" / "p0.mid").read_bytes()
    (root / "truncated.midi").write_bytes(good[: len(good) // 2])
    cache = tmp_path / "cache"
    # force every split to be non-empty regardless of the hash split
    def split_by_name(rel: str) -> str:
        return "val" if "p1." in rel else "test" if "p2." in rel else "train"

    monkeypatch.setattr("zoo.music.lm.data._folder_split", split_by_name)
    dm = PerformanceDataModule(path=str(root), max_len=64, batch_size=2, cache_dir=str(cache))
    with caplog.at_level(logging.WARNING, logger="zoo.music.lm.data"):
        dm.setup()
    assert len(dm.skipped) == 2
    warnings = [r for r in caplog.records if "skipped" in r.getMessage()]
    assert len(warnings) == 1 and "2 unreadable" in warnings[0].getMessage()
    batch = next(iter(dm.train_dataloader()))["tokens"]
    assert batch.shape[0] == 2 and batch.max() < dm.tokenizer.vocab_size
    # the second setup reads the note cache and never parses MIDI again
    monkeypatch.setattr(dm.tokenizer, "notes_from_midi", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    dm2 = PerformanceDataModule(path=str(root), max_len=64, batch_size=2, cache_dir=str(cache))
    dm2.tokenizer = dm.tokenizer
    dm2.setup()
    assert len(dm2.datasets["train"]) == len(dm.datasets["train"])


def test_performance_maestro_csv_split_and_augmentation(tmp_path):
    root = tmp_path / "maestro"
    rows = ["canonical_composer,canonical_title,split,year,midi_filename,audio_filename,duration"]
    for i, split in enumerate(["train", "train", "train", "validation", "test"]):
        rel = f"2018/piece{i}.midi"
        _write_midi(root / rel, i)
        rows.append(f"C,T{i},{split},2018,{rel},{rel[:-5]}.wav,6.0")
    (root / "maestro-v3.0.0.csv").write_text("\n".join(rows) + "\n")
    dm = PerformanceDataModule(path=str(root), max_len=32, batch_size=1, cache_dir=str(tmp_path / "c"))
    dm.setup()
    assert [len(dm.files[s]) for s in ("train", "val", "test")] == [3, 1, 1]
    torch.manual_seed(0)
    notes = dm.datasets["train"].pieces[0]
    plain = dm._make_tokens(notes, None)
    augmented = [dm._make_tokens(notes, np.random.default_rng(s)) for s in range(5)]
    assert any(a != plain for a in augmented)
    (root / "maestro-v3.0.0.csv").write_text("split,midi_filename\nbogus,2018/piece0.midi\n")
    with pytest.raises(ValueError, match="unknown split"):
        PerformanceDataModule(path=str(root), cache_dir=str(tmp_path / "c")).setup()
