"""Which model a checkpoint holds, from its keys and shapes: this project's (it records its
model), pytorch-NetVlad's (AlexNet or VGG16 + NetVLAD), or one of the field's released files
(`vpr_core.models.formats`), whose keys are mapped onto this project's."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .formats import FAMILIES
from .shape import ModelShape, infer_model_shape

PROJECT, REFERENCE = "vpr-sweeps", "pytorch-NetVlad"


@dataclass(frozen=True)
class Recognised:
    """A checkpoint's model (`shape`), its weights in this project's keys, and the image size
    its authors evaluate it at (None: the images' own, or whatever `--image-size` says)."""

    family: str
    shape: ModelShape
    state_dict: dict
    image_size: tuple[int, int] | None = None


def recognise(checkpoint: dict, path: Path, aggregator_hint: str | None = None) -> Recognised:
    """The model of a loaded checkpoint (see `vpr_core.models.checkpoints.load_checkpoint`);
    a file that is none of the known formats is a `UserError` naming what was found."""
    state = checkpoint["state_dict"]
    if isinstance(checkpoint.get("model"), dict):
        return Recognised(PROJECT, ModelShape.from_record(checkpoint["model"], path), state)
    shape = infer_model_shape(state, aggregator_hint)
    if shape is not None:
        return Recognised(REFERENCE, shape, state)
    for family in FAMILIES:
        released = family.recognise(state)
        if released is not None:
            return Recognised(released.family, ModelShape.of(released.arch, released.aggregator,
                                                             released.settings),
                              released.state_dict, released.image_size)
    raise UserError(f"{path} holds no model this version knows: {found(state)}; pass a "
                    f"checkpoint of this project, of pytorch-NetVlad, or a released CosPlace, "
                    f"EigenPlaces, MixVPR, SALAD, BoQ or MegaLoc file")


def family_of(checkpoint: dict, path: Path, aggregator: str) -> str:
    """The format of a loaded checkpoint whose model is known to have `aggregator` (which only
    pytorch-NetVlad's max/avg pooling needs): `Recognised.family`, or this project's
    'vpr-sweeps compressed' for a compressed variant."""
    if checkpoint.get("compression"):
        return f"{PROJECT} compressed"
    return recognise(checkpoint, path, aggregator).family


def found(state: dict) -> str:
    """A few words on what a state dict holds: its key prefixes and their counts."""
    prefixes: dict[str, int] = {}
    for key in state:
        head = ".".join(key.split(".")[:2])
        prefixes[head] = prefixes.get(head, 0) + 1
    top = sorted(prefixes.items(), key=lambda item: -item[1])[:4]
    return f"{len(state)} tensors under " + ", ".join(f"{k}.* ({n})" for k, n in top)
