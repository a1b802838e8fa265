"""Synthetic datasets in the GSV-Cities and MSLS layouts, from the street of `street`.

Each city is a street of its own with `places` places; a place is seen `images_per_place`
times from slightly different spots and zooms: the first half in daylight, the others under
other light, colour and occluders, so places are learnable. GSV-Cities lists every view in
`Dataframes/<city>.csv`; MSLS puts the daylight views in `database/`, the others in `query/`.

MSLS positions: place p of a city lies at easting E + 20 p + 5 (metres, +-2 m), E a multiple
of 10, so its images share one `msls.PLACE_CELL_M` cell and 25 m holds its two neighbours.
Every 3rd place's queries are left out of subtask_index.csv `all` and each city's first query
is marked a panorama, so the official query set is smaller than all queries.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from . import gsv_cities
from .street import Street, daylight, noise, query_conditions

GSV_CITIES = ("London", "Boston")  # the authors' GSVCitiesDataset default
MSLS_CITIES = {"train": ("london", "boston"), "val": ("cph", "sf")}
MSLS_STEP_M = 20.0


def place_views(street: Street, config, place: int, rng) -> list[Image.Image]:
    """`config.images_per_place` views of `place`: the first half daylight, then others."""
    height, width = config.image_size
    views = []
    for k in range(config.images_per_place):
        along = place * config.spacing + rng.uniform(-1.5, 1.5)
        if k < (config.images_per_place + 1) // 2:
            image = street.view(along, rng.uniform(0.9, 1.1), rng.uniform(-0.04, 0.04), 0.0)
            views.append(daylight(image, rng).resize((width, height), Image.LANCZOS))
        else:
            image = street.view(along, rng.uniform(0.8, 1.2), rng.uniform(-0.08, 0.08),
                                rng.uniform(-6, 6))
            image = query_conditions(image, rng).resize((width, height), Image.LANCZOS)
            views.append(noise(image, rng))
    return views


def write_gsv_cities(root: Path, config, bar) -> dict:
    counts = {}
    for index, city in enumerate(GSV_CITIES):
        rng = np.random.default_rng([config.seed, 100 + index])
        street = Street(rng, config)
        rows = ["place_id,year,month,northdeg,city_id,lat,lon,panoid"]
        for place in range(config.places):
            for k, image in enumerate(place_views(street, config, place, rng)):
                year, month, northdeg = 2010 + k, int(rng.integers(1, 13)), int(rng.integers(360))
                lat = round(float(40 + index + place * 2e-4 + rng.uniform(0, 2e-5)), 7)
                lon = round(float(-70 - index - rng.uniform(0, 2e-5)), 7)
                panoid = f"p{place:03d}{k}{city[:2]}x{int(rng.integers(10**6)):06d}"
                name = gsv_cities.image_name(city, place, year, month, northdeg, lat, lon,
                                             panoid)
                path = root / "Images" / city / name
                path.parent.mkdir(parents=True, exist_ok=True)
                image.save(path, quality=92)
                rows.append(f"{place},{year},{month},{northdeg},{city},{lat!r},{lon!r},{panoid}")
                bar.update(1)
        csv = gsv_cities.dataframes_dir(root) / f"{city}.csv"
        csv.parent.mkdir(parents=True, exist_ok=True)
        csv.write_text("\n".join(rows) + "\n")
        counts[city] = {"places": config.places, "images": len(rows) - 1}
    return counts


def write_msls(root: Path, config, bar) -> dict:
    counts = {}
    cities = [(split, city) for split, names in MSLS_CITIES.items() for city in names]
    for index, (split, city) in enumerate(cities):
        rng = np.random.default_rng([config.seed, 200 + index])
        street = Street(rng, config)
        origin = np.array([500000.0, 5000000.0 + 10000.0 * index])
        folders = {"database": [], "query": []}
        for place in range(config.places):
            views = place_views(street, config, place, rng)
            half = (len(views) + 1) // 2
            for k, image in enumerate(views):
                folder = "database" if k < half else "query"
                utm = origin + [MSLS_STEP_M * place + 5 + rng.uniform(-2, 2),
                                5 + rng.uniform(-2, 2)]
                key = f"{city}{folder[0]}{place:03d}{k}"
                path = root / "train_val" / city / folder / "images" / f"{key}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                image.save(path, quality=92)
                official = folder == "database" or place % 3 != 2
                folders[folder].append((key, utm, official))
                bar.update(1)
        for folder, images in folders.items():
            _write_msls_csvs(root / "train_val" / city / folder, images, folder == "query")
        counts[f"{split} {city}"] = {"database": len(folders["database"]),
                                     "queries": len(folders["query"])}
    return counts


def _write_msls_csvs(where: Path, images: list, first_is_pano: bool) -> None:
    """The four CSV files of one MSLS folder, with the released headers."""
    post = [",key,easting,northing,unique_cluster,control_panel,night,view_direction"]
    raw = [",key,lon,lat,ca,captured_at,pano"]
    seq = [",key,sequence_key,frame_number"]
    sub = [",all,s2w,w2s,o2n,n2o,d2n,n2d"]
    for i, (key, (east, north), official) in enumerate(images):
        pano = first_is_pano and i == 0
        post.append(f"{i},{key},{east:.6f},{north:.6f},{i // 4},False,False,Sideways")
        raw.append(f"{i},{key},{-70 + east * 1e-5:.7f},{40 + north * 1e-6:.7f},90.0,"
                   f"2017-06-01,{pano}")
        seq.append(f"{i},{key},{where.parent.name}{where.name},{i}")
        sub.append(f"{i},{official},False,False,False,False,False,False")
    for name, lines in (("postprocessed", post), ("raw", raw), ("seq_info", seq),
                        ("subtask_index", sub)):
        (where / f"{name}.csv").write_text("\n".join(lines) + "\n")
