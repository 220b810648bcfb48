"""Sign recognition networks: SLRT (BdSLW401's landmark transformer).

Importing this package registers ``slrt``, ``slrt_face`` and ``slrt_small`` with the zoo:
``zoo.create_model("slrt", num_classes=100)``, ``zoo.list_models("slrt*")``.
"""

from __future__ import annotations

import torch

from zoo.hub import register_family

from .slrt import SLRT, SLRT_CONFIGS, SLRTConfig, build_slrt

__all__ = ["SLRT", "SLRT_CONFIGS", "SLRTConfig"]


def _test_input(model: SLRT) -> tuple[tuple[torch.Tensor, ...], dict]:
    cfg = model.config
    x = torch.randn(2, 10, cfg.num_landmarks, cfg.coords)
    x[0, :4, 33:54] = float("nan")  # a left hand out of view for four frames
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 7:] = False  # the second sequence is padded
    return (x, mask), {}


register_family(
    SLRT_CONFIGS,
    build_slrt,
    description={
        "slrt": "SLRT, BdSLW401 (arXiv 2503.02360): 3-layer 8-head landmark transformer, pose + hands",
        "slrt_face": "SLRT, BdSLW401 (arXiv 2503.02360): 3-layer 8-head landmark transformer, pose + hands + face",
        "slrt_small": "SLRT, BdSLW401 (arXiv 2503.02360): 3 layers, 8 heads, width 128 (CPU demos)",
    },
    # the same code paths (presence flags, masking, pooling) at toy size
    test_overrides=dict(dim=32, depth=2, num_heads=4, max_frames=16, num_classes=5),
    test_input=_test_input,
)
