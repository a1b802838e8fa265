"""Mapillary Street-Level Sequences (MSLS): `ROOT/train_val/<city>/{database,query}/` holds
`postprocessed.csv` (key, easting, northing, ...), `raw.csv` (key, lon, lat, ca, captured_at,
pano), `seq_info.csv`, `subtask_index.csv` and `images/<key>.jpg`; the rows of a folder's CSV
files describe the same images in the same order.

As a `Split` (validation, evaluation): the database folders against the query folders of the
chosen cities. Two query sets are in use (see `QUERY_SETS`):
- "msls" (default), the official validation protocol of `mapillary_sls` (its `evaluate.py`:
  task im2im, subtask all, 25 m): database and queries are the images marked in the `all`
  column of `subtask_index.csv` that are not panoramas (`raw.csv` pano), and a query is kept
  only with a database image of its city within 25 m. On cph + sf this is the 740-query
  MSLS-val of GSV-Cities, MixVPR, SALAD and BoQ. For single images (im2im) the sequence
  rules of that code keep every frame, so `seq_info.csv` is not needed.
- "msls-all": every image that is not a panorama, as VG-benchmark's MSLS-val (~11k queries).

As a `PlaceSet` (training), see `read_places`: MSLS has no place ids, so images are grouped by
position and heading.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

from ..errors import UserError
from .places import PlaceSet
from .split import POS_DIST_THR, Split
from .tables import boolean, number, read_table

log = logging.getLogger(__name__)

# the cities of the authors' code (mapillary_sls/datasets/msls.py, default_cities)
CITIES = {
    "train": ("trondheim", "london", "boston", "melbourne", "amsterdam", "helsinki", "tokyo",
              "toronto", "saopaulo", "moscow", "zurich", "paris", "bangkok", "budapest",
              "austin", "berlin", "ottawa", "phoenix", "goa", "amman", "nairobi", "manila"),
    "val": ("cph", "sf"),
    "test": ("miami", "athens", "buenosaires", "stockholm", "bengaluru", "kampala"),
}
QUERY_SETS = ("msls", "msls-all")  # --dataset: the official queries, or every query
FOLDERS = ("database", "query")
# training places: cells of this many metres, and this many heading bins (90 degrees each)
PLACE_CELL_M = 10.0
HEADING_BINS = 4


def city_dir(root: Path, city: str) -> Path:
    return root / "train_val" / city


@dataclass(frozen=True)
class Folder:
    """The images of one city's database or query folder, rows in CSV order.

    `utm` is [N, 2] (easting, northing) in metres; `heading` [N] degrees (raw.csv `ca`);
    `official` [N] marks the `all` column of subtask_index.csv (None when not read)."""

    paths: tuple[str, ...]
    utm: np.ndarray
    pano: np.ndarray
    heading: np.ndarray
    official: np.ndarray | None


def read_folder(root: Path, city: str, folder: str, official: bool) -> Folder:
    """One city's `database` or `query` folder; `official` reads subtask_index.csv too."""
    where = city_dir(root, city) / folder
    post = read_table(where / "postprocessed.csv", ("key", "easting", "northing"))
    raw = read_table(where / "raw.csv", ("key", "ca", "pano"))
    tables = {"postprocessed.csv": post, "raw.csv": raw}
    if official:
        tables["subtask_index.csv"] = read_table(where / "subtask_index.csv", ("all",))
    sizes = {name: len(rows) for name, rows in tables.items()}
    if len(set(sizes.values())) > 1:
        raise UserError(f"the CSV files of {where} disagree on the number of images "
                        f"({', '.join(f'{n}: {s}' for n, s in sizes.items())}); restore them")
    for line, (a, b) in enumerate(zip(post, raw), start=2):
        if a["key"] != b["key"]:
            raise UserError(f"{where}: line {line} of postprocessed.csv ({a['key']}) and of "
                            f"raw.csv ({b['key']}) name different images; restore the files")
    at = {name: where / name for name in tables}
    return Folder(
        paths=tuple(str(where / "images" / f"{row['key'].strip()}.jpg") for row in post),
        utm=np.array([[number(r, "easting", at["postprocessed.csv"], i),
                       number(r, "northing", at["postprocessed.csv"], i)]
                      for i, r in enumerate(post, start=2)], dtype=np.float64).reshape(-1, 2),
        pano=np.array([boolean(r, "pano", at["raw.csv"], i) for i, r in enumerate(raw, 2)],
                      dtype=bool),
        heading=np.array([number(r, "ca", at["raw.csv"], i) for i, r in enumerate(raw, 2)],
                         dtype=np.float64),
        official=None if not official else np.array(
            [boolean(r, "all", at["subtask_index.csv"], i)
             for i, r in enumerate(tables["subtask_index.csv"], start=2)], dtype=bool),
    )


def choose_cities(root: Path, cities: str) -> list[str]:
    """'train', 'val' (the authors' cities that are present) or a comma-separated list."""
    if not (root / "train_val").is_dir():
        raise UserError(f"{root / 'train_val'} does not exist; MSLS needs "
                        f"ROOT/train_val/<city>/{{database,query}}/; fix --data-root")
    present = sorted(p.name for p in (root / "train_val").iterdir() if p.is_dir())
    if cities == "test" or any(c in CITIES["test"] for c in cities.split(",")):
        raise UserError("the MSLS test cities have no positions (the challenge server scores "
                        "them); use --split val, train or a list of train_val cities")
    if cities in CITIES:
        chosen = [c for c in CITIES[cities] if c in present]
        absent = [c for c in CITIES[cities] if c not in present]
        if not chosen:
            raise UserError(f"none of the MSLS {cities} cities ({', '.join(CITIES[cities])}) is "
                            f"under {root / 'train_val'} (found: {', '.join(present) or 'none'})"
                            f"; fix --data-root")
        if absent:
            log.warning("MSLS %s: %s missing under %s; reading %s", cities, ", ".join(absent),
                        root / "train_val", ", ".join(chosen))
        return chosen
    chosen = [c.strip() for c in cities.split(",") if c.strip()]
    missing = [c for c in chosen if c not in present]
    if missing or not chosen:
        raise UserError(f"MSLS split {cities!r}: no city {', '.join(missing) or cities} under "
                        f"{root / 'train_val'} (found: {', '.join(present) or 'none'}); use "
                        f"--split train, val or a comma-separated list of cities")
    return chosen


def query_set(dataset: str | None) -> str:
    """The query set named by --dataset: 'msls' (official, the default) or 'msls-all'."""
    if dataset in (None, "msls", "msls-official"):
        return "msls"
    if dataset == "msls-all":
        return dataset
    raise UserError(f"--dataset {dataset!r} is not an MSLS query set; use msls (the official "
                    f"validation queries, default) or msls-all (every query)")


def official_masks(database: Folder, queries: Folder) -> tuple[np.ndarray, np.ndarray]:
    """The official protocol's (database [N], query [M]) masks of one city: marked in
    subtask_index.csv `all`, not panoramas, and queries with a kept database image within 25 m
    (inclusive, as sklearn's radius_neighbors)."""
    keep_db = database.official & ~database.pano
    keep_q = queries.official & ~queries.pano
    if keep_db.any() and keep_q.any():
        found = cKDTree(database.utm[keep_db]).query_ball_point(queries.utm, r=POS_DIST_THR)
        keep_q &= np.array([len(ids) > 0 for ids in found], dtype=bool)
    else:
        keep_q[:] = False
    return keep_db, keep_q


def read_split(root: Path, split: str, dataset: str | None = None) -> Split:
    """The database and queries of the cities of `split` ('val': cph and sf; 'train'; or
    'city,city'), with the query set of `dataset` ('msls' official, or 'msls-all')."""
    which = query_set(dataset)
    db_paths, q_paths, db_utm, q_utm = [], [], [], []
    for city in choose_cities(root, split):
        database, queries = (read_folder(root, city, f, which == "msls") for f in FOLDERS)
        if which == "msls":
            keep_db, keep_q = official_masks(database, queries)
        else:
            keep_db, keep_q = ~database.pano, ~queries.pano
        db_paths += [p for p, k in zip(database.paths, keep_db) if k]
        q_paths += [p for p, k in zip(queries.paths, keep_q) if k]
        db_utm.append(database.utm[keep_db])
        q_utm.append(queries.utm[keep_q])
        log.info("MSLS %s (%s queries): %d database images, %d of %d queries", city,
                 "official" if which == "msls" else "all", int(keep_db.sum()), int(keep_q.sum()),
                 len(queries.paths))
    return Split(dataset=which, split=split, root=root, database_paths=tuple(db_paths),
                 query_paths=tuple(q_paths), database_utm=np.concatenate(db_utm),
                 query_utm=np.concatenate(q_utm))


def place_name(city: str, east: float, north: float, heading: float) -> str:
    """The training place of an image: its city, its `PLACE_CELL_M` x `PLACE_CELL_M` metre
    UTM cell and its heading quadrant (N, E, S or W, each 90 degrees centred on it)."""
    quadrant = int(((heading + 45.0) % 360.0) // (360.0 / HEADING_BINS))
    return (f"{city}_{math.floor(east / PLACE_CELL_M)}_{math.floor(north / PLACE_CELL_M)}_"
            f"{'NESW'[quadrant]}")


def read_places(root, cities=None, min_images_per_place: int = 4) -> PlaceSet:
    """The database and query images (panoramas left out) of `cities` (default: the train
    cities), grouped into places by `place_name`: images of one city less than ~10 m apart
    in one cell, facing the same quadrant. Database and queries of a place were taken at
    other times, which is what training learns from. Cells with fewer than
    `min_images_per_place` images are left out. Neighbouring cells can show overlapping
    views; a batch of P places drawn from thousands rarely holds two neighbours.
    """
    root = Path(root).expanduser().absolute()
    chosen = choose_cities(root, "train" if cities is None else ",".join(cities))
    paths, names = [], []
    for city in chosen:
        for folder in (read_folder(root, city, f, official=False) for f in FOLDERS):
            for i in np.flatnonzero(~folder.pano):
                paths.append(folder.paths[i])
                names.append(place_name(city, *folder.utm[i], folder.heading[i]))
    return PlaceSet.grouped("msls", root, paths, names, min_images_per_place,
                            f"MSLS {', '.join(chosen)} under {root}")
