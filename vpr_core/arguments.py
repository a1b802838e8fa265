"""Command-line flags: kebab-case names plus the reference's spellings as aliases.

Every value flag defaults to None, so that what the user typed can be told from defaults:
explicit flags win over a resumed run's flags.json, which wins over the config defaults.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .config import COMPRESS_METHODS
from .fileio import write_json_atomic
from .image_feed import DECODE_CHOICES
from .models import ARCHES, POOLINGS
from .runtime import PRECISIONS


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line on stderr and exit status 2."""

    def error(self, message: str):
        sys.stderr.write(f"error: {message}; see `{self.prog} --help`\n")
        raise SystemExit(2)


def emit(args, result: dict, lines: list[str]) -> None:
    """Print `lines`; with `--json FILE`, also write `result` to FILE (atomically)."""
    for line in lines:
        print(line, flush=True)
    if getattr(args, "json", None):
        write_json_atomic(Path(args.json).absolute(), result)


def add_json(parser) -> None:
    parser.add_argument("--json", metavar="FILE", help="also write the result as JSON to FILE")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_data(parser, split_default: str | None = None) -> None:
    group = parser.add_argument_group("data")
    group.add_argument("--data-root", metavar="DIR",
                       help="dataset root: Pittsburgh layout (ROOT/datasets/*.mat) or @UTM@ "
                            "folders (ROOT/images/<split>/{database,queries})")
    group.add_argument("--dataset", help="Pittsburgh layout: which <name>_<split>.mat when "
                                         "several are present (e.g. pitts30k)")
    if split_default is not None:
        group.add_argument("--split", help=f"split to use (default {split_default}); "
                                           f"test250k reads pitts250k_test.mat")
    group.add_argument("--image-size", metavar="HxW",
                       help="resize every image to HxW (default: native size, as the reference)")


def add_model(parser) -> None:
    group = parser.add_argument_group("model")
    group.add_argument("--arch", choices=ARCHES, help="encoder (default vgg16)")
    group.add_argument("--pooling", choices=POOLINGS, help="pooling (default netvlad)")
    group.add_argument("--num-clusters", "--num_clusters", dest="num_clusters", type=int,
                       metavar="K", help="NetVLAD clusters (default 64)")
    group.add_argument("--weights", metavar="imagenet|none|PATH",
                       help="encoder initialisation (default imagenet)")
    group.add_argument("--fromscratch", dest="weights", action="store_const", const="none",
                       help="same as --weights none")


def add_runtime(parser) -> None:
    group = parser.add_argument_group("runtime")
    group.add_argument("--cache-dir", "--cachePath", "--dataPath", dest="cache_dir",
                       metavar="DIR", help="centroid files and caches (default ./cache)")
    group.add_argument("--cache-batch-size", "--cacheBatchSize", dest="cache_batch_size",
                       type=int, help="batch size for caching, evaluation and clustering "
                                      "(default 24)")
    group.add_argument("--workers", "--threads", dest="workers", type=int,
                       help="image-loading worker processes")
    group.add_argument("--device", help="auto (default), cpu or cuda")
    group.add_argument("--nocuda", dest="device", action="store_const", const="cpu",
                       help="same as --device cpu")
    group.add_argument("--seed", type=int, help="random seed (default 123)")
    group.add_argument("--precision", choices=PRECISIONS,
                       help="forward passes in float32 or bfloat16 autocast (default: bf16 on "
                            "CUDA, fp32 on the CPU)")
    group.add_argument("--amp", dest="precision", action="store_const", const="bf16",
                       help="same as --precision bf16")
    group.add_argument("--decode", choices=DECODE_CHOICES,
                       help="where JPEGs are decoded (default auto: on the GPU with CUDA)")
    group.add_argument("--image-store-gb", dest="image_store_gb", type=float, metavar="GB",
                       help="budget of the decoded-image store under --cache-dir, 0: off "
                            "(default: 8 when images are decoded on the CPU, else off)")


def add_tracking(parser) -> None:
    group = parser.add_argument_group("tracking")
    group.add_argument("--tracking-uri", metavar="URI",
                       help="log to MLflow at URI (e.g. sqlite:////abs/mlflow.db or http://host:5000)")
    group.add_argument("--experiment", metavar="NAME", help="MLflow experiment name")


def add_training(parser) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--run-dir", metavar="DIR",
                       help="the run's folder (default ./runs/<timestamp>_<arch>_<pooling>)")
    group.add_argument("--runsPath", dest="runs_path", metavar="DIR",
                       help="parent folder of timestamped run folders (default ./runs)")
    group.add_argument("--resume", metavar="RUN_DIR|FILE", help="continue this run")
    group.add_argument("--ckpt", choices=("latest", "best"), help="with --resume (default latest)")
    group.add_argument("--centroids", metavar="FILE", help="an existing centroid .hdf5 file")
    group.add_argument("--epochs", "--nEpochs", dest="epochs", type=int, help="default 30")
    group.add_argument("--batch-size", "--batchSize", dest="batch_size", type=int,
                       help="queries per batch (default 4)")
    group.add_argument("--optim", type=str.upper, choices=("SGD", "ADAM"), help="default SGD")
    group.add_argument("--lr", type=float, help="learning rate (default 1e-4)")
    group.add_argument("--momentum", type=float, help="SGD momentum (default 0.9)")
    group.add_argument("--weight-decay", "--weightDecay", dest="weight_decay", type=float,
                       help="SGD weight decay (default 1e-3)")
    group.add_argument("--lr-step", "--lrStep", dest="lr_step", type=float,
                       help="epochs per learning-rate step (default 5)")
    group.add_argument("--lr-gamma", "--lrGamma", dest="lr_gamma", type=float,
                       help="learning-rate factor per step (default 0.5)")
    group.add_argument("--margin", type=float, help="triplet margin, used as sqrt(margin) on "
                                                    "L2 distances (default 0.1)")
    group.add_argument("--num-negatives", dest="num_negatives", type=int,
                       help="hard negatives per query (default 10)")
    group.add_argument("--num-negative-samples", dest="num_negative_samples", type=int,
                       help="negatives sampled per query before mining (default 1000)")
    group.add_argument("--cache-refresh-rate", "--cacheRefreshRate", dest="cache_refresh_rate",
                       type=int, help="queries between cache rebuilds, 0: once per epoch "
                                      "(default 1000)")
    group.add_argument("--eval-every", "--evalEvery", dest="eval_every", type=int,
                       help="validate every N epochs (default 1)")
    group.add_argument("--patience", type=int,
                       help="stop after N evaluations without a better Recall@5, 0: never "
                            "(default 10)")
    group.add_argument("--val-split", dest="val_split", help="validation split (default val)")
    group.add_argument("--start-epoch", dest="start_epoch", type=int,
                       help="epochs counted as done before training starts (the reference's "
                            "flag; not with --resume)")
    group.add_argument("--fresh-optimizer", dest="fresh_optimizer", action="store_const",
                       const=True, help="with --resume: start the optimiser afresh instead of "
                                        "refusing a checkpoint whose optimiser state does not "
                                        "fit")


def add_compression(parser) -> None:
    group = parser.add_argument_group("compression")
    group.add_argument("--resume", required=True, metavar="RUN_DIR|FILE",
                       help="the checkpoint to compress")
    group.add_argument("--ckpt", choices=("latest", "best"), help="with --resume (default latest)")
    group.add_argument("--method", required=True, choices=COMPRESS_METHODS)
    group.add_argument("--dim", type=int, help="pca-whiten: output dimensions (e.g. 4096)")
    group.add_argument("--no-whiten", dest="whiten", action="store_const", const=False,
                       help="pca-whiten: project only, no whitening")
    group.add_argument("--amount", type=float,
                       help="prune: share of weights (or of each layer's channels) to remove")
    group.add_argument("--structure", choices=("unstructured", "channels"),
                       help="prune: zero single weights (default) or remove whole channels")
    group.add_argument("--mode", choices=("ptq-int8", "qat-int8"),
                       help="quantize: post-training (default) or quantization-aware training")
    group.add_argument("--dtype", choices=("bf16", "fp16"), help="half: weight type (default bf16)")
    group.add_argument("--pq-bytes", dest="pq_bytes", type=int,
                       help="pq: bytes per database descriptor (a divisor of its dimensions)")
    group.add_argument("--finetune-epochs", dest="finetune_epochs", type=int,
                       help="prune, qat-int8: epochs of triplet training afterwards (default 0)")
    group.add_argument("--finetune-lr", dest="finetune_lr", type=float,
                       help="learning rate of the fine-tuning (default 1e-4)")
    group.add_argument("--run-dir", metavar="DIR",
                       help="the variant's run folder (default runs/<run>_<method>_<time>)")
    group.add_argument("--latency-batches", dest="latency_batches", type=int, nargs="+",
                       metavar="B", help="batch sizes of the CPU latency (default 1 32)")
    group.add_argument("--study", metavar="NAME",
                       help="MLflow: the study (parent run) the variant joins (default "
                            "compress-<source run>)")
