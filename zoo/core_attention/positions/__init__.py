"""Position terms for :func:`zoo.core_attention.attention`: each an ``nn.Module`` owning its parameters."""

from .alibi import ALiBi, alibi_slopes
from .base import BoundPosition, PositionContext, PositionTerm, as_bound_terms, bind_all, default_positions
from .box import BoxRPB
from .music import FundamentalMusicEmbedding, MusicRelative  # noqa: F401  (RIPO; listed in __all__ by the lead)
from .relative import RelativeEmbedding, T5Bias, t5_relative_bucket
from .rotary import Rotary, apply_rotary
from .table2d import DynamicPositionBias, RelativeBias2D

__all__ = [
    "DynamicPositionBias",
    "RelativeBias2D",
    "ALiBi",
    "BoundPosition",
    "BoxRPB",
    "PositionContext",
    "PositionTerm",
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
