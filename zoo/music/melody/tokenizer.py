"""(pitch, duration) tokens of monophonic melodies: the vocabulary, parsing files into it, and the
MIDI adapter ``python -m zoo.music.generate`` uses.

Tokens (the official RIPO layout): pitch 0 = pad, 1 = rest, 2 = sustain, ``3 + MIDI``; duration
0 = pad, ``t`` = ``t * step`` quarter notes for ``t = 1 .. max_steps`` (16th-note grid up to a
whole note by default). Onsets are quantized to the grid and each duration is the distance to the
next onset, so cumulative onsets stay exact; a note longer than ``max_steps`` continues as
``sustain`` tokens, a long rest as more rests. Chords keep their highest note (skyline); notes of
zero quantized length (grace notes) are dropped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = [
    "PAD",
    "REST",
    "SUSTAIN",
    "PITCH_OFFSET",
    "SUFFIXES",
    "DEFAULT_PRIMER",
    "MelodyTokenizer",
    "MelodyMidiTokenizer",
    "parse_melody_file",
]

PAD, REST, SUSTAIN = 0, 1, 2
PITCH_OFFSET = 3
SUFFIXES = (".mid", ".midi", ".xml", ".musicxml", ".mxl", ".abc", ".krn")


class MelodyTokenizer:
    """(pitch, duration) tokens <-> lists of ``(midi | None, onset, duration)`` notes (quarter notes)."""

    def __init__(self, step: float = 0.25, max_steps: int = 16) -> None:
        if step <= 0 or max_steps < 1:
            raise ValueError(f"MelodyTokenizer needs step > 0 and max_steps >= 1, got {step}, {max_steps}")
        self.step = step
        self.max_steps = max_steps

    @property
    def pitch_vocab(self) -> int:
        return PITCH_OFFSET + 128

    @property
    def duration_vocab(self) -> int:
        return self.max_steps + 1

    def encode(self, notes: Sequence[tuple[int | None, float, float]]) -> np.ndarray:
        """``notes``: ``(midi or None for a rest, onset, duration)``; returns ``(N, 2)`` int64 tokens."""
        # quantize onsets; the skyline keeps the highest pitch among notes sharing an onset
        by_onset: dict[int, tuple[int | None, int]] = {}
        for midi, onset, dur in notes:
            start = round(onset / self.step)
            end = round((onset + dur) / self.step)
            if end <= start:
                continue  # grace note / shorter than half a grid step
            if midi is not None and not 0 <= midi <= 127:
                raise ValueError(f"MelodyTokenizer: MIDI pitch {midi} outside 0..127")
            old = by_onset.get(start)
            if old is None or (midi is not None and (old[0] is None or midi > old[0])):
                by_onset[start] = (midi, end)
        starts = sorted(by_onset)
        tokens: list[tuple[int, int]] = []
        for i, start in enumerate(starts):
            midi, end = by_onset[start]
            if i + 1 < len(starts):
                nxt = starts[i + 1]
                if end < nxt and midi is not None:  # a gap without a written rest
                    self._emit(tokens, midi, end - start)
                    self._emit(tokens, None, nxt - end)
                    continue
                end = nxt  # monophonic: a note lasts until the next onset at most
            self._emit(tokens, midi, end - start)
        while tokens and tokens[0][0] == REST:
            tokens.pop(0)
        while tokens and tokens[-1][0] == REST:
            tokens.pop()
        return np.asarray(tokens, dtype=np.int64).reshape(-1, 2)

    def _emit(self, tokens: list[tuple[int, int]], midi: int | None, steps: int) -> None:
        first = True
        while steps > 0:
            n = min(steps, self.max_steps)
            if midi is None:
                pitch = REST
            else:
                pitch = midi + PITCH_OFFSET if first else SUSTAIN
            if pitch == REST and tokens and tokens[-1][0] == REST and tokens[-1][1] + n <= self.max_steps:
                tokens[-1] = (REST, tokens[-1][1] + n)  # merge consecutive rests
            else:
                tokens.append((pitch, n))
            steps -= n
            first = False

    def decode(self, tokens: np.ndarray | torch.Tensor) -> list[tuple[int | None, float, float]]:
        """Tokens ``(N, 2)`` -> notes; sustain extends the previous note, pad ends the melody."""
        out: list[list[Any]] = []
        onset = 0.0
        for pitch, dur in np.asarray(tokens).tolist():
            if pitch == PAD or dur == PAD:
                break
            length = dur * self.step
            if pitch == SUSTAIN and out and out[-1][0] is not None:
                out[-1][2] += length
            elif pitch in (REST, SUSTAIN):
                out.append([None, onset, length])
            else:
                out.append([pitch - PITCH_OFFSET, onset, length])
            onset += length
        return [(m, o, d) for m, o, d in out if m is not None]

    def to_stream(self, tokens: np.ndarray | torch.Tensor):
        """A music21 ``Stream`` of the melody (for ``.write('midi', path)`` / ``.write('musicxml', ...)``)."""
        from music21 import note, stream

        s = stream.Stream()
        for midi, onset, dur in self.decode(tokens):
            n = note.Note(midi)
            n.quarterLength = dur
            s.insert(onset, n)
        return s


# ----------------------------------------------------------------------------------------- parsing
def _parts_with_notes(score: Any) -> list[Any]:
    parts = list(getattr(score, "parts", [])) or [score]
    return [p for p in parts if len(p.recurse().notes) > 0]


def _pick_part(score: Any, melody_part: int | str) -> Any:
    parts = _parts_with_notes(score)
    if not parts:
        raise ValueError("no notes")
    if len(parts) == 1:
        return parts[0]  # a single-part file is its own melody, whatever the choice
    if isinstance(melody_part, int):
        if melody_part >= len(parts):
            raise ValueError(f"melody_part={melody_part} but only {len(parts)} parts have notes")
        return parts[melody_part]
    if melody_part == "highest":
        return max(parts, key=lambda p: np.mean([max(x.pitches).midi for x in p.recurse().notes]))
    for p in parts:
        name = " ".join(str(x) for x in (p.partName, getattr(p.getInstrument(), "instrumentName", "")) if x)
        if melody_part.lower() in name.lower():
            return p
    raise ValueError(f"no part named like {melody_part!r}")


def _part_notes(part: Any) -> list[tuple[int | None, float, float]]:
    flat = part.stripTies().flatten()
    notes = []
    for el in flat.notesAndRests:
        onset, dur = float(el.offset), float(el.quarterLength)
        if el.isRest:
            notes.append((None, onset, dur))
        else:
            notes.append((max(p.midi for p in el.pitches), onset, dur))
    return notes


def _scores(parsed: Any) -> list[Any]:
    scores = getattr(parsed, "scores", None)
    return list(scores) if scores is not None and len(scores) else [parsed]


def parse_melody_file(path: Path, tokenizer: MelodyTokenizer, melody_part: int | str) -> list[np.ndarray]:
    from music21 import converter

    parsed = converter.parse(str(path))
    out = []
    for score in _scores(parsed):
        tokens = tokenizer.encode(_part_notes(_pick_part(score, melody_part)))
        if len(tokens) >= 2:
            out.append(tokens)
    if not out:
        raise ValueError("no melody of at least two notes")
    return out


# ----------------------------------------------------------------------------------------- generation
#: primer used by ``python -m zoo.music.generate`` when no ``--primer`` is given: one G4 quarter note
DEFAULT_PRIMER = (67 + PITCH_OFFSET, 4)


class MelodyMidiTokenizer:
    """Adapter for ``python -m zoo.music.generate``: (pitch, duration) pairs as one flat list
    ``[p0, d0, p1, d1, ...]``, read from any MIDI / MusicXML / ABC primer and written as MIDI."""

    bos_id = -1  # the melody vocabulary has no BOS; ``[bos_id]`` means "no primer"

    def __init__(self, tokenizer: MelodyTokenizer | None = None, melody_part: int | str = 0, bpm: float = 120.0) -> None:
        self.tokenizer = tokenizer or MelodyTokenizer()
        self.melody_part = melody_part
        self.bpm = bpm

    @classmethod
    def for_model(cls, model: Any) -> MelodyMidiTokenizer:
        """The adapter for a registered melody model (its registry ``tokenizer``)."""
        cfg = model.config
        return cls(MelodyTokenizer(cfg.duration_step, cfg.duration_vocab - 1))

    def midi_to_tokens(self, path: str | Path, add_bos: bool = True, add_eos: bool = False) -> list[int]:
        try:
            tunes = parse_melody_file(Path(path), self.tokenizer, self.melody_part)
        except Exception as err:
            raise ValueError(f"--primer {path}: could not read a melody ({type(err).__name__}: {err})") from err
        return tunes[0].reshape(-1).tolist()

    def tokens_to_midi(self, tokens: Sequence[int]) -> Any:
        import pretty_midi

        pairs = np.asarray(list(tokens), dtype=np.int64).reshape(-1, 2)
        pm = pretty_midi.PrettyMIDI(initial_tempo=self.bpm)
        inst = pretty_midi.Instrument(program=73, name="Melody")  # flute
        sec = 60.0 / self.bpm
        for midi, onset, dur in self.tokenizer.decode(pairs):
            inst.notes.append(pretty_midi.Note(velocity=90, pitch=midi, start=onset * sec, end=(onset + dur) * sec))
        pm.instruments.append(inst)
        return pm


