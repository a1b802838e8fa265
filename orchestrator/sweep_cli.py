"""`python -m orchestrator sweep`: flags over an experiment spec, then the sweep (or, for an
evaluation spec such as experiments/pretrained_vgg16.yaml, one tracked evaluation)."""
from __future__ import annotations

from pathlib import Path

from vpr_core import arguments
from vpr_core.arguments import emit
from vpr_core.errors import CommandFailed, UserError
from vpr_core.log import log
from vpr_tracking.names import Tag

# what an evaluation spec takes from its `train` section
EVAL_RUNTIME = ("cache_batch_size", "precision", "decode", "image_store_gb", "image_size",
                "workers", "device")


SPEC = "the spec's"  # where a sweep's settings come from when no flag gives them


def add_parser(verbs) -> None:
    sweep = verbs.add_parser("sweep", help="a Ray Tune + Optuna sweep tracked in MLflow",
                             description="A sweep over an experiment spec; flags override "
                                         "the spec's settings.")
    sweep.add_argument("--config", metavar="YAML",
                       help="experiment spec (default: the embedded experiments/smoke.yaml)")
    sweep.add_argument("--num-samples", dest="num_samples", type=int, help="trials to run")
    sweep.add_argument("--arch", action="append", choices=("alexnet", "vgg16"),
                       help="restrict the architectures searched (repeatable)")
    sweep.add_argument("--seed", type=int, help="the search's seed (TPE)")
    sweep.add_argument("--name", help="the sweep's name (default <spec>-<timestamp>)")
    sweep.add_argument("--resume", action="store_true",
                       help="continue an interrupted sweep (same --name/--storage; default: the "
                            "latest of this spec)")
    sweep.add_argument("--storage", metavar="DIR|URI",
                       help="Tune's experiment state (default ./ray_results; shared storage on "
                            "a multi-node cluster)")
    sweep.add_argument("--ray-address", metavar="HOST:PORT", help="join an existing Ray cluster")
    sweep.add_argument("--cpus-per-trial", dest="cpus_per_trial", type=float)
    sweep.add_argument("--gpus-per-trial", dest="gpus_per_trial", type=float)
    sweep.add_argument("--max-concurrent", dest="max_concurrent", type=int)
    sweep.add_argument("--miner-memory-gb", dest="miner_memory_gb", type=float,
                       help="memory budget of the shared mining service (default 40%% of RAM)")
    arguments.add_data(sweep, default_from=SPEC)
    trials = sweep.add_argument_group("trials")
    arguments.add_weights(trials, default_from=SPEC)
    arguments.add_epochs(trials, default_from=SPEC)
    arguments.add_cache_dir(trials, default_from=SPEC)
    arguments.add_tracking(sweep)
    arguments.add_json(sweep)


# a resumed sweep keeps the settings it started with: these flags would be ignored
NOT_ON_RESUME = ("num_samples", "max_concurrent", "seed")


def apply_flags(spec, args):
    """Command-line flags override the spec; every path becomes absolute (trials run in
    folders of their own)."""
    if args.resume:
        ignored = [f"--{name.replace('_', '-')}" for name in NOT_ON_RESUME
                   if getattr(args, name) is not None]
        if ignored:
            raise UserError(f"{' '.join(ignored)} do not apply with --resume: a resumed sweep "
                            f"keeps the settings it started with; leave them out")
    for name in ("num_samples", "cpus_per_trial", "gpus_per_trial", "max_concurrent",
                 "miner_memory_gb", "experiment", "dataset"):
        if getattr(args, name) is not None:
            setattr(spec, name, getattr(args, name))
    if args.seed is not None:
        spec.seed = args.seed
    if args.data_root is not None:
        spec.data_root = Path(args.data_root).expanduser().absolute()
    if args.tracking_uri is not None:
        spec.tracking_uri = args.tracking_uri
    if args.arch:
        spec.space["arch"] = list(dict.fromkeys(args.arch))
    for flag in ("epochs", "weights"):
        if getattr(args, flag) is not None:
            spec.train[flag] = getattr(args, flag)
    if args.cache_dir is not None:
        spec.train["cache_dir"] = str(Path(args.cache_dir).absolute())
    if args.image_size is not None:
        from vpr_core.config.common import parse_image_size

        spec.train["image_size"] = parse_image_size(args.image_size)
    absolute_paths(spec)
    return spec


def absolute_paths(spec) -> None:
    """The spec's path settings, relative to the working directory, made absolute."""
    weights = spec.train.get("weights")
    if weights not in (None, "imagenet", "none"):
        spec.train["weights"] = str(Path(weights).expanduser().absolute())
    if spec.train.get("cache_dir") is not None:
        spec.train["cache_dir"] = str(Path(spec.train["cache_dir"]).expanduser().absolute())
    if spec.data_root is not None:
        spec.data_root = Path(spec.data_root).expanduser().absolute()


def run(args) -> None:
    from .spec import load_spec

    spec = apply_flags(load_spec(args.config), args)
    if spec.evaluate is not None:
        return run_evaluation(spec, args)
    if spec.compress is not None:
        return run_compression_study(spec, args)
    from .sweep import format_table, run_sweep, unlogged_message

    try:
        result = run_sweep(spec, restore=args.resume, ray_address=args.ray_address,
                           storage=args.storage, name=args.name)
    finally:
        from . import ray_cluster

        ray_cluster.shutdown()
    summary = result.to_dict()
    lines = ["", *format_table(result), ""]
    best = result.best
    if best is not None:
        recalls = "  ".join(f"R@{n} {best.recalls[n]:.4f}" for n in sorted(best.recalls))
        lines.append(f"best: {best.label}  {recalls}  (trial {best.trial_id})")
    lines.append(f"wall time {result.wall_seconds:.0f} s; trials trained for "
                 f"{summary['trials_training_seconds']:.0f} s in all, "
                 f"{summary['per_trial_overhead_seconds']:.0f} s overhead per trial")
    if result.interrupted:
        lines.append(f"interrupted: resume with `python -m orchestrator sweep --resume --name "
                     f"{result.name} --storage {Path(result.experiment_path).parent}"
                     f"{' --config ' + args.config if args.config else ''}`")
    lines.append(f"open the runs: {summary['mlflow_ui']}")
    emit(args, summary, lines)
    if result.interrupted:
        if result.unlogged:
            log.warning(unlogged_message(result.tracking_uri, result.unlogged))
        raise KeyboardInterrupt  # exit status 130, as for any interrupted command
    check_outcome(result)


def check_outcome(result) -> None:
    """A sweep whose results MLflow did not all take, or in which every trial failed, ends
    with exit status 1, not 0."""
    from .sweep import unlogged_message

    if result.unlogged:
        raise CommandFailed(unlogged_message(result.tracking_uri, result.unlogged))
    failed = [row for row in result.rows if row.status == "FAILED"]
    if result.rows and len(failed) == len(result.rows):
        raise CommandFailed(f"every trial of the sweep failed; the first: "
                            f"{failed[0].reason or 'see its MLflow run'}")


def run_compression_study(spec, args) -> None:
    """A compression spec: its variants as Tune trials, one MLflow study."""
    from vpr_core.compression.measure import Figures, figures_table
    from vpr_tracking.uri import ui_command

    from . import ray_cluster
    from .compress_sweep import run_compress_study

    try:
        results, failed, parent, uri = run_compress_study(
            spec, storage=args.storage, name=args.name, ray_address=args.ray_address,
            data_root=spec.data_root)
    finally:
        ray_cluster.shutdown()
    figures = [results[0]["original"]] + [r["variant"] for r in results]
    lines = figures_table([Figures.from_dict(f) for f in figures])
    lines += [f"failed: {reason}" for reason in failed]
    lines.append(f"logged as MLflow study run {parent}; open: {ui_command(uri)}")
    emit(args, {"study_parent_run_id": parent, "variants": results, "failed": failed}, lines)


def run_evaluation(spec, args) -> None:
    """An evaluation spec: its checkpoint evaluated as `eval` does it, logged as one MLflow
    run (the spec's `train` section gives the runtime settings)."""
    from vpr_core.config.common import EvalConfig
    from vpr_tracking.uri import check_tracking_uri

    from .evaluate import evaluate_and_track

    if spec.data_root is None:
        raise UserError("an evaluation spec needs data.root (or --data-root)")
    uri = check_tracking_uri(spec.tracking_uri)
    settings = {k: v for k, v in spec.train.items() if k in EVAL_RUNTIME}
    config = EvalConfig(data_root=spec.data_root, dataset=spec.dataset,
                        split=spec.evaluate.get("split", "val"),
                        resume=Path(spec.evaluate["checkpoint"]),
                        ckpt=spec.evaluate.get("ckpt", "latest"),
                        show_progress=not args.quiet, **settings)
    payload, lines = evaluate_and_track(config, uri, spec.experiment_name,
                                        tags={Tag.SPEC: spec.name})
    emit(args, payload, [f"{spec.name}: {payload['checkpoint']}", *lines])
