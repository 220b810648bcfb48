"""The config codec: model configs (dataclasses of plain values) to and from ``config.json``.

JSON loses two things a config dataclass has, tuples and nested dataclasses; :func:`restore_config`
brings them back from the field type hints. Two rules keep saved configs about the *model* only:

- **runtime fields are never saved**: ``attention_backend`` picks a kernel for this machine, it does
  not change the function the weights compute (STYLE: runtime choices are not model identity). A
  loaded model gets the config's default, or what the caller passes as an override;
- **one name everywhere**: the attention backend field is ``attention_backend`` in every config.
  Older files wrote ``backend``; it is still read (and, being runtime-only, dropped).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from collections.abc import Mapping
from typing import Any

__all__ = ["RUNTIME_FIELDS", "LEGACY_FIELDS", "config_to_json", "restore_config", "to_jsonable", "dataclass_from_dict"]

#: config fields that choose how to run, not what to compute: never written to config.json
RUNTIME_FIELDS: tuple[str, ...] = ("attention_backend",)
#: old field name -> current one, for files written before the rename
LEGACY_FIELDS: dict[str, str] = {"backend": "attention_backend"}


def to_jsonable(value: Any, where: str) -> Any:
    """Plain JSON types from a config value; dataclasses become dicts and tuples lists."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_jsonable(getattr(value, f.name), f"{where}.{f.name}") for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"config {where}: JSON object keys must be strings, got {key!r}")
            out[key] = to_jsonable(item, f"{where}.{key}")
        return out
    if isinstance(value, (list, tuple)):
        return [to_jsonable(item, f"{where}[{i}]") for i, item in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"config {where}: {value!r} is not representable in JSON")
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(
        f"config {where}: {type(value).__name__} value {value!r} is not JSON-serializable; "
        "configs hold numbers, strings, booleans, None, lists/tuples, dicts and dataclasses"
    )


def config_to_json(config: Any, where: str = "config") -> dict[str, Any]:
    """A config dataclass or an overrides dict as a JSON object, without the runtime fields."""
    out = to_jsonable(config, where)
    if not isinstance(out, dict):
        raise ValueError(f"{where} must be a dict or a dataclass, got {type(config).__name__}")
    return {k: v for k, v in out.items() if k not in RUNTIME_FIELDS}


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
        return dataclass_from_dict(hint, value)
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


def field_hints(cls: type) -> dict[str, Any]:
    try:
        return typing.get_type_hints(cls)
    except Exception:  # unresolvable forward references: fall back to no coercion
        return {}


def dataclass_from_dict(cls: type, data: dict[str, Any]) -> Any:
    hints = field_hints(cls)
    return cls(**{k: _coerce(v, hints.get(k, Any)) for k, v in data.items()})


def restore_config(config_cls: type | None, saved: Mapping[str, Any]) -> dict[str, Any]:
    """Overrides read from ``config.json`` as the config class's field types, legacy names renamed
    and runtime fields dropped."""
    fields = {f.name for f in dataclasses.fields(config_cls)} if config_cls is not None else set()
    renamed: dict[str, Any] = {}
    for key, value in saved.items():
        new = LEGACY_FIELDS.get(key)
        if new is not None and key not in fields and (config_cls is None or new in fields):
            key = new
        if key in RUNTIME_FIELDS:
            continue
        renamed[key] = value
    if config_cls is None:
        return renamed
    hints = field_hints(config_cls)
    return {k: _coerce(v, hints.get(k, Any)) for k, v in renamed.items()}
