"""The model a stage starts from: fresh (encoder weights + centroids) or from a checkpoint (this
project's, the reference's, or a compressed variant)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from torch import nn

from ..compression.variants import compressed_model
from ..config import ClusterConfig, CommonConfig, TrainConfig
from ..data import Split
from ..errors import UserError
from ..models.backbones import freeze_pretrained_layers
from ..models.catalog import ENCODER_DIMS
from ..models.checkpoints import (
    ModelShape,
    check_shape,
    checkpoint_file,
    infer_model_shape,
    load_checkpoint,
    read_flags,
)
from ..models.place_model import PlaceModel, build_model
from ..settings import default_of, restored
from ..training.run import Start
from . import cluster
from .cluster import read_centroids


def centroids_for(config: CommonConfig, train_split: Split, centroids: Path | None = None) -> Path:
    """The centroid file to initialise NetVLAD: `centroids` if given, else the cache's (made
    by clustering `train_split` when missing)."""
    if centroids is not None:
        if not Path(centroids).is_file():
            raise UserError(f"--centroids {centroids} does not exist; pass an existing .hdf5 file "
                            f"or leave it out to use the cache")
        return Path(centroids)
    shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(CommonConfig)}
    return cluster.run(ClusterConfig(**shared, split=train_split.split), split=train_split).path


def fresh_model(config: CommonConfig, train_split: Split, centroids: Path | None = None
                ) -> tuple[PlaceModel, Path | None]:
    """A model with `config.weights` and, for NetVLAD, initialised from the centroids."""
    model = build_model(config.arch, config.pooling, config.num_clusters, config.weights)
    if config.pooling != "netvlad":
        return model, None
    path = centroids_for(config, train_split, centroids)
    found = read_centroids(path, config.num_clusters, ENCODER_DIMS[config.arch])
    model.pool.init_params(found.centroids, found.descriptors)
    return model, path


def model_from_checkpoint(path: Path, arch: str | None = None, num_clusters: int | None = None,
                          pooling: str | None = None) -> tuple[nn.Module, dict, ModelShape]:
    """(model with the checkpoint's weights, the checkpoint dict, what it holds).

    `arch` / `num_clusters`, when given, must agree with the checkpoint. No backbone weights
    are loaded from anywhere else: the checkpoint holds them.
    """
    checkpoint = load_checkpoint(path)
    if checkpoint.get("compression"):
        model, shape = compressed_model(path, checkpoint, arch, num_clusters)
        return model, checkpoint, shape
    # the pooling: asked for, else recorded in the checkpoint (this project's) or its flags.json
    hint = pooling or checkpoint.get("pooling") or read_flags(path).get("pooling")
    shape = infer_model_shape(checkpoint["state_dict"], hint)
    check_shape(shape, arch, num_clusters, path)
    model = build_model(shape.arch, shape.pooling, shape.num_clusters or 1, weights="none")
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise UserError(f"{path} does not fit a {shape.arch} {shape.pooling} model "
                        f"({first[:200]}); pass a checkpoint of this project or of "
                        f"pytorch-NetVlad") from None
    return model, checkpoint, shape


def freeze_as_trained(model: nn.Module, weights: str) -> None:
    """Freeze what training froze: a model trained from pretrained `weights` (anything but
    'none'; a checkpoint whose run does not say, such as the released VGG16, counts as the
    reference's default, ImageNet) keeps all but its last conv layers fixed. The one rule of
    `train --resume` and of `compress` fine-tuning."""
    if weights != "none" and isinstance(getattr(model, "encoder", None), nn.Sequential):
        freeze_pretrained_layers(model.encoder, model.arch)


def weights_of_run(flags: dict) -> str:
    """The weights a run was trained from, as its flags.json says (as `train --resume`
    restores them); a run without one (the released VGG16) had the default, ImageNet."""
    return restored(TrainConfig, flags, {}).get("weights", default_of(TrainConfig, "weights"))


def training_start(config, train_split: Split) -> Start:
    """What a validated `TrainConfig` starts from: its `--resume` checkpoint (frozen as it was
    trained), else a fresh model (its centroids clustered when the cache has none)."""
    if config.resume is None:
        model, centroids = fresh_model(config, train_split, config.centroids)
        return Start(model, centroids)
    path = checkpoint_file(config.resume, config.ckpt)
    num_clusters = config.num_clusters if config.pooling == "netvlad" else None
    model, checkpoint, _ = model_from_checkpoint(path, config.arch, num_clusters, config.pooling)
    freeze_as_trained(model, config.weights)
    initialised_from = read_flags(path).get("centroids")  # kept for the run's records
    return Start(model, Path(initialised_from) if initialised_from else None, checkpoint, path)
