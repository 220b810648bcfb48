"""Position terms for :func:`zoo.core_attention.attention`: each an ``nn.Module`` owning its parameters."""

from .alibi import ALiBi, alibi_slopes
from .base import (
    BoundPosition,
    ContextValue,
    PositionContext,
    PositionTerm,
    as_bound_terms,
    bind_all,
    default_positions,
)
from .box import BoxRPB
from .music import FundamentalMusicEmbedding, MusicRelative
from .relative import RelativeEmbedding, T5Bias, t5_relative_bucket
from .rotary import Rotary, apply_rotary
from .table2d import DynamicPositionBias, RelativeBias2D

__all__ = [
    "ALiBi",
    "BoundPosition",
    "BoxRPB",
    "ContextValue",
    "DynamicPositionBias",
    "FundamentalMusicEmbedding",
    "MusicRelative",
    "PositionContext",
    "PositionTerm",
    "RelativeBias2D",
    "RelativeEmbedding",
    "Rotary",
    "T5Bias",
    "alibi_slopes",
    "apply_rotary",
    "as_bound_terms",
    "bind_all",
    "default_positions",
    "t5_relative_bucket",
]
