"""The sweep's MLflow callback when the store goes out of reach at the end of a sweep.

The callback is driven directly, hook by hook as Tune calls it, with stand-in trials (what the
callback reads of Tune's `Trial`) and a real sqlite store whose client fails, while the outage
lasts, the way MLflow's REST client fails when its server is down. No Ray runs.
"""
from __future__ import annotations

import time
from types import SimpleNamespace

import pytest
import requests
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException
from mlflow_helpers import store_uri

from orchestrator import mlflow_callback, sweep
from orchestrator.mlflow_callback import MlflowTrialLogger
from orchestrator.sweep_cli import check_outcome
from orchestrator.tracking import Tracker
from vpr_core.data.description import DataDescription
from vpr_core.errors import CommandFailed, exit_status
from vpr_tracking.measured_on import measured_on
from vpr_tracking.names import Context, Kind, Tag


class Outage:
    """The store's client, failing while `failing(method name)` is true."""

    def __init__(self, client):
        self._client = client
        self.failing = lambda name: False

    def __getattr__(self, name):
        method = getattr(self._client, name)

        def call(*args, **kwargs):
            if self.failing(name):
                try:
                    raise requests.ConnectionError("[Errno 111] Connection refused")
                except requests.ConnectionError as error:
                    # as mlflow.utils.rest_utils.http_request wraps it: INTERNAL_ERROR, no
                    # `from`, the requests error as the context
                    raise MlflowException(  # noqa: B904
                        f"API request to /{name} failed with exception {error}")
            return method(*args, **kwargs)
        return call


def trial(trial_id: str, arch: str) -> SimpleNamespace:
    """What the callback reads of a Tune trial."""
    return SimpleNamespace(trial_id=trial_id, checkpoint=None, last_result={},
                           error_file=None,
                           config={"arch": arch, "num_clusters": 16, "margin": 0.1,
                                   "lr": 1e-4})


def result(epoch: int, recall: float) -> dict:
    return {"epoch": epoch, "loss": 0.3 / epoch, "recall@1": recall - 0.2,
            "recall@5": recall, "recall@10": recall, "recall@20": recall}


@pytest.fixture()
def sweep_at(tmp_path, monkeypatch):
    """A sweep parent run, its callback (after Tune's `setup`) and two trials: `done`, that
    Tune completes after two epochs, and `cut`, that the end of the sweep interrupts after
    one. Epoch 1 of both is logged while the store answers."""
    uri = store_uri(tmp_path / "mlflow.db")
    tracker = Tracker(uri, "callback")
    parent = tracker.create_run("s", {}, {Tag.KIND: Kind.SWEEP, Tag.SWEEP: "s"})
    outage = Outage(tracker.store.client)
    monkeypatch.setattr(tracker.store, "client", outage)
    logger = MlflowTrialLogger(uri, "callback", parent, "s", {}, epochs=2)
    logger.setup()
    done, cut = trial("done_00000", "alexnet"), trial("cut_00001", "vgg16")
    for each in (done, cut):
        logger.on_trial_start(0, [done, cut], each)
        logger.on_trial_result(1, [done, cut], each, result(1, 0.5))
    plan = SimpleNamespace(spec=SimpleNamespace(metric="recall@5"), name="s",
                           experiment_path=str(tmp_path / "ray_results" / "s"), uri=uri,
                           experiment="callback")
    return SimpleNamespace(uri=uri, tracker=tracker, parent=parent, logger=logger,
                           outage=outage, done=done, cut=cut, plan=plan,
                           client=MlflowClient(uri))


def sweep_ends(at) -> None:
    """Tune's last hooks: `done`'s second epoch and its completion, then the sweep's end."""
    trials = [at.done, at.cut]
    at.logger.on_trial_result(2, trials, at.done, result(2, 0.6))
    at.logger.on_trial_complete(2, trials, at.done)
    at.logger.on_experiment_end(trials)


def run_of(at, each) -> tuple[str, list[int]]:
    """(status, logged epochs of Recall@5) of a trial's run, read past the outage."""
    run_id = at.logger.run_ids[each.trial_id]
    steps = [m.step for m in at.client.get_metric_history(run_id, "recall_at_5")]
    return at.client.get_run(run_id).info.status, steps


@pytest.mark.parametrize("back", ["during the final tries", "when the sweep closes"])
def test_a_store_that_comes_back_at_the_end_loses_nothing(sweep_at, monkeypatch, back, capsys):
    at = sweep_at
    if back == "during the final tries":
        back_at = time.monotonic() + 1.0  # the last hooks find it out of reach
        at.outage.failing = lambda name: time.monotonic() < back_at
    else:  # out of reach for all the callback's tries, back for the sweep's closing
        monkeypatch.setattr(mlflow_callback, "FLUSH_SECONDS", 0.3)
        at.outage.failing = lambda name: True
    sweep_ends(at)
    assert "out of reach" in capsys.readouterr().err
    at.outage.failing = lambda name: False
    result = sweep.finish(at.tracker, at.parent, at.plan, False, 1, 1.0)
    assert run_of(at, at.done) == ("FINISHED", [1, 2])
    assert run_of(at, at.cut) == ("KILLED", [1])
    assert at.client.get_run(at.logger.run_ids[at.done.trial_id]).data.tags[
        Tag.STOP_REASON] == "completed"
    assert result.unlogged == []
    check_outcome(result)  # exit status 0


def test_a_store_that_never_comes_back_names_what_was_lost(sweep_at, monkeypatch, capsys):
    at = sweep_at
    monkeypatch.setattr(mlflow_callback, "FLUSH_SECONDS", 0.3)
    at.outage.failing = lambda name: True
    sweep_ends(at)
    capsys.readouterr()
    status = exit_status(lambda: sweep.finish(at.tracker, at.parent, at.plan, False, 1, 1.0))
    err = capsys.readouterr().err
    assert status == 1, err
    assert "trial done_00000: epoch 2 metrics, end FINISHED" in err, err
    assert "the sweep: interrupted trials ended KILLED" in err, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    at.outage.failing = lambda name: False
    assert run_of(at, at.done) == ("RUNNING", [1])  # never KILLED: Tune completed it


def test_a_completed_trial_is_not_killed_when_its_end_was_lost(sweep_at, monkeypatch):
    """The store answers again just after the sweep's last try: it closes the sweep, but the
    completed trial's end is lost; the trial is named, not taken for an interrupted one."""
    at = sweep_at
    monkeypatch.setattr(mlflow_callback, "FLUSH_SECONDS", 0.3)
    at.outage.failing = lambda name: True
    sweep_ends(at)
    last_try = iter([True])  # the sweep's closing tries the kept events once more: it fails
    at.outage.failing = lambda name: next(last_try, False)
    result = sweep.finish(at.tracker, at.parent, at.plan, False, 1, 1.0)
    assert result.unlogged == ["trial done_00000: epoch 2 metrics, end FINISHED",
                               "the sweep: interrupted trials ended KILLED"]
    assert run_of(at, at.done) == ("RUNNING", [1])
    assert run_of(at, at.cut) == ("KILLED", [1])
    assert at.client.get_run(at.parent).info.status == "FINISHED"
    with pytest.raises(CommandFailed, match="not logged: trial done_00000: epoch 2 metrics"):
        check_outcome(result)  # exit status 1


def test_a_trial_started_while_the_store_is_away_gets_its_datasets_once_back(sweep_at,
                                                                             capsys):
    """Its run is made but its inputs are refused: the start is kept and logged again with the
    trial's next event, on the same run."""
    at = sweep_at
    measured = DataDescription("synth", "val", "pittsburgh", {"database": 24, "queries": 24},
                               "0123456789abcdef", "/data/synth")
    trained = DataDescription("synth", "train", "pittsburgh", {"database": 24, "queries": 24},
                              "fedcba9876543210", "/data/synth")
    at.logger.inputs = [(trained, Context.TRAINING), (measured, Context.VALIDATION)]
    late = trial("late_00002", "alexnet")
    at.outage.failing = lambda name: name == "log_inputs"
    at.logger.on_trial_start(0, [late], late)
    assert "out of reach" in capsys.readouterr().err and late.trial_id not in at.logger.run_ids
    at.outage.failing = lambda name: False
    at.logger.on_trial_result(1, [late], late, result(1, 0.5))
    runs = at.client.search_runs([at.tracker.experiment_id],
                                 f"tags.{Tag.TRIAL_ID} = '{late.trial_id}'")
    assert [run.info.run_id for run in runs] == [at.logger.run_ids[late.trial_id]]
    on = measured_on(at.tracker.store, runs[0].info.run_id)
    assert (on.dataset, on.split, on.digest) == ("synth", "val", "0123456789abcdef")
    assert run_of(at, late) == ("RUNNING", [1])
