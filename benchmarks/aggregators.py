"""`python -m benchmarks aggregators`: does training teach each aggregator something?

For each backbone + aggregator pair (default: NetVLAD, GeM, MixVPR and BoQ on ResNet18, SALAD
and BoQ on DINOv2-S), every layer from random weights (`--weights none`), on the synthetic
street (`python -m orchestrator synth`: places along a facade, queries seen from other spots
under other light, so that there is place structure to learn): validation Recall@1/5 of the
untrained model (the very model training starts from, NetVLAD initialised from its clustered
centroids; with BatchNorm, also once its statistics are estimated on the training images,
see `recall_with_batch_statistics`), then `--epochs` epochs of the product's training
(`vpr_core.stages.train`: triplets mined from a descriptor cache, the triplet loss), with
each epoch's mean loss and validation recall. One JSON line per pair, then the table.
Nothing is asserted: it is a measurement.

`--recipe places`: the field's recipe instead: the same street written as GSV-Cities
(`synth --layout gsv-cities`, 4 views of each place), batches of `--places-per-batch` places x
4 images, the multi-similarity loss and miner (`--loss`), AdamW with a short warm-up, validated
on the street in the Pittsburgh layout (`--val-root`).

    python -m benchmarks aggregators
    python -m benchmarks aggregators --pairs resnet18:gem --lr 0.01 --epochs 3
    python -m benchmarks aggregators --recipe places --lr 1e-3
"""
from __future__ import annotations

import argparse
import copy
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from vpr_core.config import TrainConfig, parse_image_size
from vpr_core.data.image_feed import chunks
from vpr_core.data.synthetic import SynthConfig, write_synthetic
from vpr_core.evaluation import named_recalls
from vpr_core.evaluation.recall import evaluate
from vpr_core.models.catalog import is_vit
from vpr_core.runtime import default_workers
from vpr_core.stages.train import training_run
from vpr_core.training.run import TrainingRun

from .common import emit, machine
from .table import markdown

PAIRS = ("resnet18:netvlad", "resnet18:gem", "resnet18:mixvpr", "resnet18:boq",
         "dinov2_vits14:salad", "dinov2_vits14:boq")


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks aggregators",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", nargs="+", default=list(PAIRS), metavar="ARCH:AGGREGATOR")
    parser.add_argument("--places", type=int, default=120,
                        help="synthetic places per split (database images; as many queries)")
    parser.add_argument("--cnn-size", default="96x128", help="HxW of the CNNs' images")
    parser.add_argument("--vit-size", default="112x140",
                        help="HxW of the ViTs' images (multiples of 14; SALAD needs more "
                             "patches than its 64 clusters)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--optim", default="ADAM", choices=("SGD", "ADAM"))
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--margin", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0, help="the model's and mining's seed")
    parser.add_argument("--recipe", default="triplet", choices=("triplet", "places"),
                        help="triplets mined from a descriptor cache, or place batches")
    parser.add_argument("--loss", default="multi-similarity",
                        choices=("multi-similarity", "triplet-margin", "contrastive"),
                        help="--recipe places: the loss (and its miner)")
    parser.add_argument("--places-per-batch", type=int, default=16, help="--recipe places: P")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--device", default="auto")
    return parser.parse_args(argv)


def train_and_validate(data_root: Path, arch: str, aggregator: str, size: tuple[int, int],
                       args, scratch: Path) -> dict:
    """Recall of the untrained model, then each epoch's loss and recall."""
    recipe = dict(optim=args.optim, margin=args.margin) if args.recipe == "triplet" else dict(
        data_root=data_root / "gsv", val_root=data_root / "pitts", loss=args.loss,
        places_per_batch=args.places_per_batch, optim="ADAMW", warmup_steps=4)
    config = TrainConfig(**{"data_root": data_root, **recipe}, arch=arch, aggregator=aggregator,
                         weights="none", image_size=size, epochs=args.epochs, lr=args.lr,
                         seed=args.seed, workers=args.workers, device=args.device,
                         show_progress=False, cache_dir=scratch / "cache",
                         run_dir=scratch / f"{arch}_{aggregator}")
    started = time.perf_counter()
    run = training_run(config)
    before = named_recalls(run.validate())
    calibrated = recall_with_batch_statistics(run)
    epochs = [{"epoch": r.epoch, "loss": round(r.loss, 4), "seconds": round(r.seconds, 1),
               **named_recalls(r.recalls)} for r in run.epochs()]
    last = epochs[-1]
    return {"benchmark": "aggregators", **machine(run.device), "arch": arch,
            "aggregator": aggregator, "descriptor_dim": run.model.output_dim,
            "image_size": f"{size[0]}x{size[1]}", "recipe": args.recipe,
            "loss": run.config.loss, "optim": run.config.optim, "lr": args.lr,
            "margin": args.margin, "seed": args.seed, "places": args.places,
            "epochs": epochs, "loss_first_epoch": epochs[0]["loss"],
            "loss_last_epoch": last["loss"],
            "recall@1_untrained": before["recall@1"], "recall@5_untrained": before["recall@5"],
            "recall@1_untrained_bn": calibrated and calibrated["recall@1"],
            "recall@5_untrained_bn": calibrated and calibrated["recall@5"],
            "recall@1_trained": last["recall@1"], "recall@5_trained": last["recall@5"],
            "loss_fell": last["loss"] < epochs[0]["loss"],
            "recall_rose": _rose((before["recall@1"], before["recall@5"]),
                                 (last["recall@1"], last["recall@5"])),
            "seconds": round(time.perf_counter() - started, 1)}


def recall_with_batch_statistics(run: TrainingRun, batch_size: int = 48) -> dict | None:
    """Validation recall of the untrained model once its BatchNorm layers' running statistics
    are estimated on the training images, without a step (None for a model without
    BatchNorm). A fresh BatchNorm holds mean 0 and variance 1, which no training step sees:
    the first epoch's steps move those statistics to the batches' whatever the weights learn,
    and that alone changes the model's recall."""
    norms = (nn.modules.batchnorm._BatchNorm,)
    if not any(isinstance(m, norms) for m in run.model.modules()):
        return None
    model = copy.deepcopy(run.model)
    for module in model.modules():
        if isinstance(module, norms):
            module.reset_running_stats()
            module.momentum = None  # the plain average over every batch
    feed = run.data.train_feed
    model.train()
    with torch.no_grad():
        for images in feed.batches(chunks(range(len(feed.paths)), batch_size)):
            model(images)
    result = evaluate(model, run.data.val_feed, batch_size=run.config.cache_batch_size,
                      precision=run.config.precision)
    return named_recalls(result.recalls)


def write_street(root: Path, size: tuple[int, int], args) -> Path:
    """The synthetic street at `size`: in the Pittsburgh layout (triplets), or as GSV-Cities
    under root/gsv with the Pittsburgh layout under root/pitts for validation (places)."""
    if args.recipe == "triplet":
        write_synthetic(SynthConfig(out=root, places=args.places, image_size=size,
                                    show_progress=False))
        return root
    write_synthetic(SynthConfig(out=root / "gsv", layout="gsv-cities", places=args.places // 2,
                                image_size=size, show_progress=False))
    write_synthetic(SynthConfig(out=root / "pitts", places=args.places, image_size=size,
                                show_progress=False))
    return root


def _rose(before: tuple, after: tuple) -> bool:
    """No recall lower, and one higher."""
    return all(a >= b for a, b in zip(after, before)) and after != before


def main(argv: list[str]) -> None:
    args = parse(argv)
    found = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        roots = {}
        for pair in args.pairs:
            arch, aggregator = pair.split(":")
            size = parse_image_size(args.vit_size if is_vit(arch) else args.cnn_size)
            if size not in roots:  # one synthetic street per image size
                roots[size] = write_street(scratch / f"synth_{size[0]}x{size[1]}", size, args)
            found.append(emit(train_and_validate(roots[size], arch, aggregator, size, args,
                                                 scratch)))
    print()
    print(markdown(found))
