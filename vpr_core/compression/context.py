"""What a compression method may use besides the model: training images, the device, and the
project's fine-tuning."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ..data.image_feed import ImageFeed, chunks
from ..evaluation.extraction import extract_descriptors


@dataclass
class CompressionContext:
    """What a method may use besides the model.

    `train_feed` reads the training split's images (PCA descriptors, int8 calibration);
    `finetune(model, after_step)` trains `model` with the project's triplet loss, mining and
    validation for the requested fine-tuning epochs and returns it (unchanged when none were
    asked for); `after_step` runs after every optimiser step (a pruned model's zeros).
    """

    train_feed: ImageFeed
    device: torch.device
    batch_size: int
    precision: str
    seed: int
    finetune: Callable

    def calibration_batches(self, count: int) -> Iterator[torch.Tensor]:
        """Batches of up to `count` training database images spread evenly over the database
        (consecutive images often show one street), on the feed's device."""
        total = self.train_feed.split.num_database
        picked = np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(np.int64))
        return self.train_feed.batches(chunks(picked, self.batch_size))

    def training_descriptors(self, model, desc: str):
        """The descriptors `model` gives the training split's database images (numpy)."""
        feed = self.train_feed
        return extract_descriptors(model, feed, range(feed.split.num_database),
                                   batch_size=self.batch_size, precision=self.precision,
                                   desc=desc)
