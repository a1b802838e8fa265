"""MixVPR's released checkpoints (amaralibey/MixVPR, README "Weights": 4,096-, 512- and 128-d).

`resnet50_MixVPR_4096_channels(1024)_rows(4).ckpt` (and the 512-d `channels(256)_rows(2)`, the
128-d `channels(64)_rows(2)`) are, despite the extension, the model's bare state dict: the
authors load them with `model.load_state_dict(torch.load(path))`, strict. Keys:
`backbone.model.*`, torchvision's ResNet-50 names from conv1 to layer3 (layer4, avgpool and fc
are set to None, so they hold nothing), and `aggregator.*`, MixVPR's (mix_depth 4, mlp_ratio 1,
a 20x20 map of 1024 channels). The authors resize images to 320x320 (bicubic, ImageNet mean/std).
"""
from __future__ import annotations

import math

import torch

from ...errors import UserError
from ..encoders import encoder
from ..mixvpr import MixVPR, map_settings
from ..resnet import to_encoder_keys
from .keys import fits, shapes_of, with_prefix
from .released import Released

BACKBONE_PREFIX = "backbone.model."
AGGREGATOR_PREFIX = "aggregator."
ENCODER_CHANNELS = 1024  # ResNet-50 cut after layer3
ENCODER_STRIDE = 16  # a 320x320 image gives a 20x20 map


def recognise(state_dict: dict) -> Released | None:
    """The checkpoint in this project's terms, or None when it is not a MixVPR ResNet-50 one.

    `backbone.model.<torchvision name>` becomes `encoder.<index>` (conv1 -> 0, bn1 -> 1,
    layer1..3 -> 4..6) and `aggregator.X` becomes `pool.X`. The image size is the one whose
    map the aggregator was built for: 320x320 for the released 20x20.
    """
    if not isinstance(state_dict, dict):
        return None
    backbone = with_prefix(state_dict, BACKBONE_PREFIX)
    aggregator = with_prefix(state_dict, AGGREGATOR_PREFIX)
    if not backbone or not aggregator or len(backbone) + len(aggregator) != len(state_dict):
        return None
    found = _aggregator_settings(aggregator)
    if found is None:
        return None
    settings, side = found
    keys = to_encoder_keys(backbone)
    if len(keys) != len(backbone):  # a key that is no ResNet's (fc, layer4 of a full one...)
        return None
    converted = {f"encoder.{key}": value for key, value in keys.items()}
    converted.update((f"pool.{key}", value) for key, value in aggregator.items())
    with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
        pool = MixVPR(**map_settings(ENCODER_CHANNELS, (side, side)), **settings)
        if not fits(converted, encoder("resnet50", "mixvpr"), pool):
            return None
    size = side * ENCODER_STRIDE
    return Released(family="mixvpr", arch="resnet50", aggregator="mixvpr", settings=settings,
                    state_dict=converted, image_size=(size, size),
                    descriptor_dim=settings["out_channels"] * settings["out_rows"])


def _aggregator_settings(aggregator: dict) -> tuple[dict, int] | None:
    """(settings, side of the square map) read from MixVPR's keys and shapes; None when they
    are not exactly those of a MixVPR over a square map of the encoder's 1024 channels."""
    shapes = shapes_of(aggregator)
    channel, row = shapes.get("channel_proj.weight"), shapes.get("row_proj.weight")
    if channel is None or row is None or len(channel) != 2 or len(row) != 2:
        return None
    (out_channels, in_channels), (out_rows, hw) = channel, row
    side = math.isqrt(hw)
    if in_channels != ENCODER_CHANNELS or side * side != hw:
        return None
    mix_depth = sum(1 for key in shapes if key.startswith("mix.") and key.endswith(".mix.0.weight"))
    hidden = (shapes.get("mix.0.mix.1.weight") or (hw,))[0]
    mlp_ratio = hidden // hw if hidden % hw == 0 else hidden / hw
    settings = {"out_channels": out_channels, "mix_depth": mix_depth, "mlp_ratio": mlp_ratio,
                "out_rows": out_rows}
    try:
        with torch.device("meta"):  # the shapes the module holds, nothing allocated
            expected = MixVPR(**map_settings(in_channels, (side, side)), **settings).state_dict()
    except UserError:
        return None
    return (settings, side) if shapes_of(expected) == shapes else None
