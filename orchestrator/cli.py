"""`python -m orchestrator <verb>`: synth, cluster, train, eval, compress, export, sweep,
benchmark, ui.

Each verb's flags come from its config's settings; the verb builds the config (defaults, then
what `--resume` restores, then the flags), runs the stage of `vpr_core.stages`, prints a
readable result and, with `--json FILE`, writes it as JSON. A user's mistake is a
`UserError`: one line on stderr and exit status 2.
"""
from __future__ import annotations

import contextlib
import copy
import sys
from datetime import datetime
from pathlib import Path

from vpr_core import arguments, settings
from vpr_core.arguments import emit
from vpr_core.config import ClusterConfig, CompressConfig, EvalConfig, ExportConfig, TrainConfig
from vpr_core.data.synthetic import SynthConfig
from vpr_core.errors import UserError, exit_status
from vpr_core.log import log
from vpr_tracking.flags import READ_URI_HELP, add_tracking


def build_parser() -> arguments.OneLineParser:
    parser = arguments.OneLineParser(
        prog="python -m orchestrator",
        description="Visual place recognition: cluster, train, evaluate, compress, "
                    "export, sweep, benchmark.")
    verbs = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=arguments.OneLineParser)
    verbs.required = True
    stages = (
        ("synth", SynthConfig,
         "write a synthetic dataset (Pittsburgh, @UTM@ folder, GSV-Cities or MSLS layout)"),
        ("cluster", ClusterConfig, "k-means centroids for NetVLAD's initialisation"),
        ("train", TrainConfig, "train NetVLAD with triplet loss"),
        ("eval", EvalConfig, "Recall@1/5/10/20 of a checkpoint on a split"),
        ("compress", CompressConfig, "a compressed variant of a checkpoint, measured against it"),
        ("export", ExportConfig, "an ONNX or TorchScript file of a model, checked against "
                                 "PyTorch"),
    )
    for verb, config, help_text in stages:
        sub = verbs.add_parser(verb, help=help_text)
        required = {"synth": ("out",), "compress": ("resume", "method")}.get(verb, ())
        arguments.add_settings(sub, config, required=required)
        if verb in ("train", "eval", "compress"):
            add_tracking(sub)
        if verb == "export":  # the store a models:/ reference is read from
            add_tracking(sub, READ_URI_HELP, experiment_help=None)
        arguments.add_json(sub)
    _add_extras(verbs.choices)

    from . import benchmark_cli, sweep_cli  # their flags live beside them
    sweep_cli.add_parser(verbs)
    benchmark_cli.add_parser(verbs)

    ui = verbs.add_parser("ui", help="open the MLflow UI on the tracked runs")
    ui.add_argument("--tracking-uri", metavar="URI", help="default sqlite:///$PWD/mlflow.db")
    ui.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default %(default)s: this machine only)")
    ui.add_argument("--port", type=int, default=5000)
    return parser


def _add_extras(parsers: dict) -> None:
    """The flags that are no setting of a config: the reference's --runsPath, and the
    compression study a variant joins in MLflow."""
    parsers["train"].add_argument("--runsPath", dest="runs_path", metavar="DIR",
                                  help="parent folder of timestamped run folders (default "
                                       "./runs)")
    arguments.group_of(parsers["compress"], "tracking").add_argument(
        "--study", metavar="NAME",
        help="MLflow: the study (parent run) the variant joins (default compress-<source run>)")
    arguments.group_of(parsers["compress"], "tracking").add_argument(
        "--register", metavar="NAME",
        help="MLflow: register the variant as a new version of this model in the Model "
             "Registry (logs the variant to --tracking-uri)")


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


def make_config(cls, args, flags: dict | None = None, **fixed):
    """`cls` from its defaults, then what `--resume` restores from the run's `flags`
    (flags.json), then the flags given, then `fixed`. Validated by the stage it is for."""
    values = settings.restored(cls, flags or {}, arguments.given(args, cls))
    values.update(fixed)
    return cls(**values)


# ---- verbs ---------------------------------------------------------------------------------
def run_synth(args) -> None:
    from vpr_core.data.synthetic import write_synthetic

    result = write_synthetic(make_config(SynthConfig, args))
    counts = ", ".join(f"{split}: " + _counted(c) for split, c in result["splits"].items())
    emit(args, result, [f"wrote a synthetic {result['layout']} dataset to {result['out']} "
                        f"({counts}; {result['image_size']} images)"])


def _counted(counts: dict) -> str:
    """'120 database + 120 queries'; places and their images: '12 places (48 images)'."""
    if set(counts) == {"places", "images"}:
        return f"{counts['places']} places ({counts['images']} images)"
    return " + ".join(f"{n} {kind}" for kind, n in counts.items())


def run_cluster(args) -> None:
    from vpr_core.stages import cluster

    result = cluster.run(make_config(ClusterConfig, args))
    verb = "reused" if result.reused else "wrote"
    emit(args, result.to_dict(),
         [f"{verb} {result.path} ({result.num_clusters} centroids from "
          f"{result.num_descriptors} local descriptors, {result.seconds:.1f} s)"])


def mined(result) -> str:
    """What an epoch's loss was computed over: the triplets, or the share of a place batch's
    pairs or triplets its miner kept."""
    if result.mined_fraction is None:
        return f"{result.triplets} triplets"
    return f"{result.triplets} mined, {result.mined_fraction:.0%} of the batches'"


def run_train(args) -> None:
    from vpr_core.stages.train import training_run

    args = local_resume(args)
    resume = getattr(args, "resume", None)
    flags = _run_flags(args) if resume else {}
    fixed = {}
    if getattr(args, "run_dir", None) is None and args.runs_path is not None and resume is None:
        values = settings.restored(TrainConfig, flags, arguments.given(args, TrainConfig))
        stamp = datetime.now().strftime("%b%d_%H-%M-%S")
        name = f"{stamp}_{values.get('arch', 'vgg16')}_{values.get('aggregator', 'netvlad')}"
        fixed["run_dir"] = Path(args.runs_path).absolute() / name
    uri = _tracking_uri(args)
    run = training_run(make_config(TrainConfig, args, flags, **fixed))  # checks it all first
    config, tracker = run.config, _tracker(args, uri)
    log.info(f"training {config.arch} + {config.aggregator} ({config.loss} loss) on "
             f"{run.data.describe()}; "
             f"run folder {run.run_dir}")
    epochs = []
    with (tracker.train_run(run) if tracker else contextlib.nullcontext()) as track:
        for result in run.epochs():
            epochs.append(result)
            if track:  # logged before it is printed: a printed epoch is in MLflow
                track(result)
            recalls = "  ".join(f"R@{n} {r:.4f}" for n, r in sorted(result.recalls.items()))
            best = "  (best)" if result.is_best else ""
            log.info(f"epoch {result.epoch}/{config.epochs}: loss {result.loss:.4f}  {recalls}  "
                     f"[{mined(result)}, {result.seconds:.1f} s]{best}")
    summary = run.summary(epochs).to_dict()
    emit(args, summary, [f"=> Best Recall@5: {run.best_score:.4f} (epoch {run.best_epoch}); "
                         f"checkpoints in {run.folder.checkpoints}"])


def run_eval(args) -> None:
    from .evaluate import evaluate_and_track

    args = local_resume(args)
    flags = _run_flags(args) if getattr(args, "resume", None) else {}
    payload, lines = evaluate_and_track(make_config(EvalConfig, args, flags),
                                        _tracking_uri(args), args.experiment)
    emit(args, payload, lines)


def run_compress(args) -> None:
    from vpr_core.compression.measure import figures_table
    from vpr_core.stages import compress

    args = local_resume(args)
    config = make_config(CompressConfig, args, _run_flags(args))
    uri = _tracking_uri(args, wanted=args.register is not None)
    if args.register is not None:
        from vpr_tracking.registry import check_name

        check_name(args.register)
    result = compress.run(config)
    payload = result.to_dict()
    tracker = _tracker(args, uri)
    lines = []
    if tracker:
        study = args.study or f"compress-{Path(result.source).parent.parent.name}"
        payload["mlflow_study"], payload["mlflow_run_id"] = \
            tracker.log_compression(study, result)
    if args.register is not None:
        from .registering import register_safely, registration_line

        payload["registration"] = register_safely(
            tracker, args.register, payload["mlflow_run_id"], f"the {result.variant.label} "
            f"variant", checkpoint=result.checkpoint)
        lines.append(registration_line(payload["registration"]))
    emit(args, payload, [f"{result.variant.label} of {result.source} on {config.split}: "
                         f"{result.run_dir}",
                         *figures_table([result.original, result.variant]), *lines])


def local_resume(args):
    """`args`, with a `--resume models:/NAME/VERSION` or `models:/NAME@ALIAS` replaced by the
    registered checkpoint's local file (flags.json beside it: its run's settings are restored
    as for a run folder), downloaded from the store of `--tracking-uri` into ./cache/models."""
    from vpr_tracking.names import is_model_reference

    resume = getattr(args, "resume", None)
    if resume is None or not is_model_reference(resume):
        return args
    from vpr_tracking.model_refs import model_checkpoint

    local = copy.copy(args)
    local.resume = model_checkpoint(str(resume), getattr(args, "tracking_uri", None))
    return local


def run_export(args) -> None:
    from vpr_core.stages import export

    if getattr(args, "resume", None) is None:
        raise UserError("export needs --resume RUN_DIR|FILE: the model to export; pass it")
    args = local_resume(args)
    source = Path(args.resume).expanduser().absolute()
    config = make_config(ExportConfig, args, _run_flags(args, source), resume=source)
    result = export.run(config)
    emit(args, result.to_dict(), result.lines())


def _run_flags(args, resume: Path | None = None) -> dict:
    """flags.json of the run `--resume` (or `resume`, its local path) names ({} when it has
    none)."""
    from vpr_core.models.checkpoints import checkpoint_file, read_flags

    ckpt = getattr(args, "ckpt", None) or settings.default_of(TrainConfig, "ckpt")
    return read_flags(checkpoint_file(resume or Path(args.resume).absolute(), ckpt))


def _tracking_uri(args, wanted: bool = False) -> str | None:
    """The checked tracking URI when the user asked for tracking, or when `wanted` (a
    registration); nothing is created yet."""
    if getattr(args, "tracking_uri", None) is None and \
            getattr(args, "experiment", None) is None and not wanted:
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
         "compress": run_compress, "export": run_export, "ui": run_ui}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)

    def command() -> None:
        args = build_parser().parse_args(translate_mode(argv))
        if args.verb in ("sweep", "benchmark"):
            from . import benchmark_cli, sweep_cli

            (sweep_cli if args.verb == "sweep" else benchmark_cli).run(args)
        else:
            VERBS[args.verb](args)

    return exit_status(command)
