"""CosPlace and EigenPlaces released files: `backbone.N.*` and `aggregation.*`.

Both authors' models (gmberton/CosPlace `cosplace_model/cosplace_network.py`, gmberton/EigenPlaces
`eigenplaces_model/eigenplaces_network.py`) are `backbone`, an nn.Sequential of torchvision
children, then `aggregation` = Sequential(L2Norm, GeM, Flatten, Linear, L2Norm):

- ResNet18/50/101/152: `list(resnet.children())[:-2]`, all four blocks kept: `backbone.N.*`
  is `encoder.N.*` of `resnet.resnet_layers(depth, keep_last_block=True)`.
- VGG16: `list(vgg16.features.children())[:-2]`, ending at conv5_3 before its ReLU, the cut of
  this project's VGG16 encoder (`backbones.encoder_layers`): `backbone.N.*` is `encoder.N.*`.
- `aggregation.1.p` [1], `aggregation.3.weight` [D, C], `aggregation.3.bias` [D]: `pool.*` of
  `gem.GeMHead(C, fc_dim=D)`.

The two families' files have the same keys and shapes (EigenPlaces starts from CosPlace's
network), so a file is reported as family "cosplace"; only where it came from
(`RELEASE_URLS`) tells an EigenPlaces file apart. Image size: None, the images' own size. CosPlace's
`test.py` evaluates full images (`--resize_test_imgs` is off by default; on, it resizes the shorter
side to 512), and gmberton/VPR-methods-evaluation's `--image_size` defaults to None for both.
"""
from __future__ import annotations

import torch
from torch import nn

from ..backbones import encoder_layers
from ..gem import AUTHORS_PREFIX, from_authors_keys
from ..resnet import infer_resnet, resnet_channels
from .released import Released

BACKBONE_PREFIX = "backbone."
HEAD_KEYS = {"1.p": 1, "3.weight": 2, "3.bias": 1}  # the head's keys and their tensors' ranks
# The authors' release files ({backbone}: ResNet18, ResNet50, ResNet101, ResNet152, VGG16) and
# the descriptor sizes released for each (their hubconf.py's AVAILABLE_TRAINED_MODELS)
RELEASE_URLS = {
    "cosplace": "https://github.com/gmberton/CosPlace/releases/download/v1.0/"
                "{backbone}_{fc_dim}_cosplace.pth",
    "eigenplaces": "https://github.com/gmberton/EigenPlaces/releases/download/v1.0/"
                   "{backbone}_{fc_dim}_eigenplaces.pth",
}
RELEASED_DIMS = {
    "cosplace": {"VGG16": (64, 128, 256, 512), "ResNet18": (32, 64, 128, 256, 512),
                 "ResNet50": (32, 64, 128, 256, 512, 1024, 2048),
                 "ResNet101": (32, 64, 128, 256, 512, 1024, 2048),
                 "ResNet152": (32, 64, 128, 256, 512, 1024, 2048)},
    "eigenplaces": {"VGG16": (512,), "ResNet18": (256, 512),
                    "ResNet50": (128, 256, 512, 1024, 2048),
                    "ResNet101": (128, 256, 512, 1024, 2048)},
}


def recognise(state_dict: dict) -> Released | None:
    """The CosPlace / EigenPlaces model in `state_dict`, in this project's keys (`encoder.*`,
    `pool.*`), or None when the file is not one: other keys, a head that is not GeM + FC, a
    backbone that is not exactly a full ResNet18/34/50/101/152 or VGG16 cut at conv5_3, or an
    FC whose input is not the backbone's channel count."""
    if not state_dict or not all(isinstance(key, str) and isinstance(value, torch.Tensor)
                                 for key, value in state_dict.items()):
        return None
    head = {key[len(AUTHORS_PREFIX):]: value for key, value in state_dict.items()
            if key.startswith(AUTHORS_PREFIX)}
    backbone = {key[len(BACKBONE_PREFIX):]: value for key, value in state_dict.items()
                if key.startswith(BACKBONE_PREFIX)}
    if len(head) + len(backbone) != len(state_dict) or set(head) != set(HEAD_KEYS):
        return None
    if any(head[key].dim() != rank for key, rank in HEAD_KEYS.items()):
        return None
    fc_dim, in_channels = head["3.weight"].shape
    if head["1.p"].shape != (1,) or head["3.bias"].shape != (fc_dim,):
        return None
    arch, channels = _backbone_arch(backbone)
    if arch is None or channels != in_channels:
        return None
    converted = {f"encoder.{key}": value for key, value in backbone.items()}
    converted.update(from_authors_keys(state_dict, prefix="pool."))
    return Released(family="cosplace", arch=arch, aggregator="gem",
                    settings={"fc_dim": int(fc_dim)}, state_dict=converted, image_size=None,
                    descriptor_dim=int(fc_dim))


def _backbone_arch(backbone: dict) -> tuple[str | None, int]:
    """('resnetN', channels) for a full ResNet, ('vgg16', 512), or (None, 0)."""
    resnet = infer_resnet(backbone)
    if resnet is not None:
        depth, keep_last_block = resnet
        if keep_last_block:
            return f"resnet{depth}", resnet_channels(depth, keep_last_block)
        return None, 0
    with torch.device("meta"):
        vgg = nn.Sequential(*encoder_layers("vgg16")).state_dict()
    if {key: tuple(value.shape) for key, value in vgg.items()} == \
            {key: tuple(value.shape) for key, value in backbone.items()}:
        return "vgg16", 512
    return None, 0
