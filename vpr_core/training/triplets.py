"""One epoch of triplet training with hard-negative mining (the reference's `train()`).

The training queries are shuffled and cut into subsets of `cache_refresh_rate`; for each
subset the database and the subset's queries are encoded and published to the `Miner`, each
query is mined for a positive and hard negatives, and the model takes one optimiser step per
batch of `batch_size` queries. Fixed reference bugs: the negative cache survives across
subsets and epochs, subsets are shuffled, a batch (or a whole subset) without triplets is
skipped, the average loss counts only real batches, and small datasets (fewer negatives than
the sample size) work.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import UserError
from ..evaluation.extraction import extract_descriptors
from ..runtime import StageClock, autocast, progress, to_device
from .inputs import SplitInput
from .mining import CacheMissing, CandidateSampler, DescriptorCache, Miner, Triplet
from .results import EpochStats

MINING_CHUNK = 64  # queries per mining request
CACHE_DTYPE = np.float16  # descriptor caches for mining: half the bytes, the same triplets
# On CUDA a training batch is padded (with repeats of its first image, left out of the loss)
# to a multiple of this many images: batches of 12 to 48 images would otherwise make cuDNN's
# autotuner search again for each of 37 shapes.
CUDA_BATCH_MULTIPLE = 8


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


def triplet_loss(descriptors: torch.Tensor, negative_counts: list[int],
                 margin: float) -> torch.Tensor:
    """The reference's loss: a triplet loss summed over every (query, negative) pair, then
    averaged. descriptors [2B + sum(n) (+ padding), D]: B queries, B positives, then each
    query's negatives; the margin applies as sqrt(margin) to L2 distances."""
    batch, total = len(negative_counts), sum(negative_counts)
    queries, positives, negatives = torch.split(descriptors[:2 * batch + total].float(),
                                                [batch, batch, total])
    counts = to_device(torch.tensor(negative_counts), descriptors.device)
    return F.triplet_margin_loss(
        queries.repeat_interleave(counts, dim=0, output_size=total),
        positives.repeat_interleave(counts, dim=0, output_size=total), negatives,
        margin=math.sqrt(margin), p=2, reduction="sum") / total


class TripletEpochs:
    """Runs triplet epochs over a model: mining through `miner` under the name `owner`,
    candidates from `sampler`, one `optimizer` step per batch (then `after_step`)."""

    def __init__(self, config, model: torch.nn.Module, optimizer, sampler: CandidateSampler,
                 miner: Miner, owner: str, clock: StageClock,
                 after_step: Callable[[], None] | None = None):
        self.config, self.model, self.optimizer = config, model, optimizer
        self.sampler, self.miner, self.owner = sampler, miner, owner
        self.clock, self.after_step = clock, after_step
        self.device = clock.device
        self.batch_multiple = CUDA_BATCH_MULTIPLE if self.device.type == "cuda" else 1
        self.refreshes = 0  # descriptor caches published (the miner's version numbers)
        self.republished = 0  # caches published again after the mining service lost them
        self.cache: DescriptorCache | None = None

    def run(self, epoch: int, query_ids: np.ndarray, train: SplitInput) -> EpochStats:
        config = self.config
        rng = np.random.default_rng([config.seed, epoch])  # resumable: depends on the epoch only
        order = rng.permutation(query_ids)
        num_subsets = 1 if config.cache_refresh_rate == 0 else \
            math.ceil(len(order) / config.cache_refresh_rate)
        totals = _Totals()
        bar = progress(total=math.ceil(len(order) / config.batch_size),
                       enabled=config.show_progress, desc=f"train epoch {epoch}", unit="batch")
        for subset in np.array_split(order, num_subsets):
            with self.clock("cache_refresh"):
                self._publish_cache(subset, epoch, train)
            with self.clock("mining"):
                triplets = self._mine(subset, rng)
            batches = [triplets[i:i + config.batch_size]
                       for i in range(0, len(triplets), config.batch_size)]
            with self.clock("training_steps"):
                self._train_batches(batches, totals, epoch, bar, train)
        bar.close()
        return totals.stats()

    def _publish_cache(self, subset: np.ndarray, epoch: int, train: SplitInput) -> None:
        """Encode the database and the subset's queries and hand them to the miner.

        Only the subset's queries are encoded (the reference encodes all of them every time).
        The cache is float16: half the bytes in the mining service, the same triplets (see
        `python -m benchmarks mine`).
        """
        source, config = train.source, self.config
        ids = np.sort(subset)
        settings = dict(batch_size=config.cache_batch_size, precision=config.precision,
                        dtype=CACHE_DTYPE, show_progress=config.show_progress)
        database = extract_descriptors(train.forward, source,
                                       range(source.split.num_database),
                                       desc="cache: database", **settings)
        queries = extract_descriptors(train.forward, source,
                                      [source.query_index(q) for q in ids],
                                      desc="cache: queries", **settings)
        if not (np.isfinite(database).all() and np.isfinite(queries).all()):
            # a diverged model gives NaN descriptors, which mine no triplet and so no NaN loss
            raise TrainingDiverged(f"the descriptors became NaN or infinite in epoch "
                                   f"{epoch}; lower --lr (now {config.lr:g})")
        self.refreshes += 1
        self.cache = DescriptorCache(database, queries, ids)
        self.miner.publish(self.owner, self.refreshes, self.cache)

    def _mine(self, subset: np.ndarray, rng: np.random.Generator) -> list[Triplet | None]:
        triplets: list[Triplet | None] = []
        for start in range(0, len(subset), MINING_CHUNK):
            request = self.sampler.request(subset[start:start + MINING_CHUNK], rng,
                                           self.config.margin, self.config.num_negatives)
            try:
                found = self.miner.mine(self.owner, self.refreshes, request)
            except CacheMissing:  # the mining service restarted and lost our cache
                self.republished += 1
                self.miner.publish(self.owner, self.refreshes, self.cache)
                found = self.miner.mine(self.owner, self.refreshes, request)
            self.sampler.remember(found)
            triplets.extend(found)
        return triplets

    def _train_batches(self, batches: list, totals: _Totals, epoch: int, bar,
                       train: SplitInput) -> None:
        usable = [[t for t in batch if t is not None] for batch in batches]
        skipped = sum(1 for batch in usable if not batch)
        totals.skipped += skipped
        bar.update(skipped)
        usable = [batch for batch in usable if batch]
        self.model.train()
        losses = []  # on the device: read once per subset, not once per step
        inputs = train.source.batches(map(lambda batch: self._images_of(batch, train), usable))
        for batch, images in zip(usable, inputs):
            counts = [len(t.negatives) for t in batch]
            losses.append(self._step(images, counts, train))
            totals.triplets += len(counts)
            totals.negatives += sum(counts)
            bar.update(1)
            if bar.n % 50 == 0 and not bar.disable:
                bar.set_postfix(loss=f"{float(losses[-1]):.4f}")
        if losses:
            totals.add_losses(torch.stack(losses).cpu(), epoch, self.config)

    def _images_of(self, batch: list[Triplet], train: SplitInput) -> list[int]:
        """Source indices of a batch's images: queries, then positives, then negatives (then,
        on CUDA, padding; see `CUDA_BATCH_MULTIPLE`)."""
        indices = ([train.source.query_index(t.query) for t in batch]
                   + [t.positive for t in batch]
                   + [int(n) for t in batch for n in t.negatives])
        return indices + indices[:1] * (-len(indices) % self.batch_multiple)

    def _step(self, images: torch.Tensor, negative_counts: list[int],
              train: SplitInput) -> torch.Tensor:
        """One optimiser step on images [2B + sum(n) (+ padding), 3, H, W] (or the frozen
        layers' output for them). Returns the loss as a device scalar: reading it would make
        the host wait."""
        with autocast(self.device, self.config.precision):
            descriptors = train.forward(images)
        loss = triplet_loss(descriptors, negative_counts, self.config.margin)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.after_step is not None:
            self.after_step()
        return loss.detach()


def check_losses(values: torch.Tensor, epoch: int, batches_before: int, advice: str) -> None:
    """`TrainingDiverged` naming the first of the batch losses `values` (after
    `batches_before` batches of `epoch`) that is NaN or infinite, with `advice`."""
    if not bool(torch.isfinite(values).all()):
        first = int((~torch.isfinite(values)).nonzero()[0])
        raise TrainingDiverged(f"the loss became {float(values[first])} at epoch {epoch}, "
                               f"batch {batches_before + first + 1}; {advice}")


class _Totals:
    """Sums over an epoch's batches."""

    def __init__(self):
        self.loss_sum, self.batches = 0.0, 0
        self.triplets = self.negatives = self.skipped = 0

    def add_losses(self, values: torch.Tensor, epoch: int, config) -> None:
        check_losses(values, epoch, self.batches, f"lower --lr (now {config.lr:g}) or --margin")
        self.loss_sum += float(values.sum())
        self.batches += len(values)

    def stats(self) -> EpochStats:
        loss = self.loss_sum / self.batches if self.batches else 0.0
        return EpochStats(loss, self.triplets, self.negatives, self.batches, self.skipped)
