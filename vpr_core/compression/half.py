"""`half --dtype bf16|fp16`: the encoder's weights in 16 bits, for GPU inference.

NetVLAD (a small share of the weights) stays in float32: its soft assignment and
normalisations need the precision, and its output descriptors are float32 as before.
"""
from __future__ import annotations

import torch

from ..errors import UserError

NAME = "half"
CPU_ONLY = False
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULTS = {"dtype": "bf16"}
LABEL_KEYS = ("dtype",)


def validate(settings: dict, model) -> dict:
    dtype = settings.get("dtype") or DEFAULTS["dtype"]
    if dtype not in DTYPES:
        raise UserError(f"--dtype {dtype!r} must be bf16 or fp16")
    return {"dtype": dtype}


def apply(model, settings: dict, context):
    model.encoder.to(DTYPES[settings["dtype"]])
    return model, {}


def rebuild(model, settings: dict, state_dict: dict, extra: dict):
    model.encoder.to(DTYPES[settings["dtype"]])
    return model
