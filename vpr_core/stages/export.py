"""The `export` stage: a checkpoint as one ONNX or TorchScript file, checked against PyTorch.

The file is written to a temporary name beside `--out`, run on a few images, and renamed onto
`--out` only when its descriptors are within the tolerance of the PyTorch model's: a failed
export leaves nothing behind (and an older `--out` as it was).
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from ..compression.variants import chain
from ..config import ExportConfig
from ..config.common import format_image_size
from ..data import open_split, resolve_image_size
from ..errors import CommandFailed, UserError
from ..export import check
from ..export.graph import INPUT_CONVENTION, DescriptorGraph, takes_any_size
from ..export.metadata import ExportMetadata
from ..export.variants import check_exportable, weight_precision
from ..fileio import atomic_path
from ..models.catalog import is_vit
from ..models.checkpoints import checkpoint_file, load_checkpoint
from ..models.encoders import feature_map_size, fitting_size
from .starting_model import model_from_checkpoint

PQ_NOTE = ("a PQ variant's codebook compresses the database, it is data, not a model: the "
           "file holds the encoder and aggregator and gives exact descriptors; encode the "
           "database with a faiss IndexPQ of them")


@dataclass(frozen=True)
class Exported:
    """What was written: the file, its format and metadata, the images it was checked on
    (their count and where from), the largest difference from PyTorch and the tolerance."""

    out: Path
    source: Path
    format: str
    metadata: ExportMetadata
    checked_on: str
    check_batch: int
    max_difference: float
    tolerance: float

    def to_dict(self) -> dict:
        return {"out": str(self.out), "size_mb": round(self.out.stat().st_size / 1e6, 3),
                "source": str(self.source), "format": self.format,
                **self.metadata.props(), "checked_on": self.checked_on,
                "check_batch": self.check_batch, "max_abs_difference": self.max_difference,
                "tolerance": self.tolerance}

    def lines(self) -> list[str]:
        meta = self.metadata
        axes = meta.dynamic_axes.replace(",", ", ") if meta.dynamic_axes else "batch"
        fixed = "" if meta.any_size or self.format != "onnx" else \
            f"; height and width fixed at {meta.image_size}"
        size = self.out.stat().st_size / 1e6
        lines = [f"wrote {self.out} ({self.format}, {meta.precision}, {size:.1f} MB): "
                 f"{meta.arch} + "
                 f"{meta.aggregator}{' ' + meta.compression if meta.compression else ''}, "
                 f"images [N, 3, H, W] RGB in [0, 1] -> descriptors [N, {meta.descriptor_dim}]",
                 f"dynamic axes: {axes}{fixed}; made at {meta.image_size}",
                 f"checked on {self.check_batch} {self.checked_on}: largest difference from "
                 f"PyTorch {self.max_difference:.2e} (tolerance {self.tolerance:g})"]
        if meta.note:
            lines.append(f"note: {meta.note}")
        return lines


def run(config: ExportConfig) -> Exported:
    """Export `config.resume`'s model to `config.out` and check it; `UserError` for what
    cannot be exported, `CommandFailed` (nothing written) when the check fails."""
    config = config.validate()
    path = checkpoint_file(config.resume, config.ckpt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's notes on storages it reads (int8's too)
        checkpoint = load_checkpoint(path)
        steps = chain(checkpoint.get("compression"))
        precision = weight_precision(steps)
        check_exportable(steps, precision, config.format)  # before any model is built
        loaded = model_from_checkpoint(path, checkpoint=checkpoint)
    model = loaded.model.cpu().eval()
    images, checked_on, size = _check_images(config, loaded)
    feature_map_size(model.arch, size, model.aggregator)  # a UserError when it does not fit
    graph = DescriptorGraph(model).eval()
    with torch.no_grad():
        expected = graph(images)
    metadata = ExportMetadata(
        arch=model.arch, aggregator=model.aggregator, model=_record(model),
        descriptor_dim=int(expected.shape[1]), image_size=format_image_size(size),
        dynamic_axes="batch", input=INPUT_CONVENTION, source=str(path), precision=precision,
        compression=", ".join(step["method"] for step in steps),
        note=PQ_NOTE if any(step["method"] == "pq" for step in steps) else "")
    tolerance = config.tolerance or check.TOLERANCES[precision]
    example = images[:1].expand(check.EXPORT_BATCH, -1, -1, -1).contiguous()
    with atomic_path(config.out) as tmp:
        metadata = _write(config, graph, example, tmp, metadata)
        found = check.run_file(tmp, config.format, images)
        difference = check.largest_difference(found, expected)
        if not difference <= tolerance:
            raise CommandFailed(f"the exported file's descriptors differ from PyTorch's by "
                                f"{difference:.3g}, above the tolerance {tolerance:g}; "
                                f"nothing was written to {config.out}")
    return Exported(config.out, path, config.format, metadata, checked_on, len(images),
                    difference, tolerance)


def _write(config: ExportConfig, graph: DescriptorGraph, example: torch.Tensor, tmp: Path,
           metadata: ExportMetadata) -> ExportMetadata:
    """Write the file at `tmp`; returns the metadata with the axes the file leaves free."""
    if config.format == "onnx":
        from ..export.onnx_file import write_onnx

        any_size = takes_any_size(metadata.arch, metadata.aggregator)
        return write_onnx(graph, example, tmp, config.opset, any_size, metadata)
    from ..export.torchscript_file import write_torchscript

    write_torchscript(graph, example, tmp, metadata)
    return metadata


def _check_images(config: ExportConfig, loaded) -> tuple[torch.Tensor, str, tuple[int, int]]:
    """(images [CHECK_BATCH, 3, H, W] in [0, 1], what they are, (H, W)): a few of
    `--data-root`'s images, else generated pixels, at `--image-size`, else the run's or the
    released model's size, else the dataset's images' own."""
    size = config.image_size or loaded.image_size
    if config.data_root is None:
        if size is None:
            raise UserError(f"{config.resume} does not say its image size; pass --image-size "
                            f"HxW, or --data-root to check on (and take the size of) a "
                            f"dataset's images")
        size = _fitting(loaded.shape.arch, size, config.image_size is None)
        return check.generated_pixels(check.CHECK_BATCH, size), "generated images", size
    split = open_split(config.data_root, config.split, config.dataset)
    size = _fitting(loaded.shape.arch, resolve_image_size(split, size), config.image_size is None)
    paths = check.pick(list(split.all_paths))
    return check.dataset_pixels(paths, size), f"images of {config.data_root}", size


def _fitting(arch: str, size, derived: bool) -> tuple[int, int]:
    """A ViT's size rounded to whole patches when it was not given (as `eval` does)."""
    return tuple(fitting_size(arch, size)) if derived and is_vit(arch) else tuple(size)


def _record(model) -> str:
    return json.dumps(model.shape.record(), sort_keys=True)
