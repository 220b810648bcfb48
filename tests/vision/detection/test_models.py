"""Plain-DETR model tests: output contract, hybrid-group isolation, float64, SwinV2 padding, parameter count."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.hub import count_parameters, model_entry
from zoo.vision.detection.models import _images
from zoo.vision.detection.models.swin import SwinTransformerV2

TINY = model_entry("plain_detr_demo").test_overrides


def _tiny(**kw):
    torch.manual_seed(0)
    return zoo.create_model("plain_detr_demo", **{**TINY, **kw})


def test_output_contract_train_and_eval():
    model = _tiny()
    (images, mask), _ = _images(model)
    out = model.train()(images, mask)
    assert out["pred_logits"].shape == (2, 5, 3) and out["pred_boxes"].shape == (2, 5, 4)
    assert out["pred_logits_one2many"].shape == (2, 10, 3) and out["pred_boxes_one2many"].shape == (2, 10, 4)
    assert len(out["aux_outputs"]) == len(out["aux_outputs_one2many"]) == 1
    assert set(out["enc_outputs"]) == {"pred_logits", "pred_boxes"}
    with torch.no_grad():
        ev = model.eval()(images, mask)
    assert "pred_logits_one2many" not in ev and ev["pred_boxes"].shape == (2, 5, 4)
    assert ((ev["pred_boxes"] >= 0) & (ev["pred_boxes"] <= 1)).all()
    attn = model.cross_attention_map(images, mask)
    assert attn.shape[:3] == (2, 2, 5)
    torch.testing.assert_close(attn.sum((-1, -2)), torch.ones(2, 2, 5))


def test_one_to_many_queries_do_not_change_one_to_one_outputs():
    model = _tiny(two_stage=False, mixed_selection=False).train()
    (images, mask), _ = _images(model)
    a = model(images, mask)
    with torch.no_grad():
        model.query_embed.weight[5:] += 1.0  # the one-to-many group only
    b = model(images, mask)
    torch.testing.assert_close(b["pred_logits"], a["pred_logits"])
    torch.testing.assert_close(b["pred_boxes"], a["pred_boxes"])
    assert not torch.allclose(b["pred_logits_one2many"], a["pred_logits_one2many"])


@pytest.mark.parametrize("use_boxrpb", [True, False])
def test_float64_and_backends_agree(use_boxrpb):
    model = _tiny(use_boxrpb=use_boxrpb).double().eval()
    fast = _tiny(use_boxrpb=use_boxrpb, attention_backend="sdpa").double().eval()
    fast.load_state_dict(model.state_dict())
    (images, mask), _ = _images(model)
    with torch.no_grad():
        a, b = model(images.double(), mask), fast(images.double(), mask)
    assert a["pred_boxes"].dtype == torch.float64
    torch.testing.assert_close(b["pred_boxes"], a["pred_boxes"])
    torch.testing.assert_close(b["pred_logits"], a["pred_logits"])


def test_swin_backbone_pads_to_the_window():
    net = SwinTransformerV2(embed_dim=8, depths=(2, 2, 2, 2), num_heads=(1, 1, 2, 2), window_size=4,
                            pretrained_window_sizes=(4, 4, 4, 2), drop_path_rate=0.0).double()
    x = torch.randn(1, 3, 52, 84, dtype=torch.float64)  # stage maps 13x21, 7x11, 4x6, 2x3: none a window multiple
    out = net(x)[3]
    assert out.shape == (1, 64, 2, 3) and torch.isfinite(out).all()


@pytest.mark.parametrize("name,official", [("plain_detr_swinv2_s_boxrpb", 62_712_275),
                                           ("plain_detr_swinv2_s_ape", 62_644_691)])
def test_parameter_count_matches_the_official_build(name, official):
    """Counted by building impiga/Plain-DETR's own code on CPU from its released configs."""
    with torch.device("meta"):
        model = zoo.create_model(name)
    assert count_parameters(model) == official


def test_bad_input_is_a_clear_error():
    model = _tiny()
    with pytest.raises(ValueError, match=r"images must have shape \(B, 3, H, W\)"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match="pad_mask must be a bool tensor"):
        model(torch.randn(2, 3, 32, 32), torch.zeros(2, 32, 32))
