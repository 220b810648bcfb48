"""ConvFormer and the VideoPose3D baseline: shapes, parameter-count formulas, convolutional q/k/v
locality, the official-key converter, and a tiny overfit."""

from __future__ import annotations

import torch

import zoo
from zoo.hub import count_parameters
from zoo.vision.pose.models.convformer import ConvFormerConfig, JointConvQKV, TemporalJointsProfileQKV
from zoo.vision.pose.models.videopose import convert_official


def test_registry_lists_variants():
    assert zoo.list_models("convformer*") == ["convformer_243", "convformer_27", "convformer_81"]
    for frames in (27, 81, 243):
        assert zoo.create_model(f"videopose3d_{frames}").config.num_frames == frames


def test_videopose3d_parameter_counts_match_the_paper():
    # VideoPose3D (Pavllo 2019): 8.56 M / 12.75 M / 16.95 M; the formula: expand + blocks + shrink
    def formula(blocks: int, c: int = 1024, j: int = 17) -> int:
        return 2 * j * c * 3 + 2 * c + blocks * (3 * c * c + c * c + 4 * c) + c * 3 * j + 3 * j

    for frames, blocks, paper in ((27, 2, 8.56e6), (81, 3, 12.75e6), (243, 4, 16.95e6)):
        n = count_parameters(zoo.create_model(f"videopose3d_{frames}"))
        assert n == formula(blocks) and abs(n - paper) < 0.005e6


def convformer_formula(cfg: ConvFormerConfig) -> int:
    c, j, f, r = cfg.embed_dim, cfg.num_joints, cfg.num_frames, cfg.mlp_ratio
    d = c * j

    def block(dim: int, qkv: int) -> int:
        hidden = int(dim * r)
        return 4 * dim + qkv + dim * dim + dim + dim * hidden + hidden + hidden * dim + dim

    spatial_qkv = sum(c * 3 * (c // len(cfg.spatial_kernels)) * k + 3 * (c // len(cfg.spatial_kernels)) for k in cfg.spatial_kernels)
    hc = c // len(cfg.temporal_kernels)
    temporal_qkv = f * 3 * f + 3 * f + sum(3 * f * hc * (k + 1) for k in cfg.temporal_kernels)
    return (
        cfg.in_dim * c + c + j * c + f * d  # joint embedding, position tables
        + cfg.spatial_depth * block(c, spatial_qkv) + 2 * c
        + cfg.temporal_depth * block(d, temporal_qkv) + 2 * d
        + f + 1 + 2 * d + d * j * cfg.out_dim + j * cfg.out_dim  # frame weights, head
    )


def test_convformer_parameter_count_formula_and_reduction():
    for name in ("convformer_27", "convformer_81", "convformer_243"):
        model = zoo.create_model(name)
        assert count_parameters(model) == convformer_formula(model.config)
        frames = model.config.num_frames
        assert count_parameters(model) < count_parameters(zoo.create_model(f"videopose3d_{frames}"))
    small = zoo.create_model("convformer_27", embed_dim=8, spatial_kernels=(1, 3), temporal_kernels=(5, 1), spatial_depth=1)
    assert count_parameters(small) == convformer_formula(small.config)


def test_head_receptive_fields():
    """A kernel-k head's q/k/v at joint i only see joints within k // 2; the temporal profile sees
    every frame but only neighbouring joints."""
    torch.manual_seed(0)
    qkv = JointConvQKV(8, (1, 3)).double()
    x = torch.randn(1, 17, 8, dtype=torch.float64, requires_grad=True)
    q, _, _ = qkv(x)  # (1, 2, 17, 4)
    for head, reach in ((0, 0), (1, 1)):
        (g,) = torch.autograd.grad(q[0, head, 8].sum(), x, retain_graph=True)
        seen = g.abs().sum(-1)[0].nonzero().flatten().tolist()
        assert seen == list(range(8 - reach, 8 + reach + 1))
    profile = TemporalJointsProfileQKV(num_frames=5, channels=4, num_joints=17, kernels=(3, 1)).double()
    xt = torch.randn(1, 5, 4 * 17, dtype=torch.float64, requires_grad=True)
    q, _, _ = profile(xt)  # (1, 2, 5, 2 * 17)
    (g,) = torch.autograd.grad(q[0, 0, 2, 8].sum(), xt)  # head 0 (k=3), frame 2, channel 0 joint 8
    g = g.view(5, 4, 17).abs()
    assert (g.sum((1, 2)) > 0).all()  # all frames
    assert g.sum((0, 1)).nonzero().flatten().tolist() == [7, 8, 9]  # joints 7..9 only


def test_official_converter_takes_videopose3d_checkpoints():
    model = zoo.create_model("videopose3d_27", channels=16)
    official = {"epoch": 80, "model_pos": {f"module.{k}": v.clone() for k, v in model.state_dict().items()}}
    converted = convert_official(official, model)
    assert set(converted) == set(model.state_dict())
    assert "layers_conv.1.weight" in converted and "expand_bn.running_var" in converted


def test_tiny_convformer_and_baseline_overfit_a_few_windows():
    torch.manual_seed(0)
    x, y = torch.randn(8, 9, 17, 2), 0.3 * torch.randn(8, 17, 3)
    for name, overrides in (
        ("convformer_27", dict(num_frames=9, embed_dim=8, spatial_depth=1, temporal_depth=1, spatial_kernels=(1, 3),
                               temporal_kernels=(3, 1), drop_path_rate=0.0)),
        ("videopose3d_27", dict(filter_widths=(3, 3), channels=64, dropout=0.0)),
    ):
        model = zoo.create_model(name, **overrides)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        first = None
        for _ in range(150):
            loss = torch.linalg.vector_norm(model(x) - y, dim=-1).mean()
            first = first if first is not None else float(loss.detach())
            opt.zero_grad()
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            final = float(torch.linalg.vector_norm(model(x) - y, dim=-1).mean())
        assert final < 0.25 * first, (name, first, final)
