"""The fused relative-attention kernel (``triton.py``) against its readable twin (``reference.py``).

Forward and every gradient are compared with the reference evaluated in float64. On CPU the kernels
run in Triton's interpreter (``TRITON_INTERPRET=1``, set below before Triton is imported), in float32, with the
interpreter's 32 x 16 tiles (and 16 x 16 ones where a test says so) so small lengths span several tiles: fully
clipped tiles, band tiles and ragged last tiles all occur. Both q.E^T paths are tested: in the kernel and
precomputed (``precompute_qe``). ``gpu`` tests check half precision with
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
def test_forward_and_gradients_match_reference(case, precompute_qe=False):
    b, h, lq, lk, d, kmax, causal, per_head, pad = case
    if rk.INTERPRET and case[:2] in ((2, 2), (3, 1)) and not precompute_qe and rk.INTERPRETER_BLOCK_M == 32:
        # at the interpreter's default tile, more (batch, head) pairs than dE copies
        assert rk._de_slots(b, h, lq, torch.device(DEVICE), per_head, False) < b * h
    q, k, v, weight, kpm = make_inputs(b, h, lq, lk, d, kmax, causal, per_head, pad)
    dout = torch.randn(b, h, lq, d, device=DEVICE)
    got = grads(lambda *t: rk.relative_attention(*t, kmax, causal=causal, key_padding_mask=kpm,
                                                 precompute_qe=precompute_qe), q, k, v, weight, dout)
    want = grads(lambda *t: reference(*t, kmax, causal=causal, key_padding_mask=kpm),
                 *(t.double() for t in (q, k, v, weight)), dout.double())
    for name, g, w in zip(["out", "dq", "dk", "dv", "dweight"], got, want):
        assert g.shape == w.shape, name
        torch.testing.assert_close(g.double(), w, atol=2e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


TILE_CASES = [CASES[0], CASES[3], CASES[4], CASES[10], (1, 1, 130, 130, 16, 20, False, True, True)]


@pytest.mark.skipif(not rk.INTERPRET, reason="on GPUs the autotuner picks the tile shape")
@pytest.mark.parametrize("block_m", [16, 64], ids=["16x16", "64x16"])
@pytest.mark.parametrize("case", TILE_CASES, ids=[case_id(c) for c in TILE_CASES])
def test_other_tile_shapes_match_reference(case, block_m, monkeypatch):
    """BLOCK_M = BLOCK_N (one chunk carried, a two-way select) and BLOCK_M = 4 BLOCK_N (four chunks, the GPU
    backward's default shape), beside the interpreter's default 2:1."""
    monkeypatch.setattr(rk, "INTERPRETER_BLOCK_M", block_m)
    test_forward_and_gradients_match_reference(case)


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_precomputed_qe_path_matches_reference(case):
    """``precompute_qe=True``: the kernels gather the band from ``q @ E^T`` (B, H, Lq, R); dq and dE get the
    relative part through autograd from the kernel's dQE. Every case, K < L and K >= L alike."""
    test_forward_and_gradients_match_reference(case, precompute_qe=True)


@pytest.mark.skipif(not rk.INTERPRET, reason="the interpreter's tile shapes")
@pytest.mark.parametrize("block_m", [16, 64], ids=["16x16", "64x16"])
def test_precomputed_qe_path_with_other_tile_shapes(block_m, monkeypatch):
    monkeypatch.setattr(rk, "INTERPRETER_BLOCK_M", block_m)
    test_forward_and_gradients_match_reference(CASES[1], precompute_qe=True)
    test_forward_and_gradients_match_reference(TILE_CASES[-1], precompute_qe=True)


def test_precomputed_qe_gradient_flows_through_the_tensor():
    """The precomputed path's custom op differentiates w.r.t. its ``qe`` input, and that gradient equals
    the float64 reference's gradient of the relative logits ``q @ E^T`` (so dq and dE through it are right)."""
    b, h, length, d, kmax, causal = 1, 2, 37, 16, 5, False
    q, k, v, weight, kpm = make_inputs(b, h, length, length, d, kmax, causal, False, True)
    dout = torch.randn(b, h, length, d, device=DEVICE)
    qe = rk._table_logits(q, weight).requires_grad_()  # (B, H, L, R) leaf
    scale = d**-0.5
    out, _ = torch.ops.zoo.relative_attention_qe_fwd(q, k, v, qe, kpm, None, kmax, causal, scale, 0.0)
    (got,) = torch.autograd.grad(out, qe, dout)
    # the reference's logits as a function of a (B, H, L, R) leaf: gather it exactly as reference.py does
    qe64 = qe.detach().double().requires_grad_()
    q_pos = torch.arange(length, device=DEVICE)
    rows = (q_pos[None, :] - q_pos[:, None]).clamp(-kmax, kmax) + kmax  # (L, L)
    logits = scale * (q.double() @ k.double().transpose(-1, -2) + qe64.gather(-1, rows.expand(b, h, -1, -1)))
    logits = logits.masked_fill(~kpm[:, None, None, :], float("-inf"))
    want_out = torch.softmax(logits, -1) @ v.double()
    (want,) = torch.autograd.grad(want_out, qe64, dout.double())
    torch.testing.assert_close(out.double(), want_out, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(got.double(), want, atol=2e-5, rtol=1e-4)


def test_precomputed_qe_selection_rule(monkeypatch):
    """``precompute_qe=None`` precomputes exactly when R <= 2 D and R < Lk, and the pick is the path that runs."""
    assert rk.use_precomputed_qe(rows=11, lk=512, head_dim=64)  # K = 5, bidirectional
    assert rk.use_precomputed_qe(rows=128, lk=512, head_dim=64)  # R = 2 D
    assert not rk.use_precomputed_qe(rows=129, lk=512, head_dim=64)
    assert rk.use_precomputed_qe(rows=256, lk=4096, head_dim=128)
    assert not rk.use_precomputed_qe(rows=33, lk=33, head_dim=64)  # K >= L: the table spans the sequence
    assert not rk.use_precomputed_qe(rows=2049, lk=2048, head_dim=64)  # Music Transformer, K = L
    q, k, v, weight, _ = make_inputs(1, 1, 20, 20, 16, 4, True, False, False)
    calls = []
    for op in ("relative_attention_fwd", "relative_attention_qe_fwd"):
        original = getattr(rk, f"_{op}")

        def spy(*args, _name=op, _original=original):
            calls.append(_name)
            return _original(*args)

        monkeypatch.setattr(rk, f"_{op}", spy)
    rk.relative_attention(q, k, v, weight, 4, causal=True)  # R = 5 <= 2 D = 32 and < Lk = 20: precomputed
    rk.relative_attention(q, k, v, torch.randn(41, 16, device=DEVICE), 20, causal=False)  # R = 41 > 32
    rk.relative_attention(q, k, v, weight, 4, causal=True, precompute_qe=False)
    assert calls == ["relative_attention_qe_fwd", "relative_attention_fwd", "relative_attention_fwd"]
    with pytest.raises(ValueError, match="precompute_qe must be None, True or False"):
        rk.relative_attention(q, k, v, weight, 4, causal=True, precompute_qe="yes")


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


@pytest.mark.parametrize("p", [0.0, 0.25], ids=["no-dropout", "dropout"])
def test_deterministic_mode_is_reproducible_and_correct(p):
    q, k, v, weight, kpm = make_inputs(1, 2, 35, 35, 16, 9, False, True, True)
    dout = torch.randn_like(q)
    fn = lambda *t: rk.relative_attention(*t, 9, causal=False, key_padding_mask=kpm, dropout_p=p)
    torch.manual_seed(3)  # with dropout, every call below draws the same seed
    default = grads(fn, q, k, v, weight, dout)
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        torch.manual_seed(3)
        first = grads(fn, q, k, v, weight, dout)
        torch.manual_seed(3)
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
        ("bfloat16-interpreted", "does not support device cpu, dtype torch.bfloat16"),
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
    elif kind == "bfloat16-interpreted":
        if not rk.INTERPRET:
            pytest.skip("bfloat16 runs on GPUs; only the interpreter refuses it")
        term.bfloat16()
        q, k, v = q.bfloat16(), k.bfloat16(), v.bfloat16()
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
    torch.library.opcheck(torch.ops.zoo.relative_attention_fwd.default, (q, k, v, weight, kpm, None, 4, False, 0.25, 0.0),
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
    bench = _benchmark_module(monkeypatch)
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
                          "--default-configs", "--modes", "causal", "--dims", "64", "--dropout", "off"],
                         capture_output=True, text=True, env=env, cwd=root, timeout=600)
    if run.returncode != 0 and "ptxas" in run.stderr.lower():
        pytest.skip(f"no usable ptxas here: {run.stderr.strip().splitlines()[-1]}")
    assert run.returncode == 0, run.stderr[-2000:]
    rows = [line.split("|") for line in run.stdout.splitlines() if line.startswith("| _")]
    assert [(r[1].strip(), r[2].strip()) for r in rows] == [
        ("_fwd_kernel", "in-kernel"), ("_fwd_kernel", "precomputed"), ("_bwd_kernel", "in-kernel"),
        ("_bwd_kernel", "precomputed")]
    assert all(int(r[-4]) > 0 for r in rows), "expected wgmma (HGMMA) instructions in every kernel"
    assert [int(r[-3]) for r in rows] == [3, 2, 8, 5], "tile matmuls per band tile: forward 3 (2), backward 8 (5)"
    # the compiled band loops carry what the skew needs: BLOCK_M^2 fp32 q.E^T values (forward), plus
    # BLOCK_M^2 16-bit dS values (backward). A carry lost to Triton's loop-carry detection passes every
    # interpreter test and gives wrong gradients on a GPU.
    assert [float(r[-2]) for r in rows] == [16, 0, 24, 0], "carried KiB at BLOCK_M 64"
    # the defaults at D = 64 without dropout are spill-free, both q.E^T paths (column: spill stores)
    assert [int(r[10]) for r in rows] == [0, 0, 0, 0], "spill stores at BLOCK_M 64, D 64"


# ----------------------------------------------------------------------------- bf16 under the interpreter
@pytest.mark.skipif(not rk.INTERPRET, reason="bfloat16 is refused only under the interpreter")
def test_interpreter_refuses_bfloat16_with_a_clear_message():
    q, k, v, weight, _ = make_inputs(1, 1, 8, 8, 16, 3, False, False, False)
    assert not rk.supports(q.bfloat16(), k.bfloat16(), v.bfloat16(), weight.bfloat16())
    assert not rk.supports(q, k, v, weight.bfloat16())  # a bf16 table alone is refused too
    with pytest.raises(ValueError, match=r"bfloat16 is refused under TRITON_INTERPRET=1: the interpreter's bf16 "
                                         r"tl.dot gives wrong results; use float32 or float16"):
        rk.relative_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), weight.bfloat16(), 3, causal=False)


@pytest.mark.skipif(not rk.INTERPRET, reason="the GPU half-precision tests cover float16 there")
@pytest.mark.parametrize("block_m,length,kmax", [(32, 35, 7), (32, 70, 40), (64, 70, 40)])
def test_float16_through_the_interpreter(block_m, length, kmax, monkeypatch):
    """float16 runs in the interpreter: forward and gradients within half-precision error of float64. With
    BLOCK_M = 2 and 4 BLOCK_N the backward carries its 16-bit dS tiles packed in pairs (``_pack2``)."""
    monkeypatch.setattr(rk, "INTERPRETER_BLOCK_M", block_m)
    b, h, d = 1, 2, 16
    q, k, v, weight, kpm = make_inputs(b, h, length, length, d, kmax, True, True, True)
    q, k, v, weight = (t.half() for t in (q, k, v, weight))
    dout = torch.randn(b, h, length, d, device=DEVICE).half()
    got = grads(lambda *t: rk.relative_attention(*t, kmax, causal=True, key_padding_mask=kpm), q, k, v, weight, dout)
    want = grads(lambda *t: reference(*t, kmax, causal=True, key_padding_mask=kpm),
                 *(t.double() for t in (q, k, v, weight)), dout.double())
    for name, g, w in zip(["out", "dq", "dk", "dv", "dweight"], got, want):
        assert g.dtype == torch.float16, name
        torch.testing.assert_close(g.double(), w, atol=2e-2, rtol=2e-2, msg=lambda m, n=name: f"{n}: {m}")


# ----------------------------------------------------------------------------- dropout
def test_dropout_mask_is_seeded_and_keeps_one_minus_p():
    p, shape = 0.3, (2, 2, 70, 90)
    mask = rk.dropout_mask(1234, shape, p, DEVICE)
    assert mask.shape == shape and mask.dtype == torch.bool
    assert torch.equal(mask, rk.dropout_mask(1234, shape, p, DEVICE))  # same seed, same mask
    assert not torch.equal(mask, rk.dropout_mask(1235, shape, p, DEVICE))
    n = mask.numel()
    sigma = (p * (1 - p) / n) ** 0.5
    assert abs(mask.float().mean().item() - (1 - p)) < 5 * sigma, "keep rate outside 5 sigma of 1 - p"
    # every (batch, head) and every row draws its own bits: no two share a pattern
    flat = mask.reshape(4, -1)
    assert all(not torch.equal(flat[i], flat[j]) for i in range(4) for j in range(i))
    assert not torch.equal(mask[0, 0, 0], mask[0, 0, 1])
    # the seed comes from torch's generator
    torch.manual_seed(7)
    first = rk.draw_seed()
    torch.manual_seed(7)
    assert torch.equal(first, rk.draw_seed())


# (B, H, Lq, Lk, D, K, causal, per_head, pad)
DROPOUT_CASES = [CASES[0], CASES[3], CASES[4], CASES[9]]


@pytest.mark.parametrize("p", [0.1, 0.5], ids=["p0.1", "p0.5"])
@pytest.mark.parametrize("case", DROPOUT_CASES, ids=[case_id(c) for c in DROPOUT_CASES])
def test_dropout_forward_and_gradients_match_reference_with_the_kernels_mask(case, p):
    """The forward and the backward both use the mask of the seed the call drew: with that mask the
    float64 reference gives the same output and the same gradients."""
    b, h, lq, lk, d, kmax, causal, per_head, pad = case
    q, k, v, weight, kpm = make_inputs(b, h, lq, lk, d, kmax, causal, per_head, pad)
    dout = torch.randn(b, h, lq, d, device=DEVICE)
    torch.manual_seed(99)
    got = grads(lambda *t: rk.relative_attention(*t, kmax, causal=causal, key_padding_mask=kpm, dropout_p=p),
                q, k, v, weight, dout)
    torch.manual_seed(99)
    mask = rk.dropout_mask(rk.draw_seed(), (b, h, lq, lk), p, DEVICE)
    assert 0 < mask.float().mean() < 1
    want = grads(lambda *t: reference(*t, kmax, causal=causal, key_padding_mask=kpm, dropout_p=p, dropout_mask=mask),
                 *(t.double() for t in (q, k, v, weight)), dout.double())
    no_dropout = reference(q.double(), k.double(), v.double(), weight.double(), kmax, causal=causal,
                           key_padding_mask=kpm)
    assert (want[0] - no_dropout).abs().max() > 1e-2  # the mask matters in this case
    for name, g, w in zip(["out", "dq", "dk", "dv", "dweight"], got, want):
        torch.testing.assert_close(g.double(), w, atol=2e-5, rtol=1e-4, msg=lambda m, n=name: f"{n}: {m}")


def test_dropout_is_reproducible_from_torch_manual_seed_and_fresh_per_call():
    q, k, v, weight, _ = make_inputs(1, 2, 20, 20, 16, 4, True, False, False)
    torch.manual_seed(5)
    first = rk.relative_attention(q, k, v, weight, 4, causal=True, dropout_p=0.2)
    second = rk.relative_attention(q, k, v, weight, 4, causal=True, dropout_p=0.2)
    torch.manual_seed(5)
    again = rk.relative_attention(q, k, v, weight, 4, causal=True, dropout_p=0.2)
    assert torch.equal(first, again)
    assert not torch.equal(first, second)
    # the expectation over masks is the undropped output (inverted dropout): a rough check on many seeds
    plain = rk.relative_attention(q, k, v, weight, 4, causal=True)
    mean = torch.stack([rk.relative_attention(q, k, v, weight, 4, causal=True, dropout_p=0.2)
                        for _ in range(40)]).mean(0)
    assert (mean - plain).abs().mean() < 0.5 * (first - plain).abs().mean()


def test_attention_core_runs_dropout_on_the_kernel():
    """``attention(..., dropout_p=p, backend="triton")`` reaches the kernel (no refusal) with its mask."""
    from zoo.core_attention import attention, positions

    b, h, lq, lk, d, kmax = 2, 2, 11, 30, 16, 6
    term = positions.RelativeEmbedding(d, kmax, causal=True).to(DEVICE)
    q, k, v, _, kpm = make_inputs(b, h, lq, lk, d, kmax, True, False, True)
    torch.manual_seed(11)
    out = attention(q, k, v, position=term, mask=kpm[:, None, None, :], causal=True, dropout_p=0.3,
                    backend="triton")
    torch.manual_seed(11)
    mask = rk.dropout_mask(rk.draw_seed(), (b, h, lq, lk), 0.3, DEVICE)
    want = reference(q, k, v, term.weight.detach(), kmax, causal=True, key_padding_mask=kpm, dropout_p=0.3,
                     dropout_mask=mask)
    torch.testing.assert_close(out, want, atol=1e-5, rtol=1e-5)


def test_dropout_argument_is_checked():
    q, k, v, weight, _ = make_inputs(1, 1, 8, 8, 16, 3, False, False, False)
    for bad in (1.0, -0.1, True):
        with pytest.raises(ValueError, match=r"dropout_p must be a real in \[0, 1\)"):
            rk.relative_attention(q, k, v, weight, 3, causal=False, dropout_p=bad)
    with pytest.raises(ValueError, match="dropout needs both dropout_p > 0 and dropout_mask"):
        reference(q, k, v, weight, 3, causal=False, dropout_p=0.1)


# ----------------------------------------------------------------------------- tile matmul count
def _benchmark_module(monkeypatch):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[4] / "benchmarks" / "relative_attention.py"
    spec = importlib.util.spec_from_file_location("relative_attention_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # dataclasses look their module up there
    spec.loader.exec_module(bench)
    return bench


@pytest.mark.skipif(not rk.INTERPRET, reason="counts tl.dot calls in the interpreter")
@pytest.mark.parametrize("block_m,precompute_qe,expected", [(32, False, (3, 8)), (16, False, (3, 8)),
                                                             (64, False, (3, 8)), (32, True, (2, 5))],
                         ids=["32x16", "16x16", "64x16", "32x16-precomputed"])
def test_tile_matmuls_per_band_tile(block_m, precompute_qe, expected, monkeypatch):
    """The module docstring's count: forward 3 and backward 8 tile matmuls per band tile, whatever the
    tile shape (2 and 5, plain attention's, with q.E^T precomputed), measured by counting tl.dot calls
    as the number of band tiles grows."""
    monkeypatch.setattr(rk, "INTERPRETER_BLOCK_M", block_m)
    counts = _benchmark_module(monkeypatch).count_tile_matmuls(precompute_qe)
    assert (counts["forward"], counts["backward"]) == expected


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
