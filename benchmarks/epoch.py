"""`python -m benchmarks epoch`: one training epoch end to end, timed per stage.

`--pitts30k-size` is the scale test: a generated set the size of Pitts30k's training split
(10,000 database images and 7,416 queries, 480x640 JPEGs; validation on the same images) and
one VGG16 epoch with the reference's settings: K=64, batch 4, cache batch 24, a cache refresh
every 1,000 queries, 10 hard negatives from 1,000 sampled, SGD lr 1e-4. ImageNet weights
cannot be downloaded on a machine without network, so the encoder starts from a random
weight file, which freezes the same layers as pretrained weights do (up to conv4_3). Reported:
clustering, start-up, each stage of the epoch (cache refreshes, mining, training steps,
validation), peak host and GPU memory, and the bytes one trial holds in the mining service.

    python -m benchmarks epoch --pitts30k-size --device cuda
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from vpr_core.config import ClusterConfig, TrainConfig, parse_image_size
from vpr_core.runtime import default_workers, resolve_device
from vpr_core.stages import cluster
from vpr_core.stages.train import training_run

from .common import (
    emit,
    frozen_weights_file,
    machine,
    peak_gpu_memory_gb,
    peak_host_memory_gb,
    rounded,
    timed,
)
from .datagen import write_dataset

PITTS30K_TRAIN = {"database": 10000, "queries": 7416, "size": "480x640"}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks epoch",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--pitts30k-size", action="store_true",
                        help="10,000 + 7,416 images of 480x640 (else the sizes below)")
    parser.add_argument("--database", type=int, default=600)
    parser.add_argument("--queries", type=int, default=450)
    parser.add_argument("--size", default="120x160", help="HxW")
    parser.add_argument("--data-root", help="an existing dataset instead of a generated one")
    parser.add_argument("--arch", default="vgg16")
    parser.add_argument("--num-clusters", type=int, default=64)
    parser.add_argument("--workers", type=int, default=default_workers())
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", choices=("fp32", "bf16"))
    parser.add_argument("--cache-refresh-rate", type=int, default=1000)
    parser.add_argument("--frozen-cache-gb", type=float,
                        help="memory for the frozen layers' output (default: the product's; "
                             "0: off, every step runs the whole encoder)")
    parser.add_argument("--progress", action="store_true", help="progress bars on stderr")
    return parser.parse_args(argv)


def main(argv: list[str]) -> None:
    args = parse(argv)
    if args.pitts30k_size:
        args.database, args.queries = PITTS30K_TRAIN["database"], PITTS30K_TRAIN["queries"]
        args.size = PITTS30K_TRAIN["size"]
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        root = Path(args.data_root) if args.data_root else scratch / "data"
        started = time.perf_counter()
        if not args.data_root:
            write_dataset(root, args.database, args.queries, parse_image_size(args.size),
                          splits=("train", "val"))
        generated = time.perf_counter() - started
        weights = frozen_weights_file(args.arch, scratch)
        settings = dict(data_root=root, arch=args.arch, num_clusters=args.num_clusters,
                        weights=str(weights), workers=args.workers, device=args.device,
                        precision=args.precision, cache_dir=scratch / "cache",
                        show_progress=args.progress)
        cluster_seconds = timed(lambda: cluster.run(ClusterConfig(**settings)), device)
        started = time.perf_counter()
        run = training_run(TrainConfig(**settings, run_dir=scratch / "run", epochs=1,
                                       cache_refresh_rate=args.cache_refresh_rate,
                                       frozen_cache_gb=args.frozen_cache_gb))
        startup = time.perf_counter() - started
        result = next(run.epochs())
        end_to_end = cluster_seconds + startup + result.seconds
        emit({"benchmark": "epoch", **machine(device), "arch": args.arch,
              "num_clusters": args.num_clusters, "precision": run.config.precision,
              "database": run.train_split.num_database, "queries": run.train_split.num_queries,
              "image_size": f"{run.image_size[0]}x{run.image_size[1]}",
              "cache_refresh_rate": args.cache_refresh_rate, "workers": args.workers,
              "frozen_features": list(run.frozen_splits),
              "dataset_generation_seconds": round(generated, 1),
              "cluster_seconds": round(cluster_seconds, 1), "startup_seconds": round(startup, 1),
              "epoch_seconds": round(result.seconds, 1),
              **{f"{k}_seconds": round(v, 1) for k, v in result.stage_seconds.items()},
              "end_to_end_seconds": round(end_to_end, 1),
              "cache_refreshes": run.triplets.refreshes, "triplets": result.triplets,
              "batches": result.batches, "loss": round(result.loss, 4),
              "mining_service_bytes_per_trial": run.cache.nbytes,
              "mining_service_gb_per_trial": round(run.cache.nbytes / 1e9, 2),
              "peak_host_memory_gb": round(peak_host_memory_gb(), 2),
              "peak_gpu_memory_gb": rounded(peak_gpu_memory_gb(device))})
