"""One look for every picture: a colour per architecture, recall as a percentage."""
from __future__ import annotations

ARCH_COLOURS = {"alexnet": "#1f77b4", "vgg16": "#d62728"}
OTHER_COLOURS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
RECALL_NS = (1, 5, 10, 20)


def arch_colour(arch: str | None, fallback_index: int = 0) -> str:
    return ARCH_COLOURS.get(str(arch), OTHER_COLOURS[fallback_index % len(OTHER_COLOURS)])


def percent_axis(axis) -> None:
    """Recall on a 0-100 % axis."""
    from matplotlib.ticker import PercentFormatter

    axis.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    axis.set_ylim(0, 1.02)
    axis.grid(True, alpha=0.3)
