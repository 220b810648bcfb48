"""The one attention entry point of the zoo, and its backends.

``attention(q, k, v, position=..., backend="auto")`` computes

    softmax(scale * q k^T + sum_t bias_t(q, k) + mask) v

where each position term ``t`` contributes in the fastest form the chosen backend can use
(see :mod:`zoo.core_attention.positions.base`):

* ``reference`` -- materializes the (B, H, Lq, Lk) logits in plain PyTorch. Exact; the yardstick.
* ``sdpa``      -- ``F.scaled_dot_product_attention``: q/k transforms and extra q/k feature columns
                  keep it on FlashAttention/efficient kernels; other terms become a float mask.
* ``flex``      -- FlexAttention with the terms' ``score_mod``s (bias tables stay small and are
                  indexed per score). CUDA for training; on CPU FlexAttention has no backward.
* ``triton``    -- our fused kernels (``kernels/``) for the terms they cover.
* ``auto``      -- triton on CUDA where a kernel covers the term; sdpa where the terms reduce to
                  plain attention (or, on CUDA, to a float mask); flex on CUDA for bias-table terms;
                  the reference otherwise (CPU training with bias terms included).

Causality is by index with queries aligned to the *end* of the keys (``j <= i + Lk - Lq``), the
KV-cache convention; position terms use the positions bound to them for their own distances.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .positions.base import BoundPosition, PositionContext, PositionTerm, as_bound_terms

__all__ = ["attention", "BACKENDS", "select_backend"]

BACKENDS = ("auto", "reference", "sdpa", "flex", "triton")

PositionArg = PositionTerm | BoundPosition | Sequence[PositionTerm | BoundPosition] | None


# ----------------------------------------------------------------------------- validation
def _check_inputs(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, backend: str, dropout_p: float) -> None:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, H, L, D), got {tuple(t.shape)}")
    b, h, _, d = q.shape
    if k.shape[0] != b or v.shape[0] != b:
        raise ValueError(f"batch sizes differ: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape[1] != v.shape[1] or k.shape[2] != v.shape[2]:
        raise ValueError(f"k and v must have the same heads and length, got {tuple(k.shape)} and {tuple(v.shape)}")
    if k.shape[-1] != d:
        raise ValueError(f"q and k head dims differ: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if h % k.shape[1]:
        raise ValueError(f"query heads ({h}) must be a multiple of key/value heads ({k.shape[1]}): q {tuple(q.shape)}, k {tuple(k.shape)}")
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(f"mask must be boolean (True = attend), got {mask.dtype}")
        target = (b, h, q.shape[2], k.shape[2])
        if mask.dim() > 4 or any(m not in (1, t) for m, t in zip(mask.shape[::-1], target[::-1])):
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to (B, H, Lq, Lk) = {target}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p}")


def _expand_kv(x: Tensor, heads: int) -> Tensor:
    """Grouped KV heads: ``(B, Hkv, L, D)`` -> ``(B, H, L, D)``."""
    return x if x.shape[1] == heads else x.repeat_interleave(heads // x.shape[1], dim=1)


def _causal_mask(lq: int, lk: int, device: torch.device) -> Tensor:
    """``(Lq, Lk)`` True where key j is at or before query i (queries aligned to the end of keys)."""
    i = torch.arange(lq, device=device)[:, None] + (lk - lq)
    return torch.arange(lk, device=device)[None, :] <= i


def _combined_mask(mask: Tensor | None, causal: bool, lq: int, lk: int, device: torch.device) -> Tensor | None:
    if not causal:
        return mask
    cm = _causal_mask(lq, lk, device)  # (Lq, Lk)
    return cm if mask is None else mask & cm


def _empty_rows(mask: Tensor | None, causal: bool, lq: int, lk: int, device: torch.device) -> Tensor | None:
    """``(..., Lq, 1)`` True for queries that may attend to no key (their output is zero), or None.

    Computed without building a mask larger than the caller's: for a key-padding mask (``Lq`` dim 1)
    under causality, a row is empty when the first attended key lies after its last visible one.
    """
    if mask is None:
        if causal and lq > lk:  # the first Lq - Lk queries precede every key
            return (torch.arange(lq, device=device) + (lk - lq) < 0)[:, None]
        return None
    if not causal:
        return ~mask.any(-1, keepdim=True)
    if mask.shape[-2] == 1:
        first = torch.where(mask, torch.arange(lk, device=device), lk).amin(-1, keepdim=True)  # (..., 1, 1)
        last_visible = torch.arange(lq, device=device)[:, None] + (lk - lq)  # (Lq, 1)
        return first > last_visible  # (..., Lq, 1)
    return ~(mask & _causal_mask(lq, lk, device)).any(-1, keepdim=True)


def _prepare(q: Tensor, k: Tensor, terms: list[BoundPosition], causal: bool) -> tuple[Tensor, Tensor, list[PositionContext]]:
    """Expand grouped KV heads, build each term's context and apply q/k transforms (RoPE)."""
    lq, lk = q.shape[2], k.shape[2]
    ctxs = [t.make_context(lq, lk, causal, q.device) for t in terms]
    for bound, ctx in zip(terms, ctxs):
        q, k = bound.term.transform_qk(q, k, ctx)
    return q, k, ctxs


# ----------------------------------------------------------------------------- backends
def _reference(q, k, v, terms, mask, causal, scale, dropout_p) -> Tensor:
    h = q.shape[1]
    k, v = _expand_kv(k, h), _expand_kv(v, h)
    q, k, ctxs = _prepare(q, k, terms, causal)
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, Lq, Lk)
    for bound, ctx in zip(terms, ctxs):
        b = bound.term.bias(q, k, ctx, scale)
        if b is not None:
            scores = scores + b
    full_mask = _combined_mask(mask, causal, q.shape[2], k.shape[2], q.device)
    if full_mask is not None:
        scores = scores.masked_fill(~full_mask, float("-inf"))
    # half-precision logits are normalized in float32, as the fused kernels do
    acc = torch.float32 if scores.dtype in (torch.float16, torch.bfloat16) else scores.dtype
    probs = torch.softmax(scores.to(acc), dim=-1).to(q.dtype)  # (B, H, Lq, Lk)
    empty = _empty_rows(mask, causal, q.shape[2], k.shape[2], q.device)
    if empty is not None:
        # a query that may attend to nothing gets a zero output instead of NaN
        probs = probs.masked_fill(empty, 0.0)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return probs @ v  # (B, H, Lq, D)


def _features(q, k, terms, ctxs, scale) -> list[tuple[Tensor, Tensor] | None]:
    return [bound.term.qk_features(q, k, ctx, scale) if bound.term.adds_bias else None for bound, ctx in zip(terms, ctxs)]


def _sdpa(q, k, v, terms, mask, causal, scale, dropout_p) -> Tensor:
    h, d = q.shape[1], q.shape[-1]
    k, v = _expand_kv(k, h), _expand_kv(v, h)
    q, k, ctxs = _prepare(q, k, terms, causal)
    feats = _features(q, k, terms, ctxs, scale)
    float_bias = None
    extra_q, extra_k = [], []
    for bound, ctx, f in zip(terms, ctxs, feats):
        if f is not None:
            extra_q.append(f[0])
            extra_k.append(f[1])
        elif bound.term.adds_bias:
            b = bound.term.bias(q, k, ctx, scale)
            if b is not None:
                float_bias = b if float_bias is None else float_bias + b
    if extra_q:
        # Extra columns ride along in the dot product; pad q, k, v to a common width that is a
        # multiple of 8 so the fused kernels (which need equal, aligned head dims) stay eligible.
        qf = torch.cat([q, *extra_q], dim=-1)  # (B, H, Lq, D + F)
        kf = torch.cat([k, *[e.to(k.dtype) for e in extra_k]], dim=-1)  # (B, H, Lk, D + F)
        width = 8 * math.ceil(qf.shape[-1] / 8)
        q = F.pad(qf, (0, width - qf.shape[-1]))
        k = F.pad(kf, (0, width - kf.shape[-1]))
        v = F.pad(v, (0, width - d))
    lq, lk = q.shape[2], k.shape[2]
    is_causal = causal and mask is None and float_bias is None and lq == lk
    bool_mask = None if is_causal else _combined_mask(mask, causal, lq, lk, q.device)
    attn_mask = bool_mask
    if float_bias is not None:
        attn_mask = float_bias.to(q.dtype)
        if bool_mask is not None:
            attn_mask = attn_mask.masked_fill(~bool_mask, float("-inf"))
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=attn_mask, dropout_p=dropout_p, is_causal=is_causal, scale=scale
    )  # (B, H, Lq, width)
    empty = _empty_rows(mask, causal, lq, lk, q.device)
    if empty is not None:
        out = out.masked_fill(empty, 0.0)
    return out[..., :d]


_COMPILED_FLEX: Callable | None = None


def _flex_fn(device: torch.device) -> Callable:
    """FlexAttention, compiled on CUDA (eager flex materializes the scores); eager on CPU."""
    global _COMPILED_FLEX
    from torch.nn.attention import flex_attention as fa

    if device.type != "cuda":
        return functools.partial(_eager_flex, fa.flex_attention)
    if _COMPILED_FLEX is None:
        _COMPILED_FLEX = torch.compile(fa.flex_attention, dynamic=False)
    return _COMPILED_FLEX


def _eager_flex(fn: Callable, *args, **kwargs) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return fn(*args, **kwargs)


def _flex(q, k, v, terms, mask, causal, scale, dropout_p) -> Tensor:
    from torch.nn.attention.flex_attention import create_block_mask

    if dropout_p > 0.0:
        raise ValueError("backend='flex' does not support dropout; use backend='sdpa' or 'reference'")
    if q.device.type == "cpu" and torch.is_grad_enabled() and any(
        t.requires_grad for t in (q, k, v, *(p for b in terms for p in b.term.parameters()))
    ):
        raise ValueError(
            "backend='flex' on CPU is inference-only (FlexAttention has no CPU backward); "
            "use backend='reference' for CPU training or run under torch.no_grad()"
        )
    if q.device.type == "cpu":  # no graph is being built (checked above); flex rejects requires_grad inputs on CPU
        q, k, v = q.detach(), k.detach(), v.detach()
    h = q.shape[1]
    k, v = _expand_kv(k, h), _expand_kv(v, h)
    q, k, ctxs = _prepare(q, k, terms, causal)
    mods: list[Callable] = []
    for bound, ctx in zip(terms, ctxs):
        if not bound.term.adds_bias:
            continue
        mod = bound.term.score_mod(q, k, ctx, scale)
        if mod is None:
            raise ValueError(f"{type(bound.term).__name__} has no FlexAttention form; use backend='sdpa' or 'reference'")
        mods.append(mod)
    b_, lq, lk = q.shape[0], q.shape[2], k.shape[2]
    offset = lk - lq

    if mask is not None:
        m4 = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))  # (Bm, Hm, Lqm, Lkm)
        bm, hm, qm, km = (s > 1 for s in m4.shape)

        def tensor_mask(b, hh, q_idx, kv_idx):
            return m4[b if bm else 0, hh if hm else 0, q_idx if qm else 0, kv_idx if km else 0]

    def mask_mod(b, hh, q_idx, kv_idx):
        keep = kv_idx <= q_idx + offset if causal else kv_idx >= 0
        if mask is not None:
            keep = keep & tensor_mask(b, hh, q_idx, kv_idx)
        return keep

    block_mask = None
    if causal or mask is not None:
        block_mask = create_block_mask(mask_mod, b_, h, lq, lk, device=q.device)

    def score_mod(score, b, hh, q_idx, kv_idx):
        for mod in mods:
            score = mod(score, b, hh, q_idx, kv_idx)
        return score

    out = _flex_fn(q.device)(
        q, k, v, score_mod=score_mod if mods else None, block_mask=block_mask, scale=scale
    )  # (B, H, Lq, D)
    empty = _empty_rows(mask, causal, lq, lk, q.device)
    return out if empty is None else out.masked_fill(empty, 0.0)


def _triton_relative(q, k, v, terms, mask, causal, scale, dropout_p) -> Tensor:
    reason = _triton_unsupported(q, k, v, terms, mask, causal, dropout_p)
    if reason:
        raise ValueError(f"backend='triton' cannot run this call: {reason}")
    from .kernels.relative_attention import relative_attention

    term = terms[0].term
    h = q.shape[1]
    key_padding = None if mask is None else mask.reshape(mask.shape[0], mask.shape[-1])  # (B|1, Lk)
    if key_padding is not None and key_padding.shape[0] != q.shape[0]:
        key_padding = key_padding.expand(q.shape[0], -1)
    return relative_attention(
        q, _expand_kv(k, h), _expand_kv(v, h), term.weight, term.max_distance,
        causal=causal, key_padding_mask=key_padding, scale=scale,
    )


def _triton_unsupported(q, k, v, terms, mask, causal, dropout_p) -> str | None:
    """Why the relative-attention kernel cannot take this call, or None if it can."""
    from .positions.relative import RelativeEmbedding

    if len(terms) != 1 or not isinstance(terms[0].term, RelativeEmbedding):
        return "the Triton kernel covers exactly one RelativeEmbedding term"
    if terms[0].context:
        return "the Triton kernel needs default (contiguous) positions"
    if terms[0].term.causal and not causal:
        return "a causal RelativeEmbedding (K + 1 rows) needs causal=True"
    if dropout_p > 0.0:
        return "the Triton kernel has no dropout"
    if mask is not None and (mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[2] != 1):
        return "the Triton kernel takes only key-padding masks of shape (B, 1, 1, Lk)"
    try:
        from .kernels import relative_attention as kernel_module
    except ImportError as err:  # triton missing on this platform
        return f"triton is not importable ({err})"
    term = terms[0].term
    kpm = None if mask is None else mask.reshape(mask.shape[0], mask.shape[-1])
    if not kernel_module.supports(q, k, v, term.weight, key_padding_mask=kpm):
        return (
            f"the kernel does not support device {q.device.type}, dtype {q.dtype}, head dim {q.shape[-1]} "
            f"with Lq={q.shape[2]}, Lk={k.shape[2]} (it needs CUDA or TRITON_INTERPRET=1, D in 16/32/64/128, Lq <= Lk)"
        )
    return None


_IMPLS = {"reference": _reference, "sdpa": _sdpa, "flex": _flex, "triton": _triton_relative}


# ----------------------------------------------------------------------------- selection
def select_backend(
    q: Tensor, k: Tensor, v: Tensor, terms: list[BoundPosition], mask: Tensor | None, causal: bool, dropout_p: float
) -> str:
    """The backend ``auto`` picks for this call (exposed for tests and benchmarks)."""
    bias_terms = [b for b in terms if b.term.adds_bias]
    if not bias_terms:
        return "sdpa"
    if q.is_cuda and _triton_unsupported(q, k, v, terms, mask, causal, dropout_p) is None:
        return "triton"
    lq, lk = q.shape[2], k.shape[2]
    ctxs = [b.make_context(lq, lk, causal, q.device) for b in bias_terms]
    if all(b.term.has_qk_features(c, q.dtype) for b, c in zip(bias_terms, ctxs)):
        return "sdpa"
    if q.is_cuda:
        if dropout_p == 0.0 and all(type(b.term).score_mod is not PositionTerm.score_mod for b in bias_terms):
            return "flex"
        return "sdpa"
    return "reference"


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    position: PositionArg = None,
    mask: Tensor | None = None,
    causal: bool = False,
    scale: float | None = None,
    dropout_p: float = 0.0,
    backend: str = "auto",
) -> Tensor:
    """Scaled dot-product attention with pluggable relative-position terms.

    Args:
        q: ``(B, H, Lq, D)``.
        k, v: ``(B, Hkv, Lk, D)`` with ``H % Hkv == 0`` (grouped KV heads).
        position: a :class:`PositionTerm`, a bound term (``term.bind(q_pos=..., ...)``) or a list.
        mask: boolean, broadcastable to ``(B, H, Lq, Lk)``, True = attend.
        causal: key ``j`` attends only if ``j <= i + Lk - Lq``.
        scale: defaults to ``1 / sqrt(D)``.
        dropout_p: attention-probability dropout (pass 0 in eval).
        backend: ``"auto" | "reference" | "sdpa" | "flex" | "triton"``.

    Returns:
        ``(B, H, Lq, D)``.
    """
    _check_inputs(q, k, v, mask, backend, dropout_p)
    terms = as_bound_terms(position)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    if backend == "auto":
        backend = select_backend(q, k, v, terms, mask, causal, dropout_p)
    return _IMPLS[backend](q, k, v, terms, mask, causal, scale, dropout_p)
