"""MultiheadAttention: grouped KV heads, owned position terms, and KV-cache decoding."""

from __future__ import annotations

import pytest
import torch

from zoo.core_attention import KVCache, MultiheadAttention, positions

DT = torch.float64


def _mha(terms, num_kv_heads=2, backend="reference"):
    torch.manual_seed(0)
    return MultiheadAttention(32, 4, num_kv_heads=num_kv_heads, position=terms, backend=backend).to(DT).eval()


@pytest.mark.parametrize(
    "make_terms",
    [
        lambda: positions.RelativeEmbedding(8, 6, causal=True),
        lambda: positions.RelativeEmbedding(8, 6, num_heads=4),
        lambda: [positions.Rotary(8), positions.ALiBi(4)],
        lambda: positions.T5Bias(4, 16, 32, bidirectional=False),
    ],
    ids=["relative-causal", "relative-perhead", "rotary+alibi", "t5"],
)
def test_incremental_decoding_equals_full_recomputation(make_terms):
    mha = _mha(make_terms())
    x = torch.randn(2, 13, 32, dtype=DT)
    full = mha(x, causal=True)  # (B, L, dim)
    cache = KVCache()
    steps = [mha(x[:, :5], causal=True, cache=cache)]  # a prompt of 5, then one token at a time
    for t in range(5, 13):
        steps.append(mha(x[:, t : t + 1], causal=True, cache=cache))
    torch.testing.assert_close(torch.cat(steps, 1), full)
    assert len(cache) == 13


def test_left_padded_batch_with_explicit_positions_matches_unpadded():
    mha = _mha(positions.RelativeEmbedding(8, 4, causal=True))
    x = torch.randn(1, 6, 32, dtype=DT)
    alone = mha(x, causal=True)
    padded = torch.cat([torch.randn(1, 2, 32, dtype=DT), x], 1)  # two pad tokens on the left
    pos = torch.arange(-2, 6)[None]  # (1, 8): the real tokens keep positions 0..5
    mask = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    mask[..., :2] = False
    mask[..., :2, :] = True  # pad queries attend somewhere; their outputs are ignored
    out = mha(padded, causal=True, mask=mask, position_context={"q_pos": pos, "k_pos": pos})
    torch.testing.assert_close(out[:, 2:], alone)


def test_cross_attention_with_kdim_and_box_context():
    mha = MultiheadAttention(
        32, 4, kdim=24, vdim=24, position=positions.BoxRPB(4, hidden_dim=8), backend="reference"
    ).to(DT)
    queries = torch.randn(2, 5, 32, dtype=DT)
    memory = torch.randn(2, 12, 24, dtype=DT)
    ctx = {"boxes": torch.rand(2, 5, 4, dtype=DT), "spatial_shape": (3, 4)}
    out = mha(queries, memory, position_context=ctx)
    assert out.shape == (2, 5, 32)
    out.sum().backward()
    assert mha.position[0].cpb_mlp_x[0].weight.grad is not None


def test_state_dict_holds_position_parameters():
    mha = _mha(positions.RelativeEmbedding(8, 3))
    assert "position.0.weight" in mha.state_dict()


def test_bad_configuration_and_input():
    with pytest.raises(ValueError, match=r"dim \(30\) must be divisible by num_heads \(4\)"):
        MultiheadAttention(30, 4)
    with pytest.raises(ValueError, match=r"num_heads \(4\) must be a multiple of num_kv_heads \(3\)"):
        MultiheadAttention(32, 4, num_kv_heads=3)
    with pytest.raises(ValueError, match=r"x must have shape \(B, L, 32\)"):
        MultiheadAttention(32, 4)(torch.randn(2, 5, 16))
    cache = KVCache()
    mha = MultiheadAttention(32, 4)
    mha(torch.randn(2, 3, 32), cache=cache)
    with pytest.raises(ValueError, match="call reset"):
        mha(torch.randn(3, 1, 32), cache=cache)


def test_cache_growth_keeps_earlier_entries():
    cache = KVCache()
    chunks = [torch.randn(1, 2, n, 4) for n in (3, 20, 1, 40)]
    for c in chunks:
        k, v = cache.update(c, c + 1)
    torch.testing.assert_close(k, torch.cat(chunks, 2))
    torch.testing.assert_close(v, torch.cat(chunks, 2) + 1)


@pytest.mark.parametrize(
    "backend,make_terms,match",
    [
        ("triton", lambda: positions.T5Bias(4), r"backend='triton' cannot run T5Bias: it names no fused kernel "
         r"\(T5Bias.kernel is None\); T5Bias supports backends \('reference', 'sdpa', 'flex'\)"),
        ("triton", lambda: None, "backend='triton' runs the fused kernel of exactly one position term, got none"),
        ("triton", lambda: [positions.Rotary(8), positions.RelativeEmbedding(8, 4)],
         "exactly one position term, got Rotary, RelativeEmbedding"),
        ("flex", lambda: positions.MusicRelative(8, 4, fme_dim=8), r"backend='flex' cannot run MusicRelative: it has "
         r"no FlexAttention form \(no score_mod\); MusicRelative supports backends \('reference', 'sdpa'\)"),
    ],
    ids=["triton-t5", "triton-none", "triton-two-terms", "flex-music"],
)
def test_forced_backend_that_cannot_run_its_terms_is_refused_at_construction(backend, make_terms, match):
    with pytest.raises(ValueError, match=match):
        MultiheadAttention(32, 4, position=make_terms(), backend=backend)


@pytest.mark.parametrize(
    "backend,make_terms",
    [
        ("triton", lambda: positions.RelativeEmbedding(8, 4, causal=True)),
        ("flex", lambda: [positions.Rotary(8), positions.T5Bias(4)]),  # a pure q/k transform needs no score_mod
        ("sdpa", lambda: positions.MusicRelative(8, 4, fme_dim=8)),  # sdpa falls back to a float mask
        ("reference", lambda: positions.MusicRelative(8, 4, fme_dim=8)),
    ],
    ids=["triton-relative", "flex-rotary-t5", "sdpa-music", "reference-music"],
)
def test_forced_backend_that_has_a_form_of_every_term_is_accepted(backend, make_terms):
    assert MultiheadAttention(32, 4, position=make_terms(), backend=backend).backend == backend
