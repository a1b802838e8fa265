"""One dataset interface behind every layout: `open_split(root, split)` returns a `Split`
(Pittsburgh, @UTM@ folders, MSLS), `open_places(root)` a `PlaceSet` (GSV-Cities, MSLS)."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import UserError
from . import gsv_cities, msls, pittsburgh, utm_folder
from .images import check_images
from .places import PlaceSet, place_layout
from .split import Split


def detect_layout(root: Path, flag: str = "--data-root") -> str:
    """'pittsburgh' when ROOT/datasets/*.mat exist, 'folder' when ROOT/images/ exists,
    'gsv-cities' when ROOT/Dataframes/*.csv exist, 'msls' when ROOT/train_val/ exists.
    `flag`: the option that named `root`, which a mistake's message names."""
    if not root.is_dir():
        raise UserError(f"data root {root} does not exist; fix {flag}")
    if any(pittsburgh.struct_dir(root).glob("*.mat")):
        return "pittsburgh"
    if (root / "images").is_dir():
        return "folder"
    places = place_layout(root)
    if places is not None:
        return places
    raise UserError(
        f"no dataset under {root}: expected ROOT/datasets/<name>_<split>.mat (Pittsburgh layout), "
        f"ROOT/images/<split>/{{database,queries}}/ (@UTM@ folder layout), "
        f"ROOT/Dataframes/<city>.csv (GSV-Cities) or ROOT/train_val/<city>/ (MSLS); "
        f"fix {flag}")


def open_split(root, split: str, dataset: str | None = None, check: bool = True,
               flag: str = "--data-root") -> Split:
    """Read one split of the dataset under `root`, in either layout.

    With `check`, every listed image must exist and have a readable header, and the split must
    have both database images and queries; a problem raises `UserError`. `flag`: the option
    that named `root` (`--val-root` for a place-batched run's validation set).
    """
    root = Path(root).expanduser().absolute()
    layout = detect_layout(root, flag)
    if layout == "pittsburgh":
        result = pittsburgh.read_split(root, split, dataset)
    elif layout == "msls":
        result = msls.read_split(root, split, dataset)
    elif layout == "gsv-cities":
        raise UserError(
            f"{root} holds GSV-Cities, training data grouped by place with no database or "
            f"queries to evaluate; train on it with a place-batched recipe and evaluate on "
            f"Pittsburgh, @UTM@ folder or MSLS data (e.g. {flag} MSLS_ROOT --split val)")
    else:
        result = utm_folder.read_split(root, split)
    if not check:
        return result
    where = f"{result.dataset} {result.split}"
    if result.num_database == 0:
        raise UserError(f"split '{where}' has no database images; fix the dataset or --split")
    if result.num_queries == 0:
        raise UserError(f"split '{where}' has no queries; fix the dataset or --split")
    sizes = check_images(result.database_paths, f"{where} database")
    sizes |= check_images(result.query_paths, f"{where} query")
    return dataclasses.replace(result, native_size=_the_one(sizes))


def open_places(root, *, cities=None, min_images_per_place: int = 4,
                check: bool = True) -> PlaceSet:
    """The training images under `root` grouped by place (GSV-Cities or MSLS layout), places
    with fewer than `min_images_per_place` images left out. `cities` defaults to the authors'
    training cities (those present). With `check`, every image must exist and have a
    readable header; a problem raises `UserError`."""
    root = Path(root).expanduser().absolute()
    layout = detect_layout(root)
    if layout == "gsv-cities":
        places = gsv_cities.read_places(root, cities, min_images_per_place)
    elif layout == "msls":
        places = msls.read_places(root, cities, min_images_per_place)
    else:
        raise UserError(
            f"{root} is in the {layout} layout, which has no places: place-batched training "
            f"needs GSV-Cities (ROOT/Dataframes/<city>.csv) or MSLS (ROOT/train_val/<city>/) "
            f"data; fix --data-root")
    if not check:
        return places
    sizes = check_images(places.paths, f"{places.dataset} training")
    return dataclasses.replace(places, native_size=_the_one(sizes))


def _the_one(sizes: set) -> tuple[int, int] | None:
    """The images' (H, W) when they all share it, else None."""
    return next(iter(sizes)) if len(sizes) == 1 else None


def resolve_image_size(split: Split, requested: tuple[int, int] | None) -> tuple[int, int]:
    """The (H, W) every image is brought to: `requested`, else the images' one native size."""
    if requested is not None:
        return tuple(requested)
    if split.native_size is None:
        raise UserError(
            f"the images of {split.dataset} {split.split} differ in size; pass --image-size HxW "
            f"to resize them to one size")
    return split.native_size
