"""An ONNX file run by onnxruntime, as a model `eval`, `benchmark` and `export`'s check use.

onnxruntime is imported only when a file is opened. This project's files (see
`vpr_core.export.metadata`) take RGB pixels in [0, 1] and say their image size; another
file with one [N, 3, H, W] input and one [N, D] output (a released ONNX, such as MegaLoc's)
is taken to expect ImageNet-normalised images, as the field's PyTorch models do.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..config.common import parse_image_size
from ..errors import UserError, first_line
from ..export.metadata import ExportMetadata

ONNX_SUFFIX = ".onnx"


def is_onnx(path) -> bool:
    return path is not None and Path(path).suffix.lower() == ONNX_SUFFIX and Path(path).is_file()


class OnnxModel(nn.Module):
    """images [N, 3, H, W] (see `takes_normalised`) -> descriptors [N, D] float32 on the CPU.

    `metadata`: this project's (None for another file); `image_size` (H, W) it was made at,
    else the input's fixed height and width, else None; `takes_normalised`: whether it wants
    ImageNet-normalised images rather than pixels in [0, 1]; `provider`: where it runs.
    """

    def __init__(self, path: Path, device: torch.device | None = None):
        super().__init__()
        self.path = Path(path)
        self.session = _session(self.path, device)
        self.provider = self.session.get_providers()[0]
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1 or len(inputs[0].shape) != 4 or inputs[0].shape[1] not in (3, None) \
                or len(outputs) != 1 or len(outputs[0].shape) != 2:
            raise UserError(f"{self.path} is not a place-recognition model: it needs one input "
                            f"[N, 3, H, W] and one output [N, D], and has "
                            f"{_shapes(inputs)} -> {_shapes(outputs)}")
        self.input_name = inputs[0].name
        props = self.session.get_modelmeta().custom_metadata_map
        self.metadata = ExportMetadata.from_props(props)
        self.takes_normalised = self.metadata is None
        self.image_size = self._image_size(inputs[0].shape)
        self.input_type = np.float16 if "float16" in inputs[0].type else np.float32

    def _image_size(self, shape) -> tuple[int, int] | None:
        if self.metadata is not None:
            return parse_image_size(self.metadata.image_size)
        if all(isinstance(side, int) for side in shape[2:]):
            return int(shape[2]), int(shape[3])
        return None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        pixels = images.detach().float().cpu().numpy().astype(self.input_type, copy=False)
        try:
            out = self.session.run(None, {self.input_name: np.ascontiguousarray(pixels)})[0]
        except Exception as error:  # noqa: BLE001 - onnxruntime's errors have no common type
            raise UserError(f"onnxruntime could not run {self.path} on images of "
                            f"{'x'.join(map(str, images.shape[-2:]))} "
                            f"({first_line(error, 200)}); pass the --image-size it "
                            f"was made for") from None
        return torch.from_numpy(np.asarray(out, dtype=np.float32))


def _session(path: Path, device: torch.device | None):
    """An inference session on CUDA when `device` is and onnxruntime has the provider, else
    on the CPU."""
    import onnxruntime

    providers = ["CPUExecutionProvider"]
    if device is not None and device.type == "cuda" and \
            "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        providers.insert(0, "CUDAExecutionProvider")
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are about its own graph passes
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # noqa: BLE001 - InvalidProtobuf, Fail, NoSuchFile...
        raise UserError(f"{path} is not an ONNX model onnxruntime can load "
                        f"({type(error).__name__}: {first_line(error, 160)}); pass "
                        f"a .onnx written by `export`, or a checkpoint") from None


def _shapes(values) -> str:
    return ", ".join("[" + ", ".join(str(d) for d in value.shape) + "]" for value in values)
