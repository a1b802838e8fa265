"""The place-recognition model: an encoder (the backbone) then an aggregator (`pool`)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from .aggregators import build_aggregator, defaults
from .catalog import AGGREGATORS, TAKES_CLASS_TOKEN, backbone_problem, channels
from .encoders import build_encoder, feature_map_size
from .shape import ModelShape

HALF_DTYPES = (torch.float16, torch.bfloat16)


class PlaceModel(nn.Module):
    """`encoder` then `pool`: images [N, 3, H, W] -> descriptors [N, output_dim].

    The encoder gives a feature map [N, C, h, w] (a ViT: its patch tokens as a map, and its
    class token, which only the aggregators that use it take). A compressed variant may add
    `whiten` (PCA + whitening of the descriptors, see `vpr_core.compression.pca`) or hold its
    encoder's weights in half precision.
    """

    def __init__(self, shape: ModelShape, encoder: nn.Module, pool: nn.Module):
        super().__init__()
        self.shape = shape
        self.encoder = encoder
        self.pool = pool
        self.whiten: nn.Module | None = None

    @property
    def arch(self) -> str:
        return self.shape.arch

    @property
    def aggregator(self) -> str:
        return self.shape.aggregator

    @property
    def num_clusters(self) -> int | None:
        return self.shape.num_clusters

    @property
    def encoder_dim(self) -> int:
        return channels(self.arch, self.aggregator)

    @property
    def output_dim(self) -> int:
        if self.whiten is not None:
            return self.whiten.output_dim
        return getattr(self.pool, "output_dim", self.encoder_dim)

    def train(self, mode: bool = True) -> PlaceModel:
        """Train or eval mode; in train mode the BatchNorm layers whose parameters are frozen
        keep their statistics (they run as in eval), so frozen layers compute the same thing
        whenever they run (and their output can be computed once, see
        `vpr_core.training.frozen_features`)."""
        super().train(mode)
        if mode:
            for module in self.encoder.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and \
                        not any(p.requires_grad for p in module.parameters()):
                    module.eval()
        return self

    def forward(self, images: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Descriptors of `images`; from encoder layer `start` on when it is not 0, `images`
        being then the output of the layers before it (see `vpr_core.training.frozen_features`)."""
        weight = next(self.encoder.parameters(), None)
        half = weight is not None and weight.dtype in HALF_DTYPES
        if half and images.dtype != weight.dtype:
            images = images.to(weight.dtype)  # an encoder stored in half precision
        encoder = self.encoder[start:] if start else self.encoder
        features = encoder(images)
        if isinstance(features, tuple) and self.aggregator not in TAKES_CLASS_TOKEN:
            features = features[0]  # a ViT's patch tokens as a map; the class token unused
        if half:  # the aggregator keeps float32 weights
            features = tuple(f.float() for f in features) if isinstance(features, tuple) \
                else features.float()
        descriptors = self.pool(features)
        return descriptors if self.whiten is None else self.whiten(descriptors)


def build_model(arch: str, aggregator: str = "netvlad", num_clusters: int | None = None,
                weights: str = "imagenet", *, image_size: tuple[int, int] | None = None,
                trainable: int | None = None, **settings) -> PlaceModel:
    """The model of `arch` + `aggregator` with `settings` (the aggregator's, its defaults
    otherwise; `num_clusters` for NetVLAD and SALAD); the encoder from `weights` ('imagenet',
    'none' or a weight file). `image_size` (H, W): the images' size, which aggregators over
    a fixed map (MixVPR) need; `trainable`: with pretrained weights, how many of the
    encoder's last stages train (None: the authors' habit)."""
    if aggregator not in AGGREGATORS:
        raise UserError(f"unknown aggregator {aggregator!r}; use one of {', '.join(AGGREGATORS)}")
    if backbone_problem(arch, aggregator):
        raise UserError(backbone_problem(arch, aggregator))
    if num_clusters is not None and "num_clusters" in defaults(aggregator):
        settings["num_clusters"] = num_clusters  # (the positional K of NetVLAD's first days)
    encoder = build_encoder(arch, weights, aggregator, trainable)
    map_size = feature_map_size(arch, image_size, aggregator) if image_size else None
    pool, used = build_aggregator(aggregator, channels(arch, aggregator), map_size, settings)
    return PlaceModel(ModelShape.of(arch, aggregator, used), encoder, pool)


def build(shape: ModelShape, weights: str = "none",
          image_size: tuple[int, int] | None = None) -> PlaceModel:
    """The model a `ModelShape` describes (weights 'none': a checkpoint's go in after)."""
    return build_model(shape.arch, shape.aggregator, weights=weights, image_size=image_size,
                       **shape.kwargs)
