"""ResNet encoders (torchvision's ResNet18/34/50/101/152) as the layers of an nn.Sequential.

The layers are torchvision's children in order, without the global pooling and the classifier:
`[conv1, bn1, relu, maxpool, layer1, layer2, layer3]`, plus `layer4` when the last block is kept.
Sequential index i holds `LAYER_NAMES[i]`, so torchvision's `layer1.0.conv1.weight` is
`4.0.conv1.weight` here, the keys CosPlace and EigenPlaces release (`backbone.N.*`).

Which authors keep which cut, and what they freeze when starting from ImageNet weights (only
parameters are frozen: the BatchNorm running statistics of frozen layers still update in train
mode in all three):

- CosPlace / EigenPlaces (`cosplace_model/cosplace_network.py` `get_backbone`,
  `eigenplaces_model/eigenplaces_network.py` `_get_backbone`): all blocks kept (2048 channels for
  ResNet50); the children before `layer3` are frozen (conv1, bn1, layer1, layer2: frozen prefix 6)
  unless CosPlace's `--train_all_layers` (default False) is given. EigenPlaces always freezes them.
- MixVPR (`models/backbones/resnet.py`, `main.py`): `layers_to_crop=[4]` drops layer4 (1024
  channels); `layers_to_freeze=2` in `main.py` (the class's default too) freezes conv1, bn1,
  layer1 and layer2: frozen prefix 6, layer3 trains.
- BoQ-ResNet50 (`src/backbones.py` `ResNet`, `hubconf.py`): `crop_last_block=True` drops layer4;
  the class freezes `net[:len(net) - unfreeze_n_blocks]`. Its default `unfreeze_n_blocks=1` trains
  layer3 only (frozen prefix 6); `train.py`'s `HyperParams` default of 2 (set for DINOv2) would
  train layer2 too (frozen prefix 5) when the backbone is switched to a ResNet.
"""
from __future__ import annotations

import torch
import torchvision
from torch import nn

from ..errors import UserError

DEPTHS = (18, 34, 50, 101, 152)
LAYER_NAMES = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")
# residual blocks in layer1..layer4, and whether they are bottlenecks (conv1/conv2/conv3)
BLOCKS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3),
          152: (3, 8, 36, 3)}
BOTTLENECK = {18: False, 34: False, 50: True, 101: True, 152: True}
# torchvision's ImageNet weights (IMAGENET1K_V1), the starting point of all the authors above
# (keyed by arch name, as backbones.IMAGENET_URLS is)
IMAGENET_URLS = {
    "resnet18": "https://download.pytorch.org/models/resnet18-f37072fd.pth",
    "resnet34": "https://download.pytorch.org/models/resnet34-b627a593.pth",
    "resnet50": "https://download.pytorch.org/models/resnet50-0676ba61.pth",
    "resnet101": "https://download.pytorch.org/models/resnet101-63fe2227.pth",
    "resnet152": "https://download.pytorch.org/models/resnet152-394f9c45.pth",
}


def check_depth(depth: int) -> int:
    if depth not in DEPTHS:
        raise UserError(f"unknown ResNet depth {depth!r}; use one of {', '.join(map(str, DEPTHS))}")
    return depth


def layer_names(keep_last_block: bool) -> tuple[str, ...]:
    """torchvision's names of the Sequential's layers, in order."""
    return LAYER_NAMES if keep_last_block else LAYER_NAMES[:-1]


def resnet_layers(depth: int, keep_last_block: bool) -> list[nn.Module]:
    """torchvision's ResNet-`depth` children up to layer3 (or layer4), randomly initialised as
    torchvision initialises them; `nn.Sequential(*layers)` maps [N, 3, H, W] to
    [N, resnet_channels(...), H/16, W/16] (H/32, W/32 with layer4), rounded up at each stride."""
    resnet = getattr(torchvision.models, f"resnet{check_depth(depth)}")(weights=None)
    return [getattr(resnet, name) for name in layer_names(keep_last_block)]


def resnet_channels(depth: int, keep_last_block: bool) -> int:
    """Channels of the encoder's output: 512 / 2048 with layer4 (basic / bottleneck blocks),
    half that without."""
    full = 2048 if BOTTLENECK[check_depth(depth)] else 512
    return full if keep_last_block else full // 2


def to_encoder_keys(state: dict, prefix: str = "") -> dict:
    """Keys of the Sequential ('4.0.conv1.weight') from torchvision-named keys under `prefix`
    ('' for torchvision's files, 'backbone.model.' for MixVPR's): `conv1.weight` -> `0.weight`,
    `bn1.running_mean` -> `1.running_mean`, `layerK.*` -> `(3+K).*`. Keys outside `prefix` and
    the classifier (`fc.*`) are dropped."""
    index = {name: str(i) for i, name in enumerate(LAYER_NAMES)}
    out = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        name, _, rest = key[len(prefix):].partition(".")
        if name in index and rest:
            out[f"{index[name]}.{rest}"] = value
    return out


def frozen_prefix(depth: int, keep_last_block: bool, trainable: str) -> int:
    """How many leading Sequential layers are frozen when the layers from `trainable` (a name of
    `layer_names`, e.g. 'layer3') on train: 'conv1' -> 0 (all train), 'layer3' -> 6 (the
    authors' habit, see the module's docstring)."""
    check_depth(depth)
    names = layer_names(keep_last_block)
    if trainable not in names:
        raise UserError(f"cannot train a ResNet from {trainable!r}; use one of {', '.join(names)}")
    return names.index(trainable)


def infer_resnet(state: dict, prefix: str = "") -> tuple[int, bool] | None:
    """(depth, keep_last_block) of the encoder whose Sequential keys ('0.weight', '4.0.conv1.*')
    are under `prefix` in `state`, or None when they are not exactly a ResNet's keys and shapes.

    BatchNorm's `num_batches_tracked` may be missing (files from before it existed; loading such a
    state fills it in), anything else must match.
    """
    shapes = {key[len(prefix):]: tuple(value.shape) for key, value in state.items()
              if key.startswith(prefix)}
    keep_last_block = "7.0.conv1.weight" in shapes
    blocks = tuple(_count_blocks(shapes, str(4 + i)) for i in range(4 if keep_last_block else 3))
    bottleneck = "4.0.conv3.weight" in shapes
    for depth in DEPTHS:
        if BLOCKS[depth][:len(blocks)] == blocks and BOTTLENECK[depth] == bottleneck:
            if _same_shapes(shapes, depth, keep_last_block):
                return depth, keep_last_block
            return None  # same blocks, other widths: a ResNeXt or a wide ResNet
    return None


def _count_blocks(shapes: dict, layer: str) -> int:
    count = 0
    while f"{layer}.{count}.conv1.weight" in shapes:
        count += 1
    return count


def _same_shapes(shapes: dict, depth: int, keep_last_block: bool) -> bool:
    with torch.device("meta"):  # shapes only: no memory, no initialisation time
        expected = nn.Sequential(*resnet_layers(depth, keep_last_block)).state_dict()
    expected = {key: tuple(value.shape) for key, value in expected.items()}
    optional = {key for key in expected if key.endswith(".num_batches_tracked")}
    return (set(expected) - optional <= set(shapes) <= set(expected)
            and all(expected[key] == shape for key, shape in shapes.items()))
