"""What a place-batched run reads: the training places (GSV-Cities, MSLS) and a validation
split of another dataset (`--val-root`, any layout `open_split` reads), with their feeds."""
from __future__ import annotations

import numpy as np
import torch

from ..data import Split, open_split
from ..data.image_feed import ImageFeed
from ..data.places import PlaceSet
from ..errors import UserError
from .inputs import TrainingData


def open_place_data(config, device: torch.device) -> TrainingData:
    """The data of a validated place-batched `TrainConfig`; every mistake is a `UserError`.
    The only caller of the place readers (`open_places`)."""
    from ..data.datasets import open_places  # the GSV-Cities and MSLS readers

    places = open_places(config.data_root, min_images_per_place=config.images_per_place)
    return place_training_data(config, places, device)


def place_training_data(config, places: PlaceSet, device: torch.device) -> TrainingData:
    """`places` checked against the batch (P places x K images) and the validation split
    opened beside them."""
    check_batches(places, config.places_per_batch, config.images_per_place)
    # --dataset names the training data's dataset (flags.json records the places'): the
    # validation set's is found under --val-root (the only .mat; MSLS's official queries)
    val = open_split(config.val_root, config.val_split, flag="--val-root")
    size = tuple(config.image_size) if config.image_size is not None else places.native_size
    if size is None:
        raise UserError(f"the images of {places.dataset} differ in size; pass --image-size HxW")
    if config.image_size is None and val.native_size != size:
        raise UserError(f"--val-root images are {val.native_size}, {places.dataset} images "
                        f"{size}; pass --image-size HxW")
    train = as_split(places, config.train_split)
    return TrainingData(train, val, size, ImageFeed.for_config(config, train, size, device),
                        ImageFeed.for_config(config, val, size, device),
                        np.empty(0, dtype=np.int64), places)


def check_batches(places: PlaceSet, places_per_batch: int, images_per_place: int) -> None:
    """Refuse a batch the places cannot fill: more places than there are, or a place with
    fewer than K images."""
    if places_per_batch * images_per_place > places.num_images \
            or places_per_batch > places.num_places:
        raise UserError(f"--places-per-batch {places_per_batch} x --images-per-place "
                        f"{images_per_place} is more than {places.describe()} hold; lower "
                        f"--places-per-batch")
    counts = places.images_per_place()
    short = np.flatnonzero(counts < images_per_place)
    if len(short):
        raise UserError(f"place {places.place_names[short[0]]} of {places.dataset} has "
                        f"{counts[short[0]]} images, fewer than --images-per-place "
                        f"{images_per_place} ({len(short)} such places); lower "
                        f"--images-per-place or leave such places out")


def as_split(places: PlaceSet, name: str) -> Split:
    """`places` as the image list an `ImageFeed` reads: every image a database image."""
    nowhere = np.zeros((places.num_images, 2))
    return Split(dataset=places.dataset, split=name, root=places.root,
                 database_paths=tuple(places.paths), query_paths=(), database_utm=nowhere,
                 query_utm=np.zeros((0, 2)), native_size=places.native_size)
