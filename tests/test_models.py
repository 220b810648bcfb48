"""Every registered model: build, forward, backward, and a save_pretrained/load_pretrained round trip.

Driven by the registry: a model file registers its variants with ``zoo.hub.register_model(...,
test_overrides=..., test_input=...)`` and gets these tests. ``test_overrides`` shrink the model;
``test_input(model) -> (args, kwargs)`` builds a tiny input for ``model(*args, **kwargs)``.
Models above ``MAX_PARAMS`` without ``test_overrides`` are skipped (with the reason shown).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import Tensor, nn

import zoo
from zoo import hub
from zoo.hub import registry

MAX_PARAMS = 30_000_000

try:
    MODEL_NAMES = zoo.list_models()
    REGISTRY_ERROR: ImportError | None = None
except ImportError as err:  # fail in test_model_modules_import, and still test what did register
    MODEL_NAMES = sorted(registry._REGISTRY)
    REGISTRY_ERROR = err


def test_model_modules_import():
    """Every module of zoo.hub._MODEL_MODULES imports and registers at least one model."""
    if REGISTRY_ERROR is not None:
        pytest.fail(str(REGISTRY_ERROR), pytrace=False)
    for module in registry._MODEL_MODULES:
        owned = [n for n in MODEL_NAMES if hub.model_entry(n).module.startswith(module)]
        assert owned, f"importing {module} registered no model"


def _tensors(out: Any) -> list[Tensor]:
    """Floating-point tensors of a model output (tensor, tuple/list, dict or dataclass-like)."""
    if isinstance(out, Tensor):
        return [out] if out.is_floating_point() or out.is_complex() else []
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _tensors(v)]
    if hasattr(out, "__dict__"):
        return [t for v in vars(out).values() for t in _tensors(v)]
    return []


def _build(name: str) -> tuple[hub.ModelEntry, dict[str, Any], nn.Module]:
    entry = hub.model_entry(name)
    if entry.test_input is None:
        pytest.fail(
            f"{name}: register_model(..., test_input=lambda model: ((args...), {{kwargs}})) is missing, "
            "so the registry tests cannot run it",
            pytrace=False,
        )
    overrides = dict(entry.test_overrides or {})
    if not overrides:
        try:
            with torch.device("meta"):  # count without allocating
                size = hub.count_parameters(hub.create_model(name))
        except Exception:  # constructors that read tensor values (e.g. .item()) cannot run on meta
            size = hub.count_parameters(hub.create_model(name))
        if size > MAX_PARAMS:
            pytest.skip(f"{name}: {size:,} parameters > {MAX_PARAMS:,} and no test_overrides registered")
    model = hub.create_model(name, **overrides)
    size = hub.count_parameters(model)
    assert size <= MAX_PARAMS, f"{name}: test_overrides {overrides} still give {size:,} parameters"
    return entry, overrides, model


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_backward(name):
    entry, _, model = _build(name)
    model.train()
    args, kwargs = entry.test_input(model)
    outputs = _tensors(model(*args, **kwargs))
    assert outputs, f"{name}: the forward pass returned no floating-point tensor"
    for i, out in enumerate(outputs):
        assert torch.isfinite(out).all(), f"{name}: output {i} {tuple(out.shape)} has non-finite values"
    # a random projection of every output, so that no parameter's gradient cancels by symmetry
    loss = sum((out.float() * torch.randn_like(out.float())).mean() for out in outputs)
    loss.backward()
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    no_grad = [n for n, p in trainable if p.grad is None]
    assert not no_grad, f"{name}: {len(no_grad)} of {len(trainable)} parameters got no gradient: {no_grad[:10]}"
    bad = [n for n, p in trainable if not torch.isfinite(p.grad).all()]
    assert not bad, f"{name}: non-finite gradients in {bad[:10]}"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_save_load_round_trip(name, tmp_path):
    entry, overrides, model = _build(name)
    model.eval()
    args, kwargs = entry.test_input(model)
    zoo.save_pretrained(model, tmp_path, name=name, config=overrides)
    loaded = zoo.load_pretrained(tmp_path).eval()
    assert type(loaded) is type(model)
    with torch.no_grad():
        expected, got = _tensors(model(*args, **kwargs)), _tensors(loaded(*args, **kwargs))
    assert len(expected) == len(got)
    for a, b in zip(expected, got):
        torch.testing.assert_close(b, a, rtol=0, atol=0)
