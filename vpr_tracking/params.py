"""Settings as MLflow params: one function per kind of run, named after the config fields."""
from __future__ import annotations

from vpr_core.config.common import format_image_size

# what a training run records of its TrainConfig (a trial: the same, searched values included)
TRAINING_FIELDS = ("arch", "num_clusters", "margin", "lr", "optim", "momentum", "weight_decay",
                   "epochs", "batch_size", "dataset", "data_root", "weights", "seed", "pooling",
                   "cache_refresh_rate", "num_negatives", "precision")
EVALUATION_FIELDS = ("arch", "num_clusters", "pooling", "dataset", "data_root", "weights",
                     "precision")


def _fields(config, names) -> dict:
    return {name: str(getattr(config, name)) if name == "data_root" else getattr(config, name)
            for name in names}


def training_params(config, dataset: str | None, image_size) -> dict:
    """A training config as params: `dataset` and `image_size` as the data resolved them
    (the image size 'native' when images keep their own sizes)."""
    return dict(_fields(config, TRAINING_FIELDS), dataset=dataset,
                image_size=format_image_size(image_size))


def evaluation_params(config, result, checkpoint, sha256: str | None) -> dict:
    return dict(_fields(config, EVALUATION_FIELDS),
                checkpoint=str(checkpoint) if checkpoint else "untrained",
                checkpoint_sha256=sha256, split=result.split, dataset=result.dataset,
                num_queries=result.num_queries, num_database=result.num_database,
                image_size=format_image_size(config.image_size))
