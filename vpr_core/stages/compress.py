"""The `compress` stage as one function: a compressed variant of a checkpoint, measured side by
side with the original in the same process, written as a new run folder.

The variant's checkpoint (`<run>/checkpoints/checkpoint.pth.tar`, with `flags.json`) records
the method and its settings; `eval`, `retrievals` and `compress` read it back. Fine-tuning
(`--finetune-epochs`) trains the compressed model with the same triplet loss, mining and
validation as `train`, keeping its compressed structure.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..compression.context import CompressionContext
from ..compression.measure import Figures, measure
from ..compression.methods import method
from ..compression.variants import compressed_checkpoint, search_index
from ..config.common import SGD_DEFAULTS, CommonConfig, CompressConfig, TrainConfig
from ..data import open_split, resolve_image_size
from ..data.image_feed import ImageFeed
from ..errors import UserError
from ..evaluation.recall import named_recalls
from ..fileio import missing_ancestors, remove_created, write_atomic, write_json_atomic
from ..models import checkpoints
from ..models.backbones import feature_map_size, freeze_pretrained_layers
from ..runtime import resolve_device, seed_everything
from .starting_model import model_from_checkpoint

log = logging.getLogger(__name__)
# the source run's training settings a fine-tuning keeps (its lr and epochs are the command's)
FINETUNE_FROM_SOURCE = ("margin", "optim", "momentum", "weight_decay", "lr_step", "lr_gamma",
                        "batch_size", "num_negatives", "num_negative_samples",
                        "cache_refresh_rate")


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

    def to_dict(self) -> dict:
        return {"source": str(self.source), "run_dir": str(self.run_dir),
                "checkpoint": str(self.checkpoint), "seconds": round(self.seconds, 1),
                "original": self.original.to_dict(), "variant": self.variant.to_dict(),
                "finetune": self.finetune}

    @classmethod
    def from_dict(cls, data: dict) -> CompressResult:
        return cls(Path(data["source"]), Path(data["run_dir"]), Path(data["checkpoint"]),
                   Figures.from_dict(data["original"]), Figures.from_dict(data["variant"]),
                   data["seconds"], data.get("finetune", []))


def compress(config: CompressConfig) -> CompressResult:
    """Compress `config.resume` with `config.method`, measure both, write the variant's run."""
    started = time.perf_counter()
    config.validate()
    device = resolve_device(config.device)
    seed_everything(config.seed)
    source = checkpoints.checkpoint_file(config.resume, config.ckpt)
    original, checkpoint, shape = model_from_checkpoint(source)
    if search_index(checkpoint) is not None:
        raise UserError(f"{source} is a product-quantised variant, whose codes fit its model "
                        f"as it is; compress the checkpoint it was made from, and apply pq "
                        f"last")
    module = method(config.method)
    if module.CPU_ONLY:
        config.precision = "fp32"  # int8 is its arithmetic; fake quantisation needs float32
    settings = module.validate(config.settings(), original)
    train_split = open_split(config.data_root, config.train_split, config.dataset)
    split = open_split(config.data_root, config.split, config.dataset)
    image_size = resolve_image_size(split, config.image_size)
    feature_map_size(shape.arch, image_size)
    run_dir = config.run_dir or _default_run_dir(source, config)
    context = CompressionContext(
        train_feed=ImageFeed.for_config(config, train_split, image_size, device),
        device=device, batch_size=config.cache_batch_size, precision=config.precision,
        seed=config.seed, finetune=None)
    created = missing_ancestors(run_dir)
    history: list = []
    context.finetune = _finetuner(config, source, history)
    try:
        start = copy.deepcopy(original).to(device)
        if checkpoints.read_flags(source).get("weights", "none") != "none" and \
                isinstance(start.encoder, torch.nn.Sequential):
            freeze_pretrained_layers(start.encoder, start.arch)  # fine-tune as it was trained
        variant, extra = module.apply(start, settings, context)
        previous = checkpoint.get("compression")
        extra = {**(checkpoint.get("compression_extra") or {}), **extra}
        saved = compressed_checkpoint(variant, config.method, settings, shape, extra,
                                      previous=previous, source=str(source))
        path = _write_run(run_dir, saved, config, source, settings)
    except BaseException:
        remove_created(created)
        raise
    figures = _measure_both(config, original, checkpoint, variant, saved, split, image_size,
                            device, settings, extra)
    return CompressResult(source, run_dir, path, *figures, time.perf_counter() - started,
                          history)


def _measure_both(config, original, checkpoint, variant, saved, split, image_size, device,
                  settings, extra) -> tuple[Figures, Figures]:
    cuda = device.type == "cuda"
    common = dict(batch_size=config.cache_batch_size, latency_batches=config.latency_batches)

    def feed_on(on: torch.device) -> ImageFeed:
        return ImageFeed.for_config(config, split, image_size, on)

    before = measure("original", "none", {}, original, feed_on(device),
                     precision=config.precision, cuda=cuda,
                     descriptor_bytes=_descriptor_bytes(original, checkpoint),
                     extra=checkpoint.get("compression_extra") or {},
                     index=search_index(checkpoint), **common)
    cpu_only = method(config.method).CPU_ONLY
    on = torch.device("cpu") if cpu_only else device
    name = label(config.method, settings, config.finetune_epochs, config.finetune_lr)
    after = measure(name, config.method, settings, variant,
                    feed_on(on), precision="fp32" if cpu_only else config.precision,
                    cuda=cuda and not cpu_only, descriptor_bytes=_descriptor_bytes(variant, saved),
                    extra=extra, index=search_index(saved), **common)
    return before, after


def _descriptor_bytes(model, checkpoint: dict) -> float:
    """Bytes one database image's descriptor takes: float32 values, or PQ codes."""
    from ..compression.variants import chain

    for step in reversed(chain(checkpoint.get("compression"))):
        if step["method"] == "pq":
            from ..compression.pq import code_bytes

            return code_bytes(step["settings"], checkpoint["compression_extra"])
    return 4.0 * model.output_dim


def label(name: str, settings: dict, finetune_epochs: int = 0,
          finetune_lr: float = 1e-4) -> str:
    """A variant's short name: 'pca-whiten 4096', 'pq 64 B', 'prune 0.3 channels +2 ep lr
    0.0001'."""
    shown = {"pca-whiten": ("dim",), "prune": ("amount", "structure"), "quantize": ("mode",),
             "half": ("dtype",), "pq": ("pq_bytes",)}[name]
    values = " ".join(str(settings[key]) for key in shown if key in settings)
    if name == "pca-whiten" and not settings.get("whiten", True):
        values += " (no whitening)"
    if name == "prune" and settings.get("refit") is False:
        values += " (no refit)"
    tuned = f" +{finetune_epochs} ep lr {finetune_lr:g}" if finetune_epochs else ""
    return f"{name} {values}" + (" B" if name == "pq" else "") + tuned


def _default_run_dir(source: Path, config: CompressConfig) -> Path:
    in_run = source.parent.name == checkpoints.CHECKPOINT_DIR
    run = source.parent.parent if in_run else source.parent
    stamp = time.strftime("%b%d_%H-%M-%S")
    return Path("runs").absolute() / f"{run.name}_{config.method}_{stamp}"


def _finetuner(config: CompressConfig, source: Path, history: list):
    """`finetune(model, after_step)`: the project's training on the compressed model for
    `config.finetune_epochs` (none: the model as it is), with the source run's settings. As
    `train` keeps its best checkpoint, the model returned is the one with the best validation
    Recall@5 among the epochs and the start (fine-tuning can also lose recall). Each epoch's
    figures, the start's as epoch 0, are appended to `history`. Its checkpoints are scratch (a
    half-compressed model): only the final variant is kept."""
    def finetune(model, after_step=None):
        if not config.finetune_epochs:
            return model
        from ..training.run import TrainingRun

        source_flags = checkpoints.read_flags(source)
        restored = {k: v for k, v in source_flags.items() if k in FINETUNE_FROM_SOURCE}
        if str(restored.get("optim", "SGD")).upper() == "ADAM":
            restored = {k: v for k, v in restored.items() if k not in SGD_DEFAULTS}
        shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(CommonConfig)
                  if f.name not in ("arch", "pooling", "num_clusters", "weights")}
        with tempfile.TemporaryDirectory() as scratch:
            train = TrainConfig(**restored, **shared, arch=model.arch, pooling=model.pooling,
                                num_clusters=model.num_clusters or 1, weights="none",
                                epochs=config.finetune_epochs, lr=config.finetune_lr,
                                train_split=config.train_split,
                                run_dir=Path(scratch) / "finetune", patience=0)
            run = TrainingRun(train, model=model, after_step=after_step)
            _keep_best(run, history)
        return run.model
    return finetune


def _keep_best(run, history: list) -> None:
    """Fine-tune through `run`, then put back the weights of its best validated epoch (or of
    the start, epoch 0); `history` gets each epoch's figures, the kept one marked."""
    start = run.validate()
    history.append({"epoch": 0, **named_recalls(start), "kept": False})
    best, best_state = len(history) - 1, copy.deepcopy(run.model.state_dict())
    run.best_score = start.get(5, 0.0)  # an epoch `is_best` only when it beats the start
    for result in run.epochs():
        history.append({"epoch": result.epoch, **result.metrics(), "kept": False})
        if result.is_best:
            best, best_state = len(history) - 1, copy.deepcopy(run.model.state_dict())
    history[best]["kept"] = True
    run.model.load_state_dict(best_state)
    if best != len(history) - 1:
        log.info("fine-tuning: epoch %d had the best validation Recall@5 (%.4f); keeping it",
                 history[best]["epoch"], run.best_score)


def _write_run(run_dir: Path, saved: dict, config: CompressConfig, source: Path,
               settings: dict) -> Path:
    folder = run_dir / checkpoints.CHECKPOINT_DIR
    path = checkpoints.save_checkpoint(folder / checkpoints.LATEST_FILE, saved)
    write_atomic(folder / checkpoints.BEST_FILE, lambda tmp: shutil.copyfile(path, tmp))
    flags = config.to_dict()
    flags.update(source=str(source), run_dir=str(run_dir), settings=settings,
                 arch=saved["arch"], pooling=saved["pooling"])
    write_json_atomic(folder / checkpoints.FLAGS_FILE, flags)
    return path
