"""Lay the shared real `corridor` sequence out as an @UTM@ folder dataset, for demos and benchmarks.

Frame i is placed i x 10 m along a line (the corridor README's rule): the 25 m evaluation radius
then covers +-2 frames, as its gt.csv does. Reference frames are the database, query frames the
queries; the same frames serve as the `val` and `test` splits.

    python benchmarks/corridor_dataset.py --source ../shared/data/corridor --out /tmp/corridor
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

SPACING_M = 10.0


def lay_out(source: Path, out: Path, splits=("val", "test")) -> None:
    for split in splits:
        for kind, folder in (("database", "ref"), ("queries", "query")):
            target = out / "images" / split / kind
            target.mkdir(parents=True, exist_ok=True)
            for frame in sorted((source / folder).glob("*.jpg")):
                east = int(frame.stem) * SPACING_M
                name = f"@{east:010.2f}@{0:010.2f}@17@T@@@{folder}{frame.stem}@@@@@@@@.jpg"
                shutil.copy(frame, target / name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args()
    lay_out(args.source, args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
