"""Music Transformer; importing this package registers its variants with :mod:`zoo.hub`."""

from .music_transformer import CONFIGS, MusicTransformer, MusicTransformerConfig

__all__ = ["CONFIGS", "MusicTransformer", "MusicTransformerConfig"]
