"""Pretrained directories: ``model.safetensors`` + ``config.json`` + ``README.md`` (the model card).

- ``model.safetensors``: the weights (no pickle, so loading never runs code);
- ``config.json``: ``{"model": <registered name>, "config": {<factory overrides>}, "zoo_version": ...}``
  plus free metadata; ``create_model(config["model"], **config["config"])`` rebuilds the network.
  Runtime fields (the attention backend) are never written (:mod:`zoo.hub.config`);
- ``README.md``: the model card.

Loading is strict: a missing, unexpected or mis-shaped key raises
:class:`~zoo.hub.checkpoints.CheckpointMismatchError` listing every difference.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .checkpoints import load_checkpoint_file, load_state_dict_strict
from .config import config_to_json, restore_config, to_jsonable
from .registry import _NAME_RE, _REGISTRY, model_entry

__all__ = [
    "WEIGHTS_NAME",
    "CONFIG_NAME",
    "CARD_NAME",
    "checkpoint_dirs",
    "find_pretrained",
    "count_parameters",
    "save_pretrained",
    "load_pretrained",
    "load_pretrained_dir",
    "read_pretrained_config",
]

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"


def checkpoint_dirs() -> list[Path]:
    """Where pretrained directories are looked up: ``$ZOO_CHECKPOINTS`` entries, then ``<repo>/checkpoints``."""
    dirs = [Path(p).expanduser() for p in os.environ.get("ZOO_CHECKPOINTS", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parents[2] / "checkpoints")
    return dirs


def find_pretrained(name: str) -> Path:
    """The first ``<dir>/<name>/`` holding a ``config.json`` on :func:`checkpoint_dirs`."""
    searched = [d / name for d in checkpoint_dirs()]
    for candidate in searched:
        if (candidate / CONFIG_NAME).is_file():
            return candidate
    raise ValueError(
        f"no pretrained checkpoint for {name!r}: none of {', '.join(str(p) for p in searched)} holds "
        f"{CONFIG_NAME} + {WEIGHTS_NAME} (set ZOO_CHECKPOINTS to add directories, or train one and "
        "write it with zoo.save_pretrained)"
    )


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters, shared ones counted once."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _default_card(name: str, model: nn.Module, config: dict[str, Any], metadata: dict[str, Any]) -> str:
    description = _REGISTRY[name].description if name in _REGISTRY else ""
    lines = [f"# {name}", ""]
    if description:
        lines += [description, ""]
    lines += [
        f"- architecture: `{type(model).__module__}.{type(model).__qualname__}`",
        f"- parameters: {count_parameters(model):,}",
    ]
    lines += [f"- {key}: {value}" for key, value in metadata.items()]
    lines += [
        "",
        "## Config",
        "",
        "```json",
        json.dumps(config, indent=2, sort_keys=True),
        "```",
        "",
        "## Usage",
        "",
        "```python",
        "import zoo",
        "",
        f'model = zoo.load_pretrained("<this directory>")  # or zoo.create_model("{name}", pretrained=True)',
        "```",
        "",
    ]
    return "\n".join(lines)


def _tensors_for_safetensors(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Contiguous CPU tensors that own their storage.

    safetensors refuses tensors that share memory (tied weights such as an embedding reused as
    the output projection appear under two keys of one storage). Each shared or partial-view
    tensor is cloned, so the file stores the tied values under every key; loading copies them
    back into the one shared parameter, so the tie itself lives in the model code, not the file.
    """
    seen: dict[tuple[torch.device, int], str] = {}
    out: dict[str, Tensor] = {}
    for key, tensor in state_dict.items():
        if not isinstance(tensor, Tensor):
            raise ValueError(f"state dict entry {key!r} is a {type(tensor).__name__}, expected a tensor")
        tensor = tensor.detach()
        storage = tensor.untyped_storage()
        ident = (tensor.device, storage.data_ptr())
        owns = tensor.is_contiguous() and storage.nbytes() == tensor.numel() * tensor.element_size()
        if ident in seen or not owns:
            tensor = tensor.contiguous().clone()
        else:
            seen[ident] = key
        out[key] = tensor.cpu()
    return out


def save_pretrained(
    model: nn.Module,
    directory: str | os.PathLike[str],
    *,
    name: str,
    config: dict[str, Any] | Any | None = None,
    card: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors``, ``config.json`` and ``README.md`` into ``directory``.

    ``name`` is the registered model the weights belong to and ``config`` the overrides that
    rebuild it: a dict of factory overrides or a config dataclass (all its fields become
    overrides). With ``config=None`` a dataclass ``model.config`` is used when the model has one,
    else no overrides (the registered default variant). Runtime fields such as
    ``attention_backend`` are left out. ``metadata`` (JSON values) is merged into ``config.json``
    (e.g. metrics, dataset, training command). ``card`` is the model card; a short one is generated
    from the name, config and parameter count when it is None. Returns the directory.
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"save_pretrained: name {name!r} must be a registered model name (lowercase, _)")
    if config is None:
        own = getattr(model, "config", None)
        config = own if dataclasses.is_dataclass(own) and not isinstance(own, type) else {}
    config_json = config_to_json(config, "save_pretrained: config")
    metadata_json = to_jsonable(metadata or {}, "metadata")
    reserved = {"model", "config", "zoo_version"} & set(metadata_json)
    if reserved:
        raise ValueError(f"save_pretrained: metadata keys {sorted(reserved)} are reserved")

    from safetensors.torch import save_file

    from .. import __version__

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    save_file(
        _tensors_for_safetensors(model.state_dict()),
        str(directory / WEIGHTS_NAME),
        metadata={"format": "pt", "model": name},
    )
    payload = {"model": name, "config": config_json, "zoo_version": __version__, **metadata_json}
    (directory / CONFIG_NAME).write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    if card is None:
        card = _default_card(name, model, config_json, metadata_json)
    (directory / CARD_NAME).write_text(card if card.endswith("\n") else card + "\n")
    return directory


def read_pretrained_config(directory: Path) -> dict[str, Any]:
    """The parsed ``config.json`` of a pretrained directory; every problem names the file."""
    config_path = Path(directory) / CONFIG_NAME
    if not config_path.is_file():
        raise ValueError(
            f"{directory} is not a pretrained directory: {CONFIG_NAME} is missing "
            f"(expected {CONFIG_NAME} + {WEIGHTS_NAME}, as written by zoo.save_pretrained)"
        )
    try:
        config = json.loads(config_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{config_path}: invalid JSON ({err})") from err
    if (
        not isinstance(config, dict)
        or not isinstance(config.get("model"), str)
        or not isinstance(config.get("config", {}), dict)
    ):
        raise ValueError(
            f'{config_path}: expected an object {{"model": <registered name>, "config": {{...overrides}}}}'
        )
    return config


def load_pretrained_dir(
    directory: Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
    strict: bool = True,
    expect: str | None = None,
) -> nn.Module:
    """Rebuild and strictly load the model of a pretrained ``directory``.

    ``expect``: the registered name the caller asked for; a ``config.json`` naming another model is
    an error (``create_model(name, pretrained=True)`` never returns a different family).
    """
    config = read_pretrained_config(directory)
    if expect is not None and config["model"] != expect:
        raise ValueError(
            f"{Path(directory) / CONFIG_NAME} holds weights of {config['model']!r}, not of the requested {expect!r}"
        )
    weights = Path(directory) / WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(f"{directory} is not a pretrained directory: {WEIGHTS_NAME} is missing")
    try:
        entry = model_entry(config["model"])
    except ValueError as err:
        raise ValueError(f"{Path(directory) / CONFIG_NAME}: {err}") from None
    saved = restore_config(entry.config_cls, config.get("config", {}))
    model = entry.factory(pretrained=False, **{**saved, **(overrides or {})})
    state_dict = load_checkpoint_file(weights)
    load_state_dict_strict(model, state_dict, source=str(weights), strict=strict)
    return model.to(map_location)


def load_pretrained(
    name_or_dir: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    strict: bool = True,
    **overrides: Any,
) -> nn.Module:
    """Rebuild a model from a pretrained directory and load its weights strictly.

    ``name_or_dir`` is a directory path, or a registered name looked up as ``<dir>/<name>/`` on
    :func:`checkpoint_dirs`. ``overrides`` change config fields that do not alter the weights'
    shapes (``attention_backend``, dropout). ``strict=False`` tolerates missing/unexpected keys but
    warns with the full list (shape mismatches always raise).
    """
    path = Path(name_or_dir)
    if path.is_dir():
        directory = path
    elif isinstance(name_or_dir, str) and _NAME_RE.match(name_or_dir):
        directory = find_pretrained(name_or_dir)
    else:
        raise ValueError(
            f"load_pretrained: {str(name_or_dir)!r} is neither an existing directory nor a model name "
            f"(expected a directory with {CONFIG_NAME} + {WEIGHTS_NAME}, or a name from zoo.list_models())"
        )
    return load_pretrained_dir(directory, overrides=overrides, map_location=map_location, strict=strict)
