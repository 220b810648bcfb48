"""Music datamodules: Bach chorales (music21 or JSB Chorales files) and piano performances (MIDI).

``ChoralesDataModule``
    * default (``path=None``): music21's bundled Bach chorales, Riemenschneider 1-371. Pieces that fail
      to parse or do not have exactly four parts are skipped and counted in one log line; exact
      duplicates (the same grid) are dropped. Split, fixed: sorted by Riemenschneider number, piece
      ``i`` goes to valid when ``i % 10 == 8``, to test when ``i % 10 == 9``, else to train. The parsed
      grids are cached (``cache_dir``) so only the first run parses MusicXML.
    * ``path`` = the JSB Chorales pickle (Boulanger-Lewandowski 2012, quarter-note grid, sets of
      pitches per step; read with a restricted unpickler that admits only numpy scalars/arrays) or
      ``Jsb16thSeparated.npz`` / ``.json`` (16th grid, four voices), or a folder holding one of them:
      the files' own train/valid/test split. Both readers check every split (a list), piece and pitch
      (MIDI integers 0..127; -1/NaN = silence in the separated files; strings refused, never parsed)
      before building anything: a bad file is a ValueError naming the file, split, piece and step.
    * ``representation``: ``"chorale"`` (hold tokens, :class:`ChoraleTokenizer`) or ``"jsb16th"``
      (the paper's representation, :class:`Jsb16thTokenizer`).
    * training: random transposition in ``[-transpose, transpose]`` semitones and random windows of
      ``max_len + 1`` tokens starting on a time-step boundary; evaluation: every piece cut into
      consecutive windows so that each token is predicted exactly once.

``PerformanceDataModule``
    * ``path`` = a MAESTRO v3 folder (its ``maestro-v*.csv`` or ``.json`` with the ``split`` and
      ``midi_filename`` columns) or any folder of ``.mid`` / ``.midi`` files (deterministic split by a
      hash of the relative path: 80 / 10 / 10).
    * default (``path=None``): a generated folder of MIDI performances rendered from music21's chorales
      with humanized timing and velocity, then read through the same folder loader.
    * parsed notes are cached per file (``cache_dir``, keyed by path, size and mtime), so later epochs
      and runs never re-parse MIDI; corrupt files are skipped and counted in one warning. Notes, parsed
      or cached, are checked (finite; pitch, velocity MIDI integers; ``0 <= start <= end``); a damaged
      cache entry is parsed again, a MAESTRO index with a bad row is refused naming the file and row.
    * training: time-stretch x U(0.95, 1.05), transpose by U{-3..3}, random crops of ``max_len + 1``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.training.data import NUMPY_GLOBALS, SPLITS, ZooDataModule, safe_unpickle
from zoo.training.data import cache_dir as cache_root

from ..midi import Note
from .tokenizers import ChoraleGrid, ChoraleTokenizer, Jsb16thTokenizer, PerformanceTokenizer

__all__ = [
    "ChoralesDataModule",
    "PerformanceDataModule",
    "TokenSequenceDataset",
    "load_jsb_pickle",
    "load_jsb_separated",
    "load_music21_chorales",
    "split_music21",
    "collate_tokens",
]

log = logging.getLogger(__name__)
#: the split names inside the JSB files; ``valid`` is the zoo's ``val``
FILE_SPLITS = ("train", "valid", "test")


def _safe_unpickle(data: bytes, source: str) -> Any:
    return safe_unpickle(data, NUMPY_GLOBALS, source=f"{source} (a JSB Chorales pickle)")


def _check_splits(obj: Any, source: str) -> dict:
    """The file's ``train`` / ``valid`` / ``test`` entries, keyed by the zoo's split names; each must be a list."""
    if not isinstance(obj, dict) or not set(FILE_SPLITS) <= set(obj):
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(f"{source} must hold the keys {list(FILE_SPLITS)}, got {keys}")
    for key in FILE_SPLITS:
        if not isinstance(obj[key], list | tuple):
            raise ValueError(f"{source}: split {key!r} must be a list of pieces, got {type(obj[key]).__name__}")
    return {split: obj[key] for split, key in zip(SPLITS, FILE_SPLITS)}


def _midi_pitch(x: Any, where: str) -> int:
    """``x`` as a MIDI pitch 0..127: an integer (or an integral float such as ``60.0``); strings, bools refused."""
    if isinstance(x, bool | np.bool_) or not isinstance(x, int | np.integer | float | np.floating):
        raise ValueError(f"{where}: pitch {x!r} is a {type(x).__name__}, expected a MIDI integer 0..127")
    if isinstance(x, float | np.floating) and not float(x).is_integer():
        raise ValueError(f"{where}: pitch {x!r} is not an integer MIDI pitch")
    if not 0 <= x <= 127:
        raise ValueError(f"{where}: pitch {x!r} is outside the MIDI range 0..127")
    return int(x)


def _steps_to_satb(pitches: Sequence[int]) -> list[int]:
    """A set of sounding pitches -> S, A, T, B (-1 silent): highest to S, lowest to B."""
    p = sorted(pitches, reverse=True)
    if not p:
        return [-1, -1, -1, -1]
    if len(p) == 1:
        return [p[0], -1, -1, -1]
    if len(p) == 2:
        return [p[0], -1, -1, p[1]]
    if len(p) == 3:
        return [p[0], p[1], -1, p[2]]
    return [p[0], p[1], p[-2], p[-1]]


def load_jsb_pickle(path: str | Path, steps_per_entry: int = 4) -> dict[str, list[ChoraleGrid]]:
    """The Boulanger-Lewandowski pickle: ``{'train','valid','test'}`` -> pieces -> steps -> pitches.

    Returns the pieces per zoo split (``train`` / ``val`` / ``test``).

    Checked before anything is built: each split a list of pieces, each piece a non-empty list of time
    steps, each step a tuple/list/set of MIDI integers 0..127 (an empty step is a rest). A failure is a
    ValueError naming the file, the file's split, the piece index and the step.

    The quarter-note version is expanded to 16ths (``steps_per_entry=4``); the format does not mark
    articulation, so equal consecutive pitches become one held note.
    """
    path = Path(path)
    raw = _check_splits(_safe_unpickle(path.read_bytes(), str(path)), str(path))
    out: dict[str, list[ChoraleGrid]] = {}
    for split, key in zip(SPLITS, FILE_SPLITS):
        grids = []
        for i, piece in enumerate(raw[split]):
            where = f"{path}: split {key!r} piece {i}"
            if not isinstance(piece, list | tuple) or not piece:
                what = "empty" if isinstance(piece, list | tuple) else f"a {type(piece).__name__}"
                raise ValueError(f"{where} is {what}, expected a non-empty list of time steps")
            rows = []
            for t, step in enumerate(piece):
                if not isinstance(step, list | tuple | set | frozenset):
                    raise ValueError(f"{where} step {t} is a {type(step).__name__}, expected a tuple of MIDI pitches")
                rows.append(_steps_to_satb([_midi_pitch(x, f"{where} step {t}") for x in step]))
            satb = np.repeat(np.asarray(rows, dtype=np.int64), steps_per_entry, axis=0)  # (T * steps, 4)
            grids.append(ChoraleGrid(satb, np.zeros_like(satb, dtype=bool)))
        out[split] = grids
    return out


def _check_separated_piece(piece: Any, where: str) -> np.ndarray:
    """A ``Jsb16thSeparated`` piece as float ``(T, 4)``, NaN = silence; values must be -1/NaN or integers 0..127."""
    try:
        arr = np.asarray(piece)
    except (ValueError, TypeError) as err:  # ragged nested lists
        raise ValueError(f"{where} is not a (T, 4) array of pitches ({err})") from None
    if arr.dtype.kind not in "iuf":
        kind = arr.dtype.kind
        got = (
            "strings" if kind in "SU" else "booleans" if kind == "b"
            else f"a {type(piece).__name__}" if arr.ndim == 0 else f"mixed values (dtype {arr.dtype})"
        )
        raise ValueError(f"{where} must be a (T, 4) array of numbers (MIDI pitches, -1 or NaN = silence), got {got}")
    if arr.ndim != 2 or arr.shape[1] != 4 or not len(arr):
        raise ValueError(f"{where} has shape {arr.shape}, expected (T, 4) with T >= 1")
    arr = arr.astype(np.float64)
    silent = np.isnan(arr) | (arr == -1)
    bad = ~silent & ((arr < 0) | (arr > 127) | (arr != np.round(arr)))
    if bad.any():
        t, v = (int(x) for x in np.argwhere(bad)[0])
        raise ValueError(f"{where} step {t} voice {v}: {arr[t, v]} is not -1/NaN or a MIDI integer 0..127")
    return np.where(silent, np.nan, arr)


def _read_npy_member(z: zipfile.ZipFile, name: str, source: str) -> Any:
    """One ``.npy`` of an ``.npz``: plain arrays from their header, object arrays by the numpy-only unpickler."""
    with z.open(name) as f:
        try:
            version = np.lib.format.read_magic(f)
            fmt = np.lib.format
            read_header = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
            shape, fortran_order, dtype = read_header(f)
        except ValueError as err:
            raise ValueError(f"{source}: not a .npy array ({err})") from err
        body = f.read()
    if dtype.hasobject:
        return _safe_unpickle(body, source)
    try:
        return np.frombuffer(body, dtype=dtype).reshape(shape, order="F" if fortran_order else "C")
    except ValueError as err:  # truncated member
        raise ValueError(f"{source}: array data does not match its header {shape} {dtype} ({err})") from err


def load_jsb_separated(path: str | Path) -> dict[str, list[np.ndarray]]:
    """``Jsb16thSeparated.npz`` (object arrays read by a numpy-only unpickler) or ``.json`` (-1 = silent).

    Returns ``(T, 4)`` float arrays with NaN for silence, per zoo split (the file's ``valid`` is ``val``).
    Each split must be a list (json) / array (npz) of pieces, each piece ``(T, 4)`` of -1/NaN or MIDI
    integers 0..127; strings are refused, not parsed. A failure is a ValueError naming the file, the
    split and the piece (and the step and voice of a bad value).
    """
    path = Path(path)
    if path.suffix == ".json":
        try:
            raw = _check_splits(json.loads(path.read_text()), str(path))
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        splits = {s: (key, raw[s]) for s, key in zip(SPLITS, FILE_SPLITS)}
    elif path.suffix == ".npz":
        splits = {}
        try:
            with zipfile.ZipFile(path) as z:
                for s, key in zip(SPLITS, FILE_SPLITS):
                    if f"{key}.npy" not in z.namelist():
                        raise ValueError(f"{path} has no array {key!r}; expected {list(FILE_SPLITS)}")
                    arr = _read_npy_member(z, f"{key}.npy", f"{path}:{key}.npy")
                    if not isinstance(arr, np.ndarray) or arr.ndim not in (1, 3):
                        what = f"shape {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
                        raise ValueError(
                            f"{path}: split {key!r} must be an object array of pieces or a (P, T, 4) array, got {what}"
                        )
                    splits[s] = (key, list(arr))
        except zipfile.BadZipFile as err:
            raise ValueError(f"{path} is not a valid .npz archive: {err}") from err
    else:
        raise ValueError(f"{path}: expected a Jsb16thSeparated .npz or .json file")
    return {
        s: [_check_separated_piece(p, f"{path}: split {key!r} piece {i}") for i, p in enumerate(pieces)]
        for s, (key, pieces) in splits.items()
    }


# ---------------------------------------------------------------------------------------------------
# music21 chorales
# ---------------------------------------------------------------------------------------------------
def _score_to_grid(score: Any) -> ChoraleGrid:
    parts = list(score.parts)
    if len(parts) != 4:
        raise ValueError(f"{len(parts)} parts")
    total = int(round(float(score.highestTime) * 4))
    pitches = np.full((total, 4), -1, dtype=np.int64)
    onsets = np.zeros((total, 4), dtype=bool)
    for v, part in enumerate(parts):
        for n in part.flatten().notes:
            if float(n.quarterLength) <= 0:  # grace notes take no grid time
                continue
            a = int(round(float(n.offset) * 4))
            b = int(round((float(n.offset) + float(n.quarterLength)) * 4))
            if b <= a:
                continue
            midis = [p.midi for p in n.pitches]
            pitch = max(midis) if v < 2 else min(midis)
            tie = getattr(n, "tie", None)
            held = tie is not None and tie.type in ("continue", "stop")
            pitches[a:b, v] = pitch
            onsets[a:b, v] = False
            onsets[a, v] = not held
    return ChoraleGrid(pitches, onsets)


def load_music21_chorales(cache_dir: str | Path | None = None) -> list[tuple[int, ChoraleGrid]]:
    """music21's Riemenschneider chorales 1-371 as ``(number, grid)``, deduplicated, cached as npz."""
    cache = Path(cache_dir) if cache_dir is not None else cache_root("music")
    cache_file = cache / "music21_chorales_v1.npz"
    if cache_file.is_file():
        with np.load(cache_file, allow_pickle=False) as z:
            numbers, lengths = z["numbers"], z["lengths"]
            pitches, onsets = z["pitches"], z["onsets"]
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        return [
            (int(numbers[i]), ChoraleGrid(pitches[bounds[i]: bounds[i + 1]], onsets[bounds[i]: bounds[i + 1]]))
            for i in range(len(numbers))
        ]
    from music21 import corpus

    names = list(corpus.chorales.Iterator(numberingSystem="riemenschneider", returnType="filename"))
    pieces: list[tuple[int, ChoraleGrid]] = []
    seen: set[bytes] = set()
    failed, not_four, duplicates = [], [], 0
    for number, name in enumerate(names, start=1):
        try:
            score = corpus.parse(name)
        except Exception:  # music21 raises many types on malformed MusicXML
            failed.append(name)
            continue
        try:
            grid = _score_to_grid(score)
        except ValueError:
            not_four.append(name)
            continue
        key = hashlib.sha1(grid.pitches.tobytes()).digest()
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        pieces.append((number, grid))
    log.warning(
        "music21 chorales: kept %d of %d; skipped %d that failed to parse, %d without four parts, "
        "%d exact duplicates", len(pieces), len(names), len(failed), len(not_four), duplicates,
    )
    cache.mkdir(parents=True, exist_ok=True)
    tmp = cache_file.with_suffix(".tmp.npz")
    np.savez_compressed(
        tmp,
        numbers=np.asarray([n for n, _ in pieces]),
        lengths=np.asarray([len(g) for _, g in pieces]),
        pitches=np.concatenate([g.pitches for _, g in pieces]),
        onsets=np.concatenate([g.onsets for _, g in pieces]),
    )
    tmp.replace(cache_file)
    return pieces


def split_music21(pieces: Sequence[tuple[int, ChoraleGrid]]) -> dict[str, list[ChoraleGrid]]:
    """The fixed split: by position in Riemenschneider order, ``i % 10 == 8`` val, ``== 9`` test."""
    out: dict[str, list[ChoraleGrid]] = {s: [] for s in SPLITS}
    for i, (_, grid) in enumerate(sorted(pieces, key=lambda p: p[0])):
        out["val" if i % 10 == 8 else "test" if i % 10 == 9 else "train"].append(grid)
    return out


# ---------------------------------------------------------------------------------------------------
# token windows
# ---------------------------------------------------------------------------------------------------
def _torch_rng() -> np.random.Generator:
    # draws from torch's global RNG so Lightning's seed_everything (and worker seeding) fixes it
    return np.random.default_rng(int(torch.randint(0, 2**31 - 1, (1,)).item()))


class TokenSequenceDataset(Dataset):
    """Token windows of length ``max_len + 1`` (inputs + shifted targets) from a list of pieces.

    ``make_tokens(piece, rng)`` turns a piece into tokens (``rng`` is ``None`` for evaluation, where
    no augmentation applies). Training returns one random window per piece per epoch, starting at the
    first token or on a multiple of ``align`` after it; evaluation returns every window of every piece,
    consecutive windows overlapping by one token so each token is a target exactly once.
    """

    def __init__(
        self,
        pieces: Sequence[Any],
        make_tokens: Callable[[Any, np.random.Generator | None], list[int]],
        max_len: int,
        train: bool,
        align: int = 1,
    ) -> None:
        if max_len < 2:
            raise ValueError(f"max_len must be at least 2, got {max_len}")
        self.pieces = list(pieces)
        self.make_tokens = make_tokens
        self.max_len = max_len
        self.train = train
        self.align = max(1, align)
        self.index: list[tuple[int, int]] = []
        self.eval_tokens: list[list[int]] = []
        if not train:
            # tokenized once: evaluation has no augmentation
            self.eval_tokens = [make_tokens(piece, None) for piece in self.pieces]
            for i, tokens in enumerate(self.eval_tokens):
                for start in range(0, max(len(tokens) - 1, 1), max_len):
                    self.index.append((i, start))

    def __len__(self) -> int:
        return len(self.pieces) if self.train else len(self.index)

    def __getitem__(self, idx: int) -> dict[str, torch.Tensor | int]:
        """``{"tokens": (<= max_len + 1,), "start": absolute position of tokens[0] in its piece}``."""
        start = 0
        if self.train:
            rng = _torch_rng()
            tokens = self.make_tokens(self.pieces[idx], rng)
            span = self.max_len + 1
            if len(tokens) > span:
                starts = np.arange(0, len(tokens) - span + 1)
                starts = starts[(starts == 0) | ((starts - 1) % self.align == 0)]
                start = int(rng.choice(starts))
                tokens = tokens[start: start + span]
        else:
            i, start = self.index[idx]
            tokens = self.eval_tokens[i][start: start + self.max_len + 1]
        return {"tokens": torch.as_tensor(tokens, dtype=torch.long), "start": start}


def collate_tokens(batch: Sequence[dict[str, Any]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest window: ``{"tokens": (B, L + 1), "start": (B,)}``."""
    length = max(int(item["tokens"].numel()) for item in batch)
    out = torch.full((len(batch), length), pad_id, dtype=torch.long)
    for i, item in enumerate(batch):
        out[i, : item["tokens"].numel()] = item["tokens"]
    return {"tokens": out, "start": torch.tensor([int(item["start"]) for item in batch], dtype=torch.long)}


class _TokenDataModule(ZooDataModule):
    """Token-window splits with right-padding collation; subclasses set ``tokenizer``."""

    tokenizer: Any

    def __init__(self, path: str | None, batch_size: int, max_len: int, num_workers: int, limit: int | None) -> None:
        super().__init__(path, batch_size, num_workers, limit)
        if max_len < 2:
            raise ValueError(f"max_len must be at least 2, got {max_len}")
        self.max_len = max_len

    @property
    def vocab_size(self) -> int:
        return self.tokenizer.vocab_size

    def collate_fn(self) -> Callable[[Sequence[torch.Tensor]], dict[str, torch.Tensor]]:
        return functools.partial(collate_tokens, pad_id=self.tokenizer.pad_id)


# ---------------------------------------------------------------------------------------------------
# chorales
# ---------------------------------------------------------------------------------------------------
class ChoralesDataModule(_TokenDataModule):
    """Bach chorales as token windows. See the module docstring for sources, split and augmentation.

    Args:
        path: ``None`` for music21's chorales; else a JSB pickle, ``Jsb16thSeparated.npz``/``.json``
            or a folder containing one of them.
        representation: ``"chorale"`` (hold tokens) or ``"jsb16th"`` (the paper's, no hold tokens).
        max_len: tokens per training window (inputs); windows hold ``max_len + 1`` tokens.
        transpose: training transposition range in semitones (0 disables it).
        add_eos: append EOS to every piece (useful for generation; the paper's NLL has none).
        max_pieces: keep only the first N pieces per split (quick runs).
        limit: keep only the first N windows per split (:class:`~zoo.training.data.ZooDataModule`).
    """

    def __init__(
        self,
        path: str | None = None,
        representation: Literal["chorale", "jsb16th"] = "chorale",
        max_len: int = 512,
        batch_size: int = 16,
        transpose: int = 3,
        add_eos: bool = True,
        num_workers: int = 0,
        cache_dir: str | None = None,
        max_pieces: int | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(path, batch_size, max_len, num_workers, limit)
        if representation not in ("chorale", "jsb16th"):
            raise ValueError(f"representation must be 'chorale' or 'jsb16th', got {representation!r}")
        if transpose < 0:
            raise ValueError(f"transpose must be >= 0 semitones, got {transpose}")
        self.representation = representation
        self.transpose = transpose
        self.add_eos = add_eos
        self.cache_dir = cache_dir
        self.max_pieces = max_pieces
        self.tokenizer = ChoraleTokenizer() if representation == "chorale" else Jsb16thTokenizer()
        self.splits: dict[str, list[ChoraleGrid]] = {}

    def load_default(self) -> dict[str, Dataset]:
        return self._datasets(split_music21(load_music21_chorales(self.cache_dir)), "music21")

    def load_path(self, path: Path) -> dict[str, Dataset]:
        return self._datasets(self._read_path(path), str(path))

    def _datasets(self, splits: dict[str, list[ChoraleGrid]], source: str) -> dict[str, Dataset]:
        if self.max_pieces is not None:
            splits = {s: g[: self.max_pieces] for s, g in splits.items()}
        for s in SPLITS:
            if not splits[s]:
                raise ValueError(f"chorale data {source} has no pieces in split {s!r}")
        self.splits = splits
        return {
            s: TokenSequenceDataset(
                splits[s], self._make_tokens, self.max_len, train=(s == "train"), align=self.tokenizer.tokens_per_step
            )
            for s in SPLITS
        }

    @staticmethod
    def _read_path(path: Path) -> dict[str, list[ChoraleGrid]]:
        if path.is_dir():
            candidates = sorted(path.glob("Jsb16thSeparated.npz")) + sorted(path.glob("Jsb16thSeparated.json"))
            candidates += sorted(path.glob("*.pkl")) + sorted(path.glob("*.pickle"))
            if not candidates:
                raise ValueError(
                    f"{path} holds no Jsb16thSeparated.npz/.json or JSB Chorales .pkl/.pickle file"
                )
            path = candidates[0]
        if path.suffix in (".pkl", ".pickle"):
            return load_jsb_pickle(path)
        if path.suffix in (".npz", ".json"):
            sep = load_jsb_separated(path)
            return {s: [ChoraleGrid.from_separated(a) for a in sep[s]] for s in SPLITS}
        raise ValueError(f"{path}: expected a .pkl/.pickle, .npz or .json JSB Chorales file")

    def _make_tokens(self, grid: ChoraleGrid, rng: np.random.Generator | None) -> list[int]:
        if rng is not None and self.transpose > 0:
            sounding = grid.pitches[grid.pitches >= 0]
            lo = -min(self.transpose, int(sounding.min()) if sounding.size else 0)
            hi = min(self.transpose, 127 - int(sounding.max()) if sounding.size else 0)
            grid = grid.transpose(int(rng.integers(lo, hi + 1)))
        return self.tokenizer.encode(grid, add_bos=True, add_eos=self.add_eos)


# ---------------------------------------------------------------------------------------------------
# piano performances
# ---------------------------------------------------------------------------------------------------
MIDI_SUFFIXES = (".mid", ".midi")


def _folder_split(rel: str) -> str:
    h = int(hashlib.md5(rel.encode()).hexdigest(), 16) % 100
    return "train" if h < 80 else "val" if h < 90 else "test"


def _maestro_index(root: Path) -> list[tuple[str, str]] | None:
    """``(relative midi path, split)`` from ``maestro-v*.csv`` / ``.json``; None if there is none."""
    import csv

    metas = sorted(root.glob("maestro-v*.csv")) + sorted(root.glob("maestro-v*.json"))
    if not metas:
        return None
    meta = metas[0]
    rows: list[tuple[str, str]] = []
    if meta.suffix == ".csv":
        with meta.open(newline="") as f:
            reader = csv.DictReader(f)
            if not reader.fieldnames or not {"split", "midi_filename"} <= set(reader.fieldnames):
                raise ValueError(f"{meta} needs the columns 'split' and 'midi_filename'")
            rows = [(r["midi_filename"], r["split"]) for r in reader]
    else:
        try:
            data = json.loads(meta.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta} is not valid JSON: {err}") from err
        if isinstance(data, dict) and "split" in data and "midi_filename" in data:
            # column-oriented: {"split": {"0": "train", ...}, "midi_filename": {"0": "...", ...}}
            split_col, file_col = data["split"], data["midi_filename"]
            if not isinstance(split_col, dict) or not isinstance(file_col, dict) or set(split_col) != set(file_col):
                raise ValueError(f"{meta}: columns 'split' and 'midi_filename' must be dicts over the same row keys")
            rows = [(file_col[k], split_col[k]) for k in split_col]
        elif isinstance(data, list):
            for i, r in enumerate(data):
                if not isinstance(r, dict) or not {"split", "midi_filename"} <= set(r):
                    raise ValueError(f"{meta}: row {i} must be an object with 'split' and 'midi_filename'")
            rows = [(r["midi_filename"], r["split"]) for r in data]
        else:
            raise ValueError(f"{meta} must hold 'split' and 'midi_filename' columns")
    names = {"train": "train", "validation": "val", "valid": "val", "test": "test"}
    out = []
    for i, (rel, split) in enumerate(rows):
        if not isinstance(rel, str) or not rel:
            raise ValueError(f"{meta}: row {i} has midi_filename {rel!r}, expected a relative path")
        if split not in names:
            raise ValueError(f"{meta}: unknown split {split!r} for {rel}; expected train/validation/test")
        out.append((rel, names[split]))
    return out


def _notes_to_array(notes: Sequence[Note]) -> np.ndarray:
    return np.asarray([[n.pitch, n.velocity, n.start, n.end] for n in notes], dtype=np.float64).reshape(-1, 4)


def _check_notes(arr: Any, source: str) -> np.ndarray:
    """Notes ``(N, 4)`` = pitch, velocity, start, end (s): finite, pitch and velocity integers 0..127,
    ``0 <= start <= end``; else a ValueError naming ``source``, the note and the field."""
    if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f" or arr.ndim != 2 or arr.shape[1] != 4:
        what = f"{arr.dtype} {arr.shape}" if isinstance(arr, np.ndarray) else type(arr).__name__
        raise ValueError(f"{source}: notes must be a float (N, 4) array (pitch, velocity, start, end), got {what}")
    def not_midi(x: np.ndarray) -> np.ndarray:
        return (x < 0) | (x > 127) | (x != np.round(x))

    finite = np.isfinite(arr).all(axis=1)
    pitch, velocity, start, end = np.where(finite[:, None], arr, 0).T
    checks = (
        ("a non-finite value", ~finite),
        ("pitch outside the MIDI integers 0..127", not_midi(pitch)),
        ("velocity outside the MIDI integers 0..127", not_midi(velocity)),
        ("start < 0", start < 0),
        ("end before start", end < start),
    )
    for problem, bad in checks:
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{source}: note {i} {arr[i].tolist()} has {problem}")
    return arr


def _array_to_notes(arr: np.ndarray) -> list[Note]:
    return [Note(int(p), int(v), float(s), float(e)) for p, v, s, e in arr]


def write_humanized_chorales(out_dir: Path, grids: Sequence[ChoraleGrid], seed: int = 0) -> None:
    """The offline default for performances: chorales rendered as one-track piano MIDI with humanized
    onsets (+-10 ms), tempo (72-108 bpm) and velocities, written as real ``.mid`` files."""
    import pretty_midi

    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, grid in enumerate(grids):
        pm = grid.to_midi(tempo=float(rng.uniform(72, 108)))
        piano = pretty_midi.Instrument(program=0, name="piano")
        for inst in pm.instruments:
            for n in inst.notes:
                jitter = rng.normal(0, 0.01, 2)
                start = max(0.0, n.start + jitter[0])
                end = max(start + 0.05, n.end + jitter[1])
                vel = int(np.clip(rng.normal(70, 12), 20, 120))
                piano.notes.append(pretty_midi.Note(velocity=vel, pitch=n.pitch, start=start, end=end))
        out = pretty_midi.PrettyMIDI()
        out.instruments.append(piano)
        out.write(str(out_dir / f"chorale_{i:03d}.mid"))


class PerformanceDataModule(_TokenDataModule):
    """Piano performances as Oore et al. event windows. See the module docstring.

    Args:
        path: a MAESTRO folder (with ``maestro-v*.csv``/``.json``) or any folder of MIDI files;
            ``None`` writes and reads the generated default.
        max_len: tokens per training window (inputs).
        stretch: time-stretch range, factor ~ U(1 - stretch, 1 + stretch) (0 disables it).
        transpose: transposition range in semitones (0 disables it).
        cache_dir: where parsed notes are cached (default ``~/.cache/zoo/music/performance``).
        max_files: keep only the first N files per split (quick runs).
        limit: keep only the first N windows per split.
    """

    def __init__(
        self,
        path: str | None = None,
        max_len: int = 2048,
        batch_size: int = 8,
        stretch: float = 0.05,
        transpose: int = 3,
        num_workers: int = 0,
        cache_dir: str | None = None,
        max_files: int | None = None,
        limit: int | None = None,
    ) -> None:
        super().__init__(path, batch_size, max_len, num_workers, limit)
        if not 0 <= stretch < 1:
            raise ValueError(f"stretch must be in [0, 1), got {stretch}")
        if transpose < 0:
            raise ValueError(f"transpose must be >= 0 semitones, got {transpose}")
        self.stretch = stretch
        self.transpose = transpose
        self.cache_dir = Path(cache_dir) if cache_dir else cache_root("music", "performance")
        self.max_files = max_files
        self.tokenizer = PerformanceTokenizer()
        self.skipped: list[str] = []
        self.files: dict[str, list[Path]] = {}

    def default_root(self) -> Path:
        """The generated default: chorales rendered as humanized piano MIDI, written once."""
        root = self.cache_dir / "default_chorale_performances"
        if not any(root.glob("*.mid")):
            grids = [g for _, g in load_music21_chorales()][:120]
            write_humanized_chorales(root, grids)
        return root

    def list_files(self, root: Path) -> dict[str, list[Path]]:
        if not root.is_dir():
            raise ValueError(f"performance data path {root} is not a folder of MIDI files")
        index = _maestro_index(root)
        files: dict[str, list[Path]] = {s: [] for s in SPLITS}
        if index is not None:
            for rel, split in index:
                files[split].append(root / rel)
        else:
            for p in sorted(root.rglob("*")):
                if p.suffix.lower() in MIDI_SUFFIXES and p.is_file():
                    files[_folder_split(p.relative_to(root).as_posix())].append(p)
        if self.max_files is not None:
            files = {s: f[: self.max_files] for s, f in files.items()}
        return files

    def _cached_notes(self, path: Path) -> np.ndarray:
        stat = path.stat()
        key = hashlib.sha1(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()
        cache_file = self.cache_dir / "notes" / f"{key}.npy"
        bad_marker = cache_file.with_suffix(".bad")
        if cache_file.is_file():
            try:
                return _check_notes(np.load(cache_file, allow_pickle=False), str(cache_file))
            except (ValueError, OSError, EOFError) as err:  # a damaged cache is re-derived, never trained on
                log.warning("%s (note cache of %s) is damaged (%s); parsing the MIDI file again", cache_file, path, err)
                cache_file.unlink(missing_ok=True)
        if bad_marker.is_file():  # known corrupt: do not parse it again either
            raise ValueError(f"{path} is not a readable MIDI file (cached verdict)")
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        try:
            arr = _check_notes(_notes_to_array(self.tokenizer.notes_from_midi(path)), str(path))
        except ValueError:
            bad_marker.touch()
            raise
        tmp = cache_file.with_name(cache_file.stem + f".{os.getpid()}.tmp.npy")
        np.save(tmp, arr)
        tmp.replace(cache_file)
        return arr

    def _make_tokens(self, notes: np.ndarray, rng: np.random.Generator | None) -> list[int]:
        arr = notes
        if rng is not None:
            arr = notes.copy()
            if self.stretch > 0:
                arr[:, 2:] *= rng.uniform(1 - self.stretch, 1 + self.stretch)
            if self.transpose > 0:
                arr[:, 0] += int(rng.integers(-self.transpose, self.transpose + 1))
                arr = arr[(arr[:, 0] >= 0) & (arr[:, 0] <= 127)]
        return self.tokenizer.encode_notes(_array_to_notes(arr), add_bos=True, add_eos=True)

    def load_default(self) -> dict[str, Dataset]:
        return self.load_path(self.default_root())

    def load_path(self, path: Path) -> dict[str, Dataset]:
        self.files = self.list_files(path)
        self.skipped = []
        reasons: list[str] = []
        pieces: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
        for split, paths in self.files.items():
            for p in paths:
                try:
                    arr = self._cached_notes(p)
                except (ValueError, OSError) as err:  # the messages name the file
                    self.skipped.append(str(p))
                    reasons.append(str(err))
                    continue
                if len(arr) == 0:
                    self.skipped.append(str(p))
                    reasons.append(f"{p} holds no notes")
                    continue
                pieces[split].append(arr)
        if self.skipped:
            log.warning(
                "PerformanceDataModule: skipped %d unreadable or empty MIDI files of %d; first: %s",
                len(self.skipped), sum(len(f) for f in self.files.values()), "; ".join(reasons[:3]),
            )
        for s in SPLITS:
            if not pieces[s]:
                raise ValueError(f"performance data {path} has no readable MIDI files in split {s!r}")
        return {s: TokenSequenceDataset(pieces[s], self._make_tokens, self.max_len, train=(s == "train")) for s in SPLITS}
