"""Typed settings of each stage, validated once at the edge (`validate()` raises `UserError`)."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

from ..data.image_feed import decodes_on_gpu
from ..errors import UserError
from ..models.backbones import ARCHES
from ..models.place_model import POOLINGS
from ..runtime import default_workers, resolve_device, resolve_precision

OPTIMIZERS = ("SGD", "ADAM")
# settings of SGD alone (the reference's Adam takes none of them), with their defaults
SGD_DEFAULTS = {"momentum": 0.9, "weight_decay": 1e-3, "lr_step": 5.0, "lr_gamma": 0.5}
WEIGHT_CHOICES = ("imagenet", "none")


def parse_image_size(text: str | None) -> tuple[int, int] | None:
    """'HxW' -> (H, W); None or 'native' -> None (keep the images' own size)."""
    if text is None or str(text).lower() == "native":
        return None
    if isinstance(text, (tuple, list)) and len(text) == 2:
        height, width = (int(v) for v in text)
    else:
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
        if not match:
            raise UserError(f"--image-size {text!r} is not HxW; write it like 480x640 or 'native'")
        height, width = int(match.group(1)), int(match.group(2))
    if height < 1 or width < 1:
        raise UserError(f"--image-size {text!r} must be positive; write it like 480x640")
    return height, width


def format_image_size(size: tuple[int, int] | None) -> str:
    return "native" if size is None else f"{size[0]}x{size[1]}"


@dataclass
class CommonConfig:
    """Settings shared by clustering, training and evaluation."""

    data_root: Path = Path("data")
    dataset: str | None = None  # Pittsburgh layout: which <name>_<split>.mat when several
    arch: str = "vgg16"
    pooling: str = "netvlad"
    num_clusters: int = 64
    weights: str = "imagenet"  # 'imagenet', 'none' or a path to a weight file
    image_size: tuple[int, int] | None = None  # (H, W); None keeps the native size
    cache_dir: Path = Path("cache")
    cache_batch_size: int = 24
    workers: int = field(default_factory=default_workers)
    device: str = "auto"
    seed: int = 123
    precision: str | None = None  # 'fp32' or 'bf16'; None: bf16 on CUDA, fp32 on the CPU
    decode: str = "auto"  # where JPEGs are decoded: 'cpu', 'gpu' or 'auto' (GPU on CUDA)
    image_store_gb: float | None = None  # decoded-image store budget; None: 8 on CPU decoding
    show_progress: bool = True

    def validate(self):
        self.data_root = Path(self.data_root).expanduser().absolute()
        self.cache_dir = Path(self.cache_dir).expanduser().absolute()
        self.image_size = parse_image_size(self.image_size)
        if self.arch is not None and self.arch not in ARCHES:
            raise UserError(f"unknown arch {self.arch!r}; use one of {', '.join(ARCHES)}")
        if self.pooling is not None and self.pooling not in POOLINGS:
            raise UserError(f"unknown pooling {self.pooling!r}; use one of {', '.join(POOLINGS)}")
        if self.num_clusters is not None:
            _at_least(self.num_clusters, 1, "--num-clusters")
        _at_least(self.cache_batch_size, 1, "--cache-batch-size")
        _at_least(self.workers, 0, "--workers")
        device = resolve_device(self.device)
        self.precision = resolve_precision(self.precision, device)
        decodes_on_gpu(self.decode, device)  # checks --decode against the device
        if self.image_store_gb is not None and not float(self.image_store_gb) >= 0:
            raise UserError(f"--image-store-gb must be 0 (off) or more, got "
                            f"{self.image_store_gb}")
        if self.weights not in WEIGHT_CHOICES and not Path(self.weights).is_file():
            raise UserError(f"--weights {self.weights!r} is neither imagenet, none nor an existing "
                            f"file; fix the path or pass none")
        return self

    def to_dict(self) -> dict:
        """Plain JSON-able values (paths as strings, image size as 'HxW')."""
        out = {}
        for item in dataclasses.fields(self):
            value = getattr(self, item.name)
            if isinstance(value, Path):
                value = str(value)
            elif item.name == "image_size":
                value = format_image_size(value)
            out[item.name] = value
        return out


@dataclass
class ClusterConfig(CommonConfig):
    split: str = "train"
    num_descriptors: int = 50000  # the reference samples 500 images x 100 locations
    descriptors_per_image: int = 100
    kmeans_iterations: int = 100

    def validate(self):
        super().validate()
        _at_least(self.num_descriptors, 1, "--num-descriptors")
        _at_least(self.descriptors_per_image, 1, "--descriptors-per-image")
        return self


@dataclass
class TrainConfig(CommonConfig):
    run_dir: Path | None = None  # default: runs/<timestamp>_<arch>_<pooling>
    resume: Path | None = None  # run directory or checkpoint file to continue
    ckpt: str = "latest"
    centroids: Path | None = None  # an existing centroid file instead of the cache's
    train_split: str = "train"
    val_split: str = "val"
    epochs: int = 30
    batch_size: int = 4  # queries per batch; each gives 1 positive and up to num_negatives
    optim: str = "SGD"
    lr: float = 1e-4
    # SGD only; None: SGD_DEFAULTS (momentum 0.9, weight decay 1e-3, lr x 0.5 every 5 epochs)
    momentum: float | None = None
    weight_decay: float | None = None
    lr_step: float | None = None
    lr_gamma: float | None = None
    margin: float = 0.1  # applied as sqrt(margin) to L2 distances, as in the reference
    num_negatives: int = 10
    num_negative_samples: int = 1000
    cache_refresh_rate: int = 1000  # queries between descriptor cache rebuilds; 0: once per epoch
    eval_every: int = 1
    patience: int = 10  # evaluations without a better Recall@5 before stopping; 0: never
    start_epoch: int = 0  # epochs counted as done before the first one (without --resume)
    fresh_optimizer: bool = False  # with --resume: a new optimiser state, not the checkpoint's
    # memory for the frozen layers' output of every image (see vpr_core.training.frozen_features);
    # None: 30% of the GPU's, or a quarter of the host's up to 8 GB; 0: off
    frozen_cache_gb: float | None = None

    def validate(self):
        super().validate()
        _at_least(self.epochs, 1, "--epochs")
        _at_least(self.batch_size, 1, "--batch-size")
        _at_least(self.num_negatives, 1, "--num-negatives")
        _at_least(self.num_negative_samples, 1, "--num-negative-samples")
        _at_least(self.cache_refresh_rate, 0, "--cache-refresh-rate")
        _at_least(self.eval_every, 1, "--eval-every")
        _at_least(self.patience, 0, "--patience")
        self._check_optimiser()
        if self.frozen_cache_gb is not None and not float(self.frozen_cache_gb) >= 0:
            raise UserError(f"--frozen-cache-gb must be 0 (off) or more, got "
                            f"{self.frozen_cache_gb}")
        if self.ckpt not in ("latest", "best"):
            raise UserError(f"--ckpt {self.ckpt!r} must be latest or best")
        self._check_resume()
        for name in ("run_dir", "resume", "centroids"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)).expanduser().absolute())
        return self

    def _check_optimiser(self) -> None:
        self.optim = str(self.optim).upper()
        if self.optim not in OPTIMIZERS:
            raise UserError(f"unknown --optim {self.optim!r}; use SGD or ADAM")
        given = [name for name in SGD_DEFAULTS if getattr(self, name) is not None]
        if self.optim == "ADAM" and given:
            flags = " ".join(f"--{name.replace('_', '-')}" for name in given)
            raise UserError(f"{flags} apply to --optim SGD only (Adam runs with its own "
                            f"settings and a constant learning rate, as in the reference); "
                            f"leave them out or use --optim SGD")
        if self.optim == "SGD":
            for name, default in SGD_DEFAULTS.items():
                if getattr(self, name) is None:
                    setattr(self, name, default)
            for name in ("lr_step", "lr_gamma"):
                if not float(getattr(self, name)) > 0:
                    raise UserError(f"--{name.replace('_', '-')} must be positive, got "
                                    f"{getattr(self, name)}")
            if self.momentum < 0 or self.weight_decay < 0:
                raise UserError("--momentum and --weight-decay must not be negative")
        for name in ("lr", "margin"):
            if not float(getattr(self, name)) > 0:
                raise UserError(f"--{name} must be positive, got {getattr(self, name)}")

    def _check_resume(self) -> None:
        """Settings that only apply with (or without) --resume are refused, not ignored."""
        _at_least(self.start_epoch, 0, "--start-epoch")
        if self.resume is not None:
            if self.start_epoch:
                raise UserError("--start-epoch does not apply with --resume: training goes on "
                                "from the checkpoint's epoch; leave --start-epoch out")
            if self.centroids is not None:
                raise UserError("--centroids does not apply with --resume: the checkpoint "
                                "holds NetVLAD's parameters; leave --centroids out")
        elif self.fresh_optimizer:
            raise UserError("--fresh-optimizer applies with --resume only; leave it out")
        if self.start_epoch >= self.epochs:
            raise UserError(f"--start-epoch {self.start_epoch} leaves no epoch to train before "
                            f"--epochs {self.epochs}; lower it or raise --epochs")


@dataclass
class EvalConfig(CommonConfig):
    split: str = "val"
    resume: Path | None = None  # checkpoint file or run directory; None evaluates untrained
    ckpt: str = "latest"
    centroids: Path | None = None
    # None: taken from the checkpoint (or the defaults vgg16, netvlad, 64, imagenet without one)
    arch: str | None = None
    pooling: str | None = None
    num_clusters: int | None = None
    weights: str | None = None

    def validate(self):
        if self.resume is None:
            self.arch = self.arch or "vgg16"
            self.pooling = self.pooling or "netvlad"
            self.num_clusters = self.num_clusters or 64
            self.weights = self.weights or "imagenet"
        else:
            # (validating twice is harmless: "none" is what a checkpoint evaluation loads)
            for flag, value in (("--weights", self.weights), ("--centroids", self.centroids)):
                if value not in (None, "none"):
                    raise UserError(f"{flag} does not apply with --resume: the checkpoint holds "
                                    f"the whole model; leave {flag} out")
            self.weights = "none"  # nothing is loaded besides the checkpoint
        super().validate()
        if self.ckpt not in ("latest", "best"):
            raise UserError(f"--ckpt {self.ckpt!r} must be latest or best")
        if self.resume is not None:
            self.resume = Path(self.resume).expanduser().absolute()
        if self.centroids is not None:
            self.centroids = Path(self.centroids).expanduser().absolute()
        return self


def _at_least(value, minimum: int, flag: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise UserError(f"{flag} must be an integer of at least {minimum}, got {value!r}")


COMPRESS_METHODS = ("pca-whiten", "prune", "quantize", "half", "pq")
# the flags each method takes (its settings); any other method-specific flag is refused
METHOD_FLAGS = {"pca-whiten": ("dim", "whiten"), "prune": ("amount", "structure", "refit"),
                "quantize": ("mode",), "half": ("dtype",), "pq": ("pq_bytes",)}
METHOD_DEFAULTS = {"whiten": True, "structure": "unstructured", "mode": "ptq-int8",
                   "dtype": "bf16"}


@dataclass
class CompressConfig(CommonConfig):
    resume: Path | None = None  # the checkpoint (or run folder) to compress
    ckpt: str = "latest"
    method: str | None = None  # one of COMPRESS_METHODS
    dim: int | None = None  # pca-whiten: output dimensions
    whiten: bool | None = None  # pca-whiten: scale to unit variance (default yes)
    amount: float | None = None  # prune: share of weights (or channels) to remove
    structure: str | None = None  # prune: unstructured (default) or channels
    refit: bool | None = None  # prune channels: refit each pruned conv's successor (default yes)
    mode: str | None = None  # quantize: ptq-int8 (default) or qat-int8
    dtype: str | None = None  # half: bf16 (default) or fp16
    pq_bytes: int | None = None  # pq: bytes per database descriptor
    finetune_epochs: int = 0  # epochs of triplet training after compressing
    finetune_lr: float = 1e-4
    train_split: str = "train"  # PCA, PQ and int8 calibration data; fine-tuning
    split: str = "val"  # where Recall@N is measured (fine-tuning validates on val)
    run_dir: Path | None = None  # default: runs/<source run>_<method>_<timestamp>
    latency_batches: tuple = (1, 32)  # batch sizes of the CPU latency measurement
    # None: the checkpoint's (it holds the whole model)
    arch: str | None = None
    pooling: str | None = None
    num_clusters: int | None = None
    weights: str = "none"

    def validate(self):
        super().validate()
        if self.resume is None:
            raise UserError("compress needs --resume RUN_DIR|CHECKPOINT, the model to compress")
        if self.method not in COMPRESS_METHODS:
            raise UserError(f"--method {self.method!r} must be one of "
                            f"{', '.join(COMPRESS_METHODS)}")
        others = [name for flags in METHOD_FLAGS.values() for name in flags
                  if name not in METHOD_FLAGS[self.method] and getattr(self, name) is not None]
        if others:
            flags = " ".join(f"--{name.replace('_', '-')}" for name in others)
            verb = "does" if len(others) == 1 else "do"
            raise UserError(f"{flags} {verb} not apply to --method {self.method}; leave "
                            f"{'it' if len(others) == 1 else 'them'} out")
        _at_least(self.finetune_epochs, 0, "--finetune-epochs")
        if self.finetune_epochs and self.method in ("half", "pq", "pca-whiten"):
            raise UserError(f"--finetune-epochs applies to prune and quantize (qat-int8), not "
                            f"to {self.method}")
        if self.method == "quantize" and (self.mode == "qat-int8") != bool(self.finetune_epochs):
            raise UserError("quantization-aware training is fine-tuning: --mode qat-int8 "
                            "needs --finetune-epochs, and --finetune-epochs needs --mode "
                            "qat-int8 (ptq-int8 trains nothing)")
        if not float(self.finetune_lr) > 0:
            raise UserError(f"--finetune-lr must be positive, got {self.finetune_lr}")
        if self.ckpt not in ("latest", "best"):
            raise UserError(f"--ckpt {self.ckpt!r} must be latest or best")
        batches = self.latency_batches
        if not isinstance(batches, (list, tuple)) or not batches or not all(
                isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batches):
            raise UserError(f"--latency-batches (latency_batches) must list batch sizes of at "
                            f"least 1, got {batches!r}")
        self.latency_batches = tuple(batches)
        for name in ("resume", "run_dir"):
            if getattr(self, name) is not None:
                setattr(self, name, Path(getattr(self, name)).expanduser().absolute())
        return self

    def settings(self) -> dict:
        """The method's settings, defaults filled in (the method checks them against the
        model)."""
        given = {name: getattr(self, name) for name in METHOD_FLAGS[self.method]}
        return {name: METHOD_DEFAULTS.get(name) if value is None else value
                for name, value in given.items()
                if value is not None or name in METHOD_DEFAULTS}
