"""The `compress` stage as one function: a compressed variant of a checkpoint, measured side by
side with the original in the same process, written as a new run folder.

The variant's checkpoint (`<run>/checkpoints/checkpoint.pth.tar`, with `flags.json`) records
the method and its settings; `eval`, `retrievals` and `compress` read it back. Fine-tuning
(`--finetune-epochs`) trains the compressed model with the same triplet loss, mining and
validation as `train`, keeping its compressed structure.
"""
from __future__ import annotations

import copy
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..compression.context import CompressionContext
from ..compression.measure import Figures, measure
from ..compression.methods import label, method
from ..compression.variants import compressed_checkpoint, descriptor_bytes, search_index
from ..config import CompressConfig, format_image_size
from ..data import open_split, resolve_image_size
from ..data.description import DataDescription, of_split
from ..data.image_feed import ImageFeed
from ..errors import UserError
from ..fileio import missing_ancestors, remove_created, write_atomic, write_json_atomic
from ..models import checkpoints
from ..models.encoders import feature_map_size
from ..runtime import resolve_device, seed_everything
from ..settings import plain
from .finetune import finetuner
from .starting_model import freeze_as_trained, model_from_checkpoint, weights_of_run


@dataclass
class CompressResult:
    source: Path  # the checkpoint compressed
    run_dir: Path
    checkpoint: Path
    original: Figures
    variant: Figures
    seconds: float
    # per fine-tuning epoch (0: before it): loss, Recall@N on validation, whether it was kept
    finetune: list = field(default_factory=list)
    measured_on: DataDescription | None = None  # the split both were measured on
    image_size: str = "native"  # HxW both were measured at ('native': the images' own)

    def to_dict(self) -> dict:
        return {"source": str(self.source), "run_dir": str(self.run_dir),
                "checkpoint": str(self.checkpoint), "seconds": round(self.seconds, 1),
                "original": self.original.to_dict(), "variant": self.variant.to_dict(),
                "finetune": self.finetune,
                "measured_on": self.measured_on.to_dict() if self.measured_on else None,
                "image_size": self.image_size}

    @classmethod
    def from_dict(cls, data: dict) -> CompressResult:
        measured = data.get("measured_on")
        return cls(Path(data["source"]), Path(data["run_dir"]), Path(data["checkpoint"]),
                   Figures.from_dict(data["original"]), Figures.from_dict(data["variant"]),
                   data["seconds"], data.get("finetune", []),
                   DataDescription.from_dict(measured) if measured else None,
                   data.get("image_size", "native"))


def run(config: CompressConfig) -> CompressResult:
    """Compress `config.resume` with `config.method`, measure both, write the variant's run."""
    started = time.perf_counter()
    config = config.validate()
    device = resolve_device(config.device)
    seed_everything(config.seed)
    source = checkpoints.checkpoint_file(config.resume, config.ckpt)
    original, checkpoint, shape, _ = model_from_checkpoint(source)
    if search_index(checkpoint) is not None:
        raise UserError(f"{source} is a product-quantised variant, whose codes fit its model "
                        f"as it is; compress the checkpoint it was made from, and apply pq "
                        f"last")
    module = method(config.method)
    settings = module.validate(config.settings(), original)
    train_split = open_split(config.data_root, config.train_split, config.dataset)
    split = open_split(config.data_root, config.split, config.dataset)
    image_size = resolve_image_size(split, config.image_size)
    feature_map_size(shape.arch, image_size)
    run_dir = config.run_dir or _default_run_dir(source, config)
    history: list = []
    context = CompressionContext(
        train_feed=ImageFeed.for_config(config, train_split, image_size, device),
        device=device, batch_size=config.cache_batch_size, precision=config.precision,
        seed=config.seed, finetune=finetuner(config, source, history))
    created = missing_ancestors(run_dir)
    try:
        start = copy.deepcopy(original).to(device)
        freeze_as_trained(start, weights_of_run(checkpoints.read_flags(source)))
        variant, extra = module.apply(start, settings, context)
        extra = {**(checkpoint.get("compression_extra") or {}), **extra}
        saved = compressed_checkpoint(variant, config.method, settings, shape, extra,
                                      previous=checkpoint.get("compression"),
                                      source=str(source))
        path = _write_run(run_dir, saved, config, source, settings, shape)
    except BaseException:
        remove_created(created)
        raise
    figures = _measure_both(config, original, checkpoint, variant, saved, split, image_size,
                            device, settings, extra)
    return CompressResult(source, run_dir, path, *figures, time.perf_counter() - started,
                          history, of_split(split), format_image_size(image_size))


def _measure_both(config, original, checkpoint, variant, saved, split, image_size, device,
                  settings, extra) -> tuple[Figures, Figures]:
    cuda = device.type == "cuda"
    common = dict(batch_size=config.cache_batch_size, latency_batches=config.latency_batches)

    def feed_on(on: torch.device) -> ImageFeed:
        return ImageFeed.for_config(config, split, image_size, on)

    before = measure("original", "none", {}, original, feed_on(device),
                     precision=config.precision, cuda=cuda,
                     descriptor_bytes=descriptor_bytes(original, checkpoint),
                     extra=checkpoint.get("compression_extra") or {},
                     index=search_index(checkpoint), **common)
    cpu_only = method(config.method).CPU_ONLY
    on = torch.device("cpu") if cpu_only else device
    name = label(config.method, settings, config.finetune_epochs, config.finetune_lr)
    after = measure(name, config.method, settings, variant,
                    feed_on(on), precision="fp32" if cpu_only else config.precision,
                    cuda=cuda and not cpu_only, descriptor_bytes=descriptor_bytes(variant, saved),
                    extra=extra, index=search_index(saved), **common)
    return before, after


def _default_run_dir(source: Path, config: CompressConfig) -> Path:
    in_run = source.parent.name == checkpoints.CHECKPOINT_DIR
    run = source.parent.parent if in_run else source.parent
    stamp = time.strftime("%b%d_%H-%M-%S")
    return Path("runs").absolute() / f"{run.name}_{config.method}_{stamp}"


def _write_run(run_dir: Path, saved: dict, config: CompressConfig, source: Path,
               settings: dict, shape) -> Path:
    folder = run_dir / checkpoints.CHECKPOINT_DIR
    path = checkpoints.save_checkpoint(folder / checkpoints.LATEST_FILE, saved)
    write_atomic(folder / checkpoints.BEST_FILE, lambda tmp: shutil.copyfile(path, tmp))
    flags = plain(config)
    flags.update(source=str(source), run_dir=str(run_dir), settings=settings,
                 arch=shape.arch, aggregator=shape.aggregator, model=shape.record())
    write_json_atomic(folder / checkpoints.FLAGS_FILE, flags)
    return path
