"""Batches of P places x K images (the GSV-Cities recipe): every place once per epoch, in an
order drawn from (seed, epoch), so a resumed run draws the same batches as an uninterrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class PlaceBatch:
    """One batch: `images` [P*K] image indices, place by place (K each), and `labels` [P*K]
    the place index of each image."""

    index: int  # the batch's position in its epoch
    images: np.ndarray
    labels: np.ndarray


class PlaceSampler:
    """Batches over `place_of` ([N] place index of each image): each epoch the places are
    shuffled and cut into batches of `places_per_batch`, and each place gives
    `images_per_place` of its images, drawn at random each epoch when it has more. A last
    batch of fewer places is kept (every place trains each epoch), unless it would hold a
    single place, which joins the batch before it (one place has no negatives)."""

    def __init__(self, place_of: np.ndarray, places_per_batch: int, images_per_place: int,
                 seed: int):
        place_of = np.asarray(place_of, dtype=np.int64)
        order = np.argsort(place_of, kind="stable")
        counts = np.bincount(place_of)
        self.images_of = np.split(order, np.cumsum(counts)[:-1])  # [num_places] index arrays
        self.places_per_batch, self.images_per_place = places_per_batch, images_per_place
        self.seed = seed
        self.epoch, self.next_batch = 1, 0  # where the next batch comes from

    @property
    def num_places(self) -> int:
        return len(self.images_of)

    @property
    def batches_per_epoch(self) -> int:
        return len(self._cuts()) + 1

    def _cuts(self) -> list[int]:
        """Where the shuffled places are cut into batches."""
        cuts = list(range(self.places_per_batch, self.num_places, self.places_per_batch))
        if cuts and self.num_places - cuts[-1] == 1:
            cuts.pop()  # a lone last place joins the batch before it
        return cuts

    def epoch_batches(self, epoch: int) -> list[PlaceBatch]:
        """Every batch of `epoch` (1-based), the same for the same (seed, epoch)."""
        rng = np.random.default_rng([self.seed, epoch])
        places = rng.permutation(self.num_places)
        batches = []
        for index, group in enumerate(np.split(places, self._cuts())):
            images = np.concatenate([rng.choice(self.images_of[p], self.images_per_place,
                                                replace=False) for p in group])
            batches.append(PlaceBatch(index, images, np.repeat(group, self.images_per_place)))
        return batches

    def remaining(self) -> list[PlaceBatch]:
        """The batches from where the sampler stands to the end of its epoch; take each with
        `taken()` after its step."""
        return self.epoch_batches(self.epoch)[self.next_batch:]

    def taken(self, batch: PlaceBatch) -> None:
        """`batch` was trained on: the sampler moves past it (to the next epoch after the
        last)."""
        self.next_batch = batch.index + 1
        if self.next_batch >= self.batches_per_epoch:
            self.epoch, self.next_batch = self.epoch + 1, 0

    def start_epoch(self, epoch: int) -> None:
        """Stand at `epoch` unless already inside it (a run resumed mid-epoch)."""
        if self.epoch != epoch:
            self.epoch, self.next_batch = epoch, 0

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "next_batch": self.next_batch, "seed": self.seed}

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.next_batch = int(state["epoch"]), int(state["next_batch"])
