"""Descriptor extraction throughput: the eval path against a bare forward pass.

The eval path reads JPEGs from disk, decodes and normalises them in DataLoader workers and runs
encoder + NetVLAD; the bare pass runs the same model on random tensors of the same size and
batch already in memory. The ratio says how much of the machine's compute the eval path uses.
Prints one JSON line. Not a test: numbers depend on the machine.

    python benchmarks/extraction_throughput.py --arch vgg16 --images 240
"""
from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch

from vpr_core.config import parse_image_size
from vpr_core.datasets import open_split, resolve_image_size
from vpr_core.extraction import extract_descriptors
from vpr_core.models import build_model
from vpr_core.runtime import default_workers, resolve_device
from vpr_core.synthetic import SynthConfig, write_synthetic


def bare_forward(model, count: int, batch: int, size, device) -> float:
    """Images per second of model(random batch) with no data loading at all."""
    images = torch.randn(batch, 3, *size, device=device)
    with torch.no_grad():
        model(images)  # warm-up
        started = time.perf_counter()
        done = 0
        while done < count:
            model(images[: min(batch, count - done)])
            done += min(batch, count - done)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return count / (time.perf_counter() - started)


def eval_path(model, split, size, batch: int, workers: int, device) -> float:
    paths = split.all_paths
    extract_descriptors(model, paths[:batch], size, batch_size=batch, workers=0, device=device)
    started = time.perf_counter()
    extract_descriptors(model, paths, size, batch_size=batch, workers=workers, device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return len(paths) / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", help="dataset to read (default: a synthetic one)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--arch", default="vgg16")
    parser.add_argument("--num-clusters", type=int, default=64)
    parser.add_argument("--image-size", default="120x160", help="HxW (synthetic data)")
    parser.add_argument("--images", type=int, default=240, help="synthetic: places per split")
    parser.add_argument("--batch-size", type=int, default=24)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=3,
                        help="alternating runs of each; the medians are compared")
    args = parser.parse_args()
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.data_root) if args.data_root else Path(scratch) / "synth"
        if not args.data_root:
            write_synthetic(SynthConfig(out=root, places=args.images // 2,
                                        queries=args.images // 2,
                                        image_size=parse_image_size(args.image_size)))
        split = open_split(root, args.split)
        size = resolve_image_size(split, None)
        model = build_model(args.arch, "netvlad", args.num_clusters, weights="none").to(device)
        model.eval()
        eval_rates, bare_rates = [], []
        for _ in range(args.repeats):  # alternate, so that machine noise hits both alike
            eval_rates.append(eval_path(model, split, size, args.batch_size, args.workers,
                                        device))
            bare_rates.append(bare_forward(model, len(split.all_paths), args.batch_size, size,
                                           device))
        eval_rate, bare_rate = statistics.median(eval_rates), statistics.median(bare_rates)
    print(json.dumps({
        "benchmark": "extraction_throughput", "arch": args.arch, "device": str(device),
        "image_size": f"{size[0]}x{size[1]}", "images": len(split.all_paths),
        "batch_size": args.batch_size, "workers": args.workers,
        "torch_threads": torch.get_num_threads(), "repeats": args.repeats,
        "eval_path_images_per_s": round(eval_rate, 2),
        "bare_forward_images_per_s": round(bare_rate, 2),
        "ratio": round(eval_rate / bare_rate, 3)}))


if __name__ == "__main__":
    main()
