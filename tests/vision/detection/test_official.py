"""The official-checkpoint converter on a state dict in impiga/Plain-DETR's key layout.

The layout (written from reading the official code, and checked offline against the key list of the
official model built on CPU): ``backbone.0.net.body.`` SwinV2 with ``attn.cpb_mlp`` and the persistent
``relative_coords_table`` / ``relative_position_index`` buffers, ``backbone.0.upsample.0.``,
``input_proj.0.``, ``transformer.`` (decoder layers with ``self_attn.in_proj_*``, ``cross_attn.{q,k,v,proj}``,
``cpb_mlp1`` / ``cpb_mlp2``), and the heads twice (also under ``transformer.decoder.``).
"""

from __future__ import annotations

import argparse

import pytest
import torch

import zoo
from zoo.hub import model_entry
from zoo.hub.checkpoints import CheckpointMismatchError

TINY = model_entry("plain_detr_demo").test_overrides


def _official_layout(model) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    sd = model.state_dict()
    for key, value in sd.items():
        v = value.clone()
        if key.startswith("backbone."):
            new = "backbone.0.net.body." + key[len("backbone."):].replace(".attn.rel_pos.cpb_mlp.", ".attn.cpb_mlp.")
        elif key.startswith("upsample."):
            new = "backbone.0.upsample.0." + key[len("upsample."):]
        elif key.startswith("input_proj."):
            new = "input_proj.0." + key[len("input_proj."):]
        elif key.startswith("final_norm."):
            new = "transformer.decoder.final_layer_norm." + key[len("final_norm."):]
        elif key.startswith("layers."):
            new = "transformer.decoder." + key
            for ours, theirs in ((".cross_attn.position.0.cpb_mlp_x.", ".cross_attn.cpb_mlp1."),
                                 (".cross_attn.position.0.cpb_mlp_y.", ".cross_attn.cpb_mlp2."),
                                 (".cross_attn.q_proj.", ".cross_attn.q."), (".cross_attn.k_proj.", ".cross_attn.k."),
                                 (".cross_attn.v_proj.", ".cross_attn.v."), (".cross_attn.out_proj.", ".cross_attn.proj.")):
                new = new.replace(ours, theirs)
            if ".self_attn." in new and ".out_proj." not in new:
                continue  # packed below
        elif key.startswith(("class_embed.", "bbox_embed.", "query_embed.")):
            new = key
            if not key.startswith("query_embed."):
                out["transformer.decoder." + key] = v
        else:
            new = "transformer." + key
        out[new] = v
    for i in range(len(model.layers)):
        p = f"layers.{i}.self_attn."
        out[f"transformer.decoder.{p}in_proj_weight"] = torch.cat([sd[p + n + ".weight"] for n in ("q_proj", "k_proj", "v_proj")])
        out[f"transformer.decoder.{p}in_proj_bias"] = torch.cat([sd[p + n + ".bias"] for n in ("q_proj", "k_proj", "v_proj")])
    out["backbone.0.net.body.layers.0.blocks.0.attn.relative_position_index"] = torch.zeros(16, 16, dtype=torch.long)
    out["backbone.0.net.body.layers.0.blocks.0.attn.relative_coords_table"] = torch.zeros(1, 7, 7, 2)
    return out


def _save(tmp_path, state_dict):
    path = tmp_path / "plaindetr_swinv2_small_sup_pt_boxrpe.pth"
    torch.save({"model": state_dict, "optimizer": {}, "lr_scheduler": {}, "epoch": 11,
                "args": argparse.Namespace(two_stage=True, num_queries_one2one=300)}, path)
    return path


def test_load_official_round_trip(tmp_path):
    torch.manual_seed(0)
    src = zoo.create_model("plain_detr_demo", **TINY).eval()
    path = _save(tmp_path, _official_layout(src))
    loaded = zoo.load_official("plain_detr_demo", path, **TINY).eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = src(images), loaded(images)
    torch.testing.assert_close(b["pred_boxes"], a["pred_boxes"], rtol=0, atol=0)


def test_missing_extra_and_inconsistent_keys_are_readable_errors(tmp_path):
    src = zoo.create_model("plain_detr_demo", **TINY)
    sd = _official_layout(src)
    del sd["transformer.decoder.layers.0.cross_attn.cpb_mlp1.0.weight"]
    sd["transformer.extra.weight"] = torch.zeros(3)
    with pytest.raises(CheckpointMismatchError, match=r"(?s)cross_attn\.position\.0\.cpb_mlp_x\.0\.weight.*extra\.weight"):
        zoo.load_official("plain_detr_demo", _save(tmp_path, sd), **TINY)
    sd = _official_layout(src)
    sd["transformer.decoder.class_embed.0.bias"] = sd["transformer.decoder.class_embed.0.bias"] + 1
    with pytest.raises(ValueError, match="shares these heads"):
        zoo.load_official("plain_detr_demo", _save(tmp_path, sd), **TINY)
