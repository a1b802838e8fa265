"""On which data a run's recalls were measured: the one place that says it. Read from the
run's dataset inputs (its validation or evaluation input: dataset, split, file-list digest);
for runs logged before runs logged their inputs, from their params (a training run or a
trial: its validation split; an evaluation: its split)."""
from __future__ import annotations

from dataclasses import dataclass

from .names import MEASURED_CONTEXTS, TRAINED_KINDS
from .store import Store

UNKNOWN = "?"


@dataclass(frozen=True)
class MeasuredOn:
    """A dataset's name and split, and the digest of its file list when the run logged it;
    `data_root` is informative only (a dataset moved to another folder is the same one)."""

    dataset: str
    split: str
    data_root: str = ""
    digest: str = ""

    def same_data(self, other: MeasuredOn) -> bool:
        """The same dataset and split (and the same files, when both digests are known)."""
        if UNKNOWN in (self.dataset, self.split):
            return False
        digests = (self.digest, other.digest)
        return (self.dataset, self.split) == (other.dataset, other.split) and \
            ("" in digests or self.digest == other.digest)

    def __str__(self) -> str:
        files = f" (files {self.digest[:8]})" if self.digest else ""
        return f"{self.dataset}/{self.split}{files}"


def measured_on(store: Store, run_id: str) -> MeasuredOn:
    """What run `run_id` measured its recalls on."""
    measured = {MeasuredOn(found.dataset, found.split, found.source, found.digest)
                for found, context in store.datasets(run_id) if context in MEASURED_CONTEXTS}
    if len(measured) == 1:
        return measured.pop()
    run = store.run(run_id, with_history=False)
    params = run.params
    split = params.get("val_split") if run.kind in TRAINED_KINDS else params.get("split")
    return MeasuredOn(params.get("dataset") or UNKNOWN, split or UNKNOWN,
                      params.get("data_root") or "")
