"""The GSV-Cities layout as released: `ROOT/Dataframes/<city>.csv` lists the images of a city,
which live at `ROOT/Images/<city>/<name>.jpg`; the name is built from the CSV row (see
`image_name`), the formula of the authors' `GSVCitiesDataset.get_img_name`.

A place is (city, place_id): place ids are numbered per city.
"""
from __future__ import annotations

import logging
from pathlib import Path

from ..errors import UserError
from .places import PlaceSet
from .tables import number, read_table

log = logging.getLogger(__name__)

# the authors' training cities (their GSVCitiesDataloader's TRAIN_CITIES), in their order
CITIES = ("Bangkok", "BuenosAires", "LosAngeles", "MexicoCity", "OSL", "Rome", "Barcelona",
          "Chicago", "Madrid", "Miami", "Phoenix", "TRT", "Boston", "Lisbon", "Medellin",
          "Minneapolis", "PRG", "WashingtonDC", "Brussels", "London", "Melbourne", "Osaka",
          "PRS")
COLUMNS = ("place_id", "year", "month", "northdeg", "city_id", "lat", "lon", "panoid")


def dataframes_dir(root: Path) -> Path:
    return root / "Dataframes"


def image_name(city: str, place_id: int, year: int, month: int, northdeg: int, lat: float,
               lon: float, panoid: str) -> str:
    """The released file name of an image, e.g.
    `London_0000012_2017_06_241_51.5074391_-0.1277583_AbCdEf.jpg`: place id padded to 7
    digits, year to 4, month to 2, northdeg to 3; lat and lon as Python writes a float
    (what the authors' pandas rows hold)."""
    return (f"{city}_{str(place_id).zfill(7)}_{str(year).zfill(4)}_{str(month).zfill(2)}_"
            f"{str(northdeg).zfill(3)}_{float(lat)!s}_{float(lon)!s}_{panoid}.jpg")


def row_image_name(row: dict, path: Path, line: int) -> str:
    """`image_name` of one CSV row (strings, as the file holds them)."""
    values = [number(row, column, path, line, int)
              for column in ("place_id", "year", "month", "northdeg")]
    lat, lon = (number(row, column, path, line) for column in ("lat", "lon"))
    return image_name(row["city_id"].strip(), *values, lat, lon, row["panoid"].strip())


def present_cities(root: Path) -> list[str]:
    return sorted(p.stem for p in dataframes_dir(root).glob("*.csv"))


def choose_cities(root: Path, cities) -> list[str]:
    """`cities` (each must have its CSV), else the authors' cities that are present."""
    present = present_cities(root)
    if cities is not None:
        cities = [c.strip() for c in cities]
        missing = [c for c in cities if c not in present]
        if missing:
            raise UserError(f"no {', '.join(f'{c}.csv' for c in missing)} in "
                            f"{dataframes_dir(root)} (found: {', '.join(present) or 'none'}); "
                            f"fix the cities or --data-root")
        return cities
    chosen = [c for c in CITIES if c in present]
    if not chosen:
        raise UserError(f"{dataframes_dir(root)} holds none of the GSV-Cities cities "
                        f"(found: {', '.join(present) or 'no CSV'}); name the cities to read")
    absent = [c for c in CITIES if c not in present]
    if absent:
        log.info("GSV-Cities: %d of the authors' %d cities are not under %s (%s)",
                    len(absent), len(CITIES), dataframes_dir(root), ", ".join(absent))
    return chosen


def read_places(root, cities=None, min_images_per_place: int = 4) -> PlaceSet:
    """Every image of `cities` (default: the authors' training cities) grouped by place.

    Places with fewer than `min_images_per_place` images are left out, as the authors do.
    Images are not opened here: `datasets.open_places` checks them.
    """
    root = Path(root).expanduser().absolute()
    if not dataframes_dir(root).is_dir():
        raise UserError(f"{dataframes_dir(root)} does not exist; GSV-Cities needs "
                        f"ROOT/Dataframes/<city>.csv and ROOT/Images/<city>/; fix --data-root")
    paths, names = [], []
    for city in choose_cities(root, cities):
        csv_path = dataframes_dir(root) / f"{city}.csv"
        for line, row in enumerate(read_table(csv_path, COLUMNS), start=2):
            name = row_image_name(row, csv_path, line)
            place_id = number(row, "place_id", csv_path, line, int)
            paths.append(root / "Images" / row["city_id"].strip() / name)
            names.append(f"{city}_{place_id:07d}")
    return PlaceSet.grouped("gsv-cities", root, paths, names, min_images_per_place,
                            f"GSV-Cities under {root}")
