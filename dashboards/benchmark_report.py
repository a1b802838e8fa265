"""`benchmark`: a benchmark's models x test sets table read back from MLflow, as a static HTML
page (`index.html`) and a PNG of the table (`benchmark.png`), the way papers print it."""
from __future__ import annotations

from pathlib import Path

from vpr_core.errors import UserError
from vpr_tracking.benchmark import find_benchmark, results_of
from vpr_tracking.store import as_store

from .benchmark_table import PAGE_NS, BenchmarkTable, percent, text_lines

PAGE, PICTURE = "index.html", "benchmark.png"
MODEL_WIDTH = 0.085  # inches per character of the model column
NUMBER_WIDTH = 0.62  # inches per Recall@N column
ROW_HEIGHT = 0.3  # inches
TITLE_WIDTH = 0.1  # inches per character of the bold title


def benchmark_report(tracking_uri: str | None, experiment: str | None, name: str | None,
                     parent_run_id: str | None, out: Path) -> dict:
    """Write the page and the PNG of one benchmark into the folder `out`: the run
    `parent_run_id`, else the latest benchmark named `name` (else any) of `experiment` (else
    of any experiment). Returns what was drawn."""
    from vpr_core.fileio import write_atomic

    from .benchmark_html import render
    from .plots import save

    out = Path(out).expanduser().absolute()
    if out.is_file():
        raise UserError(f"--out {out} is a file; pass a folder for the page and its picture")
    store = as_store(tracking_uri)
    ids = [store.experiment_id(experiment)] if experiment else None
    parent = find_benchmark(store, ids, name, parent_run_id)
    results = results_of(store, parent)
    if not results:
        raise UserError(f"benchmark {parent.name} ({parent.run_id}) has no results "
                        f"({parent.status}); run it again")
    table = BenchmarkTable.of(results)
    out.mkdir(parents=True, exist_ok=True)
    save(draw_table(table, f"{parent.name}: Recall@N (%) on the {_split(parent)} split"),
         out / PICTURE)
    page = render(parent, store.experiment_name(parent.experiment_id), table, PICTURE)
    write_atomic(out / PAGE, lambda tmp: Path(tmp).write_text(page, encoding="utf-8"))
    return {"index": str(out / PAGE), "picture": str(out / PICTURE),
            "benchmark": parent.tags.get("benchmark"), "name": parent.name,
            "parent_run_id": parent.run_id, "models": list(table.models),
            "test_sets": list(table.test_sets),
            "best": {t: {f"recall@{n}": [m for m in table.models if table.is_best(m, t, n)]
                         for n in PAGE_NS} for t in table.test_sets},
            "results": [result.to_dict() for result in results], "table": text_lines(table)}


def _split(parent) -> str:
    return parent.params.get("split", "?")


def draw_table(table: BenchmarkTable, title: str, ns=PAGE_NS):
    """The table as a figure: a row per model, a column group per test set with Recall@N
    in percent, the best of each column in bold, rules above and below the header."""
    from .plots import plt

    model_width = MODEL_WIDTH * max([len("model"), *(len(m) for m in table.models)]) + 0.3
    group_width = NUMBER_WIDTH * len(ns)
    width = max(model_width + group_width * len(table.test_sets) + 0.4,
                TITLE_WIDTH * len(title) + 0.4)
    height = ROW_HEIGHT * (len(table.models) + 3) + 0.5
    figure = plt.figure(figsize=(width, height))
    axis = figure.add_axes((0, 0, 1, 1))
    axis.set_xlim(0, width)
    axis.set_ylim(height, 0)  # inches from the top
    axis.axis("off")
    axis.text(0.2, 0.3, title, fontsize=11, fontweight="bold", va="center")
    top = 0.55
    for group, test_set in enumerate(table.test_sets):
        left = 0.2 + model_width + group * group_width
        axis.text(left + group_width / 2, top + ROW_HEIGHT / 2, test_set, ha="center",
                  va="center", fontsize=10)
        axis.plot([left + 0.08, left + group_width - 0.08], [top + ROW_HEIGHT] * 2,
                  color="black", linewidth=0.6)
        for column, n in enumerate(ns):
            x = left + (column + 0.5) * NUMBER_WIDTH
            axis.text(x, top + 1.5 * ROW_HEIGHT, f"R@{n}", ha="center", va="center",
                      fontsize=9)
            for row, model in enumerate(table.models):
                bold = table.is_best(model, test_set, n) and len(table.models) > 1
                axis.text(x, top + (row + 2.5) * ROW_HEIGHT,
                          percent(table.recall(model, test_set, n)), ha="center", va="center",
                          fontsize=9, fontweight="bold" if bold else "normal")
    axis.text(0.2, top + 1.5 * ROW_HEIGHT, "model", va="center", fontsize=9)
    for row, model in enumerate(table.models):
        axis.text(0.2, top + (row + 2.5) * ROW_HEIGHT, model, va="center", fontsize=9)
    right = 0.2 + model_width + group_width * len(table.test_sets)
    for y, weight in ((top, 1.2), (top + 2 * ROW_HEIGHT, 0.8),
                      (top + (len(table.models) + 2) * ROW_HEIGHT, 1.2)):
        axis.plot([0.1, right], [y, y], color="black", linewidth=weight)
    return figure
