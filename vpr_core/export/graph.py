"""The exported computation: RGB pixels in [0, 1] -> descriptors, the whole model in one graph.

Today the image feed normalises on the device, outside the model (`vpr_core.data.image_feed`);
a file that runs elsewhere must carry that step, so the graph starts with it, in the feed's
order of operations ((x - mean) / std), and descriptors come out as float32 whatever the
weights' type.
"""
from __future__ import annotations

import torch
from torch import nn

from ..data.images import IMAGENET_MEAN, IMAGENET_STD
from ..models.catalog import CNNS, RESNETS

INPUT, OUTPUT = "images", "descriptors"
INPUT_CONVENTION = "float32 [N, 3, H, W], RGB in [0, 1]; ImageNet mean/std inside the graph"
# the aggregators whose computation does not depend on the map's size, over a CNN's map: the
# file takes any image size. The others are fixed at the export's size: MixVPR's layers are
# built for one map size, and a DINOv2 (with SALAD, BoQ or any other) resamples its
# positional embedding by factors computed in Python from the patch grid (SALAD's optimal
# transport also takes the number of patches as a constant).
ANY_SIZE_AGGREGATORS = ("netvlad", "gem", "max", "avg", "boq")


class DescriptorGraph(nn.Module):
    """images [N, 3, H, W] float32, RGB in [0, 1] -> descriptors [N, D] float32: ImageNet
    normalisation, the encoder, the aggregator (with its L2 normalisation) and a compressed
    variant's PCA-whitening, which `model` (a `PlaceModel`) holds."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std).float()


def takes_any_size(arch: str, aggregator: str) -> bool:
    """Whether the file of `arch` + `aggregator` takes images of any height and width."""
    return arch in CNNS + RESNETS and aggregator in ANY_SIZE_AGGREGATORS
