"""The kernel registry: terms find their fused op by name, and the core knows no op itself."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from zoo.core_attention import attention, kernels, positions
from zoo.core_attention.attention import supported_backends
from zoo.core_attention.kernels import KernelCall, get_kernel, register_kernel
from zoo.core_attention.positions.base import PositionTerm

TERM_CLASSES = [
    getattr(positions, name)
    for name in positions.__all__
    if isinstance(getattr(positions, name), type) and issubclass(getattr(positions, name), PositionTerm)
]


@pytest.mark.parametrize("cls", [c for c in TERM_CLASSES if c.kernel is not None], ids=lambda c: c.__name__)
def test_every_kernel_a_term_names_is_registered(cls):
    kernel = get_kernel(cls.kernel)
    assert kernel.name == cls.kernel
    assert callable(kernel.unsupported) and callable(kernel.run)


def test_unknown_and_duplicate_names_fail_loudly(monkeypatch):
    monkeypatch.setattr(kernels, "_KERNELS", dict(kernels._KERNELS))
    with pytest.raises(ValueError, match=r"no fused kernel named 'nope' is registered; registered: \['relative_attention'"):
        get_kernel("nope")
    with pytest.raises(ValueError, match="already registered"):
        register_kernel("relative_attention", unsupported=lambda call: None, run=lambda call: call.q)


def test_importing_the_core_does_not_import_triton():
    code = "import sys, zoo.core_attention; print('triton' in sys.modules)"
    root = Path(__file__).resolve().parents[3]
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert run.stdout.strip() == "False"


class _ToyBias(positions.ALiBi):
    """ALiBi with a made-up kernel: the core must reach it through the registry alone."""

    kernel = "toy_alibi"


def test_triton_backend_dispatches_through_the_registry(monkeypatch):
    monkeypatch.setattr(kernels, "_KERNELS", dict(kernels._KERNELS))
    calls: list[KernelCall] = []

    def unsupported(call: KernelCall) -> str | None:
        return "toy kernel wants causal=True" if not call.causal else None

    def run(call: KernelCall) -> torch.Tensor:
        calls.append(call)
        return attention(call.q, call.k, call.v, position=call.term, causal=call.causal, backend="reference")

    register_kernel("toy_alibi", unsupported=unsupported, run=run)
    term = _ToyBias(4)
    assert supported_backends(term) == ("reference", "sdpa", "flex", "triton")
    q = torch.randn(2, 4, 6, 8)
    kv = torch.randn(2, 2, 6, 8)  # grouped KV heads reach the op unexpanded
    out = attention(q, kv, kv, position=term, causal=True, backend="triton")
    torch.testing.assert_close(out, attention(q, kv, kv, position=term, causal=True, backend="reference"))
    (call,) = calls
    assert call.term is term and call.causal and call.scale == 8**-0.5 and call.context.default_positions
    assert call.k.shape[1] == 2 and call.expanded_kv()[0].shape == (2, 4, 6, 8)
    with pytest.raises(ValueError, match="backend='triton' cannot run this call: toy kernel wants causal=True"):
        attention(q, kv, kv, position=term, backend="triton")
