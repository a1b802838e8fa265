"""The benchmark page's markup: the protocol, the models x test sets table (the best of each
column in bold), each model's facts, and the table's PNG; every MLflow value escaped."""
from __future__ import annotations

from datetime import datetime, timezone
from html import escape

from .benchmark_table import PAGE_NS, BenchmarkTable, percent
from .report_html import CSS, IMAGES_CHECK

BENCHMARK_CSS = """
th.group { text-align: center; } td.best { font-weight: bold; }
td.model, th.model { text-align: left; }
"""


def render(parent, experiment: str, table: BenchmarkTable, picture: str) -> str:
    """The whole page for the benchmark `parent` (a `RunRecord`) and its `table`."""
    title = f"Benchmark {parent.name}"
    parts = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
             f"<title>{escape(title)}</title>", f"<style>{CSS}{BENCHMARK_CSS}</style>",
             f"<script>{IMAGES_CHECK}</script>", "</head>", "<body>",
             f"<h1>{escape(title)}</h1>", _facts(parent, experiment),
             "<h2>Recall@N (%)</h2>",
             "<p>One row per model, one column group per test set; the best value of each "
             "column is in bold.</p>", _recalls(table),
             "<h2>Models</h2>", _models(table),
             "<h2>As a picture</h2>",
             f'<p><img src="{escape(picture)}" alt="the table of {escape(parent.name)}"></p>',
             "</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _facts(parent, experiment: str) -> str:
    params = parent.params
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    facts = [("Experiment", experiment), ("Parent run", parent.run_id),
             ("Status", parent.status), ("Split", params.get("split", "?")),
             ("Positives", f"database images within {_metres(params.get('positive_dist'))}"),
             ("Queries", params.get("queries", "?")),
             ("Image size", params.get("image_size", "each model's authors', else the "
                                                    "images' own")),
             ("Generated", generated)]
    items = "".join(f"<dt>{escape(name)}</dt><dd>{escape(str(value))}</dd>"
                    for name, value in facts)
    return f'<dl class="facts">{items}</dl>'


def _recalls(table: BenchmarkTable, ns=PAGE_NS) -> str:
    groups = "".join(f'<th class="group" colspan="{len(ns)}">{escape(t)}</th>'
                     for t in table.test_sets)
    columns = "".join(f"<th>R@{n}</th>" for _ in table.test_sets for n in ns)
    lines = ['<table id="benchmark">', "<thead>",
             f'<tr><th class="model" rowspan="2">model</th>{groups}</tr>',
             f"<tr>{columns}</tr>", "</thead>", "<tbody>"]
    for model in table.models:
        cells = []
        for test_set in table.test_sets:
            for n in ns:
                best = table.is_best(model, test_set, n) and len(table.models) > 1
                opening = '<td class="best">' if best else "<td>"
                cells.append(f"{opening}{percent(table.recall(model, test_set, n))}</td>")
        lines.append(f'<tr data-model="{escape(model)}"><td class="model">{escape(model)}</td>'
                     + "".join(cells) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _models(table: BenchmarkTable) -> str:
    header = ["model", "format", "architecture", "dimensions", "bytes / image", "image size",
              *(f"ms / image, {t}" for t in table.test_sets)]
    lines = ['<table id="models">', "<thead><tr>"
             + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    for model in table.models:
        facts = table.model_facts(model)
        timings = [table.results.get((model, t)) for t in table.test_sets]
        sizes = dict.fromkeys(r.image_size for r in timings if r and r.image_size)
        cells = [model, facts.family, facts.architecture, _number(facts.descriptor_dim),
                 _number(facts.descriptor_bytes), ", ".join(sizes) or "-",
                 *(_number(r.ms_per_image, ".1f") if r else "-" for r in timings)]
        lines.append("<tr>" + "".join(
            f'<td class="text">{escape(str(c))}</td>' if i < 3 else f"<td>{escape(str(c))}</td>"
            for i, c in enumerate(cells)) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _metres(value: str | None) -> str:
    try:
        return f"{float(value):g} m"
    except (TypeError, ValueError):
        return "? m"


def _number(value, spec: str = ",.0f") -> str:
    return "-" if value is None else format(value, spec)
