"""The `eval` stage: Recall@N of a checkpoint (or of the untrained model) on a split."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..compression.variants import cpu_only, descriptor_bytes, search_index
from ..config import EvalConfig
from ..config.aggregator import with_model
from ..data import Split, open_split, resolve_image_size
from ..data.image_feed import ImageFeed
from ..errors import UserError
from ..evaluation.recall import EvalResult, evaluate
from ..fileio import write_atomic, write_json_atomic
from ..models.catalog import PATCH, is_vit
from ..models.checkpoints import checkpoint_file
from ..models.encoders import feature_map_size, fitting_size
from ..models.onnx_model import is_onnx
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
    if is_onnx(config.resume):
        return _run_exported(config, split)
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


def _run_exported(config: EvalConfig, split) -> Evaluated:
    """Recall@N of an ONNX file run by onnxruntime (on CUDA when `--device` is and its
    provider is installed, else on the CPU), through the same image feed (decoded on the CPU;
    pixels in [0, 1] for this project's files, which normalise inside) and the same search."""
    from ..models.onnx_model import OnnxModel

    device = resolve_device(config.device)
    model = OnnxModel(config.resume, device)
    size = exported_image_size(config, model)
    if model.metadata is not None:
        config = with_model(config, model.metadata.shape(config.resume))
    config = dataclasses.replace(config, precision="fp32", decode="cpu")  # images on the host
    if device.type == "cuda" and model.provider != "CUDAExecutionProvider":
        log.warning("onnxruntime has no CUDA provider here (it comes with onnxruntime-gpu): "
                    "running %s on the CPU", config.resume.name)
    feed = ImageFeed.for_config(config, split, size, torch.device("cpu"),
                                normalise=model.takes_normalised)
    result = evaluate(model, feed, batch_size=config.cache_batch_size,
                      show_progress=config.show_progress)
    if config.save_descriptors is not None:
        save_descriptors(config.save_descriptors, result, split)
    return Evaluated(result, config, config.resume, size, 4.0 * result.descriptors.shape[1],
                     split)


def exported_image_size(config: EvalConfig, model) -> tuple[int, int]:
    """`--image-size`, else the size an ONNX file says it was made at (or its input's fixed
    one); a `UserError` when neither says, or when the file takes no other size."""
    size = config.image_size or model.image_size
    if size is None:
        raise UserError(f"{config.resume} does not say the image size it takes; pass "
                        f"--image-size HxW")
    meta = model.metadata
    if meta is not None and not meta.any_size and \
            tuple(size) != model.image_size:
        raise UserError(f"{config.resume} takes images of {meta.image_size} only (its height "
                        f"and width are fixed); leave --image-size out or export at that size")
    return tuple(size)


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
