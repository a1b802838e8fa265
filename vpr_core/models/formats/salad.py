"""SALAD's released `dino_salad.ckpt` (serizba/salad v1.0.0).

The file is a bare state dict of the authors' Lightning `VPRModel` (their hubconf and eval.py
hand `torch.load`'s result straight to `load_state_dict`): `backbone.model.*` is the torch hub
DINOv2 (ViT-B/14 for the release; their code takes any of the four sizes) and `aggregator.*`
the SALAD pooling. The authors evaluate at 322x322.
"""
from __future__ import annotations

import torch

from ..dinov2 import DinoV2, config_of
from ..salad import SALAD
from .keys import fits, renamed
from .released import Released

FAMILY = "salad"
RELEASED_URL = "https://github.com/serizba/salad/releases/download/v1.0.0/dino_salad.ckpt"
IMAGE_SIZE = (322, 322)
ENCODER_PREFIX = "backbone.model."
POOL_PREFIX = "aggregator."


def salad_settings(state_dict: dict, prefix: str) -> dict | None:
    """SALAD's settings read from its weights' shapes under `prefix`, with `in_channels`."""
    try:
        return {"in_channels": int(state_dict[prefix + "token_features.0.weight"].shape[1]),
                "num_clusters": int(state_dict[prefix + "score.3.weight"].shape[0]),
                "cluster_dim": int(state_dict[prefix + "cluster_features.3.weight"].shape[0]),
                "token_dim": int(state_dict[prefix + "token_features.2.weight"].shape[0])}
    except (KeyError, AttributeError, IndexError):
        return None


def recognise(state_dict: dict) -> Released | None:
    """A `Released` for SALAD's file (keys `backbone.model.*`, `aggregator.*`), else None."""
    if not isinstance(state_dict, dict) or POOL_PREFIX + "score.3.weight" not in state_dict:
        return None
    arch = config_of(state_dict, ENCODER_PREFIX)
    settings = salad_settings(state_dict, POOL_PREFIX)
    converted = renamed(state_dict, {ENCODER_PREFIX: "encoder.", POOL_PREFIX: "pool."})
    if arch is None or settings is None or converted is None:
        return None
    with torch.device("meta"):  # shapes only: nothing allocated, nothing initialised
        encoder = DinoV2(arch)
        pool = SALAD(**settings)
    if not fits(converted, encoder, pool):
        return None
    settings.pop("in_channels")  # the encoder's width
    return Released(family=FAMILY, arch=arch, aggregator="salad", settings=settings,
                    state_dict=converted, image_size=IMAGE_SIZE, descriptor_dim=pool.output_dim)
