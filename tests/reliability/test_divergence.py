"""Kind 2: divergence stops the run naming the step and never becomes a checkpoint; weights holding
NaN/inf, or integers where the model has floats, are refused when loaded (with an explicit opt-out)."""

from __future__ import annotations

import re

import pytest
import torch
from torch import nn

import zoo
from zoo._testing import cli_main
from zoo.hub import CheckpointMismatchError, load_state_dict_strict
from zoo.training.callbacks import DivergenceError


@pytest.mark.parametrize("lr", [1e25, 1e35])
def test_absurd_learning_rate_stops_with_the_step(tmp_path, lr):
    args = [
        "fit", "--model", "zoo._testing.TinyRegressor", "--model.init_args.lr", str(lr),
        "--data", "zoo._testing.TinyRegressionData", "--trainer.max_steps", "30", "--trainer.val_check_interval", "2",
        "--trainer.enable_progress_bar", "false", "--trainer.default_root_dir", str(tmp_path / "runs"),
    ]
    with pytest.raises(DivergenceError, match=r"non-finite .* (at|after) step \d+"):
        cli_main(args)
    checkpoints = list((tmp_path / "runs").rglob("*.ckpt"))
    assert not [c for c in checkpoints if c.name.startswith("best")] or all(
        torch.isfinite(t).all() for c in checkpoints for t in torch.load(c, weights_only=True)["state_dict"].values()
    )
    for c in checkpoints:  # whatever was saved before the divergence is finite
        assert all(torch.isfinite(t).all() for t in torch.load(c, weights_only=True)["state_dict"].values()), c


CORRUPTIONS = {
    "nan": lambda t: t.index_fill(0, torch.tensor([0]), float("nan")),
    "+inf": lambda t: torch.full_like(t, float("inf")),
    "-inf": lambda t: t.index_fill(0, torch.tensor([0]), float("-inf")),
    "int64": lambda t: t.round().to(torch.int64),
    "bool": lambda t: t > 0,
}


@pytest.mark.parametrize("kind", list(CORRUPTIONS))
@pytest.mark.parametrize("key", ["0.weight", "2.bias"])
def test_loading_bad_values_names_the_file_and_the_key(kind, key, tmp_path):
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    state = dict(net.state_dict())
    state[key] = CORRUPTIONS[kind](state[key])
    pattern = r"(?s)weights\.safetensors.*" + re.escape(key)
    with pytest.raises(CheckpointMismatchError, match=pattern):
        load_state_dict_strict(net, state, source="weights.safetensors")
    if kind in ("nan", "+inf", "-inf"):
        load_state_dict_strict(net, state, source="weights.safetensors", allow_nonfinite=True)  # the opt-out
        assert not torch.isfinite(dict(net.state_dict())[key]).all()


def test_pretrained_directory_with_nan_is_refused(tmp_path):
    model = zoo.create_model("music_transformer_demo", **zoo.hub.model_entry("music_transformer_demo").test_overrides)
    with torch.no_grad():
        model.norm.weight[0] = float("nan")
    zoo.save_pretrained(model, tmp_path, name="music_transformer_demo", config=zoo.hub.model_entry("music_transformer_demo").test_overrides)
    with pytest.raises(CheckpointMismatchError, match=r"(?s)model\.safetensors.*norm\.weight: 1 of"):
        zoo.load_pretrained(tmp_path)
