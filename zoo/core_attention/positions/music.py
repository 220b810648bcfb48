"""Fundamental Music Embedding (FME) and the RIPO pitch / onset relative term.

Guo, Kang & Herremans 2023, "A Domain-Knowledge-Inspired Music Embedding Space and a Novel
Attention Mechanism for Symbolic Music Modeling" (AAAI, arXiv 2212.00973).

* :class:`FundamentalMusicEmbedding` -- ``FME(f) = [sin(w_k f) + b_sin_k, cos(w_k f) + b_cos_k]_k``
  with ``w_k = B^(-2k/d)`` (interleaved sin/cos), trainable frequencies and a trainable
  "translation" bias. The bias-free part is the *fundamental music shift* ``FMS(delta)``, used for
  relative attributes (pitch intervals, onset differences).
* :class:`MusicRelative` -- the pitch and onset terms of RIPO attention::

      S_pitch[h, i, j] = q_hi . [W FMS(p_i - p_j) + b]_h     (both tokens quantifiable)
                       = q_hi . e_h                           (either token is pad / rest / sustain)
      S_onset[h, i, j] = q_hi . [W' FMS'(t_i - t_j) + b']_h
      logits += scale * (S_pitch + S_onset)

  The index term of RIPO is the Music Transformer's, :class:`~.relative.RelativeEmbedding`; a
  RIPO layer passes both terms to :func:`zoo.core_attention.attention`.

Two exact forms, tested against each other in float64, forward and backward:

* ``bias`` materializes ``W FMS(p_i - p_j)`` as a ``(B, Lq, Lk, H*D)`` tensor, exactly like the
  official code (readable, O(L^2 d) memory).
* ``qk_features`` uses ``sin(a - b) = sin a cos b - cos a sin b`` and
  ``cos(a - b) = cos a cos b + sin a sin b``: with ``u = q_hi W_h`` split into its sin / cos
  coefficients ``(u_s, u_c)`` per frequency,
  ``q_hi . W_h FMS(p_i - p_j) = sum_k cos(w_k p_j) (u_s sin a + u_c cos a) + sin(w_k p_j) (u_c sin a - u_s cos a)``
  with ``a = w_k p_i`` -- a dot product of a query feature with a key feature. The Linear's bias
  is a ones column; the non-quantifiable embedding is ``m_i m_j (S - q.e) + q.e`` with
  quantifiable indicators ``m``, i.e. masked columns plus one more ones column. The whole term is
  ``d_fme + 2`` extra q/k columns per attribute, so RIPO attention runs through plain SDPA /
  FlashAttention with O(L) memory.

Differences from the official code, and why:

* One frequency per sin/cos *pair* by default (the paper's formula); the code initialises one per
  component identically and lets them drift apart: ``per_component=True`` / ``per_component_frequencies``
  reproduces that, at twice the fast form's key columns.
* Each term owns its FMS frequencies and one projection per layer by default. The official code ties
  the relative FMS frequencies to the token FME and applies a shared Linear before a per-layer Linear;
  two consecutive Linears are one Linear, and ``shared_fms`` gives the tie.
* The non-quantifiable embedding ``e`` is learned per layer directly in head space (the official
  code maps one shared ``d``-vector through the same two Linears -- the same set of values).
* The onset term takes no non-quantifiable mask by default, as in the official code (rests have
  onsets; padded keys are masked out of attention anyway); pass ``onset_nonquant`` to use one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .base import PositionContext, PositionTerm

__all__ = ["FundamentalMusicEmbedding", "MusicRelative", "PITCH_BASE", "DURATION_BASE"]

#: base constants of the official configs (pitch FME and duration / onset FME)
PITCH_BASE = 9919.0
DURATION_BASE = 7920.0


class FundamentalMusicEmbedding(nn.Module):
    """``FME(f) (..., d)`` of a scalar musical attribute ``f (...)`` (pitch, duration, onset).

    Args:
        dim: embedding size ``d`` (even).
        base: ``B`` in ``w_k = B^(-2k/d)``; 9919 for pitch, 7920 for duration in the paper.
        trainable_frequencies: learn the frequencies (the paper's setting).
        bias: add the trainable translation bias (``False`` gives the bias-free FMS only).
        per_component: ``d`` frequencies, one per sin and one per cos component (the official code:
            initialised equal per pair, they drift apart in training), instead of ``d/2`` shared per
            pair (the paper's formula). ``MusicRelative``'s fast form then needs ``2 d`` columns.
    """

    def __init__(
        self, dim: int, base: float, *, trainable_frequencies: bool = True, bias: bool = True, per_component: bool = False
    ) -> None:
        super().__init__()
        if dim <= 0 or dim % 2:
            raise ValueError(f"FundamentalMusicEmbedding needs an even positive dim, got {dim}")
        if base <= 1:
            raise ValueError(f"FundamentalMusicEmbedding needs base > 1, got {base}")
        self.dim = dim
        self.base = float(base)
        self.per_component = per_component
        freq = self.base ** (-2.0 * torch.arange(dim // 2, dtype=torch.float64) / dim)  # (d/2,)
        if per_component:
            freq = freq.repeat_interleave(2)  # (d,) [w_0 (sin), w_0 (cos), w_1, w_1, ...]
        if trainable_frequencies:
            self.frequencies = nn.Parameter(freq.float())
        else:
            self.register_buffer("frequencies", freq.float())
        # official init: uniform [0, 1) -- it moves the embedding off the unit circle so that
        # different attributes occupy different regions of the shared space
        self.bias = nn.Parameter(torch.rand(dim)) if bias else None

    def extra_repr(self) -> str:
        return f"dim={self.dim}, base={self.base:g}, bias={self.bias is not None}, per_component={self.per_component}"

    def pair_frequencies(self) -> tuple[Tensor, Tensor]:
        """``(w_sin, w_cos)``, ``(d/2,)`` each: the frequency of every sin and every cos component."""
        f = self.frequencies
        return (f[0::2], f[1::2]) if self.per_component else (f, f)

    def shift(self, delta: Tensor) -> Tensor:
        """FMS: the bias-free sinusoid ``(..., d)`` of ``delta (...)``, interleaved ``[sin, cos]`` pairs."""
        dtype = delta.dtype if delta.is_floating_point() else self.frequencies.dtype
        w_sin, w_cos = (w.to(dtype) for w in self.pair_frequencies())
        x = delta.to(dtype)[..., None]  # (..., 1)
        return torch.stack([(x * w_sin).sin(), (x * w_cos).cos()], dim=-1).flatten(-2)  # (..., d)

    def forward(self, values: Tensor) -> Tensor:
        out = self.shift(values)  # (..., d)
        return out + self.bias.to(out.dtype) if self.bias is not None else out


def _pair(ctx: PositionContext, name: str, lq: int, lk: int) -> tuple[Tensor, Tensor] | None:
    """Query and key values of context ``name``: ``q_<name>``/``k_<name>`` or one shared ``<name>``.

    A shared tensor covers the keys ``(B, Lk)``; the queries are its last ``Lq`` entries (the
    KV-cache convention of the core), so self-attention and cached decoding pass the same thing.
    """
    ex = ctx.extras
    qn, kn = f"q_{name}", f"k_{name}"
    if qn in ex or kn in ex:
        if not (qn in ex and kn in ex):
            raise ValueError(f"MusicRelative: pass both {qn} and {kn}, or a single {name}")
        qv, kv = ex[qn], ex[kn]
    elif name in ex:
        kv = ex[name]
        if kv.dim() != 2 or kv.shape[-1] != lk:
            raise ValueError(f"MusicRelative: {name} must have shape (B, Lk={lk}), got {tuple(kv.shape)}")
        qv = kv[:, lk - lq :] if lq <= lk else None
        if qv is None:
            raise ValueError(f"MusicRelative: {name} covers {lk} keys but there are {lq} queries; pass q_{name}")
    else:
        return None
    if qv.dim() != 2 or qv.shape[-1] != lq:
        raise ValueError(f"MusicRelative: query {name} must have shape (B, Lq={lq}), got {tuple(qv.shape)}")
    if kv.dim() != 2 or kv.shape[-1] != lk:
        raise ValueError(f"MusicRelative: key {name} must have shape (B, Lk={lk}), got {tuple(kv.shape)}")
    return qv, kv


class MusicRelative(PositionTerm):
    """RIPO's pitch and onset relative terms (see the module docstring for the formulas).

    Args:
        head_dim: ``D``, per-head query size.
        num_heads: ``H``; the projections map ``FMS`` to ``H * D`` and are split per head, as in
            the official code.
        fme_dim: size of the FMS (``d_model`` in the paper); the fast form adds ``fme_dim + 2``
            columns per attribute.
        pitch, onset: which attributes the term covers.
        pitch_base, onset_base: FMS bases (the pitch and duration FME bases of the paper).
        trainable_frequencies: learn the FMS frequencies.
        onset_nonquant: give the onset term a non-quantifiable embedding too (context
            ``onset_nonquant``); off in the paper.
        per_component_frequencies: the FMS keep one frequency per sin / cos component (see
            :class:`FundamentalMusicEmbedding`); the fast form then adds ``2 fme_dim + 2`` columns.
        shared_fms: ``{"pitch": fme, "onset": fme}`` to read the FMS frequencies from modules owned
            elsewhere (the official RIPO ties them to the token FMEs in every layer); they are then
            not parameters of this term (no duplicate keys in a state dict).

    Context (``term.bind(...)`` or ``MultiheadAttention(position_context=...)``): ``pitch (B, L)``,
    ``onset (B, L)`` (cumulative onsets, in quarter notes), ``nonquant (B, L) bool`` (True for
    pad / rest / sustain: the pitch term uses the learned embedding for any pair touching one),
    optional ``onset_nonquant (B, L) bool``. ``q_``/``k_`` prefixed names give separate query and
    key values for cross or cached attention.
    """

    optional_context = tuple(
        p + n for n in ("pitch", "onset", "nonquant", "onset_nonquant") for p in ("", "q_", "k_")
    )

    def __init__(
        self,
        head_dim: int,
        num_heads: int,
        fme_dim: int | None = None,
        *,
        pitch: bool = True,
        onset: bool = True,
        pitch_base: float = PITCH_BASE,
        onset_base: float = DURATION_BASE,
        trainable_frequencies: bool = True,
        onset_nonquant: bool = False,
        per_component_frequencies: bool = False,
        shared_fms: dict[str, FundamentalMusicEmbedding] | None = None,
    ) -> None:
        super().__init__()
        if not (pitch or onset):
            raise ValueError("MusicRelative needs pitch=True or onset=True")
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.fme_dim = fme_dim if fme_dim is not None else head_dim * num_heads
        self.attributes = tuple(a for a, on in (("pitch", pitch), ("onset", onset)) if on)
        bases = {"pitch": pitch_base, "onset": onset_base}
        inner = head_dim * num_heads
        if shared_fms is not None:
            missing = [a for a in self.attributes if a not in shared_fms]
            if missing:
                raise ValueError(f"MusicRelative: shared_fms lacks {missing}")
            for a in self.attributes:
                f = shared_fms[a]
                if f.dim != self.fme_dim or f.per_component != per_component_frequencies:
                    raise ValueError(
                        f"MusicRelative: shared_fms[{a!r}] has dim {f.dim}, per_component {f.per_component}; "
                        f"expected {self.fme_dim}, {per_component_frequencies}"
                    )
            # a plain dict: the modules stay parameters of their owner only (deepcopy keeps the tie)
            self._shared_fms = {a: shared_fms[a] for a in self.attributes}
            self.fms = nn.ModuleDict()
        else:
            self._shared_fms = {}
            self.fms = nn.ModuleDict(
                {
                    a: FundamentalMusicEmbedding(
                        self.fme_dim, bases[a], trainable_frequencies=trainable_frequencies, bias=False,
                        per_component=per_component_frequencies,
                    )
                    for a in self.attributes
                }
            )
        self.per_component_frequencies = per_component_frequencies
        self.proj = nn.ModuleDict({a: nn.Linear(self.fme_dim, inner) for a in self.attributes})
        # learned relative value for any pair with a non-quantifiable token (official init U(-0.1, 0.1))
        self.nonquant = nn.ParameterDict(
            {
                a: nn.Parameter(torch.empty(inner).uniform_(-0.1, 0.1))
                for a in self.attributes
                if a == "pitch" or onset_nonquant
            }
        )

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, heads={self.num_heads}, fme_dim={self.fme_dim}, attributes={self.attributes}"

    @property
    def num_features(self) -> int:
        """Extra q/k columns of the fast form."""
        per_attr = (2 if self.per_component_frequencies else 1) * self.fme_dim + 2
        return len(self.attributes) * per_attr

    def shift_module(self, attr: str) -> FundamentalMusicEmbedding:
        """The FMS of ``attr``: this term's own, or the shared one."""
        return self._shared_fms[attr] if self._shared_fms else self.fms[attr]

    # ------------------------------------------------------------------ helpers
    def _check(self, q: Tensor) -> None:
        if q.shape[1] != self.num_heads or q.shape[-1] != self.head_dim:
            raise ValueError(
                f"MusicRelative(heads={self.num_heads}, head_dim={self.head_dim}) got q of shape {tuple(q.shape)}"
            )

    def _inputs(self, attr: str, ctx: PositionContext, lq: int, lk: int):
        vals = _pair(ctx, attr, lq, lk)
        if vals is None:
            raise ValueError(f"MusicRelative needs context {attr!r} (B, L); pass it with term.bind({attr}=...)")
        mask = _pair(ctx, "nonquant" if attr == "pitch" else "onset_nonquant", lq, lk)
        if mask is not None and attr not in self.nonquant:
            raise ValueError("MusicRelative got onset_nonquant but was built with onset_nonquant=False")
        if mask is not None and (mask[0].dtype != torch.bool or mask[1].dtype != torch.bool):
            raise ValueError("MusicRelative: nonquant masks must be bool tensors (True = pad / rest / sustain)")
        return vals, mask

    def _head_params(self, attr: str, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor | None]:
        h, d = self.num_heads, self.head_dim
        w = self.proj[attr].weight.to(dtype).view(h, d, self.fme_dim)  # (H, D, E)
        b = self.proj[attr].bias.to(dtype).view(h, d)  # (H, D)
        e = self.nonquant[attr].to(dtype).view(h, d) if attr in self.nonquant else None  # (H, D)
        return w, b, e

    # ------------------------------------------------------------------ exact, materialized
    def bias(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> Tensor:
        self._check(q)
        bsz, h, lq, d = q.shape
        lk = k.shape[-2]
        total = q.new_zeros(bsz, h, lq, lk)
        for attr in self.attributes:
            (qv, kv), mask = self._inputs(attr, ctx, lq, lk)
            # angles in at least float32: onsets of a long piece lose whole beats in half precision
            wide = torch.promote_types(q.dtype, torch.float32)
            delta = qv.to(wide)[:, :, None] - kv.to(wide)[:, None, :]  # (Bp, Lq, Lk)
            rel = self.proj[attr](self.shift_module(attr).shift(delta).to(self.proj[attr].weight.dtype))  # (Bp, Lq, Lk, H*D)
            rel = rel.to(q.dtype).unflatten(-1, (h, d))  # (Bp, Lq, Lk, H, D)
            if mask is not None:
                nq = mask[0][:, :, None] | mask[1][:, None, :]  # (Bp, Lq, Lk)
                e = self.nonquant[attr].to(q.dtype).view(h, d)  # (H, D)
                rel = torch.where(nq[..., None, None], e, rel)  # (Bp, Lq, Lk, H, D)
            rel = rel.expand(bsz, lq, lk, h, d)  # (B, Lq, Lk, H, D)
            total = total + torch.einsum("bhqd,bqkhd->bhqk", q, rel)  # (B, H, Lq, Lk)
        return total * scale

    # ------------------------------------------------------------------ exact, O(L) memory
    def qk_features(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> tuple[Tensor, Tensor]:
        """``qf (B, H, Lq, F)``, ``kf (B, H, Lk, F)`` with ``scale * qf @ kf^T == bias`` exactly."""
        self._check(q)
        bsz, h, lq, _ = q.shape
        lk = k.shape[-2]
        q_cols, k_cols = [], []
        for attr in self.attributes:
            (qv, kv), mask = self._inputs(attr, ctx, lq, lk)
            w, b, e = self._head_params(attr, q.dtype)
            # angles in at least float32 (see bias); the features are cast back to q's dtype
            wide = torch.promote_types(q.dtype, torch.float32)
            w_sin, w_cos = (f.to(wide) for f in self.shift_module(attr).pair_frequencies())  # (E/2,) each
            u = torch.einsum("bhqd,hde->bhqe", q, w)  # (B, H, Lq, E)
            u_sin, u_cos = u[..., 0::2], u[..., 1::2]  # (B, H, Lq, E/2) coefficients of sin / cos(w delta)
            qw, kw = qv.to(wide)[:, None, :, None], kv.to(wide)[:, None, :, None]  # (Bp, 1, Lq | Lk, 1)
            a = qw * w_sin  # (Bp, 1, Lq, E/2)
            sin_a, cos_a = a.sin().to(q.dtype), a.cos().to(q.dtype)
            bk = kw * w_sin  # (Bp, 1, Lk, E/2)
            if not self.per_component_frequencies:
                # one frequency per pair: sin and cos of the same angle share the key columns
                qf = torch.cat([u_sin * sin_a + u_cos * cos_a, u_cos * sin_a - u_sin * cos_a], -1)  # (B, H, Lq, E)
                kf = torch.cat([bk.cos(), bk.sin()], -1).to(q.dtype)  # (Bp, 1, Lk, E)
            else:
                # u_s sin(w_s (p - p')) + u_c cos(w_c (p - p')): each component its own cos / sin key columns
                c = qw * w_cos  # (Bp, 1, Lq, E/2)
                sin_c, cos_c = c.sin().to(q.dtype), c.cos().to(q.dtype)
                dk = kw * w_cos  # (Bp, 1, Lk, E/2)
                qf = torch.cat([u_sin * sin_a, -u_sin * cos_a, u_cos * cos_c, u_cos * sin_c], -1)  # (B, H, Lq, 2E)
                kf = torch.cat([bk.cos(), bk.sin(), dk.cos(), dk.sin()], -1).to(q.dtype)  # (Bp, 1, Lk, 2E)
            q_bias = torch.einsum("bhqd,hd->bhq", q, b)[..., None]  # (B, H, Lq, 1)
            ones_k = torch.ones_like(kf[..., :1])  # (Bp, 1, Lk, 1)
            if mask is None:
                # the trailing zero column keeps the layout (and num_features) the same with and without a mask
                q_cols += [qf, q_bias, torch.zeros_like(q_bias)]
                k_cols += [kf.expand(bsz, h, lk, -1), ones_k.expand(bsz, h, lk, 1), ones_k.expand(bsz, h, lk, 1)]
            else:
                mq = (~mask[0]).to(q.dtype)[:, None, :, None]  # (Bp, 1, Lq, 1) 1 = quantifiable
                mk = (~mask[1]).to(q.dtype)[:, None, :, None]  # (Bp, 1, Lk, 1)
                q_nq = torch.einsum("bhqd,hd->bhq", q, e)[..., None]  # (B, H, Lq, 1)
                # m_i m_j (S_ij - q_i.e) + q_i.e: the masked columns vanish when either token is
                # non-quantifiable, the last pair adds q_i.e to every key
                q_cols += [qf * mq, (q_bias - q_nq) * mq, q_nq]
                k_cols += [
                    (kf * mk).expand(bsz, h, lk, -1),
                    mk.expand(bsz, h, lk, 1),
                    ones_k.expand(bsz, h, lk, 1),
                ]
        return torch.cat(q_cols, -1), torch.cat(k_cols, -1)

