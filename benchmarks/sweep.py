"""Ray Tune + MLflow overhead per trial, as a share of the trial's compute.

In one process, on a small synthetic dataset: first the compute alone (each trial's
configuration trained directly with `TrainingRun` and its in-process miner, construction +
all epochs), then the same trials as a real sweep (`run_sweep`: local Ray, Optuna, ASHA,
MLflow sqlite, the mining service), one trial at a time. The search space holds one point, so
both sides do identical work; the difference is what the orchestration costs.

The sweep's wall time is split with the MLflow run times. Tune opens a trial's run
(`on_trial_start`) once the trial's worker process is up, so: start-up (Ray, driver, service,
the first worker's start and imports) up to the first trial's run; each trial's run (training,
Tune reports and checkpoints, MLflow logging); the gaps between trials (the next worker's start
and imports, Optuna, Tune bookkeeping); and the finish (runs read back, the sweep's report).
Stdout holds only JSON lines: what Tune prints goes to stderr.

    python -m benchmarks sweep --trials 3 --epochs 1 --arch alexnet
"""
from __future__ import annotations

import os

# before anything imports ray: no token file, no usage report
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

import argparse
import contextlib
import dataclasses
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import emit, machine, ratio
from vpr_core.config import parse_image_size
from vpr_core.data.synthetic import SynthConfig, write_synthetic

CPUS_PER_TRIAL = 1  # the sweep gives each trial one CPU; the direct runs get as many threads

FIELD_MEANINGS = {
    "direct_trial_seconds_mean": "one trial trained in this process with TrainingRun "
                                 "(construction + all epochs), no Ray, no MLflow",
    "sweep_wall_seconds": "run_sweep() from call to return (Ray start to sweep report)",
    "per_trial_overhead_seconds": "(sweep_wall - sum of direct trial seconds) / trials",
    "overhead_share_of_trial_compute": "per_trial_overhead_seconds / direct_trial_seconds_mean",
    "startup_seconds": "run_sweep() call to the first trial's MLflow run start (dataset "
                       "check, Ray start, MLflow parent run, mining service, Tuner, the first "
                       "trial's worker process start and imports); once per sweep",
    "startup_to_parent_run_seconds": "part of startup: call to the MLflow parent run "
                                     "(dataset check + Ray start + MLflow connect)",
    "trial_run_seconds_mean": "a trial's MLflow child run, start (its worker process is up) "
                              "to end (training, Tune reports and checkpoints, artifacts)",
    "in_trial_overhead_seconds": "trial_run_seconds_mean - direct_trial_seconds_mean",
    "between_trials_seconds_mean": "one trial's run end to the next one's start (the next "
                                   "worker process's start and imports, Optuna, Tune)",
    "finish_seconds": "last trial's run end to run_sweep() return (runs read back, HTML "
                      "report); once per sweep",
    "steady_state_overhead_per_trial_seconds": "what one more trial costs beyond its compute: "
                                               "in_trial_overhead_seconds + "
                                               "between_trials_seconds_mean",
    "steady_state_share_of_trial_compute": "steady_state_overhead_per_trial_seconds / "
                                           "direct_trial_seconds_mean",
    "sweep_reported_per_trial_overhead_seconds": "SweepResult.to_dict()'s own figure: mean of "
                                                 "(trial run seconds - its epoch seconds)",
    "sweep_epoch_seconds_mean": "a trial's epoch_seconds inside the sweep (compare "
                                "direct_epoch_seconds_mean: the same work in both)",
    "ray_shutdown_seconds": "orchestrator.ray_cluster.shutdown() after the sweep, not in "
                            "sweep_wall",
    "worker_import_seconds": "a fresh Python process importing orchestrator.trainer (what "
                             "each trial's worker loads), timed after the sweep",
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks sweep",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=3, help="trials on each side")
    parser.add_argument("--epochs", type=int, default=1, help="epochs per trial")
    parser.add_argument("--arch", default="alexnet", help="alexnet or vgg16")
    parser.add_argument("--num-clusters", type=int, default=8, help="NetVLAD K")
    parser.add_argument("--places", type=int, default=40,
                        help="synthetic places (and queries) per split")
    parser.add_argument("--image-size", default="48x64", help="HxW of the synthetic images")
    return parser.parse_args(argv)


def trial_point(args) -> dict:
    return {"arch": args.arch, "num_clusters": args.num_clusters, "margin": 0.1, "lr": 1e-4}


def make_spec(args, data_root: Path, tracking_uri: str):
    """A sweep whose space is one point: every trial trains the same configuration."""
    from orchestrator.spec import spec_from_dict

    point = trial_point(args)
    raw = {
        "name": "bench",
        "data": {"root": str(data_root)},
        "search": {"num_samples": args.trials, "seed": 0,
                   "space": {"arch": [point["arch"]], "num_clusters": [point["num_clusters"]],
                             "margin": point["margin"], "lr": point["lr"]},
                   # no rung before the last epoch: ASHA stops no trial early
                   "scheduler": {"grace_period": args.epochs, "reduction_factor": 2}},
        "train": {"epochs": args.epochs, "weights": "none", "seed": 123},
        "resources": {"cpus_per_trial": CPUS_PER_TRIAL, "gpus_per_trial": 0,
                      "max_concurrent": 1},
        "tracking": {"uri": tracking_uri, "experiment": "bench-sweep"},
    }
    return spec_from_dict(raw, "benchmarks.sweep").validate()


def write_data(args, root: Path) -> None:
    write_synthetic(SynthConfig(out=root, places=args.places, queries=args.places,
                                image_size=parse_image_size(args.image_size), seed=0))


def direct_trial(spec, point: dict, data_root: Path, cache_dir: Path, run_dir: Path) -> dict:
    """Seconds of one trial trained in this process: construction + all epochs."""
    from vpr_core.stages.train import training_run

    started = time.perf_counter()
    spec = dataclasses.replace(spec, train=dict(spec.train, cache_dir=cache_dir))
    config = spec.trial_config(point, data_root=data_root, run_dir=run_dir, workers=0)
    run = training_run(config)
    epoch_seconds = [result.seconds for result in run.epochs()]
    return {"seconds": time.perf_counter() - started, "epoch_seconds": epoch_seconds}


def direct_trials(args, spec, data_root: Path, scratch: Path) -> list[dict]:
    """All trials, one after another, with the thread count a sweep trial gets."""
    threads = torch.get_num_threads()
    torch.set_num_threads(CPUS_PER_TRIAL)
    try:
        return [direct_trial(spec, trial_point(args), data_root, scratch / "direct-cache",
                             scratch / "direct" / f"trial{i}") for i in range(args.trials)]
    finally:
        torch.set_num_threads(threads)


def run_timed_sweep(spec, scratch: Path) -> tuple:
    """(SweepResult, call start as epoch seconds, wall seconds, Ray shutdown seconds)."""
    from orchestrator import ray_cluster
    from orchestrator.sweep import run_sweep

    called = time.time()
    started = time.perf_counter()
    try:
        with contextlib.redirect_stdout(sys.stderr):  # Tune's banner is not a JSON line
            result = run_sweep(spec, storage=str(scratch / "ray_results"), name="bench",
                               num_cpus=2)
        wall = time.perf_counter() - started
    finally:
        stopping = time.perf_counter()
        ray_cluster.shutdown()
    return result, called, wall, time.perf_counter() - stopping


def worker_import_seconds() -> float | None:
    """Seconds a fresh interpreter takes to import what a trial's worker imports (None when
    the import fails: the figure is context, not worth losing the measurements for)."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", "import orchestrator.trainer"],
                          cwd=Path(__file__).resolve().parents[1])
    return time.perf_counter() - started if done.returncode == 0 else None


def timeline(result, called: float, wall: float) -> dict:
    """Start-up, trial runs, gaps and finish, from the MLflow runs' start and end times."""
    from vpr_tracking.store import store_at
    from vpr_tracking.trials import trials_of

    store = store_at(result.tracking_uri)
    parent = store.run(result.parent_run_id, with_history=False)
    runs = trials_of(store, parent)  # in the order they started, with their histories
    starts = [run.start_ms / 1000 for run in runs]
    ends = [(run.end_ms or run.start_ms) / 1000 for run in runs]
    gaps = [start - end for end, start in zip(ends, starts[1:])]
    epochs = [h.get("epoch_seconds", 0.0) for run in runs for h in run.history]
    return {"startup_seconds": starts[0] - called,
            "startup_to_parent_run_seconds": parent.start_ms / 1000 - called,
            "trial_run_seconds": [e - s for s, e in zip(starts, ends)],
            "between_trials_seconds_mean": statistics.mean(gaps) if gaps else None,
            "finish_seconds": called + wall - ends[-1],
            "sweep_epoch_seconds_mean": statistics.mean(epochs) if epochs else None,
            "trial_epochs": [len(run.history) for run in runs],
            "trial_statuses": [run.status for run in runs]}


def summary(args, direct: list[dict], result, called: float, wall: float,
            shutdown: float) -> dict:
    trials = len(direct)
    direct_total = sum(d["seconds"] for d in direct)
    direct_mean = direct_total / trials
    parts = timeline(result, called, wall)
    overhead = (wall - direct_total) / trials
    trial_run_mean = statistics.mean(parts.pop("trial_run_seconds"))
    gap = parts["between_trials_seconds_mean"]  # None with one trial: no gap to see
    steady = None if gap is None else trial_run_mean - direct_mean + gap
    epochs = [s for d in direct for s in d["epoch_seconds"]]
    record = {
        "benchmark": "sweep", "record": "summary", "arch": args.arch,
        "num_clusters": args.num_clusters, "epochs": args.epochs, "places": args.places,
        "image_size": args.image_size, "trials": trials, "sweep_trials": len(result.rows),
        "max_concurrent": result.concurrency, "cpus_per_trial": CPUS_PER_TRIAL,
        "direct_torch_threads": CPUS_PER_TRIAL,
        "sweep_wall_seconds": wall, "direct_trial_seconds_mean": direct_mean,
        "direct_epoch_seconds_mean": statistics.mean(epochs),
        "per_trial_overhead_seconds": overhead,
        "overhead_share_of_trial_compute": ratio(overhead, direct_mean),
        "trial_run_seconds_mean": trial_run_mean,
        "in_trial_overhead_seconds": trial_run_mean - direct_mean,
        "steady_state_overhead_per_trial_seconds": steady,
        "steady_state_share_of_trial_compute": None if steady is None
        else ratio(steady, direct_mean),
        **parts,
        "sweep_reported_per_trial_overhead_seconds":
            result.to_dict()["per_trial_overhead_seconds"],
        "ray_shutdown_seconds": shutdown,
        "worker_import_seconds": worker_import_seconds(),
        "machine": machine(torch.device("cpu")),
        "field_meanings": FIELD_MEANINGS,
    }
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in record.items()}


def main(argv: list[str]) -> None:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as folder:
        scratch = Path(folder).absolute()
        # MLflow puts a sqlite store's artifacts under ./mlruns and the sweep its centroid
        # cache under ./cache: keep both in the scratch folder
        with contextlib.chdir(scratch):
            data_root = scratch / "synth"
            write_data(args, data_root)
            spec = make_spec(args, data_root, f"sqlite:///{scratch / 'mlflow.db'}")
            direct = direct_trials(args, spec, data_root, scratch)
            for index, trial in enumerate(direct):
                emit({"benchmark": "sweep", "record": "direct_trial", "trial": index,
                      "seconds": round(trial["seconds"], 3),
                      "epoch_seconds": [round(s, 3) for s in trial["epoch_seconds"]]})
            result, called, wall, shutdown = run_timed_sweep(spec, scratch)
            emit(summary(args, direct, result, called, wall, shutdown))
