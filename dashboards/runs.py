"""Reading what the orchestrator logged to MLflow: runs, their params and metric histories.

Everything goes through `MlflowClient` (no global active run, nothing written). Metric names
are turned back into this project's spelling: MLflow's `recall_at_5` is `recall@5` here.
Recalls are fractions (0.68 = 68 %), seconds are wall-clock seconds.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from vpr_core.errors import UserError
from vpr_core.tracking_uri import check_tracking_uri, metric_key

from .style import RECALL_NS

RECALL_NAMES = tuple(f"recall@{n}" for n in RECALL_NS)
CURVE_METRICS = RECALL_NAMES + ("loss", "epoch_seconds")
DEFAULT_METRIC = "recall@5"








@dataclass
class RunRecord:
    """One MLflow run as the dashboards need it.

    `history`: one dict per logged step (epoch for trials and training, 0 for evaluations),
    oldest first, with key 'epoch' and the metrics of `CURVE_METRICS` that were logged.
    `start_ms` / `end_ms`: epoch milliseconds; `end_ms` is None while the run is running.
    """

    run_id: str
    name: str
    experiment_id: str
    status: str
    start_ms: int
    end_ms: int | None
    params: dict = field(default_factory=dict)
    tags: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)  # latest value of each metric, MLflow's names
    history: list = field(default_factory=list)

    @property
    def kind(self) -> str:
        return self.tags.get("kind", "")

    @property
    def arch(self) -> str:
        return self.params.get("arch") or self.tags.get("arch") or "?"

    @property
    def num_clusters(self) -> int | None:
        value = self.params.get("num_clusters")
        return None if value in (None, "", "None") else int(float(value))

    def float_param(self, name: str) -> float | None:
        value = self.params.get(name)
        try:
            return None if value is None else float(value)
        except ValueError:
            return None

    @property
    def seconds(self) -> float | None:
        """Wall-clock duration, or None for a run that has not ended."""
        return None if self.end_ms is None else (self.end_ms - self.start_ms) / 1000.0

    def best_step(self, metric: str = DEFAULT_METRIC) -> dict:
        """The history entry with the highest `metric` ({} when it was never logged)."""
        logged = [h for h in self.history if metric in h]
        return max(logged, key=lambda h: h[metric], default={})

    def best_recalls(self, metric: str = DEFAULT_METRIC) -> dict:
        """{N: recall fraction} of the best step by `metric` ({} when none was logged)."""
        best = self.best_step(metric)
        return {n: best[f"recall@{n}"] for n in RECALL_NS if f"recall@{n}" in best}


class RunStore:
    """One MLflow tracking store: its runs read back, and a picture logged to a run."""

    def __init__(self, uri: str | None):
        from mlflow import MlflowClient

        self.uri = check_tracking_uri(uri, must_exist=True)
        self.client = self._call("the store", MlflowClient, tracking_uri=self.uri)

    def _call(self, what: str, function, *args, **kwargs):
        """`function(*args)`, with any store failure turned into a one-line `UserError`."""
        from mlflow.exceptions import MlflowException

        try:
            return function(*args, **kwargs)
        except MlflowException as error:
            if error.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise UserError(f"{what} is not in the MLflow store {self.uri}; check the "
                                f"id and --tracking-uri") from None
            raise UserError(_store_failure(self.uri, error)) from None
        except Exception as error:  # an unreachable server, a damaged database
            raise UserError(_store_failure(self.uri, error)) from None

    def experiment_id(self, name: str) -> str:
        found = self._call(f"experiment {name}", self.client.get_experiment_by_name, name)
        if found is None:
            names = sorted(e.name for e in self._call("experiments",
                                                      self.client.search_experiments))
            raise UserError(f"no experiment named {name!r} in {self.uri}; pass --experiment "
                            f"with one of: {', '.join(names) or '(none)'}")
        return found.experiment_id

    def latest_sweep_experiment(self) -> str:
        """The name of the experiment holding the most recent sweep (the default to show)."""
        experiments = self._call("experiments", self.client.search_experiments)
        ids = [e.experiment_id for e in experiments]
        runs = self._call("runs", self.client.search_runs, ids, filter_string="tags.kind = "
                          "'sweep'", order_by=["attributes.start_time DESC"],
                          max_results=1) if ids else []
        if not runs:
            raise UserError(f"no sweep in {self.uri}; run `python -m orchestrator sweep` first "
                            f"or pass --experiment")
        return next(e.name for e in experiments if e.experiment_id == runs[0].info.experiment_id)

    def run(self, run_id: str, with_history: bool = True) -> RunRecord:
        """The run `run_id` (a `UserError` when the store does not hold it)."""
        run = self._call(f"run {run_id}", self.client.get_run, run_id)
        return self._record(run, with_history)

    def search(self, experiment_id: str, filter_string: str = "", newest_first: bool = False,
               with_history: bool = True) -> list[RunRecord]:
        """Active runs of one experiment matching an MLflow filter, by start time."""
        order = "DESC" if newest_first else "ASC"
        runs = self._call("runs", self.client.search_runs, [experiment_id],
                          filter_string=filter_string,
                          order_by=[f"attributes.start_time {order}"], max_results=10000)
        return [self._record(run, with_history) for run in runs]

    def history(self, run_id: str, names=CURVE_METRICS) -> list[dict]:
        """Per-step values of the metrics `names` (this project's names), oldest step first."""
        by_step: dict[int, dict] = {}
        for name in names:
            points = self._call(f"run {run_id}", self.client.get_metric_history, run_id,
                                metric_key(name))
            for point in points:
                by_step.setdefault(point.step, {"epoch": point.step})[name] = point.value
        return [by_step[step] for step in sorted(by_step)]

    def require_artifact(self, run_id: str, artifact_path: str) -> None:
        """A `UserError` unless run `run_id` exists and logged the file `artifact_path`."""
        self.run(run_id, with_history=False)  # an unknown run is named as such
        listed = self._call(f"run {run_id}", self.client.list_artifacts, run_id,
                            str(Path(artifact_path).parent))
        if artifact_path not in {item.path for item in listed}:
            raise UserError(f"run {run_id} has no artifact {artifact_path}; pass a run that "
                            f"logged its checkpoint (a finished trial or training run)")

    def download(self, run_id: str, artifact_path: str, destination: Path) -> Path:
        """One artifact file of a run, copied into `destination`; returns the local path."""
        local = self._call(f"run {run_id}", self.client.download_artifacts, run_id,
                           artifact_path, str(destination))
        return Path(local)

    def log_file(self, run_id: str, path: Path, folder: str) -> None:
        """Log one file as an artifact of `run_id` under `folder`."""
        self._call(f"run {run_id}", self.client.log_artifact, run_id, str(path), folder)

    def _record(self, run, with_history: bool) -> RunRecord:
        info, data = run.info, run.data
        return RunRecord(run_id=info.run_id, name=info.run_name or "",
                         experiment_id=info.experiment_id, status=info.status,
                         start_ms=info.start_time or 0, end_ms=info.end_time,
                         params=dict(data.params), tags=dict(data.tags),
                         metrics=dict(data.metrics),
                         history=self.history(info.run_id) if with_history else [])


def _store_failure(uri: str, error: Exception) -> str:
    first = (str(error).splitlines() or [""])[0][:160]
    return f"cannot read the MLflow store {uri} ({type(error).__name__}: {first}); check " \
           f"--tracking-uri"


def sweep_parent(store: RunStore, experiment_id: str, sweep: str | None = None,
                 parent_run_id: str | None = None) -> RunRecord:
    """The sweep's parent run: `parent_run_id`, else the latest sweep named `sweep`, else the
    latest sweep of the experiment."""
    if parent_run_id is not None:
        parent = store.run(parent_run_id, with_history=False)
        if parent.experiment_id != experiment_id or parent.kind != "sweep":
            raise UserError(f"run {parent_run_id} is not a sweep of this experiment (its kind is "
                            f"{parent.kind or 'unset'}); pass the parent run of a sweep")
        return parent
    clauses = ["tags.kind = 'sweep'"] + ([f"tags.sweep = '{_quoted(sweep)}'"] if sweep else [])
    found = store.search(experiment_id, " and ".join(clauses), newest_first=True,
                         with_history=False)
    if not found:
        which = f"named {sweep!r}" if sweep else "at all"
        raise UserError(f"the experiment has no sweep {which}; run `python -m orchestrator "
                        f"sweep` first, or pass --experiment / --sweep of an existing one")
    return found[0]


def trials_of(store: RunStore, parent: RunRecord) -> list[RunRecord]:
    """The child runs of a sweep parent, in the order they started, with their histories."""
    return store.search(parent.experiment_id,
                        f"tags.`mlflow.parentRunId` = '{parent.run_id}'")


def _quoted(value: str) -> str:
    """A value safe inside an MLflow filter's single quotes."""
    if "'" in value:
        raise UserError(f"{value!r} contains a quote; pass a sweep name without quotes")
    return value
