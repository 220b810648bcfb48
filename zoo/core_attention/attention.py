"""The one attention entry point of the zoo, and its backends.

``attention(q, k, v, position=..., backend="auto")`` computes

    softmax(scale * q k^T + sum_t bias_t(q, k) + mask) v

where each position term ``t`` contributes in the fastest form the chosen backend can use
(see :mod:`zoo.core_attention.positions.base`):

* ``reference`` -- materializes the (B, H, Lq, Lk) logits in plain PyTorch. Exact; the yardstick:
                  half-precision inputs are computed in float32 and rounded once, at the end.
* ``sdpa``      -- ``F.scaled_dot_product_attention``: q/k transforms and extra q/k feature columns
                  keep it on FlashAttention/efficient kernels; other terms become a float mask.
* ``flex``      -- FlexAttention with the terms' ``score_mod``s (bias tables stay small and are
                  indexed per score). CUDA for training; on CPU FlexAttention has no backward.
* ``triton``    -- the fused kernel that the (single) term names in ``PositionTerm.kernel``, looked
                  up in the registry of :mod:`zoo.core_attention.kernels`; the op decides per call
                  whether it can run it.
* ``auto``      -- triton on CUDA where a kernel covers the term; sdpa where the terms reduce to
                  plain attention (or, on CUDA, to a float mask); flex on CUDA for bias-table terms;
                  the reference otherwise (CPU training with bias terms included). On CUDA a
                  decoding step (few queries, more keys) takes SDPA with its small bias, and a
                  fallback from a kernel warns once per term and reason (KernelFallbackWarning).

Every call is checked against one input contract (:func:`_check_inputs`) before a backend is chosen,
so all backends take the same calls or refuse them with the same ``ValueError``; empty calls (no
batch, query or key) are answered by the reference whatever the backend.

Each term's :class:`PositionContext` is built once per call and shared by the selection and the
backend. A backend forced by name is checked against the terms before anything runs
(:func:`check_backend`; ``MultiheadAttention`` does it at construction); what is only known per
call (device, dtype, mask shape) is checked per call.

Causality is by index with queries aligned to the *end* of the keys (``j <= i + Lk - Lq``), the
KV-cache convention; position terms use the positions bound to them for their own distances.
"""

from __future__ import annotations

import functools
import math
import numbers
import re
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .kernels import Kernel, KernelCall, get_kernel, has_kernel
from .positions.base import BoundPosition, PositionContext, PositionTerm, as_bound_terms

__all__ = [
    "attention", "BACKENDS", "DECODE_MAX_QUERIES", "FLOAT_DTYPES", "KernelFallbackWarning", "check_backend",
    "select_backend", "supported_backends",
]

BACKENDS = ("auto", "reference", "sdpa", "flex", "triton")

PositionArg = PositionTerm | BoundPosition | Sequence[PositionTerm | BoundPosition] | None


# ----------------------------------------------------------------------------- validation
#: the dtypes attention() takes; q, k and v share one
FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _check_inputs(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, causal: bool, scale: float | None, dropout_p: float,
    backend: str,
) -> None:
    """The input contract of :func:`attention`, checked once, before any backend is chosen or run.

    Every backend sees only calls that pass it, so a call the reference takes is taken (and agreed
    on) by every backend that has the capability, and a call it refuses is refused by all of them
    with this one ``ValueError``:

    * ``q (B, H, Lq, D)``, ``k (B, Hkv, Lk, D)``, ``v (B, Hkv, Lk, Dv)``: tensors of one floating dtype
      (:data:`FLOAT_DTYPES`) on one device; ``H, Hkv, D, Dv >= 1`` with ``H % Hkv == 0``;
      ``B, Lq, Lk >= 0`` (an empty call, see :func:`_is_empty`, is answered by the reference on every
      backend). ``v`` may have its own head dim ``Dv``: the output is ``(B, H, Lq, Dv)``.
    * ``mask``: a bool tensor on q's device, at most 4-D, broadcastable to ``(B, H, Lq, Lk)``.
    * ``causal`` a bool; ``scale`` None or a finite nonzero real; ``dropout_p`` a real in ``[0, 1)``.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not isinstance(t, Tensor):
            raise ValueError(f"{name} must be a tensor of shape (B, H, L, D), got {type(t).__name__}")
        if t.dim() != 4:
            raise ValueError(f"{name} must have shape (B, H, L, D), got {tuple(t.shape)}")
    if not (q.dtype == k.dtype == v.dtype):
        raise ValueError(f"q, k, v must share one dtype, got q {q.dtype}, k {k.dtype}, v {v.dtype}")
    if q.dtype not in FLOAT_DTYPES:
        raise ValueError(f"q, k, v must have a floating dtype among {FLOAT_DTYPES}, got {q.dtype}")
    if not (q.device == k.device == v.device):
        raise ValueError(f"q, k, v must be on one device, got q {q.device}, k {k.device}, v {v.device}")
    b, h, _, d = q.shape
    if k.shape[0] != b or v.shape[0] != b:
        raise ValueError(f"batch sizes differ: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}")
    if k.shape[1] != v.shape[1] or k.shape[2] != v.shape[2]:
        raise ValueError(f"k and v must have the same heads and length, got {tuple(k.shape)} and {tuple(v.shape)}")
    if k.shape[-1] != d:
        raise ValueError(f"q and k head dims differ: q {tuple(q.shape)}, k {tuple(k.shape)}")
    if min(h, k.shape[1], d, v.shape[-1]) < 1:
        raise ValueError(
            f"heads and head dims must be positive: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"
        )
    if h % k.shape[1]:
        raise ValueError(f"query heads ({h}) must be a multiple of key/value heads ({k.shape[1]}): q {tuple(q.shape)}, k {tuple(k.shape)}")
    if mask is not None:
        if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
            got = mask.dtype if isinstance(mask, Tensor) else type(mask).__name__
            raise ValueError(f"mask must be boolean (True = attend), got {got}")
        target = (b, h, q.shape[2], k.shape[2])
        if mask.dim() > 4 or any(m not in (1, t) for m, t in zip(mask.shape[::-1], target[::-1])):
            raise ValueError(f"mask of shape {tuple(mask.shape)} does not broadcast to (B, H, Lq, Lk) = {target}")
        if mask.device != q.device:
            raise ValueError(f"mask must be on q's device {q.device}, got {mask.device}")
    if not isinstance(causal, bool):
        raise ValueError(f"causal must be a bool, got {type(causal).__name__}")
    if scale is not None and (
        isinstance(scale, bool) or not isinstance(scale, numbers.Real) or not math.isfinite(scale) or scale == 0
    ):
        # zero is refused too: it erases q k^T, and feature forms (causal ALiBi) divide by the scale
        raise ValueError(f"scale must be None or a finite, nonzero real number, got {scale!r}")
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, numbers.Real) or not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"dropout_p must be in [0, 1), got {dropout_p!r}")


def _is_empty(q: Tensor, k: Tensor) -> bool:
    """No batch, no query or no key: nothing for a fused kernel to do."""
    return q.shape[0] == 0 or q.shape[2] == 0 or k.shape[2] == 0


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
    if lk == 0:  # no key at all: every query is empty (and there is nothing to reduce over)
        return torch.ones(lq, 1, dtype=torch.bool, device=device)
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


def _transform_qk(
    q: Tensor, k: Tensor, terms: list[PositionTerm], ctxs: list[PositionContext]
) -> tuple[Tensor, Tensor]:
    """Apply the terms' q/k transforms (RoPE) in order."""
    for term, ctx in zip(terms, ctxs):
        q, k = term.transform_qk(q, k, ctx)
    return q, k


# ----------------------------------------------------------------------------- capabilities
def _has_score_mod(term: PositionTerm) -> bool:
    """Whether the term can run under FlexAttention: a pure q/k transform, or a score_mod override."""
    return not term.adds_bias or type(term).score_mod is not PositionTerm.score_mod


def supported_backends(term: PositionTerm) -> tuple[str, ...]:
    """The backends that have a form of ``term`` (``reference`` and ``sdpa`` have one for every term).

    ``triton`` is listed when the term names a registered kernel; whether that kernel takes a given
    call (device, dtype, mask, other terms) is decided per call.
    """
    names = ["reference", "sdpa"]
    if _has_score_mod(term):
        names.append("flex")
    if term.kernel is not None and has_kernel(term.kernel):
        names.append("triton")
    return tuple(names)


def _backend_problem(backend: str, terms: Sequence[PositionTerm]) -> str | None:
    """Why ``backend`` can never run these terms (whatever the call), or None."""
    if backend == "triton":
        if len(terms) != 1:
            got = ", ".join(type(t).__name__ for t in terms) or "none"
            return f"backend='triton' runs the fused kernel of exactly one position term, got {got}"
        term = terms[0]
        name = type(term).__name__
        if term.kernel is None:
            return (
                f"backend='triton' cannot run {name}: it names no fused kernel ({name}.kernel is None); "
                f"{name} supports backends {supported_backends(term)}"
            )
        try:
            get_kernel(term.kernel)
        except ValueError as err:
            return f"backend='triton' cannot run {name}: {err}"
    elif backend == "flex":
        for term in terms:
            if not _has_score_mod(term):
                name = type(term).__name__
                return (
                    f"backend='flex' cannot run {name}: it has no FlexAttention form (no score_mod); "
                    f"{name} supports backends {supported_backends(term)}"
                )
    return None


def check_backend(backend: str, terms: Sequence[PositionTerm]) -> None:
    """Refuse a backend that cannot run ``terms`` on any call (a ``ValueError`` naming both).

    ``auto``, ``reference`` and ``sdpa`` (which falls back to a float mask) run every term.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    problem = _backend_problem(backend, terms)
    if problem is not None:
        raise ValueError(problem)


# ----------------------------------------------------------------------------- backends
def _reference(q, k, v, terms, ctxs, mask, causal, scale, dropout_p) -> Tensor:
    out_dtype = q.dtype
    if out_dtype in _HALF_DTYPES:
        # The yardstick rounds once, at the end: in half precision q k^T overflows (fp16, large
        # logits) or loses the low bits the softmax amplifies (bf16) before any kernel would round.
        # So the transforms, logits, biases, softmax and probs @ v all run in float32.
        q, k, v = q.float(), k.float(), v.float()
    h = q.shape[1]
    k, v = _expand_kv(k, h), _expand_kv(v, h)
    q, k = _transform_qk(q, k, terms, ctxs)
    scores = (q @ k.transpose(-1, -2)) * scale  # (B, H, Lq, Lk)
    for term, ctx in zip(terms, ctxs):
        b = term.bias(q, k, ctx, scale)
        if b is not None:
            scores = scores + b
    full_mask = _combined_mask(mask, causal, q.shape[2], k.shape[2], q.device)
    if full_mask is not None:
        scores = scores.masked_fill(~full_mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)  # (B, H, Lq, Lk)
    empty = _empty_rows(mask, causal, q.shape[2], k.shape[2], q.device)
    if empty is not None:
        # a query that may attend to nothing gets a zero output instead of NaN
        probs = probs.masked_fill(empty, 0.0)
    if dropout_p > 0.0:
        probs = F.dropout(probs, p=dropout_p)
    return (probs @ v).to(out_dtype)  # (B, H, Lq, Dv)


def _features(q, k, terms, ctxs, scale) -> list[tuple[Tensor, Tensor] | None]:
    return [term.qk_features(q, k, ctx, scale) if term.adds_bias else None for term, ctx in zip(terms, ctxs)]


def _sdpa(q, k, v, terms, ctxs, mask, causal, scale, dropout_p) -> Tensor:
    h, dv = q.shape[1], v.shape[-1]
    k, v = _expand_kv(k, h), _expand_kv(v, h)
    q, k = _transform_qk(q, k, terms, ctxs)
    feats = _features(q, k, terms, ctxs, scale)
    float_bias = None
    extra_q, extra_k = [], []
    for term, ctx, f in zip(terms, ctxs, feats):
        if f is not None:
            extra_q.append(f[0])
            extra_k.append(f[1])
        elif term.adds_bias:
            b = term.bias(q, k, ctx, scale)
            if b is not None:
                float_bias = b if float_bias is None else float_bias + b
    if extra_q:
        # Extra columns ride along in the dot product; pad q, k, v to a common width that is a
        # multiple of 8 so the fused kernels (which need equal, aligned head dims) stay eligible.
        # The width covers v's own head dim too (Dv may exceed D + F); the output keeps v's Dv.
        qf = torch.cat([q, *extra_q], dim=-1)  # (B, H, Lq, D + F)
        kf = torch.cat([k, *[e.to(k.dtype) for e in extra_k]], dim=-1)  # (B, H, Lk, D + F)
        width = 8 * math.ceil(max(qf.shape[-1], dv) / 8)
        q = F.pad(qf, (0, width - qf.shape[-1]))  # (B, H, Lq, width)
        k = F.pad(kf, (0, width - kf.shape[-1]))  # (B, H, Lk, width)
        v = F.pad(v, (0, width - dv))  # (B, H, Lk, width)
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
    )  # (B, H, Lq, width | Dv)
    empty = _empty_rows(mask, causal, lq, lk, q.device)
    if empty is not None:
        out = out.masked_fill(empty, 0.0)
    return out[..., :dv]  # (B, H, Lq, Dv)


_COMPILED_FLEX: Callable | None = None

#: FlexAttention's sparse block size (rows and columns of one BlockMask tile)
_SPARSE_BLOCK = 128


def _flex_fn(device: torch.device) -> Callable:
    """FlexAttention, compiled on CUDA (eager flex materializes the scores); eager on CPU.

    Compiled with ``dynamic=None`` (automatic dynamic shapes): a second sequence length marks the
    lengths dynamic and compiles once more, after which new lengths (a forced ``flex`` KV-cache
    decode) reuse that graph instead of recompiling per length, as ``dynamic=False`` did until
    Dynamo's recompile limit sent it to the eager, score-materializing path.
    """
    global _COMPILED_FLEX
    from torch.nn.attention import flex_attention as fa

    if device.type != "cuda":
        return functools.partial(_eager_flex, fa.flex_attention)
    if _COMPILED_FLEX is None:
        _COMPILED_FLEX = torch.compile(fa.flex_attention, dynamic=None)
    return _COMPILED_FLEX


def _eager_flex(fn: Callable, *args, **kwargs) -> Tensor:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
        return fn(*args, **kwargs)


def _ordered_blocks(blocks: Tensor) -> tuple[Tensor, Tensor]:
    """``(Bm, Hm, M, N)`` bool -> BlockMask's ``(num (Bm, Hm, M), indices (Bm, Hm, M, N))`` int32,
    each row's present columns first, ascending."""
    num = blocks.sum(-1, dtype=torch.int32)  # (Bm, Hm, M)
    order = torch.argsort((~blocks).to(torch.uint8), dim=-1, stable=True)  # (Bm, Hm, M, N)
    return num, order.to(torch.int32)


def _block_states(mask: Tensor | None, causal: bool, lq: int, lk: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``(any, full)`` bool ``(Bm, Hm, M, N)``: which 128 x 128 tiles hold an attended pair, and
    which hold only attended pairs (no ``mask_mod`` needed), exactly as ``create_block_mask`` of the
    same mask_mod decides (a tile cut by the end of the queries or keys is never full).

    Computed from the geometry of causality and from the mask itself, never from an evaluated
    ``(Lq, Lk)`` mask: a key-padding mask ``(Bm, Hm, 1, Lk)`` (or no mask) costs ``O(B Lk)``; only a
    mask with a query dim (a dense mask the caller built) is combined with causality densely.
    """
    bs = _SPARSE_BLOCK
    m_blocks, n_blocks = -(-lq // bs), -(-lk // bs)
    offset = lk - lq
    q_start = torch.arange(m_blocks, device=device) * bs  # (M,) first query of each tile row
    q_last = (q_start + bs).clamp(max=lq) - 1  # (M,)
    q_whole = (q_start + bs <= lq)[:, None]  # (M, 1) tile rows not cut by the end of the queries
    if mask is not None and mask.shape[-2] > 1:  # a dense mask: the caller's (.., Lq, Lk) tensor
        dense = mask if not causal else mask & _causal_mask(lq, lk, device)  # (Bm, Hm, Lq, Lk)
        dense = dense.expand(*dense.shape[:2], lq, lk)
        dense = F.pad(dense, (0, n_blocks * bs - lk, 0, m_blocks * bs - lq))  # pads with False
        count = dense.unflatten(-1, (n_blocks, bs)).unflatten(-3, (m_blocks, bs)).sum((-3, -1))  # (Bm, Hm, M, N)
        return count > 0, count == bs * bs
    keys = torch.ones(1, 1, lk, dtype=torch.bool, device=device) if mask is None else mask[:, :, 0, :]
    keys = keys.expand(*keys.shape[:2], lk)  # (Bm, Hm, Lk): a view when the mask is (.., 1, 1)
    keys = F.pad(keys, (0, n_blocks * bs - lk)).unflatten(-1, (n_blocks, bs))  # (Bm, Hm, N, bs)
    count = keys.sum(-1)[:, :, None, :]  # (Bm, Hm, 1, N)
    k_whole = count == bs  # tiles whose keys all attend (a cut tile has padding: never whole)
    if not causal:
        return (count > 0).expand(-1, -1, m_blocks, -1), k_whole & q_whole
    k_index = torch.arange(n_blocks * bs, device=device).view(n_blocks, bs)
    first = torch.where(keys, k_index, n_blocks * bs).amin(-1)[:, :, None, :]  # (Bm, Hm, 1, N) first attended key
    k_end = (torch.arange(n_blocks, device=device) + 1) * bs - 1  # (N,) last key of each tile
    any_ = first <= (q_last + offset)[:, None]  # (Bm, Hm, M, N): the first attended key is visible
    full = k_whole & q_whole & (k_end[None, :] <= (q_start + offset)[:, None])
    return any_, full


def _block_mask(mask: Tensor | None, causal: bool, lq: int, lk: int, device: torch.device, mask_mod: Callable):
    """The ``BlockMask`` of a call: tile structure from :func:`_block_states` plus its mask_mod."""
    from torch.nn.attention.flex_attention import BlockMask

    any_, full = _block_states(mask, causal, lq, lk, device)
    partial_num, partial_idx = _ordered_blocks(any_ & ~full)
    full_num, full_idx = _ordered_blocks(full)
    return BlockMask.from_kv_blocks(
        partial_num, partial_idx, full_num, full_idx,
        BLOCK_SIZE=_SPARSE_BLOCK, mask_mod=mask_mod, seq_lengths=(lq, lk),
    )


@functools.lru_cache(maxsize=64)
def _causal_block_mask(lq: int, lk: int, device: torch.device):
    """Causal calls without a mask: one BlockMask per (Lq, Lk, device), built once and reused."""
    offset = lk - lq

    def causal_mod(b, h, q_idx, kv_idx):
        return kv_idx <= q_idx + offset

    with torch.inference_mode(False):  # a cached mask built under inference_mode could not be saved for backward
        return _block_mask(None, True, lq, lk, device, causal_mod)


def _flex_block_mask(mask: Tensor | None, causal: bool, lq: int, lk: int, device: torch.device):
    """The BlockMask of a flex call (None without mask or causality), with no ``(Lq, Lk)`` tensor
    unless ``mask`` is one. Causal-only masks are cached per shape; a mask's tiles depend on its
    values, so they are recomputed per call from the mask itself (``O(B Lk)`` for key padding)."""
    if mask is None:
        return _causal_block_mask(lq, lk, device) if causal else None
    bm, hm, qm, km = (s > 1 for s in mask.shape)  # broadcast dims index 0
    offset = lk - lq

    def mask_mod(b, h, q_idx, kv_idx):
        keep = mask[b if bm else 0, h if hm else 0, q_idx if qm else 0, kv_idx if km else 0]
        return keep & (kv_idx <= q_idx + offset) if causal else keep

    return _block_mask(mask, causal, lq, lk, device, mask_mod)


def _flex_plan(q, k, v, terms, ctxs, mask, causal, scale) -> tuple[Tensor, Tensor, Tensor, Callable | None, object]:
    """What a flex call hands FlexAttention: ``q, k, v`` (transformed, KV heads expanded), the
    combined ``score_mod`` (None without bias terms) and the ``BlockMask`` (None without masking).

    Nothing here is ``O(Lq Lk)`` unless the caller's mask is: the tests trace it with meta tensors
    at long lengths and check the largest tensor it builds.
    """
    h = q.shape[1]
    k, v = _expand_kv(k, h), _expand_kv(v, h)
    q, k = _transform_qk(q, k, terms, ctxs)
    mods: list[Callable] = []
    for term, ctx in zip(terms, ctxs):
        if not term.adds_bias:
            continue
        mod = term.score_mod(q, k, ctx, scale)
        if mod is None:
            raise ValueError(
                f"{type(term).__name__} has no FlexAttention form for this call; use backend='sdpa' or 'reference'"
            )
        mods.append(mod)

    def score_mod(score, b, hh, q_idx, kv_idx):
        for mod in mods:
            score = mod(score, b, hh, q_idx, kv_idx)
        return score

    block_mask = _flex_block_mask(mask, causal, q.shape[2], k.shape[2], q.device)
    return q, k, v, (score_mod if mods else None), block_mask


def _flex(q, k, v, terms, ctxs, mask, causal, scale, dropout_p) -> Tensor:
    if dropout_p > 0.0:
        raise ValueError("backend='flex' does not support dropout; use backend='sdpa' or 'reference'")
    if q.device.type == "cpu" and torch.is_grad_enabled() and any(
        t.requires_grad for t in (q, k, v, *(p for term in terms for p in term.parameters()))
    ):
        raise ValueError(
            "backend='flex' on CPU is inference-only (FlexAttention has no CPU backward); "
            "use backend='reference' for CPU training or run under torch.no_grad()"
        )
    if q.device.type == "cpu":  # no graph is being built (checked above); flex rejects requires_grad inputs on CPU
        q, k, v = q.detach(), k.detach(), v.detach()
    lq, lk = q.shape[2], k.shape[2]
    q, k, v, score_mod, block_mask = _flex_plan(q, k, v, terms, ctxs, mask, causal, scale)
    out = _flex_fn(q.device)(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale)  # (B, H, Lq, Dv)
    empty = _empty_rows(mask, causal, lq, lk, q.device)
    return out if empty is None else out.masked_fill(empty, 0.0)


def _kernel_call(q, k, v, terms, ctxs, mask, causal, scale, dropout_p) -> tuple[Kernel, KernelCall]:
    """The kernel registered under the one term's ``kernel`` name, and the call as the kernel sees it.

    Only for terms that passed ``_backend_problem("triton", terms)``.
    """
    return get_kernel(terms[0].kernel), KernelCall(q, k, v, terms[0], ctxs[0], mask, causal, scale, dropout_p)


def _triton(q, k, v, terms, ctxs, mask, causal, scale, dropout_p) -> Tensor:
    problem = _backend_problem("triton", terms)
    if problem is None:
        kernel, call = _kernel_call(q, k, v, terms, ctxs, mask, causal, scale, dropout_p)
        problem = kernel.unsupported(call)
    if problem is not None:
        raise ValueError(f"backend='triton' cannot run this call: {problem}")
    return kernel.run(call)


_IMPLS = {"reference": _reference, "sdpa": _sdpa, "flex": _flex, "triton": _triton}


# ----------------------------------------------------------------------------- selection
def _make_contexts(
    terms: list[BoundPosition], lq: int, lk: int, causal: bool, device: torch.device
) -> list[PositionContext]:
    return [b.make_context(lq, lk, causal, device) for b in terms]


class KernelFallbackWarning(UserWarning):
    """``backend="auto"`` could not use a fused kernel (a Triton op, or FlexAttention) for a call on
    CUDA and runs it on a slower or more memory-hungry backend; the message says why."""


#: (term type, reason with its numbers blanked) pairs already warned about: each warns once
_WARNED_FALLBACKS: set[tuple[str, str]] = set()

#: a CUDA call with at most this many queries, fewer than its keys, is a decoding step (KV cache):
#: ``auto`` runs its bias terms as an SDPA float bias of ``Lq x Lk`` entries -- O(Lk) per query --
#: rather than FlexAttention, whose graphs and block masks are per length
DECODE_MAX_QUERIES = 16


def _on_cuda(t: Tensor) -> bool:
    """Whether ``auto`` treats the call as a CUDA call (one place, so tests can fake a GPU)."""
    return t.is_cuda


def _warn_fallback(term: str, reason: str, backend: str) -> None:
    """Warn once per (term type, reason): numbers are blanked in the key, so a reason that names a
    length does not warn again at every new length of a decoding loop."""
    key = (term, re.sub(r"\d+", "#", reason))
    if key in _WARNED_FALLBACKS:
        return
    _WARNED_FALLBACKS.add(key)
    warnings.warn(
        f"attention(backend='auto'): {reason}; this {term} call runs on backend={backend!r} instead "
        "(warned once per term and reason)",
        KernelFallbackWarning,
        stacklevel=3,
    )


def _auto_without_kernel(q: Tensor, k: Tensor, bias: list[tuple[PositionTerm, PositionContext]], dropout_p: float) -> tuple[str, str | None]:
    """The backend for bias terms no Triton kernel takes, and why it is not FlexAttention on CUDA
    when flex has their form (None when it is, or off CUDA, or the terms reduce to SDPA columns)."""
    if all(t.has_qk_features(c, q.dtype) for t, c in bias):
        return "sdpa", None
    if not _on_cuda(q):
        return "reference", None
    if not all(_has_score_mod(t) for t, _ in bias):
        return "sdpa", None
    lq, lk = q.shape[2], k.shape[2]
    if lq <= DECODE_MAX_QUERIES and lq < lk:
        return "sdpa", None  # a decoding step: the Lq x Lk bias is O(Lk); flex would compile per length
    if dropout_p > 0.0:
        return "sdpa", (
            "FlexAttention has no dropout, so the bias terms are materialized as a dense (B, H, Lq, Lk) "
            "float mask for SDPA"
        )
    return "flex", None


def select_backend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    terms: list[BoundPosition],
    mask: Tensor | None,
    causal: bool,
    dropout_p: float,
    *,
    scale: float | None = None,
    contexts: list[PositionContext] | None = None,
) -> str:
    """The backend ``auto`` picks for this call (exposed for tests and benchmarks).

    On CUDA: the Triton kernel a term names when it takes the call; SDPA when the terms reduce to
    q/k feature columns or the call is a decoding step (``Lq <= DECODE_MAX_QUERIES`` and
    ``Lq < Lk``); FlexAttention for bias-table terms; SDPA with a float bias otherwise (dropout). A
    call that a kernel could have run but refused, or that flex could run but for dropout, warns
    once per term and reason with a :class:`KernelFallbackWarning`. Off CUDA: SDPA where the terms
    reduce to plain attention, the reference otherwise.

    ``contexts`` are the terms' contexts when the caller has built them (:func:`attention` does, once
    per call); they are built here otherwise.
    """
    plain = [b.term for b in terms]
    if not any(t.adds_bias for t in plain):
        return "sdpa"
    if contexts is None:
        contexts = _make_contexts(terms, q.shape[2], k.shape[2], causal, q.device)
    refused: tuple[str, str] | None = None  # (term type, why its kernel did not run the call)
    if _on_cuda(q) and any(t.kernel is not None and has_kernel(t.kernel) for t in plain):
        problem = _backend_problem("triton", plain)
        if problem is None:
            scale = q.shape[-1] ** -0.5 if scale is None else scale
            kernel, call = _kernel_call(q, k, v, plain, contexts, mask, causal, scale, dropout_p)
            problem = kernel.unsupported(call)
            if problem is None:
                return "triton"
            problem = f"the fused kernel {kernel.name!r} cannot run it: {problem}"
        name = next(type(t).__name__ for t in plain if t.kernel is not None and has_kernel(t.kernel))
        refused = (name, problem)
    bias = [(t, c) for t, c in zip(plain, contexts) if t.adds_bias]
    backend, flex_problem = _auto_without_kernel(q, k, bias, dropout_p)
    if refused is not None:
        _warn_fallback(*refused, backend)
    elif flex_problem is not None:
        _warn_fallback("+".join(type(t).__name__ for t, _ in bias), flex_problem, backend)
    return backend


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
        k: ``(B, Hkv, Lk, D)`` with ``H % Hkv == 0`` (grouped KV heads).
        v: ``(B, Hkv, Lk, Dv)``; ``Dv`` may differ from ``D`` (``backend="triton"`` needs them equal).
        position: a :class:`PositionTerm`, a bound term (``term.bind(q_pos=..., ...)``) or a list.
        mask: boolean, broadcastable to ``(B, H, Lq, Lk)``, True = attend.
        causal: key ``j`` attends only if ``j <= i + Lk - Lq``.
        scale: a finite, nonzero real; defaults to ``1 / sqrt(D)``.
        dropout_p: attention-probability dropout (pass 0 in eval).
        backend: ``"auto" | "reference" | "sdpa" | "flex" | "triton"``.

    q, k, v share one floating dtype and device; the full contract is :func:`_check_inputs`, and a
    call that breaks it raises the same ``ValueError`` whatever the backend. A query with no key to
    attend to (fully masked, ``Lk == 0``, before every key under ``causal``) outputs zeros.

    Returns:
        ``(B, H, Lq, Dv)`` in q's dtype.
    """
    _check_inputs(q, k, v, mask, causal, scale, dropout_p, backend)
    if mask is not None and mask.dim() < 4:
        # one mask layout for every backend (SDPA takes no 1-D mask; the kernel reads (B, 1, 1, Lk))
        mask = mask.reshape((1,) * (4 - mask.dim()) + tuple(mask.shape))  # (Bm, Hm, Lqm, Lkm), a view
    bound = as_bound_terms(position)
    terms = [b.term for b in bound]
    if backend != "auto":
        check_backend(backend, terms)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    ctxs = _make_contexts(bound, q.shape[2], k.shape[2], causal, q.device)  # once per call, for every use
    if _is_empty(q, k):
        # Nothing to fuse, and no fused path launches on an empty grid or reduces over no keys: every
        # backend answers with the reference, which gives zeros for queries without keys (and still
        # runs the terms' own checks), so all backends agree on empty calls by construction.
        backend = "reference"
    elif backend == "auto":
        backend = select_backend(q, k, v, bound, mask, causal, dropout_p, scale=scale, contexts=ctxs)
    return _IMPLS[backend](q, k, v, terms, ctxs, mask, causal, scale, dropout_p)
