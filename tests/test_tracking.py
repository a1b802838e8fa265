"""MLflow tracking of `train`, `eval` and evaluation specs, in a real sqlite store."""
import json
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from cli_helpers import run_main
from mlflow import MlflowClient
from mlflow_helpers import store_uri
from test_checkpoints import released_vgg16_checkpoint, save_like_2018
from test_dataset_inputs import dataset_inputs

from vpr_core.errors import UserError
from vpr_core.models.place_model import build_model
from vpr_tracking.names import metric_key
from vpr_tracking.uri import check_tracking_uri


def test_tracking_uris(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert check_tracking_uri(None) == f"sqlite:///{tmp_path}/mlflow.db"
    assert check_tracking_uri("sqlite:///runs.db") == f"sqlite:///{tmp_path}/runs.db"
    assert check_tracking_uri("sqlite:////abs/m.db") == "sqlite:////abs/m.db"
    assert check_tracking_uri("http://mlflow.internal:5000") == "http://mlflow.internal:5000"
    with pytest.raises(UserError, match="unknown scheme 'ftp'"):
        check_tracking_uri("ftp://host/x")
    with pytest.raises(UserError, match="no longer accepts file stores"):
        check_tracking_uri("file:///tmp/mlruns")
    assert metric_key("recall@5") == "recall_at_5"


def only_run(uri, experiment):
    client = MlflowClient(uri)
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def artifacts(client, run_id, folder=""):
    out = []
    for item in client.list_artifacts(run_id, folder):
        out += artifacts(client, run_id, item.path) if item.is_dir else [item.path]
    return sorted(out)


def test_train_with_tracking_logs_a_finished_run(synth_root, tmp_path, capsys, monkeypatch):
    uri = store_uri(tmp_path / "m.db")
    done = run_main(["train", "--data-root", synth_root, "--arch", "alexnet", "--num-clusters", 4,
                     "--weights", "none", "--epochs", 2, "--run-dir", tmp_path / "run",
                     "--quiet", "--tracking-uri", uri, "--experiment", "t", "--amp",
                     "--json", tmp_path / "t.json"],
                    capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    client, run = only_run(uri, "t")
    assert run.info.status == "FINISHED"
    assert run.data.params["arch"] == "alexnet" and run.data.params["num_clusters"] == "4"
    # --amp is --precision bf16, recorded wherever the run's settings are
    assert run.data.params["precision"] == "bf16"
    assert json.loads((tmp_path / "t.json").read_text())["precision"] == "bf16"
    flags = json.loads((tmp_path / "run" / "checkpoints" / "flags.json").read_text())
    assert flags["precision"] == "bf16" and flags["decode"] == "auto"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "recall_at_5")]
    assert steps == [1, 2]
    assert artifacts(client, run.info.run_id) == [
        "centroids/alexnet_synth_4_desc_cen.hdf5", "checkpoints/model_best.pth.tar",
        "config/flags.json", "plots/recall_curve.png"]
    assert dataset_inputs(run) == {("synth-train", "training"), ("synth-val", "validation")}


def test_the_released_checkpoint_evaluates_as_an_experiment(synth_root, tmp_path, capsys,
                                                            monkeypatch):
    torch.manual_seed(0)
    release = tmp_path / "vgg16_netvlad_checkpoint" / "checkpoints" / "checkpoint.pth.tar"
    release.parent.mkdir(parents=True)
    model = build_model("vgg16", "netvlad", 64, weights="none")
    save_like_2018({"epoch": 30, "state_dict": model.state_dict(), "optimizer": {},
                    "recalls": {5: np.float64(0.948)}, "best_score": np.float64(0.948),
                    "parallel": False}, release)
    uri = store_uri(tmp_path / "m.db")
    spec = tmp_path / "pretrained.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "pretrained_vgg16", "data": {"root": str(synth_root)},
        "evaluate": {"checkpoint": str(release.parents[1]), "split": "val"},
        "tracking": {"uri": uri, "experiment": "released"}}))
    done = run_main(["sweep", "--config", spec, "--json", tmp_path / "e.json", "--quiet"],
                    capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "Recall@5:" in done.stdout and "python -m orchestrator ui --tracking-uri" in done.stdout
    client, run = only_run(uri, "released")
    params, metrics = run.data.params, run.data.metrics
    assert params["arch"] == "vgg16" and params["num_clusters"] == "64"
    assert params["checkpoint"] == str(release) and params["split"] == "val"
    assert params["precision"] == "fp32"  # the default on a CPU
    import hashlib
    assert params["checkpoint_sha256"] == hashlib.sha256(release.read_bytes()).hexdigest()
    result = json.loads(Path(tmp_path / "e.json").read_text())
    assert metrics["recall_at_5"] == pytest.approx(result["recall@5"])
    assert run.info.status == "FINISHED"
    assert dataset_inputs(run) == {("synth-val", "evaluation")}


def test_a_handwritten_release_evaluates_from_the_command_line(synth_root, tmp_path, capsys,
                                                               monkeypatch):
    """`eval --resume vgg16_netvlad_checkpoint --split val`, as the reference's README says,
    on a checkpoint built from the reference's key names and shapes, not from our model."""
    release = tmp_path / "vgg16_netvlad_checkpoint"
    path, _ = released_vgg16_checkpoint(release)
    uri = store_uri(tmp_path / "m.db")
    done = run_main(["eval", "--resume", release, "--data-root", synth_root, "--split", "val",
                     "--tracking-uri", uri, "--experiment", "released", "--quiet",
                     "--json", tmp_path / "r.json"], capsys, monkeypatch, tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["split"] == "val" and result["num_queries"] == 24
    assert result["checkpoint"] == str(path)
    client, run = only_run(uri, "released")
    assert run.info.status == "FINISHED"
    assert run.data.params["arch"] == "vgg16" and run.data.params["num_clusters"] == "64"
    assert run.data.params["aggregator"] == "netvlad" and run.data.params["checkpoint"] == str(path)
    for n in (1, 5, 10, 20):
        assert f"Recall@{n}: {result[f'recall@{n}']:.4f}" in done.stdout.splitlines()
        assert run.data.metrics[f"recall_at_{n}"] == pytest.approx(result[f"recall@{n}"])


def test_a_bad_dataset_creates_no_store(tmp_path, capsys, monkeypatch):
    uri = f"sqlite:///{tmp_path}/m.db"
    done = run_main(["eval", "--data-root", tmp_path / "missing", "--arch", "alexnet",
                     "--tracking-uri", uri], capsys, monkeypatch, tmp_path)
    assert done.returncode == 2 and not (tmp_path / "m.db").exists()


def test_only_a_store_out_of_reach_counts_as_unreachable(tmp_path, monkeypatch):
    """MLflow's default code (INTERNAL_ERROR) says nothing: a plain `MlflowException` is
    this code's mistake, not an outage to wait out."""
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import TEMPORARILY_UNAVAILABLE

    from vpr_tracking.store import StoreUnreachable, store_at, tracking_unreachable

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    with socket.socket() as held:  # a port nothing listens on
        held.bind(("127.0.0.1", 0))
        down = MlflowClient(f"http://127.0.0.1:{held.getsockname()[1]}")
        with pytest.raises(MlflowException) as refused:
            down.get_run("0" * 32)
    assert refused.value.error_code == "INTERNAL_ERROR"  # the server is down: the REST form
    assert tracking_unreachable(refused.value)
    # what MLflow's sqlalchemy store makes of a locked database
    assert tracking_unreachable(MlflowException("(sqlite3.OperationalError) database is "
                                                "locked", error_code=TEMPORARILY_UNAVAILABLE))
    bug = MlflowException("Invalid value 'x' for parameter 'max_results'")
    assert bug.error_code == "INTERNAL_ERROR" and not tracking_unreachable(bug)
    store = store_at(store_uri(tmp_path / "m.db"))

    def fails(*args, **kwargs):
        raise bug

    with pytest.raises(UserError, match="Invalid value") as said:
        store._call("runs", fails)
    assert not isinstance(said.value, StoreUnreachable)


def test_only_finite_metrics_are_logged(tmp_path):
    from orchestrator.tracking import Tracker

    tracker = Tracker(store_uri(tmp_path / "m.db"), "finite")
    run_id = tracker.create_run("r", {}, {})
    tracker.store.log_metrics(run_id, {"recall@1": float("inf"), "recall@5": float("-inf"),
                                       "loss": float("nan"), "recall@10": 0.5}, step=1)
    assert MlflowClient(tracker.store.uri).get_run(run_id).data.metrics == {"recall_at_10": 0.5}


def test_a_training_error_is_not_replaced_by_a_store_failure(tmp_path, capsys, monkeypatch):
    """A store that fails while the run is being closed is a warning beside the training's
    own error, which is what propagates."""
    import requests

    from orchestrator.tracking import Tracker
    from vpr_core.config import TrainConfig

    tracker = Tracker(store_uri(tmp_path / "m.db"), "diverged")
    run = SimpleNamespace(config=TrainConfig(data_root=tmp_path, arch="alexnet"),
                          train_split=SimpleNamespace(dataset="synth"), image_size=(48, 64),
                          run_dir=tmp_path / "run", centroids_path=None, resumed_from=None,
                          folder=SimpleNamespace(checkpoints=tmp_path / "run" / "checkpoints"))

    def refused(*args, **kwargs):
        raise requests.ConnectionError("[Errno 111] Connection refused")

    with pytest.raises(UserError, match="the loss became NaN in epoch 3"):
        with tracker.train_run(run):
            monkeypatch.setattr(tracker.store.client, "set_terminated", refused)
            raise UserError("the loss became NaN in epoch 3; lower --lr")
    err = capsys.readouterr().err
    assert "was not ended FAILED" in err and "Connection refused" in err, err
