"""Music tokenizers: chorale grids and piano performances, with pretty_midi for MIDI I/O.

Three vocabularies, each a small class with ``encode`` / ``decode`` and MIDI conversion:

* :class:`ChoraleTokenizer` -- four voices (S, A, T, B) on a 16th-note grid, serialized time step by
  time step. A voice at a step is ``REST``, a pitch token (the note is *struck* at this step) or
  ``HOLD`` (the note sounding at the previous step continues). Held and repeated notes therefore
  differ, and chorale -> tokens -> MIDI -> tokens is the identity on the grid.
* :class:`Jsb16thTokenizer` -- the Music Transformer paper's JSB representation (Huang et al. 2018,
  as in ``Jsb16thSeparated``): one pitch token per voice per 16th step, ``SILENCE`` its own token, no
  hold tokens. Held notes are repeated pitch tokens, so a MIDI rendering merges repeats.
* :class:`PerformanceTokenizer` -- Oore et al. (2018) performance events, the paper's piano encoding:
  128 NOTE_ON, 128 NOTE_OFF, 100 TIME_SHIFT of 10 ms, 32 VELOCITY bins = 388 events (ids 0-387 in
  that order), then PAD / BOS / EOS. The sustain pedal (CC64 >= 64) extends note offsets to the pedal
  release or to the next strike of the same pitch.

Every tokenizer has ``pad_id``, ``bos_id``, ``eos_id``, ``vocab_size``, ``to_config()`` (a JSON dict
stored in checkpoints) and :func:`tokenizer_from_config` rebuilds it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..midi import Note, load_midi

__all__ = [
    "ChoraleGrid",
    "ChoraleTokenizer",
    "Jsb16thTokenizer",
    "PerformanceTokenizer",
    "Note",
    "VOICE_RANGES",
    "tokenizer_from_config",
    "VOICES",
]

VOICES = ("soprano", "alto", "tenor", "bass")
NUM_VOICES = 4
#: Inclusive MIDI range of each voice (S, A, T, B): the lowest and highest note of that voice in
#: music21's 371 chorales and the JSB split (S 57-81, A 52-74, T 46-69, B 36-66), widened by the
#: training transposition (3 semitones) each way. Constrained decoding keeps each voice inside it
#: and ``zoo.music.lm.stats`` counts the steps outside it.
VOICE_RANGES: tuple[tuple[int, int], ...] = ((54, 84), (49, 77), (43, 72), (33, 69))


def _voice_mask(vocab_size: int, pitch_offset: int, always: tuple[int, ...], eos_id: int) -> np.ndarray:
    """``(4, vocab)`` bool: the tokens valid for each voice (its pitch range, ``always``; EOS only
    where a new step would start, i.e. as the soprano's token)."""
    mask = np.zeros((NUM_VOICES, vocab_size), dtype=bool)
    for v, (low, high) in enumerate(VOICE_RANGES):
        mask[v, pitch_offset + low : pitch_offset + high + 1] = True
        mask[v, list(always)] = True
    mask[0, eos_id] = True
    return mask
# General MIDI programs used when rendering chorales: choir-like sounds keep voices apart in a DAW.
_VOICE_PROGRAM = 52  # "Choir Aahs"


# ---------------------------------------------------------------------------------------------------
# chorale grid
# ---------------------------------------------------------------------------------------------------
@dataclass
class ChoraleGrid:
    """Four voices on a 16th-note grid.

    ``pitches (T, 4)`` int MIDI pitch per step and voice (S, A, T, B), ``-1`` where the voice is silent;
    ``onsets (T, 4)`` bool, True where a note is struck (False on a held continuation and on rests).
    """

    pitches: np.ndarray
    onsets: np.ndarray

    def __post_init__(self) -> None:
        self.pitches = np.asarray(self.pitches, dtype=np.int64)
        self.onsets = np.asarray(self.onsets, dtype=bool)
        if self.pitches.ndim != 2 or self.pitches.shape[1] != NUM_VOICES:
            raise ValueError(f"ChoraleGrid.pitches must have shape (T, 4), got {self.pitches.shape}")
        if self.onsets.shape != self.pitches.shape:
            raise ValueError(
                f"ChoraleGrid.onsets must match pitches {self.pitches.shape}, got {self.onsets.shape}"
            )
        if ((self.pitches < -1) | (self.pitches > 127)).any():
            raise ValueError("ChoraleGrid.pitches must be MIDI pitches 0-127 or -1 for silence")
        # a rest cannot be struck, and the first sounding step of a note is always an onset
        self.onsets &= self.pitches >= 0
        prev = np.vstack([np.full((1, NUM_VOICES), -1), self.pitches[:-1]])  # (T, 4)
        self.onsets |= (self.pitches >= 0) & (prev != self.pitches)

    def __len__(self) -> int:
        return int(self.pitches.shape[0])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChoraleGrid):
            return NotImplemented
        return np.array_equal(self.pitches, other.pitches) and np.array_equal(self.onsets, other.onsets)

    @classmethod
    def from_separated(cls, steps: np.ndarray) -> ChoraleGrid:
        """From a ``Jsb16thSeparated`` array ``(T, 4)`` (NaN or -1 = silence).

        That format does not mark articulation, so equal consecutive pitches count as one held note.
        """
        arr = np.asarray(steps, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != NUM_VOICES:
            raise ValueError(f"a Jsb16thSeparated piece must have shape (T, 4), got {arr.shape}")
        pitches = np.where(np.isnan(arr), -1, arr).astype(np.int64)
        return cls(pitches, np.zeros_like(pitches, dtype=bool))

    def transpose(self, semitones: int) -> ChoraleGrid:
        p = np.where(self.pitches >= 0, self.pitches + semitones, -1)
        if ((p > 127) | ((p < 0) & (p != -1))).any():
            raise ValueError(f"transposing by {semitones} leaves the MIDI range 0-127")
        return ChoraleGrid(p, self.onsets.copy())

    # ------------------------------------------------------------------ MIDI
    def to_midi(self, tempo: float = 90.0):
        """A ``pretty_midi.PrettyMIDI`` with one instrument per voice (S, A, T, B)."""
        import pretty_midi

        pm = pretty_midi.PrettyMIDI(initial_tempo=tempo)
        step = 60.0 / tempo / 4.0  # seconds per 16th note
        for v, name in enumerate(VOICES):
            inst = pretty_midi.Instrument(program=_VOICE_PROGRAM, name=name)
            start = None
            for t in range(len(self) + 1):
                p = int(self.pitches[t, v]) if t < len(self) else -1
                continues = t < len(self) and p >= 0 and not self.onsets[t, v]
                if start is not None and not continues:
                    pitch = int(self.pitches[start, v])
                    inst.notes.append(pretty_midi.Note(velocity=80, pitch=pitch, start=start * step,
                                                       end=t * step))
                    start = None
                if t < len(self) and p >= 0 and self.onsets[t, v]:
                    start = t
            pm.instruments.append(inst)
        return pm

    @classmethod
    def from_midi(cls, midi: Any) -> ChoraleGrid:
        """Quantize a four-track MIDI (path or ``PrettyMIDI``) to the 16th grid of its first tempo.

        Tracks are taken in file order as S, A, T, B (the order :meth:`to_midi` writes).
        """
        pm = load_midi(midi)
        tracks = [i for i in pm.instruments if not i.is_drum]
        if len(tracks) != NUM_VOICES:
            raise ValueError(f"a chorale MIDI needs exactly 4 non-drum tracks (S, A, T, B), got {len(tracks)}")
        _, tempi = pm.get_tempo_changes()
        tempo = float(tempi[0]) if len(tempi) else 120.0
        step = 60.0 / tempo / 4.0
        end = max((n.end for i in tracks for n in i.notes), default=0.0)
        num_steps = int(round(end / step))
        pitches = np.full((num_steps, NUM_VOICES), -1, dtype=np.int64)
        onsets = np.zeros((num_steps, NUM_VOICES), dtype=bool)
        for v, inst in enumerate(tracks):
            for n in sorted(inst.notes, key=lambda n: n.start):
                a, b = int(round(n.start / step)), int(round(n.end / step))
                if b <= a:
                    continue
                pitches[a:b, v] = n.pitch
                onsets[a:b, v] = False
                onsets[a, v] = True
        return cls(pitches, onsets)


class ChoraleTokenizer:
    """SATB grid <-> tokens. Vocabulary: PAD, BOS, EOS, REST, HOLD, then MIDI pitches 0-127."""

    kind = "chorale"
    pad_id, bos_id, eos_id, rest_id, hold_id = 0, 1, 2, 3, 4
    pitch_offset = 5
    vocab_size = pitch_offset + 128
    tokens_per_step = NUM_VOICES

    def encode(self, grid: ChoraleGrid, add_bos: bool = True, add_eos: bool = True) -> list[int]:
        tok = np.where(grid.onsets, grid.pitches + self.pitch_offset, self.hold_id)  # (T, 4)
        tok = np.where(grid.pitches < 0, self.rest_id, tok)
        out = tok.reshape(-1).tolist()  # step-major: S, A, T, B of step 0, then step 1, ...
        return ([self.bos_id] if add_bos else []) + out + ([self.eos_id] if add_eos else [])

    def decode(self, tokens: Iterable[int]) -> ChoraleGrid:
        """Tokens -> grid. Lenient for sampled sequences: specials are skipped, a trailing incomplete
        step is dropped, and a HOLD with nothing sounding before it is a rest."""
        body = [int(t) for t in tokens if int(t) not in (self.pad_id, self.bos_id, self.eos_id)]
        for t in body:
            if not 0 <= t < self.vocab_size:
                raise ValueError(f"token {t} is outside the chorale vocabulary [0, {self.vocab_size})")
        n = len(body) // NUM_VOICES
        tok = np.asarray(body[: n * NUM_VOICES], dtype=np.int64).reshape(n, NUM_VOICES)
        pitches = np.full((n, NUM_VOICES), -1, dtype=np.int64)
        onsets = np.zeros((n, NUM_VOICES), dtype=bool)
        for t in range(n):
            for v in range(NUM_VOICES):
                x = tok[t, v]
                if x >= self.pitch_offset:
                    pitches[t, v], onsets[t, v] = x - self.pitch_offset, True
                elif x == self.hold_id and t > 0:
                    pitches[t, v] = pitches[t - 1, v]
        return ChoraleGrid(pitches, onsets)

    def token_names(self) -> list[str]:
        return ["PAD", "BOS", "EOS", "REST", "HOLD"] + [f"P{p}" for p in range(128)]

    def to_config(self) -> dict:
        return {"kind": self.kind}

    def voice_token_mask(self) -> np.ndarray:
        """``(4, vocab)`` bool: REST, HOLD and the voice's range (:data:`VOICE_RANGES`); EOS for S."""
        return _voice_mask(self.vocab_size, self.pitch_offset, (self.rest_id, self.hold_id), self.eos_id)

    def tokens_to_midi(self, tokens: Iterable[int], tempo: float = 90.0):
        return self.decode(tokens).to_midi(tempo=tempo)

    def midi_to_tokens(self, midi: Any, add_bos: bool = True, add_eos: bool = False) -> list[int]:
        return self.encode(ChoraleGrid.from_midi(midi), add_bos=add_bos, add_eos=add_eos)


class Jsb16thTokenizer:
    """The paper's JSB representation: per 16th step, S, A, T, B each a pitch token or SILENCE.

    Vocabulary: PAD, BOS, EOS, SILENCE, then MIDI pitches 0-127. No hold tokens, so held and repeated
    notes are the same tokens (as in ``Jsb16thSeparated``); per-token NLL is comparable to the paper's.
    """

    kind = "jsb16th"
    pad_id, bos_id, eos_id, silence_id = 0, 1, 2, 3
    pitch_offset = 4
    vocab_size = pitch_offset + 128
    tokens_per_step = NUM_VOICES

    def encode_steps(self, steps: np.ndarray, add_bos: bool = True, add_eos: bool = False) -> list[int]:
        """A ``(T, 4)`` array of pitches (NaN or -1 = silence) -> tokens."""
        arr = np.asarray(steps, dtype=np.float64)
        if arr.ndim != 2 or arr.shape[1] != NUM_VOICES:
            raise ValueError(f"Jsb16thTokenizer expects (T, 4) steps, got {arr.shape}")
        silent = np.isnan(arr) | (arr < 0)
        tok = np.where(silent, self.silence_id, np.nan_to_num(arr, nan=0.0) + self.pitch_offset)
        out = tok.astype(np.int64).reshape(-1).tolist()
        return ([self.bos_id] if add_bos else []) + out + ([self.eos_id] if add_eos else [])

    def encode(self, grid: ChoraleGrid, add_bos: bool = True, add_eos: bool = False) -> list[int]:
        return self.encode_steps(grid.pitches, add_bos=add_bos, add_eos=add_eos)

    def decode_steps(self, tokens: Iterable[int]) -> np.ndarray:
        """Tokens -> ``(T, 4)`` float array with NaN for silence (the ``Jsb16thSeparated`` layout)."""
        body = [int(t) for t in tokens if int(t) not in (self.pad_id, self.bos_id, self.eos_id)]
        n = len(body) // NUM_VOICES
        tok = np.asarray(body[: n * NUM_VOICES], dtype=np.int64).reshape(n, NUM_VOICES)
        if ((tok < 0) | (tok >= self.vocab_size)).any():
            raise ValueError(f"tokens outside the jsb16th vocabulary [0, {self.vocab_size})")
        return np.where(tok == self.silence_id, np.nan, (tok - self.pitch_offset).astype(np.float64))

    def decode(self, tokens: Iterable[int]) -> ChoraleGrid:
        return ChoraleGrid.from_separated(self.decode_steps(tokens))

    def voice_token_mask(self) -> np.ndarray:
        """``(4, vocab)`` bool: SILENCE and the voice's range (:data:`VOICE_RANGES`); EOS for S."""
        return _voice_mask(self.vocab_size, self.pitch_offset, (self.silence_id,), self.eos_id)

    def token_names(self) -> list[str]:
        return ["PAD", "BOS", "EOS", "SILENCE"] + [f"P{p}" for p in range(128)]

    def to_config(self) -> dict:
        return {"kind": self.kind}

    def tokens_to_midi(self, tokens: Iterable[int], tempo: float = 90.0):
        return self.decode(tokens).to_midi(tempo=tempo)

    def midi_to_tokens(self, midi: Any, add_bos: bool = True, add_eos: bool = False) -> list[int]:
        return self.encode(ChoraleGrid.from_midi(midi), add_bos=add_bos, add_eos=add_eos)


# ---------------------------------------------------------------------------------------------------
# performance events (Oore et al. 2018)
# ---------------------------------------------------------------------------------------------------
class PerformanceTokenizer:
    """Oore et al. performance events: NOTE_ON x128, NOTE_OFF x128, TIME_SHIFT x100 (10 ms .. 1 s),
    VELOCITY x32; then PAD, BOS, EOS (ids 388, 389, 390)."""

    kind = "performance"
    num_pitches = 128
    num_time_shifts = 100
    num_velocity_bins = 32
    step_seconds = 0.01
    note_on_offset = 0
    note_off_offset = 128
    time_shift_offset = 256
    velocity_offset = 356
    num_events = 388
    pad_id, bos_id, eos_id = 388, 389, 390
    vocab_size = 391
    tokens_per_step = 1

    # ------------------------------------------------------------------ notes <-> events
    @staticmethod
    def notes_from_midi(midi: Any, sustain: bool = True) -> list[Note]:
        """All non-drum notes of a MIDI file, with sustain-pedal extension, sorted by onset."""
        pm = load_midi(midi)
        notes: list[Note] = []
        for inst in pm.instruments:
            if inst.is_drum:
                continue
            inst_notes = [Note(n.pitch, n.velocity, float(n.start), float(n.end)) for n in inst.notes]
            if sustain:
                inst_notes = _apply_sustain(inst_notes, inst.control_changes)
            notes.extend(inst_notes)
        return sorted(notes, key=lambda n: (n.start, n.pitch))

    def velocity_bin(self, velocity: int) -> int:
        return min(int(velocity) * self.num_velocity_bins // 128, self.num_velocity_bins - 1)

    def bin_velocity(self, b: int) -> int:
        width = 128 // self.num_velocity_bins
        return int(b) * width + width // 2

    def encode_notes(self, notes: Sequence[Note], add_bos: bool = True, add_eos: bool = True) -> list[int]:
        # (time step, order, token): offsets sort before onsets at the same step so a re-struck pitch
        # ends the old note first; notes never shorter than one step so each offset follows its onset.
        events: list[tuple[int, int, int, int]] = []
        for n in _trim_same_pitch_overlaps(notes):
            on = int(round(n.start / self.step_seconds))
            off = max(int(round(n.end / self.step_seconds)), on + 1)
            events.append((on, 1, n.pitch, self.velocity_bin(n.velocity)))
            events.append((off, 0, n.pitch, -1))
        events.sort()
        out: list[int] = [self.bos_id] if add_bos else []
        now, velocity = 0, -1
        for step, order, pitch, vbin in events:
            shift = step - now
            while shift > 0:
                s = min(shift, self.num_time_shifts)
                out.append(self.time_shift_offset + s - 1)
                shift -= s
            now = step
            if order == 0:
                out.append(self.note_off_offset + pitch)
            else:
                if vbin != velocity:
                    out.append(self.velocity_offset + vbin)
                    velocity = vbin
                out.append(self.note_on_offset + pitch)
        if add_eos:
            out.append(self.eos_id)
        return out

    def decode_notes(self, tokens: Iterable[int]) -> list[Note]:
        """Events -> notes. Lenient for samples: an unmatched NOTE_OFF is ignored, a re-struck pitch
        ends the sounding note, notes still on at the end last until the final time (at least 10 ms)."""
        now, velocity = 0, 64
        sounding: dict[int, tuple[int, int]] = {}  # pitch -> (onset step, velocity)
        notes: list[Note] = []

        def close(pitch: int, at: int) -> None:
            start, vel = sounding.pop(pitch)
            end = max(at, start + 1)
            notes.append(Note(pitch, vel, start * self.step_seconds, end * self.step_seconds))

        for tok in tokens:
            t = int(tok)
            if t in (self.pad_id, self.bos_id):
                continue
            if t == self.eos_id:
                break
            if not 0 <= t < self.num_events:
                raise ValueError(f"token {t} is outside the performance vocabulary [0, {self.vocab_size})")
            if t < self.note_off_offset:
                pitch = t - self.note_on_offset
                if pitch in sounding:
                    close(pitch, now)
                sounding[pitch] = (now, velocity)
            elif t < self.time_shift_offset:
                pitch = t - self.note_off_offset
                if pitch in sounding:
                    close(pitch, now)
            elif t < self.velocity_offset:
                now += t - self.time_shift_offset + 1
            else:
                velocity = self.bin_velocity(t - self.velocity_offset)
        for pitch in list(sounding):
            close(pitch, now)
        return sorted(notes, key=lambda n: (n.start, n.pitch))

    # ------------------------------------------------------------------ MIDI
    def midi_to_tokens(self, midi: Any, add_bos: bool = True, add_eos: bool = True) -> list[int]:
        return self.encode_notes(self.notes_from_midi(midi), add_bos=add_bos, add_eos=add_eos)

    def tokens_to_midi(self, tokens: Iterable[int], program: int = 0):
        import pretty_midi

        pm = pretty_midi.PrettyMIDI()
        inst = pretty_midi.Instrument(program=program, name="piano")
        for n in self.decode_notes(tokens):
            inst.notes.append(pretty_midi.Note(velocity=n.velocity, pitch=n.pitch, start=n.start, end=n.end))
        pm.instruments.append(inst)
        return pm

    def encode(self, notes: Sequence[Note], add_bos: bool = True, add_eos: bool = True) -> list[int]:
        return self.encode_notes(notes, add_bos=add_bos, add_eos=add_eos)

    def decode(self, tokens: Iterable[int]) -> list[Note]:
        return self.decode_notes(tokens)

    def token_names(self) -> list[str]:
        return (
            [f"NOTE_ON_{p}" for p in range(128)]
            + [f"NOTE_OFF_{p}" for p in range(128)]
            + [f"TIME_SHIFT_{10 * (i + 1)}ms" for i in range(self.num_time_shifts)]
            + [f"VELOCITY_{b}" for b in range(self.num_velocity_bins)]
            + ["PAD", "BOS", "EOS"]
        )

    def to_config(self) -> dict:
        return {"kind": self.kind}


def _apply_sustain(notes: list[Note], control_changes: Sequence[Any], threshold: int = 64) -> list[Note]:
    """Extend each note released while the pedal (CC64) is down to the pedal release."""
    pedal: list[tuple[float, float]] = []  # (down, up) intervals
    down_at: float | None = None
    for cc in sorted((c for c in control_changes if c.number == 64), key=lambda c: c.time):
        if cc.value >= threshold and down_at is None:
            down_at = float(cc.time)
        elif cc.value < threshold and down_at is not None:
            pedal.append((down_at, float(cc.time)))
            down_at = None
    if down_at is not None:
        pedal.append((down_at, max((n.end for n in notes), default=down_at)))
    if not pedal:
        return notes
    out = []
    for n in notes:
        end = n.end
        for a, b in pedal:
            if a <= n.end < b:
                end = max(end, b)
                break
        out.append(Note(n.pitch, n.velocity, n.start, end))
    return _trim_same_pitch_overlaps(out)


def _trim_same_pitch_overlaps(notes: Sequence[Note]) -> list[Note]:
    """A note ends no later than the next strike of the same pitch (MIDI cannot overlap one key)."""
    by_pitch: dict[int, list[Note]] = {}
    for n in notes:
        by_pitch.setdefault(n.pitch, []).append(n)
    out: list[Note] = []
    for group in by_pitch.values():
        group.sort(key=lambda n: n.start)
        for i, n in enumerate(group):
            end = n.end
            if i + 1 < len(group) and group[i + 1].start < end:
                end = max(group[i + 1].start, n.start)
            out.append(Note(n.pitch, n.velocity, n.start, end))
    return sorted(out, key=lambda n: (n.start, n.pitch))


_TOKENIZERS = {
    "chorale": ChoraleTokenizer,
    "jsb16th": Jsb16thTokenizer,
    "performance": PerformanceTokenizer,
}


def tokenizer_from_config(config: dict) -> ChoraleTokenizer | Jsb16thTokenizer | PerformanceTokenizer:
    """Rebuild a tokenizer from the ``to_config()`` dict stored in a checkpoint's ``config.json``."""
    kind = config.get("kind") if isinstance(config, dict) else None
    if kind not in _TOKENIZERS:
        raise ValueError(f"unknown tokenizer kind {kind!r} in config; expected one of {sorted(_TOKENIZERS)}")
    return _TOKENIZERS[kind]()
