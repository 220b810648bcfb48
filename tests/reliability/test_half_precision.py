"""Half precision: every backend is at least as accurate as PyTorch's own low-precision attention.

FlashAttention's criterion (``tests/test_flash_attn.py``): the error of a backend against a float64
computation is at most twice the error of the same computation done by PyTorch in the low
precision, on the same inputs.

* Inputs: fp16 / bf16 tensors and a term cast to that dtype (a model ``.to(dtype)``); the logits
  are scaled up by multiplying q by 1, 10 or 100 (and 1e4 in fp16, where logits formed in fp16
  overflow: no backend may give NaN or inf there).
* Exact: ``backend="reference"`` in float64 on the same values (every fp16 / bf16 number is a
  float64 number), with a float64 copy of the term.
* PyTorch in the low precision (the baseline, :func:`torch_low_precision`): FlashAttention's
  ``attention_ref(upcast=False)`` -- the materialized computation with every op in the low dtype:
  ``softmax((q * scale) @ k^T + bias) @ v``, where the term's bias (and RoPE's rotated q, k) is the
  exact one rounded to the low dtype once. q is scaled before the product, as ``attention_ref``
  and SDPA's math backend do, which keeps fp16 logits finite at q x 1e4.
* The reference is also held to the yardstick's own standard: within 2x of the error of the exact
  output rounded to the low dtype (it rounds once, at the end).
* Error: the largest absolute difference of the ``(B, H, L, D)`` outputs. A slack of ``2^-14`` (a
  sixteenth of an fp16 ulp at 1) covers cases where the baseline's error is itself that small.

Backends on CPU: ``reference`` (float32 logits, softmax and probs @ v for half inputs, rounded once),
``sdpa``, ``flex`` (no grad: no CPU backward) and ``triton`` for fp16 under the interpreter
(RelativeEmbedding). bf16 Triton needs a GPU (the interpreter computes through NumPy, which has no
bfloat16): :func:`test_triton_bf16_on_gpu` is marked ``gpu`` and skips without CUDA.
"""

from __future__ import annotations

import copy

import pytest
import torch

from zoo.core_attention import attention, positions
from zoo.core_attention.positions.base import BoundPosition

B, H, L, D = 1, 4, 64, 32  # L = 64 fills RelativeBias2D's 8x8 window; D = 32 is a Triton head dim
SLACK = 2.0**-14
DTYPE_IDS = {torch.float16: "fp16", torch.bfloat16: "bf16"}
TERMS = ("none", "rotary", "alibi", "t5", "relative", "relative2d")


def make_term(name: str) -> positions.PositionTerm | None:
    """A float32 term with parameters large enough to matter at scale 1."""
    if name == "none":
        return None
    if name == "rotary":
        return positions.Rotary(D)
    if name == "alibi":
        return positions.ALiBi(H)
    if name == "t5":
        term = positions.T5Bias(H, num_buckets=16, max_distance=64)
        torch.nn.init.normal_(term.relative_attention_bias.weight, std=1.0)
        return term
    if name == "relative":
        return positions.RelativeEmbedding(D, 16)  # |q . E| ~ |q|: any larger and fp16 q x 1e4 overflows it
    if name == "relative2d":
        term = positions.RelativeBias2D(8, H)
        torch.nn.init.normal_(term.relative_position_bias_table, std=1.0)
        return term
    raise KeyError(name)


def make_inputs(dtype: torch.dtype, q_mult: float, term_name: str, seed: int = 0):
    """Low-precision q, k, v and term, and their exact float64 twins."""
    g = torch.Generator().manual_seed(seed)
    q = (torch.randn(B, H, L, D, generator=g) * q_mult).to(dtype)  # (B, H, L, D)
    k = torch.randn(B, H, L, D, generator=g).to(dtype)
    v = torch.randn(B, H, L, D, generator=g).to(dtype)
    term = make_term(term_name)
    term = None if term is None else term.to(dtype)  # a model cast to the low precision
    term64 = None if term is None else copy.deepcopy(term).double()  # the same values, exactly
    return (q, k, v, term), (q.double(), k.double(), v.double(), term64)


def torch_low_precision(q64, k64, v64, term64, causal: bool, dtype: torch.dtype) -> torch.Tensor:
    """FlashAttention's ``attention_ref(upcast=False)``: every op of the attention in ``dtype``.

    The position term does not run in the low precision here: its rotation and bias are computed
    exactly (float64) and rounded to ``dtype`` once, the best a low-precision input can be. The
    baseline is then independent of the terms' code under test, and only stricter for it.
    """
    lq, lk = q64.shape[2], k64.shape[2]
    scale = q64.shape[-1] ** -0.5
    bias = None
    if term64 is not None:
        ctx = BoundPosition(term64, {}).make_context(lq, lk, causal, q64.device)
        q64, k64 = term64.transform_qk(q64, k64, ctx)
        bias = term64.bias(q64, k64, ctx, scale)
    q, k, v = q64.to(dtype), k64.to(dtype), v64.to(dtype)
    scores = (q * scale) @ k.transpose(-1, -2)  # (B, H, Lq, Lk) in dtype
    if bias is not None:
        scores = scores + bias.to(dtype)
    if causal:
        keep = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(lk - lq)  # (Lq, Lk)
        scores = scores.masked_fill(~keep, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v  # (B, H, Lq, D) in dtype


def errors(dtype: torch.dtype, q_mult: float, term_name: str, causal: bool, backends) -> dict[str, float]:
    """Max absolute error vs float64 of PyTorch's low-precision computation (``"torch"``), of the
    exact output rounded to ``dtype`` (``"rounded"``, the least error any ``dtype`` output can have)
    and of each backend; NaN / inf outputs give ``inf``."""
    (q, k, v, term), (q64, k64, v64, term64) = make_inputs(dtype, q_mult, term_name)
    with torch.no_grad():
        exact = attention(q64, k64, v64, position=term64, causal=causal, backend="reference")
        outs = {"torch": torch_low_precision(q64, k64, v64, term64, causal, dtype), "rounded": exact.to(dtype)}
        for backend in backends:
            outs[backend] = attention(q, k, v, position=term, causal=causal, backend=backend)

    def err(out: torch.Tensor) -> float:
        assert out.dtype == dtype and out.shape == exact.shape
        return float("inf") if not torch.isfinite(out).all() else (out.double() - exact).abs().max().item()

    return {name: err(out) for name, out in outs.items()}


def cpu_backends(dtype: torch.dtype, term_name: str) -> tuple[str, ...]:
    triton = dtype == torch.float16 and term_name == "relative"  # the interpreter has no bfloat16
    return ("reference", "sdpa", "flex") + (("triton",) if triton else ())


CASES = [
    pytest.param(dtype, mult, term, causal, id=f"{DTYPE_IDS[dtype]}-q{mult:g}-{term}-{'causal' if causal else 'bidir'}")
    for dtype in (torch.float16, torch.bfloat16)
    for mult in ((1, 10, 100, 1e4) if dtype == torch.float16 else (1, 10, 100))
    for term in TERMS
    for causal in (False, True)
]


@pytest.mark.parametrize("dtype,q_mult,term_name,causal", CASES)
def test_every_backend_meets_the_flash_attention_criterion(dtype, q_mult, term_name, causal):
    errs = errors(dtype, q_mult, term_name, causal, cpu_backends(dtype, term_name))
    base, rounded = errs.pop("torch"), errs.pop("rounded")
    assert base < float("inf"), "the baseline overflowed: the case does not test the criterion"
    for backend, e in errs.items():
        assert e < float("inf"), f"{backend} gave NaN / inf"
        assert e <= 2 * base + SLACK, f"{backend}: error {e:.3e} vs PyTorch low precision {base:.3e}"
    if q_mult <= 100:
        # The yardstick rounds once: within 2x of the exact output rounded to the low dtype. Not at
        # q x 1e4, where float32 logits of ~1e4 are themselves off by ~1e-3 (RoPE's rotated q more).
        assert errs["reference"] <= 2 * rounded + SLACK, f"reference {errs['reference']:.3e} vs rounding {rounded:.3e}"


def test_fp16_reference_is_finite_where_fp16_logits_overflow():
    """q x 1e4: ``q @ k^T`` formed in fp16 (as the reference did before it computed in float32)
    overflows to inf and the softmax gives NaN; the float32 reference is finite and rounds once."""
    (q, k, v, _), (q64, k64, v64, _) = make_inputs(torch.float16, 1e4, "none")
    assert not torch.isfinite(q @ k.transpose(-1, -2)).all()  # the overflow the reference must avoid
    out = attention(q, k, v, backend="reference")
    exact = attention(q64, k64, v64, backend="reference")
    assert torch.isfinite(out).all()
    rounded = (exact.half().double() - exact).abs().max().item()
    assert (out.double() - exact).abs().max().item() <= 2 * rounded + SLACK


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("q_mult", [1, 10, 100])
@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_triton_bf16_on_gpu(q_mult, causal):
    """The fused kernel in bf16 on CUDA, and every backend there, against the same criterion."""
    (q, k, v, term), (q64, k64, v64, term64) = make_inputs(torch.bfloat16, q_mult, "relative")
    q, k, v, q64, k64, v64 = (t.cuda() for t in (q, k, v, q64, k64, v64))
    term, term64 = term.cuda(), term64.cuda()
    with torch.no_grad():
        exact = attention(q64, k64, v64, position=term64, causal=causal, backend="reference")
        base = (torch_low_precision(q64, k64, v64, term64, causal, torch.bfloat16).double() - exact).abs().max().item()
        for backend in ("triton", "reference", "sdpa", "flex"):
            out = attention(q, k, v, position=term, causal=causal, backend=backend)
            assert torch.isfinite(out).all(), backend
            e = (out.double() - exact).abs().max().item()
            assert e <= 2 * base + SLACK, f"{backend}: error {e:.3e} vs PyTorch low precision {base:.3e}"
