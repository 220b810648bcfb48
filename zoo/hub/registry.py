"""The model registry: one ``register_family`` call per architecture family, built by name.

A family registers its named variants, which are data (config dataclass instances), with the one
function that builds a network from a config::

    register_family(
        CONFIGS,                       # {"music_transformer_jsb": MusicTransformerConfig(...), ...}
        MusicTransformer,              # config -> nn.Module
        description={"music_transformer_jsb": "the paper's JSB config", ...},
        test_overrides=dict(d_model=32, num_layers=1),   # a tiny variant for the registry tests
        test_input=lambda model: ((torch.randint(0, model.config.vocab_size, (2, 12)),), {}),
        tokenizer=..., sampler=...,    # what generation needs (sequence models)
        official=convert_official,     # official state dict -> ours, for zoo.load_official
    )

and users build them by name::

    zoo.list_models("music_*")
    model = zoo.create_model("music_transformer_chorales", dropout=0.0)
    model = zoo.create_model("music_transformer_chorales", pretrained=True)   # checkpoints/<name>/

The modules in ``_MODEL_MODULES`` (every ``zoo/<domain>/<task>/models/`` package) are imported on the first call that needs the full registry
(``list_models``, or ``create_model`` with a name not registered yet), never by ``import zoo``.
"""

from __future__ import annotations

import dataclasses
import difflib
import fnmatch
import functools
import importlib
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

__all__ = [
    "ModelEntry",
    "register_family",
    "register_model",
    "list_models",
    "model_entry",
    "create_model",
    "registered_config_classes",
]



def _task_model_modules() -> tuple[str, ...]:
    """``zoo.<domain>.<task>.models`` for every task package that has a ``models/`` package.

    A new task registers its models by existing: no list here to edit, so families written side by
    side never touch the same line.
    """
    root = Path(__file__).resolve().parents[1]  # the zoo package
    found = sorted(p.parent.relative_to(root.parent) for p in root.glob("*/*/models/__init__.py"))
    return tuple(".".join(path.parts) for path in found)


# Modules whose import registers models. Imported lazily, once, by the registry functions.
_MODEL_MODULES: tuple[str, ...] = _task_model_modules()

_NAME_RE = re.compile(r"^[a-z][a-z0-9_]*$")

TestInput = Callable[[nn.Module], tuple[tuple[Any, ...], dict[str, Any]]]
#: ``state_dict, model -> state_dict`` in the model's own key layout (renames, folds, drops)
OfficialConverter = Callable[[dict[str, Any], nn.Module], dict[str, Any]]


@dataclass(frozen=True)
class ModelEntry:
    """What the registry knows about one named model.

    ``test_overrides`` and ``test_input`` feed ``tests/test_models.py``: the overrides make a tiny
    variant, and ``test_input(model)`` returns ``(args, kwargs)`` for one forward pass of it.
    ``tokenizer(model)`` builds the tokenizer a sequence model reads and writes, and
    ``sampler(model, tokenizer, primer, options)`` continues a primer (``python -m zoo.music.generate``).
    ``official(state_dict, model)`` converts the paper's official checkpoint (``zoo.load_official``).
    """

    name: str
    factory: Callable[..., nn.Module]
    module: str
    config_cls: type | None = None
    config: Any = None
    description: str = ""
    test_overrides: dict[str, Any] | None = None
    test_input: TestInput | None = None
    tokenizer: Callable[[nn.Module], Any] | None = None
    sampler: Callable[..., Any] | None = None
    official: OfficialConverter | None = None


_REGISTRY: dict[str, ModelEntry] = {}
_IMPORTED_MODULES: set[str] = set()


def _add(entry: ModelEntry, origin: tuple[str, str]) -> None:
    previous = _REGISTRY.get(entry.name)
    # The same definition registering again is a re-import (importlib.reload, or a retry after the
    # module failed half-way through its first import), not a clash.
    if previous is not None and (previous.module, previous.factory.__qualname__) != origin:
        raise ValueError(f"model name {entry.name!r} is registered twice: by {previous.module} and by {origin[0]}")
    _REGISTRY[entry.name] = entry


def _check_name(name: str) -> None:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"model name {name!r}: expected lowercase letters, digits and underscores")


def _wrap_factory(name: str, fn: Callable[..., nn.Module], config_cls: type | None) -> Callable[..., nn.Module]:
    @functools.wraps(fn)
    def factory(pretrained: bool = False, **overrides: Any) -> nn.Module:
        if pretrained:
            from .pretrained import find_pretrained, load_pretrained_dir

            return load_pretrained_dir(find_pretrained(name), overrides=overrides, expect=name)
        _check_overrides(name, config_cls, overrides)
        return fn(**overrides)

    return factory


def register_model(
    name: str,
    *,
    config_cls: type | None = None,
    config: Any = None,
    description: str = "",
    test_overrides: dict[str, Any] | None = None,
    test_input: TestInput | None = None,
    tokenizer: Callable[[nn.Module], Any] | None = None,
    sampler: Callable[..., Any] | None = None,
    official: OfficialConverter | None = None,
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Decorator registering one factory ``fn(**overrides) -> nn.Module`` as ``name``.

    Families use :func:`register_family`; this is the single-model form it is built on. With
    ``config_cls`` (or ``config``, its default instance) unknown overrides are rejected with the valid
    field names, and ``config.json`` values are restored to the field types. The returned function
    is the factory wrapped so that ``fn(pretrained=True)`` loads ``checkpoints/<name>/``.
    """
    _check_name(name)
    if config is not None and config_cls is None:
        config_cls = type(config)
    if config_cls is not None and not dataclasses.is_dataclass(config_cls):
        raise ValueError(f"register_model({name!r}): config_cls must be a dataclass type, got {config_cls!r}")
    if test_overrides is not None and not isinstance(test_overrides, dict):
        raise ValueError(f"register_model({name!r}): test_overrides must be a dict, got {test_overrides!r}")

    def decorator(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        factory = _wrap_factory(name, fn, config_cls)
        entry = ModelEntry(
            name=name, factory=factory, module=fn.__module__, config_cls=config_cls, config=config,
            description=description, test_overrides=dict(test_overrides) if test_overrides is not None else None,
            test_input=test_input, tokenizer=tokenizer, sampler=sampler, official=official,
        )
        _add(entry, (fn.__module__, fn.__qualname__))
        return factory

    return decorator


def register_family(
    configs: Mapping[str, Any],
    build: Callable[[Any], nn.Module],
    *,
    description: str | Mapping[str, str] = "",
    test_overrides: dict[str, Any] | None = None,
    test_input: TestInput | None = None,
    tokenizer: Callable[[nn.Module], Any] | None = None,
    sampler: Callable[..., Any] | None = None,
    official: OfficialConverter | None = None,
) -> None:
    """Register every variant of one family: ``configs`` maps registered names to config dataclass
    instances and ``build(config)`` makes the network; ``create_model(name, **overrides)`` builds
    ``build(dataclasses.replace(configs[name], **overrides))``.

    ``description`` is one line for all variants or a dict with one per name (a name it lacks is an
    error, so no variant goes undescribed). The other arguments apply to every variant (see
    :class:`ModelEntry`).
    """
    if not configs:
        raise ValueError(f"register_family({getattr(build, '__qualname__', build)!r}): no configs given")
    if isinstance(description, Mapping):
        undescribed = sorted(set(configs) - set(description))
        if undescribed:
            raise ValueError(f"register_family: no description for {undescribed}")
    module = getattr(build, "__module__", None) or "unknown"
    for name, config in configs.items():
        _check_name(name)
        if not dataclasses.is_dataclass(config) or isinstance(config, type):
            raise ValueError(f"register_family: configs[{name!r}] must be a config dataclass instance, got {config!r}")

        def fn(_config: Any = config, _name: str = name, **overrides: Any) -> nn.Module:
            try:
                variant = dataclasses.replace(_config, **overrides)
            except (TypeError, ValueError) as err:  # the config's own __post_init__ checks
                raise ValueError(f"create_model({_name!r}): invalid config: {err}") from None
            return build(variant)

        fn.__module__ = module
        fn.__name__ = name
        fn.__qualname__ = f"{getattr(build, '__qualname__', 'build')}[{name}]"
        factory = _wrap_factory(name, fn, type(config))
        text = description[name] if isinstance(description, Mapping) else description
        entry = ModelEntry(
            name=name, factory=factory, module=module, config_cls=type(config), config=config, description=text,
            test_overrides=dict(test_overrides) if test_overrides is not None else None, test_input=test_input,
            tokenizer=tokenizer, sampler=sampler, official=official,
        )
        _add(entry, (module, fn.__qualname__))


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
            "cannot import the model modules listed in zoo.hub.registry._MODEL_MODULES, so their models are not "
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

    ``pretrained=True`` loads the directory ``<name>/`` found on :func:`zoo.hub.checkpoint_dirs`
    (rebuilt from its ``config.json``, then updated with ``overrides``).
    """
    return model_entry(name).factory(pretrained=pretrained, **overrides)


def registered_config_classes() -> list[type]:
    """The config dataclasses of every registered model (plain data: safe to allow in ``torch.load``)."""
    return sorted({e.config_cls for e in _REGISTRY.values() if e.config_cls is not None}, key=lambda c: c.__qualname__)


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
    hints = _hints(config_cls)
    problems = [p for key, value in overrides.items() if (p := _value_problem(key, value, hints.get(key, Any)))]
    if problems:
        raise ValueError(f"create_model({name!r}): " + "; ".join(problems))


def _hints(cls: type) -> dict[str, Any]:
    from .config import field_hints

    return field_hints(cls)


_DROPOUT_WORDS = ("dropout", "drop_rate", "drop_path_rate")


def _value_problem(key: str, value: Any, hint: Any) -> str | None:
    """Why ``value`` does not fit the field ``key: hint`` (type, or an impossible number), or None."""
    if not _matches(value, hint):
        return f"{key}={value!r} is not of type {_describe(hint)}"
    for number in _numbers(value):
        if isinstance(number, float) and not math.isfinite(number):
            return f"{key}={value!r} must be finite"
        if isinstance(number, int) and number < 0:
            return f"{key}={value!r} must not be negative"
        if any(w in key for w in _DROPOUT_WORDS) and not 0 <= number < 1:
            return f"{key}={value!r} must lie in [0, 1)"
    return None


def _numbers(value: Any) -> list[int | float]:
    if isinstance(value, bool):
        return []
    if isinstance(value, (int, float)):
        return [value]
    if isinstance(value, (list, tuple)):
        return [n for v in value for n in _numbers(v)]
    return []


def _matches(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if hint is tuple or origin is tuple:
        if not isinstance(value, (tuple, list)):
            return False
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_matches(v, args[0]) for v in value)
        return not args or (len(args) == len(value) and all(_matches(v, a) for v, a in zip(value, args)))
    if origin is list:
        (arg,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_matches(v, arg) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True  # a hint we do not interpret: the config's own checks decide


def _describe(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")
