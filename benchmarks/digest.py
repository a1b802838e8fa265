"""`python -m benchmarks digest`: how long a dataset input's digest takes on a large file list.

The digest (`vpr_core.data.description.file_digest`) is what every tracked run computes for
each dataset it trained or was measured on: the sha256 of the sorted relative image paths and
their counts, no image opened. Here on a synthetic GSV-Cities-like list (`--images` paths named
as GSV-Cities names its images, 4 per place, shuffled), median of `--repeats` runs, with and
without the `PlaceSet` of those paths (grouping by place and the cities' names, which the
description counts). Nothing is asserted: it is a measurement.

    python -m benchmarks digest --images 500000
"""
from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

import torch

from benchmarks import common
from benchmarks.common import emit
from vpr_core.data.description import file_digest, of_places
from vpr_core.data.places import PlaceSet

ROOT = Path("/data/gsv-cities")
CITIES = 23
CPU = torch.device("cpu")


def gsv_like(images: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(absolute image paths, place names), 4 images per place, in a shuffled order."""
    paths, names = [], []
    for i in range(images):
        city, place, month = i % CITIES, i // (4 * CITIES), (i // CITIES) % 4 + 1
        name = f"City{city}_{place:07d}"
        paths.append(f"{ROOT}/Images/City{city}/{name}_2019_{month:02d}_123_45.678901_"
                     f"-12.345678_AbCdEfGhIjKlMnOpQrStUv.jpg")
        names.append(name)
    order = list(range(images))
    random.Random(seed).shuffle(order)
    return [paths[i] for i in order], [names[i] for i in order]


def timed(function, repeats: int) -> float:
    """The median seconds of `repeats` calls (`common.timed` on the CPU)."""
    return statistics.median(common.timed(function, CPU) for _ in range(repeats))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks digest")
    parser.add_argument("--images", type=int, default=500_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    paths, names = gsv_like(args.images)
    digest = timed(lambda: file_digest(ROOT, {"images": paths}), args.repeats)
    emit({"what": "file_digest", "images": args.images, "seconds": round(digest, 3),
          "us_per_image": round(1e6 * digest / args.images, 2)})
    places = PlaceSet.grouped("gsv-cities", ROOT, paths, names, 4, "synthetic list")
    described = timed(lambda: of_places(places), args.repeats)
    emit({"what": "of_places", "images": places.num_images, "places": places.num_places,
          "seconds": round(described, 3),
          "us_per_image": round(1e6 * described / places.num_images, 2)})
