"""`PlaceSet`: training images grouped by place, what place-batched recipes read (GSV-Cities,
MSLS): a batch is P places x K images of each."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class PlaceSet:
    """Every image of a training set with the place it shows.

    `paths` are absolute; `place_of[i]` is the place index (0 .. num_places - 1) of
    `paths[i]`; `place_names[p]` names place p as its dataset does (GSV-Cities:
    "<city>_<place_id>"), for messages.
    """

    dataset: str
    root: Path
    paths: tuple[str, ...]
    place_of: np.ndarray  # [N] int64
    place_names: tuple[str, ...]
    native_size: tuple[int, int] | None = field(default=None, compare=False)  # (H, W) if shared

    @property
    def num_images(self) -> int:
        return len(self.paths)

    @property
    def num_places(self) -> int:
        return len(self.place_names)

    def images_of(self, place: int) -> np.ndarray:
        """The indices into `paths` of the images of `place`, in file order."""
        return np.flatnonzero(self.place_of == place)

    def images_per_place(self) -> np.ndarray:
        """[num_places] how many images each place has."""
        return np.bincount(self.place_of, minlength=self.num_places)

    def describe(self) -> str:
        return f"{self.dataset}: {self.num_places} places, {self.num_images} images"
