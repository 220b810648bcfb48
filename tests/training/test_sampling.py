"""The one next-token sampler: temperature, top-k, and the nucleus rule at its boundary."""

import pytest
import torch

from zoo.training.sampling import sample_next


def _support(logits: torch.Tensor, n: int = 400, **kwargs) -> set[int]:
    gen = torch.Generator().manual_seed(0)
    return {int(sample_next(logits, generator=gen, **kwargs)[0]) for _ in range(n)}


def test_nucleus_boundary_keeps_the_token_that_reaches_top_p():
    probs = torch.tensor([[0.5, 0.3, 0.2]])
    logits = probs.log()
    # mass before token 1 is 0.5 < 0.8: kept; before token 2 it is 0.8 >= 0.8: dropped
    assert _support(logits, top_p=0.8) == {0, 1}
    assert _support(logits, top_p=0.81) == {0, 1, 2}
    assert _support(logits, top_p=0.5) == {0}  # exactly at the first token's mass: only it
    assert _support(logits, top_p=1e-6) == {0}  # the most likely token always stays


def test_top_k_temperature_greedy_and_forbid():
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0]])
    assert _support(logits, top_k=2) == {1, 3}
    assert int(sample_next(logits, temperature=0)[0]) == 1
    assert int(sample_next(logits, temperature=0, forbid=(1,))[0]) == 3
    assert 1 not in _support(logits, forbid=(1,))


@pytest.mark.parametrize(
    "kwargs, match", [({"temperature": -1}, "temperature"), ({"top_k": 0}, "top_k"), ({"top_p": 0}, "top_p"), ({"top_p": 1.5}, "top_p")]
)
def test_bad_settings_name_the_argument(kwargs, match):
    with pytest.raises(ValueError, match=match):
        sample_next(torch.zeros(1, 3), **kwargs)


def test_every_generator_uses_it():
    """The Music Transformer and RIPO sample through this function (no second nucleus rule)."""
    import inspect

    from zoo.music.lm.models import music_transformer
    from zoo.music.melody.models import ripo

    for module in (music_transformer, ripo):
        source = inspect.getsource(module)
        assert "sample_next(" in source and ".cumsum(-1)" not in source and "top_p:" not in source.split("def generate")[0], module.__name__
