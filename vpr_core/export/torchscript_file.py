"""Writing the graph as TorchScript: `torch.jit.trace`, with the metadata as an extra file.

Tracing records the operations run on the example, so sizes the model computes with in
Python (DINOv2's patch grid, MixVPR's map) are fixed at the example's; the batch axis stays
free, as shapes read from tensors are traced.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from .metadata import TORCHSCRIPT_FILE, ExportMetadata


def write_torchscript(graph: torch.nn.Module, example: torch.Tensor, path: Path,
                      metadata: ExportMetadata) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's notes on Python values it fixes
        traced = torch.jit.trace(graph, (example,), check_trace=False)
        torch.jit.save(traced, str(path), _extra_files={TORCHSCRIPT_FILE: metadata.to_json()})


def run_torchscript(path: Path, images: torch.Tensor) -> torch.Tensor:
    """Descriptors [N, D] of `images` by the file at `path`, loaded afresh."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu")
    with torch.no_grad():
        return module(images).float()
