"""The model a stage starts from: fresh (encoder weights + centroids) or from a checkpoint (this
project's, the reference's, or a compressed variant)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import NamedTuple

from torch import nn

from ..compression.variants import compressed_model
from ..config import ClusterConfig, CommonConfig, TrainConfig
from ..data import Split
from ..errors import UserError
from ..models.checkpoints import checkpoint_file, load_checkpoint, read_flags
from ..models.encoders import freeze_pretrained_layers
from ..models.place_model import PlaceModel, build, build_model
from ..models.recognise import recognise
from ..models.shape import ModelShape, check_shape
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


def fresh_model(config: CommonConfig, train_split: Split, centroids: Path | None = None,
                image_size: tuple[int, int] | None = None) -> tuple[PlaceModel, Path | None]:
    """A model with `config.weights` and, for NetVLAD, initialised from the centroids;
    `image_size`: the images', for the aggregators over a fixed map (MixVPR)."""
    model = build_model(config.arch, config.aggregator, weights=config.weights,
                        image_size=image_size or config.image_size,
                        trainable=getattr(config, "trainable_stages", None),
                        **config.aggregator_settings())
    if config.aggregator != "netvlad":
        return model, None
    path = centroids_for(config, train_split, centroids)
    found = read_centroids(path, model.num_clusters, model.encoder_dim)
    model.pool.init_params(found.centroids, found.descriptors)
    return model, path


class Loaded(NamedTuple):
    """A checkpoint's model, the checkpoint, what the model is, and the image size its
    authors evaluate it at (a released file's; None: the images' own or `--image-size`)."""

    model: nn.Module
    checkpoint: dict
    shape: ModelShape
    image_size: tuple[int, int] | None


def model_from_checkpoint(path: Path, arch: str | None = None, num_clusters: int | None = None,
                          aggregator: str | None = None, checkpoint: dict | None = None
                          ) -> Loaded:
    """The model of checkpoint `path` with its weights (this project's, pytorch-NetVlad's, a
    compressed variant or a released file of the field; see `vpr_core.models.recognise`).

    `arch` / `num_clusters`, when given, must agree with the checkpoint. No backbone weights
    are loaded from anywhere else: the checkpoint holds them. `checkpoint`: the file's
    contents when the caller has already read them (not read again).
    """
    checkpoint = load_checkpoint(path) if checkpoint is None else checkpoint
    if checkpoint.get("compression"):
        model, shape = compressed_model(path, checkpoint, arch, num_clusters)
        return Loaded(model, checkpoint, shape, None)
    # max/avg: asked for, else recorded in the checkpoint (this project's) or its flags.json
    flags = read_flags(path)
    hint = aggregator or checkpoint.get("pooling") or flags.get("aggregator") \
        or flags.get("pooling")
    found = recognise(checkpoint, path, hint)
    check_shape(found.shape, arch, num_clusters, path)
    model = build(found.shape, image_size=found.image_size)  # a map-sized one needs the size
    try:
        model.load_state_dict(found.state_dict, strict=True)
    except RuntimeError as error:
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise UserError(f"{path} does not fit a {found.shape.describe()} model "
                        f"({first[:200]}); it is damaged or of another version") from None
    return Loaded(model, checkpoint, model.shape, found.image_size)


def freeze_as_trained(model: nn.Module, weights: str, trainable: int | None = None) -> None:
    """Freeze what training froze: a model trained from pretrained `weights` (anything but
    'none'; a checkpoint whose run does not say, such as the released VGG16, counts as the
    reference's default, ImageNet) keeps all but its last conv layers fixed. The one rule of
    `train --resume` and of `compress` fine-tuning."""
    if weights != "none" and isinstance(getattr(model, "encoder", None), nn.Module):
        freeze_pretrained_layers(model.encoder, model.arch, trainable)


def weights_of_run(flags: dict) -> str:
    """The weights a run was trained from, as its flags.json says (as `train --resume`
    restores them); a run without one (the released VGG16) had the default, ImageNet."""
    return restored(TrainConfig, flags, {}).get("weights", default_of(TrainConfig, "weights"))


def training_start(config, train_split: Split, image_size: tuple[int, int] | None = None
                   ) -> Start:
    """What a validated `TrainConfig` starts from: its `--resume` checkpoint (frozen as it was
    trained), else a fresh model (its centroids clustered when the cache has none)."""
    if config.resume is None:
        model, centroids = fresh_model(config, train_split, config.centroids, image_size)
        return Start(model, centroids)
    path = checkpoint_file(config.resume, config.ckpt)
    model, checkpoint, _, _ = model_from_checkpoint(path, config.arch, config.num_clusters,
                                                    config.aggregator)
    freeze_as_trained(model, config.weights, config.trainable_stages)
    initialised_from = read_flags(path).get("centroids")  # kept for the run's records
    return Start(model, Path(initialised_from) if initialised_from else None, checkpoint, path)
