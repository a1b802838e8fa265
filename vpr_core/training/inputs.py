"""What a training run reads: its two splits and, for each, where batches come from (the images,
or the frozen layers' output) with the part of the model that reads them."""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data import Split, open_split, resolve_image_size
from ..data.image_feed import ImageFeed
from ..data.places import PlaceSet
from ..errors import UserError
from .frozen_features import FrozenFeatures, budget_bytes

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainingData:
    """The training and validation splits at one image size, their feeds, and the training
    queries that have a positive (within 10 m); for place-batched training, the places
    (`vpr_core.training.place_data`)."""

    train_split: Split
    val_split: Split
    image_size: tuple[int, int]
    train_feed: ImageFeed
    val_feed: ImageFeed
    query_ids: np.ndarray  # [Q'] training queries with at least one positive
    places: PlaceSet | None = None  # place-batched training: the places of train_split's images

    def describe(self) -> str:
        """What trains: the places of place data, else the training split."""
        if self.places is not None:
            return self.places.describe()
        return self.train_split.describe()

    @classmethod
    def open(cls, config, device: torch.device) -> TrainingData:
        """The data of a validated `TrainConfig`; every mistake in it is a `UserError`."""
        train = open_split(config.data_root, config.train_split, config.dataset)
        val = open_split(config.data_root, config.val_split, config.dataset)
        size = resolve_image_size(train, config.image_size)
        if config.image_size is None and val.native_size != size:
            raise UserError(f"{config.val_split} images are {val.native_size}, "
                            f"{config.train_split} images {size}; pass --image-size HxW")
        positives = train.train_positives()
        query_ids = np.array([q for q, p in enumerate(positives) if len(p)], dtype=np.int64)
        if len(query_ids) == 0:
            raise UserError(f"no {config.train_split} query has a database image within "
                            f"{math.sqrt(train.nontriv_pos_dist_sq_thr):.0f} m; check the "
                            f"UTM coordinates of the dataset")
        return cls(train, val, size, ImageFeed.for_config(config, train, size, device),
                   ImageFeed.for_config(config, val, size, device), query_ids)


@dataclass(frozen=True)
class SplitInput:
    """Where one split's batches come from (`source`: an `ImageFeed`, or `FrozenFeatures`
    standing in for it) and the model part that reads them (`forward`)."""

    source: ImageFeed | FrozenFeatures
    forward: nn.Module

    @property
    def frozen(self) -> bool:
        return isinstance(self.source, FrozenFeatures)


def frozen_inputs(model: nn.Module, data: TrainingData, config, device: torch.device
                  ) -> tuple[SplitInput, SplitInput]:
    """The inputs of the training and validation splits: the frozen layers' output where
    --frozen-cache-gb holds it (run once over the images here, training split first; see
    `vpr_core.training.frozen_features`), else the images and the whole model."""
    budget = budget_bytes(config.frozen_cache_gb, device)
    train = _features(model, data.train_feed, budget, config)
    val = _features(model, data.val_feed, budget - train.nbytes, config) if train else None
    kept = [f"{len(f.feed.paths)} {f.split.split} images ({f.nbytes / 1e9:.2f} GB)"
            for f in (train, val) if f is not None]
    if kept:
        log.info("the first %d encoder layers are frozen: their output is computed once, for "
                 "%s; training runs the layers after them", train.layers, " and ".join(kept))
    return (_input(model, data.train_feed, train), _input(model, data.val_feed, val))


def _features(model, feed: ImageFeed, budget: int, config) -> FrozenFeatures | None:
    return FrozenFeatures.build(model, feed, budget=budget, batch_size=config.cache_batch_size,
                                precision=config.precision, show_progress=config.show_progress)


def _input(model, feed: ImageFeed, features: FrozenFeatures | None) -> SplitInput:
    if features is None:
        return SplitInput(feed, model)
    return SplitInput(features, features.forward_of(model))
