"""A synthetic place-recognition dataset, written in the Pittsburgh (or @UTM@ folder) layout;
the GSV-Cities and MSLS layouts are written by `synthetic_places` from the same street.

Each split is a street of its own (`street.Street`): a long facade strip (buildings, windows,
doors, trees) with places every `spacing` metres along it. A database image is the view at a
place in daylight; a query is a view from a slightly different spot and zoom, under other light
and colour, with occluders and noise. Neighbouring places share part of their view, as on a real
street, so the ground truth (25 m for evaluation, 10 m for training) is meaningful. Pixel
statistics change between database and queries, so retrieval has to rely on structure, which
training learns.
"""
from __future__ import annotations

import dataclasses
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat

from ..errors import UserError
from ..fileio import atomic_path
from ..runtime import progress
from ..settings import SPEC, Switch, check, setting
from .street import Street, daylight, noise, query_conditions

SPLITS = ("train", "val", "test")
LAYOUTS = ("pittsburgh", "folder", "gsv-cities", "msls")


def _image_size(text) -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match:
        raise UserError(f"--image-size {text!r} is not HxW; write it like 64x80")
    return int(match.group(1)), int(match.group(2))


@dataclass(frozen=True)
class SynthConfig:
    out: Path = setting(None, "new folder to write", metavar="DIR", group="synth")
    places: int = setting(120, "places per split (database images)", parse=int, minimum=12,
                          group="synth", roles=(SPEC,))
    queries: int | None = setting(None, "queries per split", parse=int, group="synth",
                                  shown_default="--places", roles=(SPEC,))
    image_size: tuple[int, int] = setting((64, 80), "size of every image", metavar="HxW",
                                          parse=_image_size, shown_default="64x80",
                                          group="synth", roles=(SPEC,))
    # metres between places: 25 m holds the place and its two neighbours
    spacing: float = setting(14.0, "metres between places", parse=float, positive=True,
                             group="synth")
    seed: int = setting(0, "random seed", parse=int, group="synth", roles=(SPEC,))
    layout: str = setting("pittsburgh", "dataset layout", choices=LAYOUTS, group="synth")
    images_per_place: int = setting(4, "views of each place (gsv-cities and msls layouts; the "
                                    "first half in daylight)", parse=int, minimum=2,
                                    group="synth", roles=(SPEC,))
    name: str = setting("synth", "the dataset's name (<name>_<split>.mat)", group="synth")
    show_progress: bool = setting(True, "progress bars", flag="",
                                  switches=(Switch("--quiet", False, "no progress bars"),))

    def validate(self) -> SynthConfig:
        """A resolved copy: `queries` filled in (default: one per place), the image size as
        (H, W)."""
        if self.out is None:
            raise UserError("synth needs --out DIR, the new folder to write")
        size = tuple(self.image_size) if isinstance(self.image_size, (tuple, list)) \
            else _image_size(self.image_size)
        resolved = dataclasses.replace(self, out=Path(self.out).expanduser().absolute(),
                                       image_size=size,
                                       queries=self.places if self.queries is None
                                       else self.queries)
        check(resolved)
        if not 1 <= resolved.queries <= resolved.places:
            raise UserError(f"--queries must be between 1 and --places, got {resolved.queries}")
        if min(size) < 32:
            raise UserError(f"--image-size {self.image_size} is too small; use at least 32x32")
        return resolved


def write_synthetic(config: SynthConfig) -> dict:
    """Write the dataset under `config.out` (atomically: a folder renamed into place)."""
    config = config.validate()
    out = config.out
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out} exists and is not empty; pass a new --out folder")
    staging = out.parent / f".{out.name}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        counts = _write_layout(staging, config)
        if out.exists():
            out.rmdir()
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"out": str(out), "layout": config.layout, "dataset": config.name,
            "image_size": f"{config.image_size[0]}x{config.image_size[1]}", "splits": counts}


def _write_layout(root: Path, config: SynthConfig) -> dict:
    """Write every split (or city) of `config.layout` under `root`; their image counts."""
    if config.layout in ("gsv-cities", "msls"):
        from . import synthetic_places  # it builds on this module's street

        cities = 2 if config.layout == "gsv-cities" else 4
        bar = progress(total=cities * config.places * config.images_per_place,
                       enabled=config.show_progress, desc=f"synth {config.layout}", unit="img")
        write = synthetic_places.write_gsv_cities if config.layout == "gsv-cities" \
            else synthetic_places.write_msls
        try:
            return write(root, config, bar)
        finally:
            bar.close()
    counts = {}
    for index, split in enumerate(SPLITS):
        rng = np.random.default_rng([config.seed, index])
        counts[split] = _write_split(Street(rng, config), root, split, config)
    return counts


def _write_split(street: Street, root: Path, split: str, config: SynthConfig) -> dict:
    """The database and query images of `split` cut from `street`, in the Pittsburgh or
    @UTM@ folder layout."""
    rng = street.rng
    height, width = config.image_size
    db_along = np.arange(config.places) * config.spacing
    query_places = np.sort(rng.choice(config.places, config.queries, replace=False))
    q_along = db_along[query_places] + rng.uniform(-1.5, 1.5, size=config.queries)
    db_names, q_names = [], []
    bar = progress(total=config.places + config.queries, enabled=config.show_progress,
                   desc=f"synth {split}", unit="img")
    for i, along in enumerate(db_along):
        image = street.view(along, rng.uniform(0.95, 1.05), rng.uniform(-0.03, 0.03), 0.0)
        image = daylight(image, rng).resize((width, height), Image.LANCZOS)
        db_names.append(_save(street, root, split, "database", i, along, image, config))
        bar.update(1)
    for i, along in enumerate(q_along):
        image = street.view(along, rng.uniform(0.8, 1.2), rng.uniform(-0.08, 0.08),
                          rng.uniform(-6, 6))
        image = query_conditions(image, rng).resize((width, height), Image.LANCZOS)
        image = noise(image, rng)
        q_names.append(_save(street, root, split, "queries", i, along, image, config))
        bar.update(1)
    bar.close()
    if config.layout == "pittsburgh":
        write_dbstruct(root / "datasets" / f"{config.name}_{split}.mat", split, db_names,
                        street.utm(db_along), q_names, street.utm(q_along))
    return {"database": len(db_names), "queries": len(q_names)}

def _save(street: Street, root: Path, split: str, kind: str, index: int, along: float,
          image: Image.Image, config: SynthConfig) -> str:
    if config.layout == "pittsburgh":
        relative = f"{split}/{index:05d}.jpg"
        path = root / ("queries_real" if kind == "queries" else "database") / relative
        relative = relative if kind == "queries" else f"database/{relative}"
    else:
        east, north = street.utm(np.array([along]))[0]
        relative = f"@{east:010.2f}@{north:010.2f}@17@T@@@{kind[0]}{index:05d}@@@@@@@@.jpg"
        path = root / "images" / split / kind / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, quality=92)
    return relative


def write_dbstruct(path: Path, split: str, db_names: list[str], db_utm: np.ndarray,
                    q_names: list[str], q_utm: np.ndarray) -> None:
    """A dbStruct with the ten fields of the real Pittsburgh files, in their order."""

    def cells(names: list[str]) -> np.ndarray:
        array = np.empty((len(names), 1), dtype=object)
        for i, name in enumerate(names):
            array[i, 0] = name
        return array

    struct = {
        "whichSet": split,
        "dbImageFns": cells(db_names),
        "utmDb": db_utm.T.astype(np.float64),
        "qImageFns": cells(q_names),
        "utmQ": q_utm.T.astype(np.float64),
        "numImages": np.int64(len(db_names)),
        "numQueries": np.int64(len(q_names)),
        "posDistThr": np.int64(25),
        "posDistSqThr": np.int64(625),
        "nonTrivPosDistSqThr": np.int64(100),
    }
    with atomic_path(path) as tmp:
        savemat(str(tmp), {"dbStruct": struct})
