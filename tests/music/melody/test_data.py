"""Melody tokenization and MelodyDataModule on fixtures written in the real formats (ABC, MusicXML, MIDI)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from zoo.music.melody import data as melody
from zoo.music.melody.data import MelodyDataModule, collate_melodies, load_melodies, melody_split
from zoo.music.melody.tokenizer import PAD, PITCH_OFFSET, REST, SUSTAIN, MelodyTokenizer

ABC_TUNES = """X:1
T:Fixture One
M:4/4
L:1/8
K:C
CDEF GABc | c2 B2 A2 G2 | z2 E2 D2 C2 | C8 |

X:2
T:Fixture Two
M:3/4
L:1/4
K:G
G A B | d2 B | A2 z | G3 |
"""


def _write_fixtures(root: Path) -> None:
    import pretty_midi
    from music21 import note, stream

    root.mkdir(parents=True, exist_ok=True)
    (root / "tunes.abc").write_text(ABC_TUNES)
    # MusicXML: one part, with a whole-note-and-a-half tied value to exercise sustain splitting
    s = stream.Part()
    for midi, ql in [(67, 1.0), (69, 0.5), (71, 0.5), (72, 6.0), (None, 1.0), (74, 1.0)]:
        n = note.Rest() if midi is None else note.Note(midi)
        n.quarterLength = ql
        s.append(n)
    s.write("musicxml", fp=str(root / "song.musicxml"))
    # MIDI: two instruments, the melody is the second ("Lead"); a chord in the first
    pm = pretty_midi.PrettyMIDI(initial_tempo=120)  # a quarter note = 0.5 s
    bass = pretty_midi.Instrument(program=33, name="Bass")
    lead = pretty_midi.Instrument(program=0, name="Lead")
    for i, p in enumerate([60, 62, 64, 65, 67, 69, 71, 72]):
        lead.notes.append(pretty_midi.Note(velocity=90, pitch=p, start=0.5 * i, end=0.5 * i + 0.45))
        bass.notes.append(pretty_midi.Note(velocity=90, pitch=36, start=0.5 * i, end=0.5 * i + 0.45))
        bass.notes.append(pretty_midi.Note(velocity=90, pitch=43, start=0.5 * i, end=0.5 * i + 0.45))
    pm.instruments += [bass, lead]
    pm.write(str(root / "sub" / "two_tracks.mid") if (root / "sub").mkdir() is None else "")
    (root / "broken.mid").write_bytes(b"MThd\x00\x00garbage")
    (root / "empty.abc").write_text("X:1\nT:nothing\nK:C\n")
    (root / "notes.txt").write_text("not music, ignored by suffix")


def test_tokenizer_roundtrip_sustain_rest_skyline():
    tok = MelodyTokenizer()
    notes = [
        (60, 0.0, 1.0),
        (64, 0.0, 0.5),  # chord with 60: the skyline keeps 64, then a rest fills the gap
        (None, 1.0, 1.0),
        (None, 2.0, 0.5),  # consecutive rests merge
        (62, 2.5, 6.0),  # longer than a whole note: one note + sustain
        (65, 8.5, 0.05),  # grace note, dropped
        (67, 8.5, 0.5),
    ]
    tokens = tok.encode(notes)
    assert tokens.tolist() == [
        [64 + PITCH_OFFSET, 2], [REST, 8], [62 + PITCH_OFFSET, 16], [SUSTAIN, 8], [67 + PITCH_OFFSET, 2]
    ]
    decoded = tok.decode(tokens)
    assert decoded == [(64, 0.0, 0.5), (62, 2.5, 6.0), (67, 8.5, 0.5)]
    # a gap between notes becomes a rest
    assert tok.encode([(60, 0.0, 0.5), (62, 1.0, 0.5)]).tolist() == [[63, 2], [REST, 2], [65, 2]]
    with pytest.raises(ValueError, match="MIDI pitch"):
        tok.encode([(200, 0.0, 1.0)])


def test_folder_of_abc_musicxml_midi(tmp_path):
    root = tmp_path / "melodies"
    _write_fixtures(root)
    with pytest.warns(UserWarning, match=r"skipped 2 of 5 files") as rec:
        mel = load_melodies(str(root), cache_dir=str(tmp_path / "cache"), melody_part="lead")
    assert len([w for w in rec if "skipped" in str(w.message)]) == 1
    names = sorted(n for n, _ in mel)
    # the name-based part choice: "lead" matches the MIDI melody track; ABC / MusicXML have one part
    assert names == ["song.musicxml#0", "sub/two_tracks.mid#0", "tunes.abc#0", "tunes.abc#1"]
    by_name = dict(mel)
    abc = by_name["tunes.abc#0"]
    assert abc[:4].tolist() == [[60 + PITCH_OFFSET, 2], [62 + PITCH_OFFSET, 2], [64 + PITCH_OFFSET, 2], [65 + PITCH_OFFSET, 2]]
    assert [REST, 4] in abc.tolist()
    xml = by_name["song.musicxml#0"].tolist()
    assert xml == [[70, 4], [72, 2], [74, 2], [75, 16], [SUSTAIN, 8], [REST, 4], [77, 4]]
    midi = by_name["sub/two_tracks.mid#0"]
    assert (midi[:, 0] - PITCH_OFFSET).tolist() == [60, 62, 64, 65, 67, 69, 71, 72]

    # cached: a second load does not parse (the parser would fail)
    def boom(*a, **k):
        raise AssertionError("parsed again")

    orig = melody.parse_melody_file
    melody.parse_melody_file = boom
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            again = load_melodies(str(root), cache_dir=str(tmp_path / "cache"), melody_part="lead")
    finally:
        melody.parse_melody_file = orig
    assert [n for n, _ in again] == [n for n, _ in mel]
    assert all(np.array_equal(a, b) for (_, a), (_, b) in zip(again, mel))

    # part by index: the first part with notes of the MIDI file is the bass (chords -> skyline = 43)
    with pytest.warns(UserWarning):
        first = dict(load_melodies(str(root), cache_dir=str(tmp_path / "cache2"), melody_part=0))
    assert set((first["sub/two_tracks.mid#0"][:, 0] - PITCH_OFFSET).tolist()) == {43}


def test_datamodule_batches_and_split(tmp_path):
    root = tmp_path / "m"
    _write_fixtures(root)
    dm = MelodyDataModule(str(root), cache_dir=str(tmp_path / "c"), melody_part="lead", seq_len=6,
                          batch_size=2, val_percent=0, test_percent=0)
    with pytest.warns(UserWarning, match="skipped"):
        dm.prepare_data()
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"pitch", "duration", "target_pitch", "target_duration"}
    assert batch["pitch"].shape == batch["target_duration"].shape and batch["pitch"].shape[1] <= 6
    torch.testing.assert_close(batch["pitch"][:, 1:], batch["target_pitch"][:, :-1])
    with pytest.raises(ValueError, match="val split .* is empty"):
        dm.val_dataloader()
    with pytest.raises(ValueError, match="not a directory"):
        load_melodies(str(tmp_path / "missing"))
    # deterministic, name-based split with roughly the requested sizes
    names = [f"x{i}.abc#0" for i in range(2000)]
    counts = {s: sum(melody_split(n) == s for n in names) for s in ("train", "val", "test")}
    assert counts["train"] > 1500 and 120 < counts["val"] < 280 and 120 < counts["test"] < 280
    assert [melody_split(n) for n in names[:50]] == [melody_split(n) for n in names[:50]]


def test_collate_pads_at_the_end():
    batch = collate_melodies([torch.tensor([[60, 2], [62, 2], [64, 4]]), torch.tensor([[60, 4], [61, 4]])])
    assert batch["pitch"].tolist() == [[60, 62], [60, 61]]
    assert batch["target_pitch"].tolist() == [[62, 64], [61, PAD]]


def test_default_music21_folk_corpus(tmp_path):
    dm = MelodyDataModule(cache_dir=str(tmp_path), collections=("ryansMammoth",), max_files=6, seq_len=32)
    dm.setup("fit")
    total = sum(len(v) for v in dm.splits.values())
    assert total >= 6
    ds = dm.dataset("train")
    assert len(ds) > 0 and ds[0].shape[1] == 2
