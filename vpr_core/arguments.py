"""Command-line flags of every CLI: kebab-case names plus the reference's spellings as aliases.

Every value flag defaults to None, so that what the user typed can be told from defaults:
explicit flags win over a resumed run's flags.json, which wins over the config defaults. The
help texts read those defaults from the config dataclasses (`default`), never restate them.

Only the standard library is imported up front; the vpr_core modules that bring torch (the
choices of --arch, --precision, ... and the config defaults) are imported by the helpers that
need them, so that a parser without them (the dashboards') stays quick to build.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from .fileio import write_json_atomic

LOG_URI_HELP = "log to MLflow at URI (e.g. sqlite:////abs/mlflow.db or http://host:5000)"


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


def given(args, names) -> dict:
    """The flags among `names` that the user gave (not None)."""
    return {name: getattr(args, name) for name in names
            if getattr(args, name, None) is not None}


# ---- defaults, as help texts show them ------------------------------------------------------
def default(cls, name: str) -> str:
    """The default of dataclass `cls`'s field `name` as a help text writes it."""
    for item in dataclasses.fields(cls):
        if item.name == name:
            if item.default is not dataclasses.MISSING:
                return shown(item.default)
            if item.default_factory is not dataclasses.MISSING:
                return shown(item.default_factory())
            raise ValueError(f"{cls.__name__}.{name} has no default")
    raise ValueError(f"{cls.__name__} has no field {name!r}")


def shown(value) -> str:
    """A value as help texts write it: 1e-4 (not 0.0001), 5 (not 5.0), a tuple as '1 32'."""
    if isinstance(value, (tuple, list)):
        return " ".join(shown(item) for item in value)
    if isinstance(value, float):
        if value and abs(value) < 1e-2:
            mantissa, exponent = f"{value:e}".split("e")
            return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
        return f"{value:g}"
    return str(value)


def _default_text(value: str, default_from: str | None) -> str:
    """'default VALUE', or 'default: SOURCE, else VALUE' where another source comes first."""
    return f"default: {default_from}, else {value}" if default_from else f"default {value}"


# ---- groups of flags ------------------------------------------------------------------------
def add_json(parser, json_help: str = "also write the result as JSON to FILE",
             quiet: bool = True) -> None:
    parser.add_argument("--json", metavar="FILE", help=json_help)
    if quiet:
        parser.add_argument("--quiet", action="store_true", help="no progress bars")


def add_data(parser, split_default: str | None = None, default_from: str | None = None) -> None:
    """--data-root, --dataset, --image-size and, given its default, --split. `default_from`
    (e.g. "the run's") names where the dataset settings come from when not given."""
    group = parser.add_argument_group("data")
    taken = f" (default: {default_from})" if default_from else ""
    group.add_argument("--data-root", metavar="DIR",
                       help="dataset root: Pittsburgh layout (ROOT/datasets/*.mat) or @UTM@ "
                            f"folders (ROOT/images/<split>/{{database,queries}}){taken}")
    group.add_argument("--dataset", help="Pittsburgh layout: which <name>_<split>.mat when "
                                         f"several are present (e.g. pitts30k){taken}")
    if split_default is not None:
        group.add_argument("--split", help=f"split to use (default {split_default}); "
                                           f"test250k reads pitts250k_test.mat")
    native = "native size, as the reference"
    group.add_argument("--image-size", metavar="HxW",
                       help=f"resize every image to HxW (default: "
                            f"{f'{default_from}, else {native}' if default_from else native})")


def add_model(parser) -> None:
    from .config.common import CommonConfig
    from .models.backbones import ARCHES
    from .models.place_model import POOLINGS

    group = parser.add_argument_group("model")
    group.add_argument("--arch", choices=ARCHES,
                       help=f"encoder (default {default(CommonConfig, 'arch')})")
    group.add_argument("--pooling", choices=POOLINGS,
                       help=f"pooling (default {default(CommonConfig, 'pooling')})")
    group.add_argument("--num-clusters", "--num_clusters", dest="num_clusters", type=int,
                       metavar="K",
                       help=f"NetVLAD clusters (default {default(CommonConfig, 'num_clusters')})")
    add_weights(group)


def add_weights(group, default_from: str | None = None) -> None:
    """--weights and the reference's --fromscratch."""
    from .config.common import CommonConfig

    value = _default_text(default(CommonConfig, "weights"), default_from)
    group.add_argument("--weights", metavar="imagenet|none|PATH",
                       help=f"encoder initialisation ({value})")
    group.add_argument("--fromscratch", dest="weights", action="store_const", const="none",
                       help="same as --weights none")


def add_epochs(group, default_from: str | None = None) -> None:
    from .config.common import TrainConfig

    group.add_argument("--epochs", "--nEpochs", dest="epochs", type=int,
                       help=f"epochs to train "
                            f"({_default_text(default(TrainConfig, 'epochs'), default_from)})")


def add_cache_dir(group, default_from: str | None = None) -> None:
    from .config.common import CommonConfig

    value = _default_text(f"./{default(CommonConfig, 'cache_dir')}", default_from)
    group.add_argument("--cache-dir", "--cachePath", "--dataPath", dest="cache_dir",
                       metavar="DIR", help=f"centroid files and caches ({value})")


def add_compute(group, config=None) -> None:
    """--cache-batch-size, --workers, --device (and --nocuda): how images go through the
    network; the defaults shown are `config`'s (a dataclass, CommonConfig unless given)."""
    if config is None:
        from .config.common import CommonConfig as config
    group.add_argument("--cache-batch-size", "--cacheBatchSize", dest="cache_batch_size",
                       type=int, metavar="N",
                       help="batch size for caching, evaluation and clustering "
                            f"(default {default(config, 'cache_batch_size')})")
    group.add_argument("--workers", "--threads", dest="workers", type=int,
                       metavar="N", help="image-loading worker processes")
    group.add_argument("--device", help=f"{default(config, 'device')} (default), cpu or cuda")
    group.add_argument("--nocuda", dest="device", action="store_const", const="cpu",
                       help="same as --device cpu")


def add_runtime(parser) -> None:
    from .config.common import CommonConfig
    from .data.image_feed import DECODE_CHOICES, DEFAULT_STORE_GB
    from .runtime import PRECISIONS

    group = parser.add_argument_group("runtime")
    add_cache_dir(group)
    add_compute(group)
    group.add_argument("--seed", type=int,
                       help=f"random seed (default {default(CommonConfig, 'seed')})")
    group.add_argument("--precision", choices=PRECISIONS,
                       help="forward passes in float32 or bfloat16 autocast (default: bf16 on "
                            "CUDA, fp32 on the CPU)")
    group.add_argument("--amp", dest="precision", action="store_const", const="bf16",
                       help="same as --precision bf16")
    group.add_argument("--decode", choices=DECODE_CHOICES,
                       help=f"where JPEGs are decoded (default {default(CommonConfig, 'decode')}"
                            f": on the GPU with CUDA)")
    group.add_argument("--image-store-gb", dest="image_store_gb", type=float, metavar="GB",
                       help=f"budget of the decoded-image store under --cache-dir, 0: off "
                            f"(default: {shown(DEFAULT_STORE_GB)} when images are decoded on "
                            f"the CPU, else off)")


def add_tracking(parser, uri_help: str = LOG_URI_HELP,
                 experiment_help: str | None = "MLflow experiment name") -> None:
    """--tracking-uri and, unless `experiment_help` is None, --experiment."""
    group = parser.add_argument_group("tracking")
    group.add_argument("--tracking-uri", metavar="URI", help=uri_help)
    if experiment_help is not None:
        group.add_argument("--experiment", metavar="NAME", help=experiment_help)


def add_training(parser) -> None:
    from .config.common import TrainConfig

    group = parser.add_argument_group("training")
    group.add_argument("--run-dir", metavar="DIR",
                       help="the run's folder (default ./runs/<timestamp>_<arch>_<pooling>)")
    group.add_argument("--runsPath", dest="runs_path", metavar="DIR",
                       help="parent folder of timestamped run folders (default ./runs)")
    group.add_argument("--resume", metavar="RUN_DIR|FILE", help="continue this run")
    group.add_argument("--ckpt", choices=("latest", "best"),
                       help=f"with --resume (default {default(TrainConfig, 'ckpt')})")
    group.add_argument("--centroids", metavar="FILE", help="an existing centroid .hdf5 file")
    add_epochs(group)
    _add_optimisation(group)
    _add_triplets(group)
    group.add_argument("--eval-every", "--evalEvery", dest="eval_every", type=int,
                       help="validate every N epochs "
                            f"(default {default(TrainConfig, 'eval_every')})")
    group.add_argument("--patience", type=int,
                       help="stop after N evaluations without a better Recall@5, 0: never "
                            f"(default {default(TrainConfig, 'patience')})")
    group.add_argument("--val-split", dest="val_split",
                       help=f"validation split (default {default(TrainConfig, 'val_split')})")
    group.add_argument("--start-epoch", dest="start_epoch", type=int,
                       help="epochs counted as done before training starts (the reference's "
                            "flag; not with --resume)")
    group.add_argument("--fresh-optimizer", dest="fresh_optimizer", action="store_const",
                       const=True, help="with --resume: start the optimiser afresh instead of "
                                        "refusing a checkpoint whose optimiser state does not "
                                        "fit")
    group.add_argument("--frozen-cache-gb", dest="frozen_cache_gb", type=float, metavar="GB",
                       help="memory for the frozen layers' output of every image, computed "
                            "once instead of at every step (pretrained encoders), 0: off "
                            "(default: 30%% of the GPU's, or a quarter of the host's up to "
                            "8 GB, split between sweep trials side by side)")


def _add_optimisation(group) -> None:
    from .config.common import SGD_DEFAULTS, TrainConfig

    group.add_argument("--batch-size", "--batchSize", dest="batch_size", type=int,
                       help=f"queries per batch (default {default(TrainConfig, 'batch_size')})")
    group.add_argument("--optim", type=str.upper, choices=("SGD", "ADAM"),
                       help=f"default {default(TrainConfig, 'optim')}")
    group.add_argument("--lr", type=float,
                       help=f"learning rate (default {default(TrainConfig, 'lr')})")
    group.add_argument("--momentum", type=float,
                       help=f"SGD momentum (default {shown(SGD_DEFAULTS['momentum'])})")
    group.add_argument("--weight-decay", "--weightDecay", dest="weight_decay", type=float,
                       help=f"SGD weight decay (default {shown(SGD_DEFAULTS['weight_decay'])})")
    group.add_argument("--lr-step", "--lrStep", dest="lr_step", type=float,
                       help=f"epochs per learning-rate step (default "
                            f"{shown(SGD_DEFAULTS['lr_step'])})")
    group.add_argument("--lr-gamma", "--lrGamma", dest="lr_gamma", type=float,
                       help=f"learning-rate factor per step (default "
                            f"{shown(SGD_DEFAULTS['lr_gamma'])})")


def _add_triplets(group) -> None:
    from .config.common import TrainConfig

    group.add_argument("--margin", type=float, help="triplet margin, used as sqrt(margin) on "
                                                    f"L2 distances (default "
                                                    f"{default(TrainConfig, 'margin')})")
    group.add_argument("--num-negatives", dest="num_negatives", type=int,
                       help=f"hard negatives per query "
                            f"(default {default(TrainConfig, 'num_negatives')})")
    group.add_argument("--num-negative-samples", dest="num_negative_samples", type=int,
                       help=f"negatives sampled per query before mining "
                            f"(default {default(TrainConfig, 'num_negative_samples')})")
    group.add_argument("--cache-refresh-rate", "--cacheRefreshRate", dest="cache_refresh_rate",
                       type=int, help="queries between cache rebuilds, 0: once per epoch "
                                      f"(default {default(TrainConfig, 'cache_refresh_rate')})")


def add_compression(parser) -> None:
    from .config.common import COMPRESS_METHODS, METHOD_DEFAULTS, CompressConfig

    group = parser.add_argument_group("compression")
    group.add_argument("--resume", required=True, metavar="RUN_DIR|FILE",
                       help="the checkpoint to compress")
    group.add_argument("--ckpt", choices=("latest", "best"),
                       help=f"with --resume (default {default(CompressConfig, 'ckpt')})")
    group.add_argument("--method", required=True, choices=COMPRESS_METHODS)
    group.add_argument("--dim", type=int, help="pca-whiten: output dimensions (e.g. 4096)")
    group.add_argument("--no-whiten", dest="whiten", action="store_const", const=False,
                       help="pca-whiten: project only, no whitening")
    group.add_argument("--amount", type=float,
                       help="prune: share of weights (or of each layer's channels) to remove")
    group.add_argument("--structure", choices=("unstructured", "channels"),
                       help="prune: zero single weights (unstructured) or remove whole channels "
                            f"(default {METHOD_DEFAULTS['structure']})")
    group.add_argument("--no-refit", dest="refit", action="store_const", const=False,
                       help="prune --structure channels: keep the sliced weights, without "
                            "refitting the next conv to the original's outputs")
    group.add_argument("--mode", choices=("ptq-int8", "qat-int8"),
                       help="quantize: post-training (ptq-int8) or quantization-aware training "
                            f"(default {METHOD_DEFAULTS['mode']})")
    group.add_argument("--dtype", choices=("bf16", "fp16"),
                       help=f"half: weight type (default {METHOD_DEFAULTS['dtype']})")
    group.add_argument("--pq-bytes", dest="pq_bytes", type=int,
                       help="pq: bytes per database descriptor (a divisor of its dimensions)")
    _add_compression_runs(group)


def _add_compression_runs(group) -> None:
    from .config.common import CompressConfig

    group.add_argument("--finetune-epochs", dest="finetune_epochs", type=int,
                       help="prune, qat-int8: epochs of triplet training afterwards "
                            f"(default {default(CompressConfig, 'finetune_epochs')})")
    group.add_argument("--finetune-lr", dest="finetune_lr", type=float,
                       help="learning rate of the fine-tuning "
                            f"(default {default(CompressConfig, 'finetune_lr')})")
    group.add_argument("--run-dir", metavar="DIR",
                       help="the variant's run folder (default runs/<run>_<method>_<time>)")
    group.add_argument("--latency-batches", dest="latency_batches", type=int, nargs="+",
                       metavar="B", help="batch sizes of the CPU latency "
                                         f"(default {default(CompressConfig, 'latency_batches')})")
    group.add_argument("--study", metavar="NAME",
                       help="MLflow: the study (parent run) the variant joins (default "
                            "compress-<source run>)")
