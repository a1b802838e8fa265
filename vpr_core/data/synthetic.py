"""A synthetic place-recognition dataset, written in the Pittsburgh (or @UTM@ folder) layout;
the GSV-Cities and MSLS layouts are written by `synthetic_places` from the same street.

Each split is a street of its own: a long facade strip (buildings, windows, doors, trees) with
places every `spacing` metres along it. A database image is the view at a place in daylight;
a query is a view from a slightly different spot and zoom, under other light and colour, with
occluders and noise. Neighbouring places share part of their view, as on a real street, so the
ground truth (25 m for evaluation, 10 m for training) is meaningful. Pixel statistics change
between database and queries, so retrieval has to rely on structure, which training learns.
"""
from __future__ import annotations

import dataclasses
import math
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter
from scipy.io import savemat

from ..errors import UserError
from ..fileio import atomic_path
from ..runtime import progress
from ..settings import SPEC, Switch, check, setting

SPLITS = ("train", "val", "test")
LAYOUTS = ("pittsburgh", "folder", "gsv-cities", "msls")
RENDER_SCALE = 3  # views are cut from a world drawn this many times finer, then downsampled


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
        counts[split] = _Street(rng, config).write(root, split, config)
    return counts


class _Street:
    def __init__(self, rng: np.random.Generator, config: SynthConfig):
        self.rng = rng
        height, width = config.image_size
        self.view_h, self.view_w = height * RENDER_SCALE, width * RENDER_SCALE
        self.step_px = self.view_w / 2.5  # a neighbour's view overlaps 60% of this one
        self.px_per_m = self.step_px / config.spacing
        world_w = int(self.step_px * (config.places + 4) + self.view_w * 2)
        self.world = _draw_world(rng, world_w, int(self.view_h * 1.4))
        heading = rng.uniform(0, 2 * math.pi)
        self.direction = np.array([math.cos(heading), math.sin(heading)])
        self.origin = np.array([584000.0, 4477000.0]) + rng.uniform(-2000, 2000, size=2)

    def view(self, along_m: float, zoom: float, shift_y: float, angle: float) -> Image.Image:
        centre_x = self.view_w + along_m * self.px_per_m
        centre_y = self.world.height / 2 + shift_y * self.view_h
        half_w, half_h = self.view_w / (2 * zoom), self.view_h / (2 * zoom)
        box = (centre_x - half_w, centre_y - half_h, centre_x + half_w, centre_y + half_h)
        crop = self.world.crop(tuple(int(round(v)) for v in box))
        if angle:
            crop = crop.rotate(angle, resample=Image.BILINEAR, fillcolor=(128, 128, 128))
        return crop

    def write(self, root: Path, split: str, config: SynthConfig) -> dict:
        rng = self.rng
        height, width = config.image_size
        db_along = np.arange(config.places) * config.spacing
        query_places = np.sort(rng.choice(config.places, config.queries, replace=False))
        q_along = db_along[query_places] + rng.uniform(-1.5, 1.5, size=config.queries)
        db_names, q_names = [], []
        bar = progress(total=config.places + config.queries, enabled=config.show_progress,
                       desc=f"synth {split}", unit="img")
        for i, along in enumerate(db_along):
            image = self.view(along, rng.uniform(0.95, 1.05), rng.uniform(-0.03, 0.03), 0.0)
            image = _daylight(image, rng).resize((width, height), Image.LANCZOS)
            db_names.append(self._save(root, split, "database", i, along, image, config))
            bar.update(1)
        for i, along in enumerate(q_along):
            image = self.view(along, rng.uniform(0.8, 1.2), rng.uniform(-0.08, 0.08),
                              rng.uniform(-6, 6))
            image = _query_conditions(image, rng).resize((width, height), Image.LANCZOS)
            image = _noise(image, rng)
            q_names.append(self._save(root, split, "queries", i, along, image, config))
            bar.update(1)
        bar.close()
        if config.layout == "pittsburgh":
            write_dbstruct(root / "datasets" / f"{config.name}_{split}.mat", split, db_names,
                            self.utm(db_along), q_names, self.utm(q_along))
        return {"database": len(db_names), "queries": len(q_names)}

    def utm(self, along: np.ndarray) -> np.ndarray:
        # centimetres, as the @UTM@ file names write them: both layouts hold the same numbers
        return np.round(self.origin + along[:, None] * self.direction, 2)  # [N, 2]

    def _save(self, root: Path, split: str, kind: str, index: int, along: float,
              image: Image.Image, config: SynthConfig) -> str:
        if config.layout == "pittsburgh":
            relative = f"{split}/{index:05d}.jpg"
            path = root / ("queries_real" if kind == "queries" else "database") / relative
            relative = relative if kind == "queries" else f"database/{relative}"
        else:
            east, north = self.utm(np.array([along]))[0]
            relative = f"@{east:010.2f}@{north:010.2f}@17@T@@@{kind[0]}{index:05d}@@@@@@@@.jpg"
            path = root / "images" / split / kind / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, quality=92)
        return relative


def _draw_world(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    """A street facade: sky, buildings of varied colour with window grids, doors, trees, road."""
    world = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(world)
    sky = rng.integers(150, 230, size=3)
    for y in range(height):
        shade = tuple(int(c * (0.75 + 0.25 * y / height)) for c in sky)
        draw.line([(0, y), (width, y)], fill=shade)
    ground = int(height * 0.82)
    x = 0
    while x < width:
        building_w = int(rng.integers(height // 3, height))
        top = int(rng.integers(int(height * 0.08), int(height * 0.45)))
        colour = tuple(int(v) for v in rng.integers(30, 225, size=3))
        draw.rectangle([x, top, x + building_w, ground], fill=colour, outline=(20, 20, 20))
        _draw_windows(draw, rng, x, top, building_w, ground, colour)
        if rng.random() < 0.6:
            door_w = building_w // 6
            door_x = x + int(rng.integers(0, max(1, building_w - door_w)))
            draw.rectangle([door_x, ground - height // 6, door_x + door_w, ground],
                           fill=tuple(int(v) for v in rng.integers(0, 90, size=3)))
        x += building_w + int(rng.integers(0, height // 8))
    for _ in range(width // (height // 2)):
        if rng.random() < 0.5:
            _draw_tree(draw, rng, int(rng.integers(0, width)), ground, height)
    draw.rectangle([0, ground, width, height], fill=(70, 70, 75))
    for x in range(0, width, height // 3):
        draw.rectangle([x, int(height * 0.9), x + height // 8, int(height * 0.92)],
                       fill=(230, 230, 230))
    return world


def _draw_windows(draw, rng, x, top, width, ground, colour) -> None:
    rows, cols = int(rng.integers(2, 6)), int(rng.integers(2, 5))
    cell_w, cell_h = width / cols, (ground - top) * 0.8 / rows
    pane = tuple(int(255 - v) // 2 + int(rng.integers(0, 80)) for v in colour)
    shape = int(rng.integers(0, 3))  # square, tall or round windows per building
    for r in range(rows):
        for c in range(cols):
            x0, y0 = x + c * cell_w + cell_w * 0.25, top + r * cell_h + cell_h * 0.3
            x1 = x0 + cell_w * (0.5 if shape != 1 else 0.3)
            y1 = y0 + cell_h * (0.45 if shape != 1 else 0.6)
            if shape == 2:
                draw.ellipse([x0, y0, x1, y1], fill=pane)
            else:
                draw.rectangle([x0, y0, x1, y1], fill=pane)


def _draw_tree(draw, rng, x, ground, height) -> None:
    trunk_h = int(height * rng.uniform(0.15, 0.3))
    draw.rectangle([x, ground - trunk_h, x + height // 30 + 1, ground], fill=(80, 55, 30))
    radius = int(height * rng.uniform(0.07, 0.14))
    green = (int(rng.integers(20, 70)), int(rng.integers(90, 170)), int(rng.integers(20, 70)))
    draw.ellipse([x - radius, ground - trunk_h - radius, x + radius, ground - trunk_h + radius],
                 fill=green)


def _daylight(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    array = np.asarray(image, dtype=np.float32) * rng.uniform(0.95, 1.05)
    return Image.fromarray(array.clip(0, 255).astype(np.uint8))


def _query_conditions(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Another time of day and camera: colour cast, contrast, gamma, haze, occluders."""
    array = np.asarray(image, dtype=np.float32) / 255.0
    gains = rng.uniform(0.55, 1.45, size=3)
    array = array * gains * rng.uniform(0.6, 1.3)
    mean = array.mean()
    array = mean + (array - mean) * rng.uniform(0.6, 1.3)
    array = np.clip(array, 0, 1) ** rng.uniform(0.6, 1.6)
    if rng.random() < 0.3:  # haze
        array = array * 0.6 + 0.4 * rng.uniform(0.5, 0.9)
    result = Image.fromarray((np.clip(array, 0, 1) * 255).astype(np.uint8))
    draw = ImageDraw.Draw(result)
    h, w = result.height, result.width
    for _ in range(int(rng.integers(1, 4))):  # cars, people, signs in front of the facade
        ow, oh = int(w * rng.uniform(0.1, 0.3)), int(h * rng.uniform(0.1, 0.35))
        ox, oy = int(rng.integers(0, w - ow)), int(rng.integers(h // 3, h - oh))
        colour = tuple(int(v) for v in rng.integers(0, 256, size=3))
        if rng.random() < 0.5:
            draw.ellipse([ox, oy, ox + ow, oy + oh], fill=colour)
        else:
            draw.rectangle([ox, oy, ox + ow, oy + oh], fill=colour)
    if rng.random() < 0.5:
        result = result.filter(ImageFilter.GaussianBlur(radius=rng.uniform(0.5, 2.0)))
    return result


def _noise(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    array = np.asarray(image, dtype=np.float32)
    array = array + rng.normal(0, rng.uniform(2, 10), size=array.shape)
    return Image.fromarray(array.clip(0, 255).astype(np.uint8))


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
