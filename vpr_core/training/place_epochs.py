"""One epoch of the place-batched recipe (GSV-Cities / MixVPR): batches of P places x K images
from the `PlaceSampler`, their descriptors mined in the batch and scored by the `PlaceLoss`,
one optimiser step per batch with the `Schedule`'s learning rate."""
from __future__ import annotations

from collections.abc import Callable

import torch

from ..runtime import StageClock, autocast, progress
from .inputs import SplitInput
from .losses import PlaceLoss
from .place_sampler import PlaceSampler
from .results import EpochStats
from .schedule import Schedule
from .triplets import check_losses


class PlaceEpochs:
    """Runs place-batched epochs of `model` with `optimizer` (then `after_step`)."""

    def __init__(self, config, model: torch.nn.Module, optimizer, sampler: PlaceSampler,
                 schedule: Schedule, clock: StageClock,
                 after_step: Callable[[], None] | None = None):
        self.config, self.model, self.optimizer = config, model, optimizer
        self.sampler, self.schedule, self.clock = sampler, schedule, clock
        self.after_step = after_step
        self.loss = PlaceLoss(config)
        self.device = clock.device

    @classmethod
    def for_run(cls, config, model: torch.nn.Module, optimizer, place_of, clock: StageClock,
                after_step: Callable[[], None] | None = None) -> PlaceEpochs:
        """The epochs of a run over places `place_of` ([N] place index per image), starting
        after `config.start_epoch` epochs."""
        sampler = PlaceSampler(place_of, config.places_per_batch, config.images_per_place,
                               config.seed)
        sampler.start_epoch(config.start_epoch + 1)
        schedule = Schedule(config, sampler.batches_per_epoch)
        schedule.step = config.start_epoch * sampler.batches_per_epoch
        return cls(config, model, optimizer, sampler, schedule, clock, after_step)

    def learning_rate(self, epoch: int) -> float:
        """The learning rate of `epoch`'s first step."""
        return self.schedule.lr_at((epoch - 1) * self.sampler.batches_per_epoch)

    def state(self) -> dict:
        """Checkpoint fields: where the sampler and the schedule stand (a resume continues
        both)."""
        return {"place_sampler": self.sampler.state_dict(),
                "schedule": self.schedule.state_dict()}

    def restore(self, checkpoint: dict) -> None:
        if "place_sampler" in checkpoint:
            self.sampler.load_state_dict(checkpoint["place_sampler"])
            self.schedule.load_state_dict(checkpoint["schedule"])

    def run(self, epoch: int, train: SplitInput) -> EpochStats:
        """Train on the batches of `epoch` the sampler has left (all, unless resumed inside
        the epoch). Returns the mean loss, steps, and the mined pairs or triplets."""
        self.sampler.start_epoch(epoch)
        batches = self.sampler.remaining()
        bar = progress(total=len(batches), enabled=self.config.show_progress,
                       desc=f"train epoch {epoch}", unit="batch")
        self.model.train()
        losses, kept, candidates = [], 0, 0
        with self.clock("training_steps"):
            for batch, images in zip(batches, train.source.batches(b.images for b in batches)):
                labels = torch.as_tensor(batch.labels, device=self.device)
                loss, mined, possible = self._step(images, labels, train)
                losses.append(loss)
                kept, candidates = kept + mined, candidates + possible
                self.sampler.taken(batch)
                bar.update(1)
        bar.close()
        return self._stats(losses, kept, candidates, epoch)

    def _step(self, images: torch.Tensor, labels: torch.Tensor, train: SplitInput):
        """One optimiser step on images [P*K, 3, H, W] (or the frozen layers' output) with
        place labels [P*K]."""
        self.schedule.apply(self.optimizer)
        with autocast(self.device, self.config.precision):
            descriptors = train.forward(images)
        loss, kept, candidates = self.loss(descriptors, labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.schedule.stepped()
        if self.after_step is not None:
            self.after_step()
        return loss.detach(), kept, candidates

    def _stats(self, losses: list, kept: int, candidates: int, epoch: int) -> EpochStats:
        values = torch.stack(losses).float().cpu() if losses else torch.zeros(0)
        check_losses(values, epoch, 0, f"lower --lr (now {self.config.lr:g})")
        loss = float(values.mean()) if len(values) else 0.0
        return EpochStats(loss, triplets=kept, negatives=0, batches=len(losses),
                          skipped_batches=0, mined_fraction=kept / max(1, candidates))
