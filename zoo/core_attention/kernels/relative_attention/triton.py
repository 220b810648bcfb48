"""Fused relative attention (Shaw et al. 2018; Music Transformer, Huang et al. 2018) in Triton.

    logits[i, j] = scale * (q_i . k_j + q_i . E[clip(j - i', -K, Khi) + K]),   i' = i + Lk - Lq
    out = dropout(softmax(logits over the visible keys)) v

with ``Khi = K`` (bidirectional table, ``R = 2K + 1`` rows) or ``0`` (causal table, ``R = K + 1``),
forward and backward without any (Lq, Lk) tensor: memory is O(L) per head, like FlashAttention.
``reference.py`` beside this file computes the same function with materialized logits; the tests
compare the two, forward and every gradient (with dropout: given the kernel's mask, :func:`dropout_mask`).

Forward (``_fwd_kernel``, one program per query tile of ``BLOCK`` rows, online softmax over key tiles):
  * For a query tile at ``m0`` and a key tile at ``n0`` the distances ``j - i'`` cover the ``2 BLOCK - 1``
    consecutive values starting at ``c - BLOCK + 1`` with ``c = n0 - m0 - (Lk - Lq)``. Split that window
    into two ``BLOCK``-row *chunks* of E, ``c - BLOCK ..`` ("prev") and ``c ..`` ("cur"). The next key
    tile's prev chunk is this tile's cur chunk, so ``q_tile @ E_chunk^T`` is computed once per key tile
    and carried in registers (``CARRY_QE``; the autotuner may instead recompute it, one matmul more for
    one (BM, BLOCK) fp32 tile fewer in registers).
  * One skew pass picks the diagonal band ``rel[a, b] = cur[a, b - a]`` (``b >= a``) or
    ``prev[a, BLOCK + b - a]`` (``b < a``) out of the two chunks: an elementwise select in the chunks'
    own layout, then one ``tl.gather`` that rotates row ``a`` by ``a`` (:func:`_band_from_chunks`).
  * Clipping is free inside the band: E rows are loaded with clamped indices. Key tiles entirely at
    distance ``<= -K`` (or ``>= Khi``) skip the E matmul and add the per-row constant ``q_i . E[0]``
    (``q_i . E[R - 1]``), one dot product per query row for the whole tile range.
  * Causal attention stops at the diagonal tile.

Backward (``_bwd_kernel``: one query-major pass, P recomputed from the saved log-sum-exp as in
FlashAttention-2): one program per query tile walks its key tiles and produces dq in registers, and dk,
dv, dE with relaxed fp32 atomics. E chunk ``c`` receives dS entries from two consecutive key tiles (the
upper triangle of tile n, the lower one of tile n+1); with dS of the neighbouring tile carried in
registers the two halves are merged by one inverse skew pass into a dense ``(BLOCK, BLOCK)`` matrix W
(:func:`_chunk_from_tiles`), so each chunk costs one matmul for dq (``W @ E_chunk``) and one for dE
(``q^T @ W``) and is *complete* once emitted. Key tiles are walked from the last one down: at a given
loop step the programs of one (batch, head) are at different key tiles (each starts at its own
diagonal), so their dk/dv atomics rarely meet at one address.

Tile matmuls per (query tile, key tile) in the band -- ``benchmarks/relative_attention.py
--compile-report`` measures them by counting ``tl.dot`` calls under the interpreter:

  ============  =====================================  =========================================
  pass          this kernel (``CARRY_QE``, default)    plain attention (FlashAttention-2)
  ============  =====================================  =========================================
  forward       3: q k^T, q E_chunk^T, P v             2: q k^T, P v
  backward      8: q k^T, q E_chunk^T, dO v^T, P^T dO,  5: q k^T, dO v^T, P^T dO, dS^T q, dS k
                dS^T q, dS k, W E_chunk, q^T W
  ============  =====================================  =========================================

(before issue 17: forward 3-4, backward 12-13 in two kernels, 15-17 in all). Fully clipped tiles cost
what plain attention costs. ``CARRY_QE=False`` adds one matmul to each pass.

Dropout (``dropout_p > 0``): the probability of (batch-head ``bh``, query row ``i``, key ``j``) is kept
when ``tl.rand(seed, (bh * Lq + i) * Lk + j) >= p`` (Philox, 64-bit counters) and scaled by
``1 / (1 - p)``. The backward regenerates the same bits from the same seed and offsets, so no mask is
stored; ``delta = rowsum(dO * O)`` of the dropped output is still ``sum_j P dP`` of the dropped
probabilities, so the FlashAttention backward identity holds unchanged. The seed is drawn from torch's
default (CPU) generator on every call (:func:`draw_seed`), so ``torch.manual_seed`` reproduces a run.

Atomics and determinism: dk and dv go to fp32 buffers of k's shape (O(L)); dE to ``G`` fp32 copies,
``(G, R, D)``, program ``(m, bh)`` using copy ``bh % G``, each query-tile program emitting every E row at
most once (chunks are disjoint; clipped rows are summed in registers and added once at the end). ``G``
(:func:`_de_slots`) is about the number of (batch, head) pairs in flight at once, so concurrent programs
rarely add to the same address. The copies are summed by an ordinary torch reduction; the only
nondeterminism is the fp32 order of the adds. Under ``torch.use_deterministic_algorithms(True)`` each
(batch, head) gets its own dE copy and one program that walks its query tiles in order with a barrier
in between, so every add happens in a fixed order: bitwise reproducible, at the cost of ``B * H``
programs instead of ``B * H * ceil(Lq / BLOCK)``.

Block sizes are autotuned per (D, causal, key padding, dropout, dtype, power-of-two bucket of Lk) on
GPUs (``BLOCK_M == BLOCK_N == BLOCK`` so the chunk carry lines up); under ``TRITON_INTERPRET=1`` one
small config (``INTERPRETER_BLOCK``) is used, and bfloat16 is refused (the interpreter's bf16 ``tl.dot``
is wrong). :func:`relative_attention` is a ``torch.library.custom_op`` pair (forward, backward) with fake
implementations, so it composes with ``torch.compile``.
"""

import math
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["relative_attention", "supports", "dropout_mask", "draw_seed", "SUPPORTED_HEAD_DIMS", "SUPPORTED_DTYPES"]

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
    """``rel[a, b] = cur[a, b - a]`` if ``b >= a`` else ``prev[a, BLOCK + b - a]``: the skew in registers.

    Both cases read column ``t = (b - a) mod BLOCK``, and key ``b = (a + t) mod BLOCK`` is on or right of
    the diagonal iff ``a + t < BLOCK``: select per element in the chunks' layout, then rotate row a by a.
    """
    o_a = tl.arange(0, BLOCK)[:, None]  # (BM, 1)
    o_j = tl.arange(0, BLOCK)[None, :]  # (1, BLOCK): t for the select, b for the gather
    b_rot = tl.where(o_a + o_j < BLOCK, b_cur, b_prev)  # (BM, BLOCK)
    return tl.gather(b_rot, (o_j - o_a) & (BLOCK - 1), 1)  # (BM, BN)


@triton.jit
def _chunk_from_tiles(b_ds_lo, b_ds_hi, BLOCK: tl.constexpr):
    """Inverse skew: ``W[a, t]``, the dS entry of row a at distance ``chunk start + t``.

    It lies in the lower key tile (``b_ds_lo``, column ``t + a``) when ``t + a < BLOCK``, else in the next
    one (``b_ds_hi``, column ``t + a - BLOCK``): the two triangles are complementary, so W is dense.
    Column ``j = (t + a) mod BLOCK`` comes from the lower tile iff ``j >= a``: select, then rotate.
    """
    o_a = tl.arange(0, BLOCK)[:, None]  # (BM, 1)
    o_j = tl.arange(0, BLOCK)[None, :]  # (1, BLOCK): j for the select, t for the gather
    b_sel = tl.where(o_j >= o_a, b_ds_lo, b_ds_hi)  # (BM, BLOCK)
    return tl.gather(b_sel, (o_j + o_a) & (BLOCK - 1), 1)  # (BM, BLOCK)


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
def _dropout_keep(seed, dropout_p, i_bh, o_m, o_n, Lq, Lk):
    """Which probabilities survive dropout: Philox bits keyed by (seed, bh, query row, key), ``(BM, BN)``.

    The forward, the backward and :func:`dropout_mask` all call this, so they agree bit for bit.
    """
    o_rand = (i_bh.to(tl.int64) * Lq + o_m[:, None].to(tl.int64)) * Lk + o_n[None, :]  # (BM, BN) int64
    return tl.rand(seed, o_rand) >= dropout_p


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
def _load_rows(p, o_m, Lq, s_l, D: tl.constexpr):
    """Rows ``o_m`` of one (batch, head)'s ``(L, D)`` matrix at ``p`` with row stride ``s_l``: ``(BM, D)``."""
    return tl.load(p + o_m[:, None] * s_l + tl.arange(0, D)[None, :], mask=(o_m < Lq)[:, None], other=0.0)


# ----------------------------------------------------------------------------- forward
@triton.jit
def _fwd_tile(b_q, b_rel, p_k, p_v, s_kl, s_vl, p_kpm, n0, o_m, qpos, i_bh, Lq, Lk, qk_scale, dropout_p, seed,
              m_i, l_i, b_acc, D: tl.constexpr, BLOCK: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr,
              DROPOUT: tl.constexpr, PRECISION: tl.constexpr):
    """One online-softmax step over the key tile at ``n0``; ``b_rel`` is ``(BM, BN)`` or ``(BM, 1)``."""
    o_n = n0 + tl.arange(0, BLOCK)
    b_k = _load_rows(p_k, o_n, Lk, s_kl, D)  # (BN, D)
    b_v = _load_rows(p_v, o_n, Lk, s_vl, D)  # (BN, D)
    # logits in log2 units: exp2 is the native instruction
    b_s = (tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) + b_rel) * qk_scale  # (BM, BN)
    b_s = tl.where(_visible(o_n, qpos, Lk, p_kpm, CAUSAL, HAS_KPM), b_s, float("-inf"))
    m_new = tl.maximum(m_i, tl.max(b_s, 1))  # (BM,), finite: m_i starts at -1e30
    alpha = tl.exp2(m_i - m_new)
    b_p = tl.exp2(b_s - m_new[:, None])  # (BM, BN)
    l_i = l_i * alpha + tl.sum(b_p, 1)  # the softmax normalizer counts every probability, dropped or not
    if DROPOUT:
        b_p = tl.where(_dropout_keep(seed, dropout_p, i_bh, o_m, o_n, Lq, Lk), b_p, 0.0)  # 1/(1-p) at the end
    b_acc = b_acc * alpha[:, None] + tl.dot(b_p.to(b_v.dtype), b_v, input_precision=PRECISION)  # (BM, D)
    return m_new, l_i, b_acc


@triton.jit
def _fwd_kernel(Q, K, V, E, KPM, O, LSE,
                s_qb, s_qh, s_ql, s_kb, s_kh, s_kl, s_vb, s_vh, s_vl, s_eh,
                H, Lq, Lk, OFF, KMAX, KHI, qk_scale, dropout_p, seed, LEN_BUCKET,
                D: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, DROPOUT: tl.constexpr,
                PRECISION: tl.constexpr, BLOCK: tl.constexpr, CARRY_QE: tl.constexpr):
    # LEN_BUCKET (a power of two >= Lk) only keys the autotuner
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
    b_q = _load_rows(Q + i_b * s_qb + i_h * s_qh, o_m, Lq, s_ql, D)  # (BM, D)
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
        m_i, l_i, b_acc = _fwd_tile(b_q, b_qe_lo[:, None], p_k, p_v, s_kl, s_vl, p_kpm, i_n * BLOCK, o_m, qpos, i_bh,
                                    Lq, Lk, qk_scale, dropout_p, seed, m_i, l_i, b_acc,
                                    D, BLOCK, CAUSAL, HAS_KPM, DROPOUT, PRECISION)
    # band: carry q @ E_chunk^T of the previous key tile (its "cur" chunk is our "prev" chunk)
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
        m_i, l_i, b_acc = _fwd_tile(b_q, b_rel, p_k, p_v, s_kl, s_vl, p_kpm, i_n * BLOCK, o_m, qpos, i_bh,
                                    Lq, Lk, qk_scale, dropout_p, seed, m_i, l_i, b_acc,
                                    D, BLOCK, CAUSAL, HAS_KPM, DROPOUT, PRECISION)
    for i_n in range(nt_hi, nt_end):
        m_i, l_i, b_acc = _fwd_tile(b_q, b_qe_hi[:, None], p_k, p_v, s_kl, s_vl, p_kpm, i_n * BLOCK, o_m, qpos, i_bh,
                                    Lq, Lk, qk_scale, dropout_p, seed, m_i, l_i, b_acc,
                                    D, BLOCK, CAUSAL, HAS_KPM, DROPOUT, PRECISION)

    # a row that may attend to nothing (all keys padded) gets a zero output and lse = +inf, so the
    # backward's recomputed P is 0 there
    l_safe = tl.where(l_i > 0.0, l_i, 1.0)
    if DROPOUT:
        l_safe = l_safe * (1.0 - dropout_p)  # the kept probabilities' 1 / (1 - p)
    b_o = b_acc / l_safe[:, None]  # (BM, D)
    b_lse = tl.where(l_i > 0.0, m_i + tl.log2(tl.where(l_i > 0.0, l_i, 1.0)), float("inf"))  # (BM,) log2 units
    tl.store(O + i_bh.to(tl.int64) * Lq * D + o_m[:, None] * D + o_d[None, :], b_o.to(O.dtype.element_ty),
             mask=m_m[:, None])
    tl.store(LSE + i_bh.to(tl.int64) * Lq + o_m, b_lse, mask=m_m)


# ----------------------------------------------------------------------------- backward
@triton.jit
def _bwd_tile(b_q, b_do, b_lse, b_delta, b_rel, p_k, p_v, s_kl, s_vl, p_kpm, p_dk, p_dv, n0, o_m, qpos, i_bh,
              Lq, Lk, qk_scale, scale, dropout_p, seed, D: tl.constexpr, BLOCK: tl.constexpr,
              CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, DROPOUT: tl.constexpr, PRECISION: tl.constexpr):
    """The key tile at ``n0``: adds its dk, dv shares (atomics) and returns dS (fp32) and its keys.

    dS is the gradient w.r.t. the natural-unit logits: ``P * (dP - delta)``, with ``dP`` the gradient
    w.r.t. the (dropped, rescaled) probabilities routed back through the kept entries.
    """
    o_n = n0 + tl.arange(0, BLOCK)
    o_d = tl.arange(0, D)
    m_n = o_n < Lk
    b_k = _load_rows(p_k, o_n, Lk, s_kl, D)  # (BN, D)
    b_v = _load_rows(p_v, o_n, Lk, s_vl, D)  # (BN, D)
    b_s = (tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) + b_rel) * qk_scale  # (BM, BN)
    m_vis = _visible(o_n, qpos, Lk, p_kpm, CAUSAL, HAS_KPM)
    b_p = tl.where(m_vis, tl.exp2(b_s - b_lse[:, None]), 0.0)  # (BM, BN)
    b_dp = tl.dot(b_do, tl.trans(b_v), input_precision=PRECISION)  # (BM, BN)
    if DROPOUT:
        m_keep = _dropout_keep(seed, dropout_p, i_bh, o_m, o_n, Lq, Lk)  # the forward's mask, regenerated
        inv_keep = 1.0 / (1.0 - dropout_p)
        b_pd = tl.where(m_keep, b_p * inv_keep, 0.0)  # (BM, BN) the probabilities the forward used
        b_dp = tl.where(m_keep, b_dp * inv_keep, 0.0)
    else:
        b_pd = b_p
    o_dkv = o_n[:, None] * D + o_d[None, :]  # (BN, D)
    b_dv = tl.dot(tl.trans(b_pd.to(b_do.dtype)), b_do, input_precision=PRECISION)  # (BN, D)
    tl.atomic_add(p_dv + o_dkv, b_dv, mask=m_n[:, None], sem="relaxed")
    b_ds = b_p * (b_dp - b_delta[:, None])  # (BM, BN)
    b_dk = tl.dot(tl.trans(b_ds.to(b_q.dtype)), b_q, input_precision=PRECISION) * scale  # (BN, D)
    tl.atomic_add(p_dk + o_dkv, b_dk, mask=m_n[:, None], sem="relaxed")
    return b_ds, b_k


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
def _bwd_kernel(Q, K, V, E, KPM, DO, LSE, DELTA, DQ, DK, DV, DE, N_SLOTS,
                s_qb, s_qh, s_ql, s_kb, s_kh, s_kl, s_vb, s_vh, s_vl, s_eh,
                H, Lq, Lk, OFF, KMAX, KHI, qk_scale, scale, dropout_p, seed, LEN_BUCKET,
                D: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, DROPOUT: tl.constexpr,
                PRECISION: tl.constexpr, SERIAL: tl.constexpr, BLOCK: tl.constexpr, CARRY_QE: tl.constexpr):
    i_bh = tl.program_id(1).to(tl.int64)
    i_b = i_bh // H
    i_h = i_bh % H
    o_d = tl.arange(0, D)
    p_q = Q + i_b * s_qb + i_h * s_qh
    p_k = K + i_b * s_kb + i_h * s_kh
    p_v = V + i_b * s_vb + i_h * s_vh
    p_e = E + i_h * s_eh
    p_kpm = KPM + i_b * Lk
    p_dk = DK + i_bh * Lk * D  # fp32, contiguous (B, H, Lk, D)
    p_dv = DV + i_bh * Lk * D
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
        m_m = o_m < Lq
        qpos = o_m + OFF
        b_q = _load_rows(p_q, o_m, Lq, s_ql, D)  # (BM, D)
        b_do = _load_rows(DO + i_bh * Lq * D, o_m, Lq, D, D)  # (BM, D)
        b_lse = tl.load(LSE + i_bh * Lq + o_m, mask=m_m, other=float("inf"))  # (BM,) padded rows: P = 0
        b_delta = tl.load(DELTA + i_bh * Lq + o_m, mask=m_m, other=0.0)  # (BM,) rowsum(dO * O)
        b_qe_lo = tl.sum(b_q.to(tl.float32) * b_e_lo.to(tl.float32)[None, :], 1)  # (BM,)
        b_qe_hi = tl.sum(b_q.to(tl.float32) * b_e_hi.to(tl.float32)[None, :], 1)  # (BM,)
        b_dq = tl.zeros([BLOCK, D], tl.float32)
        b_rs_lo = tl.zeros([BLOCK], tl.float32)  # row sums of dS over fully clipped-low tiles
        b_rs_hi = tl.zeros([BLOCK], tl.float32)
        b_de_lo = tl.zeros([D], tl.float32)  # dE[0] and dE[R-1] of this query tile
        b_de_hi = tl.zeros([D], tl.float32)
        nt_lo, nt_hi, nt_end = _key_tile_ranges(m0, OFF, Lk, KMAX, KHI, BLOCK, CAUSAL)

        # key tiles from the last down (see the module docstring: it staggers the dk/dv atomics)
        for i_r in range(0, nt_end - nt_hi):
            i_n = nt_end - 1 - i_r
            b_ds, b_k = _bwd_tile(b_q, b_do, b_lse, b_delta, b_qe_hi[:, None], p_k, p_v, s_kl, s_vl, p_kpm, p_dk, p_dv,
                                  i_n * BLOCK, o_m, qpos, i_bh, Lq, Lk, qk_scale, scale, dropout_p, seed,
                                  D, BLOCK, CAUSAL, HAS_KPM, DROPOUT, PRECISION)
            b_dq += tl.dot(b_ds.to(b_k.dtype), b_k, input_precision=PRECISION)  # (BM, D)
            b_rs_hi += tl.sum(b_ds, 1)

        # band, walked down: tile n's "prev" chunk (distance c - BLOCK) is tile n-1's "cur" chunk
        if CARRY_QE:
            b_qe_cur = tl.dot(b_q, tl.trans(_load_e_chunk(p_e, (nt_hi - 1) * BLOCK - OFF - m0, KMAX, KHI, D, BLOCK)),
                              input_precision=PRECISION)  # (BM, BLOCK)
        # dS of the key tile above (the one processed last), in the input dtype: W is rounded to it for
        # its matmuls anyway. The tile above the band went to b_rs_hi, hence zeros.
        b_ds_hi = tl.zeros([BLOCK, BLOCK], b_q.dtype)
        # dE chunks are computed transposed, q^T @ W: q^T is loop-invariant, W stays the B operand
        b_qt = tl.trans(b_q)  # (D, BM)
        for i_r in range(0, nt_hi - nt_lo):
            i_n = nt_hi - 1 - i_r
            c = i_n * BLOCK - OFF - m0
            b_qe_prev = tl.dot(b_q, tl.trans(_load_e_chunk(p_e, c - BLOCK, KMAX, KHI, D, BLOCK)),
                               input_precision=PRECISION)  # (BM, BLOCK)
            # E chunks are reloaded (L2-resident, BLOCK x D) rather than carried: registers are the limit here
            b_e_cur = _load_e_chunk(p_e, c, KMAX, KHI, D, BLOCK)  # (BLOCK, D)
            if CARRY_QE:
                b_rel = _band_from_chunks(b_qe_prev, b_qe_cur, BLOCK)  # (BM, BN)
                b_qe_cur = b_qe_prev
            else:
                b_rel = _band_from_chunks(b_qe_prev, tl.dot(b_q, tl.trans(b_e_cur), input_precision=PRECISION),
                                          BLOCK)  # (BM, BN)
            b_ds, b_k = _bwd_tile(b_q, b_do, b_lse, b_delta, b_rel, p_k, p_v, s_kl, s_vl, p_kpm, p_dk, p_dv,
                                  i_n * BLOCK, o_m, qpos, i_bh, Lq, Lk, qk_scale, scale, dropout_p, seed,
                                  D, BLOCK, CAUSAL, HAS_KPM, DROPOUT, PRECISION)
            b_ds = b_ds.to(b_q.dtype)
            b_dq += tl.dot(b_ds, b_k, input_precision=PRECISION)  # (BM, D)
            # the chunk at distance c is complete: its dS halves came from this tile and the one above
            b_w = _chunk_from_tiles(b_ds, b_ds_hi, BLOCK)  # (BM, BLOCK)
            b_dq += tl.dot(b_w, b_e_cur, input_precision=PRECISION)  # (BM, D)
            b_de = tl.dot(b_qt, b_w, input_precision=PRECISION)  # (D, BLOCK): dE chunk, transposed
            b_de_lo, b_de_hi = _flush_chunk(p_de, b_de, c, b_de_lo, b_de_hi, KMAX, KHI, D, BLOCK)
            b_ds_hi = b_ds
        if nt_hi > nt_lo:  # the lowest band tile's "prev" chunk (the tile below went to b_rs_lo)
            c = nt_lo * BLOCK - OFF - m0 - BLOCK
            b_w = _chunk_from_tiles(tl.zeros([BLOCK, BLOCK], b_q.dtype), b_ds_hi, BLOCK)  # (BM, BLOCK)
            b_dq += tl.dot(b_w, _load_e_chunk(p_e, c, KMAX, KHI, D, BLOCK), input_precision=PRECISION)
            b_de = tl.dot(b_qt, b_w, input_precision=PRECISION)  # (D, BLOCK)
            b_de_lo, b_de_hi = _flush_chunk(p_de, b_de, c, b_de_lo, b_de_hi, KMAX, KHI, D, BLOCK)

        for i_r in range(0, nt_lo):
            i_n = nt_lo - 1 - i_r
            b_ds, b_k = _bwd_tile(b_q, b_do, b_lse, b_delta, b_qe_lo[:, None], p_k, p_v, s_kl, s_vl, p_kpm, p_dk, p_dv,
                                  i_n * BLOCK, o_m, qpos, i_bh, Lq, Lk, qk_scale, scale, dropout_p, seed,
                                  D, BLOCK, CAUSAL, HAS_KPM, DROPOUT, PRECISION)
            b_dq += tl.dot(b_ds.to(b_k.dtype), b_k, input_precision=PRECISION)
            b_rs_lo += tl.sum(b_ds, 1)

        b_q32 = b_q.to(tl.float32)
        b_dq += b_rs_lo[:, None] * b_e_lo.to(tl.float32)[None, :] + b_rs_hi[:, None] * b_e_hi.to(tl.float32)[None, :]
        b_de_lo += tl.sum(b_rs_lo[:, None] * b_q32, 0)
        b_de_hi += tl.sum(b_rs_hi[:, None] * b_q32, 0)
        tl.atomic_add(p_de + o_d, b_de_lo, sem="relaxed")
        tl.atomic_add(p_de + (KMAX + KHI) * D + o_d, b_de_hi, sem="relaxed")
        tl.store(DQ + i_bh * Lq * D + o_m[:, None] * D + o_d[None, :], (b_dq * scale).to(DQ.dtype.element_ty),
                 mask=m_m[:, None])
        if SERIAL:
            # orders this tile's atomics before the next tile's, which hit the same addresses from other threads
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


@triton.jit
def _dropout_mask_kernel(KEEP, Lq, Lk, dropout_p, seed, BLOCK: tl.constexpr):
    """The kept-probability mask as int8 ``(B * H, Lq, Lk)``: the debug view of :func:`_dropout_keep`."""
    i_m = tl.program_id(0)
    i_n = tl.program_id(1)
    i_bh = tl.program_id(2).to(tl.int64)
    o_m = i_m * BLOCK + tl.arange(0, BLOCK)
    o_n = i_n * BLOCK + tl.arange(0, BLOCK)
    m_keep = _dropout_keep(seed, dropout_p, i_bh, o_m, o_n, Lq, Lk)  # (BM, BN)
    tl.store(KEEP + (i_bh * Lq + o_m[:, None]) * Lk + o_n[None, :], m_keep.to(tl.int8),
             mask=(o_m < Lq)[:, None] & (o_n < Lk)[None, :])


# ----------------------------------------------------------------------------- launch configs
def _configs(blocks_warps_stages: list[tuple[int, int, int]], carry: tuple[bool, ...] = (True, False)) -> list:
    return [
        triton.Config({"BLOCK": b, "CARRY_QE": c}, num_warps=w, num_stages=s)
        for b, w, s in blocks_warps_stages for c in carry
    ]


# H100 leads (FlashAttention practice): 64-row tiles on one warpgroup (4 warps), 128-row tiles on two.
# Eight warps on 64-row tiles are not offered: wgmma gives each warpgroup 64 rows, so the second one
# would compute the same q.k^T and q.E^T products again. BLOCK_M == BLOCK_N is required by the chunk
# carry. Registers are the constraint, hence the recompute variant (CARRY_QE=False) beside the carry.
_FWD_CONFIGS = _configs([(64, 4, 1), (64, 4, 2), (128, 8, 1), (128, 8, 2)])
_BWD_CONFIGS = _configs([(32, 4, 2), (64, 4, 1), (64, 4, 2), (128, 8, 1)])
# the autotuner adds the tensors' dtypes to the key; LEN_BUCKET is Lk rounded up to a power of two
_TUNE_KEY = ["D", "CAUSAL", "HAS_KPM", "DROPOUT", "LEN_BUCKET"]


# With ZOO_RELATIVE_ATTENTION_AUTOTUNE=0 every launch uses these (no tuning: quick GPU test runs), per
# head dim. Chosen from the hinted sm_90 compile report (benchmarks/results/relative_attention_compile_sm90.md):
# 64-row tiles on one warpgroup. The forward is spill-free at D = 64 (253 registers, 1 stage; 2 stages
# spill 16 bytes) but spills 112 bytes at D = 128; the fused backward spills at BLOCK 64 (1.2 KB at D = 64,
# 2.1 KB at D = 128; 8 warps: 0.7 KB and 1.4x the wgmma instructions) -- open work, see the report.
_DEFAULT_CONFIGS = {
    ("_fwd_kernel", 64): triton.Config({"BLOCK": 64, "CARRY_QE": True}, num_warps=4, num_stages=1),
    ("_fwd_kernel", 128): triton.Config({"BLOCK": 64, "CARRY_QE": True}, num_warps=4, num_stages=1),
    ("_bwd_kernel", 64): triton.Config({"BLOCK": 64, "CARRY_QE": True}, num_warps=4, num_stages=1),
    ("_bwd_kernel", 128): triton.Config({"BLOCK": 64, "CARRY_QE": True}, num_warps=4, num_stages=1),
}


def default_config(kernel_name: str, d: int, precision: str = "tf32") -> triton.Config:
    """The untuned launch config of ``_fwd_kernel`` / ``_bwd_kernel`` for head dim ``d``."""
    if precision == "ieee":  # float32 tiles take twice the shared memory and registers: halve them
        return triton.Config({"BLOCK": 32, "CARRY_QE": True}, num_warps=4, num_stages=1)
    return _DEFAULT_CONFIGS[(kernel_name, max(64, d))]  # D = 16, 32 take D = 64's


def _autotuned(kernel, configs, reset_to_zero=None):
    if INTERPRET:
        return None  # the interpreter launches the plain kernel with INTERPRETER_BLOCK
    return triton.autotune(configs=configs, key=_TUNE_KEY, reset_to_zero=reset_to_zero)(kernel)


_TUNED = {
    "_fwd_kernel": _autotuned(_fwd_kernel, _FWD_CONFIGS),
    # dk, dv and dE are accumulated with atomics, so every timing run of the tuner starts from zeros
    "_bwd_kernel": _autotuned(_bwd_kernel, _BWD_CONFIGS, reset_to_zero=["DK", "DV", "DE"]),
}


# Under the interpreter, pretend to have this many multiprocessors so tests exercise shared dE slots.
INTERPRETER_SMS = 4


def _de_slots(b: int, h: int, lq: int, device: torch.device, per_head: bool, deterministic: bool) -> int:
    """How many fp32 dE copies the backward's programs add into (program (m, bh) uses slot bh % G).

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
        tuned = {"BLOCK": INTERPRETER_BLOCK, "CARRY_QE": INTERPRETER_CARRY_QE}
        kernel[grid_fn(tuned)](*args, **meta, **tuned)
    elif os.environ.get("ZOO_RELATIVE_ATTENTION_AUTOTUNE", "1") == "0":
        cfg = default_config(name, meta["D"], meta["PRECISION"])
        kernel[grid_fn(cfg.kwargs)](*args, **meta, **cfg.kwargs, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    else:
        _TUNED[name][grid_fn](*args, **meta)


# ----------------------------------------------------------------------------- validation
def _problem(q: Tensor, k: Tensor, v: Tensor, weight: Tensor, max_distance: int, causal: bool,
             key_padding_mask: Tensor | None, dropout_p: float = 0.0) -> str | None:
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
    if INTERPRET and q.device.type == "cpu" and torch.bfloat16 in (q.dtype, weight.dtype):
        return ("bfloat16 is refused under TRITON_INTERPRET=1: the interpreter's bf16 tl.dot gives wrong "
                "results; use float32 or float16 on CPU (bfloat16 runs on CUDA)")
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
    if isinstance(dropout_p, bool) or not isinstance(dropout_p, (int, float)) or not 0.0 <= dropout_p < 1.0:
        return f"dropout_p must be a real in [0, 1), got {dropout_p!r}"
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


# ----------------------------------------------------------------------------- dropout
def draw_seed() -> Tensor:
    """The Philox seed of one dropout call, from torch's default CPU generator: ``(1,)`` int64.

    :func:`relative_attention` draws exactly one per call with dropout, so after ``torch.manual_seed(s)``
    the first such call uses the seed that ``torch.manual_seed(s); draw_seed()`` returns.
    """
    return torch.randint(0, 2**31 - 1, (1,), dtype=torch.int64)


def dropout_mask(seed: int | Tensor, shape: tuple[int, int, int, int], dropout_p: float,
                 device: torch.device | str = "cpu") -> Tensor:
    """The kernel's dropout mask for ``seed``: bool ``(B, H, Lq, Lk)``, True = kept (before ``1 / (1 - p)``).

    Computed by the same Philox call as the kernel's forward and backward (a debug and test helper: it
    materializes the (Lq, Lk) mask the kernel never stores).
    """
    b, h, lq, lk = shape
    seed = int(seed.item() if isinstance(seed, Tensor) else seed)
    keep = torch.empty((b * h, lq, lk), dtype=torch.int8, device=device)
    block = 32
    _dropout_mask_kernel[(triton.cdiv(lq, block), triton.cdiv(lk, block), b * h)](
        keep, lq, lk, float(dropout_p), seed, BLOCK=block)
    return keep.view(b, h, lq, lk).bool()


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


def _dropout_args(seed: Tensor | None, dropout_p: float) -> tuple[float, int]:
    return (float(dropout_p), int(seed.item())) if seed is not None and dropout_p > 0.0 else (0.0, 0)


@torch.library.custom_op("zoo::relative_attention_fwd", mutates_args=())
def _relative_attention_fwd(
    q: Tensor, k: Tensor, v: Tensor, weight: Tensor, key_padding_mask: Tensor | None, seed: Tensor | None,
    max_distance: int, causal: bool, scale: float, dropout_p: float,
) -> tuple[Tensor, Tensor]:
    q, k, v = _inner(q), _inner(k), _inner(v)
    b, h, lq, lk, d, off, khi, s_eh = _geometry(q, k, weight, max_distance)
    e = weight.to(q.dtype).contiguous()  # (R, D) | (H, R, D)
    kpm = q if key_padding_mask is None else key_padding_mask.to(torch.int8).expand(b, lk).contiguous()
    out = torch.empty((b, h, lq, d), device=q.device, dtype=q.dtype)  # (B, H, Lq, D)
    lse = torch.empty((b, h, lq), device=q.device, dtype=torch.float32)  # (B, H, Lq) log2 units
    p, seed_value = _dropout_args(seed, dropout_p)
    _launch(
        _fwd_kernel, lambda meta: (triton.cdiv(lq, meta["BLOCK"]), b * h),
        q, k, v, e, kpm, out, lse,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), s_eh,
        h, lq, lk, off, max_distance, khi, scale * _LOG2E, p, seed_value, triton.next_power_of_2(lk),
        D=d, CAUSAL=causal, HAS_KPM=key_padding_mask is not None, DROPOUT=p > 0.0, PRECISION=_dot_precision(q.dtype),
    )
    return out, lse


@_relative_attention_fwd.register_fake
def _(q, k, v, weight, key_padding_mask, seed, max_distance, causal, scale, dropout_p):
    b, h, lq, d = q.shape
    return q.new_empty((b, h, lq, d)), q.new_empty((b, h, lq), dtype=torch.float32)


@torch.library.custom_op("zoo::relative_attention_bwd", mutates_args=())
def _relative_attention_bwd(
    dout: Tensor, q: Tensor, k: Tensor, v: Tensor, weight: Tensor, key_padding_mask: Tensor | None,
    seed: Tensor | None, out: Tensor, lse: Tensor, max_distance: int, causal: bool, scale: float, dropout_p: float,
    deterministic: bool,
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
    dk = torch.zeros((b, h, lk, d), device=q.device, dtype=torch.float32)  # atomics: fp32, zeroed
    dv = torch.zeros((b, h, lk, d), device=q.device, dtype=torch.float32)
    n_slots = _de_slots(b, h, lq, q.device, weight.dim() == 3, deterministic)
    de = torch.zeros((n_slots, rows, d), device=q.device, dtype=torch.float32)  # (G, R, D)
    p, seed_value = _dropout_args(seed, dropout_p)
    _launch(
        _bwd_kernel, lambda m: (1 if deterministic else triton.cdiv(lq, m["BLOCK"]), b * h),
        q, k, v, e, kpm, dout, lse, delta, dq, dk, dv, de, n_slots,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), s_eh,
        h, lq, lk, off, max_distance, khi, scale * _LOG2E, scale, p, seed_value, triton.next_power_of_2(lk),
        D=d, CAUSAL=causal, HAS_KPM=key_padding_mask is not None, DROPOUT=p > 0.0, PRECISION=_dot_precision(q.dtype),
        SERIAL=deterministic,
    )
    if weight.dim() == 3:
        de = de.view(n_slots // h, h, rows, d).sum(0)  # (H, R, D): slot bh % G keeps head h at G-index h mod H
    else:
        de = de.sum(0)  # (R, D)
    de = de * scale
    return dq, dk.to(k.dtype), dv.to(v.dtype), de.to(weight.dtype)


@_relative_attention_bwd.register_fake
def _(dout, q, k, v, weight, key_padding_mask, seed, out, lse, max_distance, causal, scale, dropout_p, deterministic):
    return (q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), weight.new_empty(weight.shape))


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, weight, key_padding_mask, seed, max_distance, causal, scale, dropout_p = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, weight, key_padding_mask, seed, out, lse)
    ctx.max_distance, ctx.causal, ctx.scale, ctx.dropout_p = max_distance, causal, scale, dropout_p
    ctx.deterministic = torch.are_deterministic_algorithms_enabled()
    ctx.mark_non_differentiable(lse)


def _backward(ctx, dout: Tensor, dlse: Tensor | None):
    q, k, v, weight, key_padding_mask, seed, out, lse = ctx.saved_tensors
    dq, dk, dv, dweight = _relative_attention_bwd(
        dout, q, k, v, weight, key_padding_mask, seed, out, lse, ctx.max_distance, ctx.causal, ctx.scale,
        ctx.dropout_p, ctx.deterministic or torch.are_deterministic_algorithms_enabled(),
    )
    return dq, dk, dv, dweight, None, None, None, None, None, None


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
    dropout_p: float = 0.0,
) -> Tensor:
    """Fused relative attention: ``dropout(softmax(scale * (q k^T + q E_rel^T))) v`` without (Lq, Lk) tensors.

    Args:
        q: ``(B, H, Lq, D)``; the queries are the last ``Lq`` positions of the ``Lk`` keys.
        k, v: ``(B, H, Lk, D)`` (grouped KV heads already expanded).
        weight: ``(R, D)`` shared or ``(H, R, D)`` per head, ``R = 2K + 1`` (row ``r + K`` is distance
            ``r``) or ``K + 1`` (causal table: distances ``-K .. 0``).
        max_distance: ``K``, the clipping distance, ``>= 1`` (may exceed the sequence length).
        causal: key ``j`` is visible only if ``j <= i + Lk - Lq``.
        key_padding_mask: bool ``(B, Lk)``, True = attend; a query with no visible key outputs zeros.
        scale: defaults to ``1 / sqrt(D)``; multiplies both the content and the relative logits.
        dropout_p: attention-probability dropout in ``[0, 1)`` (pass 0 in eval); the mask comes from a
            seed drawn from torch's generator (:func:`draw_seed`, :func:`dropout_mask`).

    Returns:
        ``(B, H, Lq, D)`` in q's dtype. Differentiable w.r.t. q, k, v and weight; the backward is
        deterministic under ``torch.use_deterministic_algorithms(True)`` (see the module docstring).
    """
    problem = _problem(q, k, v, weight, max_distance, causal, key_padding_mask, dropout_p)
    if problem is not None:
        raise ValueError(f"relative_attention: {problem}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"relative_attention: scale must be finite, got {scale}")
    dropout_p = float(dropout_p)
    seed = draw_seed() if dropout_p > 0.0 else None
    out, _ = _relative_attention_fwd(q, k, v, weight, key_padding_mask, seed, max_distance, causal, scale, dropout_p)
    return out
