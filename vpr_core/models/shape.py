"""What a model is: its backbone, its aggregator and the aggregator's settings (`ModelShape`),
as checkpoints record it, or as the keys of a reference checkpoint tell it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from .catalog import AGGREGATORS, ARCHES, ENCODER_DIMS


@dataclass(frozen=True)
class ModelShape:
    """`settings`: the aggregator's, as its module takes them (`num_clusters`, `out_rows`,
    ...), a sorted tuple of (name, value) pairs so that a shape can be compared and hashed."""

    arch: str
    aggregator: str
    settings: tuple = ()

    @classmethod
    def of(cls, arch: str, aggregator: str, settings: dict | None = None) -> ModelShape:
        kept = {k: v for k, v in (settings or {}).items() if v is not None}
        return cls(arch, aggregator, tuple(sorted(kept.items())))

    @property
    def kwargs(self) -> dict:
        return dict(self.settings)

    @property
    def num_clusters(self) -> int | None:
        return self.kwargs.get("num_clusters")

    def record(self) -> dict:
        """What a checkpoint keeps of it (its `model` key)."""
        return {"arch": self.arch, "aggregator": self.aggregator, "settings": self.kwargs}

    @classmethod
    def from_record(cls, record: dict, where: Path | str) -> ModelShape:
        arch, aggregator = record.get("arch"), record.get("aggregator")
        if arch not in ARCHES or aggregator not in AGGREGATORS or \
                not isinstance(record.get("settings", {}), dict):
            raise UserError(f"{where} records a model this version does not know ({arch} + "
                            f"{aggregator}); use the version that wrote it")
        return cls.of(arch, aggregator, record.get("settings"))

    @property
    def label(self) -> str:
        """'resnet50 mixvpr', 'vgg16 netvlad K=64': the backbone, the aggregator and K."""
        k = f" K={self.num_clusters}" if self.num_clusters is not None else ""
        return f"{self.arch} {self.aggregator}{k}"

    def describe(self) -> str:
        settings = " ".join(f"{k}={v}" for k, v in self.settings)
        return f"{self.arch} + {self.aggregator}" + (f" ({settings})" if settings else "")


def infer_model_shape(state_dict: dict, pooling_hint: str | None = None) -> ModelShape:
    """The model of a pytorch-NetVlad checkpoint (or of this project's first ones): AlexNet or
    VGG16 by its conv layers, NetVLAD's K by `pool.centroids`; max or avg pooling have no
    parameters, so `pooling_hint` (from the checkpoint or its flags.json) says which."""
    shapes = {key: tuple(value.shape) for key, value in state_dict.items()}
    if "encoder.28.weight" in shapes:
        arch = "vgg16"
    elif "encoder.10.weight" in shapes and "encoder.3.weight" in shapes:
        arch = "alexnet"
    else:
        return None
    if "pool.conv.bias" in shapes:
        raise UserError("the checkpoint has pool.conv.bias: it was trained with --vladv2, which "
                        "is not supported; use a NetVLAD v1 checkpoint")
    if "pool.centroids" in shapes:
        num_clusters, dim = shapes["pool.centroids"]
        if dim != ENCODER_DIMS[arch]:
            raise UserError(f"the checkpoint's pool.centroids are {dim}-d but its {arch} encoder "
                            f"gives {ENCODER_DIMS[arch]}-d features; the file is inconsistent")
        return ModelShape.of(arch, "netvlad", {"num_clusters": int(num_clusters)})
    if pooling_hint not in ("max", "avg"):
        # max and avg pooling have no parameters: nothing in the file tells them apart
        raise UserError("the checkpoint has no NetVLAD layer and neither it nor a flags.json "
                        "says whether it pools by max or avg; pass --aggregator max or avg")
    return ModelShape.of(arch, pooling_hint)


def check_shape(shape: ModelShape, arch: str | None, num_clusters: int | None, path: Path) -> None:
    """A clear error when the checkpoint disagrees with the --arch / --num-clusters asked for."""
    if arch is not None and arch != shape.arch:
        raise UserError(f"{path} holds a model of arch {shape.arch}, not {arch}; "
                        f"pass --arch {shape.arch} or leave --arch out")
    if num_clusters is not None and shape.num_clusters is not None \
            and num_clusters != shape.num_clusters:
        raise UserError(f"{path} holds a {shape.aggregator} with K={shape.num_clusters}, not "
                        f"{num_clusters}; pass --num-clusters {shape.num_clusters} or leave it out")
