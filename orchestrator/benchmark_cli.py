"""`python -m orchestrator benchmark`: its flags, and the printed table and --json result."""
from __future__ import annotations

import tempfile
from pathlib import Path

from vpr_core import arguments
from vpr_core.errors import first_line
from vpr_tracking.flags import add_tracking

from .benchmark_spec import EXAMPLE, add_flags, benchmark_spec

TABLE_FOLDER = "table"  # the parent run's artifact folder of the page and its PNG


def add_parser(verbs) -> None:
    parser = verbs.add_parser(
        "benchmark", help="several models x several test sets: one MLflow experiment, a table",
        description=f"Every model on every test set, as `eval` evaluates it; one MLflow parent "
                    f"run with a child per model and test set, and a models x test sets table. "
                    f"Models and test sets come from flags or a spec ({EXAMPLE}).")
    add_flags(parser)
    add_tracking(parser, experiment_help="MLflow experiment name (default benchmarks)")
    arguments.add_json(parser)


def run(args) -> None:
    from vpr_tracking.benchmark import DEFAULT_EXPERIMENT
    from vpr_tracking.uri import check_tracking_uri, ui_command

    from .benchmark import evaluate_all, prepare
    from .tracking import Tracker

    spec = benchmark_spec(args)
    uri = check_tracking_uri(spec.tracking_uri)  # checked; nothing is made before the plan
    experiment = spec.experiment or DEFAULT_EXPERIMENT

    def runs_store():
        from vpr_tracking.store import as_store

        return as_store(uri)

    with tempfile.TemporaryDirectory(prefix="benchmark-") as scratch:
        plan = prepare(spec, runs_store, Path(scratch))
        tracker = Tracker(uri, experiment)
        parent, results = evaluate_all(plan, tracker)
        _log_page(tracker, uri, parent, Path(scratch) / "page")
    payload = {"benchmark": plan.label, "name": plan.name, "experiment": experiment,
               "mlflow_parent_run_id": parent, "mlflow_ui": ui_command(uri),
               "protocol": {"split": plan.base.split, "positive_dist": plan.base.positive_dist,
                            "queries": "all"},
               "models": [{"label": m.label, "source": m.source, "family": m.family,
                           "architecture": m.architecture} for m in plan.models],
               "test_sets": [{"label": t.label, "root": str(t.root),
                              "dataset": t.split.dataset, "num_queries": t.split.num_queries,
                              "num_database": t.split.num_database} for t in plan.test_sets],
               "results": [result.to_dict() for result in results]}
    arguments.emit(args, payload, _lines(plan, parent, results, uri, experiment))


def _log_page(tracker, uri: str, parent: str, folder: Path) -> None:
    """The table as the dashboards page and PNG, logged to the parent run under `table/`, so
    that MLflow shows it beside the numbers."""
    from dashboards.benchmark_report import benchmark_report
    from vpr_core.log import log

    try:
        benchmark_report(uri, None, None, parent, folder)
        tracker.store.log_folder(parent, folder, TABLE_FOLDER)
    except Exception as error:  # noqa: BLE001 - a page problem must not cost the results
        log.warning(f"the benchmark page could not be logged ({type(error).__name__}: "
                    f"{first_line(error, 200)})")


def _lines(plan, parent: str, results: list, uri: str, experiment: str) -> list[str]:
    from dashboards.benchmark_table import BenchmarkTable, text_lines
    from vpr_tracking.uri import ui_command

    split, metres = plan.base.split, plan.base.positive_dist
    return [f"benchmark {plan.name}: {_count(plan.models, 'model')} x "
            f"{_count(plan.test_sets, 'test set')}, split {split}, a positive within "
            f"{metres:g} m, every query counted", "",
            *text_lines(BenchmarkTable.of(results)), *_speeds(results), "",
            f"logged to MLflow experiment {experiment} as run {parent} (a child per model and "
            f"test set); open: {ui_command(uri)}",
            f"the table as a page: the run's artifacts {TABLE_FOLDER}/, or python -m "
            f"dashboards benchmark --tracking-uri {uri} --parent {parent} "
            f"--out benchmark/"]


def _speeds(results: list) -> list[str]:
    """ms per image (reading it and computing its descriptor) of each model on each test
    set: checkpoints, compressed variants and exported files side by side."""
    cells = [f"{r.model} on {r.test_set} {r.ms_per_image:.1f}" for r in results
             if r.ms_per_image is not None]
    return ["ms per image: " + ", ".join(cells)] if cells else []


def _count(items, word: str) -> str:
    return f"{len(items)} {word}{'' if len(items) == 1 else 's'}"
