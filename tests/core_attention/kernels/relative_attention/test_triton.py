"""The fused relative-attention kernel (``triton.py``) against its readable twin (``reference.py``).

Forward and every gradient are compared with the reference evaluated in float64. On CPU the kernels
run in Triton's interpreter (``TRITON_INTERPRET=1``, set below before Triton is imported), in float32, with the interpreter's 16-row tiles so small lengths span several tiles: fully
clipped tiles, band tiles and ragged last tiles all occur. ``gpu`` tests check half precision with
FlashAttention's criterion and ``torch.compile`` with Inductor.
"""

import os
import sys

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first import of triton's jit
# on GPUs, one default config per kernel keeps the suite quick; test_autotuned_configs_on_gpu tunes
os.environ.setdefault("ZOO_RELATIVE_ATTENTION_AUTOTUNE", "0")

import pytest  # noqa: E402

from zoo.core_attention.kernels.relative_attention import triton as rk  # noqa: E402
from zoo.core_attention.kernels.relative_attention.reference import (  # noqa: E402
    relative_attention_reference as reference,
)

if not torch.cuda.is_available() and not rk.INTERPRET:
    pytest.skip("the kernel module was imported without TRITON_INTERPRET=1 and there is no GPU",
                allow_module_level=True)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def make_inputs(b, h, lq, lk, d, max_distance, causal, per_head, pad, dtype=torch.float32, device=DEVICE):
    rows = max_distance + 1 if causal else 2 * max_distance + 1
    q = torch.randn(b, h, lq, d, dtype=dtype, device=device)
    k = torch.randn(b, h, lk, d, dtype=dtype, device=device)
    v = torch.randn(b, h, lk, d, dtype=dtype, device=device)
    weight = torch.randn(*((h,) if per_head else ()), rows, d, dtype=dtype, device=device)
    kpm = None
    if pad:
        kpm = torch.rand(b, lk, device=device) > 0.3
        kpm[:, 0] = True  # every query keeps at least one visible key (the empty-row case has its own test)
        kpm[-1, lk // 2 :] = False  # a right-padded sequence
    return q, k, v, weight, kpm


def grads(fn, q, k, v, weight, dout):
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v, weight)]
    out = fn(*leaves)
    return (out, *torch.autograd.grad(out, leaves, dout))


# (B, H, Lq, Lk, D, K, causal, per_head, pad); L = 37 is not a multiple of the 16-row interpreter tile
CASES = [
    (1, 2, 37, 37, 16, 5, False, False, False),  # K < L: low-clipped, band and high-clipped tiles
    (1, 2, 37, 37, 16, 5, True, False, False),
    (1, 2, 37, 37, 16, 50, False, True, True),  # K >= L: every tile is a band tile
    (1, 2, 37, 37, 16, 50, True, True, True),
    (2, 1, 9, 40, 32, 3, True, False, True),  # Lq < Lk: decoding with a KV cache
    (2, 1, 9, 40, 32, 7, False, True, False),
    (1, 1, 1, 33, 64, 4, True, True, False),  # one new token
    (1, 2, 32, 32, 16, 1, False, False, True),  # L a multiple of the tile, K = 1
    (1, 1, 20, 20, 128, 8, True, True, False),
    # more (batch, head) pairs than dE copies (_de_slots), so programs of different pairs share one
    (2, 2, 37, 37, 16, 5, False, False, True),
    (3, 1, 50, 50, 16, 6, True, True, False),
]


def case_id(c):
    b, h, lq, lk, d, kmax, causal, per_head, pad = c
    length = f"L{lq}" if lq == lk else f"Lq{lq}-Lk{lk}"
    return "-".join([f"B{b}", f"H{h}", length, f"D{d}", f"K{kmax}", "causal" if causal else "bidir",
                     "perhead" if per_head else "shared"] + (["pad"] if pad else []))


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_forward_and_gradients_match_reference(case):
    b, h, lq, lk, d, kmax, causal, per_head, pad = case
    if rk.INTERPRET and case[:2] in ((2, 2), (3, 1)):
        assert rk._de_slots(b, h, lq, torch.device(DEVICE), per_head, False) < b * h
    q, k, v, weight, kpm = make_inputs(b, h, lq, lk, d, kmax, causal, per_head, pad)
    dout = torch.randn(b, h, lq, d, device=DEVICE)
    got = grads(lambda *t: rk.relative_attention(*t, kmax, causal=causal, key_padding_mask=kpm), q, k, v, weight, dout)
    want = grads(lambda *t: reference(*t, kmax, causal=causal, key_padding_mask=kpm),
                 *(t.double() for t in (q, k, v, weight)), dout.double())
    for name, g, w in zip(["out", "dq", "dk", "dv", "dweight"], got, want):
        assert g.shape == w.shape, name
        torch.testing.assert_close(g.double(), w, atol=2e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.skipif(not rk.INTERPRET, reason="on GPUs the autotuner picks the variant")
@pytest.mark.parametrize("case", [CASES[0], CASES[4]], ids=[case_id(CASES[0]), case_id(CASES[4])])
def test_recompute_variant_matches_reference(case, monkeypatch):
    """CARRY_QE=False (recompute q.E of the previous chunk instead of carrying it), an autotune choice."""
    monkeypatch.setattr(rk, "INTERPRETER_CARRY_QE", False)
    test_forward_and_gradients_match_reference(case)


def test_explicit_scale_and_strided_inputs():
    """A non-default scale, and q/k/v as the (B, L, H, D) -> (B, H, L, D) views attention layers pass."""
    b, h, length, d, kmax = 1, 2, 21, 16, 6
    qkv = torch.randn(b, length, 3, h, d, device=DEVICE)
    q, k, v = (qkv[:, :, i].transpose(1, 2) for i in range(3))  # (B, H, L, D), non-contiguous
    weight = torch.randn(2 * kmax + 1, d, device=DEVICE)
    dout = torch.randn(b, h, length, d, device=DEVICE)
    got = grads(lambda *t: rk.relative_attention(*t, kmax, causal=False, scale=0.3), q, k, v, weight, dout)
    want = grads(lambda *t: reference(*t, kmax, causal=False, scale=0.3),
                 *(t.double() for t in (q, k, v, weight)), dout.double())
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double(), w, atol=2e-5, rtol=1e-4)


def test_bidirectional_table_under_causal_mask_equals_causal_table():
    """A (2K+1)-row table with causal=True uses only its rows for distances <= 0."""
    q, k, v, weight, _ = make_inputs(1, 1, 19, 19, 16, 4, False, False, False)
    out_full = rk.relative_attention(q, k, v, weight, 4, causal=True)
    out_causal = rk.relative_attention(q, k, v, weight[:5].contiguous(), 4, causal=True)
    torch.testing.assert_close(out_full, out_causal)


def test_query_with_no_visible_key_outputs_zero_and_finite_gradients():
    q, k, v, weight, _ = make_inputs(2, 1, 18, 18, 16, 3, True, False, False)
    kpm = torch.ones(2, 18, dtype=torch.bool, device=DEVICE)
    kpm[0, :2] = False  # with causal masking, queries 0 and 1 of batch 0 see nothing
    leaves = [t.clone().requires_grad_() for t in (q, k, v, weight)]
    out = rk.relative_attention(*leaves, 3, causal=True, key_padding_mask=kpm)
    assert torch.all(out[0, :, :2] == 0)
    out.square().sum().backward()
    assert all(torch.isfinite(t.grad).all() for t in leaves)
    want = reference(*(t.double() for t in (q, k, v, weight)), 3, causal=True, key_padding_mask=kpm)
    torch.testing.assert_close(out.double(), want, atol=2e-5, rtol=1e-4)


def test_deterministic_mode_is_reproducible_and_correct():
    q, k, v, weight, kpm = make_inputs(1, 2, 35, 35, 16, 9, False, True, True)
    dout = torch.randn_like(q)
    fn = lambda *t: rk.relative_attention(*t, 9, causal=False, key_padding_mask=kpm)
    default = grads(fn, q, k, v, weight, dout)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        first = grads(fn, q, k, v, weight, dout)
        second = grads(fn, q, k, v, weight, dout)
    finally:
        torch.use_deterministic_algorithms(before)
    for a, b_, c in zip(first, second, default):
        assert torch.equal(a, b_)
        torch.testing.assert_close(a, c, atol=1e-5, rtol=1e-5)


def test_matches_the_attention_core():
    """``attention(..., backend="triton")`` calls the kernel and agrees with the core's skewing reference."""
    core = pytest.importorskip("zoo.core_attention")
    positions = core.positions
    b, h, lq, lk, d, kmax = 2, 2, 11, 30, 16, 6
    for causal, num_heads in [(True, None), (False, h)]:
        term = positions.RelativeEmbedding(d, kmax, num_heads=num_heads, causal=causal).to(DEVICE)
        q, k, v, _, kpm = make_inputs(b, h, lq, lk, d, kmax, causal, False, True)
        mask = kpm[:, None, None, :]  # (B, 1, 1, Lk)
        dout = torch.randn(b, h, lq, d, device=DEVICE)
        results = {}
        for backend in ("reference", "triton"):
            term.weight.grad = None
            leaves = [t.clone().requires_grad_() for t in (q, k, v)]
            out = core.attention(*leaves, position=term, mask=mask, causal=causal, backend=backend)
            out.backward(dout)
            results[backend] = (out, *(t.grad for t in leaves), term.weight.grad.clone())
        for g, w in zip(results["triton"], results["reference"]):
            torch.testing.assert_close(g, w, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "kind,match",
    [
        ("explicit-positions", r"needs default \(contiguous\) positions; RelativeEmbedding was bound"),
        ("causal-table-bidir", r"a causal RelativeEmbedding \(K \+ 1 rows\) needs causal=True"),
        ("dropout", "has no dropout"),
        ("full-mask", r"only key-padding masks of shape \(B, 1, 1, Lk\)"),
        ("float64", "does not support device .*, dtype torch.float64"),
    ],
)
def test_attention_core_reports_why_the_kernel_cannot_run_a_call(kind, match):
    """The op's per-call checks (positions, masks, dropout, dtypes) reach the caller of backend='triton'."""
    from zoo.core_attention import attention, positions

    term = positions.RelativeEmbedding(16, 4, causal=True).to(DEVICE)
    q, k, v, _, _ = make_inputs(1, 2, 8, 8, 16, 4, True, False, False)
    kwargs = dict(position=term, causal=True)
    if kind == "explicit-positions":
        kwargs["position"] = term.bind(q_pos=torch.arange(8, device=DEVICE))
    elif kind == "causal-table-bidir":
        kwargs["causal"] = False
    elif kind == "dropout":
        kwargs["dropout_p"] = 0.1
    elif kind == "full-mask":
        kwargs["mask"] = torch.ones(1, 2, 8, 8, dtype=torch.bool, device=DEVICE)
    else:
        term.double()
        q, k, v = q.double(), k.double(), v.double()
    with pytest.raises(ValueError, match=f"backend='triton' cannot run this call: .*{match}"):
        attention(q, k, v, backend="triton", **kwargs)


def test_supports_and_clear_errors():
    q, k, v, weight, _ = make_inputs(1, 2, 8, 8, 16, 3, False, False, False)
    assert rk.supports(q, k, v, weight)
    assert not rk.supports(q[..., :8].contiguous(), k[..., :8].contiguous(), v[..., :8].contiguous(), weight[:, :8])
    assert not rk.supports(q.double(), k.double(), v.double(), weight)
    assert not rk.supports(q, k, v, weight, key_padding_mask=torch.ones(1, 8))  # float, not bool
    # grouped KV heads (the core expands them before the call) and a batch-broadcast padding mask
    assert rk.supports(q, k[:, :1], v[:, :1], weight)
    kpm = torch.rand(1, 8, device=DEVICE) > 0.5
    kpm[0, 0] = True
    assert rk.supports(q, k, v, weight, key_padding_mask=kpm)
    torch.testing.assert_close(rk.relative_attention(q, k, v, weight, 3, causal=False, key_padding_mask=kpm),
                               reference(q, k, v, weight, 3, causal=False, key_padding_mask=kpm), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="weight has 6 rows"):
        rk.relative_attention(q, k, v, weight[:6], 3, causal=False)
    with pytest.raises(ValueError, match="needs causal=True"):
        rk.relative_attention(q, k, v, weight[:4], 3, causal=False)
    with pytest.raises(ValueError, match="head dim"):
        rk.relative_attention(q[..., :8], k[..., :8], v[..., :8], weight[:, :8], 3, causal=False)
    with pytest.raises(ValueError, match="Lq <= Lk"):
        rk.relative_attention(torch.cat([q, q], 2), k, v, weight, 3, causal=False)
    with pytest.raises(ValueError, match="key_padding_mask"):
        rk.relative_attention(q, k, v, weight, 3, causal=False, key_padding_mask=torch.ones(1, 7, dtype=torch.bool))
    with pytest.raises(ValueError, match="max_distance"):
        rk.relative_attention(q, k, v, weight, 0, causal=False)


def test_custom_op_registration_and_compile():
    """The op pair passes torch.library's checks (schema, fake tensors, autograd) and traces under
    torch.compile (aot_eager here; Inductor in the GPU test) with the same values as eager."""
    q, k, v, weight, kpm = make_inputs(1, 1, 17, 17, 16, 4, False, False, True)
    torch.library.opcheck(torch.ops.zoo.relative_attention_fwd.default, (q, k, v, weight, kpm, 4, False, 0.25),
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))

    def layer(q, k, v, weight):
        return rk.relative_attention(q, k, v, weight, 4, causal=False, key_padding_mask=kpm).sum(-1)

    dout = torch.randn(1, 1, 17, device=DEVICE)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=True)
    got = grads(compiled, q, k, v, weight, dout)
    want = grads(layer, q, k, v, weight, dout)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_benchmark_smoke_path(tmp_path, monkeypatch):
    """benchmarks/relative_attention.py --smoke runs its real code path on CPU and writes its table."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[4] / "benchmarks" / "relative_attention.py"
    spec = importlib.util.spec_from_file_location("relative_attention_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    out = tmp_path / "table.md"
    argv = ["--smoke", "--lengths", "24", "--modes", "causal", "--methods", "kernel", "skew-ref", "sdpa",
            "--out", str(out)]
    if torch.cuda.is_available():
        pytest.skip("the smoke path is the CPU path")
    assert bench.main(argv) == 0
    table = out.read_text()
    rows = [line for line in table.splitlines() if line.startswith("| causal | 24 |")]
    assert [r.split("|")[4].strip() for r in rows] == ["kernel", "skew-ref", "sdpa"]
    assert all("error" not in r and "OOM" not in r for r in rows)
    assert float(rows[0].split("|")[-2]) < 1e-5  # the kernel agrees with the skewing reference


@pytest.mark.slow
def test_kernels_compile_for_hopper_without_a_gpu():
    """Ahead-of-time compile for sm_90 (Triton's bundled ptxas; no GPU needed): catches kernel code that
    the interpreter accepts but the compiler rejects, and checks that the matmuls use wgmma."""
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[4]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, str(root / "benchmarks" / "relative_attention.py"), "--compile-report",
                          "--default-configs", "--modes", "causal"], capture_output=True, text=True, env=env,
                         cwd=root, timeout=600)
    if run.returncode != 0 and "ptxas" in run.stderr.lower():
        pytest.skip(f"no usable ptxas here: {run.stderr.strip().splitlines()[-1]}")
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line.split("|") for line in run.stdout.splitlines() if line.startswith("| _")]
    assert [r[1].strip() for r in rows] == ["_fwd_kernel", "_bwd_dkdv_kernel", "_bwd_dq_kernel"]
    assert all(int(r[-2]) > 0 for r in rows), "expected wgmma (HGMMA) instructions in every kernel"


# ----------------------------------------------------------------------------- GPU
gpu = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
GPU_CASES = [
    (2, 4, 300, 300, 64, 64, True, False, False),
    (2, 4, 300, 300, 64, 300, False, True, True),
    (1, 2, 129, 517, 128, 40, True, True, True),
    (2, 2, 256, 256, 32, 17, False, False, False),
    (1, 2, 190, 190, 16, 8, True, False, False),
]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("case", GPU_CASES, ids=[case_id(c) for c in GPU_CASES])
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_half_precision_flash_attention_criterion(case, dtype):
    """Kernel error vs float64 <= 2x the error of the same PyTorch computation in the low precision."""
    b, h, lq, lk, d, kmax, causal, per_head, pad = case
    q, k, v, weight, kpm = make_inputs(b, h, lq, lk, d, kmax, causal, per_head, pad, dtype=torch.float64)
    q, k, v, weight = (t.to(dtype).double() for t in (q, k, v, weight))  # exactly representable inputs
    dout = torch.randn(b, h, lq, d, device=DEVICE, dtype=dtype).double()
    exact = grads(lambda *t: reference(*t, kmax, causal=causal, key_padding_mask=kpm), q, k, v, weight, dout)
    low = [t.to(dtype) for t in (q, k, v, weight, dout)]
    ref_low = grads(lambda *t: reference(*t, kmax, causal=causal, key_padding_mask=kpm), *low)
    kernel = grads(lambda *t: rk.relative_attention(*t, kmax, causal=causal, key_padding_mask=kpm), *low)
    for name, x, r, e in zip(["out", "dq", "dk", "dv", "dweight"], kernel, ref_low, exact):
        assert torch.isfinite(x).all(), name
        err_kernel = (x.double() - e).abs().max().item()
        err_ref = (r.double() - e).abs().max().item()
        assert err_kernel <= 2 * err_ref + 1e-5, f"{name}: kernel {err_kernel:.3e} vs torch {err_ref:.3e}"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_autotuned_configs_on_gpu(monkeypatch):
    """The autotuned launch path (every config compiled and timed once) gives the same numbers."""
    monkeypatch.setenv("ZOO_RELATIVE_ATTENTION_AUTOTUNE", "1")
    q, k, v, weight, kpm = make_inputs(2, 4, 333, 333, 64, 100, True, False, True, dtype=torch.bfloat16)
    dout = torch.randn_like(q)
    fn = lambda *t: rk.relative_attention(*t, 100, causal=True, key_padding_mask=kpm)
    tuned = grads(fn, q, k, v, weight, dout)
    monkeypatch.setenv("ZOO_RELATIVE_ATTENTION_AUTOTUNE", "0")
    default = grads(fn, q, k, v, weight, dout)
    for name, a, b_ in zip(["out", "dq", "dk", "dv", "dweight"], tuned, default):
        torch.testing.assert_close(a.float(), b_.float(), atol=3e-2, rtol=3e-2, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_compiles_with_inductor_on_gpu():
    q, k, v, weight, kpm = make_inputs(2, 4, 200, 200, 64, 32, True, True, True, dtype=torch.bfloat16)

    def block(q, k, v, weight):
        return torch.nn.functional.gelu(rk.relative_attention(q * 1.5, k, v, weight, 32, causal=True,
                                                              key_padding_mask=kpm))

    dout = torch.randn_like(q)
    got = grads(torch.compile(block, fullgraph=True), q, k, v, weight, dout)
    want = grads(block, q, k, v, weight, dout)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=2e-2, rtol=2e-2)
