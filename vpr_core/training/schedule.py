"""The learning rate of the place-batched recipe at each optimiser step: linear warm-up over
`--warmup-steps`, then the `--scheduler`'s decay: `step` and `multistep` by epochs done (as
torch's StepLR and MultiStepLR stepped per epoch), `linear` and `cosine` by steps over the rest
of the run. A pure function of the step, so its state is the step count.

The triplet recipe keeps the reference's per-epoch StepLR (`optimizer.learning_rate`)."""
from __future__ import annotations

import bisect
import math


class Schedule:
    """The learning rate of step `step` (0-based, counted over the whole run) of a run of
    `epochs` epochs of `steps_per_epoch` steps under a validated `config`."""

    def __init__(self, config, steps_per_epoch: int):
        self.config, self.steps_per_epoch = config, steps_per_epoch
        self.total_steps = config.epochs * steps_per_epoch
        self.step = 0  # steps taken

    def lr_at(self, step: int) -> float:
        config = self.config
        warmup = config.warmup_steps or 0
        scale = min(1.0, (step + 1) / warmup) if warmup else 1.0
        return config.lr * scale * self._decay(step, warmup)

    def _decay(self, step: int, warmup: int) -> float:
        config, name = self.config, self.config.scheduler
        epochs_done = step // self.steps_per_epoch
        if name == "step":
            return config.lr_gamma ** math.floor(epochs_done / config.lr_step)
        if name == "multistep":
            return config.lr_gamma ** bisect.bisect_right(sorted(config.milestones), epochs_done)
        if name in ("linear", "cosine"):
            progress = min(1.0, max(0, step - warmup) / max(1, self.total_steps - warmup))
            if name == "linear":
                return 1.0 + (config.lr_end_factor - 1.0) * progress
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0  # constant

    def apply(self, optimizer) -> float:
        """Set the learning rate of the next step in `optimizer`; returns it."""
        lr = self.lr_at(self.step)
        for group in optimizer.param_groups:
            group["lr"] = lr
        return lr

    def stepped(self) -> None:
        self.step += 1

    def state_dict(self) -> dict:
        return {"step": self.step, "scheduler": self.config.scheduler}

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
