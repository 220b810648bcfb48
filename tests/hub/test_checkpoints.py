"""Official checkpoint files: pickled configs load through an allowlist, never by running code."""

from __future__ import annotations

import argparse
import pickle
import sys
import types

import pytest
import torch

from zoo.hub import read_official_file


def _save_with_fake_yacs(obj, path):
    """Pickle ``obj`` while a module named ``yacs.config`` with a ``CfgNode`` exists, as the official
    CrossFormer training script does; the module is gone again when the file is read."""
    yacs, config = types.ModuleType("yacs"), types.ModuleType("yacs.config")

    class CfgNode(dict):
        pass

    CfgNode.__module__, CfgNode.__qualname__ = "yacs.config", "CfgNode"
    config.CfgNode = CfgNode
    sys.modules["yacs"], sys.modules["yacs.config"] = yacs, config
    try:
        torch.save(obj(CfgNode), path)
    finally:
        del sys.modules["yacs"], sys.modules["yacs.config"]


def test_namespace_and_cfgnode_load_as_inert_data(tmp_path):
    weights = {"w": torch.arange(3.0)}
    torch.save({"state_dict": weights, "args": argparse.Namespace(lr=0.1, depth=2)}, tmp_path / "ns.pth")
    assert torch.equal(read_official_file(tmp_path / "ns.pth")["w"], weights["w"])

    def make(cfg_cls):
        cfg = cfg_cls(MODEL=cfg_cls(TYPE="cross-scale"), TRAIN={"EPOCHS": 300})
        return {"model": weights, "config": cfg, "epoch": 299}

    _save_with_fake_yacs(make, tmp_path / "yacs.pth")
    assert "yacs" not in sys.modules
    assert torch.equal(read_official_file(tmp_path / "yacs.pth")["w"], weights["w"])


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_anything_else_is_refused_without_running(tmp_path, capsys):
    with open(tmp_path / "evil.pth", "wb") as f:
        pickle.dump({"model": {"w": torch.zeros(1)}, "config": _Payload()}, f)
    with pytest.raises(ValueError, match=r"evil\.pth: refused by torch\.load\(weights_only=True\)"):
        read_official_file(tmp_path / "evil.pth")
    assert "must never run" not in capsys.readouterr().out


def test_wrappers_and_ddp_prefix_are_unwrapped(tmp_path):
    torch.save({"model": {"module.a": torch.ones(1), "module.b": torch.zeros(2)}, "optimizer": {}}, tmp_path / "ddp.pth")
    assert sorted(read_official_file(tmp_path / "ddp.pth")) == ["a", "b"]
    torch.save({"epoch": 3, "note": "no weights"}, tmp_path / "none.pth")
    with pytest.raises(ValueError, match=r"none\.pth: expected a state dict"):
        read_official_file(tmp_path / "none.pth")


def test_mismatch_report_is_one_line_per_kind_of_tensor():
    """Another depth and width: one line per tensor kind (layer indices folded), a whole missing layer as one line."""
    from torch import nn

    from zoo.hub.checkpoints import CheckpointMismatchError, load_state_dict_strict

    def net(width: int, depth: int) -> nn.Module:
        return nn.Sequential(*[nn.Sequential(nn.Linear(width, width), nn.LayerNorm(width)) for _ in range(depth)])

    with pytest.raises(CheckpointMismatchError) as err:
        load_state_dict_strict(net(8, 6), net(4, 3).state_dict(), source="small.safetensors")
    report = str(err.value).splitlines()
    assert report == [
        "checkpoint small.safetensors does not match Sequential:",
        "  12 missing keys (in the model, not in the checkpoint):",
        "    {3-5}.* (4 keys)",
        "  12 shape mismatches:",
        "    {0-2}.0.bias: checkpoint (4,) vs model (8,)",
        "    {0-2}.0.weight: checkpoint (4, 4) vs model (8, 8)",
        "    {0-2}.1.bias: checkpoint (4,) vs model (8,)",
        "    {0-2}.1.weight: checkpoint (4,) vs model (8,)",
    ]
