"""MatchAttention: the reference against a per-query loop, BilinearSoftmax's continuity and gradients,
and the chunked path (hand-written backward, the default off CUDA) and the fused Triton kernel against the
reference, forward and every gradient.

On CPU the kernel runs in Triton's interpreter (``TRITON_INTERPRET=1``, set below before Triton is
imported) in float64 and float32, at small sizes (the interpreter is slow). Case ids read
``B1-H4-N60-r2``: batch, heads, queries (``Hq x Wq``), radius.
"""

import itertools
import math
import os

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")  # must precede the first import of triton's jit

import pytest  # noqa: E402

from zoo.core_attention import match_attention  # noqa: E402
from zoo.core_attention.kernels import match_attention as ops  # noqa: E402
from zoo.core_attention.kernels.match_attention import CLAMP_EPS, clamp_centers  # noqa: E402
from zoo.core_attention.kernels.match_attention.chunked import match_attention_chunked  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
F64 = torch.float64


def make_inputs(b, h, hq, wq, hk, wk, d, dv, radius, dtype=F64, device=DEVICE, margin=0.0, seed=0):
    """Random q, k, v and centres anywhere in the key map (``margin`` beyond it: exercises the clamp)."""
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(b, h, hq, wq, d, generator=gen, dtype=F64)
    k = torch.randn(b, h, hk, wk, d, generator=gen, dtype=F64)
    v = torch.randn(b, h, hk, wk, dv, generator=gen, dtype=F64)
    size = torch.tensor([wk - 1, hk - 1], dtype=F64)
    centers = torch.rand(b, h, hq, wq, 2, generator=gen, dtype=F64) * (size + 2 * margin) - margin
    return [t.to(device=device, dtype=dtype) for t in (q, k, v, centers)]


def naive(q, k, v, centers, radius, scale):
    """A per-query loop written from the definition (official semantics), independent of reference.py."""
    b, h, hq, wq, _ = q.shape
    hk, wk = k.shape[2], k.shape[3]
    side = 2 * radius + 2
    out = q.new_zeros(b, h, hq, wq, v.shape[-1])
    probs = q.new_zeros(b, h, hq, wq, side * side)
    for bi, hi, i, j in _indices(b, h, hq, wq):
        cx = min(max(centers[bi, hi, i, j, 0].item(), radius), wk - 1 - radius - CLAMP_EPS)
        cy = min(max(centers[bi, hi, i, j, 1].item(), radius), hk - 1 - radius - CLAMP_EPS)
        x0, y0 = math.floor(cx), math.floor(cy)
        fx, fy = cx - x0, cy - y0
        blend = {(0, 0): (1 - fx) * (1 - fy), (0, 1): fx * (1 - fy), (1, 0): (1 - fx) * fy, (1, 1): fx * fy}
        for (oy, ox), weight in blend.items():
            keys = [(y0 - radius + oy + a, x0 - radius + ox + c) for a in range(side - 1) for c in range(side - 1)]
            scores = [-scale * (q[bi, hi, i, j] - k[bi, hi, y, x]).abs().sum().item() for y, x in keys]
            top = max(scores)
            total = sum(math.exp(s - top) for s in scores)
            for (y, x), s in zip(keys, scores):
                p = weight * math.exp(s - top) / total
                out[bi, hi, i, j] += p * v[bi, hi, y, x]
                probs[bi, hi, i, j, (y - y0 + radius) * side + (x - x0 + radius)] += p
    return out, probs


def _indices(*sizes):
    return list(itertools.product(*(range(s) for s in sizes)))


# ----------------------------------------------------------------------------- reference
@pytest.mark.parametrize(
    "case",
    [(1, 2, 4, 5, 6, 7, 3, 2, 1, 0.0), (2, 1, 3, 3, 8, 9, 4, 4, 2, 1.5), (1, 1, 3, 4, 4, 4, 2, 3, 0, 0.7)],
    ids=["B1-H2-N20-r1", "B2-H1-N9-r2-outside", "B1-H1-N12-r0"],
)
def test_reference_matches_per_query_loop(case):
    b, h, hq, wq, hk, wk, d, dv, radius, margin = case
    q, k, v, centers = make_inputs(b, h, hq, wq, hk, wk, d, dv, radius, margin=margin)
    out, weights = match_attention(q, k, v, centers, radius, backend="reference", return_weights=True)
    want_out, want_weights = naive(q, k, v, centers, radius, d**-0.5)
    assert out.shape == (b, h, hq, wq, dv) and weights.shape == (b, h, hq, wq, (2 * radius + 2) ** 2)
    torch.testing.assert_close(out, want_out, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(weights, want_weights, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(weights.sum(-1), torch.ones_like(weights[..., 0]))


def test_integer_centre_is_plain_window_softmax():
    """With a zero fractional part BilinearSoftmax is one softmax over the (2r+1)^2 window centred at c."""
    q, k, v, _ = make_inputs(1, 1, 1, 1, 7, 7, 4, 3, 2)
    centers = torch.tensor([3.0, 2.0], dtype=F64).view(1, 1, 1, 1, 2)
    out = match_attention(q, k, v, centers, 2, scale=0.7)
    keys = k[0, 0, 0:5, 1:6].reshape(25, 4)  # rows y = 0..4, cols x = 1..5
    p = (-0.7 * (q[0, 0, 0, 0] - keys).abs().sum(-1)).softmax(0)  # (25,)
    torch.testing.assert_close(out[0, 0, 0, 0], p @ v[0, 0, 0:5, 1:6].reshape(25, 3))


def test_bilinear_softmax_is_continuous_across_integer_centres():
    """The output just below and just above an integer centre (x, y, and both) differ by O(eps)."""
    q, k, v, _ = make_inputs(1, 2, 2, 3, 8, 9, 4, 4, 1, seed=1)
    base = torch.tensor([4.0, 3.0], dtype=F64)
    eps = 1e-7
    for direction in ([1.0, 0.0], [0.0, 1.0], [1.0, 1.0]):
        step = eps * torch.tensor(direction, dtype=F64)
        below = match_attention(q, k, v, (base - step).expand(1, 2, 2, 3, 2), 1)
        above = match_attention(q, k, v, (base + step).expand(1, 2, 2, 3, 2), 1)
        jump = (above - below).abs().max().item()
        assert jump < 50 * eps, f"direction {direction}: jump {jump:.3e}"
    # ... while the output does move with the centre (the test is not vacuous)
    far = match_attention(q, k, v, (base + 0.5).expand(1, 2, 2, 3, 2), 1)
    assert (far - match_attention(q, k, v, base.expand(1, 2, 2, 3, 2), 1)).abs().max() > 1e-3


def test_centre_gradient_matches_finite_differences_across_a_cell():
    """d out / d centre from autograd equals central differences inside a cell (fractional centres)."""
    q, k, v, _ = make_inputs(1, 1, 1, 2, 6, 6, 3, 2, 1, seed=2)
    centers = torch.tensor([[2.3, 2.6], [1.7, 3.2]], dtype=F64).view(1, 1, 1, 2, 2).requires_grad_()
    dout = torch.randn(1, 1, 1, 2, 2, dtype=F64)
    (grad,) = torch.autograd.grad((match_attention(q, k, v, centers, 1) * dout).sum(), centers)
    h = 1e-6
    for idx in _indices(*centers.shape):
        plus, minus = centers.detach().clone(), centers.detach().clone()
        plus[idx] += h
        minus[idx] -= h
        fd = ((match_attention(q, k, v, plus, 1) - match_attention(q, k, v, minus, 1)) * dout).sum() / (2 * h)
        assert abs(fd.item() - grad[idx].item()) < 1e-7


def test_reference_gradcheck():
    """torch.autograd.gradcheck w.r.t. q, k, v and centres (fractional, some clamped), both outputs."""
    q, k, v, centers = make_inputs(1, 2, 2, 3, 5, 6, 3, 2, 1, margin=0.8, seed=3)
    centers = centers.floor() + 0.1 + 0.8 * torch.rand_like(centers)  # away from integer kinks
    centers[0, 0, 0, 0, 0] = -2.0  # clamped: zero gradient, still a valid input
    leaves = [t.clone().requires_grad_() for t in (q, k, v, centers)]

    def fn(q, k, v, c):
        out, weights = match_attention(q, k, v, c, 1, backend="reference", return_weights=True)
        return out, weights

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7)


def test_clamped_centres_equal_the_clamp_and_get_no_gradient():
    q, k, v, centers = make_inputs(1, 1, 3, 3, 6, 7, 3, 3, 1, margin=3.0, seed=4)
    leaf = centers.clone().requires_grad_()
    out = match_attention(q, k, v, leaf, 1)
    torch.testing.assert_close(out, match_attention(q, k, v, clamp_centers(centers, 1, 6, 7), 1))
    out.sum().backward()
    lo = torch.tensor([1.0, 1.0], dtype=F64)
    hi = torch.tensor([7 - 2 - CLAMP_EPS, 6 - 2 - CLAMP_EPS], dtype=F64)
    outside = (centers < lo) | (centers > hi)
    assert outside.any() and (leaf.grad[outside] == 0).all()


@pytest.mark.parametrize(
    "change,match",
    [
        ("q4d", r"q must be 5-D"),
        ("radius", r"radius must be an int >= 0, got 1.5"),
        ("kheads", r"k must be \(B=1, H=2, Hk, Wk, D=3\)"),
        ("vshape", r"v must be \(B, H, Hk, Wk, Dv\)"),
        ("centers", r"centers must be \(B, H, Hq, Wq, 2\)"),
        ("small", r"the key map \(5 x 6\) is smaller than the 8 x 8 window of radius 3"),
        ("dtype", r"q, k, v must share one floating dtype"),
        ("backend", r"backend must be one of"),
    ],
)
def test_clear_errors(change, match):
    q, k, v, centers = make_inputs(1, 2, 2, 3, 5, 6, 3, 2, 1)
    radius, backend = 1, "auto"
    if change == "q4d":
        q = q[0]
    elif change == "radius":
        radius = 1.5
    elif change == "kheads":
        k = k[:, :1]
    elif change == "vshape":
        v = v[:, :, :4]
    elif change == "centers":
        centers = centers[..., :1]
    elif change == "small":
        radius = 3
    elif change == "dtype":
        k = k.float()
    else:
        backend = "fast"
    with pytest.raises(ValueError, match=f"match_attention: {match}"):
        match_attention(q, k, v, centers, radius, backend=backend)


# ----------------------------------------------------------------------------- chunked path
def outputs_and_grads(backend, q, k, v, centers, radius, dout, dweights, scale=None, chunk_elements=None):
    """out, weights and the gradients of <out, dout> + <weights, dweights> (either may be None) w.r.t. q, k, v,
    centers (zeros where unused). ``chunk_elements``: call the chunked op itself with that chunk size."""
    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v, centers)]
    if chunk_elements is None:
        out, weights = match_attention(*leaves, radius, scale=scale, backend=backend, return_weights=True)
    else:
        clamped = clamp_centers(leaves[3], radius, k.shape[2], k.shape[3])
        out, weights = match_attention_chunked(*leaves[:3], clamped, radius, scale or q.shape[-1] ** -0.5, True,
                                               chunk_elements)
    loss = (0 if dout is None else (out * dout).sum()) + (0 if dweights is None else (weights * dweights).sum())
    return (out, weights, *torch.autograd.grad(loss, leaves, materialize_grads=True))


def with_edge_centres(centers, radius, hk, wk):
    """Put some centres exactly on the clamp limits and some on integers (the corner cases of floor)."""
    c = centers.clone()
    flat = c.view(-1, 2)
    hi_x, hi_y = wk - 1 - radius - CLAMP_EPS, hk - 1 - radius - CLAMP_EPS
    flat[0] = torch.tensor([radius, radius], dtype=c.dtype)  # lower limit, integer
    flat[1] = torch.tensor([hi_x, hi_y], dtype=c.dtype)  # upper limit
    flat[2] = torch.tensor([radius + 1.0, hi_y], dtype=c.dtype)  # integer x, y at the upper limit
    flat[3::5] = flat[3::5].floor().clamp(min=radius)  # integer centres
    return c


CHUNKED_NAMES = ["out", "weights", "dq", "dk", "dv", "dcenters"]
# (B, H, Hq, Wq, Hk, Wk, D, Dv, r, margin, chunk_elements); chunk_elements / (S^2 (D + Dv)) queries per chunk
CHUNKED_CASES = [
    (2, 3, 4, 5, 4, 5, 4, 3, 1, 1.0, 16 * 7 * 7),  # 7 queries a chunk: 120 queries in ragged chunks
    (1, 2, 5, 6, 6, 9, 5, 2, 2, 0.5, 36 * 7 * 11),  # cross-view shapes, r = 2, D not a power of two
    (2, 1, 3, 4, 3, 4, 3, 4, 0, 0.3, 4 * 7 * 5),  # r = 0: 2 x 2 window, single-key sub-windows
    (1, 4, 8, 8, 8, 8, 8, 8, 1, 2.0, None),  # the public call, one chunk
]


def chunked_id(c):
    b, h, hq, wq, hk, wk, d, dv, radius, margin, chunk = c
    return f"B{b}-H{h}-N{hq * wq}-r{radius}" + ("" if (hq, wq) == (hk, wk) else f"-K{hk}x{wk}") + \
        ("-public" if chunk is None else f"-chunk{chunk // ((2 * radius + 2) ** 2 * (d + dv))}")


@pytest.mark.parametrize("case", CHUNKED_CASES, ids=[chunked_id(c) for c in CHUNKED_CASES])
@pytest.mark.parametrize("grads", ["both", "out_only", "weights_only"])
def test_chunked_matches_reference_autograd(case, grads):
    b, h, hq, wq, hk, wk, d, dv, radius, margin, chunk = case
    q, k, v, centers = make_inputs(b, h, hq, wq, hk, wk, d, dv, radius, margin=margin, seed=1)
    centers = with_edge_centres(centers, radius, hk, wk)
    gen = torch.Generator().manual_seed(2)
    dout = torch.randn(b, h, hq, wq, dv, generator=gen, dtype=F64).to(DEVICE) if grads != "weights_only" else None
    dweights = torch.randn(b, h, hq, wq, (2 * radius + 2) ** 2, generator=gen, dtype=F64).to(DEVICE) \
        if grads != "out_only" else None
    want = outputs_and_grads("reference", q, k, v, centers, radius, dout, dweights)
    got = outputs_and_grads("chunked", q, k, v, centers, radius, dout, dweights, chunk_elements=chunk)
    for name, g, w in zip(CHUNKED_NAMES, got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, name
        torch.testing.assert_close(g, w, atol=1e-12, rtol=1e-10, msg=lambda m, n=name: f"{n}: {m}")
    assert got[-1].abs().sum() > 0  # the centre gradient is not vacuously zero


def test_chunked_gradcheck():
    """torch.autograd.gradcheck of the op in float64, both outputs, several chunks, some centres clamped."""
    q, k, v, centers = make_inputs(1, 2, 2, 3, 5, 6, 3, 2, 1, margin=0.8, seed=3)
    jitter = torch.rand(centers.shape, generator=torch.Generator().manual_seed(4), dtype=F64).to(DEVICE)
    centers = centers.floor() + 0.1 + 0.8 * jitter  # away from the integer kinks
    centers[0, 0, 0, 0, 0] = -2.0  # clamped: zero gradient, still a valid input
    leaves = [t.clone().requires_grad_() for t in (q, k, v, centers)]

    def fn(q, k, v, c):
        return match_attention_chunked(q, k, v, clamp_centers(c, 1, 5, 6), 1, 0.6, True, 16 * 5 * 5)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_chunked_low_precision_like_the_reference(dtype):
    """Half / single inputs: outputs and gradients in the input dtype, within that dtype's rounding of the
    float64 reference on the same rounded inputs, and as close to it as the reference in that dtype is."""
    q, k, v, centers = make_inputs(1, 2, 4, 5, 4, 5, 4, 4, 1, margin=0.5, seed=5)
    low = [t.to(dtype) for t in (q, k, v, centers)]
    gen = torch.Generator().manual_seed(6)
    dout = torch.randn(1, 2, 4, 5, 4, generator=gen, dtype=F64).to(DEVICE)
    dweights = torch.randn(1, 2, 4, 5, 16, generator=gen, dtype=F64).to(DEVICE)
    exact = outputs_and_grads("reference", *(t.double() for t in low), 1, dout, dweights)
    got = outputs_and_grads("chunked", *low, 1, dout.to(dtype), dweights.to(dtype))
    ref_low = outputs_and_grads("reference", *low, 1, dout.to(dtype), dweights.to(dtype))
    tol = {torch.float16: 2e-2, torch.bfloat16: 1e-1, torch.float32: 1e-5}[dtype]
    for name, g, r, e in zip(CHUNKED_NAMES, got, ref_low, exact):
        assert g.dtype == r.dtype == dtype, name
        scale = e.abs().max().item() + 1e-3
        assert (g.double() - e).abs().max().item() <= tol * scale, name
        assert (g.double() - e).abs().max().item() <= 2 * (r.double() - e).abs().max().item() + tol * scale / 4, name


@pytest.mark.skipif(torch.cuda.is_available(), reason="auto picks the Triton kernel on CUDA")
def test_auto_picks_chunked_off_cuda(monkeypatch):
    calls = []

    def spy(*args):
        calls.append(args[0].shape)
        return match_attention_chunked(*args)

    monkeypatch.setattr(ops, "match_attention_chunked", spy)
    q, k, v, centers = make_inputs(1, 1, 3, 3, 5, 5, 4, 4, 1, dtype=torch.float32)
    out = match_attention(q, k, v, centers, 1)
    assert calls == [q.shape] and out.shape == (1, 1, 3, 3, 4)
    match_attention(q, k, v, centers, 1, backend="reference")
    assert len(calls) == 1  # the reference stays one flag away


def _saved_numel(backend, q, k, v, centers, radius):
    """Elements autograd keeps for the backward of one call (every saved tensor, inputs included)."""
    sizes = []

    def pack(t):
        sizes.append(t.numel())
        return t

    leaves = [t.detach().clone().requires_grad_() for t in (q, k, v, centers)]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, weights = match_attention(*leaves, radius, backend=backend, return_weights=True)
    (out.sum() + weights.sum()).backward()
    return sum(sizes)


def test_chunked_saves_only_inputs_and_log_sum_exps():
    """The backward keeps q, k, v, the centres (raw and clamped) and 4 log-sum-exps per query -- no window tensor."""
    b, h, hq, wq, d, radius = 1, 2, 8, 8, 4, 2
    q, k, v, centers = make_inputs(b, h, hq, wq, hq, wq, d, d, radius, margin=1.0, seed=7, dtype=torch.float32)
    n = b * h * hq * wq
    bound = 3 * n * d + 4 * n * 2 + 4 * n  # q, k, v; centres (the clamp's own saved tensors included); lse
    chunked = _saved_numel("chunked", q, k, v, centers, radius)
    reference = _saved_numel("reference", q, k, v, centers, radius)
    assert chunked <= bound < reference / 4, (chunked, bound, reference)


# ----------------------------------------------------------------------------- fused kernel
def _kernel_module():
    """The fused module, or a skip where neither a GPU nor the interpreter can run it."""
    fused = pytest.importorskip("zoo.core_attention.kernels.match_attention.triton")
    if not torch.cuda.is_available() and not fused.INTERPRET:
        pytest.skip("the kernel module was imported without TRITON_INTERPRET=1 and there is no GPU")
    return fused


# (B, H, Hq, Wq, Hk, Wk, D, Dv, r, margin); the interpreter's 16-query programs make N = 20 and 60 ragged
KERNEL_CASES = [
    (2, 1, 4, 5, 6, 9, 5, 3, 1, 1.0),  # cross-view shapes (Hk, Wk != Hq, Wq), D not a power of two, clamping
    (1, 2, 4, 4, 6, 6, 4, 4, 2, 0.0),  # r = 2, the model's largest radius
    (1, 1, 3, 4, 3, 4, 4, 2, 0, 0.5),  # r = 0: 2 x 2 window, single-key sub-windows
]
SLOW_CASES = [(1, 4, 6, 10, 6, 10, 8, 8, 2, 0.5)]


def kernel_id(c):
    b, h, hq, wq, hk, wk, d, dv, radius, margin = c
    return f"B{b}-H{h}-N{hq * wq}-r{radius}" + ("" if (hq, wq) == (hk, wk) else f"-K{hk}x{wk}") + f"-D{d}-Dv{dv}"


def _check_kernel(case, dtype, with_weight_grad=True):
    _kernel_module()
    b, h, hq, wq, hk, wk, d, dv, radius, margin = case
    q, k, v, centers = make_inputs(b, h, hq, wq, hk, wk, d, dv, radius, margin=margin, seed=7)
    centers = torch.where(centers.frac().abs() < 0.05, centers + 0.1, centers)  # no centre on an integer kink
    gen = torch.Generator().manual_seed(8)
    dout = torch.randn(b, h, hq, wq, dv, generator=gen, dtype=F64).to(DEVICE)
    dweights = torch.randn(b, h, hq, wq, (2 * radius + 2) ** 2, generator=gen, dtype=F64).to(DEVICE)
    dweights = dweights if with_weight_grad else None
    want = outputs_and_grads("reference", q, k, v, centers, radius, dout, dweights)
    low = [t.to(dtype) for t in (q, k, v)]
    got = outputs_and_grads("triton", *low, centers.to(dtype), radius, dout.to(dtype),
                            None if dweights is None else dweights.to(dtype))
    tol = dict(atol=1e-12, rtol=1e-10) if dtype == F64 else dict(atol=2e-4, rtol=2e-4)
    if dtype != F64:  # compare against the reference on the same rounded inputs
        want = outputs_and_grads("reference", *(t.double() for t in (*low, centers.to(dtype))), radius, dout, dweights)
    for name, g, w in zip(["out", "weights", "dq", "dk", "dv", "dcenters"], got, want):
        assert g.dtype == dtype and g.shape == w.shape, name
        torch.testing.assert_close(g.double(), w, **tol, msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("case", KERNEL_CASES, ids=[kernel_id(c) for c in KERNEL_CASES])
def test_kernel_matches_reference_float64(case):
    _check_kernel(case, F64)


@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW_CASES, ids=[kernel_id(c) for c in SLOW_CASES])
def test_kernel_matches_reference_float64_larger(case):
    _check_kernel(case, F64)


def test_kernel_matches_reference_float32_without_weight_gradient():
    """float32 inputs, and the out-only backward (no gradient arriving through the weights)."""
    _check_kernel(KERNEL_CASES[0], torch.float32, with_weight_grad=False)


def test_kernel_output_only_call_and_explicit_scale():
    _kernel_module()
    q, k, v, centers = make_inputs(1, 1, 3, 3, 5, 5, 4, 4, 1, seed=9)
    got = match_attention(q, k, v, centers, 1, scale=0.3, backend="triton")
    torch.testing.assert_close(got, match_attention(q, k, v, centers, 1, scale=0.3, backend="reference"),
                               atol=1e-12, rtol=1e-12)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the interpreter's limits; CUDA takes bfloat16")
def test_kernel_refuses_bfloat16_under_the_interpreter_and_auto_stays_off_triton():
    _kernel_module()
    q, k, v, centers = make_inputs(1, 1, 3, 3, 5, 5, 4, 4, 1, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="backend='triton' cannot run this call: bfloat16 is not supported under"):
        match_attention(q, k, v, centers, 1, backend="triton")
    assert match_attention(q, k, v, centers, 1).dtype == torch.bfloat16  # auto on CPU: the chunked path


def test_benchmark_smoke_path(tmp_path, monkeypatch):
    """benchmarks/match_attention.py --smoke runs its real code path on CPU and writes its table."""
    import importlib.util
    import sys
    from pathlib import Path

    if torch.cuda.is_available():
        pytest.skip("the smoke path is the CPU path")
    _kernel_module()
    path = Path(__file__).resolve().parents[3] / "benchmarks" / "match_attention.py"
    spec = importlib.util.spec_from_file_location("match_attention_benchmark", path)
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)
    spec.loader.exec_module(bench)
    out = tmp_path / "table.md"
    assert bench.main(["--smoke", "--radii", "1", "--out", str(out)]) == 0
    rows = [line for line in out.read_text().splitlines() if line.startswith("| ") and "reference" in line]
    assert rows and all("error" not in r for r in rows)


@pytest.mark.slow
def test_kernels_compile_for_hopper_without_a_gpu():
    """Ahead-of-time compile for sm_90 (Triton's bundled ptxas; no GPU needed): catches kernel code that
    the interpreter accepts but the compiler rejects, in fp32, bf16 and fp64."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run([sys.executable, str(root / "benchmarks" / "match_attention.py"), "--compile-check"],
                         capture_output=True, text=True, env=env, cwd=root, timeout=600)
    if run.returncode != 0 and "ptxas" in run.stderr.lower():
        pytest.skip(f"no usable ptxas here: {run.stderr.strip().splitlines()[-1]}")
    assert run.returncode == 0, run.stderr[-2000:]
    assert sum(" compiled, " in line for line in run.stdout.splitlines()) == 6
