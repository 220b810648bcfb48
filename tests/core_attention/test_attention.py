"""Every backend equals ``reference``, forward and (where the backend has one) backward.

``reference`` itself is checked against a naive per-(i, j) softmax loop here and, per term, against
the papers' formulas in ``test_positions.py``.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from zoo.core_attention import attention, positions, select_backend
from zoo.core_attention.positions.base import BoundPosition

DT = torch.float64
H, HKV, D = 4, 2, 16


def _terms(name: str, causal: bool, lq: int, lk: int, batch: int) -> list:
    """Fresh float64 terms for a case; parameters get non-trivial values."""
    if name == "none":
        return []
    if name == "relative":
        return [positions.RelativeEmbedding(D, 5).to(DT)]
    if name == "relative_perhead_causal_rows":
        return [positions.RelativeEmbedding(D, 40, num_heads=H, causal=causal).to(DT)]
    if name == "t5":
        return [positions.T5Bias(H, num_buckets=16, max_distance=32, bidirectional=not causal).to(DT)]
    if name == "alibi":
        return [positions.ALiBi(H)]
    if name == "rotary":
        return [positions.Rotary(D, rotary_dim=8)]
    if name == "rotary+alibi+relative":
        return [positions.Rotary(D), positions.ALiBi(H), positions.RelativeEmbedding(D, 3).to(DT)]
    if name == "boxrpb":
        hf, wf = 3, lk // 3
        term = positions.BoxRPB(H, hidden_dim=8, stride=4, rpe_type="log").to(DT)
        boxes = torch.rand(batch, lq, 4, dtype=DT, generator=torch.Generator().manual_seed(3))
        return [term.bind(boxes=boxes, spatial_shape=(hf, wf))]
    raise KeyError(name)


TERMS = ["none", "relative", "relative_perhead_causal_rows", "t5", "alibi", "rotary", "rotary+alibi+relative", "boxrpb"]
SHAPES = {"self-L37": (37, 37), "cache-Lq5-Lk37": (5, 37), "single-Lq1-Lk18": (1, 18)}
MASKS = ["nomask", "keypad", "full"]


def _inputs(lq: int, lk: int, mask_kind: str, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, H, lq, D, generator=g, dtype=DT, requires_grad=True)
    k = torch.randn(batch, HKV, lk, D, generator=g, dtype=DT, requires_grad=True)
    v = torch.randn(batch, HKV, lk, D, generator=g, dtype=DT, requires_grad=True)
    mask = None
    if mask_kind == "keypad":
        mask = torch.ones(batch, 1, 1, lk, dtype=torch.bool)
        mask[0, ..., :3] = False  # sample 0 left-padded by 3
    elif mask_kind == "full":
        mask = torch.rand(batch, H, lq, lk, generator=g) > 0.3
        mask[..., -1] = True  # every query attends to something
    return q, k, v, mask


def _params(terms) -> list[torch.Tensor]:
    mods = [t.term if isinstance(t, BoundPosition) else t for t in terms]
    return [p for m in mods for p in m.parameters()]


def _run(backend, q, k, v, terms, mask, causal, grad: bool):
    out = attention(q, k, v, position=terms, mask=mask, causal=causal, backend=backend)
    if not grad:
        return out, []
    w = torch.randn_like(out, generator=torch.Generator().manual_seed(7))
    params = _params(terms)
    grads = torch.autograd.grad((out * w).sum(), [q, k, v, *params], allow_unused=True)
    return out, grads


CASES = [
    pytest.param(t, c, s, m, id=f"{t}-{'causal' if c else 'bidir'}-{s}-{m}")
    for t, c, s, m in itertools.product(TERMS, [False, True], SHAPES, MASKS)
    if not (t == "boxrpb" and (c or SHAPES[s][1] % 3))  # BoxRPB is cross-attention onto a grid
]


@pytest.mark.parametrize("term_name,causal,shape,mask_kind", CASES)
def test_sdpa_equals_reference_forward_backward(term_name, causal, shape, mask_kind):
    lq, lk = SHAPES[shape]
    q, k, v, mask = _inputs(lq, lk, mask_kind)
    terms = _terms(term_name, causal, lq, lk, 2)
    ref, ref_grads = _run("reference", q, k, v, terms, mask, causal, grad=True)
    out, grads = _run("sdpa", q, k, v, terms, mask, causal, grad=True)
    torch.testing.assert_close(out, ref)
    for g, r in zip(grads, ref_grads):
        if r is None:
            assert g is None or not g.abs().any()
        else:
            torch.testing.assert_close(g, r)


@pytest.mark.parametrize("term_name,causal,shape,mask_kind", CASES)
def test_flex_equals_reference_forward(term_name, causal, shape, mask_kind):
    """FlexAttention on CPU is inference-only; its backward is checked by the GPU test below."""
    lq, lk = SHAPES[shape]
    q, k, v, mask = _inputs(lq, lk, mask_kind)
    terms = _terms(term_name, causal, lq, lk, 2)
    with torch.no_grad():
        ref = attention(q, k, v, position=terms, mask=mask, causal=causal, backend="reference")
        out = attention(q, k, v, position=terms, mask=mask, causal=causal, backend="flex")
    torch.testing.assert_close(out, ref)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("term_name", ["relative", "t5", "alibi", "rotary+alibi+relative"])
@pytest.mark.parametrize("causal", [False, True])
def test_flex_backward_cuda(term_name, causal):
    lq = lk = 200
    q, k, v, mask = _inputs(lq, lk, "keypad")
    q, k, v = (t.detach().float().cuda().requires_grad_() for t in (q, k, v))
    mask = mask.cuda()
    terms = [t.float().cuda() for t in _terms(term_name, causal, lq, lk, 2)]
    ref, ref_grads = _run("reference", q, k, v, terms, mask, causal, grad=True)
    out, grads = _run("flex", q, k, v, terms, mask, causal, grad=True)
    torch.testing.assert_close(out, ref, atol=2e-4, rtol=2e-4)
    for g, r in zip(grads, ref_grads):
        if r is not None:
            torch.testing.assert_close(g, r, atol=2e-3, rtol=2e-3)


def test_reference_equals_naive_softmax_loop():
    lq, lk = 4, 6
    q, k, v, mask = (t.detach() if t is not None else t for t in _inputs(lq, lk, "full", batch=1))
    term = positions.ALiBi(H)
    out = attention(q, k, v, position=term, mask=mask, causal=True, backend="reference")
    slopes = positions.alibi_slopes(H).double()
    ke, ve = k.repeat_interleave(H // HKV, 1), v.repeat_interleave(H // HKV, 1)
    for h in range(H):
        for i in range(lq):
            qi = i + lk - lq
            logits, vals = [], []
            for j in range(lk):
                if j <= qi and mask[0, h, i, j]:
                    logits.append(float(q[0, h, i] @ ke[0, h, j]) / D**0.5 - float(slopes[h]) * abs(j - qi))
                    vals.append(ve[0, h, j])
            w = torch.softmax(torch.tensor(logits, dtype=DT), 0)
            want = sum(wi * vi for wi, vi in zip(w, vals))
            torch.testing.assert_close(out[0, h, i], want)


def test_fully_masked_query_gives_zeros_on_every_backend():
    q, k, v, _ = _inputs(3, 5, "nomask", batch=1)
    mask = torch.ones(1, 1, 3, 5, dtype=torch.bool)
    mask[..., 1, :] = False
    with torch.no_grad():
        for backend in ("reference", "sdpa", "flex"):
            out = attention(q, k, v, mask=mask, backend=backend)
            assert torch.isfinite(out).all(), backend
            assert not out[0, :, 1].any(), backend


def test_auto_selection_on_cpu():
    q, k, v, _ = _inputs(8, 8, "nomask")
    sel = lambda terms, causal=False: select_backend(  # noqa: E731
        q, k, v, [BoundPosition(t, {}) for t in terms], None, causal, 0.0
    )
    assert sel([]) == "sdpa"
    assert sel([positions.Rotary(D)]) == "sdpa"
    assert sel([positions.ALiBi(H)], causal=True) == "sdpa"  # rank-1 feature columns
    assert sel([positions.ALiBi(H)], causal=False) == "reference"
    assert sel([positions.RelativeEmbedding(D, 4)]) == "reference"  # CPU training needs a backward


def test_auto_matches_reference_with_dropout_off():
    q, k, v, mask = _inputs(9, 9, "keypad")
    term = positions.RelativeEmbedding(D, 3).to(DT)
    torch.testing.assert_close(
        attention(q, k, v, position=term, mask=mask, causal=True),
        attention(q, k, v, position=term, mask=mask, causal=True, backend="reference"),
    )


def test_flex_refuses_cpu_training():
    q, k, v, _ = _inputs(4, 4, "nomask")
    with pytest.raises(ValueError, match="inference-only"):
        attention(q, k, v, position=positions.ALiBi(H), backend="flex")


@pytest.mark.parametrize(
    "shapes,kwargs,match",
    [
        (((2, 4, 5), (2, 4, 5, 8), (2, 4, 5, 8)), {}, r"q must have shape \(B, H, L, D\), got \(2, 4, 5\)"),
        (((2, 4, 5, 8), (2, 3, 5, 8), (2, 3, 5, 8)), {}, r"query heads \(4\) must be a multiple of key/value heads \(3\)"),
        (((2, 4, 5, 8), (2, 4, 5, 4), (2, 4, 5, 4)), {}, "head dims differ"),
        (((2, 4, 5, 8), (2, 4, 6, 8), (2, 4, 5, 8)), {}, "same heads and length"),
        (((2, 4, 5, 8), (3, 4, 5, 8), (3, 4, 5, 8)), {}, "batch sizes differ"),
        (((2, 4, 5, 8), (2, 4, 6, 8), (2, 4, 6, 8)), {"mask": torch.ones(2, 1, 5, 5, dtype=torch.bool)}, r"does not broadcast to \(B, H, Lq, Lk\) = \(2, 4, 5, 6\)"),
        (((2, 4, 5, 8), (2, 4, 6, 8), (2, 4, 6, 8)), {"mask": torch.ones(2, 1, 5, 6)}, "mask must be boolean"),
        (((2, 4, 5, 8), (2, 4, 6, 8), (2, 4, 6, 8)), {"backend": "fast"}, "backend must be one of"),
    ],
    ids=["rank", "heads", "headdim", "kvlen", "batch", "maskshape", "maskdtype", "backend"],
)
def test_bad_input_raises_value_error_naming_shapes(shapes, kwargs, match):
    q, k, v = (torch.randn(*s) for s in shapes)
    with pytest.raises(ValueError, match=match):
        attention(q, k, v, **kwargs)


def test_term_head_mismatch_is_a_clear_error():
    q = torch.randn(1, 4, 5, 8)
    with pytest.raises(ValueError, match="ALiBi has 2 slopes but q has 4 heads"):
        attention(q, q, q, position=positions.ALiBi(2), backend="reference")
    with pytest.raises(ValueError, match=r"RelativeEmbedding\(head_dim=16\) got queries of head dim 8"):
        attention(q, q, q, position=positions.RelativeEmbedding(16, 3), backend="reference")
    with pytest.raises(ValueError, match=r"q_pos must have shape \(B, Lq=5\)"):
        attention(q, q, q, position=positions.Rotary(8).bind(q_pos=torch.arange(4)), backend="reference")


@pytest.mark.parametrize("backend", ["sdpa", "flex"])
def test_more_queries_than_keys_is_consistent(backend):
    """Lq > Lk: default positions and the causal mask share the offset Lk - Lq (negative here)."""
    q, k, v, _ = _inputs(9, 5, "nomask")
    q, k, v = q.detach(), k.detach(), v.detach()
    term = positions.RelativeEmbedding(D, 3).to(DT)
    with torch.no_grad():
        for causal in (False, True):
            ref = attention(q, k, v, position=term, causal=causal, backend="reference")
            torch.testing.assert_close(attention(q, k, v, position=term, causal=causal, backend=backend), ref)


def test_feature_capability_agrees_with_features():
    """``has_qk_features`` (what ``auto`` asks) must say yes exactly when ``qk_features`` gives columns."""
    q, k, _, _ = _inputs(6, 6, "nomask")
    terms = [positions.ALiBi(H), positions.RelativeEmbedding(D, 3).to(DT), positions.T5Bias(H).to(DT)]
    for term in terms:
        for causal in (False, True):
            for dtype in (DT, torch.float32, torch.bfloat16):
                ctx = BoundPosition(term, {}).make_context(6, 6, causal, q.device)
                qq, kk = q.detach().to(dtype), k.detach().to(dtype).repeat_interleave(H // HKV, 1)
                term_d = term.to(dtype)
                assert term_d.has_qk_features(ctx, dtype) == (term_d.qk_features(qq, kk, ctx, 1.0) is not None)


def test_left_padded_causal_rows_with_no_key_are_zero_on_every_backend():
    """Causal + key padding: query i of a sample padded by 3 sees no key while i < 3."""
    q, k, v, mask = (t.detach() if t is not None else t for t in _inputs(9, 9, "keypad"))
    with torch.no_grad():
        for backend in ("reference", "sdpa", "flex"):
            out = attention(q, k, v, mask=mask, causal=True, backend=backend)
            assert torch.isfinite(out).all(), backend
            assert not out[0, :, :3].any(), backend
            assert out[0, :, 3:].abs().sum(-1).gt(0).all() and out[1].abs().sum(-1).gt(0).all(), backend


@pytest.mark.parametrize("backend", ["auto", "reference", "sdpa", "flex"])
def test_each_context_is_built_once_per_call(backend, monkeypatch):
    """Selection and backend share the contexts attention() builds: one make_context per term."""
    built = []
    make_context = BoundPosition.make_context

    def counting(self, *args, **kwargs):
        built.append(type(self.term).__name__)
        return make_context(self, *args, **kwargs)

    monkeypatch.setattr(BoundPosition, "make_context", counting)
    q, k, v, mask = (t.detach() if t is not None else t for t in _inputs(6, 6, "keypad"))
    terms = [positions.Rotary(D), positions.ALiBi(H), positions.T5Bias(H).to(DT)]
    with torch.no_grad():
        attention(q, k, v, position=terms, mask=mask, causal=True, backend=backend)
    assert built == ["Rotary", "ALiBi", "T5Bias"]


def test_forced_backend_that_cannot_run_a_term_is_refused_before_running():
    q, k, v, _ = _inputs(4, 4, "nomask")
    music = positions.MusicRelative(D, H, fme_dim=8).to(DT)
    with pytest.raises(ValueError, match=r"backend='flex' cannot run MusicRelative: .*supports backends \('reference', 'sdpa'\)"):
        attention(q, k, v, position=music, backend="flex")
    with pytest.raises(ValueError, match=r"backend='triton' cannot run T5Bias: it names no fused kernel"):
        attention(q, k, v, position=positions.T5Bias(H), backend="triton")
    with pytest.raises(ValueError, match="exactly one position term, got Rotary, RelativeEmbedding"):
        attention(q, k, v, position=[positions.Rotary(D), positions.RelativeEmbedding(D, 3)], backend="triton")
    assert positions.RelativeEmbedding.kernel is not None
