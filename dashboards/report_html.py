"""The report's markup: one HTML page, inline CSS, images by relative file name.

Every value from MLflow is escaped. The page needs no script; one small inline script only
marks `<body data-images-loaded="all">` once every image decoded, for automated checks.
"""
from __future__ import annotations

from html import escape

from vpr_tracking.names import RECALL_NS, RUNNING
from vpr_tracking.search_space import table_dimensions

from .style import arch_colour, as_percent

CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.6em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; white-space: nowrap; }
th { background: #f3f3f3; } td.text { text-align: left; white-space: normal; }
tr.best { font-weight: bold; background: #fff8dc; } tr.failed { color: #a00; }
.swatch { display: inline-block; width: 0.8em; height: 0.8em; margin-right: 0.3em; }
.note { font-style: italic; color: #555; } img { max-width: 100%; height: auto; }
dl.facts { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; }
dt { font-weight: bold; }
"""

IMAGES_CHECK = """
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var ok = images.every(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-images-loaded", ok ? "all" : "missing");
});
"""


def render(content) -> str:
    """The whole page for a `report.ReportContent`."""
    parent, metric = content.parent, content.metric
    title = f"Sweep {parent.name or parent.run_id}"
    parts = [
        "<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
        f"<title>{escape(title)}</title>", f"<style>{CSS}</style>",
        f"<script>{IMAGES_CHECK}</script>", "</head>", "<body>",
        f"<h1>{escape(title)}</h1>", _facts(content),
        "<h2>Trials</h2>",
        f"<p>Recalls are those of each trial's best epoch by {escape(metric)}; the best trial "
        f"is highlighted.</p>", _table(content.rows),
        "<h2>Recall@N by architecture</h2>", _picture(content.recall_chart),
        "<h2>The search (Optuna)</h2>",
        f"<p>Each trial's value is its best {escape(metric)}; failed trials count as FAIL.</p>",
        *(f"<h3>{escape(v.title)}</h3>{_picture(v)}" for v in content.views),
        "<h2>Learning curves</h2>", *(_curves(row) for row in content.rows),
        "</body>", "</html>"]
    return "\n".join(parts) + "\n"


def _facts(content) -> str:
    parent = content.parent
    run = escape(parent.run_id)
    if content.parent_link:
        run = f'<a href="{escape(content.parent_link)}">{run}</a>'
    failed = sum(1 for r in content.rows if r.status == "FAILED")
    facts = [("Experiment", escape(content.experiment)), ("Sweep parent run", run),
             ("Status", escape(parent.status)), ("Metric", escape(content.metric)),
             ("Trials", f"{len(content.rows)} ({failed} failed)"),
             ("Dataset", escape(parent.params.get("dataset", "?"))),
             ("Epochs per trial", escape(parent.params.get("epochs", "?"))),
             ("Generated", escape(content.generated))]
    items = "".join(f"<dt>{name}</dt><dd>{value}</dd>" for name, value in facts)
    return f'<dl class="facts">{items}</dl>'


def _table(rows: list) -> str:
    """One row per trial; a column per searched value (an aggregator's setting where some
    trial has it, empty for the others)."""
    columns = table_dimensions([row.values for row in rows])
    header = ["trial", *(d.title for d in columns), *(f"R@{n}" for n in RECALL_NS),
              "epochs", "status / stop reason", "duration"]
    lines = ['<table id="trials">', "<thead><tr>"
             + "".join(f"<th>{escape(h)}</th>" for h in header) + "</tr></thead>", "<tbody>"]
    for row in rows:
        flags = (("best", row.best), ("failed", row.status == "FAILED"))
        classes = " ".join(name for name, on in flags if on)
        trial = escape(row.trial_id)
        if row.link:
            trial = f'<a href="{escape(row.link)}">{trial}</a>'
        cells = [f'<td class="text">{trial}</td>', *_value_cells(row.values, columns),
                 *(f"<td>{as_percent(row.recalls.get(n))}</td>" for n in RECALL_NS),
                 f"<td>{row.epochs}</td>",
                 f'<td class="text">{escape(_status(row))}</td>',
                 f"<td>{_duration(None if row.status == RUNNING else row.seconds)}</td>"]
        lines.append(f'<tr class="{classes}" data-trial="{escape(row.trial_id)}">'
                     + "".join(cells) + "</tr>")
    lines.append("</tbody></table>")
    return "\n".join(lines)


def _value_cells(values: dict, columns: list) -> list[str]:
    """The searched values of a trial, the architecture with its colour swatch."""
    cells = []
    for d in columns:
        value = values.get(d.name)
        text = _number(value) if isinstance(value, float) else _text(value)
        if d.name == "arch":
            swatch = f'<span class="swatch" style="background:{arch_colour(value)}"></span>'
            text = swatch + text
        cells.append(f"<td>{text}</td>")
    return cells


def _picture(view) -> str:
    if view.file is None:
        return f'<p class="note">{escape(view.note or "not drawn")}</p>'
    return f'<p><img src="{escape(view.file)}" alt="{escape(view.title)}"></p>'


def _curves(row) -> str:
    heading = f"<h3>Trial {escape(row.trial_id)} ({escape(row.arch)})</h3>"
    if row.curves is None:
        return heading + '<p class="note">This trial logged no epoch.</p>'
    return heading + (f'<p><img src="{escape(row.curves)}" alt="learning curves of trial '
                      f'{escape(row.trial_id)}"></p>')


def _status(row) -> str:
    """'FINISHED: completed', 'FAILED: ValueError: ...' (the reason's own 'failed' dropped)."""
    reason = row.reason or ""
    if reason.lower().startswith(row.status.lower()):
        reason = reason[len(row.status):].lstrip(": ")
    return f"{row.status}: {reason}" if reason else row.status


def _duration(seconds: float | None) -> str:
    """Seconds as '42 s', '3 min 05 s' or '1 h 02 min'; 'running' for None."""
    if seconds is None:
        return "running"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.3g}"


def _text(value) -> str:
    return "-" if value is None else escape(str(value))
