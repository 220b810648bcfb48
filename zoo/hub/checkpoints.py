"""Strict, safe checkpoint I/O: state dicts from files, strict loading, and official checkpoints.

- :func:`load_checkpoint_file` reads ``.safetensors`` (no pickle at all) or a pickle file through
  ``torch.load(weights_only=True)``, which refuses anything but tensors and plain containers
  without running it;
- :func:`load_state_dict_strict` raises :class:`CheckpointMismatchError` listing every missing,
  unexpected and mis-shaped key;
- :func:`load_official` is the one way to load a paper's official checkpoint: the file is read
  with ``weights_only=True`` and an explicit allowlist for the config objects official training
  scripts pickle beside the weights (``argparse.Namespace``, yacs ``CfgNode``), the family's
  registered converter renames its keys, and :func:`strict_filter` checks the result against the
  model, so a mismatch is a readable report instead of a silently random layer.
"""

from __future__ import annotations

import argparse
import collections
import os
import pickle
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "CheckpointMismatchError",
    "PICKLE_SUFFIXES",
    "load_checkpoint_file",
    "read_official_file",
    "unwrap_state_dict",
    "strict_filter",
    "load_official",
    "load_state_dict_strict",
    "load_weights_into",
]

PICKLE_SUFFIXES = (".ckpt", ".pth", ".pt", ".bin", ".pth.tar")
# Longest list printed per category in a mismatch report; the rest is counted.
_MAX_LISTED = 25


class CheckpointMismatchError(ValueError):
    """A state dict does not fit a module: lists every missing, unexpected and mis-shaped key."""


def _safe_globals() -> list[Any]:
    # Registered config dataclasses are plain data: allowing them lets Lightning checkpoints whose
    # hyper_parameters hold one load with weights_only=True.
    from .registry import registered_config_classes

    return registered_config_classes()


#: Config classes official training scripts pickle next to the weights, rebuilt as inert data: an
#: ``argparse.Namespace`` is a plain attribute bag; a yacs ``CfgNode`` (a dict subclass) becomes an
#: ``OrderedDict`` of its fields, so yacs is neither imported nor run.
OFFICIAL_ALLOWLIST: tuple[Any, ...] = (
    argparse.Namespace,
    (collections.OrderedDict, "yacs.config.CfgNode"),
)


def _torch_load(path: Path, allowed: Iterable[Any] = ()) -> Any:
    """``torch.load(weights_only=True)`` with the zoo's plain-data classes and ``allowed`` admitted."""
    with open(path, "rb") as f:
        head = f.read(4)
    if not (head.startswith(b"PK") or head.startswith(b"\x80")):  # torch's zip format, or a legacy pickle
        raise ValueError(f"{path}: not a torch checkpoint (neither a zip archive nor a pickle)")
    try:
        with torch.serialization.safe_globals([*_safe_globals(), *allowed]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: refused by torch.load(weights_only=True): the file holds objects other than tensors "
            f"and plain containers, and loading it could run arbitrary code. Details: {_first_error_line(err)}"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path}: not a readable torch checkpoint ({err})") from err


def _first_error_line(err: BaseException) -> str:
    """The informative line of torch's long weights_only message (the WeightsUnpickler error)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    for i, ln in enumerate(lines):
        if ln.startswith("WeightsUnpickler error") and i + 1 < len(lines):
            return lines[i + 1]
    return lines[0] if lines else type(err).__name__


def _checked_file(path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint file {path} does not exist")
    name = path.name.lower()
    if not name.endswith((".safetensors", *PICKLE_SUFFIXES)):
        raise ValueError(
            f"checkpoint file {path}: unknown format {path.suffix!r}; expected .safetensors or one of "
            f"{', '.join(PICKLE_SUFFIXES)}"
        )
    return path


def _read_safetensors(path: Path) -> dict[str, Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except Exception as err:  # safetensors raises its own SafetensorError for corrupt headers
        raise ValueError(f"{path}: not a readable safetensors file ({err})") from err


def _as_state_dict(obj: Any, source: str) -> dict[str, Tensor]:
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        keys = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"{source}: expected a state dict (name -> tensor) or a checkpoint wrapping one, got {keys}"
        )
    return dict(obj)


def load_checkpoint_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a pickle file (``.ckpt``/``.pth``/``.pt``/``.bin``).

    Pickle files are read with ``torch.load(weights_only=True)``: anything but tensors and plain
    containers is refused without being executed. A Lightning checkpoint gives its ``state_dict``.
    """
    path = _checked_file(path)
    if path.name.lower().endswith(".safetensors"):
        return _read_safetensors(path)
    obj = _torch_load(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # Lightning checkpoint
    return _as_state_dict(obj, str(path))


# ------------------------------------------------------------------------------ official checkpoints
_WRAPPERS = ("model", "state_dict", "model_state_dict", "state_dict_ema", "module", "net")


def unwrap_state_dict(obj: Any, *, source: str) -> dict[str, Tensor]:
    """The weights inside an official checkpoint: ``{"model": sd, "optimizer": ..., "config": ...}``
    (or ``state_dict`` / ``model_state_dict`` / ``state_dict_ema`` / ``module`` / ``net``) or a bare
    state dict, with a DDP ``module.`` prefix stripped."""
    if isinstance(obj, Mapping) and not all(isinstance(v, Tensor) for v in obj.values()):
        for wrapper in _WRAPPERS:
            if isinstance(obj.get(wrapper), Mapping):
                obj = obj[wrapper]
                break
    state_dict = _as_state_dict(obj, source)
    if state_dict and all(k.startswith("module.") for k in state_dict):
        state_dict = {k[len("module.") :]: v for k, v in state_dict.items()}
    return state_dict


def read_official_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """The state dict of an official checkpoint file.

    Pickled files go through ``torch.load(weights_only=True)`` with :data:`OFFICIAL_ALLOWLIST`:
    an ``argparse.Namespace`` or a yacs ``CfgNode`` saved beside the weights is rebuilt as plain
    data (:class:`PickledConfig`), never by importing or running its class; anything else that is
    not a tensor or a plain container is refused.
    """
    path = _checked_file(path)
    if path.name.lower().endswith(".safetensors"):
        return _read_safetensors(path)
    return unwrap_state_dict(_torch_load(path, OFFICIAL_ALLOWLIST), source=str(path))


def _mismatch_lines(
    expected: Mapping[str, Tensor], state_dict: Mapping[str, Tensor]
) -> tuple[list[str], bool]:
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = [
        (key, f": checkpoint {_shape(state_dict[key])} vs model {_shape(expected[key])}")
        for key in sorted(set(expected) & set(state_dict))
        if state_dict[key].shape != expected[key].shape
    ]
    lines = (
        _format_list("missing key", "missing keys", _grouped(_by_layer(missing)),
                     " (in the model, not in the checkpoint)", count=len(missing))
        + _format_list("unexpected key", "unexpected keys", _grouped(_by_layer(unexpected)),
                       " (in the checkpoint, not in the model)", count=len(unexpected))
        + _format_list("shape mismatch", "shape mismatches", _grouped(mismatched), count=len(mismatched))
    )
    return lines, bool(mismatched)


_INDEX = re.compile(r"(?<![^.])\d+(?=\.)")  # a whole dotted segment of digits, not the last one


def _by_layer(keys: list[str], least: int = 4) -> list[tuple[str, str]]:
    """Keys under one indexed layer (``blocks.4.``), when at least ``least`` share it, as ``blocks.4.*``."""
    prefixes = [key[: m.end() + 1] if (m := _INDEX.search(key)) else None for key in keys]
    counts = collections.Counter(p for p in prefixes if p is not None)
    out: list[tuple[str, str]] = []
    for key, prefix in zip(keys, prefixes):
        if prefix is not None and counts[prefix] >= least:
            if (prefix + "*", f" ({counts[prefix]} keys)") not in out:
                out.append((prefix + "*", f" ({counts[prefix]} keys)"))
        else:
            out.append((key, ""))
    return out


def _grouped(items: list[tuple[str, str]]) -> list[str]:
    """Keys that differ only in their first layer index, with the same detail, as one line:
    ``blocks.{0-4,6}.norm.weight: ...``.

    A config mismatch (another width, depth or vocabulary) then reads as one line per kind of
    tensor instead of one per layer.
    """
    groups: dict[tuple[str, str], list[int]] = {}
    for key, detail in items:
        match = _INDEX.search(key)
        if match is None:
            groups.setdefault((key, detail), [])
        else:
            pattern = key[: match.start()] + "{}" + key[match.end() :]
            groups.setdefault((pattern, detail), []).append(int(match.group()))
    return [
        (pattern.format(_ranges(sorted(indices))) if indices else pattern) + detail
        for (pattern, detail), indices in groups.items()
    ]


def _ranges(values: list[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``{0-2,5}``; a single value stays bare."""
    if len(values) == 1:
        return str(values[0])
    runs: list[str] = []
    start = prev = values[0]
    for value in values[1:] + [None]:
        if value is not None and value == prev + 1:
            prev = value
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if value is not None:
            start = prev = value
    return "{" + ",".join(runs) + "}"


def strict_filter(
    state_dict: Mapping[str, Tensor],
    model: nn.Module,
    *,
    source: str,
    keep_own: Iterable[str] = (),
) -> dict[str, Tensor]:
    """The one strict check every official converter's output goes through.

    Every key of ``model`` must be in ``state_dict`` with the model's shape, and nothing else may
    be; otherwise :class:`CheckpointMismatchError` lists all differences. ``keep_own`` names key
    prefixes (a classifier head) that take the model's own tensors when the checkpoint's are
    missing or shaped for another number of classes: timm's fine-tuning route, where the head is
    re-initialized on purpose. :func:`load_official` passes none, so a head of the wrong size is an
    error there.
    """
    prefixes = tuple(keep_own)
    expected = model.state_dict()
    out = dict(state_dict)
    if prefixes:
        for key, value in expected.items():
            if key.startswith(prefixes) and (key not in out or out[key].shape != value.shape):
                out[key] = value
        out = {k: v for k, v in out.items() if k in expected or not k.startswith(prefixes)}
    lines, _ = _mismatch_lines(expected, out)
    if lines:
        raise CheckpointMismatchError("\n".join([f"checkpoint {source} does not match {type(model).__name__}:", *lines]))
    return out


def load_official(name: str, path: str | os.PathLike[str], **overrides: Any) -> nn.Module:
    """Build ``create_model(name, **overrides)`` and load the paper's official checkpoint ``path``
    into it: read safely (:func:`read_official_file`), converted by the family's registered
    converter, checked by :func:`strict_filter`, then loaded strictly.

    Raises ``ValueError`` for a model without a registered converter, and
    :class:`CheckpointMismatchError` listing every key that does not fit (e.g. a 100-class head
    loaded into a 10-class model: pass ``num_classes=100``).
    """
    from .registry import create_model, model_entry

    entry = model_entry(name)
    if entry.official is None:
        have = sorted(n for n, e in _registry_items() if e.official is not None)
        raise ValueError(
            f"load_official({name!r}): this model registers no official-checkpoint converter; "
            f"models that do: {', '.join(have) or 'none'}"
        )
    model = create_model(name, **overrides)
    source = str(path)
    state_dict = read_official_file(path)
    try:
        converted = entry.official(state_dict, model)
    except (KeyError, ValueError) as err:
        raise ValueError(f"{source}: cannot convert to {name}: {err}") from err
    load_state_dict_strict(model, strict_filter(converted, model, source=source), source=source)
    return model


def _registry_items() -> list[tuple[str, Any]]:
    from .registry import _REGISTRY

    return list(_REGISTRY.items())


def _format_list(singular: str, plural: str, items: list[str], note: str = "", count: int | None = None) -> list[str]:
    if not items:
        return []
    count = len(items) if count is None else count
    lines = [f"  {count} {singular if count == 1 else plural}{note}:"]
    lines += [f"    {item}" for item in items[:_MAX_LISTED]]
    if len(items) > _MAX_LISTED:
        lines.append(f"    ... and {len(items) - _MAX_LISTED} more")
    return lines


def _shape(t: Tensor) -> str:
    return str(tuple(t.shape))


def _value_problems(expected: Mapping[str, Tensor], state_dict: Mapping[str, Tensor]) -> list[str]:
    """Keys whose checkpoint tensor holds NaN/inf, or an integer/bool tensor where the model has floats."""
    wrong_dtype, nonfinite = [], []
    for key, value in state_dict.items():
        own = expected.get(key)
        if own is None or not isinstance(value, Tensor):
            continue
        if own.is_floating_point() and not (value.is_floating_point() or value.is_complex()):
            wrong_dtype.append(f"{key}: checkpoint {value.dtype} vs model {own.dtype}")
        elif value.is_floating_point() and value.numel() and not bool(torch.isfinite(value).all()):
            bad = int((~torch.isfinite(value)).sum())
            nonfinite.append(f"{key}: {bad} of {value.numel()} values are NaN or inf")
    return _format_list("tensor of the wrong kind", "tensors of the wrong kind", wrong_dtype) + _format_list(
        "non-finite tensor", "non-finite tensors", nonfinite
    )


def load_state_dict_strict(
    module: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    source: str,
    strict: bool = True,
    allow_nonfinite: bool = False,
) -> None:
    """Load ``state_dict`` into ``module``, raising :class:`CheckpointMismatchError` on any difference.

    The error lists (sorted, counted, truncated after 25 per kind) the missing keys, the
    unexpected keys and every shape mismatch as ``key: checkpoint (a, b) vs model (c, d)``.
    ``strict=False`` (only for callers that document why) turns missing/unexpected keys into
    a warning with the same report; shape mismatches still raise.

    Values are checked too: a tensor with NaN/inf, or an integer/bool tensor where the model has
    floats, is an error naming the keys. ``allow_nonfinite=True`` is the opt-out for people who
    know why their weights hold inf (e.g. masks stored as parameters).
    """
    expected = module.state_dict()
    if not allow_nonfinite:
        problems = _value_problems(expected, state_dict)
        if problems:
            raise CheckpointMismatchError(
                "\n".join([f"checkpoint {source} holds values {type(module).__name__} cannot use:", *problems,
                           "(pass allow_nonfinite=True to load them anyway)"])
            )
    lines, mismatched = _mismatch_lines(expected, state_dict)
    if lines:
        header = f"checkpoint {source} does not match {type(module).__name__}:"
        report = "\n".join([header, *lines])
        if strict or mismatched:
            raise CheckpointMismatchError(report)
        warnings.warn(report + "\n(loaded with strict=False: the listed keys were left untouched)", stacklevel=2)
        state_dict = {k: v for k, v in state_dict.items() if k in expected}
    module.load_state_dict(state_dict, strict=strict)


def _strip_prefix(state_dict: dict[str, Tensor], prefix: str, source: str) -> dict[str, Tensor]:
    selected = {k[len(prefix) :]: v for k, v in state_dict.items() if k.startswith(prefix)}
    if not selected:
        sample = ", ".join(sorted(state_dict)[:5])
        raise ValueError(f"{source}: no key starts with prefix {prefix!r} (keys look like: {sample})")
    return selected


def _common_prefix(keys: list[str]) -> str | None:
    firsts = {k.split(".", 1)[0] for k in keys}
    if len(firsts) == 1 and all("." in k for k in keys):
        return firsts.pop() + "."
    return None


def load_weights_into(
    model: nn.Module,
    name_or_path: str | os.PathLike[str],
    *,
    prefix: str | None = None,
) -> nn.Module:
    """Load weights (only) into ``model`` strictly, for fine-tuning (``--model.init_from``).

    ``name_or_path``: a registered model name (its pretrained directory), a pretrained directory,
    a ``.safetensors`` file, or a Lightning ``.ckpt`` / torch ``.pt``. ``prefix`` selects and
    strips a sub-module's keys (e.g. ``"model."`` for a LightningModule that keeps its network in
    ``self.model``). With ``prefix=None`` a prefix shared by every checkpoint key is stripped when
    the model's own keys do not all start with it. Returns ``model``.
    """
    from .pretrained import WEIGHTS_NAME, find_pretrained
    from .registry import _NAME_RE, model_entry

    path = Path(name_or_path)
    if path.is_dir():
        weights = path / WEIGHTS_NAME
        if not weights.is_file():
            raise ValueError(f"{path}: expected {WEIGHTS_NAME} in this directory (written by zoo.save_pretrained)")
    elif path.is_file():
        weights = path
    elif isinstance(name_or_path, str) and _NAME_RE.match(name_or_path):
        model_entry(name_or_path)  # unknown names fail with close matches
        weights = find_pretrained(name_or_path) / WEIGHTS_NAME
    else:
        raise ValueError(
            f"init weights {str(name_or_path)!r}: not an existing file or directory, nor a model name "
            f"(expected a registered name, a pretrained directory, a .safetensors or a .ckpt file)"
        )
    source = str(weights)
    state_dict = load_checkpoint_file(weights)
    if prefix is None:
        shared = _common_prefix(list(state_dict))
        if shared is not None and not all(k.startswith(shared) for k in model.state_dict()):
            prefix = shared
    elif prefix and not prefix.endswith("."):
        prefix += "."
    if prefix:
        state_dict = _strip_prefix(state_dict, prefix, source)
    try:
        load_state_dict_strict(model, state_dict, source=source)
    except CheckpointMismatchError as err:
        if prefix is None and any(k.startswith("model.") for k in state_dict):
            raise CheckpointMismatchError(
                f"{err}\n(a Lightning checkpoint holds the whole LightningModule: pass prefix='model.' "
                "to take only its `model` attribute)"
            ) from None
        raise
    return model
