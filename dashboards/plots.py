"""Matplotlib figures shared by the sweep (per-trial curves) and the dashboards."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402

from vpr_tracking.names import RECALL_NS, recall_name  # noqa: E402

from .style import arch_colour, percent_axis, run_style  # noqa: E402

RECALL_FIGURE_WIDTH = 8.0  # inches; 800 pixels at the 100 dpi `save` writes
RECALL_FIGURE_HEIGHT = 4.5  # inches for the axes, plus a legend line per curve
LEGEND_LINE_HEIGHT = 0.25  # inches


def learning_curves(history: list[dict], title: str, arch: str | None = None):
    """Recall@N and loss per epoch of one run. `history`: dicts with epoch, recall@N, loss."""
    epochs = [h["epoch"] for h in history]
    figure, (recall_axis, loss_axis) = plt.subplots(1, 2, figsize=(10, 4))
    for n, style in zip(RECALL_NS, ("-", "--", "-.", ":", (0, (1, 4)))):
        values = [h.get(recall_name(n)) for h in history]
        if any(v is not None for v in values):
            recall_axis.plot(epochs, values, linestyle=style, marker="o", color=arch_colour(arch),
                             label=f"Recall@{n}")
    recall_axis.set(title="Validation recall", xlabel="epoch", ylabel="recall")
    percent_axis(recall_axis)
    recall_axis.legend(loc="lower right")
    loss_axis.plot(epochs, [h.get("loss") for h in history], marker="o", color=arch_colour(arch))
    loss_axis.set(title="Training loss (mean triplet hinge)", xlabel="epoch", ylabel="loss")
    loss_axis.grid(True, alpha=0.3)
    for axis in (recall_axis, loss_axis):
        axis.xaxis.get_major_locator().set_params(integer=True)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def recall_figure_size(num_curves: int) -> tuple[int, int]:
    """(width, height) in pixels of `recall_at_n` with `num_curves` curves, as saved."""
    height = RECALL_FIGURE_HEIGHT + LEGEND_LINE_HEIGHT * num_curves
    return round(RECALL_FIGURE_WIDTH * 100), round(height * 100)


def recall_at_n(curves, title: str):
    """Recall@N against N (1, 5, 10, 20) of several runs on one chart.

    `curves`: objects with `label` (legend text), `arch` (picks the colour) and `recalls`
    ({N: fraction}). Runs of one architecture share its colour and differ by line style.
    """
    width, height = recall_figure_size(len(curves))
    figure, axis = plt.subplots(figsize=(width / 100, height / 100), layout="constrained")
    seen: dict[str, int] = {}
    for curve in curves:
        index = seen.get(curve.arch, 0)
        seen[curve.arch] = index + 1
        line, marker = run_style(index)
        ns = sorted(curve.recalls)
        axis.plot(ns, [curve.recalls[n] for n in ns], linestyle=line, marker=marker,
                  color=arch_colour(curve.arch, len(seen)), label=curve.label)
    axis.set(title=title, xlabel="N (top-N database matches)", ylabel="Recall@N",
             xticks=list(RECALL_NS), xlim=(0, max(RECALL_NS) + 1))
    percent_axis(axis)
    axis.legend(loc="upper left", bbox_to_anchor=(0.0, -0.14), fontsize="small", frameon=False)
    return figure


def save(figure, path) -> None:
    """Write a figure to PNG atomically and close it."""
    from vpr_core.fileio import write_atomic

    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    plt.close(figure)
