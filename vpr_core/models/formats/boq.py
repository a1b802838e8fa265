"""BoQ's released checkpoints (amaralibey/Bag-of-Queries, release v1.0, loaded by its torch.hub
entry `get_trained_boq` with a strict `load_state_dict`): bare state dicts.

- `resnet50_16384.pth`: `backbone.net.{0,1,4,5,6}.*`, ResNet-50 to layer3 as
  `nn.Sequential(conv1, bn1, relu, maxpool, layer1, layer2, layer3)` (already this project's
  indices), and `aggregator.*`: BoQ 1024 -> 512 channels, 64 queries, 2 blocks, row_dim 32.
  Evaluated at 384x384: a 24x24 layer3 map.
- `dinov2_12288.pth`: `backbone.dino.*`, the torch.hub `dinov2_vitb14` model under its hub
  names (with `norm.*` and `mask_token`, which BoQ never uses), and `aggregator.*`: BoQ 768 ->
  384 channels, 64 queries, 2 blocks, row_dim 32. Trained at 280x280, evaluated at 322x322.

What the aggregator is fed: for ResNet-50, the layer3 map [N, 1024, H/16, W/16]; for DINOv2,
the tokens after the last block WITHOUT the final norm, the class token dropped, the patch
tokens (row-major) laid out as a map [N, 768, H/14, W/14] for BoQ's 3x3 conv.
"""
from __future__ import annotations

import torch

from ...errors import UserError
from ..boq import BoQ
from ..encoders import encoder
from .keys import fits, shapes_of, with_prefix
from .released import Released

AGGREGATOR_PREFIX = "aggregator."
# arch: (the released file's backbone prefix, the encoder's channels, the authors' image size)
ARCHES = {
    "resnet50": ("backbone.net.", 1024, (384, 384)),
    "dinov2_vitb14": ("backbone.dino.", 768, (322, 322)),
}
DINOV2_FINAL_NORM = False  # BoQ reads the last block's tokens, not the final norm's output


def recognise(state_dict: dict) -> Released | None:
    """The checkpoint in this project's terms, or None when it is not a BoQ one.

    `backbone.net.X` / `backbone.dino.X` becomes `encoder.X` and `aggregator.X` becomes
    `pool.X`; the settings are read from the aggregator's shapes.
    """
    if not isinstance(state_dict, dict):
        return None
    aggregator = with_prefix(state_dict, AGGREGATOR_PREFIX)
    found = _aggregator_settings(aggregator) if aggregator else None
    if found is None:
        return None
    settings, in_channels = found
    for arch, (prefix, channels, image_size) in ARCHES.items():
        backbone = with_prefix(state_dict, prefix)
        if not backbone or len(backbone) + len(aggregator) != len(state_dict) \
                or in_channels != channels:
            continue
        converted = {f"encoder.{key}": value for key, value in backbone.items()}
        converted.update((f"pool.{key}", value) for key, value in aggregator.items())
        with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
            if not fits(converted, encoder(arch, "boq"), BoQ(channels, **settings)):
                return None
        return Released(family="boq", arch=arch, aggregator="boq", settings=settings,
                        state_dict=converted, image_size=image_size,
                        descriptor_dim=settings["proj_channels"] * settings["row_dim"])
    return None


def _aggregator_settings(aggregator: dict) -> tuple[dict, int] | None:
    """(settings, in_channels) read from BoQ's keys and shapes; None when they are not exactly
    those of a BoQ."""
    shapes = shapes_of(aggregator)
    proj, queries, fc = (shapes.get(key) for key in ("proj_c.weight", "boqs.0.queries",
                                                     "fc.weight"))
    if proj is None or queries is None or fc is None \
            or (len(proj), len(queries), len(fc)) != (4, 3, 2):
        return None
    proj_channels, in_channels = proj[:2]
    num_layers = len({key.split(".")[1] for key in shapes if key.startswith("boqs.")})
    settings = {"proj_channels": proj_channels, "num_queries": queries[1],
                "num_layers": num_layers, "row_dim": fc[0]}
    try:
        with torch.device("meta"):  # the shapes the module holds, nothing allocated
            expected = BoQ(in_channels, **settings).state_dict()
    except UserError:
        return None
    return (settings, in_channels) if shapes_of(expected) == shapes else None
