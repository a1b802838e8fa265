"""`python -m benchmarks models`: the eval path against a bare forward, for every model pair.

For each backbone and aggregator pair that fits (SALAD and MegaLoc take a ViT's class token,
so only the DINOv2 backbones), the `extract` benchmark's measurement: `extract_descriptors`
over an `ImageFeed` (generated JPEGs, decoded into the store on the CPU) against the same
model's forward on a random batch already on the device, with the aggregator's default
settings and random weights (`--weights none`). CNNs and ResNets see images of `--cnn-size`,
the ViTs of `--vit-size` (whole 14-pixel patches). One JSON line per pair, then the table
(`python -m benchmarks table --markdown` prints it again from the JSON lines).

    python -m benchmarks models                         # every pair below, on the CPU
    python -m benchmarks models --arches resnet50 --aggregators mixvpr --device cuda
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from vpr_core.config import parse_image_size
from vpr_core.data import open_split
from vpr_core.models.catalog import AGGREGATORS, ARCHES, fits, is_vit
from vpr_core.runtime import default_workers

from .common import device_and_precision, emit
from .datagen import write_dataset
from .extract import eval_against_bare, model_for
from .table import markdown

BACKBONES = ("resnet18", "resnet50", "vgg16", "alexnet", "dinov2_vits14", "dinov2_vitb14")
POOLINGS = ("netvlad", "gem", "mixvpr", "salad", "boq", "megaloc")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks models",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--arches", nargs="+", default=list(BACKBONES), choices=ARCHES)
    parser.add_argument("--aggregators", nargs="+", default=list(POOLINGS), choices=AGGREGATORS)
    parser.add_argument("--cnn-size", default="160x224", help="HxW of the CNNs' images")
    parser.add_argument("--vit-size", default="154x224",
                        help="HxW of the ViTs' images (multiples of 14)")
    parser.add_argument("--images", type=int, default=48,
                        help="images in all (half database, half queries)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", choices=("fp32", "bf16"))
    parser.add_argument("--decode", default="auto", choices=("auto", "cpu", "gpu"))
    parser.add_argument("--image-store-gb", type=float)
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    args.other_paths = False
    return args


def pairs(arches: list[str], aggregators: list[str]) -> list[tuple[str, str]]:
    """(backbone, aggregator) in the order given, those that fit."""
    return [(arch, aggregator) for arch in arches for aggregator in aggregators
            if fits(arch, aggregator)]


def main(argv: list[str]) -> None:
    args = parse(argv)
    device, precision = device_and_precision(args)
    found = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        splits = {}
        for arch, aggregator in pairs(args.arches, args.aggregators):
            size = parse_image_size(args.vit_size if is_vit(arch) else args.cnn_size)
            if size not in splits:  # one generated dataset (and decoded store) per size
                root = scratch / f"data_{size[0]}x{size[1]}"
                write_dataset(root, args.images // 2, args.images - args.images // 2, size,
                              splits=("val",))
                splits[size] = open_split(root, "val")
            model = model_for(arch, aggregator, None, size, device, precision)
            found.append(emit(eval_against_bare(model, splits[size], size, device, precision,
                                                args, scratch / "cache", without_store=False)))
    print()
    print(markdown(found))
