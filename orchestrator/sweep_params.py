"""The MLflow params of a sweep's runs besides the searched values: the settings every trial
shares, and the settings the trials of each combination of deciding values share (an
aggregator's own settings, a loss's, SGD's momentum, a schedule's: those that are not searched,
at the spec's values or their defaults; `search_space.DECIDING`). A trial's run holds its
model's and its recipe's settings and no other; the sweep's parent run holds them all.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from vpr_core.runtime import resolve_precision
from vpr_tracking.params import training_params


@dataclass(frozen=True)
class FixedParams:
    """`shared`: every trial's; `by_point`: {deciding key (`search_space.deciding_key`): what
    the trials with those values log besides}."""

    shared: dict
    by_point: dict

    def of_sweep(self) -> dict:
        """What the parent run logs: the shared settings and every combination's."""
        merged = dict(self.shared)
        for params in self.by_point.values():
            merged.update(params)
        return merged


def fixed_params(plan, on_gpu: bool) -> FixedParams:
    """The params of a sweep's trials but the searched values, from a trial config of each
    combination of deciding values, validated as the trials validate it (the image size
    'native' when images keep their own sizes). The precision is the one trials resolve on
    their device (bf16 on a GPU): the driver may have no GPU. Settings that do not apply to a
    trial (None) are left out."""
    spec = plan.spec
    trial_device = torch.device("cuda" if on_gpu else "cpu")
    by_point = {}
    for key, point in spec.deciding_points().items():
        config = dataclasses.replace(
            spec.trial_config(point, data_root=plan.data_root, run_dir=Path("/")),
            precision=resolve_precision(spec.train.get("precision"), trial_device)).validate()
        by_point[key] = {name: value for name, value in
                         training_params(config, plan.dataset, plan.image_size).items()
                         if name not in spec.space and value is not None}
    shared = {name: value for name, value in next(iter(by_point.values())).items()
              if all(params.get(name) == value for params in by_point.values())}
    return FixedParams(shared, {key: {name: value for name, value in params.items()
                                      if name not in shared}
                                for key, params in by_point.items()})
