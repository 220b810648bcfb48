"""MatchAttention in chunked PyTorch with a hand-written backward: the fast path where Triton is not.

The function is :func:`zoo.core_attention.kernels.match_attention.match_attention` (its docstring is
the contract); centres arrive here already clamped. It computes exactly what ``reference.py`` does,
but where the reference gathers the ``(B, H, N, S^2, D)`` window keys and values of every query at once
and leaves the backward to autograd (which then keeps the gathered windows, their differences, the
padded sub-window softmaxes and more alive until the backward), this path

* walks the queries (flattened over batch, heads and pixels) in chunks of ``n`` with
  ``n * S^2 * (D + Dv)`` bounded by ``chunk_elements``, so a window tile never exceeds a fixed size;
* gathers one chunk's keys and values with a single ``index_select`` from ``cat(k, v)`` and takes
  the scores with ``cdist(p=1)`` (no ``(n, S^2, D)`` difference tensor in the forward);
* softmaxes the four sub-windows as one ``(n, 4, S^2)`` tile, the scores plus a constant ``(4, S^2)``
  mask that is 0 inside sub-window ``u`` and -inf outside, each row with its own max, so there is
  no padding and no slicing; ``P = sum_u w_u p_u`` is one multiply-and-sum with the blend. (Shifted
  ``(S - 1) x (S - 1)`` slices of an ``(n, S, S)`` tile, the other way to avoid padding, were measured
  slower on CPU at the demo's r = 1, 16384 queries: the four exps 4.6 ms against 1.4 ms, the four
  log-sum-exps 5.3 ms against 3.2 ms; strided 3 x 3 views defeat vectorization.)
* saves only q, k, v, the clamped centres and the four log-sum-exps per query, ``(B, H, N, 4)``;
  the backward recomputes the window gathers and scores chunk by chunk.

Backward, per chunk, with ``g_t = dout . v_t + dweights_t`` and ``p_{u,t} = exp(s_t - lse_u)``
(the softmax of sub-window ``u``), the same math as the fused kernel in ``triton.py``:

    delta_u = sum_{t in u} p_{u,t} g_t                      (= d loss / d w_u)
    ds_t    = sum_{u containing t} w_u p_{u,t} (g_t - delta_u)
    dk_t   += scale ds_t sign(q - k_t)      dq = -sum_t scale ds_t sign(q - k_t)
    dv_t   += P_t dout                      (scatter-adds: overlapping windows share keys)
    dcx     = (1 - fy)(delta_ne - delta_nw) + fy (delta_se - delta_sw)
    dcy     = (1 - fx)(delta_sw - delta_nw) + fx (delta_se - delta_ne)

Precision: float16 / bfloat16 inputs compute in float32 (each chunk is cast after the gather; the
reference casts after ``|q - k|``, so half-precision results agree to half-precision rounding, not
bit for bit); float32 and float64 compute in their own dtype. Outputs and gradients come back in
the inputs' dtypes. Runs on any device PyTorch runs on.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from .reference import bilinear_weights

__all__ = ["CHUNK_ELEMENTS", "DEVICE_CHUNK_ELEMENTS", "match_attention_chunked"]

#: Elements of one chunk's gathered window tile ``(n, S^2, D + Dv)``: 256K floats, 1 MiB in float32 -- small
#: enough to stay in cache and to keep the backward's temporaries a few MiB whatever the map size, large
#: enough that the per-chunk Python overhead is small (benchmarks/match_attention.py).
CHUNK_ELEMENTS = 1 << 18
#: The same on other devices (CUDA without Triton), where every op is a kernel launch: 64 MiB tiles.
DEVICE_CHUNK_ELEMENTS = 1 << 24


def _sub_window_mask(side: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``(4, S^2)``: 0 where window position t lies in sub-window u (nw, ne, sw, se), -inf elsewhere."""
    t = torch.arange(side * side, device=device)
    oy, ox = torch.tensor([0, 0, 1, 1], device=device), torch.tensor([0, 1, 0, 1], device=device)
    dy, dx = t[None] // side - oy[:, None], t[None] % side - ox[:, None]  # (4, S^2) position inside u
    inside = (dy >= 0) & (dy < side - 1) & (dx >= 0) & (dx < side - 1)
    return torch.zeros(4, side * side, device=device, dtype=dtype).masked_fill_(~inside, float("-inf"))


class _Layout:
    """Shapes and flat views of one call: queries flattened to ``M = B H Nq`` rows, keys to ``B H Nk``."""

    def __init__(self, q: Tensor, k: Tensor, v: Tensor, radius: int, scale: float, chunk_elements: int) -> None:
        b, h, hq, wq, self.d = q.shape
        self.wk, self.dv = k.shape[3], v.shape[-1]
        self.nq, self.nk, self.rows = hq * wq, k.shape[2] * self.wk, b * h * hq * wq
        self.radius, self.scale, self.side = radius, scale, 2 * radius + 2
        self.acc = torch.float64 if q.dtype == torch.float64 else torch.float32
        self.chunk = max(1, chunk_elements // (self.side**2 * (self.d + self.dv)))
        steps = torch.arange(self.side, device=q.device)
        self.window = (steps[:, None] * self.wk + steps[None, :]).flatten()  # (S^2,) offsets from the corner
        self.mask = _sub_window_mask(self.side, q.device, self.acc)  # (4, S^2)

    def chunks(self):
        return ((a, min(a + self.chunk, self.rows)) for a in range(0, self.rows, self.chunk))

    def keys_values(self, k: Tensor, v: Tensor) -> Tensor:
        return torch.cat([k, v], -1).reshape(-1, self.d + self.dv)  # (B H Nk, D + Dv)

    def window_of(self, q_rows: Tensor, kv: Tensor, cen: Tensor, a: int, b: int):
        """Rows a..b: flat window indices ``(n, S^2)``, the query rows ``(n, 1, D)``, the window keys
        ``(n, S^2, D)`` and values ``(n, S^2, Dv)``, scores ``(n, S^2)`` and the blend ``(n, 4)``."""
        c = cen[a:b]  # (n, 2) clamped (x, y)
        corner = torch.floor(c)  # (n, 2)
        blend = bilinear_weights(c - corner)  # (n, 4)
        corner = corner.to(torch.long) - self.radius  # (n, 2) top-left key of the window
        rows = torch.arange(a, b, device=cen.device) // self.nq  # (n,) flat (batch, head) of each query
        index = (rows * self.nk + corner[:, 1] * self.wk + corner[:, 0])[:, None] + self.window  # (n, S^2)
        tile = kv.index_select(0, index.flatten()).view(b - a, self.side**2, -1).to(self.acc)  # (n, S^2, D + Dv)
        query = q_rows[a:b, None].to(self.acc)  # (n, 1, D)
        keys, values = tile[..., : self.d], tile[..., self.d :]
        # cdist(p=1) is the exact sum |q - k_t|, without materializing the (n, S^2, D) difference
        scores = torch.cdist(query, keys, p=1).squeeze(1).mul_(-self.scale)  # (n, S^2)
        return index, query, keys, values, scores, blend

    def masked(self, scores: Tensor) -> Tensor:
        """The scores once per sub-window: ``(n, 4, S^2)``, -inf outside sub-window u."""
        return scores[:, None, :] + self.mask

    @staticmethod
    def blend(per_sub_window: Tensor, coefficients: Tensor) -> Tensor:
        """``sum_u c_u x_u`` of ``(n, 4, S^2)`` by ``(n, 4)``: ``(n, S^2)`` (a multiply and a sum: 2.5x faster
        on CPU than the batched (1 x 4) @ (4 x S^2) product at the demo's r = 1)."""
        return (per_sub_window * coefficients[..., None]).sum(1)

    def softmaxes(self, scores: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Unnormalized sub-window exponentials ``e (n, 4, S^2)`` (0 outside), their sums and log-sum-exps ``(n, 4)``."""
        masked = self.masked(scores)  # (n, 4, S^2)
        top = masked.amax(-1)  # (n, 4): each sub-window's own max, so no sub-window underflows
        exps = masked.sub_(top[..., None]).exp_()  # (n, 4, S^2)
        total = exps.sum(-1)  # (n, 4), >= 1
        return exps, total, top + total.log()


class _MatchAttentionChunked(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, centers, radius, scale, return_weights, chunk_elements):
        lay = _Layout(q, k, v, radius, scale, chunk_elements)
        q_rows = q.reshape(lay.rows, lay.d)  # (M, D)
        cen = centers.to(lay.acc).reshape(lay.rows, 2)  # (M, 2)
        kv = lay.keys_values(k, v)  # (B H Nk, D + Dv)
        out = q.new_empty(lay.rows, lay.dv)  # (M, Dv)
        lse = torch.empty(lay.rows, 4, device=q.device, dtype=lay.acc)  # (M, 4)
        weights = q.new_empty(lay.rows, lay.side**2) if return_weights else None  # (M, S^2)
        for a, b in lay.chunks():
            _, _, _, values, scores, blend = lay.window_of(q_rows, kv, cen, a, b)
            exps, total, lse[a:b] = lay.softmaxes(scores)  # (n, 4, S^2), (n, 4), (n, 4)
            weight = lay.blend(exps, blend / total)  # (n, S^2): P = sum_u w_u p_u
            out[a:b] = torch.bmm(weight[:, None, :], values).squeeze(1)  # (n, Dv)
            if weights is not None:
                weights[a:b] = weight
        ctx.save_for_backward(q, k, v, cen, lse)
        ctx.radius, ctx.scale, ctx.chunk_elements, ctx.centers_dtype = radius, scale, chunk_elements, centers.dtype
        shape = q.shape[:4]
        return out.view(*shape, lay.dv), (None if weights is None else weights.view(*shape, lay.side**2))

    @staticmethod
    @once_differentiable  # a second derivative through this backward is not implemented: autograd says so
    def backward(ctx, dout, dweights):
        q, k, v, cen, lse = ctx.saved_tensors
        lay = _Layout(q, k, v, ctx.radius, ctx.scale, ctx.chunk_elements)
        q_rows = q.reshape(lay.rows, lay.d)  # (M, D)
        kv = lay.keys_values(k, v)
        dout = None if dout is None else dout.reshape(lay.rows, 1, lay.dv)  # (M, 1, Dv)
        dweights = None if dweights is None else dweights.reshape(lay.rows, lay.side**2)  # (M, S^2)
        dq = torch.empty(lay.rows, lay.d, device=q.device, dtype=lay.acc)  # (M, D)
        dkv = torch.zeros(kv.shape, device=q.device, dtype=lay.acc)  # (B H Nk, D + Dv)
        dcen = torch.empty(lay.rows, 2, device=q.device, dtype=lay.acc)  # (M, 2)
        for a, b in lay.chunks():
            index, query, keys, values, scores, blend = lay.window_of(q_rows, kv, cen, a, b)
            probs = lay.masked(scores).sub_(lse[a:b, :, None]).exp_()  # (n, 4, S^2): p_u, 0 outside u
            weight = lay.blend(probs, blend)  # (n, S^2)
            grad = torch.zeros_like(weight) if dweights is None else dweights[a:b].to(lay.acc)  # (n, S^2)
            if dout is not None:
                dout_rows = dout[a:b].to(lay.acc)  # (n, 1, Dv)
                grad = grad + torch.bmm(values, dout_rows.transpose(1, 2)).squeeze(-1)  # g_t = dout . v_t + dw_t
            delta = torch.bmm(probs, grad[..., None]).squeeze(-1)  # (n, 4): d loss / d w_u
            # ds_t = sum_u w_u p_{u,t} (g_t - delta_u) = P_t g_t - sum_u (w_u delta_u) p_{u,t}
            dscores = weight * grad - lay.blend(probs, blend * delta)  # (n, S^2)
            sign = (query - keys).sign_()  # (n, S^2, D): d s_t / d k_t = scale sign(q - k_t)
            dtile = torch.empty(index.shape + (lay.d + lay.dv,), device=q.device, dtype=lay.acc)  # (n, S^2, D + Dv)
            dkeys = torch.mul(sign, dscores.mul_(lay.scale)[..., None], out=dtile[..., : lay.d])  # d loss / d k_t
            dq[a:b] = -dkeys.sum(1)  # (n, D)
            if dout is not None:
                torch.mul(weight[..., None], dout_rows, out=dtile[..., lay.d :])  # d loss / d v_t = P_t dout
            else:
                dtile[..., lay.d :] = 0
            # on CPU index_add_ is the faster scatter for rows of >= 16 elements, index_put_ below that
            if lay.d + lay.dv >= 16:
                dkv.index_add_(0, index.flatten(), dtile.view(-1, lay.d + lay.dv))
            else:
                dkv.index_put_((index.flatten(),), dtile.view(-1, lay.d + lay.dv), accumulate=True)
            fx, fy = (cen[a:b] - cen[a:b].floor()).unbind(-1)  # (n,)
            nw, ne, sw, se = delta.unbind(-1)
            dcen[a:b, 0] = (1 - fy) * (ne - nw) + fy * (se - sw)
            dcen[a:b, 1] = (1 - fx) * (sw - nw) + fx * (se - ne)
        dk, dv = dkv.split([lay.d, lay.dv], -1)
        return (dq.view(q.shape).to(q.dtype), dk.reshape(k.shape).to(k.dtype), dv.reshape(v.shape).to(v.dtype),
                dcen.view(*q.shape[:4], 2).to(ctx.centers_dtype), None, None, None, None)


def match_attention_chunked(
    q: Tensor, k: Tensor, v: Tensor, centers: Tensor, radius: int, scale: float, return_weights: bool,
    chunk_elements: int | None = None,
) -> tuple[Tensor, Tensor | None]:
    """The chunked op on checked inputs with clamped centres: ``(out, weights or None)``; ``chunk_elements``
    bounds one chunk's window tile (default :data:`CHUNK_ELEMENTS` on CPU, :data:`DEVICE_CHUNK_ELEMENTS` elsewhere)."""
    if chunk_elements is None:
        chunk_elements = CHUNK_ELEMENTS if q.device.type == "cpu" else DEVICE_CHUNK_ELEMENTS
    return _MatchAttentionChunked.apply(q, k, v, centers, radius, scale, return_weights, chunk_elements)
