"""``MultiheadAttention``: projections + :func:`attention` + owned position terms + a KV cache.

The module owns its position terms (their parameters are part of its state dict under
``position.<i>.``) and binds them per call to ``position_context`` (``q_pos``, ``k_pos`` and any
term-specific values: tensors, or plain ints / tuples for sizes). With a :class:`KVCache`, new
keys/values are appended in place and the default positions continue from the cached length, so
relative terms see the right distances during incremental decoding.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from torch import Tensor, nn

from .attention import attention, check_backend
from .positions.base import ContextValue, PositionTerm, bind_all

__all__ = ["MultiheadAttention", "KVCache"]


class KVCache:
    """Keys and values of the tokens seen so far, ``(B, Hkv, L, D)`` each, grown by :meth:`update`.

    Storage doubles when full, so appending one token is amortized O(1) copies rather than a
    concatenation of the whole prefix per step.
    """

    def __init__(self) -> None:
        self._k: Tensor | None = None
        self._v: Tensor | None = None
        self.length = 0

    def __len__(self) -> int:
        return self.length

    def reset(self) -> None:
        self._k = self._v = None
        self.length = 0

    def update(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Append ``k, v (B, Hkv, Lnew, D)``; return views of all cached keys and values."""
        new = k.shape[2]
        if self._k is None:
            cap = max(16, new)
            self._k = k.new_empty(k.shape[:2] + (cap,) + k.shape[3:])
            self._v = v.new_empty(v.shape[:2] + (cap,) + v.shape[3:])
        elif self._k.shape[:2] != k.shape[:2] or self._k.shape[3] != k.shape[3]:
            raise ValueError(
                f"KVCache holds keys of shape {tuple(self._k.shape[:2])}x{self._k.shape[3]} "
                f"but got {tuple(k.shape)}; call reset() when the batch changes"
            )
        end = self.length + new
        if end > self._k.shape[2]:
            cap = max(end, 2 * self._k.shape[2])
            grow = (0, 0, 0, cap - self._k.shape[2])
            self._k = nn.functional.pad(self._k, grow)
            self._v = nn.functional.pad(self._v, grow)
        self._k[:, :, self.length : end] = k
        self._v[:, :, self.length : end] = v
        self.length = end
        return self._k[:, :, :end], self._v[:, :, :end]

    def reorder(self, index: Tensor) -> None:
        """Select batch rows (beam search, dropping finished samples)."""
        if self._k is not None:
            self._k = self._k.index_select(0, index)
            self._v = self._v.index_select(0, index)


class MultiheadAttention(nn.Module):
    """Multi-head attention with grouped KV heads, dropout, owned position terms and a KV cache.

    Args:
        dim: model width; ``dim % num_heads == 0``.
        num_heads: query heads ``H``.
        num_kv_heads: key/value heads ``Hkv`` (``H % Hkv == 0``); default ``H``.
        position: a position term or a list of them, owned by this module.
        dropout: attention-probability dropout (training only).
        bias: biases in the q/k/v/out projections.
        kdim, vdim: input widths of the key/value source for cross-attention; default ``dim``.
        backend: passed to :func:`attention` (``"reference"`` keeps the readable path one flag away).
            A forced backend that has no form of one of the terms (``"triton"`` for a term without a
            fused kernel, ``"flex"`` for one without a ``score_mod``) is refused here, not on the
            first forward; what depends on the call (device, dtype, mask) is checked per call.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        num_kv_heads: int | None = None,
        position: PositionTerm | Sequence[PositionTerm] | None = None,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        num_kv_heads = num_heads if num_kv_heads is None else num_kv_heads
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads})")
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads ({num_kv_heads})")
        terms = [] if position is None else [position] if isinstance(position, PositionTerm) else list(position)
        check_backend(backend, terms)
        self.dim = dim
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.head_dim = dim // num_heads
        self.dropout = dropout
        self.backend = backend
        kv_width = num_kv_heads * self.head_dim
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(kdim or dim, kv_width, bias=bias)
        self.v_proj = nn.Linear(vdim or dim, kv_width, bias=bias)
        self.out_proj = nn.Linear(dim, dim, bias=bias)
        self.position = nn.ModuleList(terms)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, heads={self.num_heads}, kv_heads={self.num_kv_heads}, backend={self.backend}"

    def _split(self, x: Tensor, heads: int) -> Tensor:
        return x.unflatten(-1, (heads, self.head_dim)).transpose(1, 2)  # (B, heads, L, Dh)

    def forward(
        self,
        x: Tensor,
        kv: Tensor | None = None,
        *,
        mask: Tensor | None = None,
        causal: bool = False,
        position_context: Mapping[str, ContextValue] | None = None,
        cache: KVCache | None = None,
    ) -> Tensor:
        """``x (B, Lq, dim)``, optional ``kv (B, Lk, kdim)`` -> ``(B, Lq, dim)``.

        ``mask`` is boolean, broadcastable to ``(B, H, Lq, Lk_total)`` (with a cache, ``Lk_total``
        counts the cached tokens), True = attend.
        """
        if x.dim() != 3 or x.shape[-1] != self.dim:
            raise ValueError(f"x must have shape (B, L, {self.dim}), got {tuple(x.shape)}")
        source = x if kv is None else kv
        q = self._split(self.q_proj(x), self.num_heads)  # (B, H, Lq, Dh)
        k = self._split(self.k_proj(source), self.num_kv_heads)  # (B, Hkv, Lk, Dh)
        v = self._split(self.v_proj(source), self.num_kv_heads)  # (B, Hkv, Lk, Dh)
        if cache is not None:
            k, v = cache.update(k, v)
        bound = bind_all(list(self.position), position_context)
        out = attention(
            q, k, v, position=bound, mask=mask, causal=causal,
            dropout_p=self.dropout if self.training else 0.0, backend=self.backend,
        )  # (B, H, Lq, Dh)
        return self.out_proj(out.transpose(1, 2).flatten(2))  # (B, Lq, dim)

