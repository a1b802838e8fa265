"""The swept hyper-parameters, declared once.

Each `Dimension` is a `TrainConfig` setting a sweep samples: a choice among values or a
log-uniform range. A dimension applies where its setting does: an aggregator's own settings
(`num_clusters`, `gem_p`, ...) only when that aggregator is chosen (the setting's `only_with`),
and a choice keeps the values that fit another dimension's (`fits`: the backbones the chosen
aggregator can pool). From `DIMENSIONS` come the spec's `search.space` keys and their checks,
the sampling of the space (`SAMPLING_ORDER`, `orchestrator.space_sampler`), the first points
(`search_points`), the sweep's MLflow params (numbers: `margin_min`, `margin_max`; choices as
a JSON list; a condition as `<name>_only_with`), the trial labels and the columns of every
trials table. To search one more setting, add its `Dimension` here.

The training recipe's dimensions (the loss and its settings, P and K, the optimiser, the
schedule) are not `listed` by default: a space searches them only when a spec lists them, so a
spec that does not is the sweep it was (same points, labels and params). Such a dimension's
`default` is what a trial takes when its space does not list it, where others' conditions read
it (no loss listed: triplets, so the triplet `margin` is searched).
"""
from __future__ import annotations

import itertools
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from vpr_core.config import TrainConfig
from vpr_core.config.train import LOSSES, OPTIMIZERS, SCHEDULERS
from vpr_core.errors import UserError
from vpr_core.models.catalog import AGGREGATORS, ARCHES, CNNS, backbone_problem
from vpr_core.settings import conditions_hold, declared, default_of, setting_of

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
    one of `allowed` when given, else positive numbers. `fits`: (another dimension, a function
    of (value, its value) saying why they do not fit, None when they do): the choices kept
    under the other's value. `condition`: {dimension: value or values} under which alone it
    is searched, where its setting applies more widely (the triplet margin). `listed`: in a
    spec's space unless it leaves it out; a dimension not listed is searched only where a spec
    lists it. `names`: shorter names of values, in labels and cells."""

    name: str
    kind: str
    default: tuple
    start: object
    label: str
    title: str
    cell: str
    element: type = float
    allowed: tuple | None = None
    fits: tuple[str, Callable] | None = None
    condition: dict | None = None
    listed: bool = True
    names: dict | None = None

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

    # ---- conditions -----------------------------------------------------------------------
    @property
    def only_with(self) -> dict:
        """{dimension: value or values} under which alone it applies: its `condition`, else
        its setting's."""
        return self.condition or setting_of(TrainConfig, self.name).only_with or {}

    @property
    def depends_on(self) -> tuple[str, ...]:
        """The dimensions whose values decide whether it applies or which values it keeps."""
        return (*self.only_with, *([self.fits[0]] if self.fits else []))

    def applies(self, point: dict) -> bool:
        """Whether it applies under the values of `point` (an absent one: its default, a
        dimension not listed the value trials take then, `UNLISTED`)."""
        return conditions_hold(self.only_with, with_unlisted(point), TrainConfig)

    def problem(self, value, point: dict) -> str | None:
        """Why `value` does not fit the values of `point` (None: it fits)."""
        if self.fits is None:
            return None
        other, problem_of = self.fits
        return problem_of(value, point.get(other, default_of(TrainConfig, other)))

    def kept(self, values, point: dict) -> list:
        """The choices among `values` that fit the values of `point`."""
        return [value for value in values if self.problem(value, point) is None]

    # ---- writing values -------------------------------------------------------------------
    def short(self, value):
        return self.names.get(value, value) if self.names else value

    def format_label(self, value) -> str:
        return self.label.format(self.short(value))

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
        return format(self.short(value), self.cell)


def _recipe(name: str, kind: str, default: tuple, start, label: str, title: str, cell: str,
            element: type = float, **declared_as) -> Dimension:
    """A dimension of the training recipe: searched only where a spec lists it."""
    return Dimension(name, kind, default, start, label, title, cell, element, listed=False,
                     **declared_as)


# in the order labels and tables write them
DIMENSIONS = (
    Dimension("arch", CHOICE, CNNS, EVERY, "{}", "arch", "<13", str, ARCHES,
              fits=("aggregator", backbone_problem)),
    Dimension("aggregator", CHOICE, ("netvlad",), EVERY, "{}", "aggregator", "<10", str,
              AGGREGATORS),
    Dimension("num_clusters", CHOICE, (16, 32, 64), MIDDLE, "K={}", "K", ">3", int),
    Dimension("gem_p", LOG_UNIFORM, (1.0, 6.0), 3.0, "p={:.3g}", "p", "5.2f"),
    Dimension("mixvpr_out_rows", CHOICE, (2, 4, 8), MIDDLE, "rows={}", "rows", ">4", int),
    Dimension("boq_num_queries", CHOICE, (32, 64, 128), MIDDLE, "queries={}", "Q", ">3", int),
    _recipe("loss", CHOICE, ("triplet",), EVERY, "{}", "loss", "<7", str, allowed=LOSSES,
            names={"multi-similarity": "ms", "triplet-margin": "tm", "contrastive": "contr"}),
    _recipe("ms_epsilon", LOG_UNIFORM, (0.1, 0.1), 0.1, "eps={:.3g}", "eps", "5.3f"),
    _recipe("ms_beta", LOG_UNIFORM, (50.0, 50.0), 50.0, "beta={:.3g}", "beta", "5.1f"),
    _recipe("tm_margin", LOG_UNIFORM, (0.1, 0.1), 0.1, "m={:.3g}", "m", "5.3f"),
    _recipe("contrastive_neg_margin", LOG_UNIFORM, (1.0, 1.0), 1.0, "neg={:.3g}", "neg",
            "5.2f"),
    # the setting applies to every loss (its default 0.1 is any config's); the triplet loss
    # alone reads it, so it is searched for triplet trials only
    Dimension("margin", LOG_UNIFORM, (0.03, 0.3), 0.1, "margin={:.3g}", "margin", "7.3f",
              condition={"loss": "triplet"}),
    _recipe("places_per_batch", CHOICE, (120,), MIDDLE, "P={}", "P", ">4", int),
    _recipe("images_per_place", CHOICE, (4,), MIDDLE, "imgs={}", "imgs", ">4", int),
    _recipe("optim", CHOICE, (default_of(TrainConfig, "optim"),), MIDDLE, "{}", "optim", "<5",
            str, allowed=OPTIMIZERS),
    _recipe("scheduler", CHOICE, ("step",), MIDDLE, "{}", "schedule", "<9", str,
            allowed=SCHEDULERS),
    Dimension("lr", LOG_UNIFORM, (1e-5, 1e-3), 1e-4, "lr={:.2g}", "lr", "8.2e"),
)
NAMES = tuple(d.name for d in DIMENSIONS)
BY_NAME = {d.name: d for d in DIMENSIONS}
LISTED = tuple(d.name for d in DIMENSIONS if d.listed)
# what a trial takes for a dimension its space does not list, where a condition reads it (the
# schedule resolves by these two; a spec on place data must list its losses)
UNLISTED = {"loss": "triplet", "optim": default_of(TrainConfig, "optim")}
# the dimensions whose values decide which other settings apply, or their defaults: a trial
# config of every combination of their listed values is checked, and logs its own params
DECIDING = tuple(name for name in NAMES if any(
    name in (meta.only_with or {}) for _, meta in declared(TrainConfig)))


def with_unlisted(point: dict) -> dict:
    """`point` with the values trials take for the dimensions it lacks (`UNLISTED`)."""
    return {**UNLISTED, **point}


def listed_in(space: dict) -> tuple[Dimension, ...]:
    """The dimensions a space lists, in sampling order."""
    return tuple(d for d in SAMPLING_ORDER if d.name in space)


def deciding_points(space: dict) -> list[dict]:
    """{deciding dimension: value} of every combination of the values the space lists for
    them (`DECIDING`)."""
    names = [name for name in DECIDING if name in space]
    return [dict(zip(names, values))
            for values in itertools.product(*(space[name] for name in names))]


def deciding_key(values: dict) -> str:
    """The values of the deciding dimensions a trial has, as one key (JSON)."""
    return json.dumps({name: values[name] for name in DECIDING if name in values},
                      sort_keys=True)


def uses_triplets(space: dict) -> bool:
    """Whether some point of the space trains triplets (mined in the shared service)."""
    return "triplet" in space.get("loss", [UNLISTED["loss"]])


def _sampling_order(dimensions) -> tuple[Dimension, ...]:
    """The dimensions, each after those it depends on (else in declaration order)."""
    ordered, pending = [], list(dimensions)
    while pending:
        done = {d.name for d in ordered}
        ready = next(d for d in pending if set(d.depends_on) & set(NAMES) <= done)
        ordered.append(ready)
        pending.remove(ready)
    return tuple(ordered)


# the order a point is sampled in: the aggregator before its settings and the backbones
SAMPLING_ORDER = _sampling_order(DIMENSIONS)


def default_space() -> dict:
    """{name: choices list or (low, high)} of every `listed` dimension, as a spec leaves
    it."""
    return {d.name: list(d.default) if d.kind == CHOICE else tuple(d.default)
            for d in DIMENSIONS if d.listed}


def parse_space(raw: dict, where: str) -> dict:
    """A spec's `search.space` section over the defaults. A setting given for aggregators the
    space does not list is refused."""
    unknown = sorted(set(raw) - set(NAMES))
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; allowed: "
                        f"{', '.join(sorted(NAMES))}")
    space = default_space()
    for name, value in raw.items():
        space[name] = BY_NAME[name].parse(value, f"{where}.{name}")
    for name in raw:
        if BY_NAME[name] not in searched(space):
            other, wanted = next(iter(BY_NAME[name].only_with.items()))
            wanted = " or ".join(wanted) if isinstance(wanted, tuple) else wanted
            raise UserError(f"{where}.{name} applies to {other} {wanted} only, which "
                            f"{where}.{other} does not list; add it there or leave {name} out")
    return space


def check_space(space: dict) -> None:
    """Each dimension's values, and every choice that another must fit (an aggregator that
    takes a ViT's class token needs a ViT among the backbones)."""
    for dimension in listed_in(space):
        dimension.check(space[dimension.name], f"search.space.{dimension.name}")
    for d in listed_in(space):
        if d.fits is None:
            continue
        other = d.fits[0]
        for value in space[other]:
            if not d.kept(space[d.name], {other: value}):
                raise UserError(f"search.space.{other} {value} fits none of search.space."
                                f"{d.name}: {d.problem(space[d.name][0], {other: value})}")


def condition_in(space: dict, d: Dimension) -> dict:
    """{dimension: the values of the space (its default when the space has none)} under
    which `d` applies."""
    return {other: [v for v in space.get(other, BY_NAME[other].default)
                    if d.applies({other: v})] for other in d.only_with if other in BY_NAME}


def searched(space: dict) -> list[Dimension]:
    """The dimensions of the space some point of it gives a value (its condition can hold)."""
    return [d for d in DIMENSIONS if d.name in space and all(condition_in(space, d).values())]


def space_params(space: dict) -> dict:
    """The space as MLflow params: `<name>_choices` (a JSON list), `<name>_min`, `<name>_max`,
    and for a setting of some of the space's aggregators only `<name>_only_with`
    ({"aggregator": [those]}); the dimensions the space never gives are left out."""
    params = {}
    for d in searched(space):
        values = space[d.name]
        if d.kind == CHOICE:
            params[f"{d.name}_choices"] = json.dumps(list(values))
        else:
            params[f"{d.name}_min"], params[f"{d.name}_max"] = values
        condition = condition_in(space, d)
        if any(len(values) < len(space.get(other, values)) for other, values in
               condition.items()):
            params[f"{d.name}_only_with"] = json.dumps(condition)
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


def values_of(params: dict, names=None) -> dict:
    """The searched values a run's params hold, typed (no entries for absent ones): those of
    the dimensions `names` (default: the `listed` ones; a sweep's: its space's) that apply
    under the run's values (a multi-similarity run's margin is not searched)."""
    names = set(names if names is not None else LISTED)
    typed = {}
    for d in DIMENSIONS:
        raw = params.get(d.name)
        if raw in (None, "", "None"):
            continue
        try:
            typed[d.name] = d.element(float(raw)) if d.element is int else d.element(raw)
        except ValueError:
            continue
    return {name: value for name, value in typed.items()
            if name in names and BY_NAME[name].applies(typed)}


def searched_values(config: dict) -> dict:
    """The searched values of a trial's config (which holds those of the dimensions that apply
    to it, and other keys)."""
    return {name: config[name] for name in NAMES if name in config}


def run_label(values: dict) -> str:
    """'resnet18 gem p=3 margin=0.1 lr=0.0001': the searched values of a trial, as every
    output writes them (absent values, such as the settings of other aggregators, left out)."""
    return " ".join(d.format_label(values[d.name]) for d in DIMENSIONS
                    if values.get(d.name) is not None)


def table_dimensions(rows: list[dict]) -> list[Dimension]:
    """The columns of a table of trials whose searched values are `rows`: every dimension
    of every space that applies to some trial (the triplet margin, unless every trial trains a
    place loss), and an aggregator's, a loss's or the recipe's setting where some trial has
    it."""
    def always(d: Dimension) -> bool:
        return d.listed and not setting_of(TrainConfig, d.name).only_with and (
            not rows or any(d.applies(row) for row in rows))

    return [d for d in DIMENSIONS if always(d) or any(d.name in row for row in rows)]


def table_header(dimensions=DIMENSIONS) -> str:
    return " ".join(d.header for d in dimensions)


def table_cells(values: dict, dimensions=DIMENSIONS) -> str:
    """The cells of one trial ('-' for a value it has not)."""
    return " ".join(d.format_cell(values.get(d.name)) for d in dimensions)
