"""A Ray Tune callback, run in the sweep's driver, that keeps one MLflow child run per trial.

It looks a trial's run up by tags before creating one, so a restored sweep continues the same
runs instead of duplicating them; it logs each epoch once (by step), the artifacts at the end
(best checkpoint, flags.json, centroids, recall curve), and ends every run FINISHED, FAILED or
KILLED. It also logs one progress line per trial epoch.

An event the store did not take (it was out of reach) is kept and logged before the next one;
at the end of the sweep the events still kept are tried again for `FLUSH_SECONDS`, and what is
left is named, trial by trial, for the sweep to report as lost.
"""
from __future__ import annotations

import functools
import inspect
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ray import tune

from vpr_core.errors import first_line
from vpr_core.log import log
from vpr_tracking import search_space
from vpr_tracking.names import (
    EPOCH_METRICS,
    FAILED,
    FINISHED,
    KILLED,
    RECALL_NS,
    RUNNING,
    Kind,
    Tag,
    recall_name,
)
from vpr_tracking.store import tracking_unreachable

from .tracking import Tracker, log_run_files

# how long the end of a sweep keeps trying to log the events the store did not take
FLUSH_SECONDS = 10.0
FIRST_WAIT_SECONDS = 0.5  # between the first tries; doubled after each one

# the logger of each sweep running in this process, by parent run id: on a resume Tune calls
# the copy it unpickled, which only registers itself (in `setup`) for the sweep's end to find
_LOGGERS: dict[str, MlflowTrialLogger] = {}


def take_trial_logger(parent_run_id: str) -> MlflowTrialLogger | None:
    """The logger that Tune called for the sweep `parent_run_id`, handed over once."""
    return _LOGGERS.pop(parent_run_id, None)


@dataclass
class _Event:
    """One hook call, kept until the store takes it."""

    hook: Callable
    args: tuple
    kwargs: dict

    def describe(self) -> tuple[str | None, str]:
        """(the trial's id, or None for the sweep as a whole; what the event logs)."""
        given = inspect.signature(self.hook).bind(None, *self.args, **self.kwargs).arguments
        trial = given.get("trial")
        name = self.hook.__name__
        if name == "on_trial_result":
            what = f"epoch {_step(given['result'])} metrics"
        elif name == "_finish":
            what = f"end {given['status']}"
        else:
            what = {"on_trial_start": "run start", "on_trial_restore": "run resume",
                    "on_trial_recover": "worker failure",
                    "_end_interrupted": "interrupted trials ended KILLED"}.get(name, name)
        return (trial.trial_id if trial is not None else None), what


def _tolerant(hook):
    """Logging goes on when the tracking store is out of reach: the event is kept and logged
    again before the next one (nothing is lost once the store answers), and the driver says so.
    Any other error is a bug and ends the sweep like one."""
    @functools.wraps(hook)
    def wrapper(self, *args, **kwargs):
        self._pending.append(_Event(hook, args, kwargs))
        error = _replay(self)
        if error is not None:
            log.warning(f"MLflow at {self.uri} is out of reach ({type(error).__name__}: "
                        f"{first_line(error, 160)}); {len(self._pending)} "
                        f"event(s) kept, tried again with the next one and at the end")
    return wrapper


def _replay(callback) -> Exception | None:
    """Log the kept events of `callback`, oldest first, until the store fails; returns that
    failure (None when every event was logged). An event that fails otherwise is a bug: it is
    dropped and its error raised."""
    while callback._pending:
        event = callback._pending.pop(0)
        try:
            event.hook(callback, *event.args, **event.kwargs)
        except Exception as error:  # noqa: BLE001 - sorted out just below
            if not tracking_unreachable(error):
                raise
            callback._pending.insert(0, event)
            return error
    return None


def unlogged(events: list[_Event]) -> list[str]:
    """What `events` would have logged, one line per trial in the order the events came:
    'trial 3f2a_00001: epoch 3 metrics, end FINISHED'."""
    by_trial: dict[str | None, list[str]] = {}
    for event in events:
        trial, what = event.describe()
        by_trial.setdefault(trial, []).append(what)
    return [f"{'trial ' + trial if trial else 'the sweep'}: {', '.join(whats)}"
            for trial, whats in by_trial.items()]


class MlflowTrialLogger(tune.Callback):
    """`fixed_params`: what every trial's run logs besides its searched values;
    `point_params`: {deciding key (`search_space.deciding_key`): what the runs of trials with
    those values (aggregator, loss, ...) log besides those}; `inputs`: the (`DataDescription`,
    context) pairs every trial's run logs as its dataset inputs."""

    def __init__(self, uri: str, experiment: str, parent_run_id: str, sweep_name: str,
                 fixed_params: dict, epochs: int, point_params: dict | None = None,
                 inputs: list | None = None):
        self.uri, self.experiment = uri, experiment
        self.parent_run_id, self.sweep_name = parent_run_id, sweep_name
        self.fixed_params, self.epochs = fixed_params, epochs
        self.point_params = point_params or {}
        self.inputs = list(inputs or [])
        self._reset()

    def _reset(self) -> None:
        self._tracker: Tracker | None = None
        self._pending: list[_Event] = []  # events not logged yet: the store was out of reach
        self.run_ids: dict[str, str] = {}
        self.histories: dict[str, list] = {}
        self.failures: dict[str, int] = {}
        # {trial id: FINISHED or FAILED} of the trials Tune ended, whether or not the store
        # took their end: the sweep's end must not take them for interrupted ones
        self.ended: dict[str, str] = {}

    # pickled with the sweep's state for Tuner.restore: keep settings, rebuild the rest
    def __getstate__(self) -> dict:
        return {k: getattr(self, k) for k in ("uri", "experiment", "parent_run_id",
                                              "sweep_name", "fixed_params", "epochs",
                                              "point_params", "inputs")}

    def __setstate__(self, state: dict) -> None:
        # older sweeps kept {aggregator: params}, or nothing; and no inputs
        older = {search_space.deciding_key({"aggregator": aggregator}): params
                 for aggregator, params in state.pop("aggregator_params", {}).items()}
        self.__dict__.update({"point_params": older, "inputs": [], **state})
        self._reset()

    @property
    def tracker(self) -> Tracker:
        if self._tracker is None:
            self._tracker = Tracker(self.uri, self.experiment)  # one client per store
        return self._tracker

    def flush(self, seconds: float | None = None) -> list[str]:
        """Try the kept events again for up to `seconds` (default `FLUSH_SECONDS`; at least
        once), waiting longer after each failed try; returns what is still not logged."""
        seconds = FLUSH_SECONDS if seconds is None else seconds
        deadline, wait = time.monotonic() + seconds, FIRST_WAIT_SECONDS
        if self._pending and seconds > 0:
            log.warning(f"{len(self._pending)} event(s) not logged to MLflow yet; trying "
                        f"{self.uri} again for up to {seconds:g} s")
        while _replay(self) is not None and time.monotonic() < deadline:
            time.sleep(min(wait, max(0.0, deadline - time.monotonic())))
            wait *= 2
        return unlogged(self._pending)

    # ---- Tune hooks ---------------------------------------------------------------------
    def setup(self, **info):
        _LOGGERS[self.parent_run_id] = self  # the instance Tune calls, resumed or not

    @_tolerant
    def on_trial_start(self, iteration, trials, trial, **info):
        self._run_for(trial)

    @_tolerant
    def on_trial_restore(self, iteration, trials, trial, **info):
        self._run_for(trial)

    @_tolerant
    def on_trial_recover(self, iteration, trials, trial, **info):
        """The trial's process died, or it failed: Tune retries it from its last checkpoint.

        A failure that would repeat (a `UserError`, such as a NaN loss) is retried by Tune too
        (it retries every failure), but the retry ends at its start without training again
        (see `trainer.train_trial`); it is not a lost worker."""
        run_id = self._run_for(trial)
        error = _error_text(trial)
        if _deterministic(error):
            log.info(f"[{_trial_label(trial)}] failed: {error} (it would fail again; not "
                     f"trained again)")
            return
        self.failures[trial.trial_id] = self.failures.get(trial.trial_id, 0) + 1
        self.tracker.store.set_tags(run_id, {Tag.WORKER_FAILURES:
                                             self.failures[trial.trial_id]})
        log.info(f"[{_trial_label(trial)}] worker lost; retrying from its last checkpoint")

    @_tolerant
    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self._run_for(trial)
        step = _step(result)
        history = self.histories.setdefault(trial.trial_id, [])
        if step <= max((h["epoch"] for h in history), default=0):
            return  # an epoch logged before a restore: logged once only
        metrics = {k: result[k] for k in EPOCH_METRICS if k in result}
        self.tracker.store.log_metrics(run_id, metrics, step=step)
        history.append({"epoch": step, **metrics})
        self._say_epoch(trial, step, result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self.ended[trial.trial_id] = FINISHED
        self._finish(trial, FINISHED)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.ended[trial.trial_id] = FAILED
        self._finish(trial, FAILED, error=_error_text(trial))

    def on_experiment_end(self, trials, **info):
        self._end_interrupted(trials)
        lost = self.flush()
        if lost:
            log.warning(f"MLflow at {self.uri} did not take: {'; '.join(lost)}")

    @_tolerant
    def _end_interrupted(self, trials) -> None:
        """Trials stopped by an interruption keep their runs, ended KILLED (resumable)."""
        for trial in trials:
            run_id = self.run_ids.get(trial.trial_id)
            if run_id and trial.trial_id not in self.ended and \
                    self.tracker.store.status(run_id) == RUNNING:
                self.tracker.store.end(run_id, KILLED)

    # ---- runs ---------------------------------------------------------------------------
    def _run_for(self, trial) -> str:
        if trial.trial_id in self.run_ids:
            return self.run_ids[trial.trial_id]
        tracker, store = self.tracker, self.tracker.store
        searched = search_space.searched_values(trial.config)
        params = dict(self.fixed_params,
                      **self.point_params.get(search_space.deciding_key(searched), {}),
                      **searched)
        run_id = tracker.find_run(**{Tag.PARENT: self.parent_run_id,
                                     Tag.TRIAL_ID: trial.trial_id})
        if run_id is not None and not _same_params(store, run_id, searched):
            store.delete(run_id)  # a lost trial's run that reused this trial id
            run_id = None
        if run_id is None:
            run_id = tracker.create_run(
                _trial_label(trial), params,
                {Tag.PARENT: self.parent_run_id, Tag.TRIAL_ID: trial.trial_id,
                 Tag.SWEEP: self.sweep_name, Tag.KIND: Kind.TRIAL,
                 Tag.ARCH: trial.config.get("arch")})
        else:
            store.start(run_id)  # a resumed trial continues
            self.histories[trial.trial_id] = store.history(run_id, EPOCH_METRICS)
        # before the id is kept: an input the store did not take is logged with the replay
        store.log_datasets(run_id, self.inputs)
        self.run_ids[trial.trial_id] = run_id
        return run_id

    @_tolerant
    def _finish(self, trial, status: str, error: str | None = None) -> None:
        run_id = self._run_for(trial)
        history = self.histories.get(trial.trial_id, [])
        epochs_run = max((h["epoch"] for h in history), default=0)
        if error:
            reason = f"failed: {error}"
        elif epochs_run < self.epochs:
            reason = f"stopped early after epoch {epochs_run} (ASHA)"
        else:
            reason = "completed"
        store = self.tracker.store
        store.set_tags(run_id, {Tag.STOP_REASON: reason, Tag.EPOCHS_RUN: epochs_run})
        try:
            self._log_artifacts(trial, run_id, history)
        finally:
            store.end(run_id, status)
        log.info(f"[{_trial_label(trial)}] {reason}")

    def _log_artifacts(self, trial, run_id: str, history: list) -> None:
        centroids = (trial.last_result or {}).get("centroids") or None
        title, arch = _trial_label(trial), trial.config.get("arch")
        store = self.tracker.store
        if trial.checkpoint is None:
            log_run_files(store, run_id, None, centroids, history, arch, title)
            return
        with trial.checkpoint.as_directory() as folder:
            log_run_files(store, run_id, Path(folder), centroids, history, arch, title)

    def _say_epoch(self, trial, step: int, result: dict) -> None:
        recalls = " ".join(f"R@{n} {result.get(recall_name(n), math.nan):.3f}"
                           for n in RECALL_NS)
        log.info(f"[{_trial_label(trial)}] epoch {step}/{self.epochs}: loss "
                 f"{result.get('loss', math.nan):.4f} {recalls} "
                 f"({result.get('epoch_seconds', math.nan):.0f} s)")


def _step(result: dict) -> int:
    """The epoch a Tune result is of."""
    return int(result.get("epoch", result.get("training_iteration", 0)))


def _trial_label(trial) -> str:
    return f"{trial.trial_id} {search_space.run_label(trial.config)}"


def _same_params(store, run_id: str, searched: dict) -> bool:
    logged = store.run(run_id, with_history=False).params
    return all(logged.get(k) == str(v) for k, v in searched.items())


def _deterministic(error: str) -> bool:
    """Whether a trial's error is one that would repeat (a user error, not a lost process)."""
    return "UserError" in error or "TrainingDiverged" in error


def _error_text(trial) -> str:
    """The last line of the trial's error (the exception and its message)."""
    text = ""
    try:
        if trial.error_file and Path(trial.error_file).is_file():
            text = Path(trial.error_file).read_text()
    except OSError:
        pass
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    for line in reversed(lines):
        if "Error" in line or "Exception" in line or "Diverged" in line:
            return line[:500]
    return lines[-1][:500] if lines else "unknown error"
