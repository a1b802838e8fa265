"""One evaluation, tracked or not: the code behind `eval` and behind evaluation specs."""
from __future__ import annotations

from vpr_core.data.description import of_split
from vpr_core.stages import evaluate
from vpr_tracking.uri import ui_command


def evaluate_and_track(config, uri: str | None = None, experiment: str | None = None,
                       tags: dict | None = None) -> tuple[dict, list[str]]:
    """Evaluate `config` (an `EvalConfig`) and, with a checked tracking `uri`, log it as one
    MLflow run of `experiment`. Returns (the --json payload, the lines to print)."""
    done = evaluate.run(config)
    result = done.result
    payload = result.to_dict()
    if done.checkpoint is not None:
        payload["checkpoint"] = str(done.checkpoint)
    lines = [f"{result.dataset} {result.split}: {result.num_queries} queries, "
             f"{result.num_database} database images", *result.lines()]
    if uri is not None:
        from .tracking import Tracker

        run_id = Tracker(uri, experiment).log_evaluation(done.config, result, done.checkpoint,
                                                         tags, of_split(done.split))
        payload.update(mlflow_run_id=run_id, mlflow_ui=ui_command(uri))
        lines.append(f"logged as MLflow run {run_id}; open: {ui_command(uri)}")
    return payload, lines
