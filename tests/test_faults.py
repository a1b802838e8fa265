"""Fault injection on real sweeps: killed workers, a killed mining service, Ctrl-C, a trial that
fails deterministically, more trials than slots."""
import copy
import dataclasses
import os
import signal
import time

import ray
from conftest import TINY_SPEC
from mlflow import MlflowClient
from mlflow_helpers import store_uri
from ray import tune

from orchestrator.mining_service import NAMESPACE, RayMiner, start_service
from orchestrator.spec import spec_from_dict
from orchestrator.sweep import run_sweep
from vpr_core.config import TrainConfig
from vpr_core.stages.train import training_run

GOOD_ALEXNET = {"arch": "alexnet", "num_clusters": 4, "margin": 0.1, "lr": 1e-3}
GOOD_VGG16 = {"arch": "vgg16", "num_clusters": 4, "margin": 0.1, "lr": 1e-4}
DIVERGING = {"arch": "alexnet", "num_clusters": 4, "margin": 0.1, "lr": 1e6}  # NaN in epoch 1


class Saboteur(tune.Callback):
    """Kills the first trial's worker after its first epoch, and the mining service once the
    second trial has reported, while the other trials are mid-epoch."""

    def __init__(self, service_name):
        self.service_name = service_name
        self.killed_worker = self.killed_service = False

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if trial.config["lr"] == GOOD_ALEXNET["lr"] and result["epoch"] == 1 \
                and not self.killed_worker:
            self.killed_worker = True
            os.kill(result["pid"], signal.SIGKILL)
        if trial.config["arch"] == "vgg16" and not self.killed_service:
            self.killed_service = True
            actor = ray.get_actor(self.service_name, namespace=NAMESPACE)
            os.kill(ray.get(actor.pid.remote()), signal.SIGKILL)


def test_sweep_survives_a_killed_worker_a_killed_service_and_a_nan_trial(
        ray_session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = copy.deepcopy(TINY_SPEC)
    raw["search"].update(num_samples=3, start_with=[GOOD_ALEXNET, GOOD_VGG16, DIVERGING])
    raw["search"]["space"].update(num_clusters=[4], margin=0.1,
                                  lr={"log_uniform": [1e-4, 1e7]})
    raw["search"]["scheduler"]["grace_period"] = 3  # no early stopping: every trial runs on
    raw["train"].update(epochs=3, cache_refresh_rate=4)
    spec = spec_from_dict(raw, "faults")
    spec = dataclasses.replace(spec, tracking_uri=store_uri(tmp_path / "mlflow.db"))
    saboteur = Saboteur("miner-faults")
    result = run_sweep(spec, storage=str(tmp_path / "ray_results"), name="faults",
                       callbacks=[saboteur])
    assert saboteur.killed_worker and saboteur.killed_service
    assert not result.interrupted
    rows = {row.values["lr"]: row for row in result.rows}
    assert len(result.rows) == 3

    client = MlflowClient(spec.tracking_uri)
    killed = rows[GOOD_ALEXNET["lr"]]
    assert killed.status == "FINISHED" and killed.epochs == 3
    run = client.get_run(killed.run_id)
    assert run.data.tags["worker_failures"] == "1"
    steps = [m.step for m in client.get_metric_history(killed.run_id, "recall_at_5")]
    assert steps == [1, 2, 3]  # continued from epoch 1's checkpoint, each epoch logged once

    assert rows[GOOD_VGG16["lr"]].status == "FINISHED" and rows[GOOD_VGG16["lr"]].epochs == 3

    diverged = rows[DIVERGING["lr"]]
    assert diverged.status == "FAILED" and "TrainingDiverged" in diverged.reason
    assert "lower --lr" in diverged.reason
    assert diverged.epochs == 0  # no value ever reached Optuna or MLflow
    table = "\n".join(__import__("orchestrator.sweep", fromlist=["x"]).format_table(result))
    assert "failed: " in table
    statuses = [r.info.status for r in client.search_runs(
        [client.get_experiment_by_name("netvlad-tiny").experiment_id])]
    assert "RUNNING" not in statuses and len(statuses) == 4


class KillAfterFirstPublish(RayMiner):
    """The service dies right after the trainer published: its next request finds nothing."""

    killed = False

    def publish(self, owner, version, cache):
        super().publish(owner, version, cache)
        if not self.killed:
            type(self).killed = True
            os.kill(ray.get(self.actor.pid.remote()), signal.SIGKILL)
            time.sleep(0.5)


def test_a_trainer_publishes_again_after_the_service_restarts(ray_session, synth_root, tmp_path):
    actor = start_service(2**30, name="svc-republish")
    run = training_run(TrainConfig(data_root=synth_root, arch="alexnet", num_clusters=4,
                                  weights="none", epochs=1, cache_dir=tmp_path / "cache",
                                  run_dir=tmp_path / "run", workers=0, show_progress=False),
                      miner=KillAfterFirstPublish("svc-republish"), owner="trial-x")
    results = list(run.epochs())
    assert KillAfterFirstPublish.killed and run.republished == 1
    assert results[0].triplets > 0 and results[0].metrics()["caches_republished"] == 1
    ray.kill(actor)


def most_at_once(intervals) -> int:
    """The largest number of (start, end) intervals that share a moment."""
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, change in events:  # at equal times an end (-1) sorts before a start (+1)
        running += change
        peak = max(peak, running)
    return peak


def test_more_trials_than_slots_all_accounted_for(ray_session, synth_folder_root, tmp_path,
                                                  monkeypatch):
    """3 trials through 2 slots, on a dataset in the @UTM@ folder layout."""
    monkeypatch.chdir(tmp_path)
    raw = copy.deepcopy(TINY_SPEC)
    raw["search"].update(num_samples=3)
    raw["search"]["space"]["arch"] = ["alexnet"]
    raw["train"]["epochs"] = 1
    raw["resources"] = {"max_concurrent": 2}
    spec = spec_from_dict(raw, "load")
    spec = dataclasses.replace(spec, data_root=synth_folder_root)
    spec = dataclasses.replace(spec, tracking_uri=store_uri(tmp_path / "mlflow.db"))
    result = run_sweep(spec, storage=str(tmp_path / "ray_results"))
    assert result.concurrency == 2
    assert len(result.rows) == 3 and len({r.trial_id for r in result.rows}) == 3
    assert all(r.status == "FINISHED" and r.epochs == 1 and r.recalls for r in result.rows)
    assert not (tmp_path / "synthetic").exists()  # the folder dataset was used, not the spec's
    client = MlflowClient(spec.tracking_uri)
    runs = [client.get_run(r.run_id) for r in result.rows]
    assert {r.data.params["data_root"] for r in runs} == {str(synth_folder_root)}
    assert {r.data.params["dataset"] for r in runs} == {synth_folder_root.name}
    # two trials really ran at the same time, and never more than the two slots
    assert most_at_once([(r.info.start_time, r.info.end_time) for r in runs]) == 2
