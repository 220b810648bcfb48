"""3-D pose lifting networks: ConvFormer (arXiv 2304.02147) and VideoPose3D's temporal-conv baseline.

Importing this package registers ``convformer_{27,81,243}`` and ``videopose3d_{27,81,243}``::

    zoo.list_models("convformer*")
    model = zoo.create_model("convformer_243", drop_path_rate=0.0)   # (B, 243, 17, 2) -> (B, 17, 3)
    baseline = zoo.load_official("videopose3d_243", "pretrained_h36m_cpn.bin")
"""

from __future__ import annotations

import torch

from zoo.hub import register_family

from . import videopose
from .convformer import CONVFORMER_CONFIGS, ConvFormer, ConvFormerConfig
from .videopose import VIDEOPOSE_CONFIGS, TemporalConvBaseline, TemporalConvConfig

__all__ = [
    "CONVFORMER_CONFIGS",
    "ConvFormer",
    "ConvFormerConfig",
    "TemporalConvBaseline",
    "TemporalConvConfig",
    "VIDEOPOSE_CONFIGS",
]


def _keypoints(model: torch.nn.Module) -> tuple[tuple[torch.Tensor], dict]:
    cfg = model.config
    return (torch.randn(2, cfg.num_frames, cfg.num_joints, cfg.in_dim),), {}


register_family(
    CONVFORMER_CONFIGS,
    ConvFormer,
    description={
        name: f"ConvFormer, arXiv 2304.02147; {cfg.num_frames}-frame receptive field, dynamic multi-headed "
        "convolutional attention via the core"
        for name, cfg in CONVFORMER_CONFIGS.items()
    },
    # every code path (kernel groups, depthwise joint convs, both stages) at toy size
    test_overrides=dict(num_frames=9, embed_dim=8, spatial_depth=1, temporal_depth=1, spatial_kernels=(1, 3),
                        temporal_kernels=(3, 1)),
    test_input=_keypoints,
)

register_family(
    VIDEOPOSE_CONFIGS,
    TemporalConvBaseline,
    description={
        name: f"VideoPose3D (Pavllo 2019) strided temporal convolutions, {cfg.num_frames} frames; the ConvFormer baseline"
        for name, cfg in VIDEOPOSE_CONFIGS.items()
    },
    test_overrides=dict(filter_widths=(3, 3), channels=16),
    test_input=_keypoints,
    official=videopose.convert_official,
)
