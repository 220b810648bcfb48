"""Relative attention (Shaw et al. 2018; Music Transformer, Huang et al. 2018), the registered op.

    out = softmax(scale * (q k^T + q E_rel^T)) v,   E_rel[i, j] = E[clip(j - i', -K, Khi) + K]

* :mod:`.reference` -- :func:`relative_attention_reference`, the exact PyTorch form with
  materialized ``(Lq, Lk)`` logits: what the kernel is tested against.
* :mod:`.triton` -- :func:`relative_attention`, the fused kernel (O(L) memory, forward and
  backward, attention dropout; ``q @ E^T`` computed inside it, or precomputed once as a
  ``(B, H, Lq, R)`` tensor for short tables by the rule :func:`use_precomputed_qe`), :func:`supports`,
  and :func:`dropout_mask` / :func:`draw_seed` (the kernel's dropout mask for a seed, so the reference
  can apply the same one). These names are imported from it on first use, so importing this package
  (which the core does to register the op) does not import Triton.

The op covers the terms whose ``kernel`` is ``"relative_attention"``
(:class:`~zoo.core_attention.positions.RelativeEmbedding`) and reads their ``weight``
(``(R, D)`` shared or ``(H, R, D)`` per head), ``max_distance`` and ``causal``; the call's
``dropout_p`` runs in the kernel.
"""

from __future__ import annotations

from torch import Tensor

from .. import KernelCall, register_kernel
from .reference import relative_attention_reference

__all__ = ["dropout_mask", "draw_seed", "relative_attention", "relative_attention_reference", "supports",
           "use_precomputed_qe"]

# names of the fused module, resolved lazily by __getattr__ below
_FUSED = ("relative_attention", "supports", "dropout_mask", "draw_seed", "use_precomputed_qe", "SUPPORTED_HEAD_DIMS",
          "SUPPORTED_DTYPES")


def __getattr__(name: str):
    """The fused kernel's public names, imported from ``.triton`` (and so Triton) on first use."""
    if name in _FUSED:
        from . import triton as fused

        return getattr(fused, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _key_padding(mask: Tensor | None) -> Tensor | None:
    """The core's ``(B|1, 1, 1, Lk)`` mask as the kernel's ``(B|1, Lk)`` key-padding mask."""
    return None if mask is None else mask.reshape(mask.shape[0], mask.shape[-1])


def unsupported(call: KernelCall) -> str | None:
    """Why the kernel cannot run ``call``, or None. Cheap: ``auto`` asks on every CUDA call."""
    term, name = call.term, type(call.term).__name__
    if not call.context.default_positions:
        return f"the relative-attention kernel needs default (contiguous) positions; {name} was bound to q_pos / k_pos"
    if term.causal and not call.causal:
        return f"a causal {name} (K + 1 rows) needs causal=True"
    if call.v.shape[-1] != call.q.shape[-1]:
        return (
            f"the relative-attention kernel needs v's head dim equal to q's (Dv == D), "
            f"got D={call.q.shape[-1]}, Dv={call.v.shape[-1]}"
        )
    mask = call.mask
    if mask is not None and (mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] != 1):
        return "the relative-attention kernel takes only key-padding masks of shape (B, 1, 1, Lk)"
    try:
        from . import triton as fused
    except ImportError as err:  # triton missing on this platform
        return f"triton is not importable ({err})"
    q, k = call.q, call.k
    if not fused.supports(q, k, call.v, term.weight, key_padding_mask=_key_padding(mask)):
        return (
            f"the kernel does not support device {q.device.type}, dtype {q.dtype}, head dim {q.shape[-1]} "
            f"with Lq={q.shape[2]}, Lk={k.shape[2]} (it needs CUDA or TRITON_INTERPRET=1, "
            f"D in {'/'.join(map(str, fused.SUPPORTED_HEAD_DIMS))}, Lq <= Lk; no bfloat16 under the interpreter)"
        )
    return None


def run(call: KernelCall) -> Tensor:
    """The fused kernel on ``call``'s tensors and its term's table: ``(B, H, Lq, D)``."""
    from .triton import relative_attention as fused_relative_attention

    term = call.term
    k, v = call.expanded_kv()  # (B, H, Lk, D) each
    key_padding = _key_padding(call.mask)  # (B|1, Lk)
    if key_padding is not None and key_padding.shape[0] != call.q.shape[0]:
        key_padding = key_padding.expand(call.q.shape[0], -1)  # (B, Lk)
    return fused_relative_attention(
        call.q, k, v, term.weight, term.max_distance,
        causal=call.causal, key_padding_mask=key_padding, scale=call.scale, dropout_p=call.dropout_p,
    )


register_kernel("relative_attention", unsupported=unsupported, run=run)
