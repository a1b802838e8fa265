"""`python -m orchestrator sweep`: flags over an experiment spec, then the sweep (or, for an
evaluation spec such as experiments/pretrained_vgg16.yaml, one tracked evaluation; for a
compression spec, a study of its variants).

The flags come from the settings they override: the spec's own (`SweepSpec`), the fixed
training settings of its `train` section (`TrainConfig`), and this invocation's (`SweepRun`).
A flag that does not apply to the spec's kind is refused, not ignored.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from vpr_core import arguments
from vpr_core.arguments import emit
from vpr_core.config import TrainConfig, parse_image_size
from vpr_core.errors import CommandFailed, UserError
from vpr_core.log import log, quiet
from vpr_core.settings import declared, setting, setting_of
from vpr_tracking import search_space
from vpr_tracking.flags import add_tracking
from vpr_tracking.names import Tag

from .spec import COMPRESSION, EVALUATION, RAY, SWEEP, SweepSpec, stage_settings, train_keys

SPEC = "the spec's"  # where a sweep's settings come from when no flag gives them
RUN = "sweep"  # the help group of this invocation's flags


@dataclass(frozen=True)
class SweepRun:
    """This invocation of a spec (not part of it)."""

    config: Path | None = setting(None, "experiment spec", metavar="YAML", group=RUN,
                                  shown_default="the embedded experiments/smoke.yaml")
    name: str | None = setting(None, "the sweep's name", group=RUN, kinds=RAY,
                               shown_default="<experiment, data folder or spec>-<timestamp>")
    resume: bool = setting(False, "continue an interrupted sweep (same --name/--storage; "
                           "default: the latest of this spec)", parse=bool, group=RUN,
                           kinds=(SWEEP,))
    storage: str | None = setting(None, "Tune's experiment state (shared storage on a "
                                  "multi-node cluster)", metavar="DIR|URI", group=RUN,
                                  kinds=RAY, shown_default="./ray_results")
    ray_address: str | None = setting(None, "join an existing Ray cluster",
                                      metavar="HOST:PORT", group=RUN, kinds=RAY,
                                      shown_default="a local Ray")
    register: str | None = setting(None, "register the best trial's model as a new version "
                                   "of this model in MLflow's Model Registry",
                                   metavar="NAME", group=RUN, kinds=(SWEEP,),
                                   shown_default="the experiment's name")
    no_register: bool = setting(False, "do not register the best trial's model", parse=bool,
                                group=RUN, kinds=(SWEEP,))
    quiet: bool = setting(False, "only warnings, errors and the result (no per-epoch lines)",
                          parse=bool, group=RUN)


SPEC_FLAGS = tuple(name for name, meta in declared(SweepSpec) if meta.flag != "")
# the train section's settings a flag can give (the spec's own flags keep their names)
TRAIN_FLAGS = tuple(sorted(train_keys() - set(SPEC_FLAGS)))


def add_parser(verbs) -> None:
    sweep = verbs.add_parser("sweep", help="a Ray Tune + Optuna sweep tracked in MLflow",
                             description="A sweep over an experiment spec; flags override "
                                         "the spec's settings.")
    arguments.add_settings(sweep, SweepRun)
    arguments.add_settings(sweep, SweepSpec, default_from=SPEC)
    for dimension in search_space.DIMENSIONS:  # a searched choice can be narrowed
        if dimension.kind == search_space.CHOICE:
            meta = setting_of(TrainConfig, dimension.name)
            arguments.group_of(sweep, "search").add_argument(
                meta.flag_of(dimension.name), dest=dimension.name, action="append",
                type=meta.parse, choices=meta.choices,
                metavar=meta.metavar or ("N" if meta.parse is int else None),
                help=f"search only this value (repeatable) of: {meta.help}")
    arguments.add_settings(sweep, TrainConfig, TRAIN_FLAGS, default_from=SPEC)
    add_tracking(sweep)
    arguments.add_json(sweep)


def with_flags(spec: SweepSpec, args) -> SweepSpec:
    """The spec with the flags given over it, each checked to apply to the spec's kind; every
    path absolute (trials run in folders of their own)."""
    refuse_foreign(spec, args)
    given = arguments.given(args, SPEC_FLAGS + ("tracking_uri", "experiment"))
    space = {name: list(dict.fromkeys(values))
             for name, values in arguments.given(args, search_space.NAMES).items()}
    train = dict(spec.train, **arguments.given(args, TRAIN_FLAGS))
    if train.get("image_size") is not None:
        train["image_size"] = parse_image_size(train["image_size"])
    spec = dataclasses.replace(spec, **given, train=absolute_paths(train),
                               space=dict(spec.space, **space))
    if spec.data_root is not None:
        spec = dataclasses.replace(spec, data_root=Path(spec.data_root).expanduser().absolute())
        if getattr(args, "config", None) is None:  # the embedded default on the user's data:
            spec = dataclasses.replace(spec, run_label=spec.data_root.name,  # not the smoke
                                       experiment=given.get("experiment"))  # test's names
    if given.get("experiment"):
        spec = dataclasses.replace(spec, run_label=given["experiment"])
    return spec


def refuse_foreign(spec: SweepSpec, args) -> None:
    """A flag that the spec's kind would ignore is one line and exit 2."""
    foreign = [_flag(SweepRun, n) for n, meta in declared(SweepRun)
               if getattr(args, n, None) and not _applies(meta, spec)]
    resumed = getattr(args, "resume", False)
    foreign += [_flag(SweepSpec, n) for n in arguments.given(args, SPEC_FLAGS)
                if not _applies(setting_of(SweepSpec, n), spec)]
    if spec.kind != SWEEP:
        foreign += [_flag(TrainConfig, n) for n in arguments.given(args, search_space.NAMES)]
        foreign += [_flag(TrainConfig, n) for n in arguments.given(args, TRAIN_FLAGS)
                    if n not in stage_settings(spec.stage_config)]
    if resumed and spec.kind == SWEEP:
        foreign += [_flag(SweepSpec, n) for n in ("num_samples", "max_concurrent", "seed")
                    if n in arguments.given(args, SPEC_FLAGS)]
    if foreign:
        flags = list(dict.fromkeys(foreign))
        one = len(flags) == 1
        what = {EVALUATION: "an evaluation spec (one checkpoint evaluated)",
                COMPRESSION: "a compression spec (variants of one checkpoint)"}.get(
            spec.kind, "a resumed sweep, which keeps the settings it started with")
        raise UserError(f"{' '.join(flags)} {'does' if one else 'do'} not apply to {what}; "
                        f"leave {'it' if one else 'them'} out")


def _applies(meta, spec: SweepSpec) -> bool:
    return meta.kinds is None or spec.kind in meta.kinds


def _flag(cls, name: str) -> str:
    return setting_of(cls, name).flag_of(name) or name


def absolute_paths(train: dict) -> dict:
    """The train section's path settings, relative to the working directory, made absolute."""
    train = dict(train)
    if train.get("weights") not in (None, "imagenet", "none"):
        train["weights"] = str(Path(train["weights"]).expanduser().absolute())
    for name in ("cache_dir", "val_root"):
        if train.get(name) is not None:
            train[name] = str(Path(train[name]).expanduser().absolute())
    return train


def run(args) -> None:
    from .spec import load_spec

    if getattr(args, "quiet", False):
        quiet()
    spec = with_flags(load_spec(getattr(args, "config", None)), args)
    if spec.kind == EVALUATION:
        return run_evaluation(spec, args)
    if spec.kind == COMPRESSION:
        return run_compression_study(spec, args)
    from .registering import registration_line
    from .sweep import format_table, run_sweep, unlogged_message

    try:
        result = run_sweep(spec, restore=getattr(args, "resume", False),
                           ray_address=getattr(args, "ray_address", None),
                           storage=getattr(args, "storage", None),
                           name=getattr(args, "name", None), register=registered_name(spec, args))
    finally:
        from . import ray_cluster

        ray_cluster.shutdown()
    summary = result.to_dict()
    lines = ["", *format_table(result), ""]
    best = result.best
    if best is not None:
        recalls = "  ".join(f"R@{n} {best.recalls[n]:.4f}" for n in sorted(best.recalls))
        lines.append(f"best: {best.label}  {recalls}  (trial {best.trial_id})")
    registered = registration_line(result.registration)
    if registered:
        lines.append(registered)
    lines.append(f"wall time {result.wall_seconds:.0f} s; trials trained for "
                 f"{summary['trials_training_seconds']:.0f} s in all, "
                 f"{summary['per_trial_overhead_seconds']:.0f} s overhead per trial")
    if result.interrupted:
        config = getattr(args, "config", None)
        lines.append(f"interrupted: resume with `python -m orchestrator sweep --resume --name "
                     f"{result.name} --storage {Path(result.experiment_path).parent}"
                     f"{' --config ' + str(config) if config else ''}`")
    lines.append(f"open the runs: {summary['mlflow_ui']}")
    emit(args, summary, lines)
    if result.interrupted:
        if result.unlogged:
            log.warning(unlogged_message(result.tracking_uri, result.unlogged))
        raise KeyboardInterrupt  # exit status 130, as for any interrupted command
    check_outcome(result)


def registered_name(spec: SweepSpec, args) -> str | None:
    """The registered model of the sweep's best trial: --register NAME, by default the
    experiment's name; None with --no-register."""
    if getattr(args, "no_register", False):
        if getattr(args, "register", None):
            raise UserError("--register and --no-register contradict each other; pass one")
        return None
    from vpr_tracking.registry import NAME

    given = getattr(args, "register", None)
    if given is None and not NAME.fullmatch(spec.experiment_name):
        raise UserError(f"the experiment name {spec.experiment_name!r} cannot name a "
                        f"registered model; pass --register NAME or --no-register")
    from vpr_tracking.registry import check_name

    return check_name(given or spec.experiment_name)


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


def run_compression_study(spec: SweepSpec, args) -> None:
    """A compression spec: its variants as Tune trials, one MLflow study."""
    from vpr_core.compression.measure import Figures, figures_table
    from vpr_tracking.uri import ui_command

    from . import ray_cluster
    from .compress_sweep import run_compress_study

    try:
        results, failed, parent, uri = run_compress_study(
            spec, storage=getattr(args, "storage", None), name=getattr(args, "name", None),
            ray_address=getattr(args, "ray_address", None))
    finally:
        ray_cluster.shutdown()
    figures = [results[0]["original"]] + [r["variant"] for r in results]
    lines = figures_table([Figures.from_dict(f) for f in figures])
    lines += [f"failed: {reason}" for reason in failed]
    lines.append(f"logged as MLflow study run {parent}; open: {ui_command(uri)}")
    emit(args, {"study_parent_run_id": parent, "variants": results, "failed": failed}, lines)


def run_evaluation(spec: SweepSpec, args) -> None:
    """An evaluation spec: its checkpoint evaluated as `eval` does it, logged as one MLflow
    run (the spec's `train` section gives the runtime settings)."""
    from vpr_core.config import EvalConfig
    from vpr_tracking.uri import check_tracking_uri

    from .evaluate import evaluate_and_track
    from .spec import EVALUATE_KEYS

    if spec.data_root is None:
        raise UserError("an evaluation spec needs data.root (or --data-root)")
    uri = check_tracking_uri(spec.tracking_uri)
    section = {EVALUATE_KEYS[key]: value for key, value in spec.evaluate.items()}
    config = EvalConfig(data_root=spec.data_root, dataset=spec.dataset, **spec.train, **section)
    payload, lines = evaluate_and_track(config, uri, spec.experiment_name,
                                        tags={Tag.SPEC: spec.name})
    emit(args, payload, [f"{spec.name}: {payload['checkpoint']}", *lines])
