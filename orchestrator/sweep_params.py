"""The MLflow params of a sweep's runs besides the searched values: the settings every trial
shares, and the settings each aggregator's trials share (its own settings that are not
searched, at the spec's values or the aggregator's defaults). A trial's run holds its
model's settings and no other aggregator's; the sweep's parent run holds them all.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from vpr_core.config import TrainConfig
from vpr_core.runtime import resolve_precision
from vpr_core.settings import declared
from vpr_tracking import search_space
from vpr_tracking.params import training_params

# the TrainConfig settings of some aggregators only (a GeM trial has no `salad_token_dim`)
AGGREGATOR_SETTINGS = frozenset(name for name, meta in declared(TrainConfig)
                                if "aggregator" in (meta.only_with or {}))


@dataclass(frozen=True)
class FixedParams:
    """`shared`: every trial's; `by_aggregator`: {aggregator: its trials' own settings}."""

    shared: dict
    by_aggregator: dict

    def of_sweep(self) -> dict:
        """What the parent run logs: the shared settings and every aggregator's."""
        merged = dict(self.shared)
        for params in self.by_aggregator.values():
            merged.update(params)
        return merged


def fixed_params(plan, on_gpu: bool) -> FixedParams:
    """The params of a sweep's trials but the searched values, from a trial config of each
    aggregator, validated as the trials validate it (the image size 'native' when images keep
    their own sizes). The precision is the one trials resolve on their device (bf16 on a GPU):
    the driver may have no GPU."""
    spec = plan.spec
    trial_device = torch.device("cuda" if on_gpu else "cpu")
    shared, by_aggregator = {}, {}
    for aggregator, point in spec.model_points().items():
        config = dataclasses.replace(
            spec.trial_config(point, data_root=plan.data_root, run_dir=Path("/")),
            precision=resolve_precision(spec.train.get("precision"), trial_device)).validate()
        params = {name: value for name, value in
                  training_params(config, plan.dataset, plan.image_size).items()
                  if name not in search_space.NAMES}
        by_aggregator[aggregator] = {name: value for name, value in params.items()
                                     if name in AGGREGATOR_SETTINGS and value is not None}
        shared = {name: value for name, value in params.items()
                  if name not in AGGREGATOR_SETTINGS}
    return FixedParams(shared, by_aggregator)
