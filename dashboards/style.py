"""One look for every picture: a colour per architecture, recall as a percentage."""
from __future__ import annotations

ARCH_COLOURS = {"alexnet": "#1f77b4", "vgg16": "#d62728"}
OTHER_COLOURS = ["#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"]
# several runs of one architecture share its colour and differ by line style and marker
LINE_STYLES = ("-", "--", ":", "-.")
MARKERS = ("o", "s", "^", "D", "v", "P")
# retrieval frames: a match within the split's positive radius, or not
POSITIVE_COLOUR = "#2ca02c"
NEGATIVE_COLOUR = "#d62728"


def arch_colour(arch: str | None, fallback_index: int = 0) -> str:
    return ARCH_COLOURS.get(str(arch), OTHER_COLOURS[fallback_index % len(OTHER_COLOURS)])


def run_style(index_within_arch: int) -> tuple[str, str]:
    """(line style, marker) of the `index_within_arch`-th run drawn for one architecture."""
    return (LINE_STYLES[index_within_arch % len(LINE_STYLES)],
            MARKERS[index_within_arch % len(MARKERS)])


def percent_axis(axis) -> None:
    """Recall on a 0-100 % axis."""
    from matplotlib.ticker import PercentFormatter

    axis.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    axis.set_ylim(0, 1.02)
    axis.grid(True, alpha=0.3)


def as_percent(fraction: float | None) -> str:
    """0.6812 -> '68.1 %'; None -> '-'."""
    return "-" if fraction is None else f"{100.0 * fraction:.1f} %"
