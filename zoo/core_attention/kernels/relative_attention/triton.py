"""Fused relative attention (Shaw et al. 2018; Music Transformer, Huang et al. 2018) in Triton.

    logits[i, j] = scale * (q_i . k_j + q_i . E[clip(j - i', -K, Khi) + K]),   i' = i + Lk - Lq
    out = dropout(softmax(logits over the visible keys)) v

with ``Khi = K`` (bidirectional table, ``R = 2K + 1`` rows) or ``0`` (causal table, ``R = K + 1``),
forward and backward without any (Lq, Lk) tensor: memory is O(L) per head, like FlashAttention.
``reference.py`` beside this file computes the same function with materialized logits; the tests
compare the two, forward and every gradient (with dropout: given the kernel's mask, :func:`dropout_mask`).

Tiles are ``BLOCK_M`` query rows by ``BLOCK_N`` keys with ``BLOCK_M = r * BLOCK_N``, ``r`` in 1, 2, 4.

Forward (``_fwd_kernel``, one program per query tile, online softmax over key tiles):
  * For a query tile at ``m0`` and a key tile at ``n0`` the distances ``j - i'`` cover ``c + b - a`` with
    ``c = n0 - m0 - (Lk - Lq)``, ``a`` the tile's row and ``b`` its key. Split them into ``BLOCK_N``-wide
    *chunks* of E, chunk ``t`` holding distances ``c + t BLOCK_N ..``; a tile needs the chunks
    ``t = 0, -1, .., -r``, and the next key tile's chunks ``-1 .. -r`` are this tile's ``0 .. -(r - 1)``, so
    ``q_tile @ E_chunk^T`` is computed once per key tile and the r older ones are carried in registers.
  * One skew pass picks the band ``rel[a, b] = chunk_t[a, (b - a) mod BLOCK_N]``, ``t = floor((b - a) /
    BLOCK_N)``, out of the chunks: an elementwise select in the chunks' own layout, then one ``tl.gather``
    that rotates row ``a`` by ``a`` (:func:`_band_from_chunks`).
  * Clipping is free inside the band: E rows are loaded with clamped indices. Key tiles entirely at
    distance ``<= -K`` (or ``>= Khi``) skip the E matmul and add the per-row constant ``q_i . E[0]``
    (``q_i . E[R - 1]``), one dot product per query row for the whole tile range.
  * Causal attention stops at the diagonal tile.

Backward (``_bwd_kernel``: one query-major pass, P recomputed from the saved log-sum-exp as in
FlashAttention-2): one program per query tile walks its key tiles and produces dq in registers, and dk,
dv, dE with relaxed fp32 atomics (dk and dv computed transposed, ``q^T dS`` and ``dO^T P``, so those
matmuls keep D >= 64 rows on narrow key tiles). E chunk ``n`` receives dS entries from the r + 1 key tiles
``n .. n + r``; with the dS of the r tiles above carried in registers (tiles are walked downwards) they
are merged by one inverse skew pass into a dense ``(BLOCK_M, BLOCK_N)`` matrix W (:func:`_chunk_from_tiles`),
so each chunk costs one matmul for dq (``W @ E_chunk``) and one for dE (``q^T @ W``) and is *complete*
once emitted. Walking the key tiles from the last one down also staggers the programs of one
(batch, head) (each starts at its own diagonal), so their dk/dv atomics rarely meet at one address.

Precomputed ``q @ E^T`` (``PRE_QE``, :func:`use_precomputed_qe` picks it for short tables, K << L):
``q @ E^T`` is computed once by torch as a ``(B, H, Lq, R)`` fp32 tensor, O(L R); the kernels load the
band from it with one gathered load per tile (:func:`_qe_band`) instead of a matmul and a skew, and the
backward stores dS into its gradient dQE (each (row, distance) strictly inside the clip is met by one key;
clipped ones are summed per row), from which autograd gives dq's and dE's relative parts.

Tile matmuls per (query tile, key tile) in the band -- ``benchmarks/relative_attention.py
--compile-report`` measures them by counting ``tl.dot`` calls under the interpreter:

  ============  =====================================  ==================  ============================
  pass          q @ E^T in the kernel (default)         precomputed q E^T   plain attention (FA-2)
  ============  =====================================  ==================  ============================
  forward       3: q k^T, q E_chunk^T, P v               2: q k^T, P v       2: q k^T, P v
  backward      8: q k^T, q E_chunk^T, dO v^T, dO^T P,   5: as FA-2          5: q k^T, dO v^T, P^T dO,
                q^T dS, dS k, W E_chunk, q^T W                               dS^T q, dS k
  ============  =====================================  ==================  ============================

(before issue 17: forward 3-4, backward 12-13 in two kernels, 15-17 in all). Fully clipped tiles cost
what plain attention costs.

Registers (hinted sm_90 compile, ``benchmarks/results/relative_attention_compile_sm90.md``): the defaults
are 64 x 32 forward tiles and 64 x 16 backward tiles on 4 warps. Narrow key tiles shrink every per-tile
temporary while the carried state stays ``BLOCK_M x BLOCK_M``; the skew's masks and gather indices are
kept inside the key loop by an opaque zero (:func:`_opaque_zero`), because hoisted they stay live across it.

Dropout (``dropout_p > 0``): the probability of (batch-head ``bh``, query row ``i``, key ``j``) is kept
when output ``j mod 2`` of Philox-4x32 keyed by ``(seed, bh)`` at counter ``(j // 2, i)``, as a uniform
float, is ``>= p`` (one generator call per pair of adjacent keys), and scaled by ``1 / (1 - p)``. The
backward regenerates the same bits, so no mask is stored;
``delta = rowsum(dO * O)`` of the dropped output is still ``sum_j P dP`` of the dropped probabilities, so
the FlashAttention backward identity holds unchanged. The seed is drawn from torch's default (CPU)
generator on every call (:func:`draw_seed`), so ``torch.manual_seed`` reproduces a run.

Atomics and determinism: dk and dv go to fp32 buffers of k's shape (O(L)); dE to ``G`` fp32 copies,
``(G, R, D)``, program ``(m, bh)`` using copy ``bh % G``, each query-tile program emitting every E row at
most once, except the clipped rows 0 and R - 1 (chunks are disjoint; a chunk reaching a clipped distance
adds its clipped columns' sum to row 0 or R - 1, a few per query tile, and the fully clipped key tiles
add theirs once at the end). ``G`` (:func:`_de_slots`) is about the number of (batch, head) pairs in flight at once, so concurrent programs
rarely add to the same address. The copies are summed by an ordinary torch reduction; the only
nondeterminism is the fp32 order of the adds. Under ``torch.use_deterministic_algorithms(True)`` each
(batch, head) gets its own dE copy and one program that walks its query tiles in order with a barrier
in between, so every add happens in a fixed order: bitwise reproducible, at the cost of ``B * H``
programs instead of ``B * H * ceil(Lq / BLOCK_M)``. The precomputed path's dQE is stored, not added.

Block sizes are autotuned per (D, causal, key padding, dropout, q.E^T path, dtype, power-of-two bucket of
Lk) on GPUs; under ``TRITON_INTERPRET=1`` one small tile shape (``INTERPRETER_BLOCK_M`` x
``INTERPRETER_BLOCK_N``) is used, and bfloat16 is refused (the interpreter's bf16 ``tl.dot`` is wrong).
:func:`relative_attention` runs one of two ``torch.library.custom_op`` pairs (forward, backward; E or the
precomputed ``q @ E^T``) with fake implementations, so it composes with ``torch.compile``.
"""

import math
import os

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["relative_attention", "supports", "dropout_mask", "draw_seed", "use_precomputed_qe", "SUPPORTED_HEAD_DIMS",
           "SUPPORTED_DTYPES"]

SUPPORTED_HEAD_DIMS = (16, 32, 64, 128)
SUPPORTED_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
# Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when this module is imported.
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"
# The one tile shape used under the interpreter (autotuning needs a GPU): 32 query rows by 16 keys, the
# GPU default's two-chunk skew at a small size; small test lengths span several tiles, ragged last tile
# included. Tests also run square tiles (BLOCK_M == BLOCK_N) by setting both to 16.
INTERPRETER_BLOCK_M = 32
INTERPRETER_BLOCK_N = 16
_LOG2E = 1.4426950408889634


# ----------------------------------------------------------------------------- shared helpers
@triton.jit
def _load_e_chunk(p_e, c, KMAX, KHI, D: tl.constexpr, BLOCK_N: tl.constexpr):
    """Rows of E for distances ``c .. c + BLOCK_N - 1``, clipped to ``[-K, Khi]``: ``(BN, D)``."""
    o_r = tl.minimum(tl.maximum(c + tl.arange(0, BLOCK_N), -KMAX), KHI) + KMAX
    return tl.load(p_e + o_r[:, None] * D + tl.arange(0, D)[None, :])


@triton.jit
def _qe_chunk(b_q, p_e, c, KMAX, KHI, D: tl.constexpr, BLOCK_N: tl.constexpr, PRECISION: tl.constexpr):
    """``q @ E_chunk^T`` for the chunk of distances ``c .. c + BLOCK_N - 1``: ``(BM, BN)`` fp32."""
    return tl.dot(b_q, tl.trans(_load_e_chunk(p_e, c, KMAX, KHI, D, BLOCK_N)), input_precision=PRECISION)


@triton.jit
def _pick(o_f, b_0, b_1, b_2, b_3, b_4, R: tl.constexpr):
    """``b_{o_f}`` elementwise for ``o_f`` in ``[0, R]``; ``R = BLOCK_M / BLOCK_N`` (the tile ratio r) in 1, 2, 4.
    The inputs past ``b_R`` are placeholders."""
    b_x = tl.where(o_f == 0, b_0, b_1)
    if R >= 2:
        b_x = tl.where(o_f >= 2, b_2, b_x)
    if R >= 4:
        b_x = tl.where(o_f >= 3, b_3, b_x)
        b_x = tl.where(o_f >= 4, b_4, b_x)
    return b_x


@triton.jit
def _shift_in(b_new, b_1, b_2, b_3, b_4, R: tl.constexpr):
    """The carried tiles ``(b_1 .. b_R)`` after ``b_new`` enters at the front; past ``b_R`` placeholders."""
    if R >= 4:
        b_4 = b_3
        b_3 = b_2
    if R >= 2:
        b_2 = b_1
    return b_new, b_2, b_3, b_4


@triton.jit
def _band_from_chunks(b_qe0, b_qe1, b_qe2, b_qe3, b_qe4, i_zero, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The skew in registers: ``rel[a, b] = chunk_t[a, (b - a) mod BN]`` with ``t = floor((b - a) / BN)``.

    ``b_qe0 .. b_qe4`` are the chunks ``t = 0, -1, .., -r`` (``r = BLOCK_M / BLOCK_N``; the rest unused). In
    the chunks' own layout ``(a, col)`` the chunk is ``-floor((a + col) / BN)``: select per element, then
    one ``tl.gather`` rotates row a by a. ``i_zero`` is the loop's opaque zero (see :func:`_opaque_zero`).
    """
    o_a = tl.arange(0, BLOCK_M)[:, None] + i_zero  # (BM, 1)
    o_j = tl.arange(0, BLOCK_N)[None, :]  # (1, BN): col for the select, b for the gather
    b_rot = _pick((o_a + o_j) // BLOCK_N, b_qe0, b_qe1, b_qe2, b_qe3, b_qe4, BLOCK_M // BLOCK_N)  # (BM, BN)
    return tl.gather(b_rot, (o_j - o_a) & (BLOCK_N - 1), 1)  # (BM, BN)


@triton.jit
def _chunk_from_tiles(b_ds0, b_ds1, b_ds2, b_ds3, b_ds4, i_zero, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Inverse skew: ``W[a, col]``, the dS entry of row a at distance ``chunk start + col``.

    For the chunk of key tile n it lies in tile ``n + f`` (``b_ds0 .. b_ds4`` for f = 0 .. r), column
    ``(a + col) mod BN``, with ``f = floor((a + col) / BN)``; in the tiles' layout ``(a, b)`` that is
    ``f = floor(a / BN) + (b < a mod BN)``. The r + 1 pieces are complementary, so W is dense.
    """
    o_a = tl.arange(0, BLOCK_M)[:, None] + i_zero  # (BM, 1)
    o_j = tl.arange(0, BLOCK_N)[None, :]  # (1, BN): b for the select, col for the gather
    o_f = o_a // BLOCK_N + (o_j < (o_a & (BLOCK_N - 1))).to(tl.int32)  # (BM, BN)
    b_sel = _pick(o_f, b_ds0, b_ds1, b_ds2, b_ds3, b_ds4, BLOCK_M // BLOCK_N)  # (BM, BN)
    return tl.gather(b_sel, (o_j + o_a) & (BLOCK_N - 1), 1)  # (BM, BN)


@triton.jit
def _pack2(b_lo, b_hi):
    """Two 16-bit tensors of one shape as one int32 tensor (``b_lo`` in the low half): carried through a loop
    they take one register per element pair (ptxas gives every 16-bit value of a loop's phi a full register)."""
    return (b_lo.to(tl.int16, bitcast=True).to(tl.int32) & 0xFFFF) | (b_hi.to(tl.int16, bitcast=True).to(tl.int32) << 16)


@triton.jit
def _unpack2(b_x, dtype: tl.constexpr):
    """The inverse of :func:`_pack2`: ``(low, high)`` as ``dtype``."""
    return b_x.to(tl.int16).to(dtype, bitcast=True), (b_x >> 16).to(tl.int16).to(dtype, bitcast=True)


@triton.jit
def _opaque_zero(i_zero, x):
    """``i_zero`` again, as a value the compiler cannot prove constant (``x`` is never below -2^31 + 1000).

    Carried through a key-tile loop it keeps the skew passes' ``(BM, BN)`` select masks and gather
    indices inside the loop: loop-invariant code motion would hoist them and hold six such tensors live
    across the whole loop (16 registers each at BM 64, BN 32, 4 warps); recomputing them costs a few
    integer ops per tile (hinted sm_90 compile, D 64 backward: 220 -> 88 spilled bytes).
    """
    return tl.where(x > -2147482648, i_zero, i_zero + 1)


@triton.jit
def _qe_band(p_qe, c, o_m, m_m, KMAX, KHI, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The band from the precomputed ``q @ E^T`` rows (``PRE_QE``): ``QE[i, clip(c + b - a) + K]``, ``(BM, BN)``
    fp32, one gathered load per tile (rows of R entries, L2-resident) instead of a matmul and a skew."""
    o_r = tl.minimum(tl.maximum(c + tl.arange(0, BLOCK_N)[None, :] - tl.arange(0, BLOCK_M)[:, None], -KMAX), KHI)
    return tl.load(p_qe + o_m[:, None] * (KMAX + KHI + 1) + (o_r + KMAX), mask=m_m[:, None], other=0.0)


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
def _dropout_keep(seed, dropout_p, i_bh, o_m, o_n):
    """Which probabilities survive dropout: ``(BM, BN)`` booleans from Philox-4x32 keyed by (seed, bh) with
    the counter (key pair j // 2, query row i): its first two outputs are the keys 2 (j // 2) and 2 (j // 2) + 1,
    so one generator call serves two adjacent keys (``o_n`` starts at an even key). No counter overflows at
    any length and the generator runs in 32-bit arithmetic (a 64-bit offset would select Triton's
    Philox-4x64: twice the registers).

    The forward, the backward and :func:`dropout_mask` all call this, so they agree bit for bit.
    """
    key = seed.to(tl.int64) + (i_bh.to(tl.int64) << 32)  # Philox key: (seed, bh)
    tl.static_assert(o_n.shape[0] % 2 == 0, "_dropout_keep pairs adjacent keys: an even number of them")
    o_even, _ = tl.split(tl.reshape(o_n, (o_n.shape[0] // 2, 2)))  # (BN / 2,) the even keys
    # counters unbroadcast, (1, BN / 2) and (BM, 1): the rounds broadcast them, and nothing (BM, BN)-sized is
    # loop-invariant (which the compiler would hoist out of the key-tile loop and keep live)
    b_even, b_odd, _, _ = tl.philox(key, (o_even >> 1)[None, :], o_m[:, None], 0, 0)  # (BM, BN / 2) uint32
    b_bits = tl.reshape(tl.join(b_even, b_odd), (o_m.shape[0], o_n.shape[0]))  # (BM, BN): keys interleaved
    return tl.uint_to_uniform_float(b_bits) >= dropout_p


@triton.jit
def _key_tile_ranges(m0, OFF, Lk, KMAX, KHI, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr):
    """Key tiles seen by the query tile at ``m0``: ``[0, lo)`` all at distance <= -K, ``[lo, hi)`` the
    band, ``[hi, end)`` all at distance >= Khi. Query rows sit at key positions ``OFF + m0 + a``."""
    if CAUSAL:
        n_stop = tl.minimum(Lk, OFF + m0 + BLOCK_M)
    else:
        n_stop = Lk + 0 * m0
    nt_end = tl.cdiv(n_stop, BLOCK_N)
    # tile n is all-clipped-low when its largest distance n0 + BN - 1 - (OFF + m0) <= -K
    nt_lo = tl.minimum(tl.maximum(OFF + m0 - KMAX + 1, 0) // BLOCK_N, nt_end)
    # ... and all-clipped-high when its smallest distance n0 - (OFF + m0 + BM - 1) >= Khi
    nt_hi = tl.maximum(tl.minimum(tl.cdiv(OFF + m0 + BLOCK_M - 1 + KHI, BLOCK_N), nt_end), nt_lo)
    return nt_lo, nt_hi, nt_end


@triton.jit
def _load_rows(p, o_m, Lq, s_l, D: tl.constexpr):
    """Rows ``o_m`` of one (batch, head)'s ``(L, D)`` matrix at ``p`` with row stride ``s_l``: ``(BM, D)``."""
    return tl.load(p + o_m[:, None] * s_l + tl.arange(0, D)[None, :], mask=(o_m < Lq)[:, None], other=0.0)


# ----------------------------------------------------------------------------- forward
@triton.jit
def _fwd_tile(b_q, b_rel, p_k, p_v, s_kl, s_vl, p_kpm, n0, o_m, qpos, i_bh, Lq, Lk, qk_scale, dropout_p, seed,
              m_i, l_i, b_acc, D: tl.constexpr, BLOCK_N: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr,
              DROPOUT: tl.constexpr, PRECISION: tl.constexpr):
    """One online-softmax step over the key tile at ``n0``; ``b_rel`` is ``(BM, BN)`` or ``(BM, 1)``."""
    o_n = n0 + tl.arange(0, BLOCK_N)
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
        b_p = tl.where(_dropout_keep(seed, dropout_p, i_bh, o_m, o_n), b_p, 0.0)  # 1/(1-p) at the end
    b_acc = b_acc * alpha[:, None] + tl.dot(b_p.to(b_v.dtype), b_v, input_precision=PRECISION)  # (BM, D)
    return m_new, l_i, b_acc


@triton.jit
def _fwd_kernel(Q, K, V, E, QE, KPM, O, LSE,
                s_qb, s_qh, s_ql, s_kb, s_kh, s_kl, s_vb, s_vh, s_vl, s_eh,
                H, Lq, Lk, OFF, KMAX, KHI, qk_scale, dropout_p, seed, LEN_BUCKET,
                D: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, DROPOUT: tl.constexpr,
                PRECISION: tl.constexpr, PRE_QE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    # LEN_BUCKET (a power of two >= Lk) only keys the autotuner
    i_m = tl.program_id(0)
    i_bh = tl.program_id(1)
    i_b = (i_bh // H).to(tl.int64)
    i_h = (i_bh % H).to(tl.int64)
    m0 = i_m * BLOCK_M
    o_m = m0 + tl.arange(0, BLOCK_M)
    o_d = tl.arange(0, D)
    m_m = o_m < Lq
    qpos = o_m + OFF  # (BM,) key position of each query row
    p_k = K + i_b * s_kb + i_h * s_kh
    p_v = V + i_b * s_vb + i_h * s_vh
    p_e = E + i_h * s_eh
    p_kpm = KPM + i_b * Lk
    b_q = _load_rows(Q + i_b * s_qb + i_h * s_qh, o_m, Lq, s_ql, D)  # (BM, D)
    p_qe = QE + i_bh.to(tl.int64) * Lq * (KMAX + KHI + 1)  # PRE_QE: this (batch, head)'s (Lq, R) rows
    # the constant relative logits of fully clipped tiles: one dot product per row
    if PRE_QE:
        b_qe_lo = tl.load(p_qe + o_m * (KMAX + KHI + 1), mask=m_m, other=0.0)  # (BM,) q . E[0]
        b_qe_hi = tl.load(p_qe + o_m * (KMAX + KHI + 1) + KMAX + KHI, mask=m_m, other=0.0)  # (BM,) q . E[R-1]
    else:
        b_e_lo = tl.load(p_e + o_d).to(tl.float32)  # (D,) E[0], distance <= -K
        b_e_hi = tl.load(p_e + (KMAX + KHI) * D + o_d).to(tl.float32)  # (D,) E[R-1], distance >= Khi
        b_qe_lo = tl.sum(b_q.to(tl.float32) * b_e_lo[None, :], 1)  # (BM,)
        b_qe_hi = tl.sum(b_q.to(tl.float32) * b_e_hi[None, :], 1)  # (BM,)

    m_i = tl.full([BLOCK_M], -1.0e30, tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    b_acc = tl.zeros([BLOCK_M, D], tl.float32)
    nt_lo, nt_hi, nt_end = _key_tile_ranges(m0, OFF, Lk, KMAX, KHI, BLOCK_M, BLOCK_N, CAUSAL)

    for i_n in range(0, nt_lo):
        m_i, l_i, b_acc = _fwd_tile(b_q, b_qe_lo[:, None], p_k, p_v, s_kl, s_vl, p_kpm, i_n * BLOCK_N, o_m, qpos,
                                    i_bh, Lq, Lk, qk_scale, dropout_p, seed, m_i, l_i, b_acc,
                                    D, BLOCK_N, CAUSAL, HAS_KPM, DROPOUT, PRECISION)
    if PRE_QE:
        for i_n in range(nt_lo, nt_hi):
            b_rel = _qe_band(p_qe, i_n * BLOCK_N - OFF - m0, o_m, m_m, KMAX, KHI, BLOCK_M, BLOCK_N)  # (BM, BN)
            m_i, l_i, b_acc = _fwd_tile(b_q, b_rel, p_k, p_v, s_kl, s_vl, p_kpm, i_n * BLOCK_N, o_m, qpos, i_bh,
                                        Lq, Lk, qk_scale, dropout_p, seed, m_i, l_i, b_acc,
                                        D, BLOCK_N, CAUSAL, HAS_KPM, DROPOUT, PRECISION)
    else:
        # key tile n needs the chunks t = 0, -1, .., -r (r = BLOCK_M / BLOCK_N); tile n + 1's chunks
        # t = -1 .. -r are tile n's t = 0 .. -(r - 1): one q @ E_chunk^T per key tile, the older ones carried
        c_lo = nt_lo * BLOCK_N - OFF - m0
        b_qe1 = _qe_chunk(b_q, p_e, c_lo - BLOCK_N, KMAX, KHI, D, BLOCK_N, PRECISION)  # (BM, BN) t = -1
        b_qe2 = b_qe1  # placeholders where r is smaller
        b_qe3 = b_qe1
        b_qe4 = b_qe1
        if BLOCK_M >= 2 * BLOCK_N:
            b_qe2 = _qe_chunk(b_q, p_e, c_lo - 2 * BLOCK_N, KMAX, KHI, D, BLOCK_N, PRECISION)  # t = -2
        if BLOCK_M >= 4 * BLOCK_N:
            b_qe3 = _qe_chunk(b_q, p_e, c_lo - 3 * BLOCK_N, KMAX, KHI, D, BLOCK_N, PRECISION)  # t = -3
            b_qe4 = _qe_chunk(b_q, p_e, c_lo - 4 * BLOCK_N, KMAX, KHI, D, BLOCK_N, PRECISION)  # t = -4
        i_zero = 0 * m0
        for i_n in range(nt_lo, nt_hi):
            i_zero = _opaque_zero(i_zero, i_n)
            b_qe0 = _qe_chunk(b_q, p_e, i_n * BLOCK_N - OFF - m0, KMAX, KHI, D, BLOCK_N, PRECISION)  # (BM, BN)
            b_rel = _band_from_chunks(b_qe0, b_qe1, b_qe2, b_qe3, b_qe4, i_zero, BLOCK_M, BLOCK_N)  # (BM, BN)
            b_qe1, b_qe2, b_qe3, b_qe4 = _shift_in(b_qe0, b_qe1, b_qe2, b_qe3, b_qe4, BLOCK_M // BLOCK_N)
            m_i, l_i, b_acc = _fwd_tile(b_q, b_rel, p_k, p_v, s_kl, s_vl, p_kpm, i_n * BLOCK_N, o_m, qpos, i_bh,
                                        Lq, Lk, qk_scale, dropout_p, seed, m_i, l_i, b_acc,
                                        D, BLOCK_N, CAUSAL, HAS_KPM, DROPOUT, PRECISION)
    for i_n in range(nt_hi, nt_end):
        m_i, l_i, b_acc = _fwd_tile(b_q, b_qe_hi[:, None], p_k, p_v, s_kl, s_vl, p_kpm, i_n * BLOCK_N, o_m, qpos,
                                    i_bh, Lq, Lk, qk_scale, dropout_p, seed, m_i, l_i, b_acc,
                                    D, BLOCK_N, CAUSAL, HAS_KPM, DROPOUT, PRECISION)

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
def _nonneg64(x):
    """A non-negative integer as int64; a 32-bit one zero-extended, so a product with it needs no sign word
    (a loop-invariant register per kernel argument that ptxas keeps across the band loop)."""
    if x.dtype == tl.int32:
        return x.to(tl.uint32, bitcast=True).to(tl.int64)
    else:
        return x.to(tl.int64)


@triton.jit
def _base_ptrs(Q, K, V, E, DK, DV, DE, i_b32, i_h32, n_slots, i_zero, s_qb, s_qh, s_kb, s_kh, s_vb, s_vh, s_eh, H, Lk,
               KMAX, KHI, D: tl.constexpr):
    """This (batch, head)'s base pointers of q, k, v, E, dk, dv and its dE slot, every term through ``i_zero``
    (an opaque zero, :func:`_opaque_zero`): computed inside or after a loop they are not hoisted above it,
    so 64-bit pointers do not stay live across it (32-bit indices and kernel arguments do). ``n_slots`` is the
    number of dE slots; the slot is ``i_bh mod`` it. Every index and stride is non-negative: zero-extended."""
    i_b = _nonneg64(i_b32 + i_zero)
    i_h = _nonneg64(i_h32 + i_zero)
    i_bh = i_b * _nonneg64(H) + i_h
    return (Q + (i_b * _nonneg64(s_qb) + i_h * _nonneg64(s_qh)), K + (i_b * _nonneg64(s_kb) + i_h * _nonneg64(s_kh)),
            V + (i_b * _nonneg64(s_vb) + i_h * _nonneg64(s_vh)), E + i_h * _nonneg64(s_eh),
            DK + i_bh * _nonneg64(Lk) * D, DV + i_bh * _nonneg64(Lk) * D,
            DE + _nonneg64(((i_b32 + i_zero) * H + i_h32) % n_slots) * _nonneg64(KMAX + KHI + 1) * D)


@triton.jit
def _bwd_tile(b_q, b_qt, b_dot, b_lse, b_delta, b_rel, p_k, p_v, s_kl, s_vl, p_kpm, p_dk, p_dv, n0, o_m, qpos,
              i_bh, Lq, Lk, qk_scale, scale, dropout_p, seed, D: tl.constexpr, BLOCK_N: tl.constexpr,
              CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, DROPOUT: tl.constexpr, PRECISION: tl.constexpr):
    """The key tile at ``n0``: adds its dk, dv shares (atomics) and returns dS (fp32) and its keys.

    dS is the gradient w.r.t. the natural-unit logits: ``P * (dP - delta)``, with ``dP`` the gradient
    w.r.t. the (dropped, rescaled) probabilities routed back through the kept entries. dk and dv are
    computed transposed (``q^T dS``, ``dO^T P``: D rows), so the matmuls keep 64 rows at ``BLOCK_N = 32``.
    """
    o_n = n0 + tl.arange(0, BLOCK_N)
    o_d = tl.arange(0, D)
    m_n = o_n < Lk
    b_k = _load_rows(p_k, o_n, Lk, s_kl, D)  # (BN, D)
    b_v = _load_rows(p_v, o_n, Lk, s_vl, D)  # (BN, D)
    b_s = (tl.dot(b_q, tl.trans(b_k), input_precision=PRECISION) + b_rel) * qk_scale  # (BM, BN)
    m_vis = _visible(o_n, qpos, Lk, p_kpm, CAUSAL, HAS_KPM)
    b_p = tl.where(m_vis, tl.exp2(b_s - b_lse[:, None]), 0.0)  # (BM, BN)
    b_dp = tl.dot(tl.trans(b_dot), tl.trans(b_v), input_precision=PRECISION)  # (BM, BN)
    if DROPOUT:
        m_keep = _dropout_keep(seed, dropout_p, i_bh, o_m, o_n)  # the forward's mask, regenerated
        inv_keep = 1.0 / (1.0 - dropout_p)
        b_pd = tl.where(m_keep, b_p * inv_keep, 0.0)  # (BM, BN) the probabilities the forward used
        b_dp = tl.where(m_keep, b_dp * inv_keep, 0.0)
    else:
        b_pd = b_p
    o_dkv = o_n[None, :] * D + o_d[:, None]  # (D, BN)
    b_dv = tl.dot(b_dot, b_pd.to(b_dot.dtype), input_precision=PRECISION)  # (D, BN) dv^T
    tl.atomic_add(p_dv + o_dkv, b_dv, mask=m_n[None, :], sem="relaxed")
    b_ds = b_p * (b_dp - b_delta[:, None])  # (BM, BN)
    b_dk = tl.dot(b_qt, b_ds.to(b_qt.dtype), input_precision=PRECISION) * scale  # (D, BN) dk^T
    tl.atomic_add(p_dk + o_dkv, b_dk, mask=m_n[None, :], sem="relaxed")
    return b_ds, b_k


@triton.jit
def _emit_chunk(b_w, b_qt, p_e, p_de, c, b_dq, KMAX, KHI, D: tl.constexpr, BLOCK_N: tl.constexpr,
                PRECISION: tl.constexpr):
    """A complete chunk W (distances ``c .. c + BN - 1``): adds ``W @ E_chunk`` to dq and ``q^T @ W`` to dE,
    rows strictly inside ``(-K, Khi)`` with one atomic each; a chunk reaching a clipped distance (a few per
    query tile) adds its clipped columns' sum to row 0 or R - 1 with one more (no (D,) sums carried)."""
    b_dq += tl.dot(b_w, _load_e_chunk(p_e, c, KMAX, KHI, D, BLOCK_N), input_precision=PRECISION)  # (BM, D)
    b_de_t = tl.dot(b_qt, b_w, input_precision=PRECISION)  # (D, BN): the dE chunk, transposed
    dist = c + tl.arange(0, BLOCK_N)  # (BN,)
    o_d = tl.arange(0, D)
    m_inner = (dist > -KMAX) & (dist < KHI)
    tl.atomic_add(p_de + (dist + KMAX)[None, :] * D + o_d[:, None], b_de_t, mask=m_inner[None, :], sem="relaxed")
    if c <= -KMAX:
        tl.atomic_add(p_de + o_d, tl.sum(tl.where((dist <= -KMAX)[None, :], b_de_t, 0.0), 1), sem="relaxed")
    if c + (BLOCK_N - 1) >= KHI:
        tl.atomic_add(p_de + (KMAX + KHI) * D + o_d, tl.sum(tl.where((dist >= KHI)[None, :], b_de_t, 0.0), 1),
                      sem="relaxed")
    return b_dq


@triton.jit
def _bwd_kernel(Q, K, V, E, QE, KPM, DO, LSE, DELTA, DQ, DK, DV, DE, DQE, N_SLOTS,
                s_qb, s_qh, s_ql, s_kb, s_kh, s_kl, s_vb, s_vh, s_vl, s_eh,
                H, Lq, Lk, OFF, KMAX, KHI, qk_scale, scale, dropout_p, seed, LEN_BUCKET,
                D: tl.constexpr, CAUSAL: tl.constexpr, HAS_KPM: tl.constexpr, DROPOUT: tl.constexpr,
                PRECISION: tl.constexpr, SERIAL: tl.constexpr, PRE_QE: tl.constexpr, BLOCK_M: tl.constexpr,
                BLOCK_N: tl.constexpr):
    i_bh = tl.program_id(1).to(tl.int64)
    i_b = (tl.program_id(1) // H).to(tl.int64)  # 32-bit divisions: no 64-bit division's branch
    i_h = (tl.program_id(1) % H).to(tl.int64)
    o_d = tl.arange(0, D)
    p_q = Q + i_b * s_qb + i_h * s_qh
    p_k = K + i_b * s_kb + i_h * s_kh
    p_v = V + i_b * s_vb + i_h * s_vh
    p_e = E + i_h * s_eh
    p_kpm = KPM + i_b * Lk
    p_dk = DK + i_bh * Lk * D  # fp32, contiguous (B, H, Lk, D)
    p_dv = DV + i_bh * Lk * D
    p_de = DE + (i_bh % N_SLOTS) * (KMAX + KHI + 1) * D  # this program's fp32 dE slot (see _de_slots)
    p_qe = QE + i_bh * Lq * (KMAX + KHI + 1)  # PRE_QE: (Lq, R) rows of q @ E^T and their gradient
    p_dqe = DQE + i_bh * Lq * (KMAX + KHI + 1)
    i_b32 = i_b.to(tl.int32)
    i_h32 = i_h.to(tl.int32)
    if SERIAL:  # deterministic mode: this program walks all query tiles in order
        mt_first = 0
        mt_last = tl.cdiv(Lq, BLOCK_M)
    else:
        mt_first = tl.program_id(0)
        mt_last = mt_first + 1
    for i_m in range(mt_first, mt_last):
        m0 = i_m * BLOCK_M
        o_m = m0 + tl.arange(0, BLOCK_M)
        m_m = o_m < Lq
        qpos = o_m + OFF
        b_q = _load_rows(p_q, o_m, Lq, s_ql, D)  # (BM, D)
        b_qt = tl.trans(b_q)  # (D, BM): the A operand of dk^T and dE^T, loop-invariant
        # dO^T, (D, BM), at offsets (bh Lq + rows) D: an expression the dq store does not share (kept live, it spills)
        b_dot = tl.trans(tl.load(DO + (i_bh * Lq + o_m)[:, None] * D + o_d[None, :], mask=m_m[:, None], other=0.0))
        b_lse = tl.load(LSE + i_bh * Lq + o_m, mask=m_m, other=float("inf"))  # (BM,) padded rows: P = 0
        b_delta = tl.load(DELTA + i_bh * Lq + o_m, mask=m_m, other=0.0)  # (BM,) rowsum(dO * O)
        if PRE_QE:
            b_qe_lo = tl.load(p_qe + o_m * (KMAX + KHI + 1), mask=m_m, other=0.0)  # (BM,) q . E[0]
            b_qe_hi = tl.load(p_qe + o_m * (KMAX + KHI + 1) + KMAX + KHI, mask=m_m, other=0.0)  # (BM,) q . E[R-1]
        else:
            b_qe_hi = tl.sum(b_q.to(tl.float32) * tl.load(p_e + (KMAX + KHI) * D + o_d).to(tl.float32)[None, :], 1)
        b_dq = tl.zeros([BLOCK_M, D], tl.float32)
        b_rs_lo = tl.zeros([BLOCK_M], tl.float32)  # row sums of dS over fully clipped-low tiles
        b_rs_hi = tl.zeros([BLOCK_M], tl.float32)
        nt_lo, nt_hi, nt_end = _key_tile_ranges(m0, OFF, Lk, KMAX, KHI, BLOCK_M, BLOCK_N, CAUSAL)

        # key tiles from the last down (see the module docstring: it staggers the dk/dv atomics)
        for i_r in range(0, nt_end - nt_hi):
            i_n = nt_end - 1 - i_r
            b_ds, b_k = _bwd_tile(b_q, b_qt, b_dot, b_lse, b_delta, b_qe_hi[:, None], p_k, p_v, s_kl, s_vl, p_kpm,
                                  p_dk, p_dv, i_n * BLOCK_N, o_m, qpos, i_bh, Lq, Lk, qk_scale, scale, dropout_p,
                                  seed, D, BLOCK_N, CAUSAL, HAS_KPM, DROPOUT, PRECISION)
            b_dq += tl.dot(b_ds.to(b_k.dtype), b_k, input_precision=PRECISION)  # (BM, D)
            b_rs_hi += tl.sum(b_ds, 1)

        if PRE_QE:
            # the band's dS entries are the gradient of q @ E^T: each (row, distance) strictly inside (-K, Khi)
            # is met by exactly one key, so it is stored, not added; clipped ones join the row sums
            for i_r in range(0, nt_hi - nt_lo):
                i_n = nt_hi - 1 - i_r
                c = i_n * BLOCK_N - OFF - m0
                b_rel = _qe_band(p_qe, c, o_m, m_m, KMAX, KHI, BLOCK_M, BLOCK_N)  # (BM, BN)
                b_ds, b_k = _bwd_tile(b_q, b_qt, b_dot, b_lse, b_delta, b_rel, p_k, p_v, s_kl, s_vl, p_kpm, p_dk,
                                      p_dv, i_n * BLOCK_N, o_m, qpos, i_bh, Lq, Lk, qk_scale, scale, dropout_p, seed,
                                      D, BLOCK_N, CAUSAL, HAS_KPM, DROPOUT, PRECISION)
                b_dq += tl.dot(b_ds.to(b_k.dtype), b_k, input_precision=PRECISION)  # (BM, D)
                dist = c + tl.arange(0, BLOCK_N)[None, :] - tl.arange(0, BLOCK_M)[:, None]  # (BM, BN)
                m_inner = (dist > -KMAX) & (dist < KHI)
                tl.store(p_dqe + o_m[:, None] * (KMAX + KHI + 1) + (dist + KMAX), b_ds * scale,
                         mask=m_inner & m_m[:, None])
                b_rs_lo += tl.sum(tl.where(dist <= -KMAX, b_ds, 0.0), 1)
                b_rs_hi += tl.sum(tl.where(dist >= KHI, b_ds, 0.0), 1)
        else:
            # band, walked down: tile n needs the chunks t = 0 .. -r, tile n + 1's t = -1 .. -r
            c_top = (nt_hi - 1) * BLOCK_N - OFF - m0
            b_qe0 = _qe_chunk(b_q, p_e, c_top, KMAX, KHI, D, BLOCK_N, PRECISION)  # (BM, BN)
            b_qe1 = b_qe0  # placeholders where r is smaller
            b_qe2 = b_qe0
            b_qe3 = b_qe0
            if BLOCK_M >= 2 * BLOCK_N:
                b_qe1 = _qe_chunk(b_q, p_e, c_top - BLOCK_N, KMAX, KHI, D, BLOCK_N, PRECISION)
            if BLOCK_M >= 4 * BLOCK_N:
                b_qe2 = _qe_chunk(b_q, p_e, c_top - 2 * BLOCK_N, KMAX, KHI, D, BLOCK_N, PRECISION)
                b_qe3 = _qe_chunk(b_q, p_e, c_top - 3 * BLOCK_N, KMAX, KHI, D, BLOCK_N, PRECISION)
            # dS of the r key tiles above, in the input dtype: W is rounded to it for its matmuls anyway.
            # Tiles above the band went to b_rs_hi, hence zeros, and four *distinct* zero tiles: Triton
            # makes a name loop-carried only if its value after the loop body differs from the one before,
            # so with b_ds2 = b_ds1 before the loop, `b_ds2 = b_ds1` inside it would look unchanged and
            # b_ds2 .. b_ds4 would silently stay zero in the compiled kernel (the interpreter, which runs
            # Python, is unaffected; the compile report's "carried KiB" column checks the loop).
            b_ds1 = tl.zeros([BLOCK_M, BLOCK_N], b_q.dtype)
            b_ds2 = tl.zeros([BLOCK_M, BLOCK_N], b_q.dtype)
            b_ds3 = tl.zeros([BLOCK_M, BLOCK_N], b_q.dtype)
            b_ds4 = tl.zeros([BLOCK_M, BLOCK_N], b_q.dtype)
            # 16-bit inputs with r >= 2: the carried tiles travel packed in pairs, (1, 2) and (3, 4)
            PACK: tl.constexpr = (b_q.dtype.primitive_bitwidth == 16) and (BLOCK_M >= 2 * BLOCK_N)
            if PACK:
                b_p12 = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)
                b_p34 = tl.zeros([BLOCK_M, BLOCK_N], tl.int32)  # its own tl.zeros: a distinct handle, so really carried
            i_zero = 0 * m0
            for i_r in range(0, nt_hi - nt_lo):
                i_zero = _opaque_zero(i_zero, OFF - i_r)  # OFF >= 0: never near -2^31; i_r alone would fold
                # the top band tile again from the opaque zero: no loop-invariant tile base kept live
                _, nt_top, _ = _key_tile_ranges(m0 + i_zero, OFF, Lk, KMAX, KHI, BLOCK_M, BLOCK_N, CAUSAL)
                i_n = nt_top - 1 - i_r
                c = i_n * BLOCK_N - OFF - m0
                p_q, p_k, p_v, p_e, p_dk, p_dv, p_de = _base_ptrs(Q, K, V, E, DK, DV, DE, i_b32, i_h32, N_SLOTS, i_zero,
                                                                  s_qb, s_qh, s_kb, s_kh, s_vb, s_vh, s_eh, H, Lk,
                                                                  KMAX, KHI, D)
                b_qe_new = _qe_chunk(b_q, p_e, c - (BLOCK_M // BLOCK_N) * BLOCK_N, KMAX, KHI, D, BLOCK_N,
                                     PRECISION)  # (BM, BN) t = -r
                if BLOCK_M == BLOCK_N:
                    b_rel = _band_from_chunks(b_qe0, b_qe_new, b_qe_new, b_qe_new, b_qe_new, i_zero, BLOCK_M, BLOCK_N)
                    b_qe0 = b_qe_new
                elif BLOCK_M == 2 * BLOCK_N:
                    b_rel = _band_from_chunks(b_qe0, b_qe1, b_qe_new, b_qe_new, b_qe_new, i_zero, BLOCK_M, BLOCK_N)
                    b_qe0 = b_qe1
                    b_qe1 = b_qe_new
                else:
                    b_rel = _band_from_chunks(b_qe0, b_qe1, b_qe2, b_qe3, b_qe_new, i_zero, BLOCK_M, BLOCK_N)
                    b_qe0 = b_qe1
                    b_qe1 = b_qe2
                    b_qe2 = b_qe3
                    b_qe3 = b_qe_new
                b_ds, b_k = _bwd_tile(b_q, b_qt, b_dot, b_lse, b_delta, b_rel, p_k, p_v, s_kl, s_vl, p_kpm, p_dk, p_dv,
                                      i_n * BLOCK_N, o_m, qpos, i_bh, Lq, Lk, qk_scale, scale, dropout_p, seed,
                                      D, BLOCK_N, CAUSAL, HAS_KPM, DROPOUT, PRECISION)
                b_ds = b_ds.to(b_q.dtype)
                b_dq += tl.dot(b_ds, b_k, input_precision=PRECISION)  # (BM, D)
                if PACK:
                    b_ds1, b_ds2 = _unpack2(b_p12, b_q.dtype)
                    if BLOCK_M >= 4 * BLOCK_N:
                        b_ds3, b_ds4 = _unpack2(b_p34, b_q.dtype)
                # the chunk at distance c is complete: its dS pieces came from this tile and the ones above
                b_w = _chunk_from_tiles(b_ds, b_ds1, b_ds2, b_ds3, b_ds4, i_zero, BLOCK_M, BLOCK_N)  # (BM, BN)
                b_dq = _emit_chunk(b_w, b_qt, p_e, p_de, c, b_dq, KMAX, KHI, D, BLOCK_N, PRECISION)
                if PACK:
                    if BLOCK_M >= 4 * BLOCK_N:
                        b_p34 = _pack2(b_ds2, b_ds3)
                    b_p12 = _pack2(b_ds, b_ds1)
                else:
                    b_ds1, b_ds2, b_ds3, b_ds4 = _shift_in(b_ds, b_ds1, b_ds2, b_ds3, b_ds4, BLOCK_M // BLOCK_N)
            if PACK:
                b_ds1, b_ds2 = _unpack2(b_p12, b_q.dtype)
                if BLOCK_M >= 4 * BLOCK_N:
                    b_ds3, b_ds4 = _unpack2(b_p34, b_q.dtype)
            # recomputed from the band loop's last (opaque) zero: the first ones do not stay live across the loop
            nt_lo, nt_hi, nt_end = _key_tile_ranges(m0 + i_zero, OFF, Lk, KMAX, KHI, BLOCK_M, BLOCK_N, CAUSAL)
            o_mq = o_m + i_zero  # the rows and E's last row again, for the reloads and atomics below
            r_top = KMAX + KHI + i_zero
            i_zq = i_zero
            p_q, p_k, p_v, p_e, p_dk, p_dv, p_de = _base_ptrs(Q, K, V, E, DK, DV, DE, i_b32, i_h32, N_SLOTS, i_zero,
                                                              s_qb, s_qh, s_kb, s_kh, s_vb, s_vh, s_eh, H, Lk,
                                                              KMAX, KHI, D)
            # (BM,) q . E[0], from q reloaded: computed before the band loop it stays live across it; here, before
            # the last chunks, its rows do not stay live across them
            b_qe_lo = tl.sum(_load_rows(p_q, o_mq, Lq, s_ql, D).to(tl.float32)
                             * tl.load(p_e + o_d).to(tl.float32)[None, :], 1)
            if nt_hi > nt_lo:  # the lowest band tile's older chunks (the tiles below went to b_rs_lo)
                b_ds0 = tl.zeros([BLOCK_M, BLOCK_N], b_q.dtype)
                for i_t in tl.static_range(1, BLOCK_M // BLOCK_N + 1):
                    b_w = _chunk_from_tiles(b_ds0, b_ds1, b_ds2, b_ds3, b_ds4, 0, BLOCK_M, BLOCK_N)  # (BM, BN)
                    b_dq = _emit_chunk(b_w, b_qt, p_e, p_de, nt_lo * BLOCK_N - OFF - m0 - i_t * BLOCK_N, b_dq, KMAX,
                                      KHI, D, BLOCK_N, PRECISION)
                    b_ds4 = b_ds3
                    b_ds3 = b_ds2
                    b_ds2 = b_ds1
                    b_ds1 = b_ds0

        for i_r in range(0, nt_lo):
            i_n = nt_lo - 1 - i_r
            b_ds, b_k = _bwd_tile(b_q, b_qt, b_dot, b_lse, b_delta, b_qe_lo[:, None], p_k, p_v, s_kl, s_vl, p_kpm,
                                  p_dk, p_dv, i_n * BLOCK_N, o_m, qpos, i_bh, Lq, Lk, qk_scale, scale, dropout_p,
                                  seed, D, BLOCK_N, CAUSAL, HAS_KPM, DROPOUT, PRECISION)
            b_dq += tl.dot(b_ds.to(b_k.dtype), b_k, input_precision=PRECISION)
            b_rs_lo += tl.sum(b_ds, 1)

        if PRE_QE:  # columns 0 and R - 1 of dQE: nothing else writes them
            tl.store(p_dqe + o_m * (KMAX + KHI + 1), b_rs_lo * scale, mask=m_m)
            tl.store(p_dqe + o_m * (KMAX + KHI + 1) + KMAX + KHI, b_rs_hi * scale, mask=m_m)
        else:
            # q, E[0] and E[R-1] are reloaded (L1/L2-resident) rather than kept live in a second layout
            b_q32 = _load_rows(p_q, (m0 | i_zq) + tl.arange(0, BLOCK_M), Lq, s_ql, D).to(tl.float32)  # (BM, D)
            b_e_lo = tl.load(p_e + o_d).to(tl.float32)  # (D,)
            b_e_hi = tl.load(p_e + r_top * D + o_d).to(tl.float32)  # (D,)
            b_dq += b_rs_lo[:, None] * b_e_lo[None, :] + b_rs_hi[:, None] * b_e_hi[None, :]
            b_de_lo = tl.sum(b_rs_lo[:, None] * b_q32, 0)  # (D,) dE[0] of the fully clipped tiles
            b_de_hi = tl.sum(b_rs_hi[:, None] * b_q32, 0)
            tl.atomic_add(p_de + o_d, b_de_lo, sem="relaxed")
            tl.atomic_add(p_de + r_top * D + o_d, b_de_hi, sem="relaxed")
        if PRE_QE:
            i_bhq = i_bh
        else:  # i_bh again, not kept live across the loops (in the PRE_QE kernel that costs a spill)
            i_bhq = (i_b32 + i_zq).to(tl.int64) * H + (i_h32 + i_zq)
        tl.store(DQ + i_bhq * Lq * D + o_m[:, None] * D + o_d[None, :], (b_dq * scale).to(DQ.dtype.element_ty),
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
    m_keep = _dropout_keep(seed, dropout_p, i_bh, o_m, o_n)  # (BM, BN)
    tl.store(KEEP + (i_bh * Lq + o_m[:, None]) * Lk + o_n[None, :], m_keep.to(tl.int8),
             mask=(o_m < Lq)[:, None] & (o_n < Lk)[None, :])


# ----------------------------------------------------------------------------- launch configs
def _configs(shapes: list[tuple[int, int, int, int]]) -> list:
    """``triton.Config`` per ``(BLOCK_M, BLOCK_N, num_warps, num_stages)``."""
    return [triton.Config({"BLOCK_M": m, "BLOCK_N": n}, num_warps=w, num_stages=s) for m, n, w, s in shapes]


# H100 leads (FlashAttention practice): 64-row tiles on one warpgroup (4 warps), 128-row tiles on two.
# Eight warps on 64-row tiles are not offered: wgmma gives each warpgroup 64 rows, and Triton then
# replicates the 64-row products on the second warpgroup. BLOCK_M is 1, 2 or 4 times BLOCK_N (the skew's
# chunks are BLOCK_N wide). Registers are the constraint: narrow key tiles shrink every (BM, BN)
# temporary while the carried state (R chunks of q E^T, R tiles of dS) stays BM x BM, which is what makes
# the defaults below spill-free (the forward at 32 keys, the backward at 16).
_FWD_CONFIGS = _configs([(64, 32, 4, 1), (64, 32, 4, 2), (64, 64, 4, 1), (128, 64, 8, 1), (128, 64, 8, 2)])
_BWD_CONFIGS = _configs([(64, 16, 4, 1), (64, 16, 4, 2), (64, 32, 4, 1), (128, 32, 8, 1), (128, 64, 8, 1)])
# the autotuner adds the tensors' dtypes to the key; LEN_BUCKET is Lk rounded up to a power of two
_TUNE_KEY = ["D", "CAUSAL", "HAS_KPM", "DROPOUT", "PRE_QE", "LEN_BUCKET"]


# With ZOO_RELATIVE_ATTENTION_AUTOTUNE=0 every launch uses these (no tuning: quick GPU test runs), per
# head dim, chosen from the hinted sm_90 compile report (benchmarks/results/relative_attention_compile_sm90.md):
# every one spill-free (the in-kernel-q.E^T backward at D = 128 at exactly 255 registers), see there.
_DEFAULT_CONFIGS = {
    ("_fwd_kernel", 64): triton.Config({"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=4, num_stages=1),
    ("_fwd_kernel", 128): triton.Config({"BLOCK_M": 64, "BLOCK_N": 32}, num_warps=4, num_stages=1),
    ("_bwd_kernel", 64): triton.Config({"BLOCK_M": 64, "BLOCK_N": 16}, num_warps=4, num_stages=1),
    ("_bwd_kernel", 128): triton.Config({"BLOCK_M": 64, "BLOCK_N": 16}, num_warps=4, num_stages=1),
}


def default_config(kernel_name: str, d: int, precision: str = "tf32") -> triton.Config:
    """The untuned launch config of ``_fwd_kernel`` / ``_bwd_kernel`` for head dim ``d``."""
    if precision == "ieee":  # float32 tiles take twice the shared memory and registers: halve them
        return triton.Config({"BLOCK_M": 32, "BLOCK_N": 32}, num_warps=4, num_stages=1)
    return _DEFAULT_CONFIGS[(kernel_name, max(64, d))]  # D = 16, 32 take D = 64's


def _autotuned(kernel, configs, reset_to_zero=None):
    if INTERPRET:
        return None  # the interpreter launches the plain kernel with INTERPRETER_BLOCK_M x _N
    return triton.autotune(configs=configs, key=_TUNE_KEY, reset_to_zero=reset_to_zero)(kernel)


_TUNED = {
    "_fwd_kernel": _autotuned(_fwd_kernel, _FWD_CONFIGS),
    # dk, dv and dE are accumulated with atomics, so every timing run of the tuner starts from zeros
    "_bwd_kernel": _autotuned(_bwd_kernel, _BWD_CONFIGS, reset_to_zero=["DK", "DV", "DE"]),
}


# Under the interpreter, pretend to have this many multiprocessors so tests exercise shared dE slots.
INTERPRETER_SMS = 2


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
    pairs_in_flight = triton.cdiv(2 * sms, triton.cdiv(lq, 64 if not INTERPRET else INTERPRETER_BLOCK_M))
    if per_head:
        return h * min(b, max(1, triton.cdiv(pairs_in_flight, h)))
    return min(b * h, max(1, pairs_in_flight))


def _launch(kernel, grid_fn, *args, **meta):
    """Launch the plain ``kernel`` with the interpreter's or the default config, or its autotuned twin."""
    name = kernel.fn.__name__
    if INTERPRET:
        tuned = {"BLOCK_M": INTERPRETER_BLOCK_M, "BLOCK_N": INTERPRETER_BLOCK_N}
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
def _inner(t: Tensor) -> Tensor:
    return t if t.stride(-1) == 1 else t.contiguous()  # the kernels take any (B, H, L) strides


def _dot_precision(dtype: torch.dtype) -> str:
    # float32 inputs keep float32 products (no TF32 rounding); half inputs ignore the setting
    return "ieee" if dtype == torch.float32 else "tf32"


def _dropout_args(seed: Tensor | None, dropout_p: float) -> tuple[float, int]:
    return (float(dropout_p), int(seed.item())) if seed is not None and dropout_p > 0.0 else (0.0, 0)


def _operands(q: Tensor, k: Tensor, v: Tensor, table: Tensor, key_padding_mask: Tensor | None, pre_qe: bool):
    """The kernels' tensor operands: contiguous-rows q, k, v; E (``(R, D)`` | ``(H, R, D)``) and the
    precomputed ``(B, H, Lq, R)`` fp32 rows (one of them a placeholder), the int8 padding mask, R and
    the table's head stride."""
    q, k, v = _inner(q), _inner(k), _inner(v)
    rows = table.shape[-1] if pre_qe else table.shape[-2]
    if pre_qe:
        e, qe, s_eh = q, table.float().contiguous(), 0
    else:
        e, qe = table.to(q.dtype).contiguous(), q
        s_eh = rows * q.shape[-1] if table.dim() == 3 else 0  # shared table: every head reads row block 0
    kpm = q if key_padding_mask is None else key_padding_mask.to(torch.int8).expand(q.shape[0], k.shape[2]).contiguous()
    return q, k, v, e, qe, kpm, rows, s_eh


def _forward(q, k, v, table, key_padding_mask, seed, max_distance, causal, scale, dropout_p, pre_qe):
    q, k, v, e, qe, kpm, rows, s_eh = _operands(q, k, v, table, key_padding_mask, pre_qe)
    b, h, lq, d = q.shape
    lk = k.shape[2]
    out = torch.empty((b, h, lq, d), device=q.device, dtype=q.dtype)  # (B, H, Lq, D)
    lse = torch.empty((b, h, lq), device=q.device, dtype=torch.float32)  # (B, H, Lq) log2 units
    p, seed_value = _dropout_args(seed, dropout_p)
    _launch(
        _fwd_kernel, lambda meta: (triton.cdiv(lq, meta["BLOCK_M"]), b * h),
        q, k, v, e, qe, kpm, out, lse,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), s_eh,
        h, lq, lk, lk - lq, max_distance, rows - 1 - max_distance, scale * _LOG2E, p, seed_value,
        triton.next_power_of_2(lk),
        D=d, CAUSAL=causal, HAS_KPM=key_padding_mask is not None, DROPOUT=p > 0.0, PRECISION=_dot_precision(q.dtype),
        PRE_QE=pre_qe,
    )
    return out, lse


def _backward_pass(dout, q, k, v, table, key_padding_mask, seed, out, lse, max_distance, causal, scale, dropout_p,
                   deterministic, pre_qe):
    """dq, dk, dv and the table's gradient: dE ``(R, D)`` | ``(H, R, D)``, or dQE ``(B, H, Lq, R)`` fp32."""
    q, k, v, e, qe, kpm, rows, s_eh = _operands(q, k, v, table, key_padding_mask, pre_qe)
    b, h, lq, d = q.shape
    lk = k.shape[2]
    dout = dout.to(q.dtype).contiguous()  # (B, H, Lq, D)
    delta = torch.empty((b, h, lq), device=q.device, dtype=torch.float32)  # (B, H, Lq) rowsum(dO * O)
    _bwd_delta_kernel[(triton.cdiv(lq, 64), b * h)](out, dout, delta, lq, D=d, BLOCK=64)
    dq = torch.empty((b, h, lq, d), device=q.device, dtype=q.dtype)
    dk = torch.zeros((b, h, lk, d), device=q.device, dtype=torch.float32)  # atomics: fp32, zeroed
    dv = torch.zeros((b, h, lk, d), device=q.device, dtype=torch.float32)
    if pre_qe:
        n_slots, de = 1, dq  # unused
        dqe = torch.zeros((b, h, lq, rows), device=q.device, dtype=torch.float32)  # (B, H, Lq, R)
    else:
        n_slots = _de_slots(b, h, lq, q.device, table.dim() == 3, deterministic)
        de = torch.zeros((n_slots, rows, d), device=q.device, dtype=torch.float32)  # (G, R, D)
        dqe = dq  # unused
    p, seed_value = _dropout_args(seed, dropout_p)
    _launch(
        _bwd_kernel, lambda m: (1 if deterministic else triton.cdiv(lq, m["BLOCK_M"]), b * h),
        q, k, v, e, qe, kpm, dout, lse, delta, dq, dk, dv, de, dqe, n_slots,
        q.stride(0), q.stride(1), q.stride(2), k.stride(0), k.stride(1), k.stride(2),
        v.stride(0), v.stride(1), v.stride(2), s_eh,
        h, lq, lk, lk - lq, max_distance, rows - 1 - max_distance, scale * _LOG2E, scale, p, seed_value,
        triton.next_power_of_2(lk),
        D=d, CAUSAL=causal, HAS_KPM=key_padding_mask is not None, DROPOUT=p > 0.0, PRECISION=_dot_precision(q.dtype),
        SERIAL=deterministic, PRE_QE=pre_qe,
    )
    if pre_qe:
        dtable = dqe  # already scaled in the kernel
    elif table.dim() == 3:
        dtable = de.view(n_slots // h, h, rows, d).sum(0) * scale  # (H, R, D): slot bh % G holds head h
    else:
        dtable = de.sum(0) * scale  # (R, D)
    return dq, dk.to(k.dtype), dv.to(v.dtype), dtable.to(table.dtype)


def _fake_fwd(q, k, v, table, key_padding_mask, seed, max_distance, causal, scale, dropout_p):
    b, h, lq, d = q.shape
    return q.new_empty((b, h, lq, d)), q.new_empty((b, h, lq), dtype=torch.float32)


def _fake_bwd(dout, q, k, v, table, key_padding_mask, seed, out, lse, max_distance, causal, scale, dropout_p,
              deterministic):
    return q.new_empty(q.shape), k.new_empty(k.shape), v.new_empty(v.shape), table.new_empty(table.shape)


def _setup_context(ctx, inputs, output) -> None:
    q, k, v, table, key_padding_mask, seed, max_distance, causal, scale, dropout_p = inputs
    out, lse = output
    ctx.save_for_backward(q, k, v, table, key_padding_mask, seed, out, lse)
    ctx.max_distance, ctx.causal, ctx.scale, ctx.dropout_p = max_distance, causal, scale, dropout_p
    ctx.deterministic = torch.are_deterministic_algorithms_enabled()
    ctx.mark_non_differentiable(lse)


def _define_ops(name: str, pre_qe: bool):
    """The ``zoo::<name>_fwd`` / ``_bwd`` custom-op pair, with fake implementations and autograd. ``table`` is
    E (``(R, D)`` | ``(H, R, D)``) or, with ``pre_qe``, the precomputed ``q @ E^T`` (``(B, H, Lq, R)`` fp32)."""

    def fwd(q: Tensor, k: Tensor, v: Tensor, table: Tensor, key_padding_mask: Tensor | None, seed: Tensor | None,
            max_distance: int, causal: bool, scale: float, dropout_p: float) -> tuple[Tensor, Tensor]:
        return _forward(q, k, v, table, key_padding_mask, seed, max_distance, causal, scale, dropout_p, pre_qe)

    def bwd(dout: Tensor, q: Tensor, k: Tensor, v: Tensor, table: Tensor, key_padding_mask: Tensor | None,
            seed: Tensor | None, out: Tensor, lse: Tensor, max_distance: int, causal: bool, scale: float,
            dropout_p: float, deterministic: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        return _backward_pass(dout, q, k, v, table, key_padding_mask, seed, out, lse, max_distance, causal, scale,
                              dropout_p, deterministic, pre_qe)

    fwd_op = torch.library.custom_op(f"zoo::{name}_fwd", mutates_args=())(fwd)
    bwd_op = torch.library.custom_op(f"zoo::{name}_bwd", mutates_args=())(bwd)
    fwd_op.register_fake(_fake_fwd)
    bwd_op.register_fake(_fake_bwd)

    def backward(ctx, dout: Tensor, dlse: Tensor | None):
        q, k, v, table, key_padding_mask, seed, out, lse = ctx.saved_tensors
        dq, dk, dv, dtable = bwd_op(
            dout, q, k, v, table, key_padding_mask, seed, out, lse, ctx.max_distance, ctx.causal, ctx.scale,
            ctx.dropout_p, ctx.deterministic or torch.are_deterministic_algorithms_enabled(),
        )
        return dq, dk, dv, dtable, None, None, None, None, None, None

    fwd_op.register_autograd(backward, setup_context=_setup_context)
    return fwd_op, bwd_op


_relative_attention_fwd, _relative_attention_bwd = _define_ops("relative_attention", pre_qe=False)
_relative_attention_qe_fwd, _relative_attention_qe_bwd = _define_ops("relative_attention_qe", pre_qe=True)


# ----------------------------------------------------------------------------- precomputed q.E^T
def use_precomputed_qe(rows: int, lk: int, head_dim: int) -> bool:
    """The rule for ``precompute_qe=None``: precompute ``q @ E^T`` when the table is short, ``R <= 2 D``
    and ``R < Lk`` (K << L).

    The precomputed ``(B, H, Lq, R)`` fp32 tensor is then O(L) memory, at most 4x the bytes of q in half
    precision (``4 R <= 8 D``), and costs ``2 Lq R D`` FLOPs per (batch, head) once; the kernel's band
    tiles drop the ``q @ E_chunk^T`` matmul and both skew passes (forward 2 tile matmuls per band tile
    instead of 3, backward 5 instead of 8), and the in-kernel path would compute ``R + BLOCK_M + BLOCK_N``
    distances per row where only R exist. A table as long as the sequence (K >= L, the Music
    Transformer's full range) would make that tensor O(L^2): the in-kernel path keeps it O(L).
    """
    return rows <= 2 * head_dim and rows < lk


def _table_logits(q: Tensor, weight: Tensor) -> Tensor:
    """``q @ E^T`` in fp32, ``(B, H, Lq, R)``; differentiable, so its gradient reaches q and E through autograd."""
    table = weight.float().transpose(-1, -2)  # (D, R) | (H, D, R)
    return q.float() @ (table if weight.dim() == 2 else table[None])  # (B, H, Lq, R)


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
    precompute_qe: bool | None = None,
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
        precompute_qe: compute ``q @ E^T`` once as a ``(B, H, Lq, R)`` fp32 tensor that the kernels gather
            from (True), or its band tile by tile inside them (False); None picks by
            :func:`use_precomputed_qe` (short tables, K << L).

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
    if precompute_qe not in (None, True, False):
        raise ValueError(f"relative_attention: precompute_qe must be None, True or False, got {precompute_qe!r}")
    if precompute_qe is None:
        precompute_qe = use_precomputed_qe(weight.shape[-2], k.shape[2], q.shape[-1])
    dropout_p = float(dropout_p)
    seed = draw_seed() if dropout_p > 0.0 else None
    if precompute_qe:
        out, _ = _relative_attention_qe_fwd(q, k, v, _table_logits(q, weight), key_padding_mask, seed, max_distance,
                                            causal, scale, dropout_p)
    else:
        out, _ = _relative_attention_fwd(q, k, v, weight, key_padding_mask, seed, max_distance, causal, scale,
                                         dropout_p)
    return out
