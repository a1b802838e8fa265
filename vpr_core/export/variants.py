"""Which compressed variants export, and how: the weights' precision a file records, and the
variants a format cannot hold (refused in one line before any model is built)."""
from __future__ import annotations

from ..errors import UserError


def weight_precision(steps: list[dict]) -> str:
    """The weights' precision after compression `steps` (first first): 'int8' after quantize,
    else the last `half` step's 'fp16' or 'bf16' (the encoder's type), else 'fp32'."""
    if any(step["method"] == "quantize" for step in steps):
        return "int8"
    halves = [step["settings"]["dtype"] for step in steps if step["method"] == "half"]
    return halves[-1] if halves else "fp32"


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
