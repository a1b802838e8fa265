"""What training gives back: one epoch's figures, and the run's."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..evaluation.recall import named_recalls


@dataclass(frozen=True)
class EpochStats:
    """The training half of an epoch (before validation)."""

    loss: float  # mean over batches that had triplets
    triplets: int  # queries that gave a triplet (place batches: pairs or triplets mined)
    negatives: int  # negatives used in the loss
    batches: int  # optimiser steps
    skipped_batches: int  # batches with no triplet
    mined_fraction: float | None = None  # place batches: the share of pairs or triplets mined


@dataclass(frozen=True)
class EpochResult(EpochStats):
    """An epoch's training figures (`EpochStats`), then its validation and checkpoint."""

    epoch: int = 0
    recalls: dict = field(default_factory=dict)  # validation Recall@N (the last validation's)
    lr: float = 0.0
    seconds: float = 0.0  # training + validation wall time of this epoch
    is_best: bool = False
    checkpoint: Path | None = None
    republished: int = 0  # descriptor caches published again (the mining service restarted)
    # seconds per stage: frozen_features, cache_refresh, mining, training_steps, validation
    stage_seconds: dict = field(default_factory=dict)

    def metrics(self) -> dict:
        out = named_recalls(self.recalls)
        out.update(loss=self.loss, triplets=self.triplets, negatives=self.negatives,
                   batches=self.batches, skipped_batches=self.skipped_batches, lr=self.lr,
                   epoch_seconds=self.seconds, caches_republished=self.republished)
        if self.mined_fraction is not None:
            out.update(mined_fraction=self.mined_fraction)
        out.update({f"seconds_{stage}": s for stage, s in self.stage_seconds.items()})
        return out


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best_score: float
    best_epoch: int
    epochs: tuple = ()
    stopped_early: bool = False
    precision: str = "fp32"
    frozen_features: tuple = ()  # splits read as frozen-layer output

    def to_dict(self) -> dict:
        return {"run_dir": str(self.run_dir), "best_recall@5": self.best_score,
                "best_epoch": self.best_epoch, "stopped_early": self.stopped_early,
                "precision": self.precision, "frozen_features": list(self.frozen_features),
                "epochs": [{"epoch": e.epoch, **e.metrics()} for e in self.epochs]}
