"""Large generated datasets for speed measurements, written fast (Pittsburgh layout).

`vpr_core.data.synthetic` draws streets that training can learn from, at about 0.1 s an image; a
Pitts30k-size epoch needs 17,416 images of 480x640, so this writes cheaper ones: per image a
few octaves of smooth colour noise with random rectangles on top, saved as JPEG (about 30-50
KB at 480x640, like Pittsburgh's photos). Database image i stands i metres along a straight
street and queries stand among them, so each query has about 20 positives within 10 m and
every other database image beyond 25 m is a negative, as in Pitts30k. What is measured is
speed: the images carry no place structure to learn.

    python -m benchmarks.datagen --out /tmp/p30k --database 10000 --queries 7416 --size 480x640
"""
from __future__ import annotations

import argparse
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from vpr_core.config import parse_image_size
from vpr_core.data.synthetic import write_dbstruct

SPACING_M = 1.0  # metres between database images along the street
ORIGIN = np.array([584000.0, 4477000.0])  # a UTM position in Pittsburgh, as the real files


def render(seed: int, size: tuple[int, int]) -> Image.Image:
    """A natural-looking image of `size` (H, W): smooth colour fields, edges, texture."""
    rng = np.random.default_rng(seed)
    height, width = size
    image = np.zeros((height, width, 3), dtype=np.float32)
    for cells, weight in ((4, 1.0), (16, 0.35), (64, 0.12)):
        noise = rng.uniform(0, 255, size=(cells * height // width + 1, cells, 3))
        layer = Image.fromarray(noise.astype(np.uint8)).resize((width, height), Image.BICUBIC)
        image += weight * np.asarray(layer, dtype=np.float32)
    image = Image.fromarray((image / 1.47).clip(0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(int(rng.integers(8, 24))):
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        x1 = x0 + int(rng.integers(width // 40, width // 4))
        y1 = y0 + int(rng.integers(height // 40, height // 3))
        draw.rectangle([x0, y0, x1, y1], fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
    return image


def _write(job: tuple[str, int, tuple[int, int]]) -> None:
    path, seed, size = job
    render(seed, size).save(path, quality=80)


def write_dataset(out: Path, database: int, queries: int, size: tuple[int, int],
                  splits=("train", "val", "test"), name: str = "gen", seed: int = 0,
                  processes: int | None = None, split_sizes: dict | None = None) -> dict:
    """Write `database` + `queries` JPEGs once and a .mat per split listing them.

    Every split lists the same images, or the first (database, queries) of them given in
    `split_sizes` (writing 35,000 images for Pitts30k's train and val would double the set-up
    time of a measurement, not change what it measures).
    """
    out = Path(out).absolute()
    rng = np.random.default_rng(seed)
    db_along = np.arange(database) * SPACING_M
    q_along = np.sort(rng.uniform(0, db_along[-1], size=queries))
    db_names = [f"database/{i // 1000:03d}/{i:06d}.jpg" for i in range(database)]
    q_names = [f"{i // 1000:03d}/{i:06d}.jpg" for i in range(queries)]
    jobs = [(str(out / n), seed * 10**7 + i, size) for i, n in enumerate(db_names)]
    jobs += [(str(out / "queries_real" / n), seed * 10**7 + database + i, size)
             for i, n in enumerate(q_names)]
    for folder in {Path(path).parent for path, _, _ in jobs}:
        folder.mkdir(parents=True, exist_ok=True)
    with ProcessPoolExecutor(processes or os.cpu_count()) as pool:
        list(pool.map(_write, jobs, chunksize=64))
    direction = np.array([1.0, 0.0])
    db_utm = ORIGIN + db_along[:, None] * direction
    q_utm = ORIGIN + q_along[:, None] * direction + np.array([0.0, 2.0])
    for split in splits:
        n_db, n_q = (split_sizes or {}).get(split, (database, queries))
        write_dbstruct(out / "datasets" / f"{name}_{split}.mat", split, db_names[:n_db],
                       db_utm[:n_db], q_names[:n_q], q_utm[:n_q])
    return {"out": str(out), "database": database, "queries": queries,
            "image_size": f"{size[0]}x{size[1]}", "splits": list(splits)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--database", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--size", default="480x640", help="HxW")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(write_dataset(args.out, args.database, args.queries, parse_image_size(args.size),
                        seed=args.seed))


if __name__ == "__main__":
    main()
