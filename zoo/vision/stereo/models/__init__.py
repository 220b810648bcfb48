"""Stereo networks: MatchStereo (Yan et al., "MatchAttention", arXiv 2510.14260).

Importing this package registers ``matchstereo_{t,s,b}`` (the paper's variants) and the CPU-sized
``matchstereo_demo``::

    model = zoo.create_model("matchstereo_t")                      # (B, 3, H, W) x 2 in [0, 1] -> dict
    model = zoo.load_official("matchstereo_t", "matchstereo_tiny_fsd.pth")
    disparity = model.eval()(left, right)["disparity"]             # (B, 1, H, W), pixels
"""

from __future__ import annotations

import torch

from zoo.hub import register_family

from .matchstereo import MATCHSTEREO_CONFIGS, MatchStereo, MatchStereoConfig, convert_official

__all__ = ["MATCHSTEREO_CONFIGS", "MatchStereo", "MatchStereoConfig"]

_PARAMS = {"matchstereo_t": "8.78M", "matchstereo_s": "25.2M", "matchstereo_b": "75.5M"}


def _stereo_pair(model: torch.nn.Module) -> tuple[tuple[torch.Tensor, torch.Tensor], dict]:
    size = model.config.min_size
    generator = torch.Generator().manual_seed(0)
    left = torch.rand(2, 3, size, size + model.config.stride, generator=generator)
    return (left, torch.roll(left, shifts=-2, dims=-1)), {}


register_family(
    MATCHSTEREO_CONFIGS,
    MatchStereo,
    description={
        **{name: f"MatchStereo-{name[-1].upper()} ({p} official parameters), arXiv 2510.14260: ConvFormer encoder, "
                 "MatchAttention decoder" for name, p in _PARAMS.items()},
        "matchstereo_demo": "MatchStereo at CPU size (every code path; inputs >= 128 px) for the offline demo",
    },
    # every code path (4 scales, self + cross attention, convex upsampling) at toy width
    test_overrides=dict(dims=(8, 8, 8, 8), depths=(1, 1, 1, 1), radii=(1, 1, 1, 1), refine_layers=(1, 1, 1, 1)),
    test_input=_stereo_pair,
    official=convert_official,
)
