"""Sweeps end to end: real Ray, real Optuna, real MLflow sqlite, real faiss."""
import contextlib
import copy
import dataclasses
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml
from cli_helpers import REPO, run_cli
from conftest import TINY_SPEC
from mlflow import MlflowClient
from mlflow_helpers import store_uri
from test_dataset_inputs import dataset_inputs

from orchestrator import mlflow_callback
from orchestrator.spec import spec_from_dict
from orchestrator.sweep import run_sweep


def children_of(client, experiment_id, parent_id):
    return client.search_runs([experiment_id],
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_id}'")


def artifact_paths(client, run_id, folder=""):
    out = []
    for item in client.list_artifacts(run_id, folder):
        out += artifact_paths(client, run_id, item.path) if item.is_dir else [item.path]
    return out


# two aggregators, each with its own setting (NetVLAD's K, GeM's p): two NetVLAD trials of one
# arch share a centroid file, the GeM trial needs none
TWO_AGGREGATORS = {"aggregator": ["netvlad", "gem"], "num_clusters": [4],
                   "gem_p": {"log_uniform": [2.0, 4.0]}}
FIRST = [{"arch": "alexnet", "aggregator": "netvlad", "num_clusters": 4, "margin": 0.1, "lr": 1e-4},
         {"arch": "vgg16", "aggregator": "gem", "gem_p": 3.0, "margin": 0.1, "lr": 1e-4},
         {"arch": "alexnet", "aggregator": "netvlad", "num_clusters": 4, "margin": 0.15,
          "lr": 3e-4}]


def assert_own_settings(params: dict) -> None:
    """A trial's run holds its aggregator's settings and no other aggregator's."""
    own = {"netvlad": {"num_clusters"}, "gem": {"gem_p"}}[params["aggregator"]]
    assert {"num_clusters", "gem_p"} & set(params) == own, params
    assert not any(k.startswith(("mixvpr_", "salad_", "boq_")) for k in params)


def test_a_tiny_sweep_leaves_the_expected_mlflow_structure(ray_session, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = copy.deepcopy(TINY_SPEC)
    raw["search"]["space"].update(TWO_AGGREGATORS)
    raw["search"]["start_with"] = FIRST
    spec = spec_from_dict(raw, "tiny")
    spec = dataclasses.replace(spec, tracking_uri=store_uri(tmp_path / "mlflow.db"))
    handed = []  # the callback Tune called, as the sweep's end gets it
    take = mlflow_callback.take_trial_logger
    monkeypatch.setattr(mlflow_callback, "take_trial_logger",
                        lambda parent: handed.append(take(parent)) or handed[-1])
    result = run_sweep(spec, storage=str(tmp_path / "ray_results"), register="places")
    assert not result.interrupted and len(result.rows) == 3
    # the end of the sweep knows which trials Tune ended, and nothing went unlogged
    assert len(handed) == 1 and handed[0] is not None
    assert sorted(handed[0].ended) == sorted(row.trial_id for row in result.rows)
    assert result.unlogged == []

    client = MlflowClient(spec.tracking_uri)
    experiment = client.get_experiment_by_name("netvlad-tiny")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get("kind") == "sweep"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    parent = parents[0]
    children = children_of(client, experiment.experiment_id, parent.info.run_id)
    assert len(children) == 3 and len(runs) == 4
    # the sweep and every trial trained on synth's train split and measured recalls on val
    datasets = {("synth-train", "training"), ("synth-val", "validation")}
    assert all(dataset_inputs(run) == datasets for run in runs)
    assert len(client.search_runs([experiment.experiment_id],
                                  "dataset.name = 'synth-val'")) == 4
    assert {c.data.params["arch"] for c in children} == {"alexnet", "vgg16"}
    assert all(r.info.status in ("FINISHED", "FAILED", "KILLED") for r in runs)
    assert {k: v for k, v in parent.data.params.items() if k.endswith("_only_with")} == {
        "gem_p_only_with": '{"aggregator": ["gem"]}',
        "num_clusters_only_with": '{"aggregator": ["netvlad"]}'}
    centroid_files = set()
    for child in children:
        params = child.data.params
        assert {"arch", "aggregator", "margin", "lr", "image_size", "dataset", "weights",
                "seed", "precision", "momentum"} <= set(params)
        assert_own_settings(params)
        assert params["image_size"] == "48x64" and params["weights"] == "none"
        assert params["precision"] == "fp32" and params["momentum"] == "0.9"  # as trials train
        assert child.data.tags["trial_id"] and child.data.tags.get("git_commit")
        history = client.get_metric_history(child.info.run_id, "recall_at_5")
        assert [m.step for m in history] == list(range(1, len(history) + 1)) and history
        assert {"loss", "triplets", "epoch_seconds", "recall_at_1", "recall_at_20"} <= \
            set(child.data.metrics)
        paths = artifact_paths(client, child.info.run_id)
        assert "checkpoints/model_best.pth.tar" in paths and "config/flags.json" in paths
        assert "plots/recall_curve.png" in paths
        centroid_files |= {p for p in paths if p.startswith("centroids/")}
    # one clustering per (arch, K), for NetVLAD only: one file for two trials, nothing else
    assert centroid_files == {"centroids/alexnet_synth_4_desc_cen.hdf5"}
    cached = sorted(p.name for p in (tmp_path / "cache").rglob("*.hdf5"))
    assert cached == ["alexnet_synth_4_desc_cen.hdf5"]
    assert "vgg16 gem p=3 margin=0.1 lr=0.0001" in {row.label for row in result.rows}
    # one service served every trial
    assert parent.data.metrics["miner_trials_served"] == 3
    assert parent.data.metrics["miner_requests"] >= 3
    assert parent.data.tags["miner_device"] == "cpu"
    assert result.best is not None and 0 < result.best.recalls[5] <= 1
    report = artifact_paths(client, parent.info.run_id)
    assert "report/index.html" in report and "sweep/trials.json" in report
    assert any(p.startswith("report/") and p.endswith(".png") for p in report)
    assert_the_best_trial_is_registered(client, result, parent)


def assert_the_best_trial_is_registered(client, result, parent):
    """One version of the best trial's model holds the alias; a worse (or equal) trial of
    the same data registered after it adds a version and leaves the alias."""
    from vpr_tracking.registry import register_run
    from vpr_tracking.store import store_at

    registration = result.registration
    assert registration["version"] == "1" and registration["champion_moved"], registration
    assert parent.data.tags["registered_model"] == "models:/places/1"
    version = client.get_model_version("places", "1")
    best = result.best
    assert version.run_id == best.run_id and version.tags["source_run_id"] == best.run_id
    assert version.tags["sweep_run_id"] == parent.info.run_id
    assert float(version.tags["recall_at_5"]) == round(best.recalls[5], 6)
    assert (version.tags["dataset"], version.tags["split"], version.tags["arch"]) == \
        ("synth", "val", best.arch)
    assert int(version.tags["descriptor_dim"]) > 0 and version.tags["git_commit"]
    assert str(client.get_registered_model("places").aliases["champion"]) == "1"
    worst = min(result.rows, key=lambda row: row.recalls.get(5, 0.0))
    again = register_run(store_at(result.tracking_uri), "places", worst.run_id)
    assert (again.version, again.champion, again.moved) == ("2", "1", False), again


def write_tiny_spec(folder: Path, **changes) -> Path:
    raw = copy.deepcopy(TINY_SPEC)
    for key, value in changes.items():
        section, name = key.split("__")
        raw.setdefault(section, {})[name] = value
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def start_driver(argv: list, log_path: Path, cwd: Path) -> subprocess.Popen:
    """`python -m orchestrator ARGV` in its own process group (as a terminal runs it), its
    output into `log_path`."""
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_AUTH_MODE="disabled")
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "orchestrator", *map(str, argv)],
                                cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def wait_for_an_epoch(driver: subprocess.Popen, log_path: Path) -> None:
    """Until a trial of `driver` has finished an epoch (`[trial] epoch 1/2: loss ...`)."""
    marker = re.compile(r"^\[\S+ [^\]]*\] epoch \d+/2: loss ", re.MULTILINE)
    deadline = time.time() + 300
    while time.time() < deadline and driver.poll() is None \
            and not marker.search(log_path.read_text()):
        time.sleep(0.5)
    if not marker.search(log_path.read_text()):
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
        raise AssertionError("no trial finished an epoch:\n" + log_path.read_text()[-3000:])


def test_a_killed_then_interrupted_sweep_resumes_without_duplicate_runs(tmp_path):
    """SIGKILL of the driver (and the local Ray it started), then Ctrl-C of the resumed
    driver, then a second resume on a separate Ray head (`--ray-address`): each trial run
    once, each epoch logged once. A resumed sweep takes its define-by-run sampler back from
    the searcher's state."""
    space = {**TINY_SPEC["search"]["space"], **TWO_AGGREGATORS}
    spec = write_tiny_spec(tmp_path, train__epochs=2, search__num_samples=3,
                           search__space=space)
    argv = ["sweep", "--config", spec, "--storage", tmp_path / "ray_results"]
    first = start_driver(argv, tmp_path / "first.log", tmp_path)
    wait_for_an_epoch(first, tmp_path / "first.log")
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()

    # --resume without --name continues the latest sweep of this spec
    second = start_driver([*argv, "--resume"], tmp_path / "second.log", tmp_path)
    wait_for_an_epoch(second, tmp_path / "second.log")
    os.killpg(second.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends
    second.wait(timeout=300)
    output = (tmp_path / "second.log").read_text()
    assert second.returncode == 130, output[-3000:]
    match = re.search(r"resume with `(python -m orchestrator sweep --resume [^`]+)`", output)
    assert match, output[-3000:]
    client = MlflowClient(store_uri(tmp_path / "mlflow.db"))
    experiment = client.get_experiment_by_name("netvlad-tiny")
    runs = client.search_runs([experiment.experiment_id])
    assert "RUNNING" not in {r.info.status for r in runs}
    assert any(r.info.status == "KILLED" for r in runs if r.data.tags.get("kind") == "trial")
    assert [r.info.status for r in runs if r.data.tags.get("kind") == "sweep"] == ["KILLED"]

    # the printed command, run on a Ray head of its own (as on a cluster), quietly
    with separate_ray_head(tmp_path) as address:
        done = run_cli(*match.group(1).split()[3:], "--ray-address", address, "--json",
                       "resumed.json", "--quiet", cwd=tmp_path, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    # --quiet: the table and the best line, no line per trial epoch or trial start
    assert "best: " in done.stdout and "epoch 2/2" not in done.stdout, done.stdout
    assert "sweep tiny-" not in done.stdout
    summary = json.loads((tmp_path / "resumed.json").read_text())
    assert summary["name"].startswith("tiny-") and not summary["interrupted"]
    # registered by default, as a version of the experiment's name, said in the summary
    registration = summary["registration"]
    assert registration["uri"] == "models:/netvlad-tiny/1" and registration["champion_moved"]
    assert registration["tags"]["source_run_id"] == summary["best"]["mlflow_run_id"]
    assert "registered models:/netvlad-tiny/1; champion -> version 1" in done.stdout
    parent = summary["parent_run_id"]
    children = children_of(client, experiment.experiment_id, parent)
    trial_ids = [c.data.tags["trial_id"] for c in children]
    assert len(trial_ids) == len(set(trial_ids)) == len(summary["trials"]) == 3
    assert all(c.info.status == "FINISHED" for c in children), \
        [(c.data.tags["trial_id"], c.info.status, c.data.tags.get("stop_reason")) for c in children]
    for child in children:
        assert_own_settings(child.data.params)
    # each epoch logged once, none missing, even for the trials that were cut: the steps are
    # exactly 1..the last epoch Tune saw the trial report (ASHA may stop a trial early)
    from ray.tune import ExperimentAnalysis

    last_epoch = {trial.trial_id: trial.last_result["epoch"]
                  for trial in ExperimentAnalysis(summary["experiment_path"]).trials}
    assert sorted(last_epoch) == sorted(trial_ids) and 2 in last_epoch.values()
    for child in children:
        epochs = last_epoch[child.data.tags["trial_id"]]
        for metric in ("recall_at_5", "loss"):
            steps = [m.step for m in client.get_metric_history(child.info.run_id, metric)]
            assert steps == list(range(1, epochs + 1)), (metric, steps, epochs)
    runs = client.search_runs([experiment.experiment_id])
    assert all(r.info.status == "FINISHED" for r in runs)
    assert [r.info.status for r in runs if r.data.tags.get("kind") == "sweep"] == ["FINISHED"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def separate_ray_head(folder: Path):
    """A Ray head started with `ray start --head` (as on a cluster), its address yielded."""
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(REPO), RAY_AUTH_MODE="disabled")
    # the `ray` script where pip put it: on the PATH, else beside this interpreter
    ray_bin = shutil.which("ray") or shutil.which("ray", path=str(Path(sys.executable).parent))
    assert ray_bin, "the `ray` command is neither on the PATH nor beside python"
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", f"--port={port}", "--num-cpus=2",
         "--node-ip-address=127.0.0.1", "--include-dashboard=false",
         f"--temp-dir={folder / 'ray'}" if len(str(folder)) < 60 else "--disable-usage-stats"],
        cwd=folder, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(1)
        yield f"127.0.0.1:{port}"
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
