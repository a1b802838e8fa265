"""An MLflow store shaped like the orchestrator's, logged directly with `MlflowClient`.

One experiment holding a sweep parent run, four trial child runs (both architectures, one
FAILED before its first epoch, one stopped early by ASHA) and an evaluation run of a
'released' VGG16 checkpoint. No Ray, no training: the numbers are made up and known.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

EXPERIMENT = "netvlad-tiny"
SWEEP = "tiny-20260101-120000"
START_MS = 1_767_268_800_000  # 2026-01-01 12:00 UTC
NS = (1, 5, 10, 20)


@dataclass(frozen=True)
class FakeTrial:
    """A trial: per-epoch (R@1, R@5, R@10, R@20, loss) rows, its end status and reason."""

    trial_id: str
    arch: str
    num_clusters: int
    margin: float
    lr: float
    epochs: tuple
    status: str
    reason: str


TRIALS = (
    FakeTrial("a1b2c_00000", "alexnet", 4, 0.1, 1e-4,
              ((0.20, 0.40, 0.55, 0.70, 0.30), (0.30, 0.50, 0.65, 0.80, 0.25)),
              "FINISHED", "completed"),
    FakeTrial("a1b2c_00001", "vgg16", 8, 0.07, 5e-4, ((0.25, 0.45, 0.60, 0.75, 0.28),),
              "FINISHED", "stopped early after epoch 1 (ASHA)"),
    # its best epoch (by Recall@5) is the first, not the last
    FakeTrial("a1b2c_00002", "alexnet", 8, 0.15, 3e-4,
              ((0.35, 0.60, 0.70, 0.85, 0.22), (0.33, 0.58, 0.72, 0.86, 0.20)),
              "FINISHED", "completed"),
    FakeTrial("a1b2c_00003", "vgg16", 4, 0.12, 2e-4, (), "FAILED",
              "failed: ValueError: the loss diverged"),
)
EVAL_RECALLS = (0.50, 0.70, 0.80, 0.90)


def log_fake_sweep(uri: str, data_root: Path, checkpoint: Path, scratch: Path) -> dict:
    """Fill the store at `uri`; returns {'experiment_id', 'parent', 'trials': {trial_id:
    run_id}, 'evaluation'}. The first trial gets `checkpoint` as its best checkpoint."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    db_folder = Path(uri[len("sqlite:///"):]).parent
    experiment_id = client.create_experiment(EXPERIMENT,
                                             artifact_location=(db_folder / "mlruns").as_uri())
    fixed = {"dataset": "synth", "data_root": str(data_root), "weights": "none", "seed": 123,
             "image_size": "64x80", "epochs": 2, "batch_size": 4, "optim": "SGD"}
    parent = client.create_run(experiment_id, start_time=START_MS, run_name=SWEEP,
                               tags={"kind": "sweep", "sweep": SWEEP}).info.run_id
    _params(client, parent, {"spec": "tiny", "num_samples": 4, "metric": "recall@5",
                             "search_seed": 0, "archs": "alexnet,vgg16",
                             "num_clusters_choices": "4,8", "margin_range": "0.05-0.2",
                             "lr_range": "0.0001-0.001", **fixed})
    trials = {}
    for index, trial in enumerate(TRIALS):
        trials[trial.trial_id] = _log_trial(client, experiment_id, parent, trial, fixed,
                                            START_MS + 1000 * (index + 1))
    client.log_artifact(trials[TRIALS[0].trial_id], str(checkpoint), "checkpoints")
    best = TRIALS[2]
    _metrics(client, parent, {f"best_recall_at_{n}": r for n, r in zip(NS, best.epochs[0])}, 0)
    _metrics(client, parent, {"wall_seconds": 120.0, "trials": len(TRIALS)}, 0)
    for key, value in {"best_trial": best.trial_id, "best_run_id": trials[best.trial_id],
                       "best_arch": best.arch}.items():
        client.set_tag(parent, key, value)
    table = scratch / "trials.json"
    table.write_text(json.dumps({"name": SWEEP, "trials": list(trials)}))
    client.log_artifact(parent, str(table), "sweep")
    client.set_terminated(parent, "FINISHED", end_time=START_MS + 120_000)
    evaluation = _log_evaluation(client, experiment_id, data_root)
    return {"experiment_id": experiment_id, "parent": parent, "trials": trials,
            "evaluation": evaluation}


def _log_trial(client, experiment_id: str, parent: str, trial: FakeTrial, fixed: dict,
               start_ms: int) -> str:
    name = (f"{trial.trial_id} {trial.arch} K={trial.num_clusters} margin={trial.margin:.3g} "
            f"lr={trial.lr:.2g}")
    run_id = client.create_run(experiment_id, start_time=start_ms, run_name=name, tags={
        "mlflow.parentRunId": parent, "kind": "trial", "trial_id": trial.trial_id,
        "sweep": SWEEP, "arch": trial.arch}).info.run_id
    _params(client, run_id, {"arch": trial.arch, "num_clusters": trial.num_clusters,
                             "margin": trial.margin, "lr": trial.lr, **fixed})
    for epoch, (*recalls, loss) in enumerate(trial.epochs, start=1):
        _metrics(client, run_id, {**{f"recall_at_{n}": r for n, r in zip(NS, recalls)},
                                  "loss": loss, "triplets": 40, "negatives": 400,
                                  "batches": 10, "skipped_batches": 0, "lr": trial.lr,
                                  "epoch_seconds": 3.5}, epoch)
    client.set_tag(run_id, "stop_reason", trial.reason)
    client.set_tag(run_id, "epochs_run", len(trial.epochs))
    client.set_terminated(run_id, trial.status, end_time=start_ms + 65_000)
    return run_id


def _log_evaluation(client, experiment_id: str, data_root: Path) -> str:
    checkpoint = "/models/vgg16_netvlad_checkpoint/checkpoints/checkpoint.pth.tar"
    run_id = client.create_run(experiment_id, start_time=START_MS + 200_000,
                               run_name="eval-vgg16-synth-val",
                               tags={"kind": "evaluation"}).info.run_id
    _params(client, run_id, {"checkpoint": checkpoint, "checkpoint_sha256": "0" * 64,
                             "arch": "vgg16", "num_clusters": 64, "pooling": "netvlad",
                             "split": "val", "dataset": "synth", "data_root": str(data_root),
                             "image_size": "64x80", "weights": "none"})
    _metrics(client, run_id, {f"recall_at_{n}": r for n, r in zip(NS, EVAL_RECALLS)}, 0)
    client.set_terminated(run_id, "FINISHED", end_time=START_MS + 210_000)
    return run_id


def _params(client, run_id: str, params: dict) -> None:
    from mlflow.entities import Param

    client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()])


def _metrics(client, run_id: str, metrics: dict, step: int) -> None:
    from mlflow.entities import Metric

    client.log_batch(run_id, metrics=[Metric(k, float(v), START_MS, step)
                                      for k, v in metrics.items()])


BENCHMARK_MODELS = ("CosPlace R50", "NetVLAD VGG16")
BENCHMARK_TEST_SETS = ("pitts30k", "tokyo247")
# Recall@1, @5, @10, @20 of each model on each test set
BENCHMARK_RECALLS = {("CosPlace R50", "pitts30k"): (0.90, 0.95, 0.96, 0.97),
                     ("CosPlace R50", "tokyo247"): (0.80, 0.88, 0.90, 0.93),
                     ("NetVLAD VGG16", "pitts30k"): (0.85, 0.93, 0.96, 0.97),
                     ("NetVLAD VGG16", "tokyo247"): (0.60, 0.75, 0.80, 0.85)}


def log_fake_benchmark(uri: str) -> str:
    """A finished benchmark (parent and a child per model and test set) in the experiment
    'benchmarks' of the store at `uri`; returns the parent's run id."""
    from mlflow import MlflowClient

    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("benchmarks")
    experiment_id = experiment.experiment_id if experiment else \
        client.create_experiment("benchmarks")
    parent = client.create_run(experiment_id, run_name="fake-20260101-120000",
                               tags={"kind": "benchmark", "benchmark": "fake"}).info.run_id
    _params(client, parent, {"split": "test", "positive_dist": 25.0,
                             "models": json.dumps(BENCHMARK_MODELS),
                             "test_sets": json.dumps(BENCHMARK_TEST_SETS)})
    for (model, test_set), recalls in BENCHMARK_RECALLS.items():
        child = client.create_run(experiment_id, run_name=f"{model} on {test_set}", tags={
            "kind": "benchmark-result", "mlflow.parentRunId": parent, "benchmark": "fake",
            "model": model, "test_set": test_set}).info.run_id
        _params(client, child, {"family": "cosplace", "architecture": "resnet50 + gem",
                                "image_size": "480x640"})
        _metrics(client, child, {**{f"recall_at_{n}": r for n, r in zip(NS, recalls)},
                                 "descriptor_dim": 2048, "descriptor_bytes": 8192,
                                 "ms_per_image": 12.5}, 0)
        client.set_terminated(child, "FINISHED")
    client.set_terminated(parent, "FINISHED")
    return parent
