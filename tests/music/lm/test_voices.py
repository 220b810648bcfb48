"""Voice identity for interleaved SATB tokens: the voice embedding's phase, constrained decoding, and
the musical statistics that measure both."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import zoo
from zoo.music.lm.stats import chorale_stats, key_of, summarize
from zoo.music.lm.tokenizers import VOICE_RANGES, ChoraleGrid, ChoraleTokenizer, Jsb16thTokenizer

TINY = dict(num_layers=1, d_model=32, num_heads=2, d_ff=64, max_distance=16, dropout=0.0, attn_dropout=0.0)


def test_voice_index_follows_absolute_position():
    model = zoo.create_model("music_transformer_demo", num_voices=4, **TINY)
    tokens = torch.zeros(2, 6, dtype=torch.long)
    assert model.voice_index(tokens).tolist() == [[0, 1, 2, 3, 0, 1]] * 2  # BOS (0) predicts S (0)
    assert model.voice_index(tokens, start=torch.tensor([1, 6])).tolist() == [[1, 2, 3, 0, 1, 2], [2, 3, 0, 1, 2, 3]]


def test_cached_decoding_reads_the_phase_from_the_cache():
    """One cached step after 7 tokens equals position 7 of the full forward (its start is the cached length)."""
    torch.manual_seed(0)
    model = zoo.create_model("music_transformer_demo", num_voices=4, **TINY).eval()
    tokens = torch.randint(5, 133, (1, 13))
    with torch.no_grad():
        full = model(tokens)  # (1, 13, V)
        cache = model.new_cache()
        model(tokens[:, :7], cache=cache)
        step = model(tokens[:, 7:8], cache=cache)
        shifted = model(tokens[:, 7:8], start=8)  # a different phase gives different logits
    torch.testing.assert_close(step[:, 0], full[:, 7], rtol=1e-5, atol=1e-5)
    assert not torch.allclose(model(tokens[:, 7:8], start=7), shifted)


def test_voice_embedding_is_what_changes_with_the_phase():
    model = zoo.create_model("music_transformer_demo", num_voices=4, **TINY).eval()
    x = torch.randint(5, 133, (1, 8))
    assert not torch.allclose(model(x, start=0), model(x, start=1))
    plain = zoo.create_model("music_transformer_demo", num_voices=0, steps_per_bar=0, **TINY).eval()
    torch.testing.assert_close(plain(x, start=0), plain(x, start=1))  # no voice embedding: start is unused


@pytest.mark.parametrize("tokenizer", [ChoraleTokenizer(), Jsb16thTokenizer()], ids=["chorale", "jsb16th"])
def test_voice_token_mask(tokenizer):
    mask = tokenizer.voice_token_mask()
    assert mask.shape == (4, tokenizer.vocab_size)
    for v, (low, high) in enumerate(VOICE_RANGES):
        pitches = np.flatnonzero(mask[v, tokenizer.pitch_offset :])
        assert (pitches.min(), pitches.max()) == (low, high)
    assert mask[0, tokenizer.eos_id] and not mask[1:, tokenizer.eos_id].any()
    assert not mask[:, tokenizer.pad_id].any() and not mask[:, tokenizer.bos_id].any()


def test_constrained_decoding_keeps_every_voice_in_its_range():
    torch.manual_seed(0)
    model = zoo.create_model("music_transformer_demo", **TINY)  # untrained: unconstrained it goes anywhere
    tok = ChoraleTokenizer()
    allowed = torch.from_numpy(tok.voice_token_mask())
    out = model.generate(torch.tensor([[tok.bos_id]]), 200, allowed=allowed, eos_id=tok.eos_id,
                         generator=torch.Generator().manual_seed(0))[0].tolist()
    body = out[1:]
    for i, t in enumerate(body):
        assert allowed[i % 4, t], (i, t)
    free = model.generate(torch.tensor([[tok.bos_id]]), 200, generator=torch.Generator().manual_seed(0))[0, 1:]
    assert any(not allowed[i % 4, int(t)] for i, t in enumerate(free))
    with pytest.raises(ValueError, match="allowed must be"):
        model.generate(torch.tensor([[tok.bos_id]]), 2, allowed=torch.zeros(4, 133, dtype=torch.bool))


def _grid(rows: list[list[int]]) -> ChoraleGrid:
    return ChoraleGrid(np.array(rows), np.zeros((len(rows), 4), dtype=bool))  # onsets where the pitch changes


def test_stats_by_hand():
    step = 0.25
    c_major = [72, 67, 64, 48]
    held = _grid([c_major] * 8)  # one chord struck at step 0, held 8 steps
    stats = chorale_stats(held, step)
    assert stats["longest_chord_s"] == pytest.approx(8 * step)
    assert stats["out_of_range"] == 0 and stats["crossing"] == 0
    assert key_of(held.pitches) == (0, "major") and stats["in_key"] == 1.0
    # pitch classes C, G, E, C: histogram 2/4, 1/4, 1/4 -> 1.5 bits
    assert stats["pc_entropy"] == pytest.approx(1.5)

    # the bass in the soprano's register at every other step; the tenor above the alto once
    rows = [[72, 67, 64, 48], [72, 67, 64, 76], [72, 60, 64, 48], [72, 67, 64, 76]]
    stats = chorale_stats(_grid(rows), step)
    assert stats["out_of_range"] == 0.5  # steps 1 and 3: bass 76 > 69
    assert stats["crossing"] == 0.75  # B above T at steps 1 and 3, T above A at step 2; none at step 0


def test_repetition_and_summary():
    bar_a = [[72, 67, 64, 48]] * 16
    bar_b = [[74, 67, 62, 55]] * 16
    stats = chorale_stats(_grid(bar_a + bar_b + bar_a + bar_a), 0.1)
    assert stats["repetition"] == pytest.approx(2 / 4)
    summary = summarize([stats, {**stats, "longest_chord_s": 5.0, "out_of_range": 0.1}])
    assert summary["pieces"] == 2 and summary["pieces_frozen"] == 1 and summary["pieces_out_of_range"] == 1
    assert summary["max_longest_chord_s"] == 5.0
    with pytest.raises(ValueError, match="no time steps"):
        chorale_stats(ChoraleGrid(np.zeros((0, 4), dtype=int), np.zeros((0, 4), dtype=bool)), 0.1)


def test_metric_embedding_reads_the_step_within_the_bar():
    model = zoo.create_model("music_transformer_demo", num_voices=4, steps_per_bar=16, **TINY).eval()
    x = torch.randint(5, 133, (1, 4))
    # positions 0-3 and 64-67 share voice and bar phase (step 0 and step 16); 4-7 is step 1 of the bar
    torch.testing.assert_close(model(x, start=0)[:, 0], model(x, start=64)[:, 0])
    assert not torch.allclose(model(x, start=0)[:, 0], model(x, start=4)[:, 0])
    with pytest.raises(ValueError, match="needs num_voices"):
        zoo.create_model("music_transformer_demo", num_voices=0, steps_per_bar=16, **TINY)


def test_bounded_context_predicts_from_the_last_window_only():
    """``generate(context=W)``: within W tokens it is the cached decoding; beyond, each token comes from
    the last <= W tokens, the window starting on a time step (position 1 + 4k) with its absolute start."""
    torch.manual_seed(0)
    model = zoo.create_model("music_transformer_demo", num_voices=4, steps_per_bar=16, **TINY).eval()
    prompt = torch.randint(5, 133, (2, 3))
    greedy = dict(temperature=1e-6, top_k=1)
    full = model.generate(prompt, 9, **greedy)
    assert torch.equal(model.generate(prompt, 9, context=12, **greedy), full)  # never beyond the window
    out = model.generate(prompt, 20, context=10, **greedy)
    with torch.no_grad():
        for length in range(11, out.shape[1]):  # token ``length`` was predicted from a window
            first = length - 10
            first += (1 - first) % 4
            assert (first - 1) % 4 == 0 and length - first <= 10
            logits = model(out[:, first:length], start=first)[:, -1]
            assert torch.equal(logits.argmax(-1), out[:, length]), length
    with pytest.raises(ValueError, match="context must be >= 1"):
        model.generate(prompt, 2, context=0)
