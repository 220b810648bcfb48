"""Model registry, pretrained directories and strict, safe checkpoint loading.

A model family registers one factory per named variant in its own file::

    @register_model(
        "music_transformer_chorales",
        config_cls=MusicTransformerConfig,
        description="Music Transformer on JSB Chorales (Huang et al. 2018)",
        test_overrides=dict(dim=32, depth=1, num_heads=2),
        test_input=lambda model: ((torch.randint(0, model.config.vocab_size, (2, 16)),), {}),
    )
    def music_transformer_chorales(pretrained: bool = False, **overrides) -> MusicTransformer:
        return MusicTransformer(replace(CONFIGS["chorales"], **overrides))

and users build it by name::

    zoo.list_models("music_*")
    model = zoo.create_model("music_transformer_chorales", dropout=0.0)
    model = zoo.create_model("music_transformer_chorales", pretrained=True)   # checkpoints/<name>/

The modules in ``_MODEL_MODULES`` are imported on the first call that needs the full registry
(``list_models``, or ``create_model`` with a name not registered yet), never by ``import zoo``.

A pretrained directory holds three files:

- ``model.safetensors``: the weights (no pickle, so loading never runs code);
- ``config.json``: ``{"model": <registered name>, "config": {<factory overrides>}, "zoo_version": ...}``
  plus free metadata; ``create_model(config["model"], **config["config"])`` rebuilds the network;
- ``README.md``: the model card.

Loading is strict everywhere: a missing, unexpected or mis-shaped key raises
:class:`CheckpointMismatchError` listing every difference. Pickle-based files (``.ckpt``, ``.pth``,
``.pt``, ``.bin``) go through ``torch.load(weights_only=True)``, which refuses anything but tensors
and plain containers.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import importlib
import json
import math
import os
import pickle
import re
import types
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "CheckpointMismatchError",
    "ModelEntry",
    "register_model",
    "list_models",
    "model_entry",
    "create_model",
    "checkpoint_dirs",
    "find_pretrained",
    "save_pretrained",
    "load_pretrained",
    "load_checkpoint_file",
    "load_state_dict_strict",
    "load_weights_into",
    "count_parameters",
]

# Modules whose import registers models. Imported lazily, once, by the registry functions.
_MODEL_MODULES: tuple[str, ...] = ("zoo.music.models", "zoo.vision.classification")

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
CARD_NAME = "README.md"
PICKLE_SUFFIXES = (".ckpt", ".pth", ".pt", ".bin")
# Longest list printed per category in a mismatch report; the rest is counted.
_MAX_LISTED = 25

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

TestInput = Callable[[nn.Module], tuple[tuple[Any, ...], dict[str, Any]]]


class CheckpointMismatchError(ValueError):
    """A state dict does not fit a module: lists every missing, unexpected and mis-shaped key."""


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one named model.

    ``test_overrides`` and ``test_input`` feed ``tests/test_models.py``: the overrides make a tiny
    variant, and ``test_input(model)`` returns ``(args, kwargs)`` for one forward pass of it.
    """

    name: str
    factory: Callable[..., nn.Module]
    module: str
    config_cls: type | None = None
    config: Any = None
    description: str = ""
    test_overrides: dict[str, Any] | None = None
    test_input: TestInput | None = None


_REGISTRY: dict[str, ModelEntry] = {}
_IMPORTED_MODULES: set[str] = set()


# --------------------------------------------------------------------------------------------
# registry


def register_model(
    name: str,
    *,
    config_cls: type | None = None,
    config: Any = None,
    description: str = "",
    test_overrides: dict[str, Any] | None = None,
    test_input: TestInput | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering ``fn(pretrained: bool = False, **overrides) -> nn.Module`` as ``name``.

    Args:
        name: lowercase letters, digits and underscores; unique across the zoo.
        config_cls: the config dataclass the overrides are fields of. When given, unknown
            overrides are rejected with the valid field names, and ``config.json`` values are
            restored to the field types (JSON lists back to tuples, dicts back to dataclasses).
        config: the variant's default config instance (implies ``config_cls=type(config)``);
            shown in generated model cards.
        description: one line for listings and model cards.
        test_overrides: overrides that make a tiny variant for the registry-driven tests.
        test_input: ``fn(model) -> (args, kwargs)`` giving a small input for ``model(*args, **kwargs)``.

    The returned function is the factory wrapped so that ``fn(pretrained=True)`` loads
    ``checkpoints/<name>/`` exactly like ``create_model(name, pretrained=True)``.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"model name {name!r}: expected lowercase letters, digits and underscores")
    if config is not None and config_cls is None:
        config_cls = type(config)
    if config_cls is not None and not dataclasses.is_dataclass(config_cls):
        raise ValueError(f"register_model({name!r}): config_cls must be a dataclass type, got {config_cls!r}")
    if test_overrides is not None and not isinstance(test_overrides, dict):
        raise ValueError(f"register_model({name!r}): test_overrides must be a dict, got {test_overrides!r}")

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        previous = _REGISTRY.get(name)
        # The same definition registering again is a re-import (importlib.reload, or a retry after
        # the module failed half-way through its first import), not a clash.
        origin = (fn.__module__, fn.__qualname__)
        if previous is not None and (previous.module, previous.factory.__qualname__) != origin:
            raise ValueError(
                f"model name {name!r} is registered twice: by {_REGISTRY[name].module} and by {fn.__module__}"
            )

        @functools.wraps(fn)
        def factory(pretrained: bool = False, **overrides: Any) -> nn.Module:
            if pretrained:
                return _load_pretrained_dir(find_pretrained(name), overrides=overrides)
            _check_overrides(name, config_cls, overrides)
            return fn(**overrides)

        _REGISTRY[name] = ModelEntry(
            name=name,
            factory=factory,
            module=fn.__module__,
            config_cls=config_cls,
            config=config,
            description=description,
            test_overrides=dict(test_overrides) if test_overrides is not None else None,
            test_input=test_input,
        )
        return factory

    return decorator


def _import_model_modules() -> None:
    """Import every module of ``_MODEL_MODULES`` not imported yet; raise one ImportError for all failures."""
    failures: list[str] = []
    for module_name in _MODEL_MODULES:
        if module_name in _IMPORTED_MODULES:
            continue
        try:
            importlib.import_module(module_name)
        except ImportError as err:
            failures.append(f"{module_name}: {type(err).__name__}: {err}")
            continue
        _IMPORTED_MODULES.add(module_name)
    if failures:
        raise ImportError(
            "cannot import the model modules listed in zoo.hub._MODEL_MODULES, so their models are not "
            "registered:\n  " + "\n  ".join(failures)
        )


def list_models(pattern: str = "*") -> list[str]:
    """Sorted names of the registered models matching the fnmatch ``pattern``."""
    _import_model_modules()
    return sorted(n for n in _REGISTRY if fnmatch.fnmatchcase(n, pattern))


def model_entry(name: str) -> ModelEntry:
    """The registry entry of ``name``; unknown names raise a ValueError with close matches."""
    if name not in _REGISTRY:
        _import_model_modules()
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=5, cutoff=0.5)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown model {name!r}{hint} ({len(_REGISTRY)} models registered; see zoo.list_models())")
    return _REGISTRY[name]


def create_model(name: str, pretrained: bool = False, **overrides: Any) -> nn.Module:
    """Build the registered model ``name`` with config ``overrides``.

    ``pretrained=True`` loads the directory ``<name>/`` found on :func:`checkpoint_dirs`
    (rebuilt from its ``config.json``, then updated with ``overrides``).
    """
    return model_entry(name).factory(pretrained=pretrained, **overrides)


def _check_overrides(name: str, config_cls: type | None, overrides: Mapping[str, Any]) -> None:
    if config_cls is None:
        return
    fields = [f.name for f in dataclasses.fields(config_cls)]
    unknown = sorted(set(overrides) - set(fields))
    if unknown:
        parts = []
        for key in unknown:
            close = difflib.get_close_matches(key, fields, n=3)
            parts.append(f"{key!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
        raise ValueError(
            f"create_model({name!r}): unknown config override {', '.join(parts)}; "
            f"{config_cls.__name__} fields are: {', '.join(fields)}"
        )


# --------------------------------------------------------------------------------------------
# config <-> JSON


def _to_jsonable(value: Any, where: str) -> Any:
    """Plain JSON types from a config value; dataclasses become dicts and tuples lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_jsonable(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"config {where}: JSON object keys must be strings, got {key!r}")
            out[key] = _to_jsonable(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [_to_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"config {where}: {value!r} is not representable in JSON")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(
        f"config {where}: {type(value).__name__} value {value!r} is not JSON-serializable; "
        "configs hold numbers, strings, booleans, None, lists/tuples, dicts and dataclasses"
    )


def _coerce(value: Any, hint: Any) -> Any:
    """Undo the JSON lossy steps (tuple -> list, dataclass -> dict) using a type hint."""
    if value is None or hint is Any:
        return value
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(hint):
            if arg is type(None):
                continue
            coerced = _coerce(value, arg)
            if coerced is not value:
                return coerced
        return value
    if isinstance(hint, type) and dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return _dataclass_from_dict(hint, value)
    if (hint is tuple or origin is tuple) and isinstance(value, list):
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if args and len(args) == len(value):
            return tuple(_coerce(v, a) for v, a in zip(value, args))
        return tuple(value)
    if origin is list and isinstance(value, list):
        (arg,) = typing.get_args(hint) or (Any,)
        return [_coerce(v, arg) for v in value]
    if origin is dict and isinstance(value, dict):
        args = typing.get_args(hint)
        return {k: _coerce(v, args[1]) for k, v in value.items()} if args else value
    return value


def _field_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # unresolvable forward references: fall back to no coercion
        return {}


def _dataclass_from_dict(cls: type, data: dict[str, Any]) -> Any:
    hints = _field_hints(cls)
    return cls(**{k: _coerce(v, hints.get(k, Any)) for k, v in data.items()})


def _restore_overrides(entry: ModelEntry, overrides: dict[str, Any]) -> dict[str, Any]:
    if entry.config_cls is None:
        return dict(overrides)
    hints = _field_hints(entry.config_cls)
    return {k: _coerce(v, hints.get(k, Any)) for k, v in overrides.items()}


# --------------------------------------------------------------------------------------------
# pretrained directories


def checkpoint_dirs() -> list[Path]:
    """Where pretrained directories are looked up: ``$ZOO_CHECKPOINTS`` entries, then ``<repo>/checkpoints``."""
    dirs = [Path(p).expanduser() for p in os.environ.get("ZOO_CHECKPOINTS", "").split(os.pathsep) if p]
    dirs.append(Path(__file__).resolve().parents[1] / "checkpoints")
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
    else no overrides (the registered default variant). ``metadata`` (JSON values) is merged into
    ``config.json`` (e.g. metrics, dataset, training command). ``card`` is the model card;
    a short one is generated from the name, config and parameter count when it is None.
    Returns the directory.
    """
    if not _NAME_RE.match(name):
        raise ValueError(f"save_pretrained: name {name!r} must be a registered model name (lowercase, _)")
    if config is None:
        own = getattr(model, "config", None)
        config = own if dataclasses.is_dataclass(own) and not isinstance(own, type) else {}
    config_json = _to_jsonable(config, "config")
    if not isinstance(config_json, dict):
        raise ValueError(f"save_pretrained: config must be a dict or a dataclass, got {type(config).__name__}")
    metadata_json = _to_jsonable(metadata or {}, "metadata")
    reserved = {"model", "config", "zoo_version"} & set(metadata_json)
    if reserved:
        raise ValueError(f"save_pretrained: metadata keys {sorted(reserved)} are reserved")

    from safetensors.torch import save_file

    from . import __version__

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


def _read_pretrained_config(directory: Path) -> dict[str, Any]:
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise ValueError(
            f"{directory} is not a pretrained directory: {CONFIG_NAME} is missing "
            f"(expected {CONFIG_NAME} + {WEIGHTS_NAME}, as written by zoo.save_pretrained)"
        )
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
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


def _load_pretrained_dir(
    directory: Path,
    *,
    overrides: Mapping[str, Any] | None = None,
    map_location: str | torch.device = "cpu",
    strict: bool = True,
) -> nn.Module:
    config = _read_pretrained_config(directory)
    weights = directory / WEIGHTS_NAME
    if not weights.is_file():
        raise ValueError(f"{directory} is not a pretrained directory: {WEIGHTS_NAME} is missing")
    entry = model_entry(config["model"])
    saved = _restore_overrides(entry, config.get("config", {}))
    model = entry.factory(pretrained=False, **{**saved, **(overrides or {})})
    state_dict = load_checkpoint_file(weights)
    load_state_dict_strict(model, state_dict, source=str(weights), strict=strict)
    return model.to(map_location)


def load_pretrained(
    name_or_dir: str | os.PathLike[str],
    *,
    map_location: str | torch.device = "cpu",
    strict: bool = True,
) -> nn.Module:
    """Rebuild a model from a pretrained directory and load its weights strictly.

    ``name_or_dir`` is a directory path, or a registered name looked up as ``<dir>/<name>/`` on
    :func:`checkpoint_dirs`. ``strict=False`` tolerates missing/unexpected keys but warns with the
    full list (shape mismatches always raise).
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
    return _load_pretrained_dir(directory, map_location=map_location, strict=strict)


# --------------------------------------------------------------------------------------------
# checkpoint files and strict loading


def _safe_globals() -> list[Any]:
    # Registered config dataclasses are our own plain-data classes: allowing them lets Lightning
    # checkpoints whose hyper_parameters hold a config load with weights_only=True.
    return [e.config_cls for e in _REGISTRY.values() if e.config_cls is not None]


def load_checkpoint_file(path: str | os.PathLike[str]) -> dict[str, Tensor]:
    """Read a state dict from ``.safetensors`` or a pickle file (``.ckpt``/``.pth``/``.pt``/``.bin``).

    Pickle files are read with ``torch.load(weights_only=True)``: anything but tensors and plain
    containers is refused without being executed. A Lightning checkpoint gives its ``state_dict``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"checkpoint file {path} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as err:  # safetensors raises its own SafetensorError for corrupt headers
            raise ValueError(f"{path}: not a readable safetensors file ({err})") from err
    if suffix not in PICKLE_SUFFIXES:
        raise ValueError(
            f"checkpoint file {path}: unknown format {suffix!r}; expected .safetensors or one of "
            f"{', '.join(PICKLE_SUFFIXES)}"
        )
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"{path}: refused by torch.load(weights_only=True): the file holds objects other than tensors "
            f"and plain containers, and loading it could run arbitrary code. Details: {err}"
        ) from err
    except (RuntimeError, EOFError, OSError) as err:
        raise ValueError(f"{path}: not a readable torch checkpoint ({err})") from err
    if isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        obj = obj["state_dict"]  # Lightning checkpoint
    if not isinstance(obj, Mapping) or not all(isinstance(v, Tensor) for v in obj.values()):
        keys = list(obj)[:10] if isinstance(obj, Mapping) else type(obj).__name__
        raise ValueError(
            f"{path}: expected a state dict (name -> tensor) or a Lightning checkpoint with 'state_dict', got {keys}"
        )
    return dict(obj)


def _format_list(singular: str, plural: str, items: list[str], note: str = "") -> list[str]:
    if not items:
        return []
    lines = [f"  {len(items)} {singular if len(items) == 1 else plural}{note}:"]
    lines += [f"    {item}" for item in items[:_MAX_LISTED]]
    if len(items) > _MAX_LISTED:
        lines.append(f"    ... and {len(items) - _MAX_LISTED} more")
    return lines


def _shape(t: Tensor) -> str:
    return str(tuple(t.shape))


def load_state_dict_strict(
    module: nn.Module,
    state_dict: Mapping[str, Tensor],
    *,
    source: str,
    strict: bool = True,
) -> None:
    """Load ``state_dict`` into ``module``, raising :class:`CheckpointMismatchError` on any difference.

    The error lists (sorted, counted, truncated after 25 per kind) the missing keys, the
    unexpected keys and every shape mismatch as ``key: checkpoint (a, b) vs model (c, d)``.
    ``strict=False`` (only for callers that document why) turns missing/unexpected keys into
    a warning with the same report; shape mismatches still raise.
    """
    expected = module.state_dict()
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    mismatched = sorted(
        f"{key}: checkpoint {_shape(state_dict[key])} vs model {_shape(expected[key])}"
        for key in set(expected) & set(state_dict)
        if state_dict[key].shape != expected[key].shape
    )
    lines = (
        _format_list("missing key", "missing keys", missing, " (in the model, not in the checkpoint)")
        + _format_list("unexpected key", "unexpected keys", unexpected, " (in the checkpoint, not in the model)")
        + _format_list("shape mismatch", "shape mismatches", mismatched)
    )
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
