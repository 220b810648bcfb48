"""Every backend takes exactly the calls the reference takes, and refuses the others with its error.

Hypothesis draws tiny calls over the whole input space of :func:`zoo.core_attention.attention`:
batch, heads and grouped KV heads (``Hkv`` dividing ``H``, or not), lengths ``Lq``, ``Lk`` in
``0..5``, head dims ``D`` and ``Dv`` (equal or not), the four floating dtypes (and sometimes a
mixed or integer one), causality, masks (key padding, full, broadcast, and broken ones), scales
(and broken ones) and a position term. For every backend that runs on CPU (``auto``, ``reference``,
``sdpa``, ``flex`` under ``torch.no_grad()``, FlexAttention having no CPU backward, and ``triton``
under the Triton interpreter) the outcome must be one of:

* the reference returns a tensor: the backend returns one of the same shape and dtype and values
  within the dtype's tolerance (``triton`` may instead refuse with its own ``backend='triton'
  ...`` error: it runs one term's kernel on fp32 / fp16 with supported head dims only);
* the reference raises ``ValueError``: the backend raises ``ValueError`` with the same message
  (``triton`` may name its capability first, except for a broken input, which every backend must
  refuse with the contract's message).

Any other exception (an ``IndexError`` inside FlexAttention, say) fails the test. Examples are
derandomized (the same on every run) and no example database is kept (``database=None``).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from zoo.core_attention import attention, positions

BACKENDS = ("reference", "auto", "sdpa", "flex", "triton")
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
#: (atol, rtol) of a backend against the reference; half inputs are compared with the reference's
#: float32 computation, rounded once
TOLERANCE = {
    torch.float64: (1e-10, 1e-10),
    torch.float32: (2e-5, 2e-5),
    torch.float16: (3e-3, 3e-3),
    torch.bfloat16: (3e-2, 3e-2),
}
TRITON_CAPABILITY = "backend='triton' "  # the prefix of every capability refusal of the triton backend
TERMS = ("none", "rotary", "alibi", "t5", "relative", "relative2d")

SETTINGS = settings(
    max_examples=100, deadline=None, derandomize=True, database=None, suppress_health_check=[HealthCheck.too_slow]
)


def _term(name: str, heads: int, head_dim: int, causal_table: bool, dtype: torch.dtype):
    """A fresh term in ``dtype`` (a model cast to it) with non-trivial parameters, or None."""
    if name == "none":
        return None
    if name == "rotary":
        term = positions.Rotary(head_dim)
    elif name == "alibi":
        term = positions.ALiBi(heads)
    elif name == "t5":
        term = positions.T5Bias(heads, num_buckets=8, max_distance=16)
        torch.nn.init.normal_(term.relative_attention_bias.weight, std=0.5)
    elif name == "relative":
        term = positions.RelativeEmbedding(head_dim, 2, causal=causal_table)
    else:
        term = positions.RelativeBias2D((2, 3), heads)
        torch.nn.init.normal_(term.relative_position_bias_table, std=0.5)
    return term.to(dtype) if dtype.is_floating_point else term


@st.composite
def calls(draw, triton_domain: bool = False):
    """Keyword arguments of one tiny ``attention`` call, plus whether a broken input was injected.

    ``triton_domain`` keeps to the relative-attention kernel's domain (RelativeEmbedding, fp32 / fp16,
    D = 16, key-padding masks, Lq <= Lk) except for the faults it injects, so that ``triton`` runs.
    """
    broken = False
    if triton_domain:
        dtype = draw(st.sampled_from((torch.float32, torch.float16)))
        b, hkv, group = draw(st.integers(0, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
        lk = draw(st.integers(0, 5))
        lq = draw(st.integers(0, lk))
        d = 16
        dv = draw(st.sampled_from((16, 16, 16, 8)))
        term_name = "relative"
        causal = draw(st.booleans())
        mask_kind = draw(st.sampled_from(("none", "keypad", "keypad-b1")))
        scale = draw(st.sampled_from((None, 0.7)))
    else:
        dtype = draw(st.sampled_from(DTYPES))
        b, hkv, group = draw(st.integers(0, 2)), draw(st.integers(1, 2)), draw(st.integers(1, 3))
        lq, lk = draw(st.integers(0, 5)), draw(st.integers(0, 5))
        d = draw(st.sampled_from((1, 2, 3, 8, 16)))
        dv = draw(st.sampled_from((d, d, 1, 5, 16)))
        term_name = draw(st.sampled_from(TERMS if d % 2 == 0 else tuple(t for t in TERMS if t != "rotary")))
        causal = draw(st.booleans())
        mask_kind = draw(st.sampled_from(("none", "keypad", "keypad-b1", "full", "2d", "1d", "heads")))
        scale = draw(st.sampled_from((None, None, 0.7, -0.4, 3.0)))
    h = hkv * group
    seed = draw(st.integers(0, 2**16))
    g = torch.Generator().manual_seed(seed)
    dtypes = {"q": dtype, "k": dtype, "v": dtype}
    fault = draw(st.sampled_from(("none",) * 12 + ("dtype", "int", "heads", "mask-shape", "mask-dtype", "scale")))
    if fault == "dtype":
        name = draw(st.sampled_from(("q", "k", "v")))
        dtypes[name] = draw(st.sampled_from([t for t in DTYPES if t != dtype]))
    elif fault == "int":
        dtypes = dict.fromkeys(dtypes, torch.int64)
    elif fault == "heads":
        hkv, h = 2, 3  # 3 query heads over 2 key/value heads
    elif fault == "scale":
        scale = draw(st.sampled_from((float("nan"), float("inf"), 0.0)))
    broken = fault != "none"

    def make(shape, name):
        x = torch.randn(shape, generator=g, dtype=torch.float64)
        return (x * 3).round().to(dtypes[name]) if dtypes[name] == torch.int64 else x.to(dtypes[name])

    q = make((b, h, lq, d), "q")  # (B, H, Lq, D)
    k = make((b, hkv, lk, d), "k")  # (B, Hkv, Lk, D)
    v = make((b, hkv, lk, dv), "v")  # (B, Hkv, Lk, Dv)
    shapes = {
        "none": None,
        "keypad": (b, 1, 1, lk),
        "keypad-b1": (1, 1, 1, lk),
        "full": (b, h, lq, lk),
        "2d": (lq, lk),
        "1d": (lk,),
        "heads": (1, h, 1, lk),
    }
    mask = None
    if shapes[mask_kind] is not None:
        mask = torch.rand(shapes[mask_kind], generator=g) > 0.3  # some rows end up fully masked
    if fault == "mask-shape":
        mask = torch.ones(lq + 1, lk + 2, dtype=torch.bool)
    elif fault == "mask-dtype":
        mask = torch.ones(1, 1, 1, lk)
    causal_table = draw(st.booleans()) and (causal or not triton_domain)  # the kernel needs causal=True for one
    term = _term(term_name, h, d, causal_table, dtype)
    kwargs = dict(position=term, mask=mask, causal=causal, scale=scale)
    return q, k, v, kwargs, broken


def _outcome(backend: str, q, k, v, kwargs) -> torch.Tensor | str:
    """The output, or the message of the ``ValueError`` the backend raised (anything else propagates)."""
    try:
        with torch.no_grad():
            return attention(q, k, v, backend=backend, **kwargs)
    except ValueError as err:
        return str(err)


def _assert_agrees(backend: str, got, want, broken: bool, dtype: torch.dtype) -> None:
    if isinstance(want, str):
        if backend == "triton" and not broken and isinstance(got, str) and got.startswith(TRITON_CAPABILITY):
            return
        assert got == want, f"{backend}: reference refused with {want!r}, {backend} gave {got!r}"
        return
    if isinstance(got, str):
        assert backend == "triton" and got.startswith(TRITON_CAPABILITY), (
            f"{backend} refused a call the reference takes: {got!r}"
        )
        return
    assert got.shape == want.shape and got.dtype == want.dtype, (
        f"{backend}: {tuple(got.shape)} {got.dtype}, reference {tuple(want.shape)} {want.dtype}"
    )
    atol, rtol = TOLERANCE[dtype]
    torch.testing.assert_close(got.double(), want.double(), atol=atol, rtol=rtol, msg=lambda m: f"{backend}: {m}")


def _check_call(q, k, v, kwargs, broken) -> None:
    want = _outcome("reference", q, k, v, kwargs)
    if broken:
        assert isinstance(want, str), "an injected fault was accepted by the reference"
    event("reference refuses" if isinstance(want, str) else "reference accepts")
    for backend in BACKENDS[1:]:
        got = _outcome(backend, q, k, v, kwargs)
        if backend == "triton" and not isinstance(want, str):
            event("triton runs" if not isinstance(got, str) else "triton: capability refusal")
        _assert_agrees(backend, got, want, broken, q.dtype)


@SETTINGS
@given(call=calls())
def test_every_backend_accepts_and_agrees_or_refuses_like_the_reference(call):
    _check_call(*call)


@settings(SETTINGS, max_examples=30)
@given(call=calls(triton_domain=True))
def test_triton_runs_its_domain_and_refuses_like_the_reference(call):
    q, k, v, kwargs, broken = call
    _check_call(q, k, v, kwargs, broken)
    got = _outcome("triton", q, k, v, kwargs)
    if isinstance(got, str) and got.startswith(TRITON_CAPABILITY):
        # inside the kernel's domain the only capability it lacks is v's own head dim
        assert not broken and v.shape[-1] != q.shape[-1] and "Dv == D" in got, got


# ----------------------------------------------------------------------------- the contract, by case
def _qkv(dv: int = 8, lk: int = 4, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 4, 3, 8, generator=g).to(dtype)
    k = torch.randn(2, 2, lk, 8, generator=g).to(dtype)
    v = torch.randn(2, 2, lk, dv, generator=g).to(dtype)
    return q, k, v


@pytest.mark.parametrize("backend", BACKENDS[:4])
@pytest.mark.parametrize("causal", [False, True], ids=["bidir", "causal"])
def test_value_head_dim_may_differ_from_query_head_dim(backend, causal):
    """``Dv != D`` gives ``(B, H, Lq, Dv)`` on every backend, including sdpa's feature-column path
    (causal ALiBi), where v is padded to the common width and the output sliced back to ``Dv``."""
    for dv in (3, 5, 32):
        q, k, v = _qkv(dv)
        for term in (None, positions.ALiBi(4), positions.RelativeEmbedding(8, 2)):
            want = attention(q, k, v, position=term, causal=causal, backend="reference")
            with torch.no_grad():
                got = attention(q, k, v, position=term, causal=causal, backend=backend)
            assert got.shape == (2, 4, 3, dv)
            torch.testing.assert_close(got, want, atol=2e-5, rtol=2e-5)


def test_triton_refuses_a_value_head_dim_of_its_own_clearly():
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(1, 2, 4, 16, generator=g), torch.randn(1, 2, 4, 16, generator=g)
    v = torch.randn(1, 2, 4, 8, generator=g)
    with pytest.raises(ValueError, match=r"backend='triton' cannot run this call: .*\(Dv == D\), got D=16, Dv=8"):
        attention(q, k, v, position=positions.RelativeEmbedding(16, 2), backend="triton")


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("lq,lk,b", [(3, 0, 2), (0, 4, 2), (3, 4, 0), (0, 0, 1)], ids=["Lk0", "Lq0", "B0", "Lq0-Lk0"])
def test_empty_calls_give_zeros_and_gradients_on_every_backend(backend, lq, lk, b):
    """No key: every query attends to nothing and outputs zeros; no query / batch: an empty output.
    Gradients exist (zeros) so that training through an empty call does not break."""
    term = positions.RelativeEmbedding(16, 2)
    q = torch.randn(b, 2, lq, 16, requires_grad=True)
    k = torch.randn(b, 2, lk, 16, requires_grad=True)
    v = torch.randn(b, 2, lk, 8, requires_grad=True)
    mask = torch.ones(b, 1, 1, lk, dtype=torch.bool)
    out = attention(q, k, v, position=term, mask=mask, causal=True, backend=backend)
    assert out.shape == (b, 2, lq, 8) and not out.any()
    out.sum().backward()
    for t in (q, k, v):
        assert t.grad is not None and not t.grad.any()


@pytest.mark.parametrize(
    "change,match",
    [
        ({"k": "double"}, r"q, k, v must share one dtype, got q torch.float32, k torch.float64, v torch.float32"),
        ({"all": "int"}, r"must have a floating dtype among .*, got torch.int64"),
        ({"scale": float("nan")}, "scale must be None or a finite, nonzero real number, got nan"),
        ({"scale": 0.0}, "finite, nonzero"),
        ({"causal": 1}, "causal must be a bool, got int"),
        ({"dropout_p": float("nan")}, r"dropout_p must be in \[0, 1\)"),
        ({"mask": "float"}, "mask must be boolean"),
        ({"v": "no-dims"}, r"heads and head dims must be positive"),
        ({"kv": "no-heads"}, r"heads and head dims must be positive"),
    ],
    ids=["mixed-dtype", "int", "nan-scale", "zero-scale", "causal-int", "nan-dropout", "float-mask", "dv0", "hkv0"],
)
@pytest.mark.parametrize("backend", BACKENDS)
def test_broken_inputs_raise_one_message_on_every_backend(backend, change, match):
    q, k, v = _qkv()
    kwargs = {}
    if change.get("k") == "double":
        k = k.double()
    if change.get("all") == "int":
        q, k, v = q.long(), k.long(), v.long()
    if change.get("v") == "no-dims":
        v = v[..., :0]
    if change.get("kv") == "no-heads":
        k, v = k[:, :0], v[:, :0]
    if change.get("mask") == "float":
        kwargs["mask"] = torch.ones(2, 1, 1, 4)
    for key in ("scale", "causal", "dropout_p"):
        if key in change:
            kwargs[key] = change[key]
    with pytest.raises(ValueError, match=match):
        attention(q, k, v, position=positions.RelativeEmbedding(8, 2), backend=backend, **kwargs)
