"""MatchAttention (Yan et al. 2025, "MatchAttention: Matching the Relative Positions for High-Resolution
Cross-View Matching", arXiv 2510.14260): windowed L1 attention at a learned, continuous position.

    from zoo.core_attention import match_attention
    out = match_attention(q, k, v, centers, radius)                          # (B, H, Hq, Wq, Dv)
    out, weights = match_attention(q, k, v, centers, radius, return_weights=True)

Each query attends to the ``S x S`` keys (``S = 2r + 2``) around its own centre, a continuous
``(x, y)`` position in the key map (the query's own pixel plus a learned relative position, or a
disparity offset in cross-view attention). The score is ``-scale * ||q - k||_1``; **BilinearSoftmax**
softmaxes the four overlapping ``(2r + 1)^2`` sub-windows on their own and blends their outputs with
the bilinear weights of the centre's fractional part, so the output is continuous in the centre and
differentiable w.r.t. it. See :func:`match_attention` for the exact contract.

Files:

* :mod:`.reference` -- :func:`match_attention_reference`, the readable PyTorch gather (exact; what
  the kernel is tested against).
* :mod:`.chunked` -- :func:`match_attention_chunked`, the same math in chunked PyTorch with a
  hand-written backward that saves only q, k, v, the centres and four log-sum-exps per query and
  recomputes the window gathers: the fast path off CUDA (CPU training), any device, any float dtype.
* :mod:`.triton` -- the fused Triton kernel, forward and backward (dq, dk, dv, d centers) without any
  ``(N, window, C)`` tensor; imported on first use, so importing this package does not import Triton.

Why this op is not in the kernel registry (``zoo.core_attention.kernels.register_kernel``): the
registry serves :func:`zoo.core_attention.attention` calls, whose ``KernelCall`` is a dot-product
attention over ``(B, H, L, D)`` sequences with one position term. MatchAttention's score is not a dot
product, its keys are a per-query window of a 2-D map rather than a sequence, and its inputs (centres,
radius) and optional second output (the weights) have no place in a ``KernelCall``. So it is its own
public function that owns its dispatch (``backend=``), with the same layout as a registered op
(``reference.py`` beside ``triton.py``, Triton imported lazily).
"""

from __future__ import annotations

import os

import torch
from torch import Tensor

from .chunked import match_attention_chunked
from .reference import bilinear_weights, match_attention_reference

__all__ = [
    "BACKENDS", "CLAMP_EPS", "bilinear_weights", "clamp_centers", "match_attention", "match_attention_chunked",
    "match_attention_reference",
]

BACKENDS = ("auto", "reference", "chunked", "triton")
# The official model clamps centres to [r, W - 1 - r - 1e-3] (x; likewise y) so that floor(c) + r + 1
# stays inside the map and the fractional part stays below 1.
CLAMP_EPS = 1e-3
_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def _problem(q: Tensor, k: Tensor, v: Tensor, centers: Tensor, radius: int) -> str | None:
    """Why these inputs are not a MatchAttention call, or None."""
    for name, t in (("q", q), ("k", k), ("v", v), ("centers", centers)):
        if not isinstance(t, Tensor):
            return f"{name} must be a tensor, got {type(t).__name__}"
        if t.dim() != 5:
            return f"{name} must be 5-D {'(B, H, Hq, Wq, 2)' if name == 'centers' else '(B, H, rows, cols, C)'}, " \
                   f"got shape {tuple(t.shape)}"
    if isinstance(radius, bool) or not isinstance(radius, int) or radius < 0:
        return f"radius must be an int >= 0, got {radius!r}"
    b, h, hq, wq, d = q.shape
    if k.shape[:2] != (b, h) or k.shape[-1] != d:
        return f"k must be (B={b}, H={h}, Hk, Wk, D={d}) like q {tuple(q.shape)}, got {tuple(k.shape)}"
    if v.shape[:4] != k.shape[:4]:
        return f"v must be (B, H, Hk, Wk, Dv) = ({', '.join(map(str, k.shape[:4]))}, Dv) like k, got {tuple(v.shape)}"
    if centers.shape != (b, h, hq, wq, 2):
        return f"centers must be (B, H, Hq, Wq, 2) = {(b, h, hq, wq, 2)} (x, y per query), got {tuple(centers.shape)}"
    side = 2 * radius + 2
    if k.shape[2] < side or k.shape[3] < side:
        return f"the key map ({k.shape[2]} x {k.shape[3]}) is smaller than the {side} x {side} window of radius {radius}"
    if q.dtype not in _FLOATS or k.dtype != q.dtype or v.dtype != q.dtype:
        return f"q, k, v must share one floating dtype, got {q.dtype}, {k.dtype}, {v.dtype}"
    if centers.dtype not in _FLOATS:
        return f"centers must be floating point, got {centers.dtype}"
    devices = {t.device for t in (q, k, v, centers)}
    if len(devices) != 1:
        return f"q, k, v, centers must be on one device, got {sorted(str(x) for x in devices)}"
    if min(q.numel(), k.numel(), v.numel()) == 0:
        return "empty input"
    return None


def clamp_centers(centers: Tensor, radius: int, key_rows: int, key_cols: int) -> Tensor:
    """Centres clamped so the window stays inside the key map (as the official model does):
    ``x`` to ``[r, Wk - 1 - r - CLAMP_EPS]``, ``y`` to ``[r, Hk - 1 - r - CLAMP_EPS]``; zero gradient
    where clamped, as ``torch.clamp``; half-precision centres come back as float32."""
    if centers.dtype in (torch.float16, torch.bfloat16):  # W - 1 - r - 1e-3 would round up to an integer
        centers = centers.float()
    x = centers[..., 0].clamp(radius, key_cols - 1 - radius - CLAMP_EPS)
    y = centers[..., 1].clamp(radius, key_rows - 1 - radius - CLAMP_EPS)
    return torch.stack([x, y], dim=-1)  # (B, H, Hq, Wq, 2)


def _triton_problem(q: Tensor) -> str | None:
    """Why the fused kernel cannot run on q's device and dtype, or None (cheap; imports Triton)."""
    if not (q.is_cuda or (q.device.type == "cpu" and os.environ.get("TRITON_INTERPRET", "0") == "1")):
        return f"the Triton kernel needs a CUDA device (or TRITON_INTERPRET=1 with CPU tensors), got {q.device}"
    try:
        from . import triton as fused
    except ImportError as err:  # triton missing on this platform
        return f"triton is not importable ({err})"
    return fused.dtype_problem(q)


def match_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    centers: Tensor,
    radius: int,
    *,
    scale: float | None = None,
    backend: str = "auto",
    return_weights: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """MatchAttention: each query attends to a ``(2r + 2)^2`` key window at a continuous centre.

    Args:
        q: ``(B, H, Hq, Wq, D)`` queries on their own ``Hq x Wq`` pixel grid.
        k: ``(B, H, Hk, Wk, D)`` keys on the key map (the same view for self-attention, the other
            view for cross-attention).
        v: ``(B, H, Hk, Wk, Dv)`` values on the key map.
        centers: ``(B, H, Hq, Wq, 2)`` float ``(x, y)`` in key-pixel coordinates, **absolute** (a
            query's own pixel plus its relative position / disparity offset), one per head. They are
            clamped first, as the official model does, to ``r <= x <= Wk - 1 - r - 1e-3`` and
            ``r <= y <= Hk - 1 - r - 1e-3`` (``torch.clamp``: zero gradient where clamped), so the
            window always lies inside the key map.
        radius: ``r >= 0``; the window is ``S x S`` with ``S = 2r + 2`` (one radius for x and y;
            the official code's ``win_r = [r, r]``). ``Hk, Wk >= S`` is required.
        scale: multiplies the negative L1 distance; default ``D ** -0.5``.
        backend: ``"reference"`` (readable gather, autograd backward: the yardstick), ``"chunked"``
            (the same math in query chunks with a hand-written backward and bounded memory; any
            device), ``"triton"`` (fused forward and backward; CUDA, or CPU under
            ``TRITON_INTERPRET=1`` in float16/32/64), ``"auto"`` (Triton on CUDA when it supports the
            dtype, ``"chunked"`` otherwise: CPU training included).
        return_weights: also return the effective per-key weights.

    The function, for one query, head and clamped centre ``c``, with ``(x0, y0) = floor(c)``,
    ``(fx, fy) = c - floor(c)``:

        window keys   k[y0 - r + dy, x0 - r + dx],   dy, dx in 0 .. 2r + 1
        s[dy, dx]     = -scale * sum_d |q_d - k[..]_d|
        sub-windows   nw: dy, dx in 0..2r    ne: dx shifted +1    sw: dy shifted +1    se: both
        blend         w_nw = (1-fx)(1-fy), w_ne = fx(1-fy), w_sw = (1-fx)fy, w_se = fx fy
        P[dy, dx]     = sum over the sub-windows u containing (dy, dx) of w_u * softmax_u(s)[dy, dx]
        out           = sum_{dy, dx} P[dy, dx] v[y0 - r + dy, x0 - r + dx]

    This is the official definition (``models/mat_pytorch_impl.py`` and ``attention_blocks.py`` of
    TingmanYan/MatchAttention), read there, with two points the short description leaves open: the
    gradient w.r.t. the centre flows only through the bilinear weights (the integer corner is
    piecewise constant, so the output is continuous but only piecewise smooth in the centre: its
    derivative jumps where ``c`` crosses an integer), and the clamp above (the official module does it
    before the op; here the op does it). Where ``q == k`` exactly in a coordinate, ``|.|`` has
    derivative 0 (``torch.sign``), in every backend.

    Returns:
        ``out`` ``(B, H, Hq, Wq, Dv)`` in q's dtype; with ``return_weights=True`` also ``weights``
        ``(B, H, Hq, Wq, (2r + 2)**2)``: ``P`` flattened row-major over ``(dy, dx)`` (index
        ``dy * (2r + 2) + dx``), summing to 1 per query -- the official ``attn`` order per head. The
        official gated cross-attention concatenates them as ``(B, N, heads * S^2)``, head-major:
        ``weights.permute(0, 2, 3, 1, 4).reshape(B, Hq, Wq, H * S**2)``. Both outputs are
        differentiable w.r.t. q, k, v and centers in every backend.
    """
    problem = _problem(q, k, v, centers, radius)
    if problem is not None:
        raise ValueError(f"match_attention: {problem}")
    if backend not in BACKENDS:
        raise ValueError(f"match_attention: backend must be one of {BACKENDS}, got {backend!r}")
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if scale != scale or scale in (float("inf"), float("-inf")):
        raise ValueError(f"match_attention: scale must be finite, got {scale}")
    if backend == "auto":
        backend = "triton" if q.is_cuda and _triton_problem(q) is None else "chunked"
    elif backend == "triton":
        why = _triton_problem(q)
        if why is not None:
            raise ValueError(f"match_attention: backend='triton' cannot run this call: {why}")
    centers = clamp_centers(centers, radius, k.shape[2], k.shape[3])
    if backend == "reference":
        out, weights = match_attention_reference(q, k, v, centers, radius, scale)
    elif backend == "chunked":
        out, weights = match_attention_chunked(q, k, v, centers, radius, scale, return_weights)
    else:
        from .triton import match_attention_triton

        out, weights = match_attention_triton(q, k, v, centers, radius, scale, return_weights)
    return (out, weights) if return_weights else out
