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
    # "reference" materializes BoxRPB's bias; "sdpa" (also what "auto" picks, on CPU too) its feature columns
    model = _tiny(use_boxrpb=use_boxrpb, attention_backend="reference").double().eval()
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


def test_bad_dtype_and_pad_layout_are_clear_errors():
    model = _tiny()
    with pytest.raises(ValueError, match=r"images are torch.float64 but the model's weights are torch.float32"):
        model(torch.randn(1, 3, 64, 64, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"images are torch.uint8"):
        model(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    holes = torch.zeros(2, 64, 64, dtype=torch.bool)
    holes[1, 10:20, 10:20] = True  # padding inside the image, not right / below it
    with pytest.raises(ValueError, match=r"pad_mask of image\(s\) \[1\] is not a padded layout"):
        model(torch.randn(2, 3, 64, 64), holes)
    with pytest.raises(ValueError, match=r"image\(s\) \[0\]"):
        model(torch.randn(1, 3, 64, 64), torch.ones(1, 64, 64, dtype=torch.bool))  # nothing left of the image


def test_cross_attention_map_layer_out_of_range():
    model = _tiny()
    with pytest.raises(ValueError, match=r"layer must be in \[-2, 1\] \(2 decoder layers\), got 2"):
        model.cross_attention_map(torch.randn(1, 3, 64, 64), layer=2)


def test_too_small_input_for_the_proposal_levels_is_a_clear_error():
    model = _tiny().eval()
    # 32x32 -> a 2x2 stride-16 map: the stride-64 proposal level would be empty (a bare conv error before)
    with pytest.raises(ValueError, match=r"(?s)a 32x32 input gives a 2x2 stride-16 map, too small .*strides 8/16/32/64.*"
                                         r"at least 33x33 pixels"):
        model(torch.randn(1, 3, 32, 32))


@pytest.mark.parametrize("train", [False, True])
def test_more_queries_than_proposals_is_a_clear_error(train):
    # 48x48 -> a 4x4 stride-16 map: 64 + 16 + 4 + 1 = 85 proposals over the four levels
    model = _tiny(num_queries_one2one=90 if not train else 5, num_queries_one2many=100).train(train)
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 80))  # a 4x6 map: 96 + 24 + 6 + 1 = 127 proposals, enough for 90 or 105 queries
    group = r"105 queries \(5 one-to-one \+ 100 one-to-many\)" if train else r"90 queries \(one-to-one\)"
    with pytest.raises(ValueError, match=rf"(?s)a 48x48 input gives a 4x4 stride-16 map with 85 two-stage proposals "
                                         rf"\(levels of strides 8/16/32/64: \[64, 16, 4, 1\]\), but {group} are asked.*"
                                         r"a larger input.*fewer queries"):
        model(torch.randn(1, 3, 48, 48))
