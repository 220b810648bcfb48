"""The shared warmup + cosine schedule."""

import pytest
import torch

from zoo.training.optim import warmup_cosine


def test_warmup_then_cosine_to_floor():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=2.0)
    sched = warmup_cosine(opt, total_steps=14, warmup_steps=4, min_lr_ratio=0.1)["scheduler"]
    lrs = []
    for _ in range(14):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])  # linear warmup
    assert lrs[4] == pytest.approx(2.0)  # cosine starts at the peak
    assert lrs[9] == pytest.approx(2.0 * (0.1 + 0.9 * 0.5))  # halfway: midpoint of peak and floor
    assert all(a >= b for a, b in zip(lrs[4:], lrs[5:]))  # monotone decay
    assert opt.param_groups[0]["lr"] == pytest.approx(0.2)  # ends at the floor


def test_bad_floor_is_rejected():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=r"min_lr_ratio must be in \[0, 1\], got 1.5"):
        warmup_cosine(opt, 10, 2, 1.5)


class _ConvNet(torch.nn.Module):
    """Conv + BatchNorm + a 2-D position table + an MLP inside a position term + LayerNorm + head."""

    def __init__(self) -> None:
        super().__init__()
        from zoo.core_attention.positions import DynamicPositionBias, RelativeBias2D

        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.bn = torch.nn.BatchNorm2d(8)
        self.table = RelativeBias2D(2, 3)
        self.dpb = DynamicPositionBias(2, 8)
        self.norm = torch.nn.LayerNorm(8)
        self.embed = torch.nn.Embedding(5, 8)
        self.head = torch.nn.Linear(8, 4)
        self.frozen = torch.nn.Linear(2, 2)
        self.frozen.requires_grad_(False)

    def no_weight_decay(self) -> set[str]:
        return {"embed.weight"}


def test_weight_decay_groups_of_a_conv_model():
    from zoo.training.optim import OptimConfig, build_optimizer, no_weight_decay_names

    model = _ConvNet()
    skip = no_weight_decay_names(model)
    table = {n for n, _ in model.table.named_parameters(prefix="table", recurse=False)}
    assert table and table <= skip  # the learned 2-D table
    assert {"conv.bias", "bn.weight", "bn.bias", "norm.weight", "norm.bias", "head.bias", "embed.weight"} <= skip
    decayed = {n for n, p in model.named_parameters() if p.requires_grad} - skip
    dpb_linear = {n for n in decayed if n.startswith("dpb.") and n.endswith(".weight")}
    assert "conv.weight" in decayed and "head.weight" in decayed and dpb_linear, decayed  # conv kernels decay
    assert not any(n.startswith("frozen.") for n in decayed)
    opt = build_optimizer(model, OptimConfig(lr=0.1, weight_decay=0.05), steps=10)["optimizer"]
    by_id = {id(p): n for n, p in model.named_parameters()}
    groups = {g["weight_decay"]: {by_id[id(p)] for p in g["params"]} for g in opt.param_groups}
    assert groups[0.05] == decayed and groups[0.0] == {n for n in skip if not n.startswith("frozen.")}


def test_layer_decay_groups_keep_the_same_rule():
    import zoo
    from zoo.training.optim import OptimConfig, build_optimizer

    model = zoo.create_model("crossformer_t", **zoo.hub.model_entry("crossformer_t").test_overrides)
    opt = build_optimizer(model, OptimConfig(lr=1.0, weight_decay=0.05, layer_decay=0.5), steps=10)["optimizer"]
    scales = sorted({g["lr_scale"] for g in opt.param_groups})
    assert len(scales) > 2 and scales[-1] == pytest.approx(1.0)
    assert all(g["initial_lr"] == pytest.approx(g["lr_scale"]) for g in opt.param_groups)
    assert all(p.dim() >= 2 for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"])


def test_bad_optimizer_settings_name_the_argument():
    from zoo.training.optim import OptimConfig, build_optimizer

    with pytest.raises(ValueError, match="lr > 0"):
        build_optimizer(torch.nn.Linear(2, 2), OptimConfig(lr=0.0), steps=10)
