"""`compare`: Recall@N curves of chosen runs on one chart.

The runs are, by default, the best trained run of each model (backbone and aggregator) in an
experiment (by its best epoch's Recall@5) plus every evaluation run (the released VGG16
checkpoint beside the trained AlexNet); or the runs named with `--runs`; or recalls typed on
the command line (a paper's numbers, or as the old reference script took them), which needs no
MLflow at all.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from vpr_core.errors import UserError
from vpr_core.evaluation import named_recalls
from vpr_tracking.names import DEFAULT_METRIC, RECALL_NS, TRAINED_KINDS, Kind, Tag
from vpr_tracking.search_space import run_label as searched_label
from vpr_tracking.search_space import values_of
from vpr_tracking.store import RunRecord, Store, as_store
from vpr_tracking.trials import latest_sweep_experiment, rank_key


@dataclass(frozen=True)
class RecallCurve:
    """One line of the chart: `recalls` is {N: fraction} for N in 1, 5, 10, 20."""

    label: str
    arch: str
    recalls: dict
    run_id: str | None = None
    kind: str = "given"

    def to_dict(self) -> dict:
        return {"label": self.label, "arch": self.arch, "run_id": self.run_id, "kind": self.kind,
                **named_recalls(self.recalls)}


def run_label(run: RunRecord, metric: str = DEFAULT_METRIC) -> str:
    """Legend text: the searched settings and the epoch for trained runs; the model,
    checkpoint and split for evaluations."""
    if run.kind == Kind.EVALUATION:
        checkpoint = Path(run.params.get("checkpoint", "untrained")).name
        where = " ".join(v for v in (run.params.get("dataset"), run.params.get("split")) if v)
        return f"{run.model} checkpoint {checkpoint} ({where or 'evaluation'})"
    trial = run.tags.get(Tag.TRIAL_ID)
    which = f"trial {trial}" if trial else f"run {run.name}"
    epoch = run.best_step(metric).get("epoch")
    return f"{searched_label(values_of(run.params))} ({which}, epoch {epoch})"


def curve_of_run(run: RunRecord, metric: str = DEFAULT_METRIC) -> RecallCurve:
    """The run's Recall@N: its best epoch's (by `metric`) for trained runs, its only step for
    evaluations. A run that logged no recall is a `UserError`."""
    recalls = run.best_recalls(metric)
    if not recalls:
        raise UserError(f"run {run.run_id} ({run.name}) logged no Recall@N; pass a run that "
                        f"finished at least one epoch or evaluation")
    return RecallCurve(run_label(run, metric), run.arch, recalls, run.run_id, run.kind)


def best_per_model(runs: list[RunRecord], metric: str = DEFAULT_METRIC) -> list[RunRecord]:
    """The trained run of each model (backbone and aggregator) ranked first by its best
    epoch's recalls (`rank_key`: `metric`, then the other Recall@N), in the order the models
    first appear."""
    best: dict[tuple, RunRecord] = {}
    for run in runs:
        if run.kind in TRAINED_KINDS and metric in run.best_step(metric):
            held = best.get((run.arch, run.aggregator))
            if held is None or rank_key(run.best_recalls(metric), metric) > \
                    rank_key(held.best_recalls(metric), metric):
                best[(run.arch, run.aggregator)] = run
    return list(best.values())


def default_curves(store: Store, experiment: str) -> list[RecallCurve]:
    """Best trained run per model plus every evaluation run of `experiment`."""
    runs = store.search(store.experiment_id(experiment))
    chosen = best_per_model(runs) + [r for r in runs
                                    if r.kind == Kind.EVALUATION and r.best_recalls()]
    if not chosen:
        raise UserError(f"experiment {experiment!r} has no trial, training or evaluation run "
                        f"with Recall@N; pass --runs or another --experiment")
    return [curve_of_run(run) for run in chosen]


def given_curve(name: str, values: list[float]) -> RecallCurve:
    """Recall@1/5/10/20 of model `name` typed by the user: fractions (0.68) or, when any is
    above 1, percent."""
    flag = f"--recalls {name}"
    if len(values) != len(RECALL_NS):
        raise UserError(f"{flag} takes {len(RECALL_NS)} values (Recall@1, @5, @10, @20), got "
                        f"{len(values)}; write e.g. {flag} 0.68 0.85 0.89 0.93")
    scale = 100.0 if any(v > 1 for v in values) else 1.0
    fractions = [v / scale for v in values]
    if any(not 0 <= f <= 1 for f in fractions):
        raise UserError(f"{flag} {' '.join(f'{v:g}' for v in values)}: recalls are fractions "
                        f"in 0-1 or percentages in 0-100")
    if any(later < earlier for earlier, later in zip(fractions, fractions[1:])):
        raise UserError(f"{flag} {' '.join(f'{v:g}' for v in values)}: Recall@N cannot fall as "
                        f"N grows; give them in the order Recall@1, @5, @10, @20")
    return RecallCurve(f"{name} (given recalls)", name, dict(zip(RECALL_NS, fractions)))


def compare(out: Path, *, tracking_uri: str | None = None, experiment: str | None = None,
            run_ids: list[str] | None = None, given: dict | None = None,
            log_to: str | None = None, title: str | None = None) -> dict:
    """Draw the chart to `out` (PNG) and, with `log_to`, log it to that run under `plots/`.

    `given`: {model name: [R@1, R@5, R@10, R@20]}; MLflow is opened only for `experiment`,
    `run_ids` or `log_to`. Returns a summary: the file, its curves, the run logged to.
    """
    curves = [given_curve(arch, values) for arch, values in (given or {}).items()]
    store = None
    if not (curves or experiment or run_ids):  # nothing named: the latest sweep's experiment
        store = as_store(tracking_uri)
        experiment = latest_sweep_experiment(store)
    if store is None and (experiment or run_ids or log_to):
        store = as_store(tracking_uri)
    if run_ids:
        curves += [curve_of_run(store.run(run_id)) for run_id in run_ids]
    elif experiment:
        curves += default_curves(store, experiment)
    if log_to:
        store.run(log_to, with_history=False)  # an unknown run fails before anything is drawn
    from .plots import recall_at_n, save

    out = Path(out).absolute()
    save(recall_at_n(curves, title or _title(experiment)), out)
    if log_to:
        store.log_file(log_to, out, "plots")
    return {"out": str(out), "curves": [c.to_dict() for c in curves], "logged_to": log_to}


def _title(experiment: str | None) -> str:
    return f"Recall@N, {experiment}" if experiment else "Recall@N"

