"""GeM pooling (Radenović et al.) and the CosPlace / EigenPlaces head built on it.

The head computes what `aggregation` computes in gmberton/CosPlace
(`cosplace_model/cosplace_network.py`, `cosplace_model/layers.py`) and gmberton/EigenPlaces
(`eigenplaces_model/`): L2-normalise the feature map over channels, GeM with a learnable p
(initially 3, eps 1e-6), flatten, then Linear and L2-normalise. Its submodules sit at the same
indices (1: GeM, 3: Linear), so the authors' `aggregation.*` keys are this head's keys under
another prefix: `aggregation.1.p`, `aggregation.3.weight`, `aggregation.3.bias` ->
`pool.1.p`, `pool.3.weight`, `pool.3.bias` (see `AUTHORS_PREFIX`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SETTINGS = {"p": 3.0, "fc_dim": None}  # initial GeM exponent; FC output size (None: no FC)
AUTHORS_PREFIX = "aggregation."  # CosPlace's and EigenPlaces' name for this head


class GeM(nn.Module):
    """Generalised mean over the whole map: [N, C, h, w] -> [N, C, 1, 1],
    `avg_pool2d(x.clamp(min=eps) ** p) ** (1/p)`, with p a learned [1] parameter.

    Computed in float32 whatever the input's dtype (under bf16 autocast too): x**3 of features
    near eps is below bf16's resolution.
    """

    def __init__(self, p: float = SETTINGS["p"], eps: float = 1e-6):
        super().__init__()
        self.p = nn.Parameter(torch.ones(1) * p)
        self.eps = eps

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        features, p = features.float(), self.p.float()
        powered = features.clamp(min=self.eps).pow(p)
        # the mean over the map (what avg_pool2d with the map's size as kernel computes), with
        # no size taken in Python: an exported graph takes images of any size
        return powered.mean(dim=(-2, -1), keepdim=True).pow(1.0 / p)

    def extra_repr(self) -> str:
        return f"p={self.p.item():.4f}, eps={self.eps}"


class L2Norm(nn.Module):
    """L2-normalise along `dim` (1: channels of a map, or a descriptor's entries), in float32."""

    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x.float(), p=2.0, dim=self.dim)


class GeMHead(nn.Sequential):
    """Feature map [N, C, h, w] -> descriptors [N, D], D = `fc_dim` or C without an FC.

    Layers: 0 L2Norm over channels, 1 GeM, 2 Flatten, 3 Linear(C, fc_dim), 4 L2Norm; without
    `fc_dim` there is no Linear and the GeM vector is L2-normalised (layer 3), so that the
    descriptors are unit vectors either way, as this project's other poolings give.
    """

    def __init__(self, in_channels: int, fc_dim: int | None = SETTINGS["fc_dim"],
                 p: float = SETTINGS["p"]):
        layers: list[nn.Module] = [L2Norm(), GeM(p=p), nn.Flatten()]
        if fc_dim is not None:
            layers.append(nn.Linear(in_channels, fc_dim))
        super().__init__(*layers, L2Norm())
        self.in_channels = in_channels
        self.fc_dim = fc_dim

    @property
    def output_dim(self) -> int:
        return self.in_channels if self.fc_dim is None else self.fc_dim


def from_authors_keys(state: dict, prefix: str = "pool.") -> dict:
    """CosPlace / EigenPlaces `aggregation.*` keys renamed to `prefix` (other keys dropped)."""
    return {prefix + key[len(AUTHORS_PREFIX):]: value for key, value in state.items()
            if key.startswith(AUTHORS_PREFIX)}
