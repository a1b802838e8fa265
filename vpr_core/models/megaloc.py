"""MegaLoc pooling (Berton & Masone, CVPRW 2025): SALAD with 256-d clusters, then a linear
projection to 8,448 dimensions and L2 normalisation.

Keys as in gmberton/MegaLoc's `aggregator.*`: `agg.*` (a SALAD, see `salad`) and `linear.*`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .salad import SALAD

# The settings besides `in_channels`, at the values of the released model:
# SALAD's 64 * 256 + 256 = 16,640 dimensions projected to 8,448.
SETTINGS = {"num_clusters": 64, "cluster_dim": 256, "token_dim": 256, "output_dim": 8448,
            "dropout": 0.3}


class MegaLoc(nn.Module):
    """(feature map [N, C, H, W], class token [N, C]) -> descriptors [N, output_dim]: SALAD's
    descriptor [N, token_dim + K * D], an affine map to `output_dim`, L2 normalisation."""

    def __init__(self, in_channels: int = 768, num_clusters: int = 64, cluster_dim: int = 256,
                 token_dim: int = 256, output_dim: int = 8448, dropout: float = 0.3):
        super().__init__()
        self.agg = SALAD(in_channels, num_clusters, cluster_dim, token_dim, dropout)
        self.linear = nn.Linear(self.agg.output_dim, output_dim)

    @property
    def num_clusters(self) -> int:
        return self.agg.num_clusters

    @property
    def output_dim(self) -> int:
        return self.linear.out_features

    def forward(self, inputs: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """(feature map [N, C, H, W], class token [N, C]) -> descriptors [N, output_dim]."""
        return F.normalize(self.linear(self.agg(inputs)).float(), p=2, dim=1)
