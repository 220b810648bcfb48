"""Fused kernels of the attention core, found through a registry keyed by the position term.

A term names its kernel in the class attribute ``PositionTerm.kernel``; ``attention(...,
backend="triton")`` (and ``auto`` on CUDA) looks that name up with :func:`get_kernel` and hands the
call to the op. The core knows no op by name: each op owns everything specific to its term (which
attributes it reads, which masks and positions it can take) behind two functions:

* ``unsupported(call) -> str | None`` -- why the op cannot run this :class:`KernelCall`, or None.
  ``auto`` asks it on every CUDA call, so it must be cheap: shape, dtype and device checks only.
* ``run(call) -> Tensor`` -- the ``(B, H, Lq, Dv)`` output, called only when ``unsupported`` said None.

Each op is a folder ``kernels/<op>/``: ``triton.py`` (the fused kernel), ``reference.py`` beside it
(the readable, exact PyTorch form the tests compare it with, forward and backward) and an
``__init__.py`` that registers the op. Registering imports neither Triton nor the kernel module, so
``import zoo.core_attention`` works where Triton is missing; an op imports its ``triton.py`` when
asked whether it can run a call.

Ops:

* ``relative_attention`` -- Shaw / Music Transformer relative attention
  (``q_i . k_j + q_i . E[clip(j - i)]``), forward and backward in O(L) memory
  (:class:`~zoo.core_attention.positions.RelativeEmbedding`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from torch import Tensor

if TYPE_CHECKING:
    from ..positions.base import PositionContext, PositionTerm

__all__ = ["Kernel", "KernelCall", "get_kernel", "has_kernel", "register_kernel"]


@dataclass(frozen=True)
class KernelCall:
    """One :func:`zoo.core_attention.attention` call as a fused kernel sees it.

    Grouped KV heads arrive unexpanded so that ``unsupported`` can answer without copying them;
    :meth:`expanded_kv` gives the ``(B, H, Lk, D | Dv)`` tensors when the op runs. A call reaches an
    op only after the core's input checks: q, k, v share one floating dtype and device, none is empty.
    """

    q: Tensor  # (B, H, Lq, D)
    k: Tensor  # (B, Hkv, Lk, D), H % Hkv == 0
    v: Tensor  # (B, Hkv, Lk, Dv); Dv may differ from D (an op that needs Dv == D says so)
    term: PositionTerm  # the call's one position term; its ``kernel`` named this op
    context: PositionContext  # the term's context, built once by attention()
    mask: Tensor | None  # bool, broadcastable to (B, H, Lq, Lk), True = attend
    causal: bool
    scale: float
    dropout_p: float

    def expanded_kv(self) -> tuple[Tensor, Tensor]:
        """``k, v`` with grouped heads repeated to q's ``H``: ``(B, H, Lk, D)`` and ``(B, H, Lk, Dv)``."""
        h, hkv = self.q.shape[1], self.k.shape[1]
        if h == hkv:
            return self.k, self.v
        return self.k.repeat_interleave(h // hkv, dim=1), self.v.repeat_interleave(h // hkv, dim=1)


@dataclass(frozen=True)
class Kernel:
    """A registered op: the name terms use, why it cannot run a call, and how it runs one."""

    name: str
    unsupported: Callable[[KernelCall], str | None]
    run: Callable[[KernelCall], Tensor]


_KERNELS: dict[str, Kernel] = {}


def register_kernel(
    name: str,
    *,
    unsupported: Callable[[KernelCall], str | None],
    run: Callable[[KernelCall], Tensor],
) -> Kernel:
    """Register an op under ``name`` (the value of ``PositionTerm.kernel`` for the terms it covers).

    A second op under a taken name is an error rather than a silent replacement: two kernels
    claiming one term would make the backend depend on import order.
    """
    if name in _KERNELS:
        raise ValueError(f"a kernel named {name!r} is already registered")
    kernel = Kernel(name, unsupported, run)
    _KERNELS[name] = kernel
    return kernel


def has_kernel(name: str) -> bool:
    """Whether a fused kernel named ``name`` is registered."""
    return name in _KERNELS


def get_kernel(name: str) -> Kernel:
    """The op registered under ``name``; a ``ValueError`` listing the registered names otherwise."""
    try:
        return _KERNELS[name]
    except KeyError:
        raise ValueError(f"no fused kernel named {name!r} is registered; registered: {sorted(_KERNELS)}") from None


# The built-in ops register themselves when imported; none of them imports Triton until it is asked
# about a call, so importing them here keeps the registry complete and the import cheap.
from . import relative_attention  # noqa: E402, F401
