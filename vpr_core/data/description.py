"""`DataDescription`: what a run trained or was measured on, in a few plain fields (its name,
layout, split, counts and a digest of its file list), for a tracking store to record.

The digest identifies the file list, not the pixels: the sha256 of each group's relative image
paths (sorted, so the order the dataset lists them in does not count) and of its count.
Hashing 500k paths takes about a second; no image is opened.
"""
from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import UserError
from .places import PlaceSet, place_layout
from .split import Split

DIGEST_CHARS = 16  # of the sha256's hex digits: 64 bits, short enough to read in a table


@dataclass(frozen=True)
class DataDescription:
    """One dataset split as a run used it.

    `dataset`: the dataset's own name ('pitts30k', 'msls', 'gsv-cities'); `split`: 'train',
    'val', ...; `layout`: as `detect_layout` names it ('pittsburgh', 'folder', 'msls',
    'gsv-cities'); `counts`: {'database': N, 'queries': M} for a split, {'cities': C, 'places':
    P, 'images': N} for places; `digest`: see `file_digest`; `source`: the root folder.
    """

    dataset: str
    split: str
    layout: str
    counts: dict
    digest: str
    source: str

    @property
    def name(self) -> str:
        """'pitts30k-val': the dataset and its split, the name the runs table shows."""
        return f"{self.dataset}-{self.split}"

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> DataDescription:
        return cls(**{name: data[name] for name in cls.__dataclass_fields__})


def describe(data: Split | PlaceSet, split: str = "train") -> DataDescription:
    """The description of a split, or of training places named as the split `split`."""
    return of_places(data, split) if isinstance(data, PlaceSet) else of_split(data)


def of_split(split: Split) -> DataDescription:
    """The description of an evaluation split (its database images and queries)."""
    groups = {"database": split.database_paths, "queries": split.query_paths}
    return DataDescription(split.dataset, split.split, _layout(split.root),
                           {"database": split.num_database, "queries": split.num_queries},
                           file_digest(split.root, groups), str(split.root))


def of_places(places: PlaceSet, split: str = "train") -> DataDescription:
    """The description of training places (GSV-Cities, MSLS), named as the split `split`."""
    counts = {"cities": len(places.cities), "places": places.num_places,
              "images": places.num_images}
    return DataDescription(places.dataset, split, place_layout(places.root) or "places",
                           counts, file_digest(places.root, {"images": places.paths},
                                               places=places.num_places),
                           str(places.root))


def file_digest(root: Path | str, groups: dict[str, Sequence[str]], **counts: int) -> str:
    """The first `DIGEST_CHARS` hex digits of the sha256 of each group's name, its count and
    its paths relative to `root`, sorted (absolute where outside `root`); `counts` are
    hashed too. Two lists of the same files in another order have the same digest."""
    prefix = str(root).rstrip("/") + "/"
    digest = hashlib.sha256()
    for name, value in sorted(counts.items()):
        digest.update(f"{name} {value}\n".encode())
    for name, paths in groups.items():
        relative = sorted(p[len(prefix):] if p.startswith(prefix) else p for p in map(str, paths))
        digest.update(f"{name} {len(relative)}\n".encode())
        digest.update("\n".join(relative).encode())
        digest.update(b"\n")
    return digest.hexdigest()[:DIGEST_CHARS]


def _layout(root: Path) -> str:
    """The layout of a split's root ('unknown' when it is gone: a description never fails)."""
    from .datasets import detect_layout  # datasets reads every layout; this needs its name

    try:
        return detect_layout(Path(root))
    except UserError:
        return "unknown"
