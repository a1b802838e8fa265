"""The encoders (backbones) by name: AlexNet and VGG16 (`backbones`), the ResNets (`resnet`) and
the DINOv2 ViTs (`dinov2`), each cut where the chosen aggregator takes its features, with their
pretrained weights, the layers those weights leave trainable, and their output's size."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError
from . import backbones, dinov2, resnet
from .catalog import ARCHES, CNNS, PATCH, RESNETS, UNNORMED_TOKENS, keeps_last_block
from .weights import encoder_state

# with pretrained weights, the encoder's last stages that train: AlexNet/VGG16 layers of
# `features` (the reference's), a ResNet's layers from layer3 on (CosPlace, MixVPR and BoQ
# freeze conv1 to layer2), DINOv2 blocks (SALAD trains the last 4)
DINOV2_TRAINED_BLOCKS = 4
RESNET_FIRST_TRAINED = "layer3"


def check_arch(arch: str) -> str:
    if arch not in ARCHES:
        raise UserError(f"unknown arch {arch!r}; use one of {', '.join(ARCHES)}")
    return arch


def encoder(arch: str, aggregator: str = "netvlad") -> nn.Module:
    """A freshly initialised encoder of `arch`, cut where `aggregator` takes its features."""
    check_arch(arch)
    if arch in RESNETS:
        return nn.Sequential(*resnet.resnet_layers(int(arch[len("resnet"):]),
                                                   keeps_last_block(arch, aggregator)))
    if arch in CNNS:
        return nn.Sequential(*backbones.encoder_layers(arch))
    return dinov2.DinoV2(arch, final_norm=aggregator not in UNNORMED_TOKENS)


def build_encoder(arch: str, weights: str = "imagenet", aggregator: str = "netvlad",
                  trainable: int | None = None) -> nn.Module:
    """The encoder of `arch` (for `aggregator`) with `weights` 'imagenet' (the authors'
    pretrained weights), 'none' or a path to a local weight file; with pretrained weights only
    its last stages train (`trainable` of them; None: the authors' habit)."""
    built = encoder(arch, aggregator)
    if weights == "none":
        return built
    state = encoder_state(arch, weights)
    try:
        missing, unexpected = built.load_state_dict(state, strict=False)
    except RuntimeError:  # tensors of other shapes: another architecture's weights
        raise UserError(f"--weights {weights} does not fit the {arch} encoder (its tensors have "
                        f"other shapes); pass weights of a {arch} model") from None
    if missing:
        raise UserError(f"--weights {weights} has no weights for {arch} layers "
                        f"({', '.join(missing[:3])}...); pass weights of a {arch} model")
    freeze_pretrained_layers(built, arch, trainable)
    return built


def trainable_stages(arch: str, encoder_module: nn.Module) -> int:
    """The authors' number of last stages that train from pretrained weights."""
    if arch in CNNS:
        return backbones.TRAINABLE_TAIL[arch]
    if arch in RESNETS:
        layers = len(encoder_module)
        return layers - resnet.LAYER_NAMES.index(RESNET_FIRST_TRAINED)
    return DINOV2_TRAINED_BLOCKS


def freeze_pretrained_layers(encoder_module: nn.Module, arch: str,
                             trainable: int | None = None) -> None:
    """Freeze all but the encoder's last `trainable` stages (None: the authors' habit):
    Sequential layers of AlexNet, VGG16 and the ResNets, DINOv2's blocks."""
    count = trainable_stages(arch, encoder_module) if trainable is None else trainable
    if isinstance(encoder_module, dinov2.DinoV2):
        encoder_module.freeze_all_but_last(min(count, len(encoder_module.blocks)))
        return
    layers = list(encoder_module.children())
    if not 0 <= count <= len(layers):
        raise UserError(f"--trainable-stages {count} is more than the {len(layers)} layers of "
                        f"the {arch} encoder")
    for layer in layers[:len(layers) - count]:
        for parameter in layer.parameters():
            parameter.requires_grad = False


def fitting_size(arch: str, size: tuple[int, int]) -> tuple[int, int]:
    """`size` (H, W), for a ViT rounded to whole patches (as MegaLoc's authors do)."""
    if check_arch(arch) in CNNS + RESNETS:
        return tuple(size)
    return tuple(max(1, round(side / PATCH)) * PATCH for side in size)


def feature_map_size(arch: str, image_size: tuple[int, int], aggregator: str = "netvlad"
                     ) -> tuple[int, int]:
    """(H', W') of the encoder's feature map (for `aggregator`) for images of `image_size`
    (H, W). CNNs are run on the meta device (no memory, no time); DINOv2 needs a multiple of
    its patch. Raises `UserError` when the images do not fit the encoder."""
    height, width = image_size
    if check_arch(arch) not in CNNS + RESNETS:
        if height % PATCH or width % PATCH:
            fit = f"{max(1, round(height / PATCH)) * PATCH}x{max(1, round(width / PATCH)) * PATCH}"
            raise UserError(f"images of {height}x{width} do not fit {arch}'s {PATCH}-pixel "
                            f"patches; pass --image-size {fit} (SALAD's authors use 322x322)")
        return height // PATCH, width // PATCH
    with torch.device("meta"):
        built = encoder(arch, aggregator)
        try:
            out = built(torch.empty(1, 3, height, width))
        except RuntimeError:
            out = None
    if out is None or out.shape[-1] < 1 or out.shape[-2] < 1:
        raise UserError(f"images of {height}x{width} are too small for the {arch} encoder; "
                        f"pass a larger --image-size (64x64 works for AlexNet and VGG16)")
    return int(out.shape[-2]), int(out.shape[-1])
