"""`python -m benchmarks train`: training speed, against the reference and against the machine.

On one dataset and one set of settings (by default the reference's, on 2 x 1,072 training
images of 128x256 with 358 + 358 for validation, AlexNet, K=16):

- this project: clustering, the start-up of a `TrainingRun`, each epoch timed per stage;
- the reference-style loop (`benchmarks/reference_loop.py`: float32, one image read per item,
  an HDF5 cache of the whole training set per refresh, per-query kNN fits): clustering and
  the same epochs;
- train-step throughput: triplet batches per second inside the epoch (images loaded, forward,
  loss, backward, step) against the same steps on random images already on the device, of
  the mean batch size the epoch had.

    python -m benchmarks train --device cuda
    python -m benchmarks train --arch resnet50 --aggregator mixvpr --size 320x320 --device cuda
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from vpr_core.config import ClusterConfig, TrainConfig, parse_image_size
from vpr_core.evaluation import named_recalls
from vpr_core.models.catalog import AGGREGATORS, ARCHES
from vpr_core.runtime import default_workers
from vpr_core.stages import cluster
from vpr_core.stages.train import training_run
from vpr_core.training.inputs import SplitInput
from vpr_core.training.run import TrainingRun

from . import common
from .datagen import write_dataset


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks train",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", help="dataset (default: generated, 2 x 1,072 + val)")
    parser.add_argument("--database", type=int, default=1072)
    parser.add_argument("--queries", type=int, default=1072)
    parser.add_argument("--val", type=int, default=358, help="generated: val images of each kind")
    parser.add_argument("--size", default="128x256", help="generated dataset: HxW")
    parser.add_argument("--arch", default="alexnet", choices=ARCHES)
    parser.add_argument("--aggregator", default="netvlad", choices=AGGREGATORS,
                        help="with its default settings; the reference-style loop is "
                             "NetVLAD's alone (other aggregators: --skip-reference implied)")
    parser.add_argument("--num-clusters", type=int,
                        help="NetVLAD's and SALAD's clusters (default: NetVLAD 16, SALAD its "
                             "authors' 64)")
    parser.add_argument("--epochs", type=int, default=2,
                        help="epochs of each side (the cluster + 2 epochs comparison: 2)")
    parser.add_argument("--weights", default="frozen",
                        help="frozen (default: random weights from a file, which freezes the "
                             "layers ImageNet weights freeze, as the reference's default "
                             "does), none (every layer trains) or a weight file")
    parser.add_argument("--frozen-cache-gb", type=float,
                        help="memory for the frozen layers' output (default: the product's; "
                             "0: off)")
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=("fp32", "bf16"))
    parser.add_argument("--decode", default="auto", choices=("auto", "cpu", "gpu"))
    parser.add_argument("--image-store-gb", type=float,
                        help="decoded-image store budget (default: the product's; 0: off)")
    parser.add_argument("--skip-reference", action="store_true")
    parser.add_argument("--skip-cli", action="store_true",
                        help="leave out the time `orchestrator train` spends outside its epoch "
                             "(it trains one more epoch to measure it)")
    parser.add_argument("--loss", default="triplet",
                        choices=("triplet", "multi-similarity", "triplet-margin", "contrastive"),
                        help="a place-batched loss measures place batches (place_train.py)")
    parser.add_argument("--places", type=int, default=256, help="place batches: places")
    parser.add_argument("--places-per-batch", type=int, default=32)
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse(argv)
    device, precision = common.device_and_precision(args)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        root = Path(args.data_root) if args.data_root else scratch / "data"
        if not args.data_root and args.loss == "triplet":
            write_dataset(root, args.database, args.queries, parse_image_size(args.size),
                          splits=("train", "val"),
                          split_sizes={"val": (args.val, args.val)})
        if args.weights == "frozen":
            args.weights = str(common.frozen_weights_file(args.arch, scratch, args.aggregator))
        clusters = args.num_clusters or (16 if args.aggregator == "netvlad" else None)
        settings = dict(data_root=root, arch=args.arch, aggregator=args.aggregator,
                        num_clusters=clusters,
                        weights=args.weights, workers=args.workers, device=args.device,
                        precision=precision, decode=args.decode,
                        image_store_gb=args.image_store_gb, show_progress=False)
        if args.loss != "triplet":
            from .place_train import run as place_run

            common.emit({"benchmark": "train", "side": "place_batches",
                         **common.machine(device), **place_run(args, settings, scratch)})
            return
        ours = ours_run(settings, args.epochs, scratch, args.frozen_cache_gb)
        if not args.skip_cli:
            ours["cli_seconds_outside_epochs"] = cli_overhead(settings, scratch)
        common.emit({"benchmark": "train", "side": "this_project", **common.machine(device),
                     **ours})
        if args.skip_reference or args.aggregator != "netvlad":
            return
        from .reference_loop import reference_run

        reference = reference_run(root, arch=args.arch, num_clusters=clusters,
                                  epochs=args.epochs, device=device, weights=args.weights,
                                  threads=args.workers, workdir=scratch / "reference")
        common.emit({"benchmark": "train", "side": "reference_loop", **common.machine(device),
                     **reference})
        total_ours = ours["cluster_seconds"] + sum(e["seconds"] for e in ours["epochs"])
        total_reference = reference["cluster_seconds"] + sum(
            e["seconds"] for e in reference["epochs"])
        epoch_ours = min(e["seconds"] for e in ours["epochs"])
        epoch_reference = min(e["seconds"] for e in reference["epochs"])
        common.emit({"benchmark": "train", "side": "summary", "arch": args.arch,
              "device": str(device), "precision": precision, "epochs": args.epochs,
              "cluster_plus_epochs_seconds": round(total_ours, 2),
              "reference_cluster_plus_epochs_seconds": round(total_reference, 2),
              "speedup_cluster_plus_epochs": common.ratio(total_reference, total_ours),
              "best_epoch_seconds": round(epoch_ours, 2),
              "reference_best_epoch_seconds": round(epoch_reference, 2),
              "speedup_epoch": common.ratio(epoch_reference, epoch_ours),
              "train_step_ratio_to_bare": ours["train_step_ratio_to_bare"],
              # with frozen layers kept, the like-for-like figure: the same steps' layers
              "train_step_ratio_to_bare_after_frozen":
                  ours["train_step_ratio_to_bare_after_frozen"],
              "startup_seconds": ours["startup_seconds"],
              "cli_seconds_outside_epochs": ours.get("cli_seconds_outside_epochs")})


def cli_overhead(settings: dict, scratch: Path) -> float:
    """Seconds `python -m orchestrator train --epochs 1` spends outside its epoch (imports,
    device start, dataset checks, model building; the centroids are already clustered)."""
    flags = ["train", "--data-root", settings["data_root"], "--arch", settings["arch"],
             "--aggregator", settings["aggregator"], "--weights", settings["weights"],
             "--workers", settings["workers"], "--device", settings["device"],
             "--precision", settings["precision"], "--decode", settings["decode"],
             "--cache-dir", scratch / "cache",
             "--epochs", 1, "--run-dir", scratch / "cli_run", "--json", scratch / "cli.json",
             "--quiet"]
    if settings["image_store_gb"] is not None:
        flags += ["--image-store-gb", settings["image_store_gb"]]
    if settings["num_clusters"] is not None:
        flags += ["--num-clusters", settings["num_clusters"]]
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "orchestrator", *map(str, flags)], check=True,
                   stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    epoch = json.loads((scratch / "cli.json").read_text())["epochs"][0]["epoch_seconds"]
    return round(wall - epoch, 2)


def ours_run(settings: dict, epochs: int, scratch: Path, frozen_cache_gb: float | None) -> dict:
    """Clustering, start-up and epochs of a `TrainingRun`; then bare steps on its model."""
    cache = scratch / "cache"
    cluster_seconds = 0.0  # only NetVLAD starts from clustered centroids
    if settings["aggregator"] == "netvlad":
        cluster_seconds = common.timed(
            lambda: cluster.run(ClusterConfig(**settings, cache_dir=cache)), torch.device("cpu"))
    started = time.perf_counter()
    run = training_run(TrainConfig(**settings, cache_dir=cache, run_dir=scratch / "run",
                                   epochs=epochs, frozen_cache_gb=frozen_cache_gb))
    startup = time.perf_counter() - started
    results = list(run.epochs())
    last = results[-1]
    steps_per_s = last.batches / last.stage_seconds["training_steps"]
    images_per_batch = (2 * last.triplets + last.negatives) / max(1, last.batches)
    bare_per_s, bare_rest_per_s = bare_steps_per_s(
        run, last.triplets / max(1, last.batches), images_per_batch, last.batches)
    return {"arch": run.config.arch, "aggregator": run.config.aggregator,
            "descriptor_dim": run.model.output_dim, "precision": run.config.precision,
            "decode": "gpu" if run.data.train_feed.gpu_decode else "cpu",
            "image_store": run.data.train_feed.store() is not None,
            "frozen_features": list(run.frozen_splits),
            "image_size": f"{run.image_size[0]}x{run.image_size[1]}",
            "workers": run.config.workers, "cluster_seconds": round(cluster_seconds, 2),
            "startup_seconds": round(startup, 2),
            "epochs": [{"epoch": r.epoch, "seconds": round(r.seconds, 2),
                        **{k: round(v, 2) for k, v in r.stage_seconds.items()},
                        "loss": round(r.loss, 4), "batches": r.batches,
                        **named_recalls(r.recalls)} for r in results],
            "train_steps_per_s": round(steps_per_s, 2),
            "bare_steps_per_s": round(bare_per_s, 2),
            "images_per_batch": round(images_per_batch, 1),
            "train_step_ratio_to_bare": common.ratio(steps_per_s, bare_per_s),
            "bare_steps_after_frozen_per_s": common.rounded(bare_rest_per_s),
            "train_step_ratio_to_bare_after_frozen": common.ratio(steps_per_s, bare_rest_per_s),
            "peak_host_memory_gb": round(common.peak_host_memory_gb(), 2),
            "peak_gpu_memory_gb": common.peak_gpu_memory_gb(run.device)}


def bare_steps_per_s(run: TrainingRun, queries: float, images: float, steps: int
                     ) -> tuple[float, float | None]:
    """Training steps per second with the inputs already on the device (the same model, loss,
    backward and optimiser step as an epoch's, without loading or mining): of the whole model
    on random images; and, where the run keeps its frozen layers' output, of the layers after
    them on that output (None otherwise)."""
    batch = max(1, round(queries))
    negatives = max(1, round(images) - 2 * batch)
    counts = [negatives // batch + (1 if b < negatives % batch else 0) for b in range(batch)]
    images = torch.randn(2 * batch + negatives, 3, *run.image_size, device=run.device)
    images = images.contiguous(memory_format=run.data.train_feed.memory_format)
    state = {k: v.clone() for k, v in run.model.state_dict().items()}
    run.model.train()
    try:
        whole = _steps_per_s(run, SplitInput(run.data.train_feed, run.model), images, counts,
                             steps)
        after_frozen = None
        if run.frozen_splits:
            rows = next(run.train_input.source.batches([list(range(len(images)))]))
            after_frozen = _steps_per_s(run, run.train_input, rows, counts, steps)
    finally:
        run.model.load_state_dict(state)
    return whole, after_frozen


def _steps_per_s(run: TrainingRun, source: SplitInput, inputs: torch.Tensor, counts: list[int],
                 steps: int) -> float:
    run.triplets._step(inputs, counts, source)  # warm-up
    seconds = common.timed(lambda: [run.triplets._step(inputs, counts, source)
                                    for _ in range(steps)], run.device)
    return steps / seconds
