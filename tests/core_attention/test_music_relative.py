"""FME and RIPO's MusicRelative term: formulas, materialized vs fast form, through the core."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.core_attention.positions.base import PositionContext, default_positions
from zoo.core_attention.positions.music import (
    DURATION_BASE,
    PITCH_BASE,
    FundamentalMusicEmbedding,
    MusicRelative,
)

PAD, REST, SUSTAIN = 0, 1, 2


def _ctx(lq: int, lk: int, **extras: torch.Tensor) -> PositionContext:
    qp, kp = default_positions(lq, lk, torch.device("cpu"))
    return PositionContext(qp, kp, False, dict(extras))


def _melody(b: int, l: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pitch tokens with pad / rest / sustain sprinkled in, cumulative onsets, nonquant mask."""
    g = torch.Generator().manual_seed(seed)
    pitch = torch.randint(50, 90, (b, l), generator=g)
    pitch[0, 1] = REST
    pitch[0, 3] = SUSTAIN
    pitch[-1, -2:] = PAD
    dur = torch.randint(1, 9, (b, l), generator=g).double() / 4  # quarter notes
    onset = torch.cumsum(dur, -1) - dur
    return pitch, onset, pitch <= SUSTAIN


def _term(h=2, d=4, e=6, **kw) -> MusicRelative:
    torch.manual_seed(0)
    term = MusicRelative(d, h, e, **kw).double()
    with torch.no_grad():  # make the frequencies distinct from the init so tests see them
        for p in term.fms.values():
            p.frequencies.mul_(1.0 + 0.1 * torch.rand_like(p.frequencies))
    return term


def test_fme_formula_and_constants():
    fme = FundamentalMusicEmbedding(8, PITCH_BASE).double()
    f = torch.tensor([[60.0, 61.5], [0.0, 127.0]], dtype=torch.float64)
    out = fme(f)
    assert out.shape == (2, 2, 8)
    for k in range(4):
        w = PITCH_BASE ** (-2 * k / 8)
        assert torch.allclose(fme.frequencies[k], torch.tensor(w, dtype=torch.float64))
        assert torch.allclose(out[..., 2 * k], torch.sin(w * f) + fme.bias[2 * k])
        assert torch.allclose(out[..., 2 * k + 1], torch.cos(w * f) + fme.bias[2 * k + 1])
    assert fme.frequencies.requires_grad and fme.bias.requires_grad
    # translation invariance of the shift: FMS(a) and FMS(b) differ by a rotation depending on a - b only
    s = fme.shift(torch.tensor([3.0, 10.0, 17.0], dtype=torch.float64))
    assert torch.allclose((s[0] * s[1]).view(4, 2).sum(-1), (s[1] * s[2]).view(4, 2).sum(-1))
    assert DURATION_BASE == 7920.0
    with pytest.raises(ValueError, match="even"):
        FundamentalMusicEmbedding(7, PITCH_BASE)


def test_bias_matches_naive_loop():
    term = _term()
    b, h, l, d = 2, 2, 5, 4
    q = torch.randn(b, h, l, d, dtype=torch.float64)
    pitch, onset, nq = _melody(b, l)
    bias = term.bias(q, q, _ctx(l, l, pitch=pitch, onset=onset, nonquant=nq), scale=0.5)
    want = torch.zeros(b, h, l, l, dtype=torch.float64)
    for attr, vals in (("pitch", pitch.double()), ("onset", onset)):
        w = term.proj[attr].weight.view(h, d, -1)
        bb = term.proj[attr].bias.view(h, d)
        e = term.nonquant["pitch"].view(h, d)
        freq = term.fms[attr].frequencies
        for bi in range(b):
            for i in range(l):
                for j in range(l):
                    delta = vals[bi, i] - vals[bi, j]
                    fms = torch.stack([f(w_ * delta) for w_ in freq for f in (torch.sin, torch.cos)])
                    for hi in range(h):
                        if attr == "pitch" and (nq[bi, i] or nq[bi, j]):
                            r = e[hi]
                        else:
                            r = w[hi] @ fms + bb[hi]
                        want[bi, hi, i, j] += 0.5 * (q[bi, hi, i] @ r)
    torch.testing.assert_close(bias, want)


@pytest.mark.parametrize("per_component", [False, True], ids=["pair-freq", "component-freq"])
@pytest.mark.parametrize("attrs", [(True, True), (True, False), (False, True)], ids=["pitch+onset", "pitch", "onset"])
@pytest.mark.parametrize("lq", [7, 3], ids=["self", "cached-Lq3"])
def test_fast_form_equals_reference_forward_backward(attrs, lq, per_component):
    term = _term(pitch=attrs[0], onset=attrs[1], per_component_frequencies=per_component)
    b, h, lk, d = 2, 2, 7, 4
    q = torch.randn(b, h, lq, d, dtype=torch.float64, requires_grad=True)
    k = torch.randn(b, h, lk, d, dtype=torch.float64)
    pitch, onset, nq = _melody(b, lk)
    ctx = _ctx(lq, lk, pitch=pitch, onset=onset, nonquant=nq)
    scale = d**-0.5
    ref = term.bias(q, k, ctx, scale)
    qf, kf = term.qk_features(q, k, ctx, scale)
    assert qf.shape == (b, h, lq, term.num_features) and kf.shape == (b, h, lk, term.num_features)
    fast = scale * qf @ kf.transpose(-1, -2)
    torch.testing.assert_close(fast, ref)  # exact, not just up to a per-row constant

    g = torch.randn_like(ref)
    params = [q, *term.parameters()]
    grads_ref = torch.autograd.grad((ref * g).sum(), params)
    grads_fast = torch.autograd.grad((fast * g).sum(), params)
    for (name, _), a, bb in zip([("q", None), *term.named_parameters()], grads_ref, grads_fast):
        torch.testing.assert_close(bb, a, msg=lambda m, n=name: f"grad of {n}: {m}")


def test_all_nonquant_rows_and_explicit_q_k_context():
    term = _term()
    b, h, l, d = 1, 2, 4, 4
    q = torch.randn(b, h, l, d, dtype=torch.float64)
    pitch = torch.tensor([[REST, 60, SUSTAIN, PAD]])
    onset = torch.tensor([[0.0, 1.0, 1.5, 2.0]], dtype=torch.float64)
    nq = pitch <= SUSTAIN
    ctx = _ctx(l, l, q_pitch=pitch, k_pitch=pitch, q_onset=onset, k_onset=onset, q_nonquant=nq, k_nonquant=nq)
    ref = term.bias(q, q, ctx, 1.0)
    qf, kf = term.qk_features(q, q, ctx, 1.0)
    torch.testing.assert_close(qf @ kf.transpose(-1, -2), ref)
    # row 0 (rest) uses the learned embedding for every key in the pitch term
    only_pitch = ref - MusicRelative.bias(_only(term, "onset"), q, q, ctx, 1.0)
    e = term.nonquant["pitch"].view(h, d)
    torch.testing.assert_close(only_pitch[0, :, 0], (q[0, :, 0] * e).sum(-1)[:, None].expand(h, l))


def _only(term: MusicRelative, attr: str) -> MusicRelative:
    other = MusicRelative(term.head_dim, term.num_heads, term.fme_dim, pitch=attr == "pitch", onset=attr == "onset")
    other = other.double()
    other.load_state_dict({k: v for k, v in term.state_dict().items() if f".{attr}" in k})
    return other


def test_bad_context_is_a_clear_error():
    term = _term()
    q = torch.randn(1, 2, 3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="needs context 'pitch'"):
        term.bias(q, q, _ctx(3, 3, onset=torch.zeros(1, 3)), 1.0)
    with pytest.raises(ValueError, match="shape"):
        term.bias(q, q, _ctx(3, 3, pitch=torch.zeros(1, 5), onset=torch.zeros(1, 3)), 1.0)
    with pytest.raises(ValueError, match="bool"):
        term.qk_features(q, q, _ctx(3, 3, pitch=torch.zeros(1, 3), onset=torch.zeros(1, 3), nonquant=torch.zeros(1, 3)), 1.0)
    with pytest.raises(ValueError, match="unknown context"):
        term.bind(pitches=torch.zeros(1, 3))


def test_through_core_attention_reference_vs_sdpa():
    from zoo.core_attention import attention
    from zoo.core_attention.positions import RelativeEmbedding

    term = _term(h=2, d=4, e=8)
    index = RelativeEmbedding(4, 16, causal=True).double()
    b, h, l, d = 2, 2, 9, 4
    pitch, onset, nq = _melody(b, l, seed=3)
    pad_keys = (pitch != PAD)[:, None, None, :]  # (B, 1, 1, L)
    qkv = [torch.randn(b, h, l, d, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    bound = [index, term.bind(pitch=pitch, onset=onset, nonquant=nq)]
    outs, grads = {}, {}
    for backend in ("reference", "sdpa"):
        out = attention(*qkv, position=bound, mask=pad_keys, causal=True, backend=backend)
        params = [*qkv, *term.parameters(), index.weight]
        outs[backend] = out
        grads[backend] = torch.autograd.grad(out.square().sum(), params)
    torch.testing.assert_close(outs["sdpa"], outs["reference"])
    for a, bb in zip(grads["reference"], grads["sdpa"]):
        torch.testing.assert_close(bb, a)
    assert math.isfinite(outs["sdpa"].sum().item())


def test_half_precision_keeps_angles_of_late_onsets():
    """Onsets of a long piece (~1000 quarter notes) must not be rounded to bfloat16 before sin/cos."""
    term = _term(h=2, d=4, e=6)
    b, h, l, d = 1, 2, 6, 4
    q = torch.randn(b, h, l, d, dtype=torch.float64)
    pitch, _, nq = _melody(b, l)
    onset = 1000.0 + torch.tensor([[0.0, 0.25, 0.5, 1.0, 1.75, 2.0]], dtype=torch.float64)
    ctx = _ctx(l, l, pitch=pitch, onset=onset, nonquant=nq)
    want = term.bias(q, q, ctx, 1.0)
    term16 = term.to(torch.bfloat16)
    qf, kf = term16.qk_features(q.bfloat16(), q.bfloat16(), ctx, 1.0)
    got = (qf.float() @ kf.float().transpose(-1, -2)).double()
    assert (got - want).abs().max() < 0.05 * want.abs().max() + 0.05
    got_ref = term16.bias(q.bfloat16(), q.bfloat16(), ctx, 1.0).double()
    assert (got_ref - want).abs().max() < 0.05 * want.abs().max() + 0.05


def test_per_component_frequencies_by_hand():
    """One frequency per sin and per cos component: FMS(x) = [sin(w_s x), cos(w_c x)] per pair."""
    fme = FundamentalMusicEmbedding(4, PITCH_BASE, bias=False, per_component=True).double()
    assert fme.frequencies.shape == (4,)
    torch.testing.assert_close(fme.frequencies[0::2], fme.frequencies[1::2])  # initialised equal per pair
    with torch.no_grad():
        fme.frequencies.copy_(torch.tensor([0.5, 0.25, 0.125, 0.0625], dtype=torch.float64))
    x = torch.tensor([3.0], dtype=torch.float64)
    want = torch.tensor([[math.sin(1.5), math.cos(0.75), math.sin(0.375), math.cos(0.1875)]], dtype=torch.float64)
    torch.testing.assert_close(fme.shift(x), want)


def test_shared_fms_are_read_not_owned():
    """Frequencies tied to modules owned elsewhere: not this term's parameters, and they get the gradient."""
    torch.manual_seed(0)
    owners = {a: FundamentalMusicEmbedding(6, PITCH_BASE, per_component=True).double() for a in ("pitch", "onset")}
    term = MusicRelative(4, 2, 6, per_component_frequencies=True, shared_fms=owners).double()
    assert not any("fms" in n for n, _ in term.named_parameters())
    q = torch.randn(2, 2, 5, 4, dtype=torch.float64)
    pitch, onset, nq = _melody(2, 5)
    ctx = _ctx(5, 5, pitch=pitch, onset=onset, nonquant=nq)
    qf, kf = term.qk_features(q, q, ctx, 0.5)
    (0.5 * qf @ kf.transpose(-1, -2)).sum().backward()
    assert all(o.frequencies.grad is not None and o.frequencies.grad.abs().sum() > 0 for o in owners.values())
    import copy

    pair = copy.deepcopy({"owners": owners, "term": term})  # deepcopy (EMA, DDP) keeps the tie
    assert pair["term"].shift_module("pitch") is pair["owners"]["pitch"]
    with pytest.raises(ValueError, match="per_component"):
        MusicRelative(4, 2, 6, per_component_frequencies=False, shared_fms=owners)
