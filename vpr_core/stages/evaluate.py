"""The `eval` stage: Recall@N of a checkpoint (or of the untrained model) on a split."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..compression.variants import cpu_only, descriptor_bytes, search_index
from ..config import EvalConfig
from ..config.aggregator import with_model
from ..data import Split, open_split, resolve_image_size
from ..data.image_feed import ImageFeed
from ..evaluation.recall import EvalResult, evaluate
from ..fileio import write_atomic, write_json_atomic
from ..models.catalog import PATCH, is_vit
from ..models.checkpoints import checkpoint_file
from ..models.encoders import feature_map_size, fitting_size
from ..runtime import prepare_model, resolve_device, seed_everything
from .starting_model import fresh_model, model_from_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Evaluated:
    """An evaluation's result, the config as it ran (the checkpoint's model settings, the
    device and precision it ran with), the checkpoint file (None: the untrained model), the
    (H, W) images were brought to, the bytes of one database descriptor and the split it
    was measured on."""

    result: EvalResult
    config: EvalConfig
    checkpoint: Path | None
    image_size: tuple[int, int] | None = None
    descriptor_bytes: float | None = None
    split: Split | None = None


def run(config: EvalConfig) -> Evaluated:
    """Recall@N of a checkpoint (or of the untrained model) on a split.

    A checkpoint brings its own weights: nothing is downloaded. Without one, the model is
    built from `config.weights` and NetVLAD initialised from the train split's centroids.
    """
    config = config.validate()
    split = open_test_split(config)
    seed_everything(config.seed)
    path, index, checkpoint = None, None, {}
    if config.resume is not None:
        path = checkpoint_file(config.resume, config.ckpt)
        loaded = model_from_checkpoint(path, config.arch, config.num_clusters, config.aggregator)
        model, checkpoint = loaded.model, loaded.checkpoint
        config, index = _as_checkpoint_says(config, loaded, path)
        image_size = _image_size(config, split)
    else:
        image_size = _image_size(config, split)
        feature_map_size(config.arch, image_size, config.aggregator)
        train_split = open_split(config.data_root, "train", config.dataset)
        model, _ = fresh_model(config, train_split, config.centroids, image_size)
    feature_map_size(model.arch, image_size, model.aggregator)
    device = resolve_device(config.device)
    feed = ImageFeed.for_config(config, split, image_size, device)
    result = evaluate(prepare_model(model, device, config.precision), feed,
                      batch_size=config.cache_batch_size, precision=config.precision,
                      show_progress=config.show_progress, index=index)
    if config.save_descriptors is not None:
        save_descriptors(config.save_descriptors, result, split)
    return Evaluated(result, config, path, image_size, descriptor_bytes(model, checkpoint),
                     split)


def open_test_split(config: EvalConfig):
    """The split a validated config evaluates on, its positives within `positive_dist` metres
    when that is given (else the dataset's own threshold)."""
    split = open_split(config.data_root, config.split, config.dataset)
    if config.positive_dist is None:
        return split
    return dataclasses.replace(split, pos_dist_thr=float(config.positive_dist))


def checkpoint_image_size(config: EvalConfig, loaded, split) -> tuple[int, int]:
    """The (H, W) `run` brings the images of `split` to for a loaded checkpoint (see
    `model_from_checkpoint`); a `UserError` when its model cannot take them. For checking
    many models and splits before evaluating any."""
    config, _ = _as_checkpoint_says(config, loaded, None)
    size = _image_size(config, split)
    feature_map_size(loaded.shape.arch, size, loaded.shape.aggregator)
    return size


def _image_size(config: EvalConfig, split) -> tuple[int, int]:
    """`--image-size` (or a released model's authors' size), else the images' own; a ViT's
    rounded to whole patches (as MegaLoc's authors do)."""
    size = resolve_image_size(split, config.image_size)
    if config.image_size is None and is_vit(config.arch):
        fitted = fitting_size(config.arch, size)
        if fitted != size:
            log.info("%s takes whole %d-pixel patches: images of %dx%d are evaluated at "
                     "%dx%d", config.arch, PATCH, *size, *fitted)
        return fitted
    return size


def save_descriptors(folder: Path, result: EvalResult, split) -> None:
    """The descriptors as VPR-methods-evaluation's tools read them: database_descriptors.npy
    [N, D] and queries_descriptors.npy [M, D], float32, in the split's order, with
    images.json naming the images of each row; each file written atomically."""
    database = result.descriptors[:split.num_database]
    queries = result.descriptors[split.num_database:]
    for name, rows in (("database", database), ("queries", queries)):
        write_atomic(folder / f"{name}_descriptors.npy", lambda tmp, rows=rows: _save(tmp, rows))
    write_json_atomic(folder / "images.json", {"database": list(map(str, split.database_paths)),
                                               "queries": list(map(str, split.query_paths))})


def _as_checkpoint_says(config: EvalConfig, loaded, path: Path | None):
    """(the config with the checkpoint's model settings, its authors' image size unless one
    is given, and where it runs; the faiss index of a compressed database or None)."""
    config = dataclasses.replace(with_model(config, loaded.shape),
                                 image_size=config.image_size or loaded.image_size)
    if cpu_only(loaded.checkpoint):  # int8: its arithmetic runs on the CPU
        device = resolve_device(config.device)
        if device.type != "cpu" and path is not None:
            log.warning("%s is an int8 model, which runs on the CPU: evaluating it there, not "
                        "on %s", path, device)
        config = dataclasses.replace(config, device="cpu", precision="fp32")
    return config, search_index(loaded.checkpoint)  # PQ: a compressed database


def _save(path: Path, rows: np.ndarray) -> None:
    with open(path, "wb") as handle:  # np.save would add .npy to the temporary name
        np.save(handle, rows)
