"""NetVLAD training with triplet loss and hard-negative mining (the reference's `--mode=train`).

Per epoch: the training queries are shuffled and cut into subsets of `cache_refresh_rate`;
for each subset the database and the subset's queries are encoded, published to the `Miner`,
each query is mined for a positive and hard negatives, and the model takes one SGD step per
batch of `batch_size` queries. After each epoch the model is evaluated on the validation split
and a checkpoint is written. Fixed reference bugs: the negative cache survives across subsets
and epochs, subsets are shuffled, a batch (or a whole subset) without triplets is skipped,
the average loss counts only real batches, and small datasets (fewer negatives than the
sample size) work.
"""
from __future__ import annotations

import logging
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config.common import TrainConfig, format_image_size
from ..data import open_split, resolve_image_size
from ..data.image_feed import ImageFeed
from ..errors import UserError
from ..evaluation.extraction import extract_descriptors
from ..evaluation.recall import evaluate, named_recalls
from ..fileio import missing_ancestors, remove_created, write_atomic, write_json_atomic
from ..models.backbones import freeze_pretrained_layers
from ..models.checkpoints import (
    BEST_FILE,
    CHECKPOINT_DIR,
    FLAGS_FILE,
    LATEST_FILE,
    checkpoint_file,
    read_flags,
    save_checkpoint,
)
from ..runtime import (
    StageClock,
    autocast,
    prepare_model,
    progress,
    resolve_device,
    seed_everything,
    to_device,
)
from ..stages.starting_model import fresh_model, model_from_checkpoint
from .frozen_features import FrozenFeatures, budget_bytes
from .mining import CacheMissing, CandidateSampler, DescriptorCache, InProcessMiner, Miner, Triplet

MINING_CHUNK = 64  # queries per mining request
log = logging.getLogger(__name__)
CACHE_DTYPE = np.float16  # descriptor caches for mining: half the bytes, the same triplets
# On CUDA a training batch is padded (with repeats of its first image, left out of the loss)
# to a multiple of this many images: batches of 12 to 48 images would otherwise make cuDNN's
# autotuner search again for each of 37 shapes.
CUDA_BATCH_MULTIPLE = 8


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


@dataclass
class EpochResult:
    epoch: int
    loss: float  # mean over batches that had triplets
    recalls: dict  # validation Recall@N
    triplets: int  # queries that gave a triplet
    negatives: int  # negatives used in the loss
    batches: int  # optimiser steps
    skipped_batches: int  # batches with no triplet
    lr: float
    seconds: float  # training + validation wall time of this epoch
    is_best: bool
    checkpoint: Path
    republished: int = 0  # descriptor caches published again (the mining service restarted)
    # seconds per stage: cache_refresh, mining, training_steps, validation
    stage_seconds: dict = field(default_factory=dict)

    def metrics(self) -> dict:
        out = named_recalls(self.recalls)
        out.update(loss=self.loss, triplets=self.triplets, negatives=self.negatives,
                   batches=self.batches, skipped_batches=self.skipped_batches, lr=self.lr,
                   epoch_seconds=self.seconds, caches_republished=self.republished)
        out.update({f"seconds_{stage}": s for stage, s in self.stage_seconds.items()})
        return out


@dataclass
class TrainResult:
    run_dir: Path
    best_score: float
    best_epoch: int
    epochs: list = field(default_factory=list)
    stopped_early: bool = False
    precision: str = "fp32"
    frozen_features: list = field(default_factory=list)  # splits read as frozen-layer output

    def to_dict(self) -> dict:
        return {"run_dir": str(self.run_dir), "best_recall@5": self.best_score,
                "best_epoch": self.best_epoch, "stopped_early": self.stopped_early,
                "precision": self.precision, "frozen_features": self.frozen_features,
                "epochs": [{"epoch": e.epoch, **e.metrics()} for e in self.epochs]}


class TrainingRun:
    """One training run. Building it validates everything and writes nothing; then iterate
    `epochs()`.

    `model`, when given, is trained instead of one built from the config (fine-tuning a
    compressed model); `after_step()` runs after every optimiser step (keeping a pruned
    model's zeros); `checkpoint_extra` goes into every checkpoint (what the model is).
    """

    def __init__(self, config: TrainConfig, miner: Miner | None = None, owner: str = "local", *,
                 model: torch.nn.Module | None = None, after_step=None,
                 checkpoint_extra: dict | None = None):
        self.config = config.validate()
        if model is not None and config.resume is not None:
            raise ValueError("a given model is trained from where it is: no --resume")
        self.given_model, self.after_step = model, after_step
        self.checkpoint_extra = dict(checkpoint_extra or {})
        self.device = resolve_device(config.device)
        self.miner = miner or InProcessMiner(str(self.device))
        self.owner = owner
        self.train_split = open_split(config.data_root, config.train_split, config.dataset)
        self.val_split = open_split(config.data_root, config.val_split, config.dataset)
        self.image_size = resolve_image_size(self.train_split, config.image_size)
        if config.image_size is None and self.val_split.native_size != self.image_size:
            raise UserError(f"{config.val_split} images are {self.val_split.native_size}, "
                            f"{config.train_split} images {self.image_size}; pass --image-size HxW")
        self.train_feed = ImageFeed.for_config(config, self.train_split, self.image_size,
                                               self.device)
        self.val_feed = ImageFeed.for_config(config, self.val_split, self.image_size,
                                             self.device)
        # what refreshes, steps and validation read, and the model part that reads it: the
        # images and the whole model, or the frozen layers' output and the rest (see
        # `_use_frozen_features`)
        self.train_source, self.val_source = self.train_feed, self.val_feed
        self.frozen_checked = False
        self.clock = StageClock(self.device)
        self.batch_multiple = CUDA_BATCH_MULTIPLE if self.device.type == "cuda" else 1
        self.start_epoch, self.best_score, self.best_epoch, self.not_improved = \
            config.start_epoch, 0.0, 0, 0
        self.recalls: dict = {}
        self._prepare_queries()
        seed_everything(config.seed)
        self._build_model()
        self.run_dir = self._choose_run_dir()
        self.refreshes = 0
        self.republished = 0  # caches published again after the mining service lost them
        self.stopped_early = False

    # ---- set-up -------------------------------------------------------------------------
    def _prepare_queries(self) -> None:
        positives = self.train_split.train_positives()
        self.query_ids = np.array([q for q, p in enumerate(positives) if len(p)], dtype=np.int64)
        if len(self.query_ids) == 0:
            raise UserError(f"no {self.config.train_split} query has a database image within "
                            f"{math.sqrt(self.train_split.nontriv_pos_dist_sq_thr):.0f} m; "
                            f"check the UTM coordinates of the dataset")
        self.sampler = CandidateSampler(positives, self.train_split.potential_negatives(),
                                        self.config.num_negative_samples)

    def _build_model(self) -> None:
        config = self.config
        self.resumed_from = None
        if self.given_model is not None:
            self.model, self.centroids_path, checkpoint = self.given_model, None, None
        elif config.resume is not None:
            path = checkpoint_file(config.resume, config.ckpt)
            num_clusters = config.num_clusters if config.pooling == "netvlad" else None
            self.model, checkpoint, _ = model_from_checkpoint(path, config.arch, num_clusters,
                                                              config.pooling)
            if config.weights != "none":
                freeze_pretrained_layers(self.model.encoder, self.model.arch)
            initialised_from = read_flags(path).get("centroids")  # kept for the run's records
            self.centroids_path = Path(initialised_from) if initialised_from else None
            self.resumed_from = path
        else:
            self.model, self.centroids_path = fresh_model(config, self.train_split,
                                                          config.centroids)
            checkpoint = None
        self.model = prepare_model(self.model, self.device, config.precision)
        self.train_forward = self.val_forward = self.model
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        if config.optim == "SGD":
            self.optimizer = torch.optim.SGD(trainable, lr=config.lr, momentum=config.momentum,
                                             weight_decay=config.weight_decay)
        else:
            self.optimizer = torch.optim.Adam(trainable, lr=config.lr)
        if checkpoint is not None:
            self._restore(checkpoint, path)

    def _restore(self, checkpoint: dict, path: Path) -> None:
        self.start_epoch = int(checkpoint.get("epoch", 0))
        self.best_score = float(checkpoint.get("best_score", 0.0))
        self.best_epoch = int(checkpoint.get("best_epoch", self.start_epoch))
        self.not_improved = int(checkpoint.get("not_improved", 0))
        self.recalls = {int(k): float(v) for k, v in checkpoint.get("recalls", {}).items()}
        if checkpoint.get("optimizer") and not self.config.fresh_optimizer:
            try:
                self.optimizer.load_state_dict(checkpoint["optimizer"])
            except (ValueError, KeyError) as error:
                raise UserError(
                    f"{path}: its optimiser state does not fit --optim "
                    f"{self.config.optim} over this model's trainable layers "
                    f"({str(error).splitlines()[0][:120]}); resume with the --optim and "
                    f"--weights it was trained with, or pass --fresh-optimizer") from None
        elif checkpoint.get("optimizer"):
            log.warning("--fresh-optimizer: the optimiser starts afresh; the resumed run is "
                        "not the continuation of %s", path)
        if isinstance(checkpoint.get("negative_cache"), torch.Tensor):
            self.sampler.load_cache_state(checkpoint["negative_cache"])

    def _choose_run_dir(self) -> Path:
        if self.config.run_dir is not None:
            return self.config.run_dir
        if self.resumed_from is not None and self.resumed_from.parent.name == CHECKPOINT_DIR:
            return self.resumed_from.parent.parent  # continue the run in its own folder
        stamp = datetime.now().strftime("%b%d_%H-%M-%S")
        return Path("runs").absolute() / f"{stamp}_{self.config.arch}_{self.config.pooling}"

    # ---- the loop -----------------------------------------------------------------------
    def epochs(self) -> Iterator[EpochResult]:
        """Train epoch by epoch, yielding each epoch's result after its checkpoint is written."""
        created = missing_ancestors(self.run_dir)
        self._write_flags()
        saved = False
        try:
            for epoch in range(self.start_epoch + 1, self.config.epochs + 1):
                result = self._run_epoch(epoch)
                saved = True
                yield result
                if self.config.patience and \
                        self.not_improved > self.config.patience / self.config.eval_every:
                    self.stopped_early = True
                    break
        except BaseException:
            if created and not saved:  # leave no run folder without a checkpoint behind
                remove_created(created + [self.run_dir / CHECKPOINT_DIR],
                               (self.run_dir / CHECKPOINT_DIR / FLAGS_FILE,))
            raise
        finally:
            self.miner.release(self.owner)

    def run(self) -> TrainResult:
        return self.summary(list(self.epochs()))

    def summary(self, epochs: list[EpochResult]) -> TrainResult:
        """The run's result after `epochs`, the results `epochs()` yielded."""
        return TrainResult(self.run_dir, self.best_score, self.best_epoch, list(epochs),
                           self.stopped_early, self.config.precision, self.frozen_splits)

    def learning_rate(self, epoch: int) -> float:
        """The reference's StepLR, stepped with the epoch number before each epoch."""
        if self.config.optim != "SGD":
            return self.config.lr
        return self.config.lr * self.config.lr_gamma ** math.floor(epoch / self.config.lr_step)

    def _run_epoch(self, epoch: int) -> EpochResult:
        started = time.perf_counter()
        lr = self.learning_rate(epoch)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        stats = self._train_epoch(epoch)
        evaluated = epoch % self.config.eval_every == 0 or epoch == self.config.epochs
        is_best = False
        if evaluated:
            with self.clock("validation"):
                self.recalls = self.validate()
            is_best = self.recalls[5] > self.best_score
            if is_best:
                self.best_score, self.best_epoch, self.not_improved = self.recalls[5], epoch, 0
            else:
                self.not_improved += 1
        path = self._save(epoch, is_best)
        return EpochResult(epoch=epoch, recalls=dict(self.recalls), lr=lr,
                           seconds=time.perf_counter() - started, is_best=is_best,
                           checkpoint=path, republished=self.republished,
                           stage_seconds=self.clock.take(), **stats)

    def _train_epoch(self, epoch: int) -> dict:
        config = self.config
        rng = np.random.default_rng([config.seed, epoch])  # resumable: depends on the epoch only
        order = rng.permutation(self.query_ids)
        num_subsets = 1 if config.cache_refresh_rate == 0 else \
            math.ceil(len(order) / config.cache_refresh_rate)
        totals = {"loss_sum": 0.0, "triplets": 0, "negatives": 0, "batches": 0, "skipped": 0}
        if not self.frozen_checked:
            with self.clock("frozen_features"):
                self._use_frozen_features()
        bar = progress(total=math.ceil(len(order) / config.batch_size),
                       enabled=config.show_progress, desc=f"train epoch {epoch}", unit="batch")
        for subset in np.array_split(order, num_subsets):
            with self.clock("cache_refresh"):
                self._publish_cache(subset, epoch)
            with self.clock("mining"):
                triplets = self._mine(subset, rng)
            batches = [triplets[i:i + config.batch_size]
                       for i in range(0, len(triplets), config.batch_size)]
            with self.clock("training_steps"):
                self._train_batches(batches, totals, epoch, bar)
        bar.close()
        real = totals["batches"]
        return {"loss": totals["loss_sum"] / real if real else 0.0, "triplets": totals["triplets"],
                "negatives": totals["negatives"], "batches": real,
                "skipped_batches": totals["skipped"]}

    def _use_frozen_features(self) -> None:
        """Run the frozen layers once over the training, then the validation images, as far
        as --frozen-cache-gb holds them (see `vpr_core.training.frozen_features`)."""
        self.frozen_checked = True
        config = self.config
        budget = budget_bytes(config.frozen_cache_gb, self.device)
        kept = []
        for name, feed in (("train", self.train_feed), ("val", self.val_feed)):
            features = FrozenFeatures.build(self.model, feed, budget=budget,
                                            batch_size=config.cache_batch_size,
                                            precision=config.precision,
                                            show_progress=config.show_progress)
            if features is None:
                break
            budget -= features.nbytes
            setattr(self, f"{name}_source", features)
            setattr(self, f"{name}_forward", features.forward_of(self.model))
            kept.append(f"{len(feed.paths)} {feed.split.split} images "
                        f"({features.nbytes / 1e9:.2f} GB)")
        if kept:
            log.info("the first %d encoder layers are frozen: their output is computed once, "
                     "for %s; training runs the layers after them", self.train_source.layers,
                     " and ".join(kept))

    @property
    def frozen_splits(self) -> list[str]:
        """The splits whose frozen-layer output is kept (empty until the first epoch)."""
        return [source.split.split for source in (self.train_source, self.val_source)
                if isinstance(source, FrozenFeatures)]

    def _publish_cache(self, subset: np.ndarray, epoch: int) -> None:
        """Encode the database and the subset's queries and hand them to the miner.

        Only the subset's queries are encoded (the reference encodes all of them every time).
        The cache is float16: half the bytes in the mining service, the same triplets (see
        `python -m benchmarks mine`).
        """
        source, forward, config = self.train_source, self.train_forward, self.config
        ids = np.sort(subset)
        settings = dict(batch_size=config.cache_batch_size, precision=config.precision,
                        dtype=CACHE_DTYPE, show_progress=config.show_progress)
        database = extract_descriptors(forward, source, range(self.train_split.num_database),
                                       desc="cache: database", **settings)
        queries = extract_descriptors(forward, source, [source.query_index(q) for q in ids],
                                      desc="cache: queries", **settings)
        if not (np.isfinite(database).all() and np.isfinite(queries).all()):
            # a diverged model gives NaN descriptors, which mine no triplet and so no NaN loss
            raise TrainingDiverged(f"the descriptors became NaN or infinite in epoch "
                                   f"{epoch}; lower --lr (now {self.config.lr:g})")
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

    def _train_batches(self, batches: list, totals: dict, epoch: int, bar) -> None:
        usable = [[t for t in batch if t is not None] for batch in batches]
        totals["skipped"] += sum(1 for batch in usable if not batch)
        bar.update(sum(1 for batch in usable if not batch))
        usable = [batch for batch in usable if batch]
        self.model.train()
        losses = []  # on the device: read once per subset, not once per step
        inputs = self.train_source.batches(map(self._images_of, usable))
        for batch, images in zip(usable, inputs):
            counts = [len(t.negatives) for t in batch]
            losses.append(self._step(images, counts))
            totals["triplets"] += len(counts)
            totals["negatives"] += sum(counts)
            bar.update(1)
            if bar.n % 50 == 0 and not bar.disable:
                bar.set_postfix(loss=f"{float(losses[-1]):.4f}")
        if not losses:
            return
        values = torch.stack(losses).cpu()
        if not bool(torch.isfinite(values).all()):
            first = int((~torch.isfinite(values)).nonzero()[0])
            raise TrainingDiverged(
                f"the loss became {float(values[first])} at epoch {epoch}, batch "
                f"{totals['batches'] + first + 1}; lower --lr (now {self.config.lr:g}) or "
                f"--margin")
        totals["loss_sum"] += float(values.sum())
        totals["batches"] += len(values)

    def _images_of(self, batch: list[Triplet]) -> list[int]:
        """Feed indices of a batch's images: queries, then positives, then negatives (then,
        on CUDA, padding; see `CUDA_BATCH_MULTIPLE`)."""
        indices = ([self.train_feed.query_index(t.query) for t in batch]
                   + [t.positive for t in batch]
                   + [int(n) for t in batch for n in t.negatives])
        return indices + indices[:1] * (-len(indices) % self.batch_multiple)

    def _step(self, images: torch.Tensor, negative_counts: list[int]) -> torch.Tensor:
        """images [2B + sum(n) (+ padding), 3, H, W]: queries, positives, negatives (or the
        frozen layers' output for them, see `_use_frozen_features`).

        Returns the loss as a device scalar: reading it would make the host wait.
        """
        batch, total = len(negative_counts), sum(negative_counts)
        with autocast(self.device, self.config.precision):
            descriptors = self.train_forward(images)
        queries, positives, negatives = torch.split(descriptors[:2 * batch + total].float(),
                                                    [batch, batch, total])
        counts = to_device(torch.tensor(negative_counts), self.device)
        # the reference sums a triplet loss over every (query, negative) pair, then averages
        loss = F.triplet_margin_loss(
            queries.repeat_interleave(counts, dim=0, output_size=total),
            positives.repeat_interleave(counts, dim=0, output_size=total), negatives,
            margin=math.sqrt(self.config.margin), p=2, reduction="sum") / total
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.after_step is not None:
            self.after_step()
        return loss.detach()

    def validate(self) -> dict:
        """Recall@N of the model as it is on the validation split."""
        result = evaluate(self.val_forward, self.val_source,
                          batch_size=self.config.cache_batch_size,
                          precision=self.config.precision,
                          show_progress=self.config.show_progress)
        return result.recalls

    # ---- files --------------------------------------------------------------------------
    def _write_flags(self) -> None:
        flags = self.config.to_dict()
        flags.update(image_size=format_image_size(self.image_size), run_dir=str(self.run_dir),
                     dataset=self.train_split.dataset,
                     centroids=str(self.centroids_path) if self.centroids_path else None)
        write_json_atomic(self.run_dir / CHECKPOINT_DIR / FLAGS_FILE, flags)

    def _save(self, epoch: int, is_best: bool) -> Path:
        checkpoint = {
            "epoch": epoch,
            "state_dict": self.model.state_dict(),
            "recalls": {n: float(r) for n, r in self.recalls.items()},
            "best_score": float(self.best_score),
            "optimizer": self.optimizer.state_dict(),
            "parallel": False,
            # read by this project only; the reference ignores extra keys
            "best_epoch": self.best_epoch,
            "not_improved": self.not_improved,
            "negative_cache": self.sampler.cache_state(self.config.num_negatives),
            "arch": self.model.arch,
            "pooling": self.model.pooling,
            **self.checkpoint_extra,
        }
        folder = self.run_dir / CHECKPOINT_DIR
        resumable = (folder / LATEST_FILE).is_file()  # a checkpoint the old files still hold
        try:
            latest = save_checkpoint(folder / LATEST_FILE, checkpoint)
            if is_best:
                write_atomic(folder / BEST_FILE, lambda tmp: shutil.copyfile(latest, tmp))
        except OSError as error:  # a full disk, lost permissions: the old files are intact
            then = f"continue with --resume {self.run_dir}" if resumable else \
                "run the command again (no checkpoint of this run was written)"
            raise UserError(f"cannot write the checkpoint of epoch {epoch} in {folder} "
                            f"({error.strerror or error}); free disk space, then {then}") from None
        return latest
