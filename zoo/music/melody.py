"""Monophonic melodies as (pitch, duration) tokens, and :class:`MelodyDataModule` for RIPO.

Tokens (the official RIPO layout): pitch 0 = pad, 1 = rest, 2 = sustain, ``3 + MIDI``; duration
0 = pad, ``t`` = ``t * step`` quarter notes for ``t = 1 .. max_steps`` (16th-note grid up to a
whole note by default). Onsets are quantized to the grid and each duration is the distance to the
next onset, so cumulative onsets stay exact; a note longer than ``max_steps`` continues as
``sustain`` tokens, a long rest as more rests. Chords keep their highest note (skyline); notes of
zero quantized length (grace notes) are dropped.

Sources:

* default -- the monophonic folk melodies bundled with music21 (the Essen folksong collection and
  Ryan's Mammoth Collection, ABC files): parsed once, cached as ``.npz`` in ``cache_dir``;
* ``path`` -- any folder of MIDI / MusicXML / ABC files (recursively); ``melody_part`` picks the
  part holding the melody. Unparseable files are skipped and reported in one warning.

Splits are deterministic: a melody goes to train / valid / test by a hash of its source name, so
adding files never moves existing melodies between splits.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

__all__ = [
    "PAD",
    "REST",
    "SUSTAIN",
    "PITCH_OFFSET",
    "MelodyTokenizer",
    "MelodyDataModule",
    "MelodyDataset",
    "load_melodies",
    "melody_split",
    "SUFFIXES",
    "MelodyMidiTokenizer",
    "sample_melody",
    "collate_melodies",
]

PAD, REST, SUSTAIN = 0, 1, 2
PITCH_OFFSET = 3
SPLITS = ("train", "valid", "test")
SUFFIXES = (".mid", ".midi", ".xml", ".musicxml", ".mxl", ".abc", ".krn")
DEFAULT_COLLECTIONS = ("essenFolksong", "ryansMammoth")
_CACHE_VERSION = 1


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


def _parse_file(path: Path, tokenizer: MelodyTokenizer, melody_part: int | str) -> list[np.ndarray]:
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


def _source_files(path: str | None, collections: Sequence[str], max_files: int | None) -> tuple[list[Path], str]:
    if path is None:
        from music21 import corpus

        files = sorted(
            Path(p) for p in corpus.getCorePaths() if any(f"/{c}/" in Path(p).as_posix() for c in collections)
        )
        if not files:
            raise ValueError(f"MelodyDataModule: music21's corpus has no files in collections {list(collections)}")
        desc = "music21:" + ",".join(collections)
    else:
        root = Path(path)
        if not root.is_dir():
            raise ValueError(f"MelodyDataModule: path {str(root)!r} is not a directory of MIDI / MusicXML / ABC files")
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        if not files:
            raise ValueError(f"MelodyDataModule: no files with suffixes {SUFFIXES} under {str(root)!r}")
        desc = str(root.resolve())
    return (files[:max_files] if max_files else files), desc


def load_melodies(
    path: str | None = None,
    *,
    cache_dir: str | None = None,
    collections: Sequence[str] = DEFAULT_COLLECTIONS,
    melody_part: int | str = 0,
    max_files: int | None = None,
    tokenizer: MelodyTokenizer | None = None,
) -> list[tuple[str, np.ndarray]]:
    """``[(name, tokens (N, 2))]`` for every melody; parsed once, then read from the cache.

    The cache key covers the source files (names, sizes, mtimes), the part choice and the
    tokenizer grid, so a changed folder is re-parsed.
    """
    tok = tokenizer or MelodyTokenizer()
    files, desc = _source_files(path, collections, max_files)
    root = files[0].parent if path is None else Path(path)
    key_src = json.dumps(
        [
            _CACHE_VERSION, desc, melody_part, tok.step, tok.max_steps,
            [(f.name, f.stat().st_size, int(f.stat().st_mtime)) for f in files],
        ]
    )
    key = hashlib.sha1(key_src.encode()).hexdigest()[:16]
    from .data import default_cache_dir

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_file = cache / f"melodies_{key}.npz"
    if cache_file.exists():
        with np.load(cache_file, allow_pickle=False) as z:
            names, lengths, flat = z["names"].tolist(), z["lengths"], z["tokens"]
        splits = np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []
        return list(zip(names, splits))

    melodies: list[tuple[str, np.ndarray]] = []
    failures: list[str] = []
    for f in files:
        rel = f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # music21 warns per odd ABC header; failures are counted below
                tunes = _parse_file(f, tok, melody_part)
        except Exception as err:  # any parser error: skip the file, count it
            failures.append(f"{rel} ({type(err).__name__}: {str(err)[:80]})")
            continue
        melodies += [(f"{rel}#{i}", t) for i, t in enumerate(tunes)]
    if failures:
        warnings.warn(
            f"MelodyDataModule: skipped {len(failures)} of {len(files)} files under {desc} that could not be "
            f"parsed into a melody; first: {failures[0]}",
            stacklevel=2,
        )
    if not melodies:
        raise ValueError(f"MelodyDataModule: none of the {len(files)} files under {desc} gave a melody")
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(f".{os.getpid()}.tmp.npz")
    np.savez_compressed(
        tmp,
        names=np.asarray([n for n, _ in melodies]),
        lengths=np.asarray([len(t) for _, t in melodies], dtype=np.int64),
        tokens=np.concatenate([t for _, t in melodies]).astype(np.int64),
    )
    os.replace(tmp, cache_file)
    return melodies


def melody_split(name: str, valid_percent: int = 10, test_percent: int = 10) -> str:
    """Deterministic split of one melody by the hash of its name."""
    bucket = int(hashlib.md5(name.encode()).hexdigest(), 16) % 100
    if bucket < test_percent:
        return "test"
    if bucket < test_percent + valid_percent:
        return "valid"
    return "train"


# ----------------------------------------------------------------------------------------- datasets
class MelodyDataset(Dataset):
    """Windows of ``seq_len + 1`` tokens (non-overlapping; the last shorter window is kept)."""

    def __init__(self, melodies: Sequence[np.ndarray], seq_len: int, min_len: int = 8) -> None:
        self.windows: list[np.ndarray] = []
        for m in melodies:
            for start in range(0, max(len(m) - 1, 1), seq_len):
                w = m[start : start + seq_len + 1]
                if len(w) >= min(min_len, len(m)) and len(w) >= 2:
                    self.windows.append(w)

    def __len__(self) -> int:
        return len(self.windows)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self.windows[i])


def collate_melodies(batch: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
    """Pad at the end; inputs are tokens ``[:-1]``, targets tokens ``[1:]`` (pad targets are ignored)."""
    length = max(len(x) for x in batch)
    tokens = torch.zeros(len(batch), length, 2, dtype=torch.long)  # (B, L+1, 2), PAD = 0
    for i, x in enumerate(batch):
        tokens[i, : len(x)] = x
    return {
        "pitch": tokens[:, :-1, 0],
        "duration": tokens[:, :-1, 1],
        "target_pitch": tokens[:, 1:, 0],
        "target_duration": tokens[:, 1:, 1],
    }


class MelodyDataModule(pl.LightningDataModule):
    """Monophonic melodies as (pitch, duration) tokens for melody completion.

    Args:
        path: folder of MIDI / MusicXML / ABC files; ``None`` = music21's bundled folk melodies.
        cache_dir: where parsed melodies are cached (default ``$ZOO_CACHE/music`` or ``~/.cache/zoo/music``).
        collections: music21 corpus folders used when ``path`` is None.
        melody_part: index among the parts that have notes, ``"highest"``, or a part-name substring.
        max_files: parse only the first files (sorted), for quick runs.
        seq_len: tokens per training window (the model sees ``seq_len`` inputs).
        batch_size, num_workers: DataLoader settings.
        duration_step, max_duration_steps: the duration grid (quarter notes per step, steps).
        valid_percent, test_percent: split sizes.
    """

    def __init__(
        self,
        path: str | None = None,
        cache_dir: str | None = None,
        collections: tuple[str, ...] = DEFAULT_COLLECTIONS,
        melody_part: int | str = 0,
        max_files: int | None = None,
        seq_len: int = 128,
        batch_size: int = 16,
        num_workers: int = 0,
        duration_step: float = 0.25,
        max_duration_steps: int = 16,
        valid_percent: int = 10,
        test_percent: int = 10,
    ) -> None:
        super().__init__()
        if seq_len < 2:
            raise ValueError(f"MelodyDataModule: seq_len must be >= 2, got {seq_len}")
        if not (0 <= valid_percent and 0 <= test_percent and valid_percent + test_percent < 100):
            raise ValueError("MelodyDataModule: valid_percent + test_percent must lie in [0, 100)")
        self.save_hyperparameters()
        self.tokenizer = MelodyTokenizer(duration_step, max_duration_steps)
        self.splits: dict[str, list[tuple[str, np.ndarray]]] | None = None

    def prepare_data(self) -> None:
        self._load()

    def _load(self) -> list[tuple[str, np.ndarray]]:
        h = self.hparams
        return load_melodies(
            h.path, cache_dir=h.cache_dir, collections=h.collections, melody_part=h.melody_part,
            max_files=h.max_files, tokenizer=self.tokenizer,
        )

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        self.splits = {s: [] for s in SPLITS}
        for name, tokens in self._load():
            self.splits[melody_split(name, self.hparams.valid_percent, self.hparams.test_percent)].append((name, tokens))

    def dataset(self, split: str) -> MelodyDataset:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.setup()
        return MelodyDataset([t for _, t in self.splits[split]], self.hparams.seq_len)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.dataset(split)
        if len(ds) == 0:
            raise ValueError(f"MelodyDataModule: the {split} split is empty; use more files or other split sizes")
        return DataLoader(
            ds, batch_size=self.hparams.batch_size, shuffle=shuffle, num_workers=self.hparams.num_workers,
            collate_fn=collate_melodies,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)


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
        cfg = model.config
        return cls(MelodyTokenizer(cfg.duration_step, cfg.duration_vocab - 1))

    def midi_to_tokens(self, path: str | Path, add_bos: bool = True, add_eos: bool = False) -> list[int]:
        try:
            tunes = _parse_file(Path(path), self.tokenizer, self.melody_part)
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


def sample_melody(model: Any, tokenizer: MelodyMidiTokenizer, primer: list[int], args: Any) -> list[int]:
    """``zoo.music.generate`` sampler for the ``ripo_*`` models: continue the primer by ``args.length`` notes."""
    if list(primer) == [tokenizer.bos_id]:
        primer = list(DEFAULT_PRIMER)
    device = next(model.parameters()).device
    pairs = torch.tensor(primer, dtype=torch.long, device=device).view(-1, 2)  # (L0, 2)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    pitch, duration = model.generate(
        pairs[None, :, 0], pairs[None, :, 1], args.length, temperature=args.temperature, top_k=args.top_k,
        top_p=args.top_p, generator=gen,
    )
    return torch.stack([pitch[0], duration[0]], -1).flatten().tolist()
