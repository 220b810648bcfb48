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
* ``triton``    -- the fused kernel that the (single) term names in ``PositionTerm.kernel``, looked
                  up in the registry of :mod:`zoo.core_attention.kernels`; the op decides per call
                  whether it can run it.
* ``auto``      -- triton on CUDA where a kernel covers the term; sdpa where the terms reduce to
                  plain attention (or, on CUDA, to a float mask); flex on CUDA for bias-table terms;
                  the reference otherwise (CPU training with bias terms included).

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
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from .kernels import Kernel, KernelCall, get_kernel
from .positions.base import BoundPosition, PositionContext, PositionTerm, as_bound_terms

__all__ = ["attention", "BACKENDS", "check_backend", "select_backend", "supported_backends"]

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
    if term.kernel is not None:
        try:
            get_kernel(term.kernel)
            names.append("triton")
        except ValueError:
            pass
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
    return [term.qk_features(q, k, ctx, scale) if term.adds_bias else None for term, ctx in zip(terms, ctxs)]


def _sdpa(q, k, v, terms, ctxs, mask, causal, scale, dropout_p) -> Tensor:
    h, d = q.shape[1], q.shape[-1]
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


def _flex(q, k, v, terms, ctxs, mask, causal, scale, dropout_p) -> Tensor:
    from torch.nn.attention.flex_attention import create_block_mask

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

    ``contexts`` are the terms' contexts when the caller has built them (:func:`attention` does, once
    per call); they are built here otherwise.
    """
    plain = [b.term for b in terms]
    if not any(t.adds_bias for t in plain):
        return "sdpa"
    if contexts is None:
        contexts = _make_contexts(terms, q.shape[2], k.shape[2], causal, q.device)
    if q.is_cuda and _backend_problem("triton", plain) is None:
        scale = q.shape[-1] ** -0.5 if scale is None else scale
        kernel, call = _kernel_call(q, k, v, plain, contexts, mask, causal, scale, dropout_p)
        if kernel.unsupported(call) is None:
            return "triton"
    bias = [(t, c) for t, c in zip(plain, contexts) if t.adds_bias]
    if all(t.has_qk_features(c, q.dtype) for t, c in bias):
        return "sdpa"
    if q.is_cuda:
        if dropout_p == 0.0 and all(_has_score_mod(t) for t, _ in bias):
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
    bound = as_bound_terms(position)
    terms = [b.term for b in bound]
    if backend != "auto":
        check_backend(backend, terms)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    ctxs = _make_contexts(bound, q.shape[2], k.shape[2], causal, q.device)  # once per call, for every use
    if backend == "auto":
        backend = select_backend(q, k, v, bound, mask, causal, dropout_p, scale=scale, contexts=ctxs)
    return _IMPLS[backend](q, k, v, terms, ctxs, mask, causal, scale, dropout_p)
