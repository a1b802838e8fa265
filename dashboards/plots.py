"""Matplotlib figures shared by the sweep (per-trial curves) and the dashboards."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")  # files only, no display

import matplotlib.pyplot as plt  # noqa: E402

from .style import RECALL_NS, arch_colour, percent_axis  # noqa: E402


def learning_curves(history: list[dict], title: str, arch: str | None = None):
    """Recall@N and loss per epoch of one run. `history`: dicts with epoch, recall@N, loss."""
    epochs = [h["epoch"] for h in history]
    figure, (recall_axis, loss_axis) = plt.subplots(1, 2, figsize=(10, 4))
    styles = {1: "-", 5: "--", 10: "-.", 20: ":"}
    for n in RECALL_NS:
        values = [h.get(f"recall@{n}") for h in history]
        if any(v is not None for v in values):
            recall_axis.plot(epochs, values, styles[n], marker="o", color=arch_colour(arch),
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


def save(figure, path) -> None:
    """Write a figure to PNG atomically and close it."""
    from vpr_core.fileio import write_atomic

    write_atomic(path, lambda tmp: figure.savefig(tmp, format="png", dpi=100))
    plt.close(figure)
