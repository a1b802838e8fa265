"""What an exported file says of itself: the ONNX file's metadata_props, a TorchScript file's
extra file `vpr_export.json`. `eval` reads the image size and the input convention back."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

MARKER = "vpr_export"  # the key (and its version) that tells this project's files from others
VERSION = "1"
TORCHSCRIPT_FILE = "vpr_export.json"


@dataclass(frozen=True)
class ExportMetadata:
    """`image_size` 'HxW' (the size it was made and checked at); `dynamic_axes` the input's
    axes of any length ('batch', 'height', 'width'); `precision` the weights' ('fp32',
    'fp16', 'bf16'); `compression` the variant's methods, first first ('' for none); `note`
    what the file does not hold (a PQ variant's codebook)."""

    arch: str
    aggregator: str
    model: str  # the ModelShape's record, as JSON
    descriptor_dim: int
    image_size: str
    dynamic_axes: str
    input: str
    source: str
    precision: str
    compression: str = ""
    note: str = ""

    @property
    def any_size(self) -> bool:
        """Whether the file takes images of any height and width."""
        return "height" in self.dynamic_axes.split(",")

    def shape(self, path):
        """The `ModelShape` of the model file `path` holds (named in what it refuses)."""
        from ..models.shape import ModelShape

        return ModelShape.from_record(json.loads(self.model), path)

    def props(self) -> dict[str, str]:
        """The metadata as the string pairs ONNX's metadata_props hold."""
        return {MARKER: VERSION, **{k: str(v) for k, v in asdict(self).items()}}

    def to_json(self) -> str:
        return json.dumps(self.props(), indent=2, sort_keys=True)

    @classmethod
    def from_props(cls, props: dict) -> ExportMetadata | None:
        """The metadata of a file's props; None when they are not this project's."""
        if props.get(MARKER) != VERSION:
            return None
        names = cls.__dataclass_fields__
        values = {k: v for k, v in props.items() if k in names}
        try:
            values["descriptor_dim"] = int(values["descriptor_dim"])
            return cls(**values)
        except (KeyError, TypeError, ValueError):
            return None
