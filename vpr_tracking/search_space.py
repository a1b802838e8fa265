"""The swept hyper-parameters, declared once.

Each `Dimension` is a `TrainConfig` setting a sweep samples: a choice among values or a
log-uniform range. From `DIMENSIONS` come the spec's `search.space` keys and their checks,
the Tune space, the first points, the sweep's MLflow params (numbers: `margin_min`,
`margin_max`; choices as a JSON list), the trial labels and the columns of every trials
table. To search one more setting, add its `Dimension` here.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from vpr_core.errors import UserError
from vpr_core.models.catalog import ARCHES, CNNS

CHOICE, LOG_UNIFORM = "choice", "log_uniform"
# a choice's `start`: each choice gets a first point of its own, or the middle choice
EVERY, MIDDLE = "every", "middle"


@dataclass(frozen=True)
class Dimension:
    """One searched setting. `default`: the choices, or the (low, high) bounds. `start`: its
    value in the first points (clamped into the space), or for a choice `EVERY` (each choice
    gets a first point of its own: every architecture is tried) or `MIDDLE`. `label` formats
    a value in run labels; `cell` (a format spec starting with its width, e.g. '7.3f') a value
    in fixed-width tables, under the column title `title`. A choice's values are `element`s:
    one of `allowed` when given, else positive numbers."""

    name: str
    kind: str
    default: tuple
    start: object
    label: str
    title: str
    cell: str
    element: type = float
    allowed: tuple | None = None

    def parse(self, raw, where: str):
        """The spec's value: a list of choices, or a number / {log_uniform: [low, high]}."""
        if self.kind == CHOICE:
            values = list(raw) if isinstance(raw, list) else [raw]
            self.check(values, where)
            return values
        if isinstance(raw, dict) and set(raw) == {"log_uniform"}:
            raw = raw["log_uniform"]
        if isinstance(raw, (int, float)) and not isinstance(raw, bool):
            return float(raw), float(raw)
        try:
            low, high = (float(v) for v in raw)
        except (TypeError, ValueError):
            raise UserError(f"{where} must be a number or {{log_uniform: [low, high]}}") from None
        self.check((low, high), where)
        return low, high

    def check(self, values, where: str) -> None:
        if self.kind == LOG_UNIFORM:
            low, high = values
            if not (0 < low <= high and math.isfinite(high)):
                raise UserError(f"{where} must be a log-uniform range 0 < low <= high, got "
                                f"{[low, high]}")
            return
        allowed = self.allowed
        bad = [v for v in values if (allowed and v not in allowed) or (
            not allowed and (isinstance(v, bool) or not isinstance(v, self.element) or v < 1))]
        if not values or bad:
            what = f"some of {', '.join(allowed)}" if allowed else "positive integers" \
                if self.element is int else "positive numbers"
            raise UserError(f"{where} must list {what}, got {values}")

    def contains(self, values, value) -> bool:
        if self.kind == CHOICE:
            return value in values
        return isinstance(value, (int, float)) and values[0] <= value <= values[1]

    def fixed(self, values) -> bool:
        """A range with low == high is a constant, not searched."""
        return self.kind == LOG_UNIFORM and values[0] == values[1]

    def format_label(self, value) -> str:
        return self.label.format(value)

    @property
    def width(self) -> int:
        return int(re.match(r"[<>^]?(\d*)", self.cell).group(1) or 0)

    @property
    def header(self) -> str:
        """The column title, as wide and aligned as the cells."""
        return format(self.title, f"{'<' if self.cell.startswith('<') else '>'}{self.width}")

    def format_cell(self, value) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return f"{'-':>{self.width}}"
        return format(value, self.cell)


DIMENSIONS = (
    Dimension("arch", CHOICE, CNNS, EVERY, "{}", "arch", "<13", str, ARCHES),
    Dimension("num_clusters", CHOICE, (16, 32, 64), MIDDLE, "K={}", "K", ">3", int),
    Dimension("margin", LOG_UNIFORM, (0.03, 0.3), 0.1, "margin={:.3g}", "margin", "7.3f"),
    Dimension("lr", LOG_UNIFORM, (1e-5, 1e-3), 1e-4, "lr={:.2g}", "lr", "8.2e"),
)
NAMES = tuple(d.name for d in DIMENSIONS)
BY_NAME = {d.name: d for d in DIMENSIONS}


def default_space() -> dict:
    """{name: choices list or (low, high)} of every dimension, as a spec leaves it."""
    return {d.name: list(d.default) if d.kind == CHOICE else tuple(d.default)
            for d in DIMENSIONS}


def parse_space(raw: dict, where: str) -> dict:
    """A spec's `search.space` section over the defaults."""
    unknown = sorted(set(raw) - set(NAMES))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; allowed: "
                        f"{', '.join(sorted(NAMES))}")
    space = default_space()
    for name, value in raw.items():
        space[name] = BY_NAME[name].parse(value, f"{where}.{name}")
    return space


def check_space(space: dict) -> None:
    for dimension in DIMENSIONS:
        dimension.check(space[dimension.name], f"search.space.{dimension.name}")


def check_point(space: dict, point) -> None:
    """A `search.start_with` entry: a value for every dimension, inside the space."""
    if not isinstance(point, dict) or set(point) != set(NAMES):
        raise UserError(f"search.start_with entries need exactly {', '.join(NAMES)}; "
                        f"got {point}")
    if not all(BY_NAME[name].contains(space[name], value) for name, value in point.items()):
        raise UserError(f"search.start_with entry {point} lies outside the search space; "
                        f"widen the space or change the entry")


def first_points(space: dict, start_with: list) -> list[dict]:
    """The points tried first: `start_with`, else every combination of the dimensions'
    `start` values (clamped into the space). Constant dimensions are left out: Tune sets
    them."""
    if start_with:
        points = [dict(point) for point in start_with]
    else:
        points = [{}]
        for d in DIMENSIONS:
            values = space[d.name]
            if d.kind == LOG_UNIFORM:
                starts = [min(max(d.start, values[0]), values[1])]
            elif d.start == EVERY:
                starts = list(values)
            else:
                starts = [sorted(values)[len(values) // 2]]
            points = [dict(p, **{d.name: value}) for p in points for value in starts]
    fixed = {d.name for d in DIMENSIONS if d.fixed(space[d.name])}
    return [{k: v for k, v in point.items() if k not in fixed} for point in points]


def space_params(space: dict) -> dict:
    """The space as MLflow params: `<name>_choices` (a JSON list), `<name>_min`, `<name>_max`."""
    params = {}
    for d in DIMENSIONS:
        values = space[d.name]
        if d.kind == CHOICE:
            params[f"{d.name}_choices"] = json.dumps(list(values))
        else:
            params[f"{d.name}_min"], params[f"{d.name}_max"] = values
    return params


# how sweeps logged their space before `space_params` (still read: older stores open)
LEGACY_PARAMS = {"arch": "archs", "num_clusters": "num_clusters_choices",
                 "margin": "margin_range", "lr": "lr_range"}


def space_from_params(params: dict) -> dict:
    """{name: choices or (low, high)} of the dimensions a sweep parent's params record."""
    space = {}
    for d in DIMENSIONS:
        if d.kind == CHOICE and f"{d.name}_choices" in params \
                and params[f"{d.name}_choices"].startswith("["):
            space[d.name] = json.loads(params[f"{d.name}_choices"])
        elif d.kind == LOG_UNIFORM and f"{d.name}_min" in params:
            space[d.name] = float(params[f"{d.name}_min"]), float(params[f"{d.name}_max"])
        elif LEGACY_PARAMS.get(d.name) in params:
            found = _legacy_values(d, params[LEGACY_PARAMS[d.name]])
            if found:
                space[d.name] = found
    return space


def _legacy_values(d: Dimension, text: str):
    """'a,b' choices and 'low-high' ranges ('1e-05-0.001': a minus after an e is the
    exponent's), as sweeps logged them before."""
    if d.kind == CHOICE:
        return [d.element(v) for v in text.split(",") if v.strip()]
    for i, char in enumerate(text):
        if char == "-" and 0 < i < len(text) - 1 and text[i - 1] not in "eE":
            try:
                return float(text[:i]), float(text[i + 1:])
            except ValueError:
                continue
    return None


def values_of(params: dict) -> dict:
    """The searched values a run's params hold, typed ({} entries for absent ones)."""
    values = {}
    for d in DIMENSIONS:
        raw = params.get(d.name)
        if raw in (None, "", "None"):
            continue
        try:
            values[d.name] = d.element(float(raw)) if d.element is int else d.element(raw)
        except ValueError:
            continue
    return values


def run_label(values: dict) -> str:
    """'alexnet K=16 margin=0.1 lr=0.0001': the searched values of a trial, as every output
    writes them (absent values left out)."""
    return " ".join(d.format_label(values[d.name]) for d in DIMENSIONS
                    if values.get(d.name) is not None)


def table_header() -> str:
    return " ".join(d.header for d in DIMENSIONS)


def table_cells(values: dict) -> str:
    return " ".join(d.format_cell(values.get(d.name)) for d in DIMENSIONS)
