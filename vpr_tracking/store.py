"""The one MLflow client: runs written and read back, every store failure converted once.

Everything goes through `MlflowClient` (no global active run). Metric names are turned back
into this project's spelling on reading: MLflow's `recall_at_5` is `recall@5` here. SQLite
stores keep their artifacts in `mlruns/` beside the database file, whatever the working
directory. A failure of the store (out of reach, damaged, a run it does not hold) is a
`UserError` naming the store; an error of this code's own making is left as it is.
"""
from __future__ import annotations

import functools
import math
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from vpr_core.errors import UserError, first_line
from vpr_core.log import log

from .names import (
    CURVE_METRICS,
    DEFAULT_METRIC,
    MODEL_EXPERIMENT,
    RECALL_NS,
    Tag,
    metric_key,
    recall_name,
)
from .uri import check_tracking_uri, sqlite_file

# MLflow's codes for a store that cannot answer for now (not for a wrong request): its
# sqlalchemy store turns every OperationalError of the database (a locked sqlite file among
# them) into TEMPORARILY_UNAVAILABLE; a server says 503, 504 or 429 with these. INTERNAL_ERROR
# is MLflow's default code for any failure, so it says nothing on its own.
UNREACHABLE_CODES = ("TEMPORARILY_UNAVAILABLE", "DEADLINE_EXCEEDED", "REQUEST_LIMIT_EXCEEDED")
# where the exceptions of a store come from: MLflow itself and what it talks through
STORE_MODULES = ("mlflow", "sqlalchemy", "sqlite3", "requests", "urllib3")


class StoreUnreachable(UserError):
    """The tracking store did not answer (a server down or overloaded, a locked database)."""


def tracking_unreachable(error: BaseException) -> bool:
    """Whether `error` says the tracking store could not be reached, rather than that this
    code asked for something wrong.

    MLflow's REST client wraps a refused connection in a plain `MlflowException`
    (INTERNAL_ERROR) raised while handling the `requests` error, so the chain of causes is
    read, not only the error itself."""
    import requests
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import OperationalError

    out_of_reach = (StoreUnreachable, requests.ConnectionError, requests.Timeout,
                    requests.exceptions.RetryError, ConnectionError, TimeoutError,
                    OperationalError)
    for link in _causes(error):
        if isinstance(link, out_of_reach):
            return True
        if isinstance(link, MlflowException) and link.error_code in UNREACHABLE_CODES:
            return True
    return False


def _causes(error: BaseException | None, depth: int = 8):
    """`error`, then what it was raised from or while handling, a few links deep."""
    while error is not None and depth > 0:
        yield error
        error, depth = error.__cause__ or error.__context__, depth - 1


@dataclass
class RunRecord:
    """One MLflow run as it is read back.

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
        return self.tags.get(Tag.KIND, "")

    @property
    def arch(self) -> str:
        return self.params.get("arch") or self.tags.get(Tag.ARCH) or "?"

    @property
    def aggregator(self) -> str:
        """The model's aggregator (`pooling` in runs logged before the field's models;
        NetVLAD in runs older still)."""
        return self.params.get("aggregator") or self.params.get("pooling") or "netvlad"

    @property
    def model(self) -> str:
        """'resnet18 gem', 'vgg16 netvlad K=64': the backbone, the aggregator and K."""
        k = f" K={self.num_clusters}" if self.num_clusters is not None else ""
        return f"{self.arch} {self.aggregator}{k}"

    @property
    def num_clusters(self) -> int | None:
        value = self.params.get("num_clusters")
        return None if value in (None, "", "None") else int(float(value))

    def best_step(self, metric: str = DEFAULT_METRIC) -> dict:
        """The history entry with the highest `metric` ({} when it was never logged)."""
        logged = [h for h in self.history if metric in h]
        return max(logged, key=lambda h: h[metric], default={})

    def best_recalls(self, metric: str = DEFAULT_METRIC) -> dict:
        """{N: recall fraction} of the best step by `metric` ({} when none was logged)."""
        best = self.best_step(metric)
        return {n: best[recall_name(n)] for n in RECALL_NS if recall_name(n) in best}


def open_store(uri: str | None, must_exist: bool = False) -> Store:
    """The store named by a `--tracking-uri` value (checked here, once per command).
    `must_exist`: for readers, a missing sqlite database is an error, not a new empty store."""
    return store_at(check_tracking_uri(uri, must_exist=must_exist))


def as_store(store: Store | str | None) -> Store:
    """`store` as given, or the store of a `--tracking-uri` value, which must exist (a reader
    never makes an empty store)."""
    return store if isinstance(store, Store) else open_store(store, must_exist=True)


@functools.lru_cache(maxsize=None)
def store_at(uri: str) -> Store:
    """The client of the checked URI `uri`: one per store and process."""
    return Store(uri)


class Store:
    """One MLflow tracking store, at an already checked URI."""

    def __init__(self, uri: str):
        # MLflow draws a progress bar for every artifact it downloads (a checkpoint being
        # registered, a models:/ reference): noise in a command's output. A user's own
        # setting of the variable stands.
        os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
        from mlflow import MlflowClient

        self.uri = uri
        database = sqlite_file(uri)
        if database is not None:
            database.parent.mkdir(parents=True, exist_ok=True)
        self.client = self._call("the store", MlflowClient, tracking_uri=uri)

    def _call(self, what: str, function, *args, **kwargs):
        """`function(*args)`, with a failure of the store turned into a one-line `UserError`."""
        from mlflow.exceptions import MlflowException

        try:
            return function(*args, **kwargs)
        except Exception as error:  # noqa: BLE001 - sorted out just below
            if not _from_store(error):
                raise  # this code's own mistake: not the store's
            if isinstance(error, MlflowException) and \
                    error.error_code == "RESOURCE_DOES_NOT_EXIST":
                raise UserError(f"{what} is not in the MLflow store {self.uri}; check the "
                                f"id and --tracking-uri") from None
            first = first_line(error, 160)
            failure = StoreUnreachable if tracking_unreachable(error) else UserError
            raise failure(f"cannot use the MLflow store {self.uri} ({type(error).__name__}: "
                          f"{first}); check --tracking-uri") from None

    # ---- experiments --------------------------------------------------------------------
    def experiment_id(self, name: str, create: bool = False) -> str:
        """The id of experiment `name`; with `create`, made (or tagged) as one of trained
        models when missing, else a `UserError` listing the experiments there are."""
        found = self._call(f"experiment {name}", self.client.get_experiment_by_name, name)
        if found is None and create:
            return self._call(f"experiment {name}", self.client.create_experiment, name,
                              artifact_location=self._artifact_location(),
                              tags={Tag.EXPERIMENT_KIND: MODEL_EXPERIMENT})
        if found is None:
            names = sorted(name for _, name in self.experiments())
            raise UserError(f"no experiment named {name!r} in {self.uri}; pass --experiment "
                            f"with one of: {', '.join(names) or '(none)'}")
        if create and Tag.EXPERIMENT_KIND not in found.tags:  # made before the tag was set
            self._call(f"experiment {name}", self.client.set_experiment_tag,
                       found.experiment_id, Tag.EXPERIMENT_KIND, MODEL_EXPERIMENT)
        return found.experiment_id

    def _artifact_location(self) -> str | None:
        database = sqlite_file(self.uri)
        if database is None:
            return None  # a server decides (its artifact proxy)
        return (database.parent / "mlruns").absolute().as_uri()

    def experiment_name(self, experiment_id: str) -> str:
        return self._call(f"experiment {experiment_id}", self.client.get_experiment,
                          experiment_id).name

    def experiments(self) -> list[tuple[str, str]]:
        """(id, name) of every active experiment, the most recently updated first."""
        found = self._call("experiments", self.client.search_experiments,
                           order_by=["last_update_time DESC"])
        return [(e.experiment_id, e.name) for e in found]

    def all_experiment_ids(self) -> list[str]:
        return [experiment_id for experiment_id, _ in self.experiments()]

    # ---- reading ------------------------------------------------------------------------
    def run(self, run_id: str, with_history: bool = True) -> RunRecord:
        """The run `run_id` (a `UserError` when the store does not hold it)."""
        run = self._call(f"run {run_id}", self.client.get_run, run_id)
        return self._record(run, with_history)

    def search(self, experiment_ids: str | list[str], filter_string: str = "",
               newest_first: bool = False, with_history: bool = True,
               max_results: int = 10000) -> list[RunRecord]:
        """Active runs of the experiments matching an MLflow filter, by start time."""
        ids = [experiment_ids] if isinstance(experiment_ids, str) else list(experiment_ids)
        if not ids:
            return []
        order = "DESC" if newest_first else "ASC"
        runs = self._call("runs", self.client.search_runs, ids, filter_string=filter_string,
                          order_by=[f"attributes.start_time {order}"], max_results=max_results)
        return [self._record(run, with_history) for run in runs]

    def find_run(self, experiment_id: str, **tags) -> str | None:
        """The newest run whose tags equal `tags` (for resumed work: no duplicates)."""
        found = self.search(experiment_id, tag_filter(**tags), newest_first=True,
                            with_history=False, max_results=1)
        return found[0].run_id if found else None

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
        return Path(self._call(f"run {run_id}", self.client.download_artifacts, run_id,
                               artifact_path, str(destination)))

    def _record(self, run, with_history: bool) -> RunRecord:
        info, data = run.info, run.data
        return RunRecord(run_id=info.run_id, name=info.run_name or "",
                         experiment_id=info.experiment_id, status=info.status,
                         start_ms=info.start_time or 0, end_ms=info.end_time,
                         params=dict(data.params), tags=dict(data.tags),
                         metrics=dict(data.metrics),
                         history=self.history(info.run_id) if with_history else [])

    # ---- writing ------------------------------------------------------------------------
    def create_run(self, experiment_id: str, name: str, params: dict, tags: dict) -> str:
        tags = {k: str(v) for k, v in tags.items() if v is not None}
        commit = git_commit()
        if commit:
            tags.setdefault(Tag.GIT_COMMIT, commit)
        run = self._call("a new run", self.client.create_run, experiment_id, run_name=name,
                         tags=tags)
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_params(self, run_id: str, params: dict) -> None:
        """Log the params a run does not hold yet (MLflow refuses to change one)."""
        from mlflow.entities import Param

        existing = self._call(f"run {run_id}", self.client.get_run, run_id).data.params
        new = [Param(k, str(v)[:6000]) for k, v in params.items()
               if v is not None and k not in existing]
        if new:
            self._call(f"run {run_id}", self.client.log_batch, run_id, params=new)

    def log_metrics(self, run_id: str, metrics: dict, step: int) -> None:
        """Log the finite numbers of `metrics` (this project's names) at `step`: NaN and
        infinity are left out (MLflow would store infinity as the largest float)."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(metric_key(k), float(v), now, step) for k, v in metrics.items()
                 if isinstance(v, (int, float)) and not isinstance(v, bool)
                 and math.isfinite(v)]
        if batch:
            self._call(f"run {run_id}", self.client.log_batch, run_id, metrics=batch)

    def log_datasets(self, run_id: str, inputs: list) -> None:
        """Log `inputs`, (`DataDescription`, context) pairs, as the run's dataset inputs (see
        `datasets`); one already logged is not logged again. A dataset never costs a run its
        results: a failure is a warning, except a store out of reach (which the next write
        would meet anyway, and which a sweep's logger keeps to log again)."""
        from .datasets import dataset_input, in_measured_order

        try:
            entities = [dataset_input(d, context) for d, context in in_measured_order(inputs)]
            if entities:
                self._call(f"run {run_id}", self.client.log_inputs, run_id, datasets=entities)
        except StoreUnreachable:
            raise
        except Exception as error:  # noqa: BLE001 - the run's results come first
            first = first_line(error, 200)
            log.warning(f"the datasets of MLflow run {run_id} were not logged "
                        f"({type(error).__name__}: {first})")

    def datasets(self, run_id: str) -> list:
        """The run's dataset inputs as (`DataDescription`, context) pairs, in logged order."""
        from .datasets import described

        run = self._call(f"run {run_id}", self.client.get_run, run_id)
        return [described(logged) for logged in run.inputs.dataset_inputs]

    def set_tags(self, run_id: str, tags: dict) -> None:
        for key, value in tags.items():
            if value is not None:
                self._call(f"run {run_id}", self.client.set_tag, run_id, key, str(value)[:5000])

    def log_file(self, run_id: str, path: Path | None, folder: str | None = None) -> None:
        """Log one file as an artifact of `run_id` under `folder` (a missing file is skipped:
        a run that ended before its first checkpoint has none)."""
        if path is not None and Path(path).is_file():
            self._call(f"run {run_id}", self.client.log_artifact, run_id, str(path), folder)

    def log_folder(self, run_id: str, folder: Path, artifact_folder: str) -> None:
        self._call(f"run {run_id}", self.client.log_artifacts, run_id, str(folder),
                   artifact_folder)

    def start(self, run_id: str) -> None:
        """Mark a run RUNNING again: resumed work continues it."""
        self._call(f"run {run_id}", self.client.update_run, run_id, status="RUNNING")

    def end(self, run_id: str, status: str) -> None:
        self._call(f"run {run_id}", self.client.set_terminated, run_id, status=status)

    def delete(self, run_id: str) -> None:
        self._call(f"run {run_id}", self.client.delete_run, run_id)

    def status(self, run_id: str) -> str:
        return self._call(f"run {run_id}", self.client.get_run, run_id).info.status

    def latest(self, kind: str, experiment_ids: list[str] | None = None, **tags
               ) -> RunRecord | None:
        """The newest run of `kind` (with `tags`) in the experiments (default: all)."""
        ids = self.all_experiment_ids() if experiment_ids is None else experiment_ids
        found = self.search(ids, tag_filter(**{Tag.KIND: kind}, **tags), newest_first=True,
                            with_history=False, max_results=1)
        return found[0] if found else None


def tag_filter(**tags) -> str:
    """An MLflow filter for runs whose tags equal `tags`."""
    for value in tags.values():
        if "'" in str(value):
            raise UserError(f"{value!r} contains a quote; pass a name without quotes")
    return " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())


def children_filter(parent_run_id: str) -> str:
    return tag_filter(**{Tag.PARENT: parent_run_id})


def _from_store(error: BaseException) -> bool:
    """Whether an exception comes from the tracking store (or the way to it)."""
    if isinstance(error, (ConnectionError, TimeoutError)):
        return True
    return type(error).__module__.split(".")[0] in STORE_MODULES


@functools.lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The checkout's commit (one `git` call per process, not one per run)."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


