"""The strided temporal-convolution baseline of VideoPose3D, the side-by-side reference for ConvFormer.

Paper: Pavllo et al., "3D human pose estimation in video with temporal convolutions and
semi-supervised training" (CVPR 2019). This is the single-frame training form of the network
(``TemporalModelOptimized1f``): each layer's convolution uses a *stride* equal to its width instead
of a dilation, so a window of ``prod(filter_widths)`` frames maps to the centre frame's pose. The
dilated sequence-to-sequence form computes the same function with the same weights; only the
strided one is here, because both models are trained and evaluated one centre frame per window.

- ``expand_conv`` (``J * 2 -> C``, width ``w0``, stride ``w0``, no bias) + BN + ReLU + dropout;
- per further width ``w``: ``Conv(C, C, w, stride w)`` + BN + ReLU + dropout, ``Conv(C, C, 1)`` + BN +
  ReLU + dropout, with the residual ``x[:, :, w // 2 :: w]``;
- ``shrink``: ``Conv(C, J * 3, 1)``.

Key names are VideoPose3D's (``expand_conv``, ``expand_bn``, ``layers_conv.{i}``, ``layers_bn.{i}``,
``shrink``), so its released ``model_pos`` state dicts load through :func:`convert_official`. With
``C = 1024`` and widths ``3, 3, 3(, 3, 3)`` the parameter counts are VideoPose3D's published 8.56 M
(27 frames), 12.75 M (81) and 16.95 M (243).

Shapes: ``forward(keypoints (B, F, J, 2)) -> (B, J, 3)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

__all__ = ["VIDEOPOSE_CONFIGS", "TemporalConvBaseline", "TemporalConvConfig", "convert_official"]


@dataclass(frozen=True)
class TemporalConvConfig:
    filter_widths: tuple[int, ...] = (3, 3, 3)
    num_joints: int = 17
    in_dim: int = 2
    out_dim: int = 3
    channels: int = 1024
    dropout: float = 0.25
    bn_momentum: float = 0.1

    def __post_init__(self) -> None:
        widths = tuple(self.filter_widths)
        object.__setattr__(self, "filter_widths", widths)
        if not widths or any(w < 1 or w % 2 == 0 for w in widths):
            raise ValueError(f"TemporalConvConfig.filter_widths must be odd and >= 1, got {widths}")

    @property
    def num_frames(self) -> int:
        """The receptive field, ``prod(filter_widths)``."""
        return math.prod(self.filter_widths)


class TemporalConvBaseline(nn.Module):
    """VideoPose3D's temporal convolutional lifting network, strided (one output frame per window)."""

    def __init__(self, config: TemporalConvConfig) -> None:
        super().__init__()
        self.config = cfg = config
        widths, c = cfg.filter_widths, cfg.channels
        self.expand_conv = nn.Conv1d(cfg.num_joints * cfg.in_dim, c, widths[0], stride=widths[0], bias=False)
        self.expand_bn = nn.BatchNorm1d(c, momentum=cfg.bn_momentum)
        convs, bns = [], []
        for w in widths[1:]:
            convs += [nn.Conv1d(c, c, w, stride=w, bias=False), nn.Conv1d(c, c, 1, bias=False)]
            bns += [nn.BatchNorm1d(c, momentum=cfg.bn_momentum), nn.BatchNorm1d(c, momentum=cfg.bn_momentum)]
        self.layers_conv, self.layers_bn = nn.ModuleList(convs), nn.ModuleList(bns)
        self.shrink = nn.Conv1d(c, cfg.num_joints * cfg.out_dim, 1)
        self.relu, self.drop = nn.ReLU(inplace=True), nn.Dropout(cfg.dropout)

    def forward(self, keypoints: Tensor) -> Tensor:
        cfg = self.config
        if keypoints.dim() != 4 or tuple(keypoints.shape[1:]) != (cfg.num_frames, cfg.num_joints, cfg.in_dim):
            raise ValueError(
                f"TemporalConvBaseline expects keypoints (B, {cfg.num_frames}, {cfg.num_joints}, {cfg.in_dim}), "
                f"got {tuple(keypoints.shape)}"
            )
        b, f = keypoints.shape[:2]
        x = keypoints.reshape(b, f, -1).transpose(1, 2)  # (B, J*2, F)
        x = self.drop(self.relu(self.expand_bn(self.expand_conv(x))))  # (B, C, F / w0)
        for i, w in enumerate(cfg.filter_widths[1:]):
            res = x[:, :, w // 2 :: w]  # (B, C, F_i / w)
            x = self.drop(self.relu(self.layers_bn[2 * i](self.layers_conv[2 * i](x))))  # (B, C, F_i / w)
            x = res + self.drop(self.relu(self.layers_bn[2 * i + 1](self.layers_conv[2 * i + 1](x))))
        return self.shrink(x).view(b, cfg.num_joints, cfg.out_dim)  # (B, J, 3)


VIDEOPOSE_CONFIGS: dict[str, TemporalConvConfig] = {
    f"videopose3d_{3**n}": TemporalConvConfig(filter_widths=(3,) * n) for n in (3, 4, 5)
}


def convert_official(state_dict: dict[str, Tensor], model: nn.Module) -> dict[str, Tensor]:
    """VideoPose3D's checkpoint (``{"model_pos": ...}`` or the bare state dict, optionally with the
    ``module.`` prefix of DataParallel) -> ours: the key names are the same."""
    sd = state_dict.get("model_pos", state_dict)
    return {k.removeprefix("module."): v for k, v in sd.items()}
