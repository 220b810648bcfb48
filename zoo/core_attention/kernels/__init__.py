"""Fused Triton kernels of the attention core.

* :mod:`.relative_attention` -- Shaw / Music Transformer relative attention
  (``q_i . k_j + q_i . E[clip(j - i)]``), forward and backward in O(L) memory.

Each module imports Triton itself, so ``import zoo.core_attention.kernels`` stays cheap and works where
Triton is missing; the attention core imports a kernel module only when it dispatches to it.
"""
