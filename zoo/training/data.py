"""``ZooDataModule``: the data side every task shares.

A task's datamodule says how to read its dataset, nothing else::

    class MyData(ZooDataModule):
        def load_default(self) -> dict[str, Dataset]:     # offline: packaged data, or a generator
            ...                                           # that writes the real on-disk format
        def load_path(self, path: Path) -> dict[str, Dataset]:  # the benchmark's own files
            ...

Both return ``{"train": ..., "val": ..., "test": ...}`` (the split names everywhere). The base class
picks one by ``path``, builds the loaders (``train`` shuffled, ``predict`` = ``test``), applies
``limit`` through :class:`torch.utils.data.Subset` (datasets are never mutated) and refuses a
loader over an empty split with the split's name. Also here: :func:`cache_dir`, the one place parsed data are
cached, :func:`safe_unpickle`, the one restricted unpickler for pickled data files, and
:func:`read_each`, the one way a reader skips its corrupt files (counted, in one warning, never silently).
"""

from __future__ import annotations

import io
import os
import pickle
import random
import warnings
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, Subset

__all__ = [
    "SPLITS", "NUMPY_GLOBALS", "ZooDataModule", "ResumableSampler", "SeededDataset", "cache_dir", "safe_unpickle",
    "read_each",
]

_Item = TypeVar("_Item")
_Read = TypeVar("_Read")

SPLITS: tuple[str, ...] = ("train", "val", "test")

#: what pickled numpy arrays need: arrays, dtypes, scalars (and ``_codecs.encode`` for Python 2 bytes)
NUMPY_GLOBALS: frozenset[tuple[str, str]] = frozenset(
    {
        ("numpy", "dtype"),
        ("numpy", "ndarray"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("_codecs", "encode"),
        ("__builtin__", "bytes"),  # Python 2 pickles write an empty byte string as a call to bytes()
        ("builtins", "bytes"),
    }
)


def cache_dir(*parts: str) -> Path:
    """``$ZOO_CACHE`` (default ``~/.cache/zoo``) joined with ``parts``: where parsed data are cached."""
    root = os.environ.get("ZOO_CACHE") or str(Path.home() / ".cache" / "zoo")
    return Path(root).joinpath(*parts)


class _AllowlistUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, allowed: Collection[tuple[str, str]], **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._allowed:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name}: not in the allowlist of this data format")


def safe_unpickle(
    data: bytes, allowed: Collection[tuple[str, str]] = NUMPY_GLOBALS, *, source: str, encoding: str = "latin1"
) -> Any:
    """Unpickle ``data`` admitting only the ``(module, name)`` globals in ``allowed`` plus builtin
    containers, so a malicious data file cannot run code. Any failure is a ValueError naming ``source``."""
    try:
        return _AllowlistUnpickler(io.BytesIO(data), allowed, encoding=encoding).load()
    except Exception as err:  # corrupt pickles raise many types
        raise ValueError(f"{source}: not a readable data pickle ({type(err).__name__}: {err})") from err


def read_each(
    items: Iterable[_Item],
    read: Callable[[_Item], _Read],
    *,
    what: str,
    name: Callable[[_Item], str] = str,
    errors: tuple[type[BaseException], ...] = (Exception,),
    require_one: bool = True,
) -> list[tuple[_Item, _Read]]:
    """``[(item, read(item))]`` for every item whose read does not raise one of ``errors``.

    The failures are skipped and reported in **one** ``UserWarning`` that counts them and names the
    first three with their error (``what`` says what was read, e.g. ``"WLASL landmark files under
    /data/wlasl"``). When nothing could be read and ``require_one`` is set, a ``ValueError`` names
    the first failures instead: an empty dataset is an error, not a warning.
    """
    items = list(items)
    good: list[tuple[_Item, _Read]] = []
    failures: list[str] = []
    for item in items:
        try:
            good.append((item, read(item)))
        except errors as err:
            failures.append(f"{name(item)} ({type(err).__name__}: {str(err)[:160]})")
    if failures and (good or not require_one):
        warnings.warn(
            f"skipped {len(failures)} of {len(items)} {what} that could not be read; first: {'; '.join(failures[:3])}",
            stacklevel=2,
        )
    if require_one and not good:
        detail = f"; first: {'; '.join(failures[:3])}" if failures else " (there were none)"
        raise ValueError(f"none of the {len(items)} {what} could be read{detail}")
    return good


class ResumableSampler(Sampler):
    """A shuffling sampler whose order is a function of ``(seed, epoch)`` and that can resume mid-epoch.

    Yields ``(index, epoch)`` keys for :class:`SeededDataset`. Lightning calls :meth:`set_epoch` at every
    epoch start; :meth:`skip` drops the first examples of the current epoch once (resuming after
    ``n`` consumed examples); ``state_dict`` / ``load_state_dict`` carry ``seed`` and ``epoch``.
    """

    def __init__(self, length: int, seed: int, shuffle: bool = True) -> None:
        self.length, self.seed, self.shuffle = length, int(seed), shuffle
        self.epoch = 0
        self._skip = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def skip(self, n: int) -> None:
        self._skip = max(0, int(n))

    def state_dict(self) -> dict[str, int]:
        return {"seed": self.seed, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.seed, self.epoch = int(state["seed"]), int(state["epoch"])

    def __len__(self) -> int:
        return self.length

    def __iter__(self):
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.length, generator=gen).tolist()
        else:
            order = list(range(self.length))
        start, self._skip = self._skip, 0
        return iter([(i, self.epoch) for i in order[start:]])


class SeededDataset(Dataset):
    """``dataset[i]`` computed under RNG states seeded by ``(seed, epoch, i)``: augmentation becomes a
    function of the example and the epoch, independent of worker count, prefetching and resumes.

    The global torch / numpy / python RNG states are restored afterwards, so the training step's own
    randomness (dropout) sees one undisturbed stream.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed = dataset, int(seed)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key: Any) -> Any:
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        item_seed = (self.seed * 1_000_003 + epoch) * 1_000_033 + int(index)
        py_state, np_state = random.getstate(), np.random.get_state()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(item_seed % 2**63)
            random.seed(item_seed)
            np.random.seed(item_seed % 2**32)
            try:
                return self.dataset[index]
            finally:
                random.setstate(py_state)
                np.random.set_state(np_state)


class ZooDataModule(pl.LightningDataModule):
    """Loaders over the ``train`` / ``val`` / ``test`` datasets a subclass reads.

    Args:
        path: the dataset on disk in its real format; ``None`` = the offline default.
        batch_size, num_workers: DataLoader settings.
        limit: keep only the first ``limit`` examples of each split (quick runs and tests).
    """

    #: drop the last incomplete training batch (batch statistics, mixup pairs)
    drop_last_train: ClassVar[bool] = False

    def __init__(self, path: str | None = None, batch_size: int = 32, num_workers: int = 0, limit: int | None = None) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if num_workers < 0:
            raise ValueError(f"num_workers must be >= 0, got {num_workers}")
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be None or >= 1, got {limit}")
        self.path = path
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.limit = limit
        self.datasets: dict[str, Dataset] = {}
        self.train_sampler: ResumableSampler | None = None
        self._resume: dict[str, int] | None = None

    # ------------------------------------------------------------------ what a task writes
    def load_default(self) -> dict[str, Dataset]:
        """The offline default splits (``path=None``)."""
        raise TypeError(f"{type(self).__name__} has no offline default: pass path=<the dataset on disk>")

    def load_path(self, path: Path) -> dict[str, Dataset]:
        """The splits of the dataset at ``path``, read in its real on-disk format."""
        raise TypeError(f"{type(self).__name__} reads no dataset from a path; leave path unset")

    def collate_fn(self) -> Callable[[list[Any]], Any] | None:
        """The loaders' ``collate_fn`` (``None``: PyTorch's default)."""
        return None

    # ------------------------------------------------------------------ shared
    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        if self.path is None:
            built = self.load_default()
        else:
            path = Path(self.path)
            if not path.exists():
                raise ValueError(f"{type(self).__name__}: data path {str(path)!r} does not exist")
            built = self.load_path(path)
        if set(built) != set(SPLITS):
            raise ValueError(f"{type(self).__name__} built splits {sorted(built)}, expected {list(SPLITS)}")
        self.datasets = built

    def resume_train_sampler(self, state: dict[str, int]) -> None:
        """Make the next training loader continue a checkpoint's epoch: its ``seed``, ``epoch`` and the
        ``batches_done`` already trained on (called by :class:`zoo.training.callbacks.ResumeState`)."""
        self._resume = dict(state)

    def dataset(self, split: str) -> Dataset:
        """The ``split`` dataset, cut to ``limit`` examples when set."""
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.setup()
        ds = self.datasets[split]
        if self.limit is not None and len(ds) > self.limit:
            ds = Subset(ds, range(self.limit))
        return ds

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        ds = self.dataset(split)
        if len(ds) == 0:
            raise ValueError(
                f"{type(self).__name__}: the {split} split of {self.path or 'the default data'} is empty; "
                "use more data or other split sizes"
            )
        sampler = None
        if shuffle:
            # a seed fixed by seed_everything; stored in checkpoints by zoo.training.callbacks.ResumeState
            seed = self.train_sampler.seed if self.train_sampler is not None else torch.initial_seed() % 2**31
            sampler = self.train_sampler = ResumableSampler(len(ds), seed)
            if self._resume is not None:
                sampler.load_state_dict(self._resume)
                done = self._resume.get("batches_done", 0) * self.batch_size
                if done < len(ds):  # a checkpoint from the middle of an epoch: skip what it trained on
                    sampler.skip(done)
                self._resume = None
            ds = SeededDataset(ds, sampler.seed)
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=self.collate_fn(),
            drop_last=shuffle and self.drop_last_train and len(ds) > self.batch_size,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
