"""The check an export ends with: the written file run on a few images, its descriptors
compared with PyTorch's.

The images are a few of a dataset's (`--data-root`) or generated pixels, in a batch of another
size than the one the file was traced with, so the check also proves the dynamic batch axis.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..data.images import decode_file

EXPORT_BATCH = 2  # the example the graph is traced with
CHECK_BATCH = 3  # the images the file is checked on: another batch size
# the largest |difference| of descriptor entries (unit vectors) allowed, by the weights' type;
# int8: the file runs the same quantized kernels (TorchScript only)
TOLERANCES = {"fp32": 1e-4, "fp16": 5e-3, "bf16": 5e-2, "int8": 1e-4}


def generated_pixels(count: int, size: tuple[int, int], seed: int = 0) -> torch.Tensor:
    """[count, 3, H, W] float32 in [0, 1]: smooth random images (blurred noise, as photos
    are smoother than noise) rounded to 8-bit levels, as decoded images are."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(count, 3, max(2, size[0] // 8), max(2, size[1] // 8),
                        generator=generator)
    smooth = torch.nn.functional.interpolate(coarse, size=size, mode="bilinear",
                                             align_corners=False)
    return (smooth * 255).round() / 255


def dataset_pixels(paths: list, size: tuple[int, int]) -> torch.Tensor:
    """[len(paths), 3, H, W] float32 in [0, 1]: the images decoded and resized as the image
    feed does (PIL, then ToTensor's /255)."""
    pixels = np.stack([decode_file(str(path), size) for path in paths])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float().div(255)


def pick(paths: list, count: int = CHECK_BATCH) -> list:
    """`count` paths spread over `paths` (all when there are fewer)."""
    if len(paths) <= count:
        return list(paths)
    return [paths[int(i)] for i in np.linspace(0, len(paths) - 1, count)]


def largest_difference(found: torch.Tensor, expected: torch.Tensor) -> float:
    """max |found - expected| over every descriptor entry (inf when the shapes differ)."""
    if found.shape != expected.shape:
        return float("inf")
    return float((found.float() - expected.float()).abs().max())


def run_file(path: Path, file_format: str, images: torch.Tensor) -> torch.Tensor:
    """The file's descriptors of `images`: ONNX through onnxruntime's CPU provider,
    TorchScript through torch.jit.load."""
    if file_format == "onnx":
        from ..models.onnx_model import OnnxModel

        with torch.no_grad():
            return OnnxModel(path)(images)
    from .torchscript_file import run_torchscript

    return run_torchscript(path, images)
