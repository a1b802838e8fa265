"""The `@UTM@` folder layout: `ROOT/images/<split>/{database,queries}/**/@east@north@...@.jpg`.

Easting and northing are fields 1 and 2 of the file's basename split on '@'; only the basename
is parsed, so an '@' in a folder name is harmless.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import UserError
from .split import Split

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def split_dir(root: Path, split: str) -> Path:
    return root / "images" / split


def read_split(root: Path, split: str) -> Split:
    folder = split_dir(root, split)
    if not folder.is_dir():
        available = sorted(p.name for p in (root / "images").iterdir() if p.is_dir())
        found = ", ".join(available) or "none"
        raise UserError(f"{folder} does not exist (splits found: {found}); "
                        f"fix --split or --data-root")
    database = _list_images(folder / "database")
    queries = _list_images(folder / "queries")
    return Split(
        dataset=root.name,
        split=split,
        root=root,
        database_paths=tuple(str(p) for p in database),
        query_paths=tuple(str(p) for p in queries),
        database_utm=_utm_of(database),
        query_utm=_utm_of(queries),
    )


def parse_utm(name: str) -> tuple[float, float]:
    """(easting, northing) in metres from a basename like `@0584459.21@4477378.86@17@T@...@.jpg`."""
    fields = name.split("@")
    try:
        if len(fields) < 4:
            raise ValueError
        return float(fields[1]), float(fields[2])
    except ValueError:
        raise UserError(
            f"image name {name!r} does not follow the @UTM@ layout; rename it to "
            f"'@<easting>@<northing>@...@.jpg'") from None


def _list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise UserError(f"{folder} does not exist; the folder layout needs database/ and queries/ "
                        f"under each split")
    return sorted(p.absolute() for p in folder.rglob("*")
                  if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _utm_of(paths: list[Path]) -> np.ndarray:
    if not paths:
        return np.zeros((0, 2))
    return np.array([parse_utm(p.name) for p in paths], dtype=np.float64)
