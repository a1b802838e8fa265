"""The `eval` stage: Recall@N of a checkpoint (or of the untrained model) on a split."""
from __future__ import annotations

import logging
from pathlib import Path

import torch

from ..compression.variants import cpu_only, search_index
from ..config.common import EvalConfig
from ..data import open_split, resolve_image_size
from ..data.image_feed import ImageFeed
from ..evaluation.recall import EvalResult, evaluate
from ..models.backbones import feature_map_size
from ..models.checkpoints import checkpoint_file
from ..runtime import prepare_model, resolve_device, seed_everything
from .starting_model import fresh_model, model_from_checkpoint

log = logging.getLogger(__name__)


def evaluate_config(config: EvalConfig) -> tuple[EvalResult, Path | None]:
    """(Recall@N result, the checkpoint file evaluated or None for the untrained model).

    A checkpoint brings its own weights: nothing is downloaded. Without one, the model is
    built from `config.weights` and NetVLAD initialised from the train split's centroids.
    """
    config.validate()
    split = open_split(config.data_root, config.split, config.dataset)
    image_size = resolve_image_size(split, config.image_size)
    device = resolve_device(config.device)
    seed_everything(config.seed)
    path, index = None, None
    if config.resume is not None:
        path = checkpoint_file(config.resume, config.ckpt)
        model, checkpoint, shape = model_from_checkpoint(path, config.arch, config.num_clusters,
                                                        config.pooling)
        config.arch, config.pooling, config.num_clusters = shape.arch, shape.pooling, \
            shape.num_clusters
        index = search_index(checkpoint)  # a compressed database (product quantisation)
        if cpu_only(checkpoint):
            if device.type != "cpu":
                log.warning("%s is an int8 model, which runs on the CPU: evaluating it "
                            "there, not on %s", path, device)
            device, config.precision = torch.device("cpu"), "fp32"  # int8 is its arithmetic
    else:
        feature_map_size(config.arch, image_size)
        train_split = open_split(config.data_root, "train", config.dataset)
        model, _ = fresh_model(config, train_split, config.centroids)
    feature_map_size(model.arch, image_size)
    feed = ImageFeed.for_config(config, split, image_size, device)
    result = evaluate(prepare_model(model, device, config.precision), feed,
                      batch_size=config.cache_batch_size, precision=config.precision,
                      show_progress=config.show_progress, index=index)
    return result, path

