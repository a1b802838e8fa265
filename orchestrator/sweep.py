"""The sweep: Ray Tune + OptunaSearch (seeded TPE) + ASHA over arch x K x margin x lr.

The driver validates the spec and the dataset, starts (or joins) Ray, creates the MLflow parent
run and the shared mining service, then lets Tune run the trials; a callback keeps one MLflow
child run per trial. The final table is read back from MLflow, so a resumed sweep reports the
same runs it continued.
"""
from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from vpr_core.datasets import open_split
from vpr_core.errors import UserError
from vpr_core.synthetic import SynthConfig, write_synthetic

from .spec import SweepSpec
from vpr_core.tracking_uri import check_tracking_uri

from .tracking import FINISHED, KILLED, Tracker, ui_command

SERVICE_GPU_SHARE = 0.1  # of one GPU, for the mining service's torch index
TRIAL_GPU_SHARE = 0.45  # two trials and the service fill one GPU


@dataclass
class TrialRow:
    trial_id: str
    arch: str
    num_clusters: int
    margin: float
    lr: float
    recalls: dict  # best epoch's Recall@N (by the sweep's metric)
    epochs: int
    status: str  # MLflow status
    reason: str
    seconds: float
    training_seconds: float
    run_id: str

    def to_dict(self) -> dict:
        return {"trial_id": self.trial_id, "arch": self.arch, "num_clusters": self.num_clusters,
                "margin": self.margin, "lr": self.lr, "epochs": self.epochs,
                **{f"recall@{n}": r for n, r in self.recalls.items()}, "status": self.status,
                "reason": self.reason, "seconds": round(self.seconds, 1),
                "training_seconds": round(self.training_seconds, 1), "mlflow_run_id": self.run_id}


@dataclass
class SweepResult:
    name: str
    experiment_path: str
    tracking_uri: str
    experiment: str
    parent_run_id: str
    metric: str
    rows: list = field(default_factory=list)
    wall_seconds: float = 0.0
    concurrency: int = 1
    interrupted: bool = False

    @property
    def best(self) -> TrialRow | None:
        done = [r for r in self.rows if r.recalls]
        n = int(self.metric.split("@")[1])
        return max(done, key=lambda r: r.recalls.get(n, -1.0), default=None)

    def to_dict(self) -> dict:
        best = self.best
        trial_seconds = sum(r.seconds for r in self.rows)
        training = sum(r.training_seconds for r in self.rows)
        return {"name": self.name, "experiment_path": self.experiment_path,
                "tracking_uri": self.tracking_uri, "experiment": self.experiment,
                "parent_run_id": self.parent_run_id, "metric": self.metric,
                "interrupted": self.interrupted, "wall_seconds": round(self.wall_seconds, 1),
                "concurrency": self.concurrency,
                "trials_seconds": round(trial_seconds, 1),
                "trials_training_seconds": round(training, 1),
                "per_trial_overhead_seconds": round((trial_seconds - training)
                                                    / max(1, len(self.rows)), 1),
                "best": best.to_dict() if best else None,
                "trials": [r.to_dict() for r in self.rows],
                "mlflow_ui": ui_command(self.tracking_uri)}


def prepare_data(spec: SweepSpec) -> Path:
    """The dataset root: the spec's, or the synthetic dataset (written on first use)."""
    if spec.data_root is not None:
        return Path(spec.data_root).expanduser().absolute()
    root = Path("synthetic").absolute()
    if not (root / "datasets").is_dir():
        settings = dict(spec.synthetic)
        from vpr_core.config import parse_image_size

        if "image_size" in settings:
            settings["image_size"] = parse_image_size(settings["image_size"])
        print(f"writing the synthetic dataset to {root} (first use)", flush=True)
        write_synthetic(SynthConfig(out=root, **settings))
    return root


def plan_resources(spec: SweepSpec, resources: dict) -> tuple[dict, int, float]:
    """(resources per trial, concurrent trials, GPU share of the mining service)."""
    cpus, gpus = float(resources.get("CPU", 1)), float(resources.get("GPU", 0))
    per_trial_gpu = spec.gpus_per_trial
    if per_trial_gpu == "auto":
        per_trial_gpu = TRIAL_GPU_SHARE if gpus > 0 else 0.0
    per_trial_gpu = float(per_trial_gpu)
    if per_trial_gpu > 0 and gpus == 0:
        raise UserError(f"resources.gpus_per_trial is {per_trial_gpu} but Ray sees no GPU; "
                        f"set it to 0 or auto")
    service_gpu = SERVICE_GPU_SHARE if gpus > 0 else 0.0
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


def search_space(spec: SweepSpec) -> dict:
    from ray import tune

    space = spec.space
    return {"arch": tune.choice(space.archs), "num_clusters": tune.choice(space.num_clusters),
            "margin": _log_or_fixed(tune, space.margin), "lr": _log_or_fixed(tune, space.lr)}


def _log_or_fixed(tune, bounds):
    low, high = bounds
    return low if low == high else tune.loguniform(low, high)


def first_points(spec: SweepSpec) -> list[dict]:
    """The spec's `start_with`, else one trial per architecture at the reference's settings
    (clamped into the space), so every architecture is tried however few samples TPE gets."""
    space = spec.space
    if spec.start_with:
        points = [dict(point) for point in spec.start_with]
    else:
        clusters = sorted(space.num_clusters)[len(space.num_clusters) // 2]
        margin = min(max(0.1, space.margin[0]), space.margin[1])
        lr = min(max(1e-4, space.lr[0]), space.lr[1])
        points = [{"arch": arch, "num_clusters": clusters, "margin": margin, "lr": lr}
                  for arch in space.archs]
    # a range with low == high is a constant, not a searched parameter
    fixed = {name for name in ("margin", "lr")
             if getattr(space, name)[0] == getattr(space, name)[1]}
    return [{k: v for k, v in point.items() if k not in fixed} for point in points]


def default_name(spec: SweepSpec) -> str:
    return f"{spec.name}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"


def latest_name(storage, spec: SweepSpec) -> str:
    if str(storage).startswith(("s3://", "gs://")):
        raise UserError(f"--resume without --name cannot look for the latest sweep in "
                        f"{storage}; pass --name of the sweep to resume")
    storage = Path(storage)
    found = sorted((p for p in storage.glob(f"{spec.name}-*") if p.is_dir()),
                   key=lambda p: p.stat().st_mtime)
    if not found:
        raise UserError(f"no sweep named {spec.name}-* to resume under {storage}; pass --name "
                        f"and --storage of the interrupted sweep")
    return found[-1].name


def run_sweep(spec: SweepSpec, *, resume: bool = False, ray_address: str | None = None,
              storage: str | None = None, name: str | None = None, echo: bool = True,
              num_cpus: int | None = None, callbacks: list | None = None) -> SweepResult:
    """Run (or resume) the sweep described by `spec`; returns the trials as MLflow holds them.

    Everything a user can get wrong is checked before anything is written: the spec, the
    tracking URI, the Ray address, then the dataset. `callbacks` are extra Tune callbacks.
    """
    from . import ray_cluster

    spec.validate()
    started = time.perf_counter()
    uri = check_tracking_uri(spec.tracking_uri)
    if ray_address:
        ray_cluster.check_reachable(ray_address)
    experiment = spec.experiment or f"netvlad-{spec.name}"
    storage_path = Path(storage or "ray_results").expanduser().absolute() \
        if not str(storage or "").startswith(("s3://", "gs://")) else storage
    if resume:
        name = name or latest_name(storage_path, spec)
    name = name or default_name(spec)
    data_root = prepare_data(spec)
    splits = [open_split(data_root, name, spec.dataset)  # a bad dataset fails here, before Ray
              for name in (spec.train.get("train_split", "train"),
                           spec.train.get("val_split", "val"))]
    image_size = spec.train.get("image_size") or splits[0].native_size
    dataset = splits[0].dataset
    cache_dir = Path(spec.train.get("cache_dir", "cache")).absolute()

    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    from .mining_service import ReleaseOnTrialEnd, start_service
    from .mlflow_callback import MlflowTrialLogger
    from .trainer import train_trial

    experiment_path = f"{storage_path}/{name}"
    if resume and not tune.Tuner.can_restore(experiment_path):
        raise UserError(f"nothing to resume at {experiment_path}; check --name and --storage")
    resources = ray_cluster.connect(ray_address, num_cpus=num_cpus)
    per_trial, concurrency, service_gpu = plan_resources(spec, resources)
    tracker = Tracker.connect(uri, experiment)
    fixed = _fixed_params(spec, data_root, dataset, image_size, per_trial["gpu"] > 0)
    parent = _parent_run(tracker, spec, name, fixed, resume)
    # the driver owns the service: keep the handle, or Ray ends the actor
    service = start_service(miner_budget_bytes(spec), num_gpus=service_gpu, name=f"miner-{name}")
    trainable = tune.with_resources(
        tune.with_parameters(train_trial, spec=spec, data_root=str(data_root),
                             cache_dir=str(cache_dir), service=f"miner-{name}"), per_trial)
    if echo:
        print(f"sweep {name}: {spec.num_samples} trials, {concurrency} at a time, "
              f"{per_trial['cpu']:g} CPU + {per_trial['gpu']:g} GPU each; "
              f"MLflow: {ui_command(uri)}", flush=True)
    interrupted = False
    try:
        if resume:
            tuner = tune.Tuner.restore(experiment_path, trainable=trainable,
                                       resume_unfinished=True, resume_errored=False,
                                       param_space=search_space(spec))
        else:
            callback = MlflowTrialLogger(uri, experiment, parent, name, fixed, spec.epochs, echo)
            tuner = tune.Tuner(
                trainable, param_space=search_space(spec),
                tune_config=tune.TuneConfig(
                    metric=spec.metric, mode="max", num_samples=spec.num_samples,
                    max_concurrent_trials=concurrency,
                    search_alg=OptunaSearch(metric=spec.metric, mode="max", seed=spec.seed,
                                            points_to_evaluate=first_points(spec)),
                    scheduler=ASHAScheduler(max_t=spec.epochs, grace_period=spec.grace_period,
                                            reduction_factor=spec.reduction_factor)),
                run_config=tune.RunConfig(
                    name=name, storage_path=str(storage_path),
                    callbacks=[callback, ReleaseOnTrialEnd(f"miner-{name}"),
                               *(callbacks or [])],
                    failure_config=tune.FailureConfig(max_failures=spec.max_failures),
                    # a trial resumes from its latest epoch; the one before is kept too,
                    # because Tune deletes an old checkpoint before its (throttled) state
                    # file records the new one: a driver killed in between would come back
                    # to a checkpoint that no longer exists (a VGG16 checkpoint with its
                    # optimiser state is ~120 MB)
                    checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
                    verbose=0))
        tuner.fit()
        interrupted = _unfinished(experiment_path)
        _log_service_stats(tracker, parent, service)
        del service
    except KeyboardInterrupt:
        interrupted = True
    finally:
        result = _finish(tracker, parent, spec, name, experiment_path, uri, experiment,
                         interrupted, time.perf_counter() - started, concurrency)
    return result


def _log_service_stats(tracker: Tracker, parent: str, service) -> None:
    import ray

    try:
        stats = ray.get(service.stats.remote(), timeout=30)
    except (ray.exceptions.RayError, TimeoutError) as error:  # it died at the very end
        print(f"warning: the mining service's statistics are lost ({type(error).__name__}: "
              f"{str(error).splitlines()[0][:160]}); the sweep's results are not",
              file=sys.stderr, flush=True)
        return
    tracker.log_metrics(parent, {"miner_requests": stats["requests"],
                                 "miner_trials_served": stats["owners_served"]}, 0)


def _fixed_params(spec: SweepSpec, data_root: Path, dataset: str, size, on_gpu: bool) -> dict:
    train = spec.train
    precision = train.get("precision") or ("bf16" if on_gpu else "fp32")
    return {"dataset": dataset, "data_root": str(data_root), "precision": precision,
            "weights": train.get("weights", "imagenet"), "seed": train.get("seed", 123),
            "image_size": "mixed" if size is None else f"{size[0]}x{size[1]}",
            "epochs": spec.epochs, "batch_size": train.get("batch_size", 4),
            "optim": train.get("optim", "SGD")}


def _parent_run(tracker: Tracker, spec: SweepSpec, name: str, fixed: dict, resume: bool) -> str:
    found = tracker.find_run(sweep=name, kind="sweep") if resume else None
    if found is not None:
        tracker.client.update_run(found, status="RUNNING")
        return found
    params = {"spec": spec.name, "num_samples": spec.num_samples, "metric": spec.metric,
              "search_seed": spec.seed, "archs": ",".join(spec.space.archs),
              "num_clusters_choices": ",".join(map(str, spec.space.num_clusters)),
              "margin_range": f"{spec.space.margin[0]:g}-{spec.space.margin[1]:g}",
              "lr_range": f"{spec.space.lr[0]:g}-{spec.space.lr[1]:g}",
              **fixed}
    return tracker.create_run(name, params, {"kind": "sweep", "sweep": name})


def _unfinished(experiment_path: str) -> bool:
    """True when some trial of the experiment is neither terminated nor errored, or when
    Tune's state cannot be read (then only a resume can tell what is left to do)."""
    from ray.tune import ExperimentAnalysis

    try:
        trials = ExperimentAnalysis(experiment_path).trials
    except Exception as error:  # noqa: BLE001 - whatever stops Tune reading its own state
        print(f"warning: cannot read the sweep's state at {experiment_path} "
              f"({type(error).__name__}: {str(error).splitlines()[0][:160]}); treating the "
              f"sweep as interrupted", file=sys.stderr, flush=True)
        return True
    return any(t.status not in ("TERMINATED", "ERROR") for t in trials)


def _finish(tracker: Tracker, parent: str, spec: SweepSpec, name: str, experiment_path: str,
            uri: str, experiment: str, interrupted: bool, wall: float,
            concurrency: int) -> SweepResult:
    rows = trial_rows(tracker, parent, spec.metric)
    result = SweepResult(name, experiment_path, uri, experiment, parent, spec.metric, rows,
                         wall, concurrency, interrupted)
    for row in rows:  # nothing is left RUNNING, whatever stopped the sweep
        if row.status == "RUNNING":
            tracker.end(row.run_id, KILLED)
            row.status = KILLED
    best = result.best
    if best is not None:
        tracker.log_metrics(parent, {f"best_recall@{n}": r for n, r in best.recalls.items()}, 0)
        tracker.set_tags(parent, {"best_trial": best.trial_id, "best_run_id": best.run_id,
                                  "best_arch": best.arch})
    tracker.log_metrics(parent, {"wall_seconds": wall, "trials": len(rows)}, 0)
    _log_table(tracker, parent, result)
    tracker.end(parent, KILLED if interrupted else FINISHED)
    _log_report(tracker, parent)  # after the end, so the report shows the final status
    return result


def _log_report(tracker: Tracker, parent: str) -> None:
    """The sweep's HTML report (dashboards), logged to the parent run under `report/`."""
    import sys
    import tempfile

    from dashboards.report import build_report

    try:
        with tempfile.TemporaryDirectory() as scratch:
            index = build_report(tracker.uri, tracker.experiment_name, Path(scratch) / "report",
                                 parent_run_id=parent)
            tracker.client.log_artifacts(parent, str(index.parent), "report")
    except Exception as error:  # a report problem must not cost the sweep its results
        print(f"warning: the sweep report could not be made ({type(error).__name__}: "
              f"{str(error).splitlines()[0][:200]})", file=sys.stderr, flush=True)


def _log_table(tracker: Tracker, parent: str, result: SweepResult) -> None:
    import json
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "trials.json"
        path.write_text(json.dumps(result.to_dict(), indent=2))
        tracker.log_file(parent, path, "sweep")


def trial_rows(tracker: Tracker, parent: str, metric: str) -> list[TrialRow]:
    """The sweep's trials as MLflow holds them: params, best epoch by `metric`, status."""
    from dashboards.runs import RunStore, trials_of

    store = RunStore(tracker.uri)
    rows = []
    for run in trials_of(store, store.run(parent, with_history=False)):
        end_ms = run.end_ms or int(time.time() * 1000)
        rows.append(TrialRow(
            trial_id=run.tags.get("trial_id", ""), arch=run.arch,
            num_clusters=run.num_clusters or 0,
            margin=_or_nan(run.float_param("margin")), lr=_or_nan(run.float_param("lr")),
            recalls=run.best_recalls(metric), epochs=len(run.history), status=run.status,
            reason=run.tags.get("stop_reason", ""), seconds=(end_ms - run.start_ms) / 1000.0,
            training_seconds=sum(h.get("epoch_seconds", 0.0) for h in run.history),
            run_id=run.run_id))
    return rows


def _or_nan(value: float | None) -> float:
    return math.nan if value is None else value


def format_table(result: SweepResult) -> list[str]:
    header = (f"{'trial':<18} {'arch':<8} {'K':>3} {'margin':>7} {'lr':>8} {'R@1':>6} {'R@5':>6} "
              f"{'R@10':>6} {'R@20':>6} {'ep':>3}  status")
    lines = [header, "-" * len(header)]
    for row in result.rows:
        recalls = " ".join(f"{row.recalls[n]:6.3f}" if n in row.recalls else f"{'-':>6}"
                           for n in (1, 5, 10, 20))
        status = row.reason or row.status.lower()
        status = status if len(status) <= 70 else status[:67] + "..."
        lines.append(f"{row.trial_id:<18} {row.arch:<8} {row.num_clusters:>3} {row.margin:7.3f} "
                     f"{row.lr:8.2e} {recalls} {row.epochs:>3}  {status}")
    return lines
