"""The model a stage starts from: fresh (encoder weights + centroids) or from a checkpoint."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from ..config.common import COMPRESS_METHODS, ClusterConfig, CommonConfig
from ..data import Split
from ..errors import UserError
from ..models.backbones import ENCODER_DIMS
from ..models.checkpoints import (
    ModelShape,
    check_shape,
    infer_model_shape,
    load_checkpoint,
    read_flags,
)
from ..models.place_model import PlaceModel, build_model
from .cluster import cluster, read_centroids


def centroids_for(config: CommonConfig, train_split: Split, centroids: Path | None = None) -> Path:
    """The centroid file to initialise NetVLAD: `centroids` if given, else the cache's (made
    by clustering `train_split` when missing)."""
    if centroids is not None:
        if not Path(centroids).is_file():
            raise UserError(f"--centroids {centroids} does not exist; pass an existing .hdf5 file "
                            f"or leave it out to use the cache")
        return Path(centroids)
    shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(CommonConfig)}
    cluster_config = ClusterConfig(**shared, split=train_split.split)
    return cluster(cluster_config, split=train_split).path


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
                          pooling: str | None = None) -> tuple[PlaceModel, dict, ModelShape]:
    """(model with the checkpoint's weights, the checkpoint dict, what it holds).

    `arch` / `num_clusters`, when given, must agree with the checkpoint. No backbone weights
    are loaded from anywhere else: the checkpoint holds them.
    """
    checkpoint = load_checkpoint(path)
    if checkpoint.get("compression"):
        return _compressed_model(path, checkpoint, arch, num_clusters)
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


def _compressed_model(path: Path, checkpoint: dict, arch: str | None, num_clusters: int | None
                      ) -> tuple[torch.nn.Module, dict, ModelShape]:
    """A compressed variant (see `vpr_core.compression`): the original architecture, reshaped
    by its method, then the state dict."""
    from ..compression.methods import method
    from ..compression.variants import chain

    record = checkpoint["compression"]
    base = record.get("base") or {}
    if any(step.get("method") not in COMPRESS_METHODS for step in chain(record)) \
            or base.get("arch") not in ENCODER_DIMS:
        raise UserError(f"{path} names a compression this version does not know "
                        f"({record.get('method')!r}); evaluate it with the version that made it")
    shape = ModelShape(base["arch"], base.get("pooling", "netvlad"), base.get("num_clusters"))
    check_shape(shape, arch, num_clusters, path)
    model = build_model(shape.arch, shape.pooling, shape.num_clusters or 1, weights="none")
    for step in chain(record):  # a variant of a variant: its steps in order
        model = method(step["method"]).rebuild(model, step.get("settings") or {},
                                               checkpoint["state_dict"],
                                               checkpoint.get("compression_extra") or {})
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as error:
        raise UserError(f"{path} does not fit the {record['method']} variant it says it is "
                        f"({str(error).splitlines()[-1][:160]}); it is damaged") from None
    return model, checkpoint, shape
