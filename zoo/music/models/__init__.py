"""Music models; importing this package registers them with :mod:`zoo.hub`."""

from . import ripo  # noqa: F401  (registers ripo_transformer and its baselines)
from .music_transformer import CONFIGS, MusicTransformer, MusicTransformerConfig

__all__ = ["CONFIGS", "MusicTransformer", "MusicTransformerConfig"]
