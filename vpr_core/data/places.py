"""`PlaceSet`: training images grouped by place, what place-batched recipes read (GSV-Cities,
MSLS): a batch is P places x K images of each."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import UserError

log = logging.getLogger(__name__)


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

    @classmethod
    def grouped(cls, dataset: str, root: Path, paths, names, min_images_per_place: int,
                source: str) -> PlaceSet:
        """The images `paths` grouped by their place name (`names[i]` for `paths[i]`), places
        numbered in order of first appearance; places with fewer than `min_images_per_place`
        images are left out (and counted in a log line), as the GSV-Cities authors do. No
        place left is a `UserError` naming `source`."""
        names = list(names)
        counts: dict[str, int] = {}
        for name in names:
            counts[name] = counts.get(name, 0) + 1
        kept = [name for name, count in counts.items() if count >= min_images_per_place]
        dropped = len(counts) - len(kept)
        if dropped:
            log.info("%s: left out %d of %d places with fewer than %d images (%d images)",
                     dataset, dropped, len(counts), min_images_per_place,
                     sum(c for c in counts.values() if c < min_images_per_place))
        if not kept:
            raise UserError(f"{source} has no place with at least {min_images_per_place} images "
                            f"({len(counts)} places, {len(names)} images); lower the minimum "
                            f"or fix the data")
        index = {name: i for i, name in enumerate(kept)}
        chosen = [i for i, name in enumerate(names) if name in index]
        return cls(dataset=dataset, root=root, paths=tuple(str(paths[i]) for i in chosen),
                   place_of=np.array([index[names[i]] for i in chosen], dtype=np.int64),
                   place_names=tuple(kept))

    @property
    def num_images(self) -> int:
        return len(self.paths)

    @property
    def num_places(self) -> int:
        return len(self.place_names)

    @property
    def cities(self) -> tuple[str, ...]:
        """The cities of the places, in order of first appearance: both readers name a place
        '<city>_...' (see `gsv_cities.read_places`, `msls.place_name`)."""
        return tuple(dict.fromkeys(name.split("_", 1)[0] for name in self.place_names))

    def images_of(self, place: int) -> np.ndarray:
        """The indices into `paths` of the images of `place`, in file order."""
        return np.flatnonzero(self.place_of == place)

    def images_per_place(self) -> np.ndarray:
        """[num_places] how many images each place has."""
        return np.bincount(self.place_of, minlength=self.num_places)

    def describe(self) -> str:
        return f"{self.dataset}: {self.num_places} places, {self.num_images} images"


def place_layout(root: Path) -> str | None:
    """The place-data layout of `root` ('gsv-cities': ROOT/Dataframes/<city>.csv, 'msls':
    ROOT/train_val/<city>/), None for any other folder. Light: settings checks ask it."""
    root = Path(root)
    if any((root / "Dataframes").glob("*.csv")):
        return "gsv-cities"
    if (root / "train_val").is_dir():
        return "msls"
    return None
