"""Settings as MLflow params: a config's `LOGGED` settings (see `vpr_core.settings`), named
after its fields, with what the run resolved (the dataset, the image size) over them."""
from __future__ import annotations

from vpr_core.config import format_image_size
from vpr_core.settings import LOGGED, names_with, plain


def logged_params(config) -> dict:
    """The `LOGGED` settings of a config as params (paths as strings, the image size HxW)."""
    written = plain(config)
    return {name: written[name] for name in names_with(type(config), LOGGED)}


def training_params(config, dataset: str | None, image_size) -> dict:
    """A training config as params: `dataset` and `image_size` as the data resolved them
    (the image size 'native' when images keep their own sizes)."""
    return dict(logged_params(config), dataset=dataset,
                image_size=format_image_size(image_size))


def evaluation_params(config, result, checkpoint, sha256: str | None) -> dict:
    return dict(logged_params(config),
                checkpoint=str(checkpoint) if checkpoint else "untrained",
                checkpoint_sha256=sha256, split=result.split, dataset=result.dataset,
                num_queries=result.num_queries, num_database=result.num_database)
