"""``register_family``: one call registers every variant of a family, with its generation and
official-checkpoint hooks; the config codec never saves runtime fields and still reads old names."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import zoo
from zoo.hub import config as codec
from zoo.hub import register_family, registry


@dataclass(frozen=True)
class FamCfg:
    width: int = 4
    depth: int = 1
    attention_backend: str = "auto"


class FamNet(nn.Module):
    def __init__(self, config: FamCfg) -> None:
        super().__init__()
        self.config = config
        self.layers = nn.Sequential(*[nn.Linear(config.width, config.width) for _ in range(config.depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


@pytest.fixture
def family(monkeypatch):
    monkeypatch.setattr(registry, "_MODEL_MODULES", ())
    names = {"famtest_small": FamCfg(4, 1), "famtest_big": FamCfg(8, 3)}
    register_family(
        names, FamNet, description={"famtest_small": "small", "famtest_big": "big"},
        test_overrides=dict(width=2), official=lambda sd, model: {k.replace("blocks.", "layers."): v for k, v in sd.items()},
    )
    yield names
    for name in names:
        registry._REGISTRY.pop(name, None)


def test_family_registers_every_variant_as_data(family):
    assert zoo.list_models("famtest_*") == ["famtest_big", "famtest_small"]
    big = zoo.create_model("famtest_big", depth=2)
    assert isinstance(big, FamNet) and big.config == FamCfg(8, 2)
    entry = registry.model_entry("famtest_small")
    assert entry.description == "small" and entry.config == FamCfg(4, 1) and entry.test_overrides == {"width": 2}
    assert entry.module == FamNet.__module__
    with pytest.raises(ValueError, match=r"'widht'.*did you mean width"):
        zoo.create_model("famtest_small", widht=3)


def test_family_registration_is_checked(family):
    with pytest.raises(ValueError, match="no description"):
        register_family({"famtest_other": FamCfg()}, FamNet, description={"famtest_small": "x"})
    with pytest.raises(ValueError, match="config dataclass instance"):
        register_family({"famtest_other": {"width": 3}}, FamNet)
    with pytest.raises(ValueError, match="registered twice"):
        register_family({"famtest_small": FamCfg()}, nn.Linear)
    register_family(family, FamNet, description={"famtest_small": "small", "famtest_big": "big"})  # a re-import


def test_runtime_fields_are_never_saved_and_old_names_are_read(family, tmp_path):
    model = zoo.create_model("famtest_small", attention_backend="reference")
    zoo.save_pretrained(model, tmp_path, name="famtest_small")
    saved = json.loads((tmp_path / "config.json").read_text())["config"]
    assert "attention_backend" not in saved and saved == {"width": 4, "depth": 1}
    assert zoo.load_pretrained(tmp_path).config.attention_backend == "auto"
    assert zoo.load_pretrained(tmp_path, attention_backend="sdpa").config.attention_backend == "sdpa"
    assert codec.restore_config(FamCfg, {"backend": "sdpa", "width": 3}) == {"width": 3}


def test_pretrained_of_another_family_is_refused(family, tmp_path, monkeypatch):
    zoo.save_pretrained(zoo.create_model("famtest_big"), tmp_path / "famtest_small", name="famtest_big")
    monkeypatch.setenv("ZOO_CHECKPOINTS", str(tmp_path))
    with pytest.raises(ValueError, match="holds weights of 'famtest_big', not of the requested 'famtest_small'"):
        zoo.create_model("famtest_small", pretrained=True)


def test_load_official_goes_through_the_converter_and_the_strict_filter(family, tmp_path):
    source = FamNet(FamCfg(8, 3))
    official = {k.replace("layers.", "blocks."): v for k, v in source.state_dict().items()}
    torch.save({"model": official, "epoch": 7}, tmp_path / "official.pth")
    model = zoo.load_official("famtest_big", tmp_path / "official.pth")
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), source.state_dict().values()))
    torch.save({"model": {**official, "blocks.9.weight": torch.zeros(1)}}, tmp_path / "extra.pth")
    with pytest.raises(zoo.hub.CheckpointMismatchError, match=r"unexpected key.*\n.*layers\.9\.weight"):
        zoo.load_official("famtest_big", tmp_path / "extra.pth")
    with pytest.raises(zoo.hub.CheckpointMismatchError, match=r"layers\.\{0-2\}\.weight: checkpoint \(8, 8\) vs model \(4, 4\)"):
        zoo.load_official("famtest_big", tmp_path / "official.pth", width=4)
    with pytest.raises(ValueError, match="registers no official-checkpoint converter"):
        register_family({"famtest_plain": FamCfg()}, FamNet)
        try:
            zoo.load_official("famtest_plain", tmp_path / "official.pth")
        finally:
            registry._REGISTRY.pop("famtest_plain", None)
