"""Which compressed variants export, and how: the weights' precision a file records, and the
variants a format cannot hold (refused in one line before any model is built)."""
from __future__ import annotations

import torch
from torch import nn

from ..errors import UserError


def weight_precision(model: nn.Module, steps: list[dict]) -> str:
    """'int8' for a model that went through compression `steps` with quantize, else 'fp32',
    'fp16' or 'bf16': the type of the encoder's weights (a `half` variant's)."""
    if any(step["method"] == "quantize" for step in steps):
        return "int8"
    dtype = next(model.encoder.parameters()).dtype
    return {torch.float16: "fp16", torch.bfloat16: "bf16"}.get(dtype, "fp32")


def refusal(steps: list[dict], precision: str, file_format: str) -> str | None:
    """Why a model that went through compression `steps` (first first) in `precision` cannot
    be written as `file_format` (None: it can)."""
    if file_format == "onnx" and any(step["method"] == "quantize" for step in steps):
        return ("an int8 (quantize) variant holds PyTorch's own x86 quantized modules, which "
                "torch's ONNX exporter cannot read; pass --format torchscript, or export the "
                "float checkpoint it was made from (onnxruntime's quantize_static makes an "
                "int8 ONNX of that file)")
    if precision == "bf16" and file_format == "onnx":
        return ("a bf16 (half --dtype bf16) variant has no ONNX file onnxruntime's CPU "
                "provider runs (no bfloat16 convolution); export the float checkpoint it was "
                "made from, a --dtype fp16 variant, or pass --format torchscript")
    return None


def check_exportable(steps: list[dict], precision: str, file_format: str) -> None:
    problem = refusal(steps, precision, file_format)
    if problem:
        raise UserError(problem)
