"""`report`: a self-contained static HTML report of one sweep.

`index.html` and its PNG files sit in one folder and link each other relatively; nothing is
fetched from the network. The folder is built beside `--out` under a temporary name and then
moved onto `--out`, so a reader never sees half a report.
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from vpr_core.errors import UserError
from vpr_tracking.names import DEFAULT_METRIC
from vpr_tracking.store import RunRecord, Store, as_store
from vpr_tracking.trials import (
    best_row,
    epochs_of,
    latest_sweep_experiment,
    searched_names,
    sweep_parent,
    trial_row,
    trials_of,
)

from .compare import best_per_model, curve_of_run
from .search_views import View, draw_views, rebuild_study

INDEX = "index.html"
RECALL_CHART = "recall_by_arch.png"


@dataclass
class ReportContent:
    """Everything `report_html.render` lays out."""

    experiment: str
    experiment_id: str
    parent: RunRecord
    metric: str
    rows: list
    recall_chart: View
    views: list
    parent_link: str | None = None
    generated: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime(
        "%Y-%m-%d %H:%M UTC"))


def run_link(mlflow_url: str | None, experiment_id: str, run_id: str) -> str | None:
    """The MLflow UI page of a run, or None without a UI address."""
    if not mlflow_url:
        return None
    return f"{mlflow_url.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def write_report(store: Store | str | None, experiment: str | None, out_dir: str | Path,
                 parent_run_id: str | None = None, mlflow_url: str | None = None,
                 sweep: str | None = None) -> dict:
    """Write the report of one sweep to `out_dir`; returns a summary: the path of its
    index.html, the sweep, its trials, pictures and notes.

    `store`: a `Store` or a tracking URI. The sweep is `parent_run_id`, else the latest sweep
    named `sweep`, else the latest sweep of `experiment`. A user mistake (unknown
    experiment, run or sweep) raises `UserError` before anything is written.
    """
    out = Path(out_dir).expanduser().absolute()
    _check_out(out)
    if mlflow_url and not mlflow_url.startswith(("http://", "https://")):
        raise UserError(f"--mlflow-url {mlflow_url} is not an http(s):// address; write it "
                        f"like http://127.0.0.1:5000")
    store = as_store(store)
    experiment = experiment or latest_sweep_experiment(store)
    experiment_id = store.experiment_id(experiment)
    parent = sweep_parent(store, experiment_id, sweep, parent_run_id)
    trials = trials_of(store, parent)
    metric = parent.params.get("metric", DEFAULT_METRIC)
    out.parent.mkdir(parents=True, exist_ok=True)
    build = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        content = _draw_everything(build, experiment, experiment_id, parent, trials, metric,
                                   mlflow_url)
        from .report_html import render

        (build / INDEX).write_text(render(content), encoding="utf-8")
        os.chmod(build, 0o755)  # mkdtemp makes it private; a report is for others to read
        _replace_folder(build, out)
    finally:
        if build.exists():
            shutil.rmtree(build)
    pictures = sorted(p.name for p in out.glob("*.png"))
    return {"index": str(out / INDEX), "experiment": experiment, "sweep": parent.name,
            "parent_run_id": parent.run_id, "metric": metric, "pictures": pictures,
            "notes": [v.note for v in [content.recall_chart] + content.views if v.note],
            "trials": [row.to_dict() for row in content.rows]}


def _draw_everything(folder: Path, experiment: str, experiment_id: str, parent: RunRecord,
                     trials: list, metric: str, mlflow_url: str | None) -> ReportContent:
    from .plots import learning_curves, save

    searched = searched_names(parent)
    rows = [trial_row(run, metric, searched) for run in trials]
    best = best_row(rows, metric)
    names: set[str] = set()
    for row, run in zip(rows, trials):
        row.best = row is best
        row.link = run_link(mlflow_url, experiment_id, run.run_id)
        history = epochs_of(run)
        if history:
            row.curves = _unique_name(f"curves_{_safe(row.trial_id)}", names)
            title = f"trial {row.trial_id}: {row.label}"
            save(learning_curves(history, title, row.arch), folder / row.curves)
    return ReportContent(experiment, experiment_id, parent, metric, rows,
                         _recall_chart(folder, trials, metric),
                         draw_views(rebuild_study(parent, trials, metric), folder, metric),
                         run_link(mlflow_url, experiment_id, parent.run_id))


def _recall_chart(folder: Path, trials: list, metric: str) -> View:
    from .plots import recall_at_n, save

    chosen = best_per_model(trials, metric)
    title = "Recall@N of the best trial of each model"
    if not chosen:
        return View(title, note="no trial logged a recall, so there is nothing to compare.")
    save(recall_at_n([curve_of_run(run, metric) for run in chosen], title),
         folder / RECALL_CHART)
    return View(title, RECALL_CHART)


def _check_out(out: Path) -> None:
    """--out must be a new folder or a report folder written before (it is replaced)."""
    if out.is_file():
        raise UserError(f"--out {out} is a file; pass a folder for the report")
    if out.is_dir() and any(out.iterdir()) and not (out / INDEX).is_file():
        raise UserError(f"--out {out} holds files but no {INDEX}; pass a new folder or an "
                        f"earlier report's folder")


def _replace_folder(build: Path, out: Path) -> None:
    """Move `build` onto `out`; an earlier report there is removed once the new one is in."""
    if not out.exists():
        os.replace(build, out)
        return
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(out, old)
    os.replace(build, out)
    shutil.rmtree(old)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text)[:60] or "trial"


def _unique_name(stem: str, taken: set) -> str:
    name, i = f"{stem}.png", 1
    while name in taken:
        i += 1
        name = f"{stem}_{i}.png"
    taken.add(name)
    return name
