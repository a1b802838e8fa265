"""MegaLoc's released weights (gmberton/MegaLoc), in either of the two layouts it shipped.

- Since 2026-01-21, `model.safetensors` of the Hugging Face repository gberton/MegaLoc: the
  authors' own DINOv2 ViT-B/14 under `backbone.*` (the hub's names, without the unused
  `mask_token`) and `aggregator.*`. A safetensors file: `torch.load` cannot read it.
- Before, `megaloc.torch` of the GitHub release v1.0: a bare state dict with the torch hub
  DINOv2 under `backbone.model.*` and the same `aggregator.*`.

`aggregator.agg.*` is a SALAD with 256-d clusters and `aggregator.linear.*` its projection to
8,448 dimensions (see `vpr_core.models.megaloc`). The authors evaluate on the images' own
size, each side resized to the nearest multiple of 14 inside the model (antialiased).
"""
from __future__ import annotations

import torch

from ..dinov2 import DinoV2, config_of
from ..megaloc import MegaLoc
from .keys import fits, renamed
from .released import Released
from .salad import salad_settings

FAMILY = "megaloc"
RELEASED_URLS = {
    "safetensors": "https://huggingface.co/gberton/MegaLoc/resolve/main/model.safetensors",
    "torch": "https://github.com/gmberton/MegaLoc/releases/download/v1.0/megaloc.torch",
}
IMAGE_SIZE = None
ENCODER_PREFIXES = ("backbone.model.", "backbone.")  # the v1.0 layout, the current one
POOL_PREFIX = "aggregator."


def recognise(state_dict: dict) -> Released | None:
    """A `Released` for MegaLoc's weights (either layout), else None."""
    if not isinstance(state_dict, dict) or POOL_PREFIX + "linear.weight" not in state_dict:
        return None
    encoder_prefix = next((prefix for prefix in ENCODER_PREFIXES
                           if prefix + "cls_token" in state_dict), None)
    settings = salad_settings(state_dict, POOL_PREFIX + "agg.")
    if encoder_prefix is None or settings is None:
        return None
    arch = config_of(state_dict, encoder_prefix)
    converted = renamed(state_dict, {encoder_prefix: "encoder.", POOL_PREFIX: "pool."})
    if arch is None or converted is None:
        return None
    if "encoder.mask_token" not in converted:  # the current layout: the hub's initial zeros
        cls_token = converted["encoder.cls_token"]
        converted["encoder.mask_token"] = torch.zeros(
            1, cls_token.shape[-1], dtype=cls_token.dtype, device=cls_token.device)
    settings["output_dim"] = int(state_dict[POOL_PREFIX + "linear.weight"].shape[0])
    with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
        encoder = DinoV2(arch)
        pool = MegaLoc(**settings)
    if not fits(converted, encoder, pool):
        return None
    settings.pop("in_channels")  # the encoder's width
    return Released(family=FAMILY, arch=arch, aggregator="megaloc", settings=settings,
                    state_dict=converted, image_size=IMAGE_SIZE, descriptor_dim=pool.output_dim)
