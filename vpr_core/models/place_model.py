"""The place-recognition model: an encoder, then a pooling (NetVLAD, max or avg)."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import UserError
from .backbones import build_encoder
from .catalog import ENCODER_DIMS, POOLINGS
from .netvlad import NetVLAD

HALF_DTYPES = (torch.float16, torch.bfloat16)


class L2Norm(nn.Module):
    def __init__(self, dim: int = 1):
        super().__init__()
        self.dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(x, p=2, dim=self.dim)


class PlaceModel(nn.Module):
    """`encoder` (conv layers) then `pool`: images [N, 3, H, W] -> descriptors [N, out_dim].

    A compressed variant may add `whiten` (PCA + whitening of the descriptors, see
    `vpr_core.compression.pca`) or hold its encoder's weights in half precision.
    """

    def __init__(self, arch: str, encoder: nn.Sequential, pool: nn.Module, pooling: str):
        super().__init__()
        self.arch = arch
        self.pooling = pooling
        self.encoder = encoder
        self.pool = pool
        self.whiten: nn.Module | None = None

    @property
    def encoder_dim(self) -> int:
        return ENCODER_DIMS[self.arch]

    @property
    def output_dim(self) -> int:
        if self.whiten is not None:
            return self.whiten.output_dim
        return self.pool.output_dim if isinstance(self.pool, NetVLAD) else self.encoder_dim

    @property
    def num_clusters(self) -> int | None:
        return self.pool.num_clusters if isinstance(self.pool, NetVLAD) else None

    def forward(self, images: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Descriptors of `images`; from encoder layer `start` on when it is not 0, `images`
        being then the output of the layers before it (see `vpr_core.training.frozen_features`)."""
        weight = next(self.encoder.parameters(), None)
        if weight is not None and weight.dtype in HALF_DTYPES and images.dtype != weight.dtype:
            images = images.to(weight.dtype)  # an encoder stored in half precision
        encoder = self.encoder[start:] if start else self.encoder
        descriptors = self.pool(encoder(images))
        return descriptors if self.whiten is None else self.whiten(descriptors)


def build_model(arch: str, pooling: str = "netvlad", num_clusters: int = 64,
                weights: str = "imagenet") -> PlaceModel:
    if pooling not in POOLINGS:
        raise UserError(f"unknown pooling {pooling!r}; use one of {', '.join(POOLINGS)}")
    encoder = build_encoder(arch, weights)
    dim = ENCODER_DIMS[arch]
    if pooling == "netvlad":
        if num_clusters < 1:
            raise UserError(f"--num-clusters must be at least 1, got {num_clusters}")
        pool: nn.Module = NetVLAD(num_clusters=num_clusters, dim=dim)
    else:
        adaptive = nn.AdaptiveMaxPool2d(1) if pooling == "max" else nn.AdaptiveAvgPool2d(1)
        pool = nn.Sequential(adaptive, nn.Flatten(), L2Norm())
    return PlaceModel(arch, encoder, pool, pooling)


