"""The hub: model registry, config codec, pretrained directories and strict checkpoint I/O.

- :mod:`zoo.hub.registry`: ``register_family`` / ``register_model``, ``create_model``, ``list_models``;
- :mod:`zoo.hub.config`: configs to and from ``config.json`` (runtime fields never saved);
- :mod:`zoo.hub.pretrained`: ``save_pretrained`` / ``load_pretrained``, model cards, search path;
- :mod:`zoo.hub.checkpoints`: safe file reading, strict loading, ``load_official``.
"""

from .checkpoints import (
    CheckpointMismatchError,
    load_checkpoint_file,
    load_official,
    load_state_dict_strict,
    load_weights_into,
    read_official_file,
    strict_filter,
    unwrap_state_dict,
)
from .config import RUNTIME_FIELDS, config_to_json, restore_config
from .pretrained import (
    checkpoint_dirs,
    count_parameters,
    find_pretrained,
    load_pretrained,
    read_pretrained_config,
    save_pretrained,
)
from .registry import ModelEntry, create_model, list_models, model_entry, register_family, register_model

__all__ = [
    "CheckpointMismatchError",
    "ModelEntry",
    "RUNTIME_FIELDS",
    "checkpoint_dirs",
    "config_to_json",
    "count_parameters",
    "create_model",
    "find_pretrained",
    "list_models",
    "load_checkpoint_file",
    "load_official",
    "load_pretrained",
    "load_state_dict_strict",
    "load_weights_into",
    "model_entry",
    "read_official_file",
    "read_pretrained_config",
    "register_family",
    "register_model",
    "restore_config",
    "save_pretrained",
    "strict_filter",
    "unwrap_state_dict",
]
