"""MusicTransformer: shapes, relative attention wiring, KV-cache parity, sampling, tiny overfit."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import zoo
import zoo.music.lm.models  # noqa: F401
from zoo.core_attention import positions
from zoo.music.lm.models.music_transformer import CONFIGS, MusicTransformer, sample_next

TINY = dict(num_layers=2, d_model=32, num_heads=4, d_ff=64, max_distance=8, dropout=0.0, attn_dropout=0.0)


def tiny(**kw) -> MusicTransformer:
    return zoo.create_model("music_transformer_demo", **{**TINY, **kw})


def test_registered_variants_and_paper_configs():
    for name in ("music_transformer_chorales", "music_transformer_jsb", "music_transformer_piano",
                 "music_transformer_demo"):
        assert zoo.hub.model_entry(name).test_overrides is not None
    jsb, piano = CONFIGS["music_transformer_jsb"], CONFIGS["music_transformer_piano"]
    # Huang et al. 2018: JSB 5 layers / 512 hidden / 512 ff / 8 heads / relative distance 256;
    # piano (Magenta's score2perf release): 6 layers / 512 hidden / 2048 ff / 8 heads / relative distance 1024
    # on the 388 Oore et al. events (+3 specials)
    assert (jsb.num_layers, jsb.d_model, jsb.d_ff, jsb.num_heads, jsb.max_distance) == (5, 512, 512, 8, 256)
    assert (piano.num_layers, piano.d_model, piano.d_ff, piano.num_heads, piano.max_distance) == (6, 512, 2048, 8, 1024)
    assert piano.vocab_size == 391 and piano.tokenizer == "performance" and jsb.tokenizer == "jsb16th"
    with pytest.raises(ValueError, match="unknown config override"):
        zoo.create_model("music_transformer_demo", num_layer=2)


def test_shapes_and_relative_tables():
    model = tiny()
    logits = model(torch.randint(0, 133, (3, 17)))
    assert logits.shape == (3, 17, 133)
    rel = [m for m in model.modules() if isinstance(m, positions.RelativeEmbedding)]
    assert len(rel) == 2
    assert all(r.causal and r.weight.shape == (4, 8 + 1, 8) for r in rel)  # (H, K + 1, D) per head
    # tied embeddings; parameter count of the architecture
    assert model.head.weight is model.embed.weight
    d, f, v, layers, h = 32, 64, 133, 2, 4
    per_layer = 4 * (d * d + d) + 2 * 2 * d + (d * f + f + f * d + d) + h * 9 * (d // h)
    voices, bar = model.config.num_voices, model.config.steps_per_bar  # 4 and 16 in the demo config
    assert sum(p.numel() for p in model.parameters()) == v * d + (voices + bar) * d + layers * per_layer + 2 * d
    with pytest.raises(ValueError, match="tokens must have shape"):
        model(torch.zeros(5, dtype=torch.long))


def test_relative_term_changes_logits():
    """The relative tables are wired into every layer's attention logits."""
    torch.manual_seed(0)
    model = tiny(max_distance=4).eval()
    x = torch.randint(5, 133, (1, 12))
    base = model(x)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, positions.RelativeEmbedding):
                m.weight.add_(torch.randn_like(m.weight))
    assert not torch.allclose(model(x), base, atol=1e-4)


@pytest.mark.parametrize("backend", ["reference", "sdpa"])
def test_kv_cache_decoding_equals_full_recomputation(backend):
    torch.manual_seed(0)
    model = tiny(attention_backend=backend, max_distance=6).eval()
    tokens = torch.randint(0, 133, (2, 30))
    with torch.no_grad():
        full = model(tokens)  # (B, L, V)
        cache = model.new_cache()
        parts = [model(tokens[:, :7], cache=cache)]  # a prompt chunk, then one token at a time
        parts += [model(tokens[:, t: t + 1], cache=cache) for t in range(7, 30)]
    torch.testing.assert_close(torch.cat(parts, dim=1), full, atol=1e-4, rtol=1e-4)


def test_cached_and_uncached_generation_agree():
    model = tiny().eval()
    prompt = torch.tensor([[1, 60, 65, 70, 50]])
    a = model.generate(prompt, 20, temperature=0.0, use_cache=True)
    b = model.generate(prompt, 20, temperature=0.0, use_cache=False)
    assert a.shape == (1, 25) and torch.equal(a, b)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    s1 = model.generate(prompt, 15, temperature=1.0, top_k=10, use_cache=True, generator=g1)
    s2 = model.generate(prompt, 15, temperature=1.0, top_k=10, use_cache=False, generator=g2)
    assert torch.equal(s1, s2)


def test_sampling_filters():
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0, 4.0]]).repeat(200, 1)
    assert set(sample_next(logits, top_k=2).tolist()) <= {3, 4}
    probs = logits[0].softmax(-1)
    assert probs[4] < 0.9
    assert set(sample_next(logits, top_p=probs[4].item() - 1e-3).tolist()) == {4}
    assert sample_next(logits, temperature=0.0).tolist() == [4] * 200
    with pytest.raises(ValueError, match="top_p"):
        sample_next(logits, top_p=0.0)


def test_eos_stops_generation():
    model = tiny().eval()
    with torch.no_grad():
        model.head.weight.zero_()  # all logits 0 -> greedy picks token 0, used as EOS here
    out = model.generate(torch.tensor([[1]]), 50, temperature=0.0, eos_id=0)
    assert out.shape[1] == 2 and out[0, -1].item() == 0


def test_tiny_model_overfits_four_sequences():
    torch.manual_seed(0)
    model = tiny()
    data = torch.randint(5, 133, (4, 33))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(150):
        loss = F.cross_entropy(model(data[:, :-1]).flatten(0, 1), data[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[0] > math.log(133) * 0.8
    assert losses[-1] < 0.1 * losses[0]
