"""PlainDETRDetector: optimizer groups and schedule, data checks, evaluation outputs, a tiny overfit."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("pycocotools")

from zoo.vision.detection.data import (  # noqa: E402
    CocoDetection,
    collate_detection,
    detr_eval_transform,
    read_coco,
    write_synthetic_coco,
)
from zoo.vision.detection.module import PlainDETRDetector  # noqa: E402

TINY = dict(embed_dim=8, depths=(1, 1, 1, 2), backbone_heads=(1, 1, 2, 2), window_size=4, pretrained_window_sizes=(4, 4, 4, 2),
            d_model=32, num_heads=2, dim_feedforward=32, num_decoder_layers=2, num_queries_one2one=10,
            num_queries_one2many=10, rpe_hidden_dim=16)


def _module(**kwargs) -> PlainDETRDetector:
    return PlainDETRDetector("plain_detr_demo", overrides=TINY, num_classes=4, warmup_steps=2, **kwargs)


def test_param_groups_follow_the_official_recipe():
    module = _module(lr=1e-3, lr_backbone=1e-4)
    groups = module.param_groups()
    names = {id(p): n for n, p in module.model.named_parameters()}
    by = {(g["lr"], g["weight_decay"]): [names[id(p)] for p in g["params"]] for g in groups}
    assert set(by) == {(1e-3, 0.05), (1e-3, 0.0), (1e-4, 0.05), (1e-4, 0.0)}
    assert all(n.startswith("backbone.") for n in by[(1e-4, 0.05)] + by[(1e-4, 0.0)])
    no_decay = by[(1e-3, 0.0)] + by[(1e-4, 0.0)]
    assert any("cpb_mlp" in n for n in no_decay) and not any("cpb_mlp" in n for n in by[(1e-3, 0.05)])
    assert all(not n.endswith(".bias") and "norm" not in n for n in by[(1e-3, 0.05)] + by[(1e-4, 0.05)])
    assert sum(len(g["params"]) for g in groups) == sum(1 for p in module.model.parameters() if p.requires_grad)
    with pytest.raises(ValueError, match="backbone_prefix"):
        _module(backbone_prefix="trunk.").param_groups()


def test_warmup_then_step_drop():
    module = _module(lr=1e-3, lr_drop_fraction=0.5)
    sched = module.configure_optimizers()["lr_scheduler"]["scheduler"]  # no trainer: 1 total step -> drop at 0
    assert sched.lr_lambdas[0](0) == pytest.approx(0.5 * 0.1)
    fn = sched.lr_lambdas[0]
    assert fn(1) == pytest.approx(0.1)


def test_check_data_refuses_too_few_classes(tmp_path):
    class Data:
        num_classes = 9

        def setup(self):
            pass

    with pytest.raises(ValueError, match="num_classes 9"):
        _module().check_data(Data())


@pytest.mark.slow
def test_tiny_model_overfits_two_images(tmp_path):
    torch.manual_seed(0)
    root = write_synthetic_coco(tmp_path, {"train": 2}, image_size=(64, 64), max_objects=2, seed=1)
    images, cats = read_coco(root / "annotations" / "instances_train.json", root / "train")
    ds = CocoDetection(images, cats, detr_eval_transform(size=64, max_size=96))
    batch = collate_detection([ds[0], ds[1]])
    module = _module(lr=2e-3, lr_backbone=2e-3, weight_decay=0.0, k_one2many=2)
    before = module.evaluate_loader([batch], "val")["AP50"]
    opt = torch.optim.AdamW(module.param_groups())
    losses = []
    module.train()
    for _ in range(120):
        loss, _ = module.training_loss(batch)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 0.1)
        opt.step()
        losses.append(float(loss))
    after = module.evaluate_loader([batch], "val")
    assert losses[-1] < 0.5 * losses[0], losses[::20]
    assert after["AP50"] > before and after["AP50"] > 0.5, (before, after)
