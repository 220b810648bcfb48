"""Fused relative attention (Shaw et al. 2018; Music Transformer, Huang et al. 2018) in Triton.

    logits[i, j] = scale * (q_i . k_j + q_i . E[clip(j - i', -K, Khi) + K]),   i' = i + Lk - Lq

with ``Khi = K`` (bidirectional table, ``R = 2K + 1`` rows) or ``0`` (causal table, ``R = K + 1``),
forward and backward without any (Lq, Lk) tensor: memory is O(L) per head, like FlashAttention.
``reference.py`` beside this file computes the same function with materialized logits; the tests
compare the two, forward and every gradient.

Forward (one program per query tile of ``BLOCK`` rows, online softmax over key tiles):
  * For a query tile at ``m0`` and a key tile at ``n0`` the distances ``j - i'`` cover the ``2 BLOCK - 1``
    consecutive values starting at ``c - BLOCK + 1`` with ``c = n0 - m0 - (Lk - Lq)``. Split that window
    into two ``BLOCK``-row *chunks* of E, ``c - BLOCK ..`` ("prev") and ``c ..`` ("cur"). The next key
    tile's prev chunk is this tile's cur chunk, so ``q_tile @ E_chunk^T`` is computed once per key tile
    (one extra tile matmul, about 1.5x the FLOPs of plain attention) and carried in registers -- or
    recomputed, one more matmul for one (BM, BLOCK) fp32 tile fewer in registers (``CARRY_QE``, an
    autotune choice). The diagonal band ``rel[a, b] = cur[a, b - a]`` (``b >= a``) or
    ``prev[a, BLOCK + b - a]`` (``b < a``) is picked out with two ``tl.gather`` along the column axis
    (:func:`_band_from_chunks`).
  * Clipping is free inside the band: E rows are loaded with clamped indices. Key tiles entirely at
    distance ``<= -K`` (or ``>= Khi``) skip the E matmul and add the per-row constant ``q_i . E[0]``
    (``q_i . E[R - 1]``), one dot product per query row for the whole tile range.
  * Causal attention stops at the diagonal tile.

Backward (recompute P from the saved log-sum-exp, as in FlashAttention-2), two kernels:
  * ``_bwd_dkdv_kernel``: one program per key tile, looping over query tiles -> dk, dv (no atomics).
    Here q changes every step, so the band costs two tile matmuls ``q @ E_prev^T``, ``q @ E_cur^T``.
  * ``_bwd_dq_kernel``: one program per query tile, looping over key tiles -> dq and dE. E chunk
    ``c`` receives dS entries from two consecutive key tiles (the upper triangle of tile n, the lower
    one of tile n+1); with dS of the previous tile carried in registers the two halves are merged into
    one dense ``(BLOCK, BLOCK)`` matrix W (:func:`_chunk_from_tiles`), so each chunk costs one matmul for
    dq (``W @ E_chunk``) and one for dE (``q^T @ W``, the chunk transposed) and is *complete* once emitted.
  * Tile matmuls per (query tile, key tile) in the band: forward 3 (plain attention: 2), backward
    6 + 6 (a two-kernel FlashAttention backward: 3 + 4), so about 1.5x the forward and 1.7x the
    backward FLOPs of plain attention (one more each with ``CARRY_QE=False``); fully clipped tiles
    cost what plain attention costs. FlashAttention-2's CUDA backward needs only 5 (dq by atomics);
    a single-kernel backward here (dk, dv by atomics from the query-tile programs) would need 8, at
    the price of atomics contention on dk/dv -- not done, it needs measuring on a GPU first.

dE reduction, atomics and determinism: each query-tile program emits every E row at most once (chunks
are disjoint; clipped rows are summed in registers and added once at the end) with relaxed fp32 atomics
into ``G`` fp32 copies of dE, shape ``(G, R, D)``, program ``(m, bh)`` using copy ``bh % G`` -- O(L)
memory, no (L, L) or (num_tiles, R, D) tensor. ``G`` (:func:`_de_slots`) is about the number of
(batch, head) pairs in flight at once, so concurrent programs rarely add to the same address (programs
of one pair reach a given chunk at different loop steps). Every element receives at most
``ceil(Lq / BLOCK) * ceil(B * H / G)`` adds, and the copies are then summed by an ordinary
deterministic torch reduction; the only nondeterminism is the fp32 order of those adds (relative error
about their count times ``2^-24`` of the sum of magnitudes). Under
``torch.use_deterministic_algorithms(True)`` each (batch, head) gets its own copy and one program that
walks its query tiles in order with a barrier in between, so the adds happen in a fixed order: bitwise
reproducible, at the cost of ``B * H`` programs instead of ``B * H * ceil(Lq / BLOCK)`` for that kernel.

Block sizes are autotuned per (D, causal, dtype) on GPUs (``BLOCK_M == BLOCK_N == BLOCK`` so the
chunk carry lines up); under ``TRITON_INTERPRET=1`` one small config (``INTERPRETER_BLOCK``) is used.
:func:`relative_attention` is a ``torch.library.custom_op`` pair (forward, backward) with fake
implementations, so it composes with ``torch.compile``.
"""

import math
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["relative_attention", "supports", "SUPPORTED_HEAD_DIMS", "SUPPORTED_DTYPES"]

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when this module is imported.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# The one block size used under the interpreter (autotuning needs a GPU); 16 keeps tests fast and
# makes small test lengths span several tiles, ragged last tile included.
INTERPRETER_BLOCK = 16
INTERPRETER_CARRY_QE = True  # the autotuned variant choice (see _FWD_CONFIGS); tests flip it
_LOG2E = 1.4426950408889634


# ----------------------------------------------------------------------------- shared helpers
@triton.jit
def _load_e_chunk(p_e, c, KMAX, KHI, D: tl.constexpr, BLOCK: tl.constexpr):
    """Rows of E for distances ``c .. c + BLOCK - 1``, clipped to ``[-K, Khi]``: ``(BLOCK, D)``."""
    o_r = tl.minimum(tl.maximum(c + tl.arange(0, BLOCK), -KMAX), KHI) + KMAX
    return tl.load(p_e + o_r[:, None] * D + tl.arange(0, D)[None, :])


@triton.jit
def _band_from_chunks(b_prev, b_cur, BLOCK: tl.constexpr):
    """``rel[a, b] = cur[a, b - a]`` if ``b >= a`` else ``prev[a, BLOCK + b - a]``: the skew in registers."""
    o_diff = tl.arange(0, BLOCK)[None, :] - tl.arange(0, BLOCK)[:, None]  # (BM, BN): b - a
    b_from_cur = tl.gather(b_cur, tl.maximum(o_diff, 0), 1)
    b_from_prev = tl.gather(b_prev, tl.minimum(o_diff + BLOCK, BLOCK - 1), 1)
    return tl.where(o_diff >= 0, b_from_cur, b_from_prev)


@triton.jit
def _chunk_from_tiles(b_ds_prev, b_ds_cur, BLOCK: tl.constexpr):
    """Inverse skew: ``W[a, t]``, the dS entry of row a at distance ``chunk start + t``.

    It lies in the previous key tile (column ``t + a``) when ``t + a < BLOCK``, else in the current one
    (column ``t + a - BLOCK``): the two triangles are complementary, so W is dense.
    """
    o_sum = tl.arange(0, BLOCK)[None, :] + tl.arange(0, BLOCK)[:, None]  # (BM, BLOCK): t + a
    b_from_prev = tl.gather(b_ds_prev, tl.minimum(o_sum, BLOCK - 1), 1)
    b_from_cur = tl.gather(b_ds_cur, tl.maximum(o_sum - BLOCK, 0), 1)
    return tl.where(o_sum < BLOCK, b_from_prev, b_from_cur)


@triton.jit
def _visible(o_n, qpos, Lk, p_kpm, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr):
    """Which (query row, key) pairs may attend: ``(1, BN)`` or ``(BM, BN)`` booleans."""
    m_n = o_n < Lk  # (BN,)
    if HAS_KPM:
        m_n = m_n & (tl.load(p_kpm + o_n, mask=m_n, other=0) != 0)
    m_vis = m_n[None, :]
    if CAUSAL:
        m_vis = m_vis & (o_n[None, :] <= qpos[:, None])
    return m_vis


@triton.jit
def _key_tile_ranges(m0, OFF, Lk, KMAX, KHI, BLOCK: tl.constexpr, CAUSAL: tl.constexpr):
    """Key tiles seen by the query tile at ``m0``: ``[0, lo)`` all at distance <= -K, ``[lo, hi)`` the
    band, ``[hi, end)`` all at distance >= Khi. Query rows sit at key positions ``OFF + m0 + a``."""
    if CAUSAL:
        n_stop = tl.minimum(Lk, OFF + m0 + BLOCK)
    else:
        n_stop = Lk + 0 * m0
    nt_end = tl.cdiv(n_stop, BLOCK)
    # tile n is all-clipped-low when its largest distance n0 + BLOCK - 1 - (OFF + m0) <= -K
    nt_lo = tl.minimum(tl.maximum(OFF + m0 - KMAX + 1, 0) // BLOCK, nt_end)
    # ... and all-clipped-high when its smallest distance n0 - (OFF + m0 + BLOCK - 1) >= Khi
    nt_hi = tl.maximum(tl.minimum(tl.cdiv(OFF + m0 + BLOCK - 1 + KHI, BLOCK), nt_end), nt_lo)
    return nt_lo, nt_hi, nt_end


@triton.jit
def _query_tile_ranges(n0, OFF, Lq, KMAX, KHI, BLOCK: tl.constexpr, CAUSAL: tl.constexpr):
    """Query tiles that see the key tile at ``n0``: ``[start, hi)`` all at distance >= Khi, ``[hi, lo)``
    the band, ``[lo, end)`` all at distance <= -K (distances fall as the query tile moves down)."""
    mt_end = tl.cdiv(Lq, BLOCK) + 0 * n0
    if CAUSAL:
        # the first query whose key position OFF + i reaches n0
        mt_start = tl.minimum(tl.maximum(n0 - OFF, 0) // BLOCK, mt_end)
    else:
        mt_start = 0 * n0
    mt_hi = tl.minimum(tl.maximum(tl.maximum(n0 - OFF + 1 - KHI, 0) // BLOCK, mt_start), mt_end)
    mt_lo = tl.minimum(tl.maximum(tl.cdiv(tl.maximum(n0 + BLOCK - 1 + KMAX - OFF, 0), BLOCK), mt_hi), mt_end)
    return mt_start, mt_hi, mt_lo, mt_end


# ----------------------------------------------------------------------------- forward
@triton.jit
def _fwd_tile(b_q, b_rel, p_k, p_v, s_kl, s_vl, p_kpm, n0, qpos, Lk, qk_scale, m_i, l_i, b_acc,
              D: tl.constexpr, BLOCK: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr,
              PRECISION: tl.constexpr):
    """One online-softmax step over the key tile at ``n0``; ``b_rel`` is ``(BM, BN)`` or ``(BM, 1)``."""
    o_n = n0 + tl.arange(0, BLOCK)
    o_d = tl.arange(0, D)
    m_n = o_n < Lk
    b_k = tl.load(p_k + o_n[:, None] * s_kl + o_d[None, :], mask=m_n[:, None], other=0.0)  # (BN, D)
    b_v = tl.load(p_v + o_n[:, None] * s_vl + o_d[None, :], mask=m_n[:, None], other=0.0)  # (BN, D)
    # logits in log2 units: exp2 is the native instruction
    b_s = (tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) + b_rel) * qk_scale  # (BM, BN)
    b_s = tl.where(_visible(o_n, qpos, Lk, p_kpm, CAUSAL, HAS_KPM), b_s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(b_s, 1))  # (BM,), finite: m_i starts at -1e30
    alpha = tl.exp2(m_i - m_new)
    b_p = tl.exp2(b_s - m_new[:, None])  # (BM, BN)
    l_i = l_i * alpha + tl.sum(b_p, 1)
    b_acc = b_acc * alpha[:, None] + tl.dot(b_p.to(b_v.dtype), b_v, input_precision=PRECISION)  # (BM, D)
    return m_new, l_i, b_acc


@triton.jit
def _fwd_kernel(Q, K, V, E, KPM, O, LSE,
                s_qb, s_qh, s_ql, s_kb, s_kh, s_kl, s_vb, s_vh, s_vl, s_eh,
                H, Lq, Lk, OFF, KMAX, KHI, qk_scale,
                D: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, PRECISION: tl.constexpr,
                BLOCK: tl.constexpr, CARRY_QE: tl.constexpr):
    i_m = tl.program_id(0)
    i_bh = tl.program_id(1)
    i_b = (i_bh // H).to(tl.int64)
    i_h = (i_bh % H).to(tl.int64)
    m0 = i_m * BLOCK
    o_m = m0 + tl.arange(0, BLOCK)
    o_d = tl.arange(0, D)
    m_m = o_m < Lq
    qpos = o_m + OFF  # (BM,) key position of each query row
    p_k = K + i_b * s_kb + i_h * s_kh
    p_v = V + i_b * s_vb + i_h * s_vh
    p_e = E + i_h * s_eh
    p_kpm = KPM + i_b * Lk
    b_q = tl.load(Q + i_b * s_qb + i_h * s_qh + o_m[:, None] * s_ql + o_d[None, :],
                  mask=m_m[:, None], other=0.0)  # (BM, D)
    # the constant relative logits of fully clipped tiles: one dot product per row
    b_e_lo = tl.load(p_e + o_d).to(tl.float32)  # (D,) E[0], distance <= -K
    b_e_hi = tl.load(p_e + (KMAX + KHI) * D + o_d).to(tl.float32)  # (D,) E[R-1], distance >= Khi
    b_qe_lo = tl.sum(b_q.to(tl.float32) * b_e_lo[None, :], 1)  # (BM,)
    b_qe_hi = tl.sum(b_q.to(tl.float32) * b_e_hi[None, :], 1)  # (BM,)

    m_i = tl.full([BLOCK], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK], tl.float32)
    b_acc = tl.zeros([BLOCK, D], tl.float32)
    nt_lo, nt_hi, nt_end = _key_tile_ranges(m0, OFF, Lk, KMAX, KHI, BLOCK, CAUSAL)

    for i_n in range(0, nt_lo):
        m_i, l_i, b_acc = _fwd_tile(b_q, b_qe_lo[:, None], p_k, p_v, s_kl, s_vl, p_kpm, i_n * BLOCK, qpos, Lk,
                                    qk_scale, m_i, l_i, b_acc, D, BLOCK, CAUSAL, HAS_KPM, PRECISION)
    # band: carry q @ E_chunk^T of the previous key tile (its "cur" chunk is our "prev" chunk)
    # (CARRY_QE: one E matmul per tile but a (BM, BLOCK) fp32 tile more in registers; else two)
    if CARRY_QE:
        b_e = _load_e_chunk(p_e, nt_lo * BLOCK - OFF - m0 - BLOCK, KMAX, KHI, D, BLOCK)  # (BLOCK, D)
        b_qe_prev = tl.dot(b_q, tl.trans(b_e), input_precision=PRECISION)  # (BM, BLOCK)
    for i_n in range(nt_lo, nt_hi):
        c = i_n * BLOCK - OFF - m0
        b_qe_cur = tl.dot(b_q, tl.trans(_load_e_chunk(p_e, c, KMAX, KHI, D, BLOCK)),
                          input_precision=PRECISION)  # (BM, BLOCK)
        if CARRY_QE:
            b_rel = _band_from_chunks(b_qe_prev, b_qe_cur, BLOCK)  # (BM, BN)
            b_qe_prev = b_qe_cur
        else:
            b_rel = _band_from_chunks(tl.dot(b_q, tl.trans(_load_e_chunk(p_e, c - BLOCK, KMAX, KHI, D, BLOCK)),
                                             input_precision=PRECISION), b_qe_cur, BLOCK)  # (BM, BN)
        m_i, l_i, b_acc = _fwd_tile(b_q, b_rel, p_k, p_v, s_kl, s_vl, p_kpm, i_n * BLOCK, qpos, Lk,
                                    qk_scale, m_i, l_i, b_acc, D, BLOCK, CAUSAL, HAS_KPM, PRECISION)
    for i_n in range(nt_hi, nt_end):
        m_i, l_i, b_acc = _fwd_tile(b_q, b_qe_hi[:, None], p_k, p_v, s_kl, s_vl, p_kpm, i_n * BLOCK, qpos, Lk,
                                    qk_scale, m_i, l_i, b_acc, D, BLOCK, CAUSAL, HAS_KPM, PRECISION)

    # a row that may attend to nothing (all keys padded) gets a zero output and lse = +inf, so the
    # backward's recomputed P is 0 there
    l_safe = tl.where(l_i > 0.0, l_i, 1.0)
    b_o = b_acc / l_safe[:, None]  # (BM, D)
    b_lse = tl.where(l_i > 0.0, m_i + tl.log2(l_safe), float("inf"))  # (BM,) log2 units
    tl.store(O + i_bh.to(tl.int64) * Lq * D + o_m[:, None] * D + o_d[None, :], b_o.to(O.dtype.element_ty),
             mask=m_m[:, None])
    tl.store(LSE + i_bh.to(tl.int64) * Lq + o_m, b_lse, mask=m_m)


# ----------------------------------------------------------------------------- backward: dk, dv
@triton.jit
def _load_query_side(Q, DO, LSE, DELTA, i_b, i_h, i_bh, m0, Lq, s_qb, s_qh, s_ql,
                     D: tl.constexpr, BLOCK: tl.constexpr):
    o_m = m0 + tl.arange(0, BLOCK)
    o_d = tl.arange(0, D)
    m_m = o_m < Lq
    b_q = tl.load(Q + i_b * s_qb + i_h * s_qh + o_m[:, None] * s_ql + o_d[None, :],
                  mask=m_m[:, None], other=0.0)  # (BM, D)
    b_do = tl.load(DO + i_bh * Lq * D + o_m[:, None] * D + o_d[None, :], mask=m_m[:, None], other=0.0)
    b_lse = tl.load(LSE + i_bh * Lq + o_m, mask=m_m, other=float("inf"))  # (BM,) padded rows: P = 0
    b_delta = tl.load(DELTA + i_bh * Lq + o_m, mask=m_m, other=0.0)  # (BM,) rowsum(dO * O)
    return b_q, b_do, b_lse, b_delta


@triton.jit
def _dkdv_tile(b_q, b_do, b_lse, b_delta, b_rel, b_k, b_v, m_vis, qk_scale, b_dk, b_dv,
               PRECISION: tl.constexpr):
    b_s = (tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) + b_rel) * qk_scale  # (BM, BN)
    b_p = tl.where(m_vis, tl.exp2(b_s - b_lse[:, None]), 0.0)  # (BM, BN)
    b_dv += tl.dot(tl.trans(b_p.to(b_do.dtype)), b_do, input_precision=PRECISION)  # (BN, D)
    b_dp = tl.dot(b_do, tl.trans(b_v), input_precision=PRECISION)  # (BM, BN)
    b_ds = b_p * (b_dp - b_delta[:, None])  # (BM, BN) d loss / d logits
    b_dk += tl.dot(tl.trans(b_ds.to(b_q.dtype)), b_q, input_precision=PRECISION)  # (BN, D)
    return b_dk, b_dv


@triton.jit
def _bwd_dkdv_kernel(Q, K, V, E, KPM, DO, LSE, DELTA, DK, DV,
                     s_qb, s_qh, s_ql, s_kb, s_kh, s_kl, s_vb, s_vh, s_vl, s_eh,
                     H, Lq, Lk, OFF, KMAX, KHI, qk_scale, scale,
                     D: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, PRECISION: tl.constexpr,
                     BLOCK: tl.constexpr):
    i_n = tl.program_id(0)
    i_bh = tl.program_id(1).to(tl.int64)
    i_b = i_bh // H
    i_h = i_bh % H
    n0 = i_n * BLOCK
    o_n = n0 + tl.arange(0, BLOCK)
    o_d = tl.arange(0, D)
    m_n = o_n < Lk
    p_e = E + i_h * s_eh
    p_kpm = KPM + i_b * Lk
    b_k = tl.load(K + i_b * s_kb + i_h * s_kh + o_n[:, None] * s_kl + o_d[None, :], mask=m_n[:, None], other=0.0)
    b_v = tl.load(V + i_b * s_vb + i_h * s_vh + o_n[:, None] * s_vl + o_d[None, :], mask=m_n[:, None], other=0.0)
    b_e_lo = tl.load(p_e + o_d).to(tl.float32)  # (D,)
    b_e_hi = tl.load(p_e + (KMAX + KHI) * D + o_d).to(tl.float32)  # (D,)
    b_dk = tl.zeros([BLOCK, D], tl.float32)
    b_dv = tl.zeros([BLOCK, D], tl.float32)
    mt_start, mt_hi, mt_lo, mt_end = _query_tile_ranges(n0, OFF, Lq, KMAX, KHI, BLOCK, CAUSAL)

    for i_m in range(mt_start, mt_hi):
        m0 = i_m * BLOCK
        b_q, b_do, b_lse, b_delta = _load_query_side(Q, DO, LSE, DELTA, i_b, i_h, i_bh, m0, Lq, s_qb, s_qh, s_ql,
                                                     D, BLOCK)
        b_rel = tl.sum(b_q.to(tl.float32) * b_e_hi[None, :], 1)[:, None]  # (BM, 1)
        m_vis = _visible(o_n, m0 + OFF + tl.arange(0, BLOCK), Lk, p_kpm, CAUSAL, HAS_KPM)
        b_dk, b_dv = _dkdv_tile(b_q, b_do, b_lse, b_delta, b_rel, b_k, b_v, m_vis, qk_scale, b_dk, b_dv, PRECISION)
    for i_m in range(mt_hi, mt_lo):
        m0 = i_m * BLOCK
        b_q, b_do, b_lse, b_delta = _load_query_side(Q, DO, LSE, DELTA, i_b, i_h, i_bh, m0, Lq, s_qb, s_qh, s_ql,
                                                     D, BLOCK)
        c = n0 - OFF - m0
        b_qe_prev = tl.dot(b_q, tl.trans(_load_e_chunk(p_e, c - BLOCK, KMAX, KHI, D, BLOCK)),
                           input_precision=PRECISION)  # (BM, BLOCK)
        b_qe_cur = tl.dot(b_q, tl.trans(_load_e_chunk(p_e, c, KMAX, KHI, D, BLOCK)),
                          input_precision=PRECISION)  # (BM, BLOCK)
        b_rel = _band_from_chunks(b_qe_prev, b_qe_cur, BLOCK)  # (BM, BN)
        m_vis = _visible(o_n, m0 + OFF + tl.arange(0, BLOCK), Lk, p_kpm, CAUSAL, HAS_KPM)
        b_dk, b_dv = _dkdv_tile(b_q, b_do, b_lse, b_delta, b_rel, b_k, b_v, m_vis, qk_scale, b_dk, b_dv, PRECISION)
    for i_m in range(mt_lo, mt_end):
        m0 = i_m * BLOCK
        b_q, b_do, b_lse, b_delta = _load_query_side(Q, DO, LSE, DELTA, i_b, i_h, i_bh, m0, Lq, s_qb, s_qh, s_ql,
                                                     D, BLOCK)
        b_rel = tl.sum(b_q.to(tl.float32) * b_e_lo[None, :], 1)[:, None]  # (BM, 1)
        m_vis = _visible(o_n, m0 + OFF + tl.arange(0, BLOCK), Lk, p_kpm, CAUSAL, HAS_KPM)
        b_dk, b_dv = _dkdv_tile(b_q, b_do, b_lse, b_delta, b_rel, b_k, b_v, m_vis, qk_scale, b_dk, b_dv, PRECISION)

    p_out = i_bh * Lk * D + o_n[:, None] * D + o_d[None, :]
    tl.store(DK + p_out, (b_dk * scale).to(DK.dtype.element_ty), mask=m_n[:, None])
    tl.store(DV + p_out, b_dv.to(DV.dtype.element_ty), mask=m_n[:, None])


# ----------------------------------------------------------------------------- backward: dq, dE
@triton.jit
def _ds_tile(b_q, b_do, b_lse, b_delta, b_rel, p_k, p_v, s_kl, s_vl, p_kpm, n0, qpos, Lk, qk_scale,
             D: tl.constexpr, BLOCK: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr,
             PRECISION: tl.constexpr):
    """dS (gradient of the loss w.r.t. the natural-unit logits) of the key tile at ``n0``, and its keys."""
    o_n = n0 + tl.arange(0, BLOCK)
    o_d = tl.arange(0, D)
    m_n = o_n < Lk
    b_k = tl.load(p_k + o_n[:, None] * s_kl + o_d[None, :], mask=m_n[:, None], other=0.0)  # (BN, D)
    b_v = tl.load(p_v + o_n[:, None] * s_vl + o_d[None, :], mask=m_n[:, None], other=0.0)  # (BN, D)
    b_s = (tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) + b_rel) * qk_scale  # (BM, BN)
    m_vis = _visible(o_n, qpos, Lk, p_kpm, CAUSAL, HAS_KPM)
    b_p = tl.where(m_vis, tl.exp2(b_s - b_lse[:, None]), 0.0)  # (BM, BN)
    b_dp = tl.dot(b_do, tl.trans(b_v), input_precision=PRECISION)  # (BM, BN)
    return b_p * (b_dp - b_delta[:, None]), b_k


@triton.jit
def _flush_chunk(p_de, b_de_t, c, b_de_lo, b_de_hi, KMAX, KHI, D: tl.constexpr, BLOCK: tl.constexpr):
    """Add a complete chunk of dE, given transposed ``(D, BLOCK)`` (distances ``c .. c + BLOCK - 1``), to
    the fp32 buffer: rows strictly inside ``(-K, Khi)`` with one atomic each, clipped rows into the
    register sums for rows 0 and R - 1."""
    dist = c + tl.arange(0, BLOCK)  # (BLOCK,)
    o_d = tl.arange(0, D)
    m_inner = (dist > -KMAX) & (dist < KHI)
    tl.atomic_add(p_de + (dist + KMAX)[None, :] * D + o_d[:, None], b_de_t, mask=m_inner[None, :], sem="relaxed")
    b_de_lo += tl.sum(tl.where((dist <= -KMAX)[None, :], b_de_t, 0.0), 1)
    b_de_hi += tl.sum(tl.where((dist >= KHI)[None, :], b_de_t, 0.0), 1)
    return b_de_lo, b_de_hi


@triton.jit
def _bwd_dq_kernel(Q, K, V, E, KPM, DO, LSE, DELTA, DQ, DE, N_SLOTS,
                   s_qb, s_qh, s_ql, s_kb, s_kh, s_kl, s_vb, s_vh, s_vl, s_eh,
                   H, Lq, Lk, OFF, KMAX, KHI, qk_scale, scale,
                   D: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, PRECISION: tl.constexpr,
                   SERIAL: tl.constexpr, BLOCK: tl.constexpr, CARRY_QE: tl.constexpr):
    i_bh = tl.program_id(1).to(tl.int64)
    i_b = i_bh // H
    i_h = i_bh % H
    o_d = tl.arange(0, D)
    p_k = K + i_b * s_kb + i_h * s_kh
    p_v = V + i_b * s_vb + i_h * s_vh
    p_e = E + i_h * s_eh
    p_kpm = KPM + i_b * Lk
    p_de = DE + (i_bh % N_SLOTS) * (KMAX + KHI + 1) * D  # this program's fp32 dE slot (see _de_slots)
    b_e_lo = tl.load(p_e + o_d)  # (D,)
    b_e_hi = tl.load(p_e + (KMAX + KHI) * D + o_d)  # (D,)
    if SERIAL:  # deterministic mode: this program walks all query tiles in order
        mt_first = 0
        mt_last = tl.cdiv(Lq, BLOCK)
    else:
        mt_first = tl.program_id(0)
        mt_last = mt_first + 1
    for i_m in range(mt_first, mt_last):
        m0 = i_m * BLOCK
        o_m = m0 + tl.arange(0, BLOCK)
        qpos = o_m + OFF
        b_q, b_do, b_lse, b_delta = _load_query_side(Q, DO, LSE, DELTA, i_b, i_h, i_bh, m0, Lq, s_qb, s_qh, s_ql,
                                                     D, BLOCK)
        b_qe_lo = tl.sum(b_q.to(tl.float32) * b_e_lo.to(tl.float32)[None, :], 1)  # (BM,)
        b_qe_hi = tl.sum(b_q.to(tl.float32) * b_e_hi.to(tl.float32)[None, :], 1)  # (BM,)
        b_dq = tl.zeros([BLOCK, D], tl.float32)
        b_rs_lo = tl.zeros([BLOCK], tl.float32)  # row sums of dS over fully clipped-low tiles
        b_rs_hi = tl.zeros([BLOCK], tl.float32)
        b_de_lo = tl.zeros([D], tl.float32)  # dE[0] and dE[R-1] of this query tile
        b_de_hi = tl.zeros([D], tl.float32)
        nt_lo, nt_hi, nt_end = _key_tile_ranges(m0, OFF, Lk, KMAX, KHI, BLOCK, CAUSAL)

        for i_n in range(0, nt_lo):
            b_ds, b_k = _ds_tile(b_q, b_do, b_lse, b_delta, b_qe_lo[:, None], p_k, p_v, s_kl, s_vl, p_kpm,
                                 i_n * BLOCK, qpos, Lk, qk_scale, D, BLOCK, CAUSAL, HAS_KPM, PRECISION)
            b_dq += tl.dot(b_ds.to(b_k.dtype), b_k, input_precision=PRECISION)  # (BM, D)
            b_rs_lo += tl.sum(b_ds, 1)

        if CARRY_QE:
            b_qe_prev = tl.dot(b_q, tl.trans(_load_e_chunk(p_e, nt_lo * BLOCK - OFF - m0 - BLOCK, KMAX, KHI, D, BLOCK)),
                               input_precision=PRECISION)  # (BM, BLOCK)
        # dS of the previous band tile, kept in the input dtype: W is rounded to it for its matmuls anyway.
        # The tile before the band went to b_rs_lo, hence zeros.
        b_ds_prev = tl.zeros([BLOCK, BLOCK], b_q.dtype)
        # dE chunks are computed transposed, q^T @ W: q^T is loop-invariant, W stays the B operand
        # (fewer layout conversions than W^T @ q: 5-30% fewer spilled bytes in the sm_90 compile report)
        b_qt = tl.trans(b_q)  # (D, BM)
        for i_n in range(nt_lo, nt_hi):
            c = i_n * BLOCK - OFF - m0
            # E chunks are reloaded (L2-resident, BLOCK x D) rather than carried: registers are the limit here
            b_e_prev = _load_e_chunk(p_e, c - BLOCK, KMAX, KHI, D, BLOCK)  # (BLOCK, D)
            b_qe_cur = tl.dot(b_q, tl.trans(_load_e_chunk(p_e, c, KMAX, KHI, D, BLOCK)),
                              input_precision=PRECISION)  # (BM, BLOCK)
            if CARRY_QE:
                b_rel = _band_from_chunks(b_qe_prev, b_qe_cur, BLOCK)  # (BM, BN)
                b_qe_prev = b_qe_cur
            else:
                b_rel = _band_from_chunks(tl.dot(b_q, tl.trans(b_e_prev), input_precision=PRECISION), b_qe_cur,
                                          BLOCK)  # (BM, BN)
            b_ds, b_k = _ds_tile(b_q, b_do, b_lse, b_delta, b_rel, p_k, p_v, s_kl, s_vl, p_kpm,
                                 i_n * BLOCK, qpos, Lk, qk_scale, D, BLOCK, CAUSAL, HAS_KPM, PRECISION)
            b_ds = b_ds.to(b_q.dtype)
            b_dq += tl.dot(b_ds, b_k, input_precision=PRECISION)  # (BM, D)
            # the chunk at distance c - BLOCK is complete: its dS halves came from this tile and the last
            b_w = _chunk_from_tiles(b_ds_prev, b_ds, BLOCK)  # (BM, BLOCK)
            b_dq += tl.dot(b_w, b_e_prev, input_precision=PRECISION)  # (BM, D)
            b_de = tl.dot(b_qt, b_w, input_precision=PRECISION)  # (D, BLOCK): dE chunk, transposed
            b_de_lo, b_de_hi = _flush_chunk(p_de, b_de, c - BLOCK, b_de_lo, b_de_hi, KMAX, KHI, D, BLOCK)
            b_ds_prev = b_ds
        if nt_hi > nt_lo:  # the last band tile's own chunk (the next tile went to b_rs_hi)
            c = nt_hi * BLOCK - OFF - m0 - BLOCK
            b_w = _chunk_from_tiles(b_ds_prev, tl.zeros([BLOCK, BLOCK], b_q.dtype), BLOCK)  # (BM, BLOCK)
            b_dq += tl.dot(b_w, _load_e_chunk(p_e, c, KMAX, KHI, D, BLOCK), input_precision=PRECISION)
            b_de = tl.dot(b_qt, b_w, input_precision=PRECISION)  # (D, BLOCK)
            b_de_lo, b_de_hi = _flush_chunk(p_de, b_de, c, b_de_lo, b_de_hi, KMAX, KHI, D, BLOCK)

        for i_n in range(nt_hi, nt_end):
            b_ds, b_k = _ds_tile(b_q, b_do, b_lse, b_delta, b_qe_hi[:, None], p_k, p_v, s_kl, s_vl, p_kpm,
                                 i_n * BLOCK, qpos, Lk, qk_scale, D, BLOCK, CAUSAL, HAS_KPM, PRECISION)
            b_dq += tl.dot(b_ds.to(b_k.dtype), b_k, input_precision=PRECISION)
            b_rs_hi += tl.sum(b_ds, 1)

        b_q32 = b_q.to(tl.float32)
        b_dq += b_rs_lo[:, None] * b_e_lo.to(tl.float32)[None, :] + b_rs_hi[:, None] * b_e_hi.to(tl.float32)[None, :]
        b_de_lo += tl.sum(b_rs_lo[:, None] * b_q32, 0)
        b_de_hi += tl.sum(b_rs_hi[:, None] * b_q32, 0)
        tl.atomic_add(p_de + o_d, b_de_lo, sem="relaxed")
        tl.atomic_add(p_de + (KMAX + KHI) * D + o_d, b_de_hi, sem="relaxed")
        tl.store(DQ + i_bh * Lq * D + o_m[:, None] * D + o_d[None, :], (b_dq * scale).to(DQ.dtype.element_ty),
                 mask=(o_m < Lq)[:, None])
        if SERIAL:
            # orders this tile's atomics before the next tile's, which may hit the same rows from other threads
            tl.debug_barrier()


@triton.jit
def _bwd_delta_kernel(O, DO, DELTA, Lq, D: tl.constexpr, BLOCK: tl.constexpr):
    """``delta_i = sum_d dO_id O_id`` in fp32 without fp32 copies of O and dO."""
    i_m = tl.program_id(0)
    i_bh = tl.program_id(1).to(tl.int64)
    o_m = i_m * BLOCK + tl.arange(0, BLOCK)
    o_d = tl.arange(0, D)
    m_m = o_m < Lq
    p = i_bh * Lq * D + o_m[:, None] * D + o_d[None, :]
    b_o = tl.load(O + p, mask=m_m[:, None], other=0.0).to(tl.float32)  # (BM, D)
    b_do = tl.load(DO + p, mask=m_m[:, None], other=0.0).to(tl.float32)  # (BM, D)
    tl.store(DELTA + i_bh * Lq + o_m, tl.sum(b_o * b_do, 1), mask=m_m)


# ----------------------------------------------------------------------------- launch configs
def _configs(blocks_warps_stages: list[tuple[int, int, int]], carry: tuple[bool, ...] = ()) -> list[triton.Config]:
    extra = [{"CARRY_QE": c} for c in carry] or [{}]
    return [
        triton.Config({"BLOCK": b, **e}, num_warps=w, num_stages=s) for b, w, s in blocks_warps_stages for e in extra
    ]


# H100 leads (HOPPER.md, FlashAttention practice): 64- and 128-row tiles, 4 or 8 warps, 2-3 stages.
# BLOCK_M == BLOCK_N is required by the chunk carry. Registers are the constraint: the forward keeps the
# logits, two q.E chunks and the accumulator live, so CARRY_QE=False (recompute the previous chunk's
# q.E, one more matmul) is offered too; at BLOCK = 128 the kernels spill (sm_90 compile, cuobjdump).
_FWD_CONFIGS = _configs([(64, 4, 2), (64, 4, 3), (64, 8, 2), (64, 8, 3), (128, 8, 2)], carry=(True, False))
_DKDV_CONFIGS = _configs([(32, 4, 2), (64, 4, 2), (64, 8, 2), (64, 4, 3), (128, 8, 2)])
_DQ_CONFIGS = _configs([(32, 4, 2), (64, 4, 2), (64, 8, 2), (64, 8, 3)], carry=(True, False))
_TUNE_KEY = ["D", "CAUSAL", "HAS_KPM"]  # the autotuner adds the tensors' dtypes to the key


# With ZOO_RELATIVE_ATTENTION_AUTOTUNE=0 every launch uses these (no tuning: quick GPU test runs). Chosen
# from the sm_90 compile report: 64-row tiles on wgmma, the fewest spills among them.
_DEFAULT_CONFIGS = {
    "_fwd_kernel": triton.Config({"BLOCK": 64, "CARRY_QE": False}, num_warps=8, num_stages=2),
    "_bwd_dkdv_kernel": triton.Config({"BLOCK": 64}, num_warps=8, num_stages=2),
    "_bwd_dq_kernel": triton.Config({"BLOCK": 64, "CARRY_QE": False}, num_warps=8, num_stages=2),
}


def _autotuned(kernel, configs, key=_TUNE_KEY, reset_to_zero=None):
    if INTERPRET:
        return None  # the interpreter launches the plain kernel with INTERPRETER_BLOCK
    return triton.autotune(configs=configs, key=key, reset_to_zero=reset_to_zero)(kernel)


_TUNED = {
    "_fwd_kernel": _autotuned(_fwd_kernel, _FWD_CONFIGS),
    "_bwd_dkdv_kernel": _autotuned(_bwd_dkdv_kernel, _DKDV_CONFIGS),
    # the dE buffer is accumulated with atomics, so every timing run of the tuner starts from zeros
    "_bwd_dq_kernel": _autotuned(_bwd_dq_kernel, _DQ_CONFIGS, key=[*_TUNE_KEY, "SERIAL"], reset_to_zero=["DE"]),
}


# Under the interpreter, pretend to have this many multiprocessors so tests exercise shared dE slots.
INTERPRETER_SMS = 4


def _de_slots(b: int, h: int, lq: int, device: torch.device, per_head: bool, deterministic: bool) -> int:
    """How many fp32 dE copies the dq kernel's programs add into (program (m, bh) uses slot bh % G).

    Programs run roughly in launch order (query tile fastest), so about ``2 * SMs / num_q_tiles``
    (batch, head) pairs are in flight at once, and in-flight programs of one pair reach a given E chunk
    at different loop steps. G of that size keeps at most about one in-flight program per address and
    the buffer at ``G * R * D`` floats instead of ``B * H * R * D`` (at L = 32K, B = 1 a shared table
    needs one copy). Per-head tables need G to be a multiple of H. Deterministic mode gives every
    (batch, head) its own slot, since its single program per pair adds in a fixed order.
    """
    if deterministic:
        return b * h
    sms = INTERPRETER_SMS if INTERPRET else torch.cuda.get_device_properties(device).multi_processor_count
    pairs_in_flight = triton.cdiv(2 * sms, triton.cdiv(lq, 64 if not INTERPRET else INTERPRETER_BLOCK))
    if per_head:
        return h * min(b, max(1, triton.cdiv(pairs_in_flight, h)))
    return min(b * h, max(1, pairs_in_flight))


def _launch(kernel, grid_fn, *args, **meta):
    """Launch the plain ``kernel`` with the interpreter's or the default config, or its autotuned twin."""
    name = kernel.fn.__name__
    if INTERPRET:
        tuned = {"BLOCK": INTERPRETER_BLOCK}
        if "CARRY_QE" in kernel.arg_names:
            tuned["CARRY_QE"] = INTERPRETER_CARRY_QE
        kernel[grid_fn(tuned)](*args, **meta, **tuned)
    elif os.environ.get("ZOO_RELATIVE_ATTENTION_AUTOTUNE", "1") == "0":
        cfg = _DEFAULT_CONFIGS[name]
        if meta["PRECISION"] == "ieee":  # float32 tiles take twice the shared memory: halve them
            cfg = triton.Config({**cfg.kwargs, "BLOCK": 32}, num_warps=4, num_stages=2)
        kernel[grid_fn(cfg.kwargs)](*args, **meta, **cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    else:
        _TUNED[name][grid_fn](*args, **meta)


# ----------------------------------------------------------------------------- validation
def _problem(q: Tensor, k: Tensor, v: Tensor, weight: Tensor, max_distance: int, causal: bool,
             key_padding_mask: Tensor | None) -> str | None:
    """Why the kernel cannot run these inputs, or None."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        return f"q, k, v must be (B, H, L, D), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
    b, h, lq, d = q.shape
    if k.shape != v.shape or k.shape[:2] != (b, h) or k.shape[-1] != d:
        return (f"k and v must be (B={b}, H={h}, Lk, D={d}) (expand grouped KV heads first), "
                f"got {tuple(k.shape)} and {tuple(v.shape)}")
    if lq > k.shape[2]:
        return f"queries must be the last Lq of the Lk keys (Lq <= Lk), got Lq={lq} > Lk={k.shape[2]}"
    if lq == 0 or b * h == 0:
        return "empty input"
    if d not in SUPPORTED_HEAD_DIMS:
        return f"head dim must be one of {SUPPORTED_HEAD_DIMS}, got {d}"
    if q.dtype not in SUPPORTED_DTYPES or k.dtype != q.dtype or v.dtype != q.dtype:
        return f"q, k, v must share one dtype among {SUPPORTED_DTYPES}, got {q.dtype}, {k.dtype}, {v.dtype}"
    if weight.dtype not in SUPPORTED_DTYPES:
        return f"weight dtype must be one of {SUPPORTED_DTYPES}, got {weight.dtype}"
    if not isinstance(max_distance, int) or max_distance < 1:
        return f"max_distance must be an int >= 1, got {max_distance!r}"
    if weight.dim() not in (2, 3) or weight.shape[-1] != d or (weight.dim() == 3 and weight.shape[0] != h):
        return f"weight must be (R, D={d}) or (H={h}, R, D={d}), got {tuple(weight.shape)}"
    rows = weight.shape[-2]
    if rows not in (max_distance + 1, 2 * max_distance + 1):
        return f"weight has {rows} rows; max_distance={max_distance} needs 2K+1={2 * max_distance + 1} or K+1"
    if rows == max_distance + 1 and not causal:
        return "a causal table (K + 1 rows, no positive distances) needs causal=True"
    if key_padding_mask is not None and (
        key_padding_mask.dtype != torch.bool or tuple(key_padding_mask.shape) not in ((b, k.shape[2]), (1, k.shape[2]))
    ):
        return f"key_padding_mask must be bool (B={b} or 1, Lk={k.shape[2]}), got {key_padding_mask.dtype} " \
               f"{tuple(key_padding_mask.shape)}"
    devices = {t.device for t in (q, k, v, weight)} | (set() if key_padding_mask is None else {key_padding_mask.device})
    if len(devices) != 1:
        return f"all inputs must be on one device, got {sorted(str(x) for x in devices)}"
    if not (q.is_cuda or (INTERPRET and q.device.type == "cpu")):
        return f"needs a CUDA device (or TRITON_INTERPRET=1 with CPU tensors), got {q.device}"
    return None


def supports(q: Tensor, k: Tensor, v: Tensor, weight: Tensor, *, key_padding_mask: Tensor | None = None) -> bool:
    """True when :func:`relative_attention` can run these inputs (device, dtypes, head dim, shapes).

    ``k`` and ``v`` may still have grouped heads (``Hkv`` dividing ``H``): callers expand them before
    the call, so they are checked here as if expanded (a zero-copy view).
    """
    if q.dim() == 4 and k.dim() == 4 and v.dim() == 4 and k.shape[1] != q.shape[1] and k.shape[1] > 0 \
            and q.shape[1] % k.shape[1] == 0:
        k, v = (t[:, :1].expand(-1, q.shape[1], -1, -1) for t in (k, v))  # shape-only stand-ins
    rows = weight.shape[-2] if weight.dim() >= 2 else 0
    # the table fixes K: R = 2K + 1 for a bidirectional table (odd R); an even R = K + 1 is causal
    max_distance = (rows - 1) // 2 if rows % 2 == 1 else rows - 1
    return _problem(q, k, v, weight, max(max_distance, 1), True, key_padding_mask) is None


# ----------------------------------------------------------------------------- custom ops
def _geometry(q: Tensor, k: Tensor, weight: Tensor, max_distance: int):
    b, h, lq, d = q.shape
    lk = k.shape[2]
    khi = weight.shape[-2] - 1 - max_distance  # K (bidirectional table) or 0 (causal table)
    s_eh = weight.shape[-2] * d if weight.dim() == 3 else 0  # shared table: every head reads row block 0
    return b, h, lq, lk, d, lk - lq, khi, s_eh


def _inner(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()  # the kernels take any (B, H, L) strides


def _dot_precision(dtype: torch.dtype) -> str:
    # float32 inputs keep float32 products (no TF32 rounding); half inputs ignore the setting
    return "ieee" if dtype == torch.float32 else "tf32"


@torch.library.custom_op("zoo::relative_attention_fwd", mutates_args=())
def _relative_attention_fwd(
    q: Tensor, k: Tensor, v: Tensor, weight: Tensor, key_padding_mask: Tensor | None,
    max_distance: int, causal: bool, scale: float,
) -> tuple[Tensor, Tensor]:
    q, k, v = _inner(q), _inner(k), _inner(v)
    b, h, lq, lk, d, off, khi, s_eh = _geometry(q, k, weight, max_distance)
    e = weight.to(q.dtype).contiguous()  # (R, D) | (H, R, D)
    kpm = q if key_padding_mask is None else key_padding_mask.to(torch.int8).expand(b, lk).contiguous()
    out = torch.empty((b, h, lq, d), device=q.device, dtype=q.dtype)  # (B, H, Lq, D)
    lse = torch.empty((b, h, lq), device=q.device, dtype=torch.float32)  # (B, H, Lq) log2 units
    _launch(
        _fwd_kernel, lambda meta: (triton.cdiv(lq, meta["BLOCK"]), b * h),
        q, k, v, e, kpm, out, lse,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), s_eh,
        h, lq, lk, off, max_distance, khi, scale * _LOG2E,
        D=d, CAUSAL=causal, HAS_KPM=key_padding_mask is not None, PRECISION=_dot_precision(q.dtype),
    )
    return out, lse


@_relative_attention_fwd.register_fake
def _(q, k, v, weight, key_padding_mask, max_distance, causal, scale):
    b, h, lq, d = q.shape
    return q.new_empty((b, h, lq, d)), q.new_empty((b, h, lq), dtype=torch.float32)


@torch.library.custom_op("zoo::relative_attention_bwd", mutates_args=())
def _relative_attention_bwd(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, weight: Tensor, key_padding_mask: Tensor | None,
    out: Tensor, lse: Tensor, max_distance: int, causal: bool, scale: float, deterministic: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    q, k, v = _inner(q), _inner(k), _inner(v)
    b, h, lq, lk, d, off, khi, s_eh = _geometry(q, k, weight, max_distance)
    rows = weight.shape[-2]
    e = weight.to(q.dtype).contiguous()
    kpm = q if key_padding_mask is None else key_padding_mask.to(torch.int8).expand(b, lk).contiguous()
    dout = dout.to(q.dtype).contiguous()  # (B, H, Lq, D)
    delta = torch.empty((b, h, lq), device=q.device, dtype=torch.float32)  # (B, H, Lq) rowsum(dO * O)
    _bwd_delta_kernel[(triton.cdiv(lq, 64), b * h)](out, dout, delta, lq, D=d, BLOCK=64)
    dq = torch.empty((b, h, lq, d), device=q.device, dtype=q.dtype)
    dk = torch.empty((b, h, lk, d), device=q.device, dtype=q.dtype)
    dv = torch.empty((b, h, lk, d), device=q.device, dtype=q.dtype)
    n_slots = _de_slots(b, h, lq, q.device, weight.dim() == 3, deterministic)
    de = torch.zeros((n_slots, rows, d), device=q.device, dtype=torch.float32)  # (G, R, D)
    common = (
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), s_eh,
        h, lq, lk, off, max_distance, khi, scale * _LOG2E, scale,
    )
    meta = dict(D=d, CAUSAL=causal, HAS_KPM=key_padding_mask is not None, PRECISION=_dot_precision(q.dtype))
    _launch(_bwd_dkdv_kernel, lambda m: (triton.cdiv(lk, m["BLOCK"]), b * h),
            q, k, v, e, kpm, dout, lse, delta, dk, dv, *common, **meta)
    _launch(_bwd_dq_kernel, lambda m: (1 if deterministic else triton.cdiv(lq, m["BLOCK"]), b * h),
            q, k, v, e, kpm, dout, lse, delta, dq, de, n_slots, *common, **meta, SERIAL=deterministic)
    if weight.dim() == 3:
        de = de.view(n_slots // h, h, rows, d).sum(0)  # (H, R, D): slot bh % G keeps head h at G-index h mod H
    else:
        de = de.sum(0)  # (R, D)
    de = de * scale
    return dq, dk, dv, de.to(weight.dtype)


@_relative_attention_bwd.register_fake
def _(dout, q, k, v, weight, key_padding_mask, out, lse, max_distance, causal, scale, deterministic):
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), weight.new_empty(weight.shape))


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, weight, key_padding_mask, max_distance, causal, scale = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, weight, key_padding_mask, out, lse)
    ctx.max_distance, ctx.causal, ctx.scale = max_distance, causal, scale
    ctx.deterministic = torch.are_deterministic_algorithms_enabled()
    ctx.mark_non_differentiable(lse)


def _backward(ctx, dout: Tensor, dlse: Tensor | None):
    q, k, v, weight, key_padding_mask, out, lse = ctx.saved_tensors
    dq, dk, dv, dweight = _relative_attention_bwd(
        dout, q, k, v, weight, key_padding_mask, out, lse, ctx.max_distance, ctx.causal, ctx.scale,
        ctx.deterministic or torch.are_deterministic_algorithms_enabled(),
    )
    return dq, dk, dv, dweight, None, None, None, None


_relative_attention_fwd.register_autograd(_backward, setup_context=_setup_context)


def relative_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    weight: Tensor,
    max_distance: int,
    *,
    causal: bool,
    key_padding_mask: Tensor | None = None,
    scale: float | None = None,
) -> Tensor:
    """Fused relative attention: ``softmax(scale * (q k^T + q E_rel^T)) v`` without (Lq, Lk) tensors.

    Args:
        q: ``(B, H, Lq, D)``; the queries are the last ``Lq`` positions of the ``Lk`` keys.
        k, v: ``(B, H, Lk, D)`` (grouped KV heads already expanded).
        weight: ``(R, D)`` shared or ``(H, R, D)`` per head, ``R = 2K + 1`` (row ``r + K`` is distance
            ``r``) or ``K + 1`` (causal table: distances ``-K .. 0``).
        max_distance: ``K``, the clipping distance, ``>= 1`` (may exceed the sequence length).
        causal: key ``j`` is visible only if ``j <= i + Lk - Lq``.
        key_padding_mask: bool ``(B, Lk)``, True = attend; a query with no visible key outputs zeros.
        scale: defaults to ``1 / sqrt(D)``; multiplies both the content and the relative logits.

    Returns:
        ``(B, H, Lq, D)`` in q's dtype. Differentiable w.r.t. q, k, v and weight; the backward is
        deterministic under ``torch.use_deterministic_algorithms(True)`` (see the module docstring).
    """
    problem = _problem(q, k, v, weight, max_distance, causal, key_padding_mask)
    if problem is not None:
        raise ValueError(f"relative_attention: {problem}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"relative_attention: scale must be finite, got {scale}")
    out, _ = _relative_attention_fwd(q, k, v, weight, key_padding_mask, max_distance, causal, scale)
    return out
