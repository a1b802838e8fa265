"""The sweep: Ray Tune + OptunaSearch (seeded TPE) + ASHA over the search space.

`run_sweep` reads top to bottom: check everything a user can get wrong (`prepare`), start or
join Ray (`plan_resources`), open the MLflow parent run, let Tune run the trials beside the
shared mining service (`fit`), then read the trials back from MLflow and close the parent
(`finish`), so a resumed sweep reports the same runs it continued.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from vpr_core.config import TrainConfig, parse_image_size
from vpr_core.data import open_split
from vpr_core.data.synthetic import SynthConfig, write_synthetic
from vpr_core.errors import CommandFailed, UserError, first_line
from vpr_core.log import log
from vpr_core.settings import default_of
from vpr_tracking import search_points, search_space
from vpr_tracking.datasets import training_inputs
from vpr_tracking.names import FINISHED, KILLED, RECALL_NS, RUNNING, Kind, Tag, recall_name
from vpr_tracking.store import StoreUnreachable
from vpr_tracking.trials import TrialRow, best_row, trial_rows
from vpr_tracking.uri import check_tracking_uri, ui_command

from .spec import SweepSpec
from .sweep_params import FixedParams, fixed_params
from .tracking import Tracker

SERVICE_GPU_SHARE = 0.1  # of one GPU, for the mining service's torch index
TRIAL_GPU_SHARE = 0.45  # two trials and the service fill one GPU


@dataclass
class SweepPlan:
    """Everything checked before Ray starts: the spec, names, paths and the dataset."""

    spec: SweepSpec
    name: str
    uri: str
    experiment: str
    storage: str | Path
    data_root: Path
    dataset: str
    image_size: tuple | None  # None: the images keep their own (mixed) sizes
    cache_dir: Path
    restore: bool  # continue the interrupted sweep `name`
    inputs: list = field(default_factory=list)  # (DataDescription, context) of every trial

    @property
    def experiment_path(self) -> str:
        return f"{self.storage}/{self.name}"

    @property
    def service_name(self) -> str:
        """The mining service's name; "" when no trial mines triplets (place losses mine in
        their batches)."""
        return f"miner-{self.name}" if search_space.uses_triplets(self.spec.space) else ""


@dataclass
class SweepResult:
    name: str
    experiment_path: str
    tracking_uri: str
    experiment: str
    parent_run_id: str
    metric: str
    rows: list = field(default_factory=list)  # TrialRow, in start order
    wall_seconds: float = 0.0
    concurrency: int = 1
    interrupted: bool = False
    unlogged: list = field(default_factory=list)  # what MLflow did not take, per trial
    registration: dict | None = None  # the best trial's model version (`registering.register_best`)

    @property
    def best(self) -> TrialRow | None:
        return best_row(self.rows, self.metric)

    def to_dict(self) -> dict:
        best = self.best
        trial_seconds = sum(r.seconds for r in self.rows)
        training = sum(r.training_seconds for r in self.rows)
        return {"name": self.name, "experiment_path": self.experiment_path,
                "tracking_uri": self.tracking_uri, "experiment": self.experiment,
                "parent_run_id": self.parent_run_id, "metric": self.metric,
                "interrupted": self.interrupted, "unlogged": self.unlogged,
                "wall_seconds": round(self.wall_seconds, 1),
                "concurrency": self.concurrency,
                "trials_seconds": round(trial_seconds, 1),
                "trials_training_seconds": round(training, 1),
                "per_trial_overhead_seconds": round((trial_seconds - training)
                                                    / max(1, len(self.rows)), 1),
                "best": best.to_dict() if best else None,
                "registration": self.registration,
                "trials": [r.to_dict() for r in self.rows],
                "mlflow_ui": ui_command(self.tracking_uri)}


def run_sweep(spec: SweepSpec, *, restore: bool = False, ray_address: str | None = None,
              storage: str | None = None, name: str | None = None,
              num_cpus: int | None = None, callbacks: list | None = None,
              register: str | None = None) -> SweepResult:
    """Run the sweep described by `spec`, or with `restore` continue the interrupted one
    (`name`, default the latest of the spec); returns the trials as MLflow holds them.
    `callbacks` are extra Tune callbacks; `register`: the registered model the best trial's
    model becomes a version of (None: not registered)."""
    from . import ray_cluster

    started = time.perf_counter()
    plan = prepare(spec, restore, ray_address, storage, name)
    per_trial, concurrency, service_gpu = plan_resources(
        spec, ray_cluster.connect(ray_address, num_cpus=num_cpus),
        service=bool(plan.service_name))
    tracker = Tracker(plan.uri, plan.experiment)
    fixed = fixed_params(plan, on_gpu=per_trial["gpu"] > 0)
    parent = open_parent_run(tracker, plan, fixed)
    log.info(f"sweep {plan.name}: {spec.num_samples} trials, {concurrency} at a time, "
             f"{per_trial['cpu']:g} CPU + {per_trial['gpu']:g} GPU each; "
             f"MLflow: {ui_command(plan.uri)}")
    interrupted = True
    try:
        interrupted = fit(plan, tracker, parent, fixed, per_trial, concurrency, service_gpu,
                          callbacks or [])
    finally:
        result = finish(tracker, parent, plan, interrupted, concurrency,
                        time.perf_counter() - started)
    if register is not None:
        from .registering import register_best

        result.registration = register_best(tracker, result, register)
    return result


def prepare(spec: SweepSpec, restore: bool, ray_address: str | None, storage: str | None,
            name: str | None) -> SweepPlan:
    """Check everything a user can get wrong before anything is written: the spec, the
    tracking URI, the Ray address, the sweep to resume, then the dataset."""
    from . import ray_cluster

    cache_dir = Path(spec.train.get("cache_dir") or default_of(TrainConfig, "cache_dir"))
    train = dict(spec.train, cache_dir=cache_dir.absolute())
    if train.get("val_root") is not None:  # trials run in folders of their own
        train["val_root"] = Path(train["val_root"]).expanduser().absolute()
    spec = dataclasses.replace(spec, train=train)
    spec.validate()
    uri = check_tracking_uri(spec.tracking_uri)
    if ray_address:
        ray_cluster.check_reachable(ray_address)
    storage_path = storage_location(storage)
    if restore:
        name = name or latest_name(storage_path, spec)
    name = name or default_name(spec)
    data_root = prepare_data(spec)
    dataset, native_size, inputs = open_data(spec, data_root)  # a bad dataset fails here
    plan = SweepPlan(spec, name, uri, spec.experiment_name, storage_path, data_root, dataset,
                     spec.train.get("image_size") or native_size, spec.train["cache_dir"],
                     restore, inputs)
    search_points.check_images(spec.space, plan.image_size)
    if restore:
        from ray import tune

        if not tune.Tuner.can_restore(plan.experiment_path):
            raise UserError(f"nothing to resume at {plan.experiment_path}; check --name and "
                            f"--storage")
    return plan


def storage_location(storage: str | None) -> str | Path:
    """Tune's storage: a cloud URI as given, a folder made absolute (default ./ray_results)."""
    if str(storage or "").startswith(("s3://", "gs://")):
        return storage
    return Path(storage or "ray_results").expanduser().absolute()


def prepare_data(spec: SweepSpec) -> Path:
    """The dataset root: the spec's, or the synthetic dataset (written on first use)."""
    if spec.data_root is not None:
        return Path(spec.data_root).expanduser().absolute()
    root = Path("synthetic").absolute()
    if not (root / "datasets").is_dir():
        settings = dict(spec.synthetic)
        if "image_size" in settings:
            settings["image_size"] = parse_image_size(settings["image_size"])
        log.info(f"writing the synthetic dataset to {root} (first use)")
        write_synthetic(SynthConfig(out=root, **settings))
    return root


def open_data(spec: SweepSpec, data_root: Path) -> tuple[str, tuple | None, list]:
    """(dataset name, native image size, dataset inputs of the trials) of the training data,
    opened so that a bad dataset fails before Ray: the training and validation splits, or the
    places (GSV-Cities, MSLS) and the validation split of `train.val_root`."""
    def split(root, name):
        return open_split(root, spec.train.get(name, default_of(TrainConfig, name)),
                          spec.dataset)

    if not spec.place_data:
        train = split(data_root, "train_split")
        val = split(data_root, "val_split")
        return train.dataset, train.native_size, training_inputs(train, val)
    from vpr_core.data.datasets import open_places

    places = open_places(data_root, min_images_per_place=1)
    val = split(spec.train["val_root"], "val_split")
    inputs = training_inputs(places, val, spec.train.get("train_split",
                                                         default_of(TrainConfig, "train_split")))
    return places.dataset, places.native_size, inputs


def plan_resources(spec: SweepSpec, resources: dict, service: bool = True
                   ) -> tuple[dict, int, float]:
    """(resources per trial, concurrent trials, GPU share of the mining service); `service`:
    whether a mining service shares the GPUs (a compression study has none)."""
    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    per_trial_gpu = spec.gpus_per_trial
    if per_trial_gpu == "auto":
        per_trial_gpu = TRIAL_GPU_SHARE if gpus > 0 else 0.0
    per_trial_gpu = float(per_trial_gpu)
    if per_trial_gpu > 0 and gpus == 0:
        raise UserError(f"resources.gpus_per_trial is {per_trial_gpu} but Ray sees no GPU; "
                        f"set it to 0 or auto")
    service_gpu = SERVICE_GPU_SHARE if gpus > 0 and service else 0.0
    by_cpu = math.floor(cpus / spec.cpus_per_trial)
    by_gpu = math.floor((gpus - service_gpu) / per_trial_gpu + 1e-9) if per_trial_gpu else by_cpu
    fits = min(by_cpu, by_gpu)
    if fits < 1:
        raise UserError(f"one trial needs {spec.cpus_per_trial} CPU and {per_trial_gpu} GPU but "
                        f"the Ray cluster has {cpus:g} CPU and {gpus:g} GPU; lower "
                        f"--cpus-per-trial or --gpus-per-trial")
    concurrency = fits if spec.max_concurrent == "auto" else min(fits, int(spec.max_concurrent))
    return {"cpu": spec.cpus_per_trial, "gpu": per_trial_gpu}, max(1, concurrency), service_gpu


def miner_budget_bytes(spec: SweepSpec) -> int:
    if spec.miner_memory_gb != "auto":
        return int(float(spec.miner_memory_gb) * 2**30)
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(0.4 * total)



def first_points(spec: SweepSpec) -> list[dict]:
    return search_points.first_points(spec.space, spec.start_with)


def default_name(spec: SweepSpec) -> str:
    """<experiment, data folder or spec>-<timestamp> (see `SweepSpec.label`)."""
    return f"{spec.label}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def latest_name(storage, spec: SweepSpec) -> str:
    if str(storage).startswith(("s3://", "gs://")):
        raise UserError(f"--resume without --name cannot look for the latest sweep in "
                        f"{storage}; pass --name of the sweep to resume")
    storage = Path(storage)
    found = sorted((p for p in storage.glob(f"{spec.label}-*") if p.is_dir()),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(f"no sweep named {spec.label}-* to resume under {storage}; pass --name "
                        f"and --storage of the interrupted sweep")
    return found[-1].name


def open_parent_run(tracker: Tracker, plan: SweepPlan, fixed: FixedParams) -> str:
    """The sweep's parent run: a new one, or for a resume the one it started."""
    found = tracker.find_run(**{Tag.SWEEP: plan.name, Tag.KIND: Kind.SWEEP}) \
        if plan.restore else None
    if found is not None:
        tracker.store.start(found)
        return found
    spec = plan.spec
    params = {"spec": spec.name, "num_samples": spec.num_samples, "metric": spec.metric,
              "search_seed": spec.seed, **search_space.space_params(spec.space),
              **fixed.of_sweep()}
    parent = tracker.create_run(plan.name, params, {Tag.KIND: Kind.SWEEP, Tag.SWEEP: plan.name})
    tracker.store.log_datasets(parent, plan.inputs)  # what every trial trains and validates on
    return parent


def fit(plan: SweepPlan, tracker: Tracker, parent: str, fixed: FixedParams, per_trial: dict,
        concurrency: int, service_gpu: float, callbacks: list) -> bool:
    """Tune runs the trials beside the mining service (when some trial trains triplets); True
    when the sweep was interrupted."""
    from .mining_service import start_service

    # the driver owns the service: keep the handle, or Ray ends the actor
    service = start_service(miner_budget_bytes(plan.spec), num_gpus=service_gpu,
                            name=plan.service_name) if plan.service_name else None
    tuner = _tuner(plan, tracker, parent, fixed, per_trial, concurrency, callbacks)
    try:
        tuner.fit()
    except KeyboardInterrupt:
        return True
    if service is not None:
        _log_service_stats(tracker, parent, service)
    return _unfinished(plan.experiment_path)


def _tuner(plan: SweepPlan, tracker: Tracker, parent: str, fixed: FixedParams,
           per_trial: dict, concurrency: int, callbacks: list):
    """A new Tuner for the plan, or the interrupted one restored. The searcher samples the
    space (define-by-run, `SpaceSampler`), so Tune gets no `param_space`: a restored sweep
    takes its sampler back from the searcher's saved state."""
    from ray import tune

    from .trainer import train_trial

    spec = plan.spec
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, spec=spec, data_root=str(plan.data_root),
                             service=plan.service_name),
        per_trial)
    if plan.restore:
        return tune.Tuner.restore(plan.experiment_path, trainable=trainable,
                                  resume_unfinished=True, resume_errored=False)
    return tune.Tuner(trainable, tune_config=_tune_config(spec, concurrency),
                      run_config=_run_config(plan, tracker, parent, fixed, callbacks))


def _tune_config(spec: SweepSpec, concurrency: int):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from .space_sampler import SpaceSampler, optuna_points

    return tune.TuneConfig(
        metric=spec.metric, mode="max", num_samples=spec.num_samples,
        max_concurrent_trials=concurrency,
        search_alg=OptunaSearch(space=SpaceSampler(spec.space), metric=spec.metric,
                                mode="max", seed=spec.seed,
                                points_to_evaluate=optuna_points(spec.space,
                                                                 first_points(spec))),
        scheduler=ASHAScheduler(max_t=spec.epochs, grace_period=spec.grace_period,
                                reduction_factor=spec.reduction_factor))


def _run_config(plan: SweepPlan, tracker: Tracker, parent: str, fixed: FixedParams,
                callbacks: list):
    from ray import tune

    from .mining_service import ReleaseOnTrialEnd
    from .mlflow_callback import MlflowTrialLogger

    logger = MlflowTrialLogger(plan.uri, plan.experiment, parent, plan.name, fixed.shared,
                               plan.spec.epochs, point_params=fixed.by_point,
                               inputs=plan.inputs)
    release = [ReleaseOnTrialEnd(plan.service_name)] if plan.service_name else []
    return tune.RunConfig(
        name=plan.name, storage_path=str(plan.storage),
        callbacks=[logger, *release, *callbacks],
        failure_config=tune.FailureConfig(max_failures=plan.spec.max_failures),
        # a trial resumes from its latest epoch; the one before is kept too, because Tune
        # deletes an old checkpoint before its (throttled) state file records the new one: a
        # driver killed in between would come back to a checkpoint that no longer exists (a
        # VGG16 checkpoint with its optimiser state is ~120 MB)
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        verbose=0)


def _log_service_stats(tracker: Tracker, parent: str, service) -> None:
    import ray

    try:
        stats = ray.get(service.stats.remote(), timeout=30)
    except (ray.exceptions.RayError, TimeoutError) as error:  # it died at the very end
        log.warning(f"the mining service's statistics are lost ({type(error).__name__}: "
                    f"{first_line(error, 160)}); the sweep's results are not")
        return
    tracker.store.log_metrics(parent, {"miner_requests": stats["requests"],
                                       "miner_trials_served": stats["owners_served"]}, 0)
    tracker.store.set_tags(parent, {Tag.MINER_DEVICE: stats["device"]})


def _unfinished(experiment_path: str) -> bool:
    """True when some trial of the experiment is neither terminated nor errored, or when
    Tune's state cannot be read (then only a resume can tell what is left to do)."""
    from ray.tune import ExperimentAnalysis

    try:
        trials = ExperimentAnalysis(experiment_path).trials
    except Exception as error:  # noqa: BLE001 - whatever stops Tune reading its own state
        log.warning(f"cannot read the sweep's state at {experiment_path} "
                    f"({type(error).__name__}: {first_line(error, 160)}); treating "
                    f"the sweep as interrupted")
        return True
    return any(t.status not in ("TERMINATED", "ERROR") for t in trials)


def finish(tracker: Tracker, parent: str, plan: SweepPlan, interrupted: bool,
           concurrency: int, wall: float) -> SweepResult:
    """Try once more to log the trial events the store did not take, then `close_sweep`.
    `SweepResult.unlogged` names what is still not logged; when the store cannot close the
    sweep either, that is a `CommandFailed` naming both."""
    from .mlflow_callback import take_trial_logger

    logger = take_trial_logger(parent)
    unlogged = logger.flush(seconds=0) if logger is not None else []
    try:
        result = close_sweep(tracker, parent, plan, interrupted, concurrency, wall,
                             ended=logger.ended if logger is not None else {})
    except StoreUnreachable as error:
        if not unlogged:
            raise
        raise CommandFailed(f"{unlogged_message(tracker.store.uri, unlogged)}; nor is the "
                            f"sweep closed: {error}") from None
    result.unlogged = unlogged
    return result


def unlogged_message(uri: str, unlogged: list[str]) -> str:
    return (f"the MLflow store {uri} did not take every result of the sweep; not logged: "
            f"{'; '.join(unlogged)}")


def close_sweep(tracker: Tracker, parent: str, plan: SweepPlan, interrupted: bool,
                concurrency: int, wall: float, ended: dict) -> SweepResult:
    """Read the trials back, end whatever is still running, log the best trial, the table
    and the report to the parent run, and end it. `ended`: {trial id: status} of the trials
    Tune ended, whose runs are not interrupted ones even when their end was not logged."""
    store = tracker.store
    rows = trial_rows(store, store.run(parent, with_history=False), plan.spec.metric)
    result = SweepResult(plan.name, plan.experiment_path, plan.uri, plan.experiment, parent,
                         plan.spec.metric, rows, wall, concurrency, interrupted)
    for row in rows:  # nothing an interruption stopped is left RUNNING
        if row.status == RUNNING and row.trial_id not in ended:
            store.end(row.run_id, KILLED)
            row.status = KILLED
    best = result.best
    if best is not None:
        store.log_metrics(parent, {f"best_{recall_name(n)}": r for n, r in best.recalls.items()},
                          0)
        store.set_tags(parent, {Tag.BEST_TRIAL: best.trial_id, Tag.BEST_RUN_ID: best.run_id,
                                Tag.BEST_ARCH: best.arch})
    store.log_metrics(parent, {"wall_seconds": wall, "trials": len(rows)}, 0)
    _log_table(tracker, parent, result)
    store.end(parent, KILLED if interrupted else FINISHED)
    _log_report(tracker, parent)  # after the end, so the report shows the final status
    return result


def _log_report(tracker: Tracker, parent: str) -> None:
    """The sweep's HTML report (dashboards), logged to the parent run under `report/`."""
    from dashboards.report import write_report

    try:
        with tempfile.TemporaryDirectory() as scratch:
            summary = write_report(tracker.store, tracker.experiment_name,
                                   Path(scratch) / "report", parent_run_id=parent)
            tracker.store.log_folder(parent, Path(summary["index"]).parent, "report")
    except Exception as error:  # noqa: BLE001 - a report problem must not cost the results
        log.warning(f"the sweep report could not be made ({type(error).__name__}: "
                    f"{first_line(error, 200)})")


def _log_table(tracker: Tracker, parent: str, result: SweepResult) -> None:
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "trials.json"
        path.write_text(json.dumps(result.to_dict(), indent=2))
        tracker.store.log_file(parent, path, "sweep")


def format_table(result: SweepResult) -> list[str]:
    recalls = " ".join(f"{'R@' + str(n):>6}" for n in RECALL_NS)
    columns = search_space.table_dimensions([row.values for row in result.rows])
    header = f"{'trial':<18} {search_space.table_header(columns)} {recalls} {'ep':>3}  status"
    lines = [header, "-" * len(header)]
    for row in result.rows:
        cells = " ".join(f"{row.recalls[n]:6.3f}" if n in row.recalls else f"{'-':>6}"
                         for n in RECALL_NS)
        status = row.reason or row.status.lower()
        status = status if len(status) <= 70 else status[:67] + "..."
        lines.append(f"{row.trial_id:<18} {search_space.table_cells(row.values, columns)} {cells} "
                     f"{row.epochs:>3}  {status}")
    return lines
