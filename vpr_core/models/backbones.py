"""AlexNet and VGG16 cut at conv5, as pytorch-NetVlad: their layouts, the layers the reference
trains from ImageNet weights, and where those weights are."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

# How many of the cut feature layers stay trainable when starting from pretrained weights
# (the reference freezes layers[:-5] of VGG16, i.e. up to conv4_3, and layers[:-1] of AlexNet).
TRAINABLE_TAIL = {"alexnet": 1, "vgg16": 5}
# torchvision's ImageNet weights (IMAGENET1K_V1), the reference's starting point
IMAGENET_URLS = {
    "alexnet": "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
    "vgg16": "https://download.pytorch.org/models/vgg16-397923af.pth",
}
# torchvision's `features` layouts: (out_channels, kernel, stride, padding) per conv, "M" for
# max-pooling (AlexNet: 3x3 stride 2; VGG: 2x2 stride 2); a ReLU follows every conv.
FEATURE_LAYOUTS = {
    "alexnet": [(64, 11, 4, 2), "M", (192, 5, 1, 2), "M", (384, 3, 1, 1), (256, 3, 1, 1),
                (256, 3, 1, 1), "M"],
    "vgg16": [(64, 3, 1, 1), (64, 3, 1, 1), "M", (128, 3, 1, 1), (128, 3, 1, 1), "M",
              (256, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1), "M", (512, 3, 1, 1),
              (512, 3, 1, 1), (512, 3, 1, 1), "M", (512, 3, 1, 1), (512, 3, 1, 1),
              (512, 3, 1, 1), "M"],
}


def encoder_layers(arch: str) -> list[nn.Module]:
    """The reference's cut: `features[:-2]`, ending at the last conv before its ReLU.

    The layers are torchvision's AlexNet / VGG16 `features` with torchvision's initialisation
    (PyTorch's default for AlexNet; He-normal, fan-out, zero bias for VGG), built here so
    that neither torchvision nor the classifier (most of the weights) is built for nothing.
    """
    layers: list[nn.Module] = []
    channels = 3
    pool = 3 if arch == "alexnet" else 2
    for item in FEATURE_LAYOUTS[arch]:
        if item == "M":
            layers.append(nn.MaxPool2d(kernel_size=pool, stride=2))
            continue
        out, kernel, stride, padding = item
        conv = nn.Conv2d(channels, out, kernel_size=kernel, stride=stride, padding=padding)
        if arch == "vgg16":
            nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(conv.bias)
        layers += [conv, nn.ReLU(inplace=True)]
        channels = out
    return layers[:-2]


def save_fresh_weights(arch: str, path: Path) -> Path:
    """A freshly initialised `arch` encoder saved as a weight file in torchvision's layout
    (`features.N.*`). `--weights PATH` loads it and freezes the layers ImageNet weights
    freeze: the reference's default training, without a download (benchmarks, tests)."""
    layers = nn.Sequential(*encoder_layers(arch))
    torch.save({f"features.{k}": v for k, v in layers.state_dict().items()}, path)
    return path
