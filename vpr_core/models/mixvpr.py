"""MixVPR aggregation (Ali-bey et al., WACV 2023), parameters and keys as in amaralibey/MixVPR.

A stack of MLP mixers over each channel's flattened h*w map, then a projection of the channels
and one of the h*w positions into a few "rows". The layer is built for one map size: the images
must all be resized to the size that gives an `in_h` x `in_w` map (320x320 for ResNet-50 cut
after layer3, a 20x20 map).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError

# The settings a user chooses, with the released ResNet-50 model's values (4,096-d).
SETTINGS = {"out_channels": 1024, "mix_depth": 4, "mlp_ratio": 1, "out_rows": 4}


def map_settings(in_channels: int, map_hw: tuple[int, int]) -> dict:
    """The settings that come from the encoder, not the user: its channels and the (h, w) of
    the map it gives at the chosen image size."""
    in_h, in_w = map_hw
    return {"in_channels": int(in_channels), "in_h": int(in_h), "in_w": int(in_w)}


class FeatureMixer(nn.Module):
    """x + MLP(LayerNorm(x)) over the last axis (a channel's h*w values): [N, C, h*w] in and out.

    State: `mix.0` (LayerNorm), `mix.1` and `mix.3` (the two Linear layers), the reference's keys.
    """

    def __init__(self, hw: int, mlp_ratio: float = 1):
        super().__init__()
        hidden = int(hw * mlp_ratio)
        self.mix = nn.Sequential(nn.LayerNorm(hw), nn.Linear(hw, hidden), nn.ReLU(),
                                 nn.Linear(hidden, hw))
        for linear in (self.mix[1], self.mix[3]):  # the reference's initialisation
            nn.init.trunc_normal_(linear.weight, std=0.02)
            nn.init.zeros_(linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.mix(x)


class MixVPR(nn.Module):
    """A [N, in_channels, in_h, in_w] feature map -> an L2-normalised [N, out_channels*out_rows]
    descriptor.

    After the mixers, `channel_proj` maps the C channels to `out_channels` at each position and
    `row_proj` maps the h*w positions to `out_rows` for each projected channel; the descriptor
    is channel-major (index c*out_rows + r). State: `mix.{i}.mix.{0,1,3}.*`,
    `channel_proj.{weight,bias}` [out_channels, C], `row_proj.{weight,bias}` [out_rows, h*w].
    """

    def __init__(self, in_channels: int, in_h: int, in_w: int, out_channels: int = 1024,
                 mix_depth: int = 4, mlp_ratio: float = 1, out_rows: int = 4):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("in_h", in_h), ("in_w", in_w),
                            ("out_channels", out_channels), ("out_rows", out_rows)):
            if value < 1:
                raise UserError(f"MixVPR's {name} must be at least 1, got {value}")
        if mix_depth < 0 or int(in_h * in_w * mlp_ratio) < 1:
            raise UserError(f"MixVPR needs mix_depth >= 0 and a positive mlp_ratio, got "
                            f"mix_depth={mix_depth}, mlp_ratio={mlp_ratio}")
        self.in_channels, self.in_h, self.in_w = in_channels, in_h, in_w
        self.out_channels, self.out_rows = out_channels, out_rows
        self.mix_depth, self.mlp_ratio = mix_depth, mlp_ratio
        hw = in_h * in_w
        self.mix = nn.Sequential(*(FeatureMixer(hw, mlp_ratio) for _ in range(mix_depth)))
        self.channel_proj = nn.Linear(in_channels, out_channels)
        self.row_proj = nn.Linear(hw, out_rows)

    @property
    def output_dim(self) -> int:
        return self.out_channels * self.out_rows

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """features [N, C, in_h, in_w] -> descriptors [N, out_channels*out_rows]."""
        if tuple(features.shape[1:]) != (self.in_channels, self.in_h, self.in_w):
            raise UserError(f"MixVPR was built for {self.in_channels}x{self.in_h}x{self.in_w} "
                            f"feature maps but got {'x'.join(map(str, features.shape[1:]))}; "
                            f"resize the images to the size it was built for")
        x = self.mix(features.flatten(2))  # [N, C, hw]
        x = self.channel_proj(x.transpose(1, 2))  # [N, hw, out_channels]
        x = self.row_proj(x.transpose(1, 2))  # [N, out_channels, out_rows]
        return F.normalize(x.flatten(1), p=2, dim=1)
