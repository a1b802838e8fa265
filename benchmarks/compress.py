"""`python -m benchmarks compress`: how much faster a compressed variant's forward runs than the
float32 model it was made from, on the CPU, and how much smaller its checkpoint is.

Variants: `prune --structure channels` (narrower convs) and `quantize --mode ptq-int8` (int8
convs, calibrated on generated images). The tests check what makes them faster (fewer
channels and multiply-adds; int8 modules computing on quantized tensors); the speed itself
depends on the machine and its load, so it is measured here: each side's forward of one
random batch is timed in turn, after a warm-up, and the medians are compared.

    python -m benchmarks compress --arch vgg16 --size 128x160 --batch-size 8
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from vpr_core.compression import CompressionContext, compressed_checkpoint, prune, quantize
from vpr_core.config import parse_image_size
from vpr_core.data import open_split
from vpr_core.data.image_feed import ImageFeed
from vpr_core.models.checkpoints import save_checkpoint
from vpr_core.models.place_model import build_model
from vpr_core.models.shape import ModelShape

from .common import alternate, emit, machine, ratio, timed
from .datagen import write_dataset

CPU = torch.device("cpu")
METHODS = ("prune", "int8")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks compress",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vgg16")
    parser.add_argument("--num-clusters", type=int, default=4)
    parser.add_argument("--size", default="128x160", help="HxW of the timed batch")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--amount", type=float, default=0.3, help="prune: share of filters")
    parser.add_argument("--calibration-images", type=int, default=8, help="int8 calibration")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated, of {', '.join(METHODS)}")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse(argv)
    methods = [name for name in args.methods.split(",") if name]
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise SystemExit(f"--methods: unknown {', '.join(unknown)}; use {', '.join(METHODS)}")
    size = parse_image_size(args.size)
    torch.manual_seed(0)
    model = build_model(args.arch, "netvlad", args.num_clusters, weights="none").eval()
    images = torch.randn(args.batch_size, 3, *size, generator=torch.Generator().manual_seed(0))
    shape = ModelShape.of(args.arch, "netvlad", {"num_clusters": args.num_clusters})
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        float_file = save_checkpoint(scratch / "float.pth.tar",
                                     {"state_dict": model.state_dict(), "arch": args.arch})
        for name in methods:
            if name == "prune":
                variant, checkpoint = _pruned(model, args.amount, shape)
            else:
                variant, checkpoint = _int8(model, args.calibration_images, size, shape,
                                            scratch / "data")
            variant_file = save_checkpoint(scratch / f"{name}.pth.tar", checkpoint)
            seconds = _forward_seconds({"float32": model, name: variant}, images, args.repeats)
            emit({"benchmark": "compress", **machine(CPU), "arch": args.arch,
                  "num_clusters": args.num_clusters, "image_size": f"{size[0]}x{size[1]}",
                  "batch_size": args.batch_size, "repeats": args.repeats, "method": name,
                  "settings": checkpoint["compression"]["settings"],
                  "float32_forward_ms": round(1000 * seconds["float32"], 2),
                  "variant_forward_ms": round(1000 * seconds[name], 2),
                  "speedup": ratio(seconds["float32"], seconds[name]),
                  "float32_checkpoint_mb": round(float_file.stat().st_size / 2**20, 2),
                  "variant_checkpoint_mb": round(variant_file.stat().st_size / 2**20, 2),
                  "checkpoint_shrink": ratio(float_file.stat().st_size,
                                             variant_file.stat().st_size)})


def _pruned(model, amount: float, shape) -> tuple[torch.nn.Module, dict]:
    """`amount` of every conv's filters but the last's removed (no refit: it changes values,
    not widths or speed)."""
    settings = prune.validate({"amount": amount, "structure": "channels", "refit": False},
                              model)
    variant, extra = prune.apply(model, settings, None)
    return variant.eval(), compressed_checkpoint(variant, "prune", settings, shape, extra)


def _int8(model, count: int, size, shape, root: Path) -> tuple[torch.nn.Module, dict]:
    """ptq-int8, calibrated on `count` images of the batch's size generated under `root`."""
    write_dataset(root, count, count, size, splits=("train",))
    feed = ImageFeed(open_split(root, "train"), size, CPU)
    context = CompressionContext(train_feed=feed, device=CPU, batch_size=count,
                                 precision="fp32", seed=0, finetune=None)
    settings = quantize.validate({"mode": "ptq-int8", "calibration_images": count}, model)
    variant, extra = quantize.apply(model, settings, context)
    return variant, compressed_checkpoint(variant, "quantize", settings, shape, extra)


def _forward_seconds(models: dict, images: torch.Tensor, repeats: int) -> dict[str, float]:
    """Median seconds of one forward of `images` per model, the models timed in turn."""
    def forward(model):
        with torch.inference_mode():
            model(images)

    for model in models.values():
        forward(model)  # warm-up: kernels chosen, int8 weights packed
    return alternate({name: (lambda m=model: timed(lambda: forward(m), CPU))
                      for name, model in models.items()}, repeats)
