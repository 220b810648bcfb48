"""The shared attention core: one entry point, pluggable position terms, automatic backends.

    from zoo.core_attention import attention, MultiheadAttention, positions
    out = attention(q, k, v, position=positions.ALiBi(8), causal=True)
"""

from . import positions
from .attention import BACKENDS, attention, select_backend
from .kernels.match_attention import match_attention
from .mha import KVCache, MultiheadAttention

__all__ = ["BACKENDS", "KVCache", "MultiheadAttention", "attention", "match_attention", "positions", "select_backend"]
