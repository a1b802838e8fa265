"""The search space as Optuna samples it: a define-by-run function for `OptunaSearch`.

Each trial's point is sampled dimension by dimension in `SAMPLING_ORDER` (those the space
lists): the aggregator and the loss first, then only the dimensions that apply to them
(`num_clusters` for NetVLAD and SALAD, `gem_p` for GeM, `ms_epsilon` for multi-similarity,
the triplet `margin` for triplets, ...), each choice among the values that fit the values
before it (SALAD's backbones are the space's ViTs). A constant (a range with low == high)
is returned, not sampled. Ray merges the returned point into the trial's config, so a
trial's config holds the values of its own dimensions and no other.

Optuna refuses a parameter whose choices change from trial to trial, so a choice narrowed by
another value is sampled under a name of its own (`arch_for_salad`): the trial's config holds
that name too, besides `arch`. The first points are given to Optuna under the same names
(`optuna_points`).

The sampler is pickled with the searcher's state (`Tuner.restore`): it holds the space only
and lives in this importable module.
"""
from __future__ import annotations

from dataclasses import dataclass

from vpr_tracking.search_space import CHOICE, Dimension, listed_in


@dataclass(frozen=True)
class SpaceSampler:
    """`OptunaSearch(space=SpaceSampler(spec.space))`: called with an Optuna trial, it
    suggests the trial's values and returns the whole point."""

    space: dict

    def __call__(self, trial) -> dict:
        point = {}
        for d in listed_in(self.space):
            if not d.applies(point):
                continue
            values = self.space[d.name]
            if d.kind == CHOICE:
                choices = d.kept(values, point)
                point[d.name] = trial.suggest_categorical(optuna_name(d, values, point),
                                                          choices)
            elif d.fixed(values):
                point[d.name] = values[0]
            else:
                point[d.name] = trial.suggest_float(d.name, values[0], values[1], log=True)
        return point


def optuna_name(d: Dimension, values, point: dict) -> str:
    """The Optuna parameter of `d` under the values of `point`: its name, or where the values
    before it narrow its choices, '<name>_for_<their value>'."""
    if d.kind != CHOICE or len(d.kept(values, point)) == len(values):
        return d.name
    return f"{d.name}_for_{point[d.fits[0]]}"


def optuna_points(space: dict, points: list[dict]) -> list[dict]:
    """The first points as Optuna's parameters name their values (see `optuna_name`)."""
    named = []
    for point in points:
        named.append({optuna_name(d, space[d.name], point): point[d.name]
                      for d in listed_in(space) if d.name in point})
    return named
