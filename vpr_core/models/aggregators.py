"""The aggregators by name: each built from the encoder's channels (and, for those over a fixed
map, its size) and its own settings, its defaults on its own signature."""
from __future__ import annotations

import inspect

import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .boq import BoQ
from .catalog import MAP_SIZED
from .gem import GeMHead
from .megaloc import MegaLoc
from .mixvpr import MixVPR
from .netvlad import NetVLAD
from .salad import SALAD


class L2Norm(nn.Module):
    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, x):
        return F.normalize(x, p=2, dim=self.dim)


class FeatureMap(nn.Module):
    """An encoder's feature map [N, C, h, w] from its output (a ViT's: (map, class token))."""

    def forward(self, features):
        return features[0] if isinstance(features, tuple) else features


class GlobalPool(nn.Sequential):
    """Max or average pooling of the whole map, L2-normalised: [N, C, h, w] -> [N, C]."""

    def __init__(self, in_channels: int, kind: str = "max"):
        adaptive = nn.AdaptiveMaxPool2d(1) if kind == "max" else nn.AdaptiveAvgPool2d(1)
        super().__init__(adaptive, nn.Flatten(), L2Norm())
        self.output_dim = in_channels


def _netvlad(in_channels: int, num_clusters: int = 64) -> NetVLAD:
    if num_clusters < 1:
        raise UserError(f"--num-clusters must be at least 1, got {num_clusters}")
    return NetVLAD(num_clusters=num_clusters, dim=in_channels)


def _max(in_channels: int) -> GlobalPool:
    return GlobalPool(in_channels, "max")


def _avg(in_channels: int) -> GlobalPool:
    return GlobalPool(in_channels, "avg")


# name -> constructor(in_channels, **settings); the settings are the constructor's keywords
BUILDERS = {"netvlad": _netvlad, "gem": GeMHead, "mixvpr": MixVPR, "salad": SALAD, "boq": BoQ,
            "megaloc": MegaLoc, "max": _max, "avg": _avg}


def defaults(name: str) -> dict:
    """The settings aggregator `name` takes and their defaults (from its signature)."""
    parameters = inspect.signature(BUILDERS[name]).parameters
    return {k: p.default for k, p in parameters.items()
            if k not in ("in_channels", "in_h", "in_w") and p.default is not p.empty}


def build_aggregator(name: str, in_channels: int, map_size: tuple[int, int] | None,
                     settings: dict) -> tuple[nn.Module, dict]:
    """(the aggregator, the settings it was built with: its defaults filled in, and for one
    over a fixed map the map's size, so that a checkpoint rebuilds it)."""
    known = defaults(name)
    unknown = sorted(set(settings) - set(known) - {"in_h", "in_w"})
    if unknown:
        raise UserError(f"the {name} aggregator takes no setting {', '.join(unknown)}")
    used = {**known, **{k: v for k, v in settings.items() if v is not None}}
    if name in ("salad", "megaloc") and map_size and \
            map_size[0] * map_size[1] <= used["num_clusters"]:
        raise UserError(f"{name} needs more image patches than its {used['num_clusters']} "
                        f"clusters, and images of this size give {map_size[0] * map_size[1]}; "
                        f"pass a larger --image-size or fewer --num-clusters")
    if name in MAP_SIZED:
        if "in_h" not in used and map_size is None:
            raise UserError(f"the {name} aggregator works on a feature map of one size: pass "
                            f"--image-size HxW")
        if "in_h" not in used:
            used["in_h"], used["in_w"] = map_size
    return BUILDERS[name](in_channels, **used), used
