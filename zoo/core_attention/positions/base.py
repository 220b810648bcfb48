"""The contract every relative-position term follows.

A term is an ``nn.Module`` that owns its parameters and knows how to contribute to attention
logits in up to four forms. The *exact* forms are mandatory; the *fast* forms are optional and
each backend uses the ones it can:

==================  ==========================================================  ===============
form                meaning                                                      used by
==================  ==========================================================  ===============
``transform_qk``    rewrite q and k before the dot product (RoPE)                every backend
``bias``            materialized additive logits, already scaled,                reference, sdpa
                    broadcastable to ``(B, H, Lq, Lk)``
``qk_features``     extra columns ``qf (B, H, Lq, F)``, ``kf (B, H, Lk, F)``     sdpa
                    with ``scale * qf @ kf.T == bias`` up to a per-row constant
                    (softmax is shift-invariant per row)
``score_mod``       a FlexAttention ``score_mod`` that adds the same bias        flex
==================  ==========================================================  ===============

Logits are ``scale * (q @ k.T) + sum(term biases)``: a term whose paper adds its term *before*
the ``1/sqrt(d)`` scaling (Shaw, Music Transformer, RIPO) multiplies by ``scale`` itself.

Context: every term sees query and key positions (``q_pos (Bp, Lq)``, ``k_pos (Bp, Lk)``, ``Bp``
1 or B) and whatever named values it declares in ``required_context`` / ``optional_context``.
Positions default to ``arange`` with the queries being the *last* ``Lq`` of the ``Lk`` keys (the
KV-cache convention), so cached decoding and left padding only need explicit positions.
A caller passes context by binding: ``attention(q, k, v, position=term.bind(q_pos=..., boxes=...))``.
:func:`~zoo.core_attention.attention` builds each term's :class:`PositionContext` once per call.
Sizes (a group size, a feature-map shape) are bound as plain ints / tuples: a term reads them
without a device sync, which a tensor would cost on every call (tensors are still accepted).

Fused kernel: a term that a kernel covers names it in ``kernel``; ``backend="triton"`` looks the
name up in the registry of :mod:`zoo.core_attention.kernels`, whose op reads the term's attributes.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import Tensor, nn

__all__ = [
    "ContextValue",
    "PositionContext",
    "PositionTerm",
    "BoundPosition",
    "default_positions",
    "as_bound_terms",
]


#: a bound context value: a tensor, or a plain int / tuple of ints for sizes (no device sync to read)
ContextValue = Tensor | int | tuple[int, ...]


@dataclass
class PositionContext:
    """Per-call facts a term may need. Built once per call by :func:`zoo.core_attention.attention`."""

    q_pos: Tensor  # (Bp, Lq) integer or float positions of the queries
    k_pos: Tensor  # (Bp, Lk) positions of the keys
    causal: bool = False
    extras: dict[str, ContextValue] = field(default_factory=dict)
    # True when q_pos / k_pos are the defaults (contiguous ranges); lets terms use
    # shape tricks such as Huang et al.'s skewing that need contiguous positions.
    default_positions: bool = True

    def get(self, name: str) -> ContextValue:
        return self.extras[name]


def default_positions(lq: int, lk: int, device: torch.device) -> tuple[Tensor, Tensor]:
    """``q_pos (1, Lq)``, ``k_pos (1, Lk)``: the queries are the last ``Lq`` positions of the keys.

    The offset ``Lk - Lq`` is the same one causal masking uses; it is negative when there are more
    queries than keys, which only differences of positions ever see.
    """
    k_pos = torch.arange(lk, device=device)[None]  # (1, Lk)
    q_pos = torch.arange(lk - lq, lk, device=device)[None]  # (1, Lq)
    return q_pos, k_pos


class PositionTerm(nn.Module, abc.ABC):
    """Base class of position terms. Subclasses implement ``bias`` and, where they can, fast forms."""

    #: names of extra context values this term cannot work without
    required_context: ClassVar[tuple[str, ...]] = ()
    #: names of extra context values this term accepts but can default
    optional_context: ClassVar[tuple[str, ...]] = ()
    #: name under which a fused kernel covering this term is registered in
    #: ``zoo.core_attention.kernels`` (``get_kernel``); ``backend="triton"`` needs one
    kernel: ClassVar[str | None] = None

    def bind(self, **context: ContextValue) -> BoundPosition:
        """Attach per-call context (``q_pos``, ``k_pos`` and the term's own names).

        Positions are tensors; sizes may be plain ints / tuples, which the term reads for free.
        """
        allowed = {"q_pos", "k_pos", *self.required_context, *self.optional_context}
        unknown = sorted(set(context) - allowed)
        if unknown:
            raise ValueError(
                f"{type(self).__name__}.bind got unknown context {unknown}; it accepts {sorted(allowed)}"
            )
        return BoundPosition(self, dict(context))

    # ---------------------------------------------------------------- exact forms
    def transform_qk(self, q: Tensor, k: Tensor, ctx: PositionContext) -> tuple[Tensor, Tensor]:
        """Rewrite ``q (B, H, Lq, D)`` and ``k (B, H, Lk, D)``. Default: unchanged."""
        return q, k

    @abc.abstractmethod
    def bias(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> Tensor | None:
        """Exact additive logits, broadcastable to ``(B, H, Lq, Lk)``; ``None`` if the term adds none."""

    # ---------------------------------------------------------------- fast forms
    def qk_features(
        self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float
    ) -> tuple[Tensor, Tensor] | None:
        """Extra q/k columns reproducing ``bias`` inside a plain dot product, or ``None``."""
        return None

    def has_qk_features(self, ctx: PositionContext, dtype: torch.dtype) -> bool:
        """Whether ``qk_features`` gives columns for this call, answered without computing them
        (``auto`` asks this on every call). Default: whenever the subclass implements it."""
        return type(self).qk_features is not PositionTerm.qk_features

    def score_mod(self, q: Tensor, k: Tensor, ctx: PositionContext, scale: float) -> Callable | None:
        """A FlexAttention ``score_mod(score, b, h, q_idx, kv_idx)`` adding ``bias``, or ``None``."""
        return None

    @property
    def adds_bias(self) -> bool:
        """False for pure q/k transforms (RoPE) whose ``bias`` is always ``None``."""
        return True


@dataclass
class BoundPosition:
    """A term with its per-call context."""

    term: PositionTerm
    context: dict[str, ContextValue]

    def make_context(self, lq: int, lk: int, causal: bool, device: torch.device) -> PositionContext:
        missing = [n for n in self.term.required_context if n not in self.context]
        if missing:
            raise ValueError(
                f"{type(self.term).__name__} needs context {missing}; pass it with "
                f"term.bind({', '.join(f'{m}=...' for m in missing)})"
            )
        dq, dk = default_positions(lq, lk, device)
        q_pos = self.context.get("q_pos", dq)
        k_pos = self.context.get("k_pos", dk)
        for name, pos in (("q_pos", q_pos), ("k_pos", k_pos)):
            if not isinstance(pos, Tensor):
                raise ValueError(f"{name} must be a tensor of positions, got {type(pos).__name__}")
        q_pos = q_pos[None] if q_pos.dim() == 1 else q_pos
        k_pos = k_pos[None] if k_pos.dim() == 1 else k_pos
        if q_pos.dim() != 2 or q_pos.shape[-1] != lq:
            raise ValueError(f"q_pos must have shape (B, Lq={lq}) or (Lq,), got {tuple(q_pos.shape)}")
        if k_pos.dim() != 2 or k_pos.shape[-1] != lk:
            raise ValueError(f"k_pos must have shape (B, Lk={lk}) or (Lk,), got {tuple(k_pos.shape)}")
        extras = {n: t for n, t in self.context.items() if n not in ("q_pos", "k_pos")}
        is_default = "q_pos" not in self.context and "k_pos" not in self.context
        return PositionContext(q_pos, k_pos, causal, extras, is_default)


def as_bound_terms(
    position: PositionTerm | BoundPosition | Sequence[PositionTerm | BoundPosition] | None,
) -> list[BoundPosition]:
    """Normalize the ``position=`` argument of :func:`attention` to a list of bound terms."""
    if position is None:
        return []
    items = [position] if isinstance(position, (PositionTerm, BoundPosition)) else list(position)
    out: list[BoundPosition] = []
    for item in items:
        if isinstance(item, BoundPosition):
            out.append(item)
        elif isinstance(item, PositionTerm):
            out.append(BoundPosition(item, {}))
        else:
            raise ValueError(
                f"position must be a PositionTerm, a bound term (term.bind(...)) or a sequence of them, "
                f"got {type(item).__name__}"
            )
    return out


def bind_all(terms: Sequence[PositionTerm], context: Mapping[str, ContextValue] | None) -> list[BoundPosition]:
    """Bind several terms to one shared context dict, each taking only the names it accepts."""
    context = dict(context or {})
    bound = []
    for t in terms:
        allowed = {"q_pos", "k_pos", *t.required_context, *t.optional_context}
        bound.append(t.bind(**{n: v for n, v in context.items() if n in allowed}))
    return bound
