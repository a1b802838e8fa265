"""Writing the graph as ONNX with torch's torch.export-based exporter (`dynamo=True`).

Why that exporter: the TorchScript-based one (`dynamo=False`) fails on this project's models
once an axis is dynamic (GeM's pooling kernel taken from the map's shape, DINOv2's bicubic
resampling of its positional embedding), while torch.export handles every family with a
dynamic batch axis, and height and width where the model allows (`graph.takes_any_size`).
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import warnings
from pathlib import Path

import torch

from ..errors import CommandFailed, UserError, first_line
from .graph import INPUT, OUTPUT
from .metadata import ExportMetadata

# the loggers of onnxscript's optimiser, which speaks of its own steps ("Skipping constant
# folding ..."), nothing a user of this command acts on
_CHATTY = ("onnxscript", "onnx_ir")
MAX_SIDE = 8192  # the largest height or width a dynamic axis is declared for
# protobuf's limit on one file; larger models need external data files (ViT-g: 4.5 GB), which
# this command does not write, so that the file is one file, renamed into place whole
MAX_BYTES = 2**31 - 2**24


def write_onnx(graph: torch.nn.Module, example: torch.Tensor, path: Path, opset: int,
               any_size: bool, metadata: ExportMetadata) -> ExportMetadata:
    """Export `graph` (traced on `example` [B, 3, H, W]) to `path` with `metadata`; returns
    the metadata written: with the input's axes that are dynamic in the file ('batch',
    'height', 'width')."""
    from torch.export import Dim

    weights = sum(t.numel() * t.element_size() for t in graph.state_dict().values())
    if weights > MAX_BYTES:
        raise UserError(f"the {metadata.arch} + {metadata.aggregator} model's weights take "
                        f"{weights / 1e9:.1f} GB, over the 2 GB an ONNX file holds without "
                        f"external data files; pass --format torchscript")
    axes = {0: Dim("batch", min=1, max=65536)}
    if any_size:
        axes.update({2: Dim("height", min=1, max=MAX_SIDE), 3: Dim("width", min=1,
                                                                    max=MAX_SIDE)})
    with _quiet():
        try:
            program = torch.onnx.export(graph, (example,), None, input_names=[INPUT],
                                        output_names=[OUTPUT], dynamic_shapes=(axes,),
                                        opset_version=opset, dynamo=True, verbose=False)
        except Exception as error:  # noqa: BLE001 - the exporter raises many kinds
            raise CommandFailed(f"torch's ONNX exporter could not export this {metadata.arch} + "
                            f"{metadata.aggregator} model ({type(error).__name__}: "
                            f"{first_line(error, 200)}); try --format torchscript"
                            ) from None
    dynamic = _dynamic_axes(program.model.graph.inputs[0])
    metadata = dataclasses.replace(metadata, dynamic_axes=",".join(dynamic))
    program.model.metadata_props.update(metadata.props())
    program.save(str(path), external_data=False)
    return metadata


def _dynamic_axes(value) -> tuple[str, ...]:
    """The names of the axes of the graph's input that have no fixed length (torch.export
    makes an axis fixed when the model computes with its length in Python)."""
    names = ("batch", "channels", "height", "width")
    return tuple(name for name, dim in zip(names, value.shape) if not isinstance(dim, int))


@contextlib.contextmanager
def _quiet():
    loggers = [logging.getLogger(name) for name in _CHATTY]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)
