"""Fused MatchAttention (Yan et al. 2025) in Triton: forward and backward without a window tensor.

The function is :func:`zoo.core_attention.kernels.match_attention.match_attention` (its docstring is
the contract; ``reference.py`` beside this file is the readable form the tests compare with). Centres
arrive here already clamped. One program handles ``BLOCK`` queries of one (batch, head); every query
has its own ``S x S`` key window (``S = 2r + 2``), so the keys are gathered row by row -- one key row
``(BLOCK, D)`` per window position -- and nothing of size ``(N, S^2, C)`` is ever stored.

Forward, two passes over the window positions ``t = (dy, dx)``:
  1. scores ``s_t = -scale |q - k_t|_1`` and an online max / sum of exponentials for each of the four
     sub-windows (nw, ne, sw, se) at once, as a ``(BLOCK, 4)`` block: sub-window ``u`` starts at
     ``(u // 2, u % 2)``, so whether ``t`` belongs to it is a ``(4,)`` mask computed from ``t``;
  2. ``P_t = sum_u w_u exp(s_t - lse_u) [t in u]`` (recomputing ``s_t``), ``out += P_t v_t``;
     ``P_t`` is written out only when the caller asked for the weights.
  Saved for the backward: the four log-sum-exps per query, ``(B H, N, 4)``.

Backward (softmax backward per sub-window, recomputing ``s`` from the saved log-sum-exps), two
passes again, with ``g_t = dout . v_t + dweights_t``:
  1. ``delta_u = sum_{t in u} p_{u,t} g_t`` (also ``d out / d w_u``);
  2. ``ds_t = sum_{u ni t} w_u p_{u,t} (g_t - delta_u)``; ``dq += -scale ds_t sign(q - k_t)``;
     ``dk_t += scale ds_t sign(q - k_t)`` and ``dv_t += P_t dout`` by atomic adds, since overlapping
     windows of many queries share keys;
  and the centre's gradient through the bilinear weights,
  ``dcx = (1 - fy)(delta_ne - delta_nw) + fy (delta_se - delta_sw)``,
  ``dcy = (1 - fx)(delta_sw - delta_nw) + fx (delta_se - delta_ne)``.

Precision: float16 / bfloat16 / float32 inputs compute in float32 (dk, dv accumulate in float32
buffers, cast at the end; fp32 atomics make their low bits depend on the order of the adds);
float64 inputs compute in float64 throughout, for exact comparisons. Under ``TRITON_INTERPRET=1``
(CPU) bfloat16 is refused: the interpreter runs on numpy, which has no bfloat16.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["INTERPRET", "dtype_problem", "match_attention_triton"]

# Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when this module is imported.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# queries per program: small under the interpreter so that tiny tests span several programs (with
# ragged last blocks), larger on GPUs. The GPU value is a starting point, not tuned (no GPU was at hand).
INTERPRETER_BLOCK = 16
GPU_BLOCK = 64


@triton.jit
def _to_acc(x, ACC_FP64: tl.constexpr):
    if ACC_FP64:
        return x.to(tl.float64)
    else:
        return x.to(tl.float32)


@triton.jit
def _program_queries(Nq, BLOCK: tl.constexpr):
    """This program's (batch, head) index and its ``BLOCK`` query indices with their bounds mask."""
    o_q = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    return tl.program_id(1).to(tl.int64), o_q, o_q < Nq


@triton.jit
def _query_side(Q, CEN, i_bh, o_q, m_q, Nq, Wk, R: tl.constexpr, D: tl.constexpr, BLOCK_D: tl.constexpr,
                ACC_FP64: tl.constexpr):
    """q rows ``(BLOCK, BLOCK_D)``, each window's flat top-left key index, fractional centre, blend."""
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < D
    b_q = _to_acc(tl.load(Q + i_bh * Nq * D + o_q[:, None] * D + o_d[None, :],
                          mask=m_q[:, None] & m_d[None, :], other=0.0), ACC_FP64)  # (BLOCK, BLOCK_D)
    # padded rows get a centre at (R, R): a valid window, never stored
    b_cx = _to_acc(tl.load(CEN + i_bh * Nq * 2 + o_q * 2, mask=m_q, other=R), ACC_FP64)  # (BLOCK,)
    b_cy = _to_acc(tl.load(CEN + i_bh * Nq * 2 + o_q * 2 + 1, mask=m_q, other=R), ACC_FP64)  # (BLOCK,)
    b_x0 = tl.floor(b_cx)
    b_y0 = tl.floor(b_cy)
    b_fx = b_cx - b_x0  # (BLOCK,)
    b_fy = b_cy - b_y0
    o_corner = (b_y0.to(tl.int64) - R) * Wk + (b_x0.to(tl.int64) - R)  # (BLOCK,) key index of (dy, dx) = 0
    # sub-window u in (nw, ne, sw, se) starts at (dy, dx) = (u // 2, u % 2)
    o_u = tl.arange(0, 4)
    b_wx = tl.where((o_u % 2)[None, :] == 1, b_fx[:, None], 1.0 - b_fx[:, None])  # (BLOCK, 4)
    b_wy = tl.where((o_u // 2)[None, :] == 1, b_fy[:, None], 1.0 - b_fy[:, None])  # (BLOCK, 4)
    return b_q, o_corner, b_fx, b_fy, b_wx * b_wy


@triton.jit
def _key_row(X, i_bh, o_key, m_q, Nk, C: tl.constexpr, BLOCK_C: tl.constexpr, ACC_FP64: tl.constexpr):
    """One gathered key (or value) row per query: ``(BLOCK, BLOCK_C)``."""
    o_c = tl.arange(0, BLOCK_C)
    return _to_acc(tl.load(X + i_bh * Nk * C + o_key[:, None] * C + o_c[None, :],
                           mask=m_q[:, None] & (o_c < C)[None, :], other=0.0), ACC_FP64)


@triton.jit
def _in_sub_windows(t, SIDE: tl.constexpr):
    """Which of the four sub-windows contain window position ``t``: ``(4,)`` booleans."""
    o_u = tl.arange(0, 4)
    a_y = t // SIDE - o_u // 2
    a_x = t % SIDE - o_u % 2
    return (a_y >= 0) & (a_y <= SIDE - 2) & (a_x >= 0) & (a_x <= SIDE - 2)


@triton.jit
def _match_attention_fwd_kernel(
    Q, K, V, CEN, O, LSE, WOUT, Nq, Nk, Wk, scale,
    R: tl.constexpr, D: tl.constexpr, DV: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK: tl.constexpr, RETURN_W: tl.constexpr, ACC_FP64: tl.constexpr,
):
    SIDE: tl.constexpr = 2 * R + 2
    i_bh, o_q, m_q = _program_queries(Nq, BLOCK)
    b_q, o_corner, b_fx, b_fy, b_bil = _query_side(Q, CEN, i_bh, o_q, m_q, Nq, Wk, R, D, BLOCK_D, ACC_FP64)
    o_u = tl.arange(0, 4)

    # pass 1: per sub-window running max and sum of exponentials, (BLOCK, 4)
    b_m = _to_acc(tl.full([BLOCK, 4], -1.0e30, tl.float32), ACC_FP64)
    b_l = _to_acc(tl.zeros([BLOCK, 4], tl.float32), ACC_FP64)
    for t in range(SIDE * SIDE):
        o_key = o_corner + (t // SIDE) * Wk + t % SIDE  # (BLOCK,)
        b_k = _key_row(K, i_bh, o_key, m_q, Nk, D, BLOCK_D, ACC_FP64)  # (BLOCK, BLOCK_D)
        b_s = -tl.sum(tl.abs(b_q - b_k), 1) * scale  # (BLOCK,)
        m_in = _in_sub_windows(t, SIDE)[None, :]  # (1, 4)
        b_m_new = tl.where(m_in, tl.maximum(b_m, b_s[:, None]), b_m)  # (BLOCK, 4)
        # exponentiate only members (an exp of a non-member's s - m could overflow before the where)
        b_l = b_l * tl.exp(b_m - b_m_new) + tl.exp(tl.where(m_in, b_s[:, None] - b_m_new, float("-inf")))
        b_m = b_m_new
    b_lse = b_m + tl.log(b_l)  # (BLOCK, 4)

    # pass 2: effective weights and the output
    b_acc = _to_acc(tl.zeros([BLOCK, BLOCK_DV], tl.float32), ACC_FP64)
    for t in range(SIDE * SIDE):
        o_key = o_corner + (t // SIDE) * Wk + t % SIDE
        b_k = _key_row(K, i_bh, o_key, m_q, Nk, D, BLOCK_D, ACC_FP64)
        b_v = _key_row(V, i_bh, o_key, m_q, Nk, DV, BLOCK_DV, ACC_FP64)  # (BLOCK, BLOCK_DV)
        b_s = -tl.sum(tl.abs(b_q - b_k), 1) * scale
        m_in = _in_sub_windows(t, SIDE)[None, :]
        b_p = tl.sum(tl.exp(tl.where(m_in, b_s[:, None] - b_lse, float("-inf"))) * b_bil, 1)  # (BLOCK,)
        b_acc += b_p[:, None] * b_v
        if RETURN_W:
            tl.store(WOUT + i_bh * Nq * SIDE * SIDE + o_q * SIDE * SIDE + t, b_p.to(WOUT.dtype.element_ty), mask=m_q)

    o_dv = tl.arange(0, BLOCK_DV)
    tl.store(O + i_bh * Nq * DV + o_q[:, None] * DV + o_dv[None, :], b_acc.to(O.dtype.element_ty),
             mask=m_q[:, None] & (o_dv < DV)[None, :])
    tl.store(LSE + i_bh * Nq * 4 + o_q[:, None] * 4 + o_u[None, :], b_lse, mask=m_q[:, None])


@triton.jit
def _match_attention_bwd_kernel(
    Q, K, V, CEN, LSE, DO, DW, DQ, DK, DVAL, DCEN, Nq, Nk, Wk, scale,
    R: tl.constexpr, D: tl.constexpr, DV: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr,
    BLOCK: tl.constexpr, HAS_DW: tl.constexpr, ACC_FP64: tl.constexpr,
):
    SIDE: tl.constexpr = 2 * R + 2
    i_bh, o_q, m_q = _program_queries(Nq, BLOCK)
    o_d = tl.arange(0, BLOCK_D)
    m_d = o_d < D
    o_dv = tl.arange(0, BLOCK_DV)
    m_dv = o_dv < DV
    o_u = tl.arange(0, 4)
    b_q, o_corner, b_fx, b_fy, b_bil = _query_side(Q, CEN, i_bh, o_q, m_q, Nq, Wk, R, D, BLOCK_D, ACC_FP64)
    b_lse = _to_acc(tl.load(LSE + i_bh * Nq * 4 + o_q[:, None] * 4 + o_u[None, :], mask=m_q[:, None], other=0.0),
                    ACC_FP64)  # (BLOCK, 4)
    b_do = _to_acc(tl.load(DO + i_bh * Nq * DV + o_q[:, None] * DV + o_dv[None, :],
                           mask=m_q[:, None] & m_dv[None, :], other=0.0), ACC_FP64)  # (BLOCK, BLOCK_DV); 0 on padding

    # pass 1: delta_u = sum_{t in u} p_{u,t} g_t
    b_delta = _to_acc(tl.zeros([BLOCK, 4], tl.float32), ACC_FP64)
    for t in range(SIDE * SIDE):
        o_key = o_corner + (t // SIDE) * Wk + t % SIDE
        b_k = _key_row(K, i_bh, o_key, m_q, Nk, D, BLOCK_D, ACC_FP64)
        b_v = _key_row(V, i_bh, o_key, m_q, Nk, DV, BLOCK_DV, ACC_FP64)
        b_s = -tl.sum(tl.abs(b_q - b_k), 1) * scale  # (BLOCK,)
        b_psub = tl.exp(tl.where(_in_sub_windows(t, SIDE)[None, :], b_s[:, None] - b_lse, float("-inf")))  # (BLOCK, 4)
        b_g = tl.sum(b_do * b_v, 1)  # (BLOCK,)
        if HAS_DW:
            b_g += _to_acc(tl.load(DW + i_bh * Nq * SIDE * SIDE + o_q * SIDE * SIDE + t, mask=m_q, other=0.0),
                           ACC_FP64)
        b_delta += b_psub * b_g[:, None]

    # pass 2: score gradients -> dq (registers), dk and dv (atomics)
    b_dq = _to_acc(tl.zeros([BLOCK, BLOCK_D], tl.float32), ACC_FP64)
    for t in range(SIDE * SIDE):
        o_key = o_corner + (t // SIDE) * Wk + t % SIDE
        b_k = _key_row(K, i_bh, o_key, m_q, Nk, D, BLOCK_D, ACC_FP64)
        b_v = _key_row(V, i_bh, o_key, m_q, Nk, DV, BLOCK_DV, ACC_FP64)
        b_diff = b_q - b_k  # (BLOCK, BLOCK_D)
        b_s = -tl.sum(tl.abs(b_diff), 1) * scale
        b_psub = tl.exp(tl.where(_in_sub_windows(t, SIDE)[None, :], b_s[:, None] - b_lse, float("-inf"))) * b_bil
        b_g = tl.sum(b_do * b_v, 1)
        if HAS_DW:
            b_g += _to_acc(tl.load(DW + i_bh * Nq * SIDE * SIDE + o_q * SIDE * SIDE + t, mask=m_q, other=0.0),
                           ACC_FP64)
        b_ds = tl.sum(b_psub * (b_g[:, None] - b_delta), 1)  # (BLOCK,) d loss / d s_t
        b_sign = tl.where(b_diff > 0, 1.0, tl.where(b_diff < 0, -1.0, 0.0))  # (BLOCK, BLOCK_D)
        b_dsq = (b_ds * scale)[:, None] * b_sign  # (BLOCK, BLOCK_D): d loss / d k_t
        b_dq -= b_dsq
        tl.atomic_add(DK + i_bh * Nk * D + o_key[:, None] * D + o_d[None, :], b_dsq,
                      mask=m_q[:, None] & m_d[None, :], sem="relaxed")
        tl.atomic_add(DVAL + i_bh * Nk * DV + o_key[:, None] * DV + o_dv[None, :], tl.sum(b_psub, 1)[:, None] * b_do,
                      mask=m_q[:, None] & m_dv[None, :], sem="relaxed")

    tl.store(DQ + i_bh * Nq * D + o_q[:, None] * D + o_d[None, :], b_dq, mask=m_q[:, None] & m_d[None, :])
    # d out / d w_u = delta_u; w = (wx, wy) products of the fractional centre
    b_nw = tl.sum(tl.where(o_u[None, :] == 0, b_delta, 0.0), 1)  # (BLOCK,)
    b_ne = tl.sum(tl.where(o_u[None, :] == 1, b_delta, 0.0), 1)
    b_sw = tl.sum(tl.where(o_u[None, :] == 2, b_delta, 0.0), 1)
    b_se = tl.sum(tl.where(o_u[None, :] == 3, b_delta, 0.0), 1)
    b_dcx = (1.0 - b_fy) * (b_ne - b_nw) + b_fy * (b_se - b_sw)
    b_dcy = (1.0 - b_fx) * (b_sw - b_nw) + b_fx * (b_se - b_ne)
    tl.store(DCEN + i_bh * Nq * 2 + o_q * 2, b_dcx, mask=m_q)
    tl.store(DCEN + i_bh * Nq * 2 + o_q * 2 + 1, b_dcy, mask=m_q)


def dtype_problem(q: Tensor) -> str | None:
    """Why the kernel cannot take q's dtype on q's device, or None."""
    if q.dtype == torch.bfloat16 and not q.is_cuda:
        return ("bfloat16 is not supported under the Triton interpreter (TRITON_INTERPRET=1 runs on numpy, "
                "which has no bfloat16); use float16, float32 or float64 on CPU, or a CUDA device")
    if q.dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        return f"the kernel takes float16, bfloat16, float32 or float64, got {q.dtype}"
    return None


def _meta(q: Tensor, v: Tensor, radius: int) -> dict:
    return dict(
        R=radius, D=q.shape[-1], DV=v.shape[-1],
        BLOCK_D=triton.next_power_of_2(q.shape[-1]), BLOCK_DV=triton.next_power_of_2(v.shape[-1]),
        BLOCK=INTERPRETER_BLOCK if INTERPRET else GPU_BLOCK, ACC_FP64=q.dtype == torch.float64,
    )


class _MatchAttention(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, centers, radius, scale, return_weights):
        b, h, hq, wq, d = q.shape
        hk, wk, dv = k.shape[2], k.shape[3], v.shape[-1]
        nq, nk, side = hq * wq, hk * wk, 2 * radius + 2
        acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        q_, k_, v_ = (t.contiguous() for t in (q, k, v))
        cen = centers.to(acc).contiguous()  # (B, H, Hq, Wq, 2)
        out = torch.empty(b, h, hq, wq, dv, device=q.device, dtype=q.dtype)
        lse = torch.empty(b, h, hq, wq, 4, device=q.device, dtype=acc)  # per sub-window log-sum-exp
        weights = torch.empty(b, h, hq, wq, side * side, device=q.device, dtype=q.dtype) if return_weights else out
        meta = _meta(q, v, radius)
        grid = (triton.cdiv(nq, meta["BLOCK"]), b * h)
        _match_attention_fwd_kernel[grid](q_, k_, v_, cen, out, lse, weights, nq, nk, wk, scale,
                                          RETURN_W=return_weights, **meta)
        ctx.save_for_backward(q_, k_, v_, cen, lse)
        ctx.radius, ctx.scale, ctx.centers_dtype = radius, scale, centers.dtype
        return out, (weights if return_weights else None)

    @staticmethod
    def backward(ctx, dout, dweights):
        q, k, v, cen, lse = ctx.saved_tensors
        b, h, hq, wq, d = q.shape
        hk, wk, dv = k.shape[2], k.shape[3], v.shape[-1]
        acc = cen.dtype
        dout = torch.zeros_like(q[..., :1].expand(*q.shape[:4], dv)) if dout is None else dout.contiguous()
        dq = torch.empty(q.shape, device=q.device, dtype=acc)
        dk = torch.zeros(k.shape, device=q.device, dtype=acc)  # atomics target
        dval = torch.zeros(v.shape, device=q.device, dtype=acc)  # atomics target
        dcen = torch.empty(cen.shape, device=q.device, dtype=acc)
        has_dw = dweights is not None
        dw = dweights.contiguous() if has_dw else dout
        meta = _meta(q, v, ctx.radius)
        grid = (triton.cdiv(hq * wq, meta["BLOCK"]), b * h)
        _match_attention_bwd_kernel[grid](q, k, v, cen, lse, dout, dw, dq, dk, dval, dcen,
                                          hq * wq, hk * wk, wk, ctx.scale, HAS_DW=has_dw, **meta)
        return (dq.to(q.dtype), dk.to(k.dtype), dval.to(v.dtype), dcen.to(ctx.centers_dtype), None, None, None)


def match_attention_triton(
    q: Tensor, k: Tensor, v: Tensor, centers: Tensor, radius: int, scale: float, return_weights: bool
) -> tuple[Tensor, Tensor | None]:
    """The fused op on checked inputs with clamped centres: ``(out, weights or None)``."""
    return _MatchAttention.apply(q, k, v, centers, radius, scale, return_weights)
