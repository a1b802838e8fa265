"""A training run: its epochs (triplet or place-batched training, then validation, then a
checkpoint), resumable from any checkpoint it wrote. Build one with
`vpr_core.stages.train.training_run(config)`."""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import torch
from torch import nn

from ..errors import UserError, first_line
from ..evaluation.recall import evaluate
from ..models.checkpoints import CHECKPOINT_DIR
from ..runtime import StageClock, prepare_model, resolve_device
from ..settings import plain
from .inputs import SplitInput, TrainingData, frozen_inputs
from .mining import CandidateSampler, InProcessMiner, Miner
from .optimizer import build_optimizer, learning_rate
from .place_epochs import PlaceEpochs
from .results import EpochResult, TrainResult
from .resume import Standing
from .run_folder import RunFolder
from .triplets import TripletEpochs

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Start:
    """What a run starts from: a model and, when it continues one, a checkpoint."""

    model: nn.Module
    centroids: Path | None = None  # the centroid file NetVLAD was initialised from
    checkpoint: dict | None = None  # resumed: its standing, optimiser state, negative cache
    path: Path | None = None  # resumed: the checkpoint file


class TrainingRun:
    """One training run of a validated `TrainConfig` over `data`, from `start`. Building it
    writes nothing; iterate `epochs()` (or call `run()`).

    `after_step()` runs after every optimiser step (keeping a pruned model's zeros);
    `checkpoint_extra` goes into every checkpoint (what a compressed model is).
    """

    def __init__(self, config, data: TrainingData, start: Start, miner: Miner | None = None,
                 owner: str = "local", *, after_step=None, checkpoint_extra: dict | None = None):
        self.config, self.data, self.owner = config, data, owner
        self.device = resolve_device(config.device)
        self.miner = miner or InProcessMiner(str(self.device))
        self.model = prepare_model(start.model, self.device, config.precision)
        self.centroids_path, self.resumed_from = start.centroids, start.path
        self.optimizer = build_optimizer(config, self.model)
        self.sampler = CandidateSampler(data.train_split.train_positives(),
                                        data.train_split.potential_negatives(),
                                        config.num_negative_samples)
        self.standing = Standing(epoch=config.start_epoch)
        self.clock = StageClock(self.device)
        self.places = None if data.places is None else PlaceEpochs.for_run(
            config, self.model, self.optimizer, data.places.place_of, self.clock, after_step)
        if start.checkpoint is not None:
            self._restore(start.checkpoint, start.path)
        self.checkpoint_extra = dict(checkpoint_extra or {})
        self.folder = RunFolder(self._choose_run_dir())
        self.triplets = TripletEpochs(config, self.model, self.optimizer, self.sampler,
                                      self.miner, owner, self.clock, after_step)
        # what steps and validation read: the images and the whole model until the first
        # epoch decides (see `frozen_inputs`)
        self.train_input = SplitInput(data.train_feed, self.model)
        self.val_input = SplitInput(data.val_feed, self.model)
        self.inputs_chosen = False

    # ---- what callers read ------------------------------------------------------------------
    @property
    def run_dir(self) -> Path:
        return self.folder.path

    @property
    def best_score(self) -> float:
        return self.standing.best_score

    @property
    def best_epoch(self) -> int:
        return self.standing.best_epoch

    @property
    def image_size(self) -> tuple[int, int]:
        return self.data.image_size

    @property
    def train_split(self):
        return self.data.train_split

    @property
    def republished(self) -> int:
        return self.triplets.republished

    @property
    def frozen_splits(self) -> tuple[str, ...]:
        """The splits read as frozen-layer output (none until the first epoch)."""
        return tuple(i.source.split.split for i in (self.train_input, self.val_input)
                     if i.frozen)

    # ---- the loop -----------------------------------------------------------------------------
    def epochs(self) -> Iterator[EpochResult]:
        """Train epoch by epoch, yielding each epoch's result after its checkpoint is written."""
        config = self.config
        self.folder.start(self.flags())
        saved = False
        try:
            for epoch in range(self.standing.epoch + 1, config.epochs + 1):
                result = self._run_epoch(epoch)
                saved = True
                yield result
                if config.patience and \
                        self.standing.not_improved > config.patience / config.eval_every:
                    self.standing.stopped_early = True
                    break
        except BaseException:
            if not saved:  # leave no run folder without a checkpoint behind
                self.folder.abandon()
            raise
        finally:
            self.miner.release(self.owner)

    def run(self) -> TrainResult:
        return self.summary(list(self.epochs()))

    def summary(self, epochs: list[EpochResult]) -> TrainResult:
        """The run's result after `epochs`, the results `epochs()` yielded."""
        return TrainResult(self.run_dir, self.best_score, self.best_epoch, tuple(epochs),
                           self.standing.stopped_early, self.config.precision,
                           self.frozen_splits)

    def learning_rate(self, epoch: int) -> float:
        """The learning rate of `epoch` (place batches: of its first step)."""
        if self.places is not None:
            return self.places.learning_rate(epoch)
        return learning_rate(self.config, epoch)

    def validate(self) -> dict:
        """Recall@N of the model as it is on the validation split."""
        return evaluate(self.val_input.forward, self.val_input.source,
                        batch_size=self.config.cache_batch_size,
                        precision=self.config.precision,
                        show_progress=self.config.show_progress).recalls

    def _run_epoch(self, epoch: int) -> EpochResult:
        started = time.perf_counter()
        lr = self.learning_rate(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        if not self.inputs_chosen:
            with self.clock("frozen_features"):
                self._choose_inputs()
        if self.places is not None:
            stats = self.places.run(epoch, self.train_input)
        else:
            stats = self.triplets.run(epoch, self.data.query_ids, self.train_input)
        is_best = False
        if epoch % self.config.eval_every == 0 or epoch == self.config.epochs:
            with self.clock("validation"):
                is_best = self.standing.validated(epoch, self.validate())
        self.standing.epoch = epoch
        path = self.folder.save(epoch, self._checkpoint(), is_best)
        return EpochResult(**dataclasses.asdict(stats), epoch=epoch,
                           recalls=dict(self.standing.recalls), lr=lr,
                           seconds=time.perf_counter() - started, is_best=is_best,
                           checkpoint=path, republished=self.triplets.republished,
                           stage_seconds=self.clock.take())

    def _choose_inputs(self) -> None:
        self.train_input, self.val_input = frozen_inputs(self.model, self.data, self.config,
                                                         self.device)
        self.inputs_chosen = True

    # ---- checkpoints --------------------------------------------------------------------------
    def _restore(self, checkpoint: dict, path: Path) -> None:
        """Continue `checkpoint`: its standing, optimiser state and negative cache."""
        self.standing = Standing.from_checkpoint(checkpoint)
        if checkpoint.get("optimizer") and not self.config.fresh_optimizer:
            try:
                self.optimizer.load_state_dict(checkpoint["optimizer"])
            except (ValueError, KeyError) as error:
                raise UserError(
                    f"{path}: its optimiser state does not fit --optim {self.config.optim} "
                    f"over this model's trainable layers ({first_line(error, 120)}); "
                    f"resume with the --optim and --weights it was trained with, or pass "
                    f"--fresh-optimizer") from None
        elif checkpoint.get("optimizer"):
            log.warning("--fresh-optimizer: the optimiser starts afresh; the resumed run is "
                        "not the continuation of %s", path)
        if isinstance(checkpoint.get("negative_cache"), torch.Tensor):
            self.sampler.load_cache_state(checkpoint["negative_cache"])
        if self.places is not None:
            self.places.restore(checkpoint)

    def _choose_run_dir(self) -> Path:
        if self.config.run_dir is not None:
            return self.config.run_dir
        if self.resumed_from is not None and self.resumed_from.parent.name == CHECKPOINT_DIR:
            return self.resumed_from.parent.parent  # continue the run in its own folder
        stamp = datetime.now().strftime("%b%d_%H-%M-%S")
        return Path("runs").absolute() / f"{stamp}_{self.config.arch}_{self.config.aggregator}"

    def _checkpoint(self) -> dict:
        return {**self.standing.checkpoint_fields(),
                "state_dict": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(),
                "parallel": False,
                # read by this project only; the reference ignores extra keys
                "negative_cache": self.sampler.cache_state(self.config.num_negatives),
                "model": self.model.shape.record(),
                "arch": self.model.arch, "pooling": self.model.aggregator,  # as first written
                **(self.places.state() if self.places else {}), **self.checkpoint_extra}

    def flags(self) -> dict:
        """flags.json: the config's settings as the run used them (the image size and
        dataset as the data resolved them; the centroids it started from)."""
        flags = plain(self.config)
        flags.update(image_size=f"{self.data.image_size[0]}x{self.data.image_size[1]}",
                     run_dir=str(self.run_dir), dataset=self.data.train_split.dataset,
                     centroids=str(self.centroids_path) if self.centroids_path else None)
        return flags
