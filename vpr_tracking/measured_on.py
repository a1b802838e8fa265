"""On which data a run's recalls were measured: the one place that says it (a training run or
a trial: its validation split; an evaluation or a compressed variant: its split)."""
from __future__ import annotations

from dataclasses import dataclass

from .names import TRAINED_KINDS
from .store import Store

UNKNOWN = "?"


@dataclass(frozen=True)
class MeasuredOn:
    """A dataset's name and split; `data_root` is informative only (a dataset moved to
    another folder is the same dataset)."""

    dataset: str
    split: str
    data_root: str = ""

    def same_data(self, other: MeasuredOn) -> bool:
        return UNKNOWN not in (self.dataset, self.split) and \
            (self.dataset, self.split) == (other.dataset, other.split)

    def __str__(self) -> str:
        return f"{self.dataset}/{self.split}"


def measured_on(store: Store, run_id: str) -> MeasuredOn:
    """What run `run_id` measured its recalls on, as its params record it."""
    run = store.run(run_id, with_history=False)
    params = run.params
    split = params.get("val_split") if run.kind in TRAINED_KINDS else params.get("split")
    return MeasuredOn(params.get("dataset") or UNKNOWN, split or UNKNOWN,
                      params.get("data_root") or "")
