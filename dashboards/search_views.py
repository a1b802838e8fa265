"""Optuna's views of a sweep's search, drawn from an in-memory study rebuilt from MLflow.

Each trial run becomes an Optuna trial with its searched values and, as its value, the best
epoch's recall by the sweep's metric (a fraction); failed trials and trials that logged
no recall become FAIL trials. Views that the trials cannot support (importances need two
complete trials whose parameters vary) are replaced by a sentence saying why.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from vpr_tracking.names import FAILED, Tag, recall_n
from vpr_tracking.search_space import CHOICE, DIMENSIONS, space_from_params, values_of
from vpr_tracking.store import RunRecord
from vpr_tracking.trials import searched_names

from .style import arch_colour

FIGURE_SIZE = (8.0, 5.0)  # inches: 800 x 500 pixels as saved


@dataclass(frozen=True)
class View:
    """One picture of the search: `file` (a name in the report folder) or, when it could not
    be drawn, `note` saying why."""

    title: str
    file: str | None = None
    note: str | None = None


def trial_params(run: RunRecord, searched=None) -> dict:
    """The searched values of a trial run, typed (log-uniform ones only when positive);
    `searched`: the sweep's dimensions (`vpr_tracking.trials.searched_names`)."""
    return {name: value for name, value in values_of(run.params, searched).items()
            if isinstance(value, str) or value > 0}


def distributions(parent: RunRecord, trials: list[RunRecord]) -> dict:
    """Optuna distributions of the search space: the sweep parent's choices and bounds,
    widened to hold every observed value."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    declared = space_from_params(parent.params)
    observed = [trial_params(run, searched_names(parent)) for run in trials]
    found = {}
    for d in DIMENSIONS:
        seen = [p[d.name] for p in observed if d.name in p]
        if d.kind == CHOICE:
            choices = list(dict.fromkeys(list(declared.get(d.name, [])) + seen))
            if choices:
                found[d.name] = CategoricalDistribution(choices)
            continue
        values = seen + [v for v in declared.get(d.name, ()) if v > 0]
        if values:
            found[d.name] = FloatDistribution(min(values), max(values), log=True)
    return found


def rebuild_study(parent: RunRecord, trials: list[RunRecord], metric: str):
    """An in-memory `optuna.Study` (maximize) holding the sweep's trials in start order."""
    import optuna
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spaces = distributions(parent, trials)
    study = optuna.create_study(direction="maximize", study_name=parent.name or "sweep")
    for run in trials:
        params = {k: v for k, v in trial_params(run, searched_names(parent)).items()
                  if k in spaces}
        value = run.best_step(metric).get(metric)
        complete = run.status != FAILED and value is not None
        study.add_trial(create_trial(
            params=params, distributions={k: spaces[k] for k in params},
            value=value if complete else None,
            state=TrialState.COMPLETE if complete else TrialState.FAIL,
            user_attrs={"trial_id": run.tags.get(Tag.TRIAL_ID, ""), "run_id": run.run_id}))
    return study


def draw_views(study, folder: Path, metric: str) -> list[View]:
    """Optimisation history, parameter importances and parallel coordinates as PNG files in
    `folder` (or notes when a view cannot be drawn)."""
    from optuna.trial import TrialState

    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    varying = [name for name in {k for t in complete for k in t.params}
               if len({t.params.get(name) for t in complete}) > 1]
    views = [("Optimisation history", "optimization_history.png", _history,
              None if complete else "no trial finished an epoch, so there is no history."),
             ("Parameter importances", "param_importances.png", _importances,
              None if len(complete) >= 2 and varying else
              f"importances need at least two complete trials with different parameters; "
              f"this sweep has {len(complete)} complete trial(s)."),
             ("Parallel coordinates", "parallel_coordinate.png", _parallel,
              None if complete else "no trial finished an epoch, so there is nothing to plot.")]
    drawn = []
    for title, name, draw, reason in views:
        if reason is None:
            reason = _draw(draw, study, folder / name, metric)
        drawn.append(View(title, None if reason else name, reason))
    return drawn


def _draw(draw, study, path: Path, metric: str) -> str | None:
    """Run one view; a failure inside Optuna becomes the report's sentence, not a crash."""
    from optuna.exceptions import ExperimentalWarning

    from .plots import plt, save

    open_before = set(plt.get_fignums())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        # one trial gives an axis of one value; matplotlib widens it and says so
        warnings.filterwarnings("ignore", message="Attempting to set identical low and high")
        # an aggregator's setting is a parameter of that aggregator's trials only: few of them
        warnings.filterwarnings("ignore", message="Some regimes for parameter")
        try:
            axis = draw(study, f"best Recall@{recall_n(metric)}")
        except (ValueError, RuntimeError, ZeroDivisionError) as error:
            for number in set(plt.get_fignums()) - open_before:  # its half-drawn figure
                plt.close(number)
            return f"Optuna could not draw this view ({type(error).__name__}: {error})."
    figure = _figure_of(axis)
    figure.set_size_inches(*FIGURE_SIZE)
    figure.tight_layout()
    save(figure, path)
    return None


def _figure_of(axis):
    """The figure of an Axes or of an array of Axes, as Optuna's functions return either."""
    import numpy as np

    return np.ravel(axis)[0].figure if isinstance(axis, np.ndarray) else axis.figure


def _history(study, target: str):
    from matplotlib.ticker import PercentFormatter
    from optuna.trial import TrialState
    from optuna.visualization.matplotlib import plot_optimization_history

    axis = plot_optimization_history(study, target_name=target)
    # colour each trial by its architecture, as in every other picture
    done = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    for arch in dict.fromkeys(t.params.get("arch") for t in done):
        mine = [t for t in done if t.params.get("arch") == arch]
        axis.scatter([t.number for t in mine], [t.value for t in mine], s=60, zorder=3,
                     color=arch_colour(arch), edgecolors="black", label=f"{arch} trial")
    axis.legend(loc="best", fontsize="small")
    axis.set_xlabel("trial (in start order)")
    axis.xaxis.get_major_locator().set_params(integer=True)
    axis.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    return axis


def _importances(study, target: str):
    from optuna.visualization.matplotlib import plot_param_importances

    axis = plot_param_importances(study, target_name=target)
    axis.set_xlabel(f"importance for {target}")
    return axis


def _parallel(study, target: str):
    from matplotlib.collections import LineCollection
    from optuna.visualization.matplotlib import plot_parallel_coordinate

    axis = plot_parallel_coordinate(study, target_name=target)
    for lines in axis.collections:  # Optuna's white-to-blue map hides the worst trial
        if isinstance(lines, LineCollection):
            lines.set_cmap("viridis")
    return axis
