"""Errors that used to be swallowed now surface: each test fails on the code before the fix."""
import numpy as np
import pytest
import requests
import torch
from cli_helpers import assert_user_error, run_main
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow_helpers import store_uri

from orchestrator import mlflow_callback, sweep
from vpr_core.errors import UserError
from vpr_core.models.checkpoints import read_flags, save_checkpoint
from vpr_core.models.place_model import build_model
from vpr_core.stages.starting_model import model_from_checkpoint
from vpr_core.training.mining import CandidateSampler


def test_an_unreadable_sweep_state_is_an_interrupted_sweep(tmp_path, monkeypatch, capsys):
    """Reported complete before: parent FINISHED, no --resume line, exit 0."""
    import ray.tune

    def unreadable(path):
        raise RuntimeError("experiment_state-*.json is truncated")

    monkeypatch.setattr(ray.tune, "ExperimentAnalysis", unreadable)
    assert sweep._unfinished(str(tmp_path)) is True
    assert "cannot read the sweep's state" in capsys.readouterr().err


class Logger:
    """The hooks' wrapper on its own: `uri` and `_pending` are all it uses of the callback."""

    uri = "http://mlflow.example:5000"

    def __init__(self, failures: list):
        self._pending, self.failures, self.logged = [], failures, []

    @mlflow_callback._tolerant
    def on_trial_result(self, epoch):
        if self.failures:
            raise self.failures.pop(0)
        self.logged.append(epoch)


def rest_outage() -> MlflowException:
    """What MLflow's REST client raises when its server is down (rest_utils.http_request):
    INTERNAL_ERROR, raised while handling the `requests` error."""
    try:
        try:
            raise requests.ConnectionError("Connection refused")
        except requests.ConnectionError as error:
            raise MlflowException(  # noqa: B904 - MLflow's own form
                f"API request to http://mlflow.example:5000 failed with exception {error}")
    except MlflowException as outage:
        return outage


@pytest.mark.parametrize("outage", [requests.ConnectionError("Connection refused"),
                                    rest_outage()])
def test_an_unreachable_store_is_said_and_logging_resumes_without_loss(outage, capsys):
    logger = Logger([outage])
    logger.on_trial_result(1)  # the store is out of reach: kept, not raised
    assert logger.logged == [] and "out of reach" in capsys.readouterr().err
    logger.on_trial_result(2)  # back: epoch 1 is logged first, then epoch 2
    assert logger.logged == [1, 2] and logger._pending == []


@pytest.mark.parametrize("bug", [KeyError("recall@5"), TypeError("bad operand"),
                                 MlflowException("Changing param values is not allowed",
                                                 error_code=INVALID_PARAMETER_VALUE),
                                 # MLflow's default code, INTERNAL_ERROR, and no outage behind
                                 MlflowException("Run 'abc' not in a usable state")])
def test_a_bug_in_a_hook_is_not_swallowed(bug):
    with pytest.raises(type(bug)):
        Logger([bug]).on_trial_result(1)


def test_lost_service_statistics_are_said(ray_session, tmp_path, capsys):
    import ray

    from orchestrator.mining_service import start_service
    from orchestrator.tracking import Tracker

    service = start_service(2**20, name="svc-stats-lost")
    ray.kill(service, no_restart=True)
    tracker = Tracker(store_uri(tmp_path / "m.db"), "stats")
    parent = tracker.create_run("sweep", {}, {"kind": "sweep"})
    sweep._log_service_stats(tracker, parent, service)
    assert "mining service's statistics are lost" in capsys.readouterr().err


def test_a_negative_cache_of_other_data_is_refused():
    """Dropped before, so a --resume was silently not the exact continuation it promises."""
    sampler = CandidateSampler([np.array([0])] * 3, [np.array([1, 2])] * 3, num_samples=4)
    with pytest.raises(UserError, match="negative cache is for 5 training queries"):
        sampler.load_cache_state(torch.full((5, 10), -1, dtype=torch.int64))


def test_a_corrupt_flags_json_is_named(tmp_path, synth_root, capsys, monkeypatch):
    """Read as {} before: --resume then ran with defaults instead of the run's flags."""
    path = tmp_path / "run" / "checkpoints" / "checkpoint.pth.tar"
    save_checkpoint(path, {"epoch": 1,
                           "state_dict": build_model("alexnet", "netvlad", 4, "none").state_dict()})
    assert read_flags(path) == {}  # no flags.json at all is fine (the released checkpoint)
    (path.parent / "flags.json").write_text('{"arch": "alexnet", "lr": ')
    with pytest.raises(UserError, match="flags.json cannot be read as JSON"):
        read_flags(path)
    done = run_main(["train", "--resume", tmp_path / "run", "--quiet"], capsys, monkeypatch,
                    tmp_path)
    assert_user_error(done, "flags.json")


@pytest.mark.parametrize("pooling", ["max", "avg"])
def test_pooling_without_flags_is_not_guessed(tmp_path, pooling):
    """Picked max silently before: an avg-pooling model was evaluated as max pooling."""
    model = build_model("alexnet", pooling, weights="none")
    bare = tmp_path / "bare.pth.tar"
    save_checkpoint(bare, {"epoch": 1, "state_dict": model.state_dict()})
    with pytest.raises(UserError, match="--aggregator max or avg"):
        model_from_checkpoint(bare)
    assert model_from_checkpoint(bare, aggregator=pooling)[2].aggregator == pooling
    ours = tmp_path / "ours.pth.tar"  # this project's checkpoints say it themselves
    save_checkpoint(ours, {"epoch": 1, "state_dict": model.state_dict(), "pooling": pooling})
    assert model_from_checkpoint(ours)[2].aggregator == pooling
