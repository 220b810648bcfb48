"""Registry, pretrained directories and strict, safe checkpoint loading (zoo/hub/)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import torch
from torch import nn

import zoo
from zoo import hub
from zoo.hub import config as codec
from zoo.hub import registry

REPO = Path(__file__).resolve().parents[2]


@dataclass
class TinyConfig:
    vocab: int = 11
    dim: int = 8
    widths: tuple[int, ...] = (8,)
    tie: bool = True


class TinyNet(nn.Module):
    """Embedding -> MLP -> output projection, optionally tied to the embedding like an LM head."""

    def __init__(self, config: TinyConfig) -> None:
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.vocab, config.dim)
        dims = (config.dim, *config.widths, config.dim)
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.norm = nn.LayerNorm(config.dim)
        self.head = nn.Linear(config.dim, config.vocab, bias=False)
        if config.tie:
            self.head.weight = self.embed.weight
        self.register_buffer("scale", torch.tensor(0.5))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)  # (B, L, dim)
        for layer in self.layers:
            x = torch.relu(layer(x))
        return self.head(self.norm(x) * self.scale)  # (B, L, vocab)


@pytest.fixture
def tiny():
    """Register ``hubtest_tiny`` for one test; no domain package is imported."""

    @hub.register_model("hubtest_tiny", config_cls=TinyConfig, description="a tiny test network")
    def hubtest_tiny(pretrained: bool = False, **overrides) -> TinyNet:
        return TinyNet(replace(TinyConfig(), **overrides))

    yield hubtest_tiny
    registry._REGISTRY.pop("hubtest_tiny", None)


@pytest.fixture
def no_domains(monkeypatch):
    """Keep the domain packages (written elsewhere) out of tests that only exercise the registry."""
    monkeypatch.setattr(registry, "_MODEL_MODULES", ())


def _tokens() -> torch.Tensor:
    return torch.randint(0, 11, (2, 5))


# --------------------------------------------------------------------------------------------
# registry


def test_create_and_list(tiny, no_domains):
    model = zoo.create_model("hubtest_tiny", dim=6, widths=(6, 4))
    assert isinstance(model, TinyNet) and model.config.widths == (6, 4)
    assert zoo.list_models("hubtest_*") == ["hubtest_tiny"]
    assert zoo.list_models("nothing_like_this*") == []
    assert hub.model_entry("hubtest_tiny").description == "a tiny test network"


def test_unknown_model_suggests_close_matches(tiny, no_domains):
    with pytest.raises(ValueError, match=r"unknown model 'hubtest_tinny'.*did you mean hubtest_tiny"):
        zoo.create_model("hubtest_tinny")


def test_unknown_override_lists_fields(tiny, no_domains):
    with pytest.raises(ValueError, match=r"'widht'.*did you mean widths.*fields are: vocab, dim, widths, tie"):
        zoo.create_model("hubtest_tiny", widht=(3,))


def test_duplicate_and_bad_names_raise(tiny):
    with pytest.raises(ValueError, match="registered twice"):

        @hub.register_model("hubtest_tiny")
        def again(pretrained: bool = False, **overrides):
            return TinyNet(TinyConfig())

    with pytest.raises(ValueError, match="lowercase"):
        hub.register_model("Bad-Name")


def test_list_models_raises_for_unimportable_module(monkeypatch):
    monkeypatch.setattr(registry, "_MODEL_MODULES", ("zoo._no_such_domain",))
    with pytest.raises(ImportError, match=r"zoo\._no_such_domain"):
        zoo.list_models()


def test_import_zoo_is_light():
    code = (
        "import sys, zoo; heavy = [m for m in ('torch', 'pytorch_lightning') if m in sys.modules]; "
        "import zoo.hub; domains = [m for m in sys.modules if m.startswith(('zoo.music', 'zoo.vision'))]; "
        "print(heavy, domains)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[] []", out.stdout + out.stderr


# --------------------------------------------------------------------------------------------
# pretrained directories


def test_save_load_round_trip(tiny, no_domains, tmp_path):
    model = zoo.create_model("hubtest_tiny", widths=(8, 6)).eval()
    directory = zoo.save_pretrained(
        model, tmp_path / "run", name="hubtest_tiny", config=model.config, metadata={"val_loss": 0.25}
    )
    assert sorted(p.name for p in directory.iterdir()) == ["README.md", "config.json", "model.safetensors"]
    config = json.loads((directory / "config.json").read_text())
    assert config["model"] == "hubtest_tiny" and config["val_loss"] == 0.25
    assert config["config"] == {"vocab": 11, "dim": 8, "widths": [8, 6], "tie": True}
    assert config["zoo_version"] == zoo.__version__
    card = (directory / "README.md").read_text()
    assert "# hubtest_tiny" in card and f"{hub.count_parameters(model):,}" in card

    loaded = zoo.load_pretrained(directory).eval()
    assert loaded.config == model.config  # JSON lists are restored to the dataclass's tuples
    assert loaded.head.weight is loaded.embed.weight  # the tie lives in the model, not the file
    tokens = _tokens()
    torch.testing.assert_close(loaded(tokens), model(tokens), rtol=0, atol=0)


def test_save_pretrained_defaults_to_model_config_and_custom_card(tiny, no_domains, tmp_path):
    model = zoo.create_model("hubtest_tiny", dim=4, widths=(3,), tie=False)
    zoo.save_pretrained(model, tmp_path, name="hubtest_tiny", card="# my card")
    assert json.loads((tmp_path / "config.json").read_text())["config"]["widths"] == [3]
    assert (tmp_path / "README.md").read_text() == "# my card\n"
    assert zoo.load_pretrained(tmp_path).config == model.config


def test_pretrained_by_name_through_search_path(tiny, no_domains, tmp_path, monkeypatch):
    model = zoo.create_model("hubtest_tiny", widths=(5,)).eval()
    zoo.save_pretrained(model, tmp_path / "ckpts" / "hubtest_tiny", name="hubtest_tiny")
    monkeypatch.setenv("ZOO_CHECKPOINTS", f"{tmp_path / 'empty'}{os.pathsep}{tmp_path / 'ckpts'}")
    assert hub.checkpoint_dirs()[-1] == REPO / "checkpoints"
    tokens = _tokens()
    for loaded in (
        zoo.create_model("hubtest_tiny", pretrained=True),
        zoo.load_pretrained("hubtest_tiny"),
        tiny(pretrained=True),
    ):
        torch.testing.assert_close(loaded.eval()(tokens), model(tokens), rtol=0, atol=0)


def test_missing_pretrained_errors_name_the_path(tiny, no_domains, tmp_path, monkeypatch):
    monkeypatch.setenv("ZOO_CHECKPOINTS", str(tmp_path))
    with pytest.raises(ValueError, match=rf"no pretrained checkpoint for 'hubtest_tiny'.*{tmp_path}.*config.json"):
        zoo.create_model("hubtest_tiny", pretrained=True)
    with pytest.raises(ValueError, match=r"neither an existing directory nor a model name"):
        zoo.load_pretrained(tmp_path / "missing" / "dir")
    (tmp_path / "half").mkdir()
    with pytest.raises(ValueError, match=r"half is not a pretrained directory: config.json is missing"):
        zoo.load_pretrained(tmp_path / "half")
    zoo.save_pretrained(zoo.create_model("hubtest_tiny"), tmp_path / "noweights", name="hubtest_tiny")
    (tmp_path / "noweights" / "model.safetensors").unlink()
    with pytest.raises(ValueError, match=r"model.safetensors is missing"):
        zoo.load_pretrained(tmp_path / "noweights")


def test_pretrained_with_changed_architecture_fails_strictly(tiny, no_domains, tmp_path):
    zoo.save_pretrained(zoo.create_model("hubtest_tiny"), tmp_path, name="hubtest_tiny")
    config = json.loads((tmp_path / "config.json").read_text())
    config["config"]["widths"] = [8, 8]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(hub.CheckpointMismatchError, match=r"layers\.2\.weight"):
        zoo.load_pretrained(tmp_path)


def test_save_pretrained_rejects_non_json_config(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"config\.device: .*not JSON-serializable"):
        zoo.save_pretrained(
            zoo.create_model("hubtest_tiny"), tmp_path, name="hubtest_tiny", config={"device": object()}
        )


def test_count_parameters_counts_tied_weights_once(tiny, no_domains):
    tied = zoo.create_model("hubtest_tiny", tie=True)
    untied = zoo.create_model("hubtest_tiny", tie=False)
    assert hub.count_parameters(untied) - hub.count_parameters(tied) == 11 * 8


# --------------------------------------------------------------------------------------------
# strict loading


def test_strict_mismatch_lists_every_difference():
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Linear(16, 2))
    state = model.state_dict()
    state["0.weight"] = torch.zeros(8, 4)
    del state["2.bias"]
    state["3.weight"] = torch.zeros(1)
    with pytest.raises(hub.CheckpointMismatchError) as info:
        hub.load_state_dict_strict(model, state, source="demo.safetensors")
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert message.splitlines() == [
        "checkpoint demo.safetensors does not match Sequential:",
        "  1 missing key (in the model, not in the checkpoint):",
        "    2.bias",
        "  1 unexpected key (in the checkpoint, not in the model):",
        "    3.weight",
        "  1 shape mismatch:",
        "    0.weight: checkpoint (8, 4) vs model (16, 4)",
    ]


def test_strict_mismatch_truncates_long_lists():
    model = nn.Linear(2, 2)
    state = {**model.state_dict(), **{f"extra.{i:02d}": torch.zeros(1) for i in range(40)}}
    with pytest.raises(hub.CheckpointMismatchError) as info:
        hub.load_state_dict_strict(model, state, source="big.ckpt")
    lines = str(info.value).splitlines()
    assert lines[1] == "  40 unexpected keys (in the checkpoint, not in the model):"
    assert lines[2] == "    extra.00" and lines[-1] == "    ... and 15 more"


def test_non_strict_still_reports(recwarn):
    model = nn.Linear(2, 2)
    hub.load_state_dict_strict(model, {"weight": torch.ones(2, 2)}, source="partial.pt", strict=False)
    assert torch.equal(model.weight, torch.ones(2, 2))
    assert "1 missing key" in str(recwarn.pop(UserWarning).message)
    with pytest.raises(hub.CheckpointMismatchError, match="shape mismatch"):
        hub.load_state_dict_strict(model, {"weight": torch.ones(3, 2)}, source="bad.pt", strict=False)


# --------------------------------------------------------------------------------------------
# checkpoint files


class _Payload:
    """Unpickling this calls ``open(marker, "w")``: a stand-in for arbitrary code execution."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


@pytest.mark.parametrize("suffix", [".ckpt", ".pth", ".pt", ".bin"])
def test_malicious_pickle_is_refused_without_running(tmp_path, suffix):
    marker = tmp_path / "pwned"
    path = tmp_path / f"evil{suffix}"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "payload": _Payload(marker)}, path)
    with pytest.raises(ValueError, match=rf"evil\{suffix}: refused by torch\.load\(weights_only=True\)"):
        hub.load_checkpoint_file(path)
    with pytest.raises(ValueError, match="refused"):
        hub.load_weights_into(nn.Linear(1, 1), path)
    assert not marker.exists()
    # the payload is real: an unsafe unpickler does run it
    torch.load(path, weights_only=False)
    assert marker.exists()


def test_checkpoint_file_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        hub.load_checkpoint_file(tmp_path / "nope.safetensors")
    (tmp_path / "w.npz").write_bytes(b"x")
    with pytest.raises(ValueError, match=r"w\.npz: unknown format '\.npz'"):
        hub.load_checkpoint_file(tmp_path / "w.npz")
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(ValueError, match=r"bad\.safetensors: not a readable safetensors file"):
        hub.load_checkpoint_file(tmp_path / "bad.safetensors")
    torch.save([torch.zeros(1)], tmp_path / "list.pt")
    with pytest.raises(ValueError, match=r"list\.pt: expected a state dict"):
        hub.load_checkpoint_file(tmp_path / "list.pt")


def _lightning_ckpt(path: Path, model: nn.Module, extra: dict | None = None) -> Path:
    state = {f"model.{k}": v for k, v in model.state_dict().items()}
    torch.save(
        {
            "epoch": 3,
            "global_step": 120,
            "pytorch-lightning_version": "2.6.0",
            "state_dict": {**state, **(extra or {})},
            "optimizer_states": [{"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]}],
            "hyper_parameters": {"lr": 0.1, "init_from": None},
        },
        path,
    )
    return path


def test_lightning_ckpt_loads_with_model_prefix(tmp_path):
    source = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    path = _lightning_ckpt(tmp_path / "last.ckpt", source)
    assert sorted(hub.load_checkpoint_file(path)) == [
        "model.0.bias",
        "model.0.weight",
        "model.2.bias",
        "model.2.weight",
    ]
    target = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2))
    hub.load_weights_into(target, path)  # the shared "model." prefix is detected
    for a, b in zip(source.parameters(), target.parameters()):
        assert torch.equal(a, b)

    other = _lightning_ckpt(tmp_path / "other.ckpt", source, extra={"criterion.weight": torch.ones(2)})
    with pytest.raises(hub.CheckpointMismatchError, match=r"(?s)unexpected keys.*pass prefix='model.'"):
        hub.load_weights_into(target, other)
    hub.load_weights_into(target, other, prefix="model")
    with pytest.raises(ValueError, match="no key starts with prefix 'net.'"):
        hub.load_weights_into(target, other, prefix="net.")


def test_load_weights_into_accepts_dir_file_and_name(tiny, no_domains, tmp_path, monkeypatch):
    model = zoo.create_model("hubtest_tiny")
    zoo.save_pretrained(model, tmp_path / "hubtest_tiny", name="hubtest_tiny")
    monkeypatch.setenv("ZOO_CHECKPOINTS", str(tmp_path))
    for source in (tmp_path / "hubtest_tiny", tmp_path / "hubtest_tiny" / "model.safetensors", "hubtest_tiny"):
        fresh = zoo.create_model("hubtest_tiny")
        hub.load_weights_into(fresh, source)
        assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), fresh.state_dict().values()))
    with pytest.raises(hub.CheckpointMismatchError, match=r"embed\.weight: checkpoint \(11, 8\) vs model \(11, 4\)"):
        hub.load_weights_into(zoo.create_model("hubtest_tiny", dim=4, widths=(4,)), tmp_path / "hubtest_tiny")
    with pytest.raises(ValueError, match="expected model.safetensors"):
        hub.load_weights_into(model, tmp_path)
    with pytest.raises(ValueError, match="not an existing file or directory"):
        hub.load_weights_into(model, str(tmp_path / "nothing.ckpt"))


def test_pickle_module_is_not_needed_for_safetensors(tiny, no_domains, tmp_path, monkeypatch):
    """Loading a pretrained directory never unpickles: poison pickle.loads and load anyway."""
    zoo.save_pretrained(zoo.create_model("hubtest_tiny"), tmp_path, name="hubtest_tiny")

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used while loading safetensors")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "Unpickler", forbidden)
    zoo.load_pretrained(tmp_path)


@dataclass
class _Inner:
    sizes: tuple[int, int] = (1, 2)


@dataclass
class _Outer:
    inner: _Inner
    grid: tuple[tuple[int, int], ...] | None = None
    names: list[str] | None = None


def test_json_config_restores_tuples_and_nested_dataclasses():
    config = _Outer(inner=_Inner((3, 4)), grid=((1, 2), (3, 4)), names=["a"])
    as_json = json.loads(json.dumps(codec.to_jsonable(config, "config")))
    assert as_json == {"inner": {"sizes": [3, 4]}, "grid": [[1, 2], [3, 4]], "names": ["a"]}
    assert codec.dataclass_from_dict(_Outer, as_json) == config


def test_reimport_of_the_same_definition_is_not_a_clash(no_domains):
    def build(pretrained: bool = False, **overrides) -> TinyNet:
        return TinyNet(replace(TinyConfig(), **overrides))

    try:
        hub.register_model("hubtest_again", config_cls=TinyConfig)(build)
        hub.register_model("hubtest_again", config_cls=TinyConfig)(build)  # same module and qualname
        assert isinstance(zoo.create_model("hubtest_again"), TinyNet)
    finally:
        registry._REGISTRY.pop("hubtest_again", None)
