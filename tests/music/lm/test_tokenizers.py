"""Round trips of the chorale, JSB-16th and performance tokenizers through real MIDI files."""

from __future__ import annotations

import numpy as np
import pretty_midi
import pytest

from zoo.music.lm.tokenizers import (
    ChoraleGrid,
    ChoraleTokenizer,
    Jsb16thTokenizer,
    Note,
    PerformanceTokenizer,
    tokenizer_from_config,
)


def random_grid(rng: np.random.Generator, steps: int = 48) -> ChoraleGrid:
    """Voices that hold, repeat (same pitch re-struck), move and rest."""
    pitches = np.full((steps, 4), -1)
    onsets = np.zeros((steps, 4), dtype=bool)
    for v, centre in enumerate((72, 65, 58, 48)):
        t = 0
        while t < steps:
            dur = int(rng.integers(1, 6))
            if rng.random() < 0.15:
                t += dur  # rest
                continue
            pitches[t: t + dur, v] = centre + int(rng.integers(-4, 5))
            onsets[t, v] = True
            t += dur
    return ChoraleGrid(pitches, onsets)


def test_chorale_round_trip_through_midi_file(tmp_path):
    tok = ChoraleTokenizer()
    rng = np.random.default_rng(0)
    for i in range(5):
        grid = random_grid(rng)
        tokens = tok.encode(grid)
        assert tokens[0] == tok.bos_id and tokens[-1] == tok.eos_id
        assert len(tokens) == 4 * len(grid) + 2
        path = tmp_path / f"c{i}.mid"
        tok.tokens_to_midi(tokens).write(str(path))
        back = tok.midi_to_tokens(path, add_eos=True)
        # MIDI drops trailing rests; compare on the sounding span
        assert back == tokens[: len(back) - 1] + [tok.eos_id]
        regrid = ChoraleGrid.from_midi(path)
        n = len(regrid)
        assert regrid == ChoraleGrid(grid.pitches[:n], grid.onsets[:n])
        assert (grid.pitches[n:] == -1).all()


def test_chorale_hold_and_repeat_differ():
    tok = ChoraleTokenizer()
    held = ChoraleGrid(np.full((2, 4), 60), np.array([[True] * 4, [False] * 4]))
    repeated = ChoraleGrid(np.full((2, 4), 60), np.ones((2, 4), dtype=bool))
    assert tok.encode(held) != tok.encode(repeated)
    assert tok.encode(held)[5:9] == [tok.hold_id] * 4
    assert tok.decode(tok.encode(held)) == held and tok.decode(tok.encode(repeated)) == repeated
    # two notes, one held and one re-struck, give two / four MIDI notes per voice
    assert sum(len(i.notes) for i in held.to_midi().instruments) == 4
    assert sum(len(i.notes) for i in repeated.to_midi().instruments) == 8


def test_chorale_decode_is_lenient_and_validates():
    tok = ChoraleTokenizer()
    grid = tok.decode([tok.bos_id, tok.hold_id, 65, tok.rest_id, 70, 66])  # trailing partial step dropped
    assert len(grid) == 1 and grid.pitches[0].tolist() == [-1, 60, -1, 65]
    with pytest.raises(ValueError, match="outside the chorale vocabulary"):
        tok.decode([1000, 5, 5, 5])
    with pytest.raises(ValueError, match="4 non-drum tracks"):
        pm = pretty_midi.PrettyMIDI()
        pm.instruments.append(pretty_midi.Instrument(0))
        ChoraleGrid.from_midi(pm)


def test_jsb16th_round_trip_keeps_nan_and_no_hold():
    tok = Jsb16thTokenizer()
    steps = np.array([[72, 67, 64, 48], [72, np.nan, 64, 48], [74, 67, np.nan, 50]], dtype=float)
    tokens = tok.encode_steps(steps)
    assert len(tokens) == 13 and tok.silence_id in tokens
    back = tok.decode_steps(tokens)
    np.testing.assert_array_equal(np.isnan(back), np.isnan(steps))
    np.testing.assert_array_equal(np.nan_to_num(back), np.nan_to_num(steps))
    # held notes are repeated pitch tokens: steps 0 and 1 of the soprano are the same token
    assert tokens[1] == tokens[5]


def midi_with_notes(notes: list[tuple[int, int, float, float]], pedal: list[tuple[float, int]] = ()):
    pm = pretty_midi.PrettyMIDI()
    inst = pretty_midi.Instrument(program=0)
    for pitch, vel, start, end in notes:
        inst.notes.append(pretty_midi.Note(velocity=vel, pitch=pitch, start=start, end=end))
    for t, value in pedal:
        inst.control_changes.append(pretty_midi.ControlChange(number=64, value=value, time=t))
    pm.instruments.append(inst)
    return pm


def test_performance_vocabulary_layout():
    tok = PerformanceTokenizer()
    names = tok.token_names()
    assert tok.num_events == 388 and len(names) == tok.vocab_size == 391
    assert names[0] == "NOTE_ON_0" and names[128] == "NOTE_OFF_0"
    assert names[256] == "TIME_SHIFT_10ms" and names[355] == "TIME_SHIFT_1000ms"
    assert names[356] == "VELOCITY_0" and names[387] == "VELOCITY_31"


def test_performance_round_trip_within_10ms_and_one_bin(tmp_path):
    rng = np.random.default_rng(1)
    notes = []
    for _ in range(150):
        pitch = int(rng.integers(21, 109))
        start = float(rng.uniform(0, 30))
        notes.append((pitch, int(rng.integers(1, 128)), start, start + float(rng.uniform(0.02, 4.0))))
    path = tmp_path / "perf.mid"
    midi_with_notes(notes).write(str(path))
    tok = PerformanceTokenizer()
    original = tok.notes_from_midi(path, sustain=False)
    from zoo.music.lm.tokenizers import _trim_same_pitch_overlaps

    original = _trim_same_pitch_overlaps(original)
    tokens = tok.midi_to_tokens(path)
    assert max(tokens) < tok.vocab_size and tokens[0] == tok.bos_id and tokens[-1] == tok.eos_id
    out_path = tmp_path / "back.mid"
    tok.tokens_to_midi(tokens).write(str(out_path))
    decoded = tok.notes_from_midi(out_path, sustain=False)
    assert len(decoded) == len(original)
    key = lambda n: (n.pitch, round(n.start, 2))  # noqa: E731
    for a, b in zip(sorted(original, key=key), sorted(decoded, key=key)):
        assert a.pitch == b.pitch
        assert abs(a.start - b.start) <= 0.010 + 1e-6
        assert abs(a.end - b.end) <= 0.010 + 1e-6
        assert abs(tok.velocity_bin(a.velocity) - tok.velocity_bin(b.velocity)) <= 1
        assert abs(a.velocity - b.velocity) < 128 // tok.num_velocity_bins


def test_performance_long_gaps_and_sustain_pedal():
    tok = PerformanceTokenizer()
    # a 2.5 s gap needs three TIME_SHIFT events (1 s max each)
    tokens = tok.encode_notes([Note(60, 80, 0.0, 0.5), Note(62, 80, 3.0, 3.5)], add_bos=False, add_eos=False)
    shifts = [t for t in tokens if 256 <= t < 356]
    assert sum(t - 255 for t in shifts) == 350
    # pedal down 0.1-2.0 s: the 0.5 s note sounds until the release
    pm = midi_with_notes([(60, 80, 0.0, 0.5), (64, 80, 2.5, 3.0)], pedal=[(0.1, 127), (2.0, 0)])
    notes = tok.notes_from_midi(pm)
    assert notes[0].end == pytest.approx(2.0)
    assert notes[1].end == pytest.approx(3.0)
    # a re-strike of the same key under the pedal ends the held note
    pm = midi_with_notes([(60, 80, 0.0, 0.5), (60, 90, 1.0, 1.2)], pedal=[(0.1, 127), (2.0, 0)])
    notes = tok.notes_from_midi(pm)
    assert [round(n.end, 3) for n in notes] == [1.0, 2.0]


def test_performance_decode_is_lenient_and_validates():
    tok = PerformanceTokenizer()
    notes = tok.decode_notes([tok.bos_id, 128 + 60, 60, 256 + 9, 60, 256 + 4])  # stray off, re-strike, open note
    assert [(n.pitch, round(n.start, 2), round(n.end, 2)) for n in notes] == [(60, 0.0, 0.1), (60, 0.1, 0.15)]
    with pytest.raises(ValueError, match="outside the performance vocabulary"):
        tok.decode_notes([500])


def test_unreadable_midi_and_unknown_tokenizer(tmp_path):
    bad = tmp_path / "bad.mid"
    bad.write_bytes(b"MThd\x00\x00garbage")
    with pytest.raises(ValueError, match="not a readable MIDI file"):
        PerformanceTokenizer().midi_to_tokens(bad)
    with pytest.raises(ValueError, match="does not exist"):
        PerformanceTokenizer().midi_to_tokens(tmp_path / "missing.mid")
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        tokenizer_from_config({"kind": "abc"})
    assert isinstance(tokenizer_from_config({"kind": "jsb16th"}), Jsb16thTokenizer)
