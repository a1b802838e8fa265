"""A sweep as MLflow holds it: its parent run, its trial runs, and each trial as a table row.

The sweep's closing table, its `trials.json`, the HTML report and the dashboards all read
trials through `trial_rows`, so a resumed sweep reports the same runs it continued.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

from vpr_core.errors import UserError
from vpr_core.evaluation import named_recalls

from .names import DEFAULT_METRIC, RECALL_NAMES, RECALL_NS, Kind, Tag, recall_n
from .search_space import LISTED, run_label, space_from_params, values_of
from .store import RunRecord, Store, children_filter


@dataclass
class TrialRow:
    """One trial. `values`: its searched settings; `recalls`: its best epoch's {N: fraction}
    (by the sweep's metric); `seconds`: wall-clock so far; `curves`, `link` and `best` are
    filled in by the report."""

    trial_id: str
    run_id: str
    values: dict
    recalls: dict
    epochs: int
    status: str  # MLflow status
    reason: str
    seconds: float
    training_seconds: float
    curves: str | None = None
    link: str | None = None
    best: bool = False

    @property
    def arch(self) -> str:
        return self.values.get("arch", "?")

    @property
    def label(self) -> str:
        return run_label(self.values)

    def to_dict(self) -> dict:
        return {"trial_id": self.trial_id, "mlflow_run_id": self.run_id, **self.values,
                "epochs": self.epochs,
                **named_recalls(self.recalls),
                "status": self.status, "reason": self.reason,
                "seconds": round(self.seconds, 1),
                "training_seconds": round(self.training_seconds, 1),
                "curves": self.curves, "best": self.best}


def epochs_of(run: RunRecord) -> list[dict]:
    """The run's history entries that are training epochs (a loss or a recall logged)."""
    return [h for h in run.history if "loss" in h or any(k in h for k in RECALL_NAMES)]


def trial_row(run: RunRecord, metric: str = DEFAULT_METRIC, searched=None) -> TrialRow:
    """`searched`: the names of the dimensions the sweep searched (default: the `listed`
    ones)."""
    end_ms = run.end_ms or int(time.time() * 1000)  # a running trial: so far
    history = epochs_of(run)
    return TrialRow(
        trial_id=run.tags.get(Tag.TRIAL_ID) or run.name or run.run_id[:8], run_id=run.run_id,
        values=values_of(run.params, searched), recalls=run.best_recalls(metric),
        epochs=len(history),
        status=run.status, reason=run.tags.get(Tag.STOP_REASON, ""),
        seconds=(end_ms - run.start_ms) / 1000.0,
        training_seconds=sum(h.get("epoch_seconds", 0.0) for h in history))


def rank_key(recalls: dict, metric: str = DEFAULT_METRIC) -> tuple[float, ...]:
    """What ranks trials, higher first: the recall by `metric`, then, to break a tie, the other
    Recall@N in increasing N (a Recall@5 of 1.0 is common on small sets; Recall@1 then tells
    them apart). `recalls`: {N: fraction}; a recall not logged ranks lowest."""
    first = recall_n(metric)
    order = [first] + [n for n in RECALL_NS if n != first]
    return tuple(recalls.get(n, -math.inf) for n in order)


def best_row(rows: list[TrialRow], metric: str = DEFAULT_METRIC) -> TrialRow | None:
    """The row ranked first by `rank_key` (None when no trial logged the `metric`)."""
    n = recall_n(metric)
    return max((r for r in rows if n in r.recalls), key=lambda r: rank_key(r.recalls, metric),
               default=None)


def sweep_parent(store: Store, experiment_id: str, sweep: str | None = None,
                 parent_run_id: str | None = None) -> RunRecord:
    """The sweep's parent run: `parent_run_id`, else the latest sweep named `sweep`, else the
    latest sweep of the experiment."""
    if parent_run_id is not None:
        parent = store.run(parent_run_id, with_history=False)
        if parent.experiment_id != experiment_id or parent.kind != Kind.SWEEP:
            raise UserError(f"run {parent_run_id} is not a sweep of this experiment (its kind is "
                            f"{parent.kind or 'unset'}); pass the parent run of a sweep")
        return parent
    named = {Tag.SWEEP: sweep} if sweep else {}
    found = store.latest(Kind.SWEEP, [experiment_id], **named)
    if found is None:
        which = f"named {sweep!r}" if sweep else "at all"
        raise UserError(f"the experiment has no sweep {which}; run `python -m orchestrator "
                        f"sweep` first, or pass --experiment / --sweep of an existing one")
    return found


def latest_sweep_experiment(store: Store) -> str:
    """The name of the experiment holding the most recent sweep (the default to show)."""
    found = store.latest(Kind.SWEEP)
    if found is None:
        raise UserError(f"no sweep in {store.uri}; run `python -m orchestrator sweep` first "
                        f"or pass --experiment")
    return store.experiment_name(found.experiment_id)


def trials_of(store: Store, parent: RunRecord) -> list[RunRecord]:
    """The child runs of a sweep parent, in the order they started, with their histories."""
    return store.search(parent.experiment_id, children_filter(parent.run_id))


def trial_rows(store: Store, parent: RunRecord, metric: str = DEFAULT_METRIC
               ) -> list[TrialRow]:
    searched = searched_names(parent)
    return [trial_row(run, metric, searched) for run in trials_of(store, parent)]


def searched_names(parent: RunRecord) -> set:
    """The dimensions a sweep searched: those its parent's params record, and the `listed`
    ones (older sweeps did not record them all)."""
    return set(space_from_params(parent.params)) | set(LISTED)

