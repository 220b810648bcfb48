"""``MelodyDataModule``: monophonic melodies as (pitch, duration) tokens for RIPO and its baselines.

Sources:

* default -- the monophonic folk melodies bundled with music21 (the Essen folksong collection and
  Ryan's Mammoth Collection, ABC files): parsed once, cached as ``.npz`` in ``cache_dir``;
* ``path`` -- any folder of MIDI / MusicXML / ABC files (recursively); ``melody_part`` picks the
  part holding the melody. Unparseable files, and files whose tokens fall outside the vocabulary
  (pitch ``1 .. 130``, duration ``1 .. max_steps``; 0 is padding), are skipped and reported in one
  warning. The cache is checked the same way when read; a damaged one is parsed again.

Splits are deterministic: a melody goes to train / val / test by a hash of its source name, so
adding files never moves existing melodies between splits. The vocabulary is
:mod:`zoo.music.melody.tokenizer`.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from zoo.training.data import SPLITS, ZooDataModule
from zoo.training.data import cache_dir as default_cache_dir

from .tokenizer import SUFFIXES, MelodyTokenizer, parse_melody_file

__all__ = ["MelodyDataModule", "MelodyDataset", "load_melodies", "melody_split", "collate_melodies", "DEFAULT_COLLECTIONS"]

DEFAULT_COLLECTIONS = ("essenFolksong", "ryansMammoth")
_CACHE_VERSION = 1


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


def _check_tokens(tokens: object, tok: MelodyTokenizer, where: str) -> np.ndarray:
    """``tokens`` as int64 ``(N, 2)``, N >= 2, pitch in ``[1, pitch_vocab)``, duration in ``[1, duration_vocab)``."""
    arr = np.asarray(tokens)
    if arr.dtype.kind not in "iu" or arr.ndim != 2 or arr.shape[1] != 2 or len(arr) < 2:
        raise ValueError(f"{where}: tokens must be integer (N >= 2, 2), got {arr.dtype} {arr.shape}")
    for col, field, vocab in ((0, "pitch", tok.pitch_vocab), (1, "duration", tok.duration_vocab)):
        bad = (arr[:, col] < 1) | (arr[:, col] >= vocab)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{where}: token {i} has {field} {int(arr[i, col])}, outside 1..{vocab - 1}")
    return arr.astype(np.int64)


def _read_cache(cache_file: Path, tok: MelodyTokenizer) -> list[tuple[str, np.ndarray]] | None:
    """The cached melodies, checked like fresh ones; None (and a warning) when the cache is damaged."""
    try:
        with np.load(cache_file, allow_pickle=False) as z:
            names, lengths, flat = z["names"].tolist(), z["lengths"], z["tokens"]
        if len(names) != len(lengths) or lengths.dtype.kind not in "iu" or int(lengths.sum()) != len(flat):
            raise ValueError(f"{cache_file}: {len(names)} names, {len(lengths)} lengths, {len(flat)} tokens disagree")
        splits = np.split(flat, np.cumsum(lengths)[:-1]) if len(lengths) else []
        return [(n, _check_tokens(t, tok, f"{cache_file} melody {n!r}")) for n, t in zip(names, splits)]
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as err:
        warnings.warn(f"MelodyDataModule: damaged melody cache ({err}); parsing the files again", stacklevel=3)
        cache_file.unlink(missing_ok=True)
        return None


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
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir("music")
    cache_file = cache / f"melodies_{key}.npz"
    if cache_file.exists():
        cached = _read_cache(cache_file, tok)
        if cached is not None:
            return cached

    melodies: list[tuple[str, np.ndarray]] = []
    failures: list[str] = []
    for f in files:
        rel = f.relative_to(root).as_posix() if f.is_relative_to(root) else f.name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # music21 warns per odd ABC header; failures are counted below
                tunes = parse_melody_file(f, tok, melody_part)
            tunes = [_check_tokens(t, tok, f"{rel} melody {i}") for i, t in enumerate(tunes)]
        except Exception as err:  # any parser error or out-of-vocabulary token: skip the file, count it
            failures.append(f"{rel} ({type(err).__name__}: {str(err)[:120]})")
            continue
        melodies += [(f"{rel}#{i}", t) for i, t in enumerate(tunes)]
    if failures:
        warnings.warn(
            f"MelodyDataModule: skipped {len(failures)} of {len(files)} files under {desc} that could not be "
            f"parsed into a melody; first: {'; '.join(failures[:3])}",
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


def melody_split(name: str, val_percent: int = 10, test_percent: int = 10) -> str:
    """Deterministic split (``train`` / ``val`` / ``test``) of one melody by the hash of its name."""
    bucket = int(hashlib.md5(name.encode()).hexdigest(), 16) % 100
    if bucket < test_percent:
        return "test"
    if bucket < test_percent + val_percent:
        return "val"
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


class MelodyDataModule(ZooDataModule):
    """Monophonic melodies as (pitch, duration) tokens for melody completion.

    Args:
        path: folder of MIDI / MusicXML / ABC files; ``None`` = music21's bundled folk melodies.
        cache_dir: where parsed melodies are cached (default ``$ZOO_CACHE/music`` or ``~/.cache/zoo/music``).
        collections: music21 corpus folders used when ``path`` is None.
        melody_part: index among the parts that have notes, ``"highest"``, or a part-name substring.
        max_files: parse only the first files (sorted), for quick runs.
        seq_len: tokens per training window (the model sees ``seq_len`` inputs).
        batch_size, num_workers, limit: loader settings (:class:`~zoo.training.data.ZooDataModule`).
        duration_step, max_duration_steps: the duration grid (quarter notes per step, steps).
        val_percent, test_percent: split sizes.
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
        limit: int | None = None,
        duration_step: float = 0.25,
        max_duration_steps: int = 16,
        val_percent: int = 10,
        test_percent: int = 10,
    ) -> None:
        super().__init__(path, batch_size, num_workers, limit)
        if seq_len < 2:
            raise ValueError(f"MelodyDataModule: seq_len must be >= 2, got {seq_len}")
        if not (0 <= val_percent and 0 <= test_percent and val_percent + test_percent < 100):
            raise ValueError("MelodyDataModule: val_percent + test_percent must lie in [0, 100)")
        self.save_hyperparameters()
        self.tokenizer = MelodyTokenizer(duration_step, max_duration_steps)
        self.splits: dict[str, list[tuple[str, np.ndarray]]] = {}

    def prepare_data(self) -> None:
        self._melodies(self.path)

    def _melodies(self, path: str | None) -> list[tuple[str, np.ndarray]]:
        h = self.hparams
        return load_melodies(
            path, cache_dir=h.cache_dir, collections=h.collections, melody_part=h.melody_part,
            max_files=h.max_files, tokenizer=self.tokenizer,
        )

    def _datasets(self, melodies: list[tuple[str, np.ndarray]]) -> dict[str, Dataset]:
        self.splits = {s: [] for s in SPLITS}
        for name, tokens in melodies:
            self.splits[melody_split(name, self.hparams.val_percent, self.hparams.test_percent)].append((name, tokens))
        return {s: MelodyDataset([t for _, t in self.splits[s]], self.hparams.seq_len) for s in SPLITS}

    def load_default(self) -> dict[str, Dataset]:
        return self._datasets(self._melodies(None))

    def load_path(self, path: Path) -> dict[str, Dataset]:
        return self._datasets(self._melodies(str(path)))

    def collate_fn(self) -> Callable[[list[torch.Tensor]], dict[str, torch.Tensor]]:
        return collate_melodies
