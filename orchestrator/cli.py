"""`python -m orchestrator <verb>`: synth, cluster, train, eval, sweep.

Each verb turns flags into a config, calls the plain function of `vpr_core` (or the
sweep), prints a readable result and, with `--json FILE`, writes it as JSON. A user's mistake
is a `UserError`: one line on stderr and exit status 2.
"""
from __future__ import annotations

import contextlib
import dataclasses
import sys
from datetime import datetime
from pathlib import Path

from vpr_core import arguments
from vpr_core.arguments import emit
from vpr_core.config.common import (
    SGD_DEFAULTS,
    ClusterConfig,
    CompressConfig,
    EvalConfig,
    format_image_size,
)
from vpr_core.errors import UserError, exit_status
from vpr_core.log import log

# flags.json keys that are not restored on --resume: they belong to the new invocation
NOT_RESTORED = {"resume", "ckpt", "epochs", "run_dir", "show_progress", "device", "workers",
                "cache_batch_size", "centroids", "precision", "decode", "image_store_gb",
                "start_epoch", "fresh_optimizer", "frozen_cache_gb"}


def build_parser() -> arguments.OneLineParser:
    parser = arguments.OneLineParser(
        prog="python -m orchestrator",
        description="NetVLAD visual place recognition: cluster, train, evaluate, sweep.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=arguments.OneLineParser)
    verbs.required = True
    _add_synth(verbs)

    cluster = verbs.add_parser("cluster", help="k-means centroids for NetVLAD's initialisation")
    arguments.add_data(cluster, split_default=arguments.default(ClusterConfig, "split"))
    arguments.add_model(cluster)
    arguments.add_runtime(cluster)
    arguments.add_json(cluster)

    train = verbs.add_parser("train", help="train NetVLAD with triplet loss")
    arguments.add_data(train)
    arguments.add_model(train)
    arguments.add_training(train)
    arguments.add_runtime(train)
    arguments.add_tracking(train)
    arguments.add_json(train)

    _add_eval(verbs)

    compress = verbs.add_parser("compress", help="a compressed variant of a checkpoint, "
                                                 "measured against it")
    arguments.add_compression(compress)
    arguments.add_data(compress, split_default=arguments.default(CompressConfig, "split"))
    arguments.add_runtime(compress)
    arguments.add_tracking(compress)
    arguments.add_json(compress)

    from . import sweep_cli  # the sweep's flags live beside the sweep
    sweep_cli.add_parser(verbs)

    ui = verbs.add_parser("ui", help="open the MLflow UI on the tracked runs")
    ui.add_argument("--tracking-uri", metavar="URI", help="default sqlite:///$PWD/mlflow.db")
    ui.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default %(default)s: this machine only)")
    ui.add_argument("--port", type=int, default=5000)
    return parser


def _add_synth(verbs) -> None:
    from vpr_core.data.synthetic import SynthConfig

    synth = verbs.add_parser("synth", help="write a synthetic dataset (Pittsburgh layout)")
    synth.add_argument("--out", required=True, metavar="DIR", help="new folder to write")
    synth.add_argument("--places", type=int, default=SynthConfig.places,
                       help="places per split (default %(default)s)")
    synth.add_argument("--queries", type=int, help="queries per split (default: --places)")
    synth.add_argument("--image-size", default=format_image_size(SynthConfig.image_size),
                       metavar="HxW", help="default %(default)s")
    synth.add_argument("--seed", type=int, default=SynthConfig.seed)
    synth.add_argument("--layout", choices=("pittsburgh", "folder"), default=SynthConfig.layout)
    arguments.add_json(synth)


def _add_eval(verbs) -> None:
    evaluate = verbs.add_parser("eval", help="Recall@1/5/10/20 of a checkpoint on a split")
    arguments.add_data(evaluate, split_default=arguments.default(EvalConfig, "split"))
    arguments.add_model(evaluate)
    evaluate.add_argument("--resume", metavar="RUN_DIR|FILE",
                          help="checkpoint file or run folder (default: the untrained model)")
    evaluate.add_argument("--ckpt", choices=("latest", "best"),
                          help=f"default {arguments.default(EvalConfig, 'ckpt')}")
    evaluate.add_argument("--centroids", metavar="FILE", help="untrained model: centroid file")
    arguments.add_runtime(evaluate)
    arguments.add_tracking(evaluate)
    arguments.add_json(evaluate)


def translate_mode(argv: list[str]) -> list[str]:
    """Accept the reference's `--mode=train|test|cluster` in place of the verb (a command
    that starts with its verb keeps its own `--mode`, as `compress --mode ptq-int8`)."""
    verbs = {"train": "train", "test": "eval", "cluster": "cluster"}
    if argv and not argv[0].startswith("-"):
        return argv
    for i, arg in enumerate(argv):
        value = None
        if arg.startswith("--mode="):
            value, rest = arg.split("=", 1)[1], argv[:i] + argv[i + 1:]
        elif arg == "--mode" and i + 1 < len(argv):
            value, rest = argv[i + 1], argv[:i] + argv[i + 2:]
        if value is not None:
            if value not in verbs:
                raise UserError(f"--mode {value!r} is not one of train, test, cluster")
            return [verbs[value]] + rest
    return argv


def make_config(cls, args, restored: dict | None = None, **fixed):
    """`cls` from defaults, then `restored` (flags.json), then explicit flags, then `fixed`.
    Not validated here: each stage validates its config as it starts."""
    names = [f.name for f in dataclasses.fields(cls)]
    values = {k: v for k, v in (restored or {}).items() if k in names and k not in NOT_RESTORED}
    values.update(arguments.given(args, names))
    if str(values.get("optim", "")).upper() == "ADAM":
        # SGD's settings restored from an older run's flags.json do not apply to Adam
        for name in SGD_DEFAULTS:
            if name not in arguments.given(args, names):
                values.pop(name, None)
    values.update(fixed)
    if getattr(args, "quiet", False):
        values["show_progress"] = False
    return cls(**values)  # validated once, by the stage it is for


# ---- verbs ---------------------------------------------------------------------------------
def run_synth(args) -> None:
    from vpr_core.config.common import parse_image_size
    from vpr_core.data.synthetic import SynthConfig, write_synthetic

    size = parse_image_size(args.image_size)
    config = SynthConfig(out=Path(args.out), places=args.places,
                         queries=args.queries if args.queries is not None else args.places,
                         image_size=size or SynthConfig.image_size, seed=args.seed,
                         layout=args.layout)
    result = write_synthetic(config)
    counts = ", ".join(f"{split}: {c['database']} database + {c['queries']} queries"
                       for split, c in result["splits"].items())
    emit(args, result, [f"wrote a synthetic {result['layout']} dataset to {result['out']} "
                        f"({counts}; {result['image_size']} images)"])


def run_cluster(args) -> None:
    from vpr_core.config.common import ClusterConfig
    from vpr_core.stages.cluster import cluster

    config = make_config(ClusterConfig, args)
    result = cluster(config)
    verb = "reused" if result.reused else "wrote"
    emit(args, result.to_dict(),
         [f"{verb} {result.path} ({result.num_clusters} centroids from "
          f"{result.num_descriptors} local descriptors, {result.seconds:.1f} s)"])


def run_train(args) -> None:
    from vpr_core.config.common import TrainConfig
    from vpr_core.training import TrainingRun

    restored = _restored_flags(args.resume, args.ckpt) if args.resume else {}
    fixed = {}
    if args.run_dir is None and args.runs_path is not None and args.resume is None:
        arch = args.arch or restored.get("arch", "vgg16")
        pooling = args.pooling or restored.get("pooling", "netvlad")
        stamp = datetime.now().strftime("%b%d_%H-%M-%S")
        fixed["run_dir"] = Path(args.runs_path).absolute() / f"{stamp}_{arch}_{pooling}"
    config = make_config(TrainConfig, args, restored, **fixed)
    uri = _tracking_uri(args)
    run = TrainingRun(config)  # validates everything before MLflow sees anything
    tracker = _tracker(args, uri)
    log.info(f"training {config.arch} + {config.pooling} on {run.train_split.describe()}; "
             f"run folder {run.run_dir}")
    epochs = []
    with (tracker.train_run(run) if tracker else contextlib.nullcontext()) as track:
        for result in run.epochs():
            epochs.append(result)
            recalls = "  ".join(f"R@{n} {r:.4f}" for n, r in sorted(result.recalls.items()))
            best = "  (best)" if result.is_best else ""
            log.info(f"epoch {result.epoch}/{config.epochs}: loss {result.loss:.4f}  {recalls}  "
                     f"[{result.triplets} triplets, {result.seconds:.1f} s]{best}")
            if track:
                track(result)
    summary = run.summary(epochs).to_dict()
    emit(args, summary, [f"=> Best Recall@5: {run.best_score:.4f} (epoch {run.best_epoch}); "
                         f"checkpoints in {run.run_dir / 'checkpoints'}"])


def run_eval(args) -> None:
    from vpr_core.config.common import EvalConfig

    from .evaluate import evaluate_and_track

    restored = _restored_flags(args.resume, args.ckpt) if args.resume else {}
    restored = {k: v for k, v in restored.items()
                if k in ("data_root", "dataset", "image_size", "pooling", "cache_dir")}
    config = make_config(EvalConfig, args, restored)
    payload, lines = evaluate_and_track(config, _tracking_uri(args), args.experiment)
    emit(args, payload, lines)


def run_compress(args) -> None:
    from vpr_core.compression.measure import figures_table
    from vpr_core.config.common import CompressConfig
    from vpr_core.stages.compress import compress

    restored = _restored_flags(args.resume, args.ckpt)
    restored = {k: v for k, v in restored.items()
                if k in ("data_root", "dataset", "image_size", "cache_dir")}
    config = make_config(CompressConfig, args, restored)
    uri = _tracking_uri(args)
    result = compress(config)
    payload = result.to_dict()
    tracker = _tracker(args, uri)
    if tracker:
        study = args.study or f"compress-{Path(result.source).parent.parent.name}"
        payload["mlflow_study"], payload["mlflow_run_id"] = \
            tracker.log_compression(study, result)
    emit(args, payload, [f"{result.variant.label} of {result.source} on {config.split}: "
                         f"{result.run_dir}",
                         *figures_table([result.original, result.variant])])


def _restored_flags(resume, ckpt) -> dict:
    from vpr_core.models.checkpoints import checkpoint_file, read_flags

    return read_flags(checkpoint_file(Path(resume).absolute(), ckpt or "latest"))


def _tracking_uri(args) -> str | None:
    """The checked tracking URI when the user asked for tracking (nothing is created yet)."""
    if getattr(args, "tracking_uri", None) is None and getattr(args, "experiment", None) is None:
        return None
    from vpr_tracking.uri import check_tracking_uri

    return check_tracking_uri(args.tracking_uri)


def _tracker(args, uri: str | None):
    if uri is None:
        return None
    from .tracking import Tracker

    return Tracker(uri, args.experiment)


def run_ui(args) -> None:
    """The MLflow UI on the store (loopback unless --host says otherwise), with a link to each
    experiment's runs; stopping this command stops the server and all its processes."""
    from vpr_tracking.uri import check_tracking_uri, is_server

    from .ui import serve

    uri = check_tracking_uri(args.tracking_uri, must_exist=True)
    if is_server(uri):
        raise UserError(f"{uri} is already a tracking server: open it in a browser")
    serve(uri, args.host, args.port)


VERBS = {"synth": run_synth, "cluster": run_cluster, "train": run_train, "eval": run_eval,
         "compress": run_compress, "ui": run_ui}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def command() -> None:
        args = build_parser().parse_args(translate_mode(argv))
        if args.verb == "sweep":
            from . import sweep_cli

            sweep_cli.run(args)
        else:
            VERBS[args.verb](args)

    return exit_status(command)
