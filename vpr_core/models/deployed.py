"""A model as it is shipped: images in [0, 1] in, descriptors out, the ImageNet normalisation
inside (this project's image path normalises on the device, outside the model; a deployed
model is handed plain RGB pixels instead)."""
from __future__ import annotations

import torch
from torch import nn

from ..data.images import IMAGENET_MEAN, IMAGENET_STD


class ImagesToDescriptors(nn.Module):
    """`forward(images)`: float32 [N, 3, H, W] RGB in [0, 1] -> float32 [N, D] descriptors,
    the same numbers the evaluation computes for the same pixels."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model.eval()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model((images - self.mean) / self.std).float()
