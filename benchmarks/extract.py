"""`python -m benchmarks extract`: the eval path against a bare forward pass of the same model.

The model is `--arch` + `--aggregator` (default VGG16 + NetVLAD) with the aggregator's default
settings and random weights (`python -m benchmarks models` measures every backbone and
aggregator pair this way).

The eval path is `extract_descriptors` over an `ImageFeed`: JPEG files (or the decoded store)
in, descriptors on the host out. The bare forward runs the same model on a random batch already
on the device, in the same precision and memory format. Their ratio says how much of the
machine's compute the eval path keeps busy. Also measured: the image path alone (loading,
decoding and normalising, no model), the eval path without the decoded store when the store is
on, and with `--variants` the bare forward in other precisions, layouts and batch sizes
(`--compile` adds torch.compile). Without `--data-root` a dataset is generated.

    python -m benchmarks extract --arch vgg16 --images 2148 --size 480x640 --device cuda
    python -m benchmarks extract --arch resnet50 --aggregator mixvpr --size 320x320
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vpr_core.config import parse_image_size
from vpr_core.data import open_split, resolve_image_size
from vpr_core.data.image_feed import ImageFeed, chunks, decodes_on_gpu, store_budget_bytes
from vpr_core.evaluation.extraction import extract_descriptors
from vpr_core.models.catalog import AGGREGATORS, ARCHES
from vpr_core.models.encoders import fitting_size
from vpr_core.models.place_model import build_model
from vpr_core.runtime import autocast, default_workers, memory_format, prepare_model

from .common import alternate_runs, device_and_precision, emit, machine, ratio, timed
from .datagen import write_dataset


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks extract",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", help="dataset to read (default: a generated one)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--images", type=int, default=480,
                        help="generated dataset: images in all (half database, half queries)")
    parser.add_argument("--size", default="240x320", help="generated dataset: HxW")
    parser.add_argument("--arch", default="vgg16", choices=ARCHES)
    parser.add_argument("--aggregator", default="netvlad", choices=AGGREGATORS,
                        help="with its default settings (a ViT's images: whole 14-pixel "
                             "patches, the images' size rounded)")
    parser.add_argument("--num-clusters", type=int,
                        help="NetVLAD's or SALAD's clusters (default: the aggregator's)")
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=("fp32", "bf16"))
    parser.add_argument("--decode", default="auto", choices=("auto", "cpu", "gpu"))
    parser.add_argument("--image-store-gb", type=float)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--variants", action="store_true",
                        help="also the bare forward in fp32/bf16 x NCHW/channels-last x batch")
    parser.add_argument("--compile", action="store_true", help="with --variants: torch.compile")
    parser.add_argument("--other-paths", action="store_true",
                        help="on CUDA, also the eval path with the other image paths: JPEGs "
                             "decoded by CPU threads, and the decoded store")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse(argv)
    device, precision = device_and_precision(args)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.data_root) if args.data_root else Path(scratch) / "data"
        if not args.data_root:
            size = parse_image_size(args.size)
            write_dataset(root, args.images // 2, args.images - args.images // 2, size,
                          splits=(args.split,))
        split = open_split(root, args.split)
        size = fitting_size(args.arch, resolve_image_size(split, None))
        model = model_for(args.arch, args.aggregator, args.num_clusters, size, device,
                          precision)
        emit(eval_against_bare(model, split, size, device, precision, args,
                               Path(scratch) / "cache"))
        if args.variants:
            forward_variants(model, args, size, device)


def model_for(arch: str, aggregator: str, num_clusters: int | None, size: tuple[int, int],
              device: torch.device, precision: str) -> torch.nn.Module:
    """`arch` + `aggregator` with the aggregator's default settings, random weights, for
    images of `size`, on `device` in `precision`'s layout, in eval mode."""
    model = build_model(arch, aggregator, num_clusters, "none", image_size=size)
    return prepare_model(model, device, precision).eval()


def eval_against_bare(model, split, size: tuple[int, int], device: torch.device,
                      precision: str, args, cache: Path, without_store: bool = True) -> dict:
    """The extract record of `model` on `split` at `size`: the eval path, the bare forward and
    the image path alone (and the eval path without the decoded store, when it is on and
    `without_store`), each the median and the best of `args.repeats` alternating runs
    (`args`: the flags batch_size, workers, decode, image_store_gb, repeats, other_paths)."""
    gpu = decodes_on_gpu(args.decode, device)
    layout = memory_format(device, precision)
    feed = ImageFeed(split, size, device, workers=args.workers, gpu_decode=gpu,
                     store_budget=store_budget_bytes(args.image_store_gb, gpu),
                     cache_dir=cache, memory_format=layout)
    started = time.perf_counter()
    uses_store = feed.store() is not None  # built here, outside the timed runs
    store_seconds = time.perf_counter() - started
    sides = {"eval_path": lambda: _eval_rate(model, feed, args.batch_size, precision),
             "bare_forward": lambda: _bare_rate(model, len(split.all_paths), args.batch_size,
                                                size, device, precision),
             "image_path": lambda: _image_rate(feed, args.batch_size)}
    if uses_store and without_store:
        no_store = ImageFeed(split, size, device, workers=args.workers, gpu_decode=gpu,
                             memory_format=layout)
        sides["eval_path_without_store"] = lambda: _eval_rate(model, no_store,
                                                              args.batch_size, precision)
    if args.other_paths and device.type == "cuda":
        sides.update(other_paths(model, split, size, device, args, precision, cache))
    for side in sides.values():
        side()  # warm-up: cuDNN's autotuner, the page cache, lazy initialisation
    runs = alternate_runs(sides, args.repeats)
    rates = {name: statistics.median(values) for name, values in runs.items()}
    best = {name: max(values) for name, values in runs.items()}
    return {"benchmark": "extract", **machine(device), "arch": model.arch,
            "aggregator": model.aggregator, "settings": model.shape.kwargs,
            "descriptor_dim": model.output_dim, "image_size": f"{size[0]}x{size[1]}",
            "images": len(split.all_paths), "batch_size": args.batch_size,
            "workers": args.workers, "precision": precision,
            "memory_format": "channels_last" if layout == torch.channels_last else "nchw",
            "decode": "gpu" if gpu else "cpu", "image_store": uses_store,
            "image_store_build_seconds": round(store_seconds, 2) if uses_store else None,
            "repeats": args.repeats,
            **{f"{name}_images_per_s": round(rate, 1) for name, rate in rates.items()},
            "ratio_eval_to_bare": ratio(rates["eval_path"], rates["bare_forward"]),
            # on a shared machine the best runs are the least disturbed ones
            "best_eval_path_images_per_s": round(best["eval_path"], 1),
            "best_bare_forward_images_per_s": round(best["bare_forward"], 1),
            "ratio_best_eval_to_best_bare": ratio(best["eval_path"], best["bare_forward"]),
            "ratio_store_to_decode": ratio(rates["eval_path"],
                                           rates.get("eval_path_without_store", 0))}


def other_paths(model, split, size, device, args, precision: str, cache: Path) -> dict:
    """Eval-path sides for the image paths the product does not take by default on CUDA."""
    by_cpu = ImageFeed(split, size, device, workers=args.workers)
    stored = ImageFeed(split, size, device, workers=args.workers, store_budget=10**12,
                       cache_dir=cache)
    stored.store()  # built before timing
    return {"eval_path_cpu_decode": lambda: _eval_rate(model, by_cpu, args.batch_size, precision),
            "eval_path_store": lambda: _eval_rate(model, stored, args.batch_size, precision)}


def _eval_rate(model, feed: ImageFeed, batch_size: int, precision: str) -> float:
    count = len(feed.paths)
    seconds = timed(lambda: extract_descriptors(model, feed, range(count),
                                                batch_size=batch_size, precision=precision),
                    feed.device)
    return count / seconds


def _image_rate(feed: ImageFeed, batch_size: int) -> float:
    """Images per second of the image path alone: files to normalised device batches."""
    groups = chunks(range(len(feed.paths)), batch_size)
    seconds = timed(lambda: [None for _ in feed.batches(groups)], feed.device)
    return len(feed.paths) / seconds


@torch.no_grad()
def _bare_rate(forward, count: int, batch: int, size, device, precision: str,
               channels_last: bool | None = None) -> float:
    """Images per second of `forward` on one random batch already on the device."""
    if channels_last is None:
        channels_last = memory_format(device, precision) == torch.channels_last
    images = torch.randn(batch, 3, *size, device=device)
    if channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    steps = -(-count // batch)

    def run(repeat: int) -> None:
        with autocast(device, precision):
            for _ in range(repeat):
                forward(images)

    run(1)  # warm-up: cuDNN's autotuner meets this shape here
    return steps * batch / timed(lambda: run(steps), device)


def forward_variants(model, args, size, device) -> None:
    """The bare forward in each precision, memory layout and batch size (and compiled)."""
    count = 512
    for precision in ("fp32", "bf16"):
        for channels_last in (False, True):
            model.to(memory_format=torch.channels_last if channels_last
                     else torch.contiguous_format)
            for batch in sorted({args.batch_size, 32, 64, 128}):
                rate = _bare_rate(model, count, batch, size, device, precision, channels_last)
                emit({"benchmark": "extract_variant", "arch": args.arch, "precision": precision,
                      "memory_format": "channels_last" if channels_last else "nchw",
                      "batch_size": batch, "compiled": False,
                      "bare_forward_images_per_s": round(rate, 1)})
    model.to(memory_format=memory_format(device, "bf16"))
    if args.compile:
        compiled = torch.compile(model)
        started = time.perf_counter()
        with contextlib.suppress(Exception), torch.no_grad(), autocast(device, "bf16"):
            compiled(torch.randn(args.batch_size, 3, *size, device=device))
        warm = time.perf_counter() - started
        rate = _bare_rate(compiled, count, args.batch_size, size, device, "bf16")
        emit({"benchmark": "extract_variant", "arch": args.arch, "precision": "bf16",
              "memory_format": "channels_last",
              "batch_size": args.batch_size, "compiled": True,
              "compile_seconds": round(warm, 1), "bare_forward_images_per_s": round(rate, 1)})
