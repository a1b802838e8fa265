"""The settings of a training run (`train`, a sweep's trials, compression's fine-tuning)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..settings import (
    LOGGED,
    PER_TRIAL,
    RESTORED,
    SPEC,
    TRAINING,
    check,
    declared,
    default_of,
    flag_name,
    setting,
    shown,
)
from .aggregator import AggregatorSettings
from .common import (
    CommonConfig,
    absolute,
    centroids_setting,
    ckpt_setting,
    from_checkpoint,
    resume_setting,
)

OPTIMIZERS = ("SGD", "ADAM")
# SGD's settings (the reference's Adam takes none of them) and their defaults
SGD_DEFAULTS = {"momentum": 0.9, "weight_decay": 1e-3, "lr_step": 5.0, "lr_gamma": 0.5}
SGD_ONLY = {"optim": "SGD"}
HYPER = (RESTORED, LOGGED, SPEC)  # a training hyper-parameter's roles


def _sgd(name: str, help: str, aliases=(), **bounds):
    return setting(None, help, group=TRAINING, parse=float, only_with=SGD_ONLY, aliases=aliases,
                   shown_default=shown(SGD_DEFAULTS[name]), roles=HYPER, **bounds)


@dataclass(frozen=True)
class TrainConfig(AggregatorSettings, CommonConfig):
    run_dir: Path | None = setting(None, "the run's folder", group=TRAINING, metavar="DIR",
                                   shown_default="./runs/<timestamp>_<arch>_<aggregator>",
                                   roles=(PER_TRIAL,))
    resume: Path | None = resume_setting("continue this run (a run folder or checkpoint file)")
    ckpt: str = ckpt_setting()
    centroids: Path | None = centroids_setting("NetVLAD's initial centroids, an .hdf5 file")
    # with --resume, the checkpoint's model (a released file has no flags.json to restore them
    # from); given, they must agree with it
    arch: str | None = from_checkpoint("arch", roles=HYPER)
    aggregator: str | None = from_checkpoint("aggregator", roles=HYPER)
    train_split: str = setting("train", "training split", group=TRAINING, roles=HYPER)
    val_split: str = setting("val", "validation split", group=TRAINING, roles=HYPER)
    epochs: int = setting(30, "epochs to train", group=TRAINING, aliases=("--nEpochs",),
                          parse=int, minimum=1, roles=(LOGGED, SPEC))
    batch_size: int = setting(4, "queries per batch; each gives 1 positive and up to "
                              "--num-negatives negatives", group=TRAINING,
                              aliases=("--batchSize",), parse=int, minimum=1, roles=HYPER)
    optim: str = setting("SGD", "optimiser", group=TRAINING, choices=OPTIMIZERS, parse=str.upper,
                         roles=HYPER)
    lr: float = setting(1e-4, "learning rate", group=TRAINING, parse=float, positive=True,
                        roles=HYPER)
    momentum: float | None = _sgd("momentum", "SGD momentum", minimum=0.0)
    weight_decay: float | None = _sgd("weight_decay", "SGD weight decay",
                                      aliases=("--weightDecay",), minimum=0.0)
    lr_step: float | None = _sgd("lr_step", "epochs per learning-rate step (SGD)",
                                 aliases=("--lrStep",), positive=True)
    lr_gamma: float | None = _sgd("lr_gamma", "learning-rate factor per step (SGD)",
                                  aliases=("--lrGamma",), positive=True)
    margin: float = setting(0.1, "triplet margin, used as sqrt(margin) on L2 distances, as in "
                            "the reference", group=TRAINING, parse=float, positive=True,
                            roles=HYPER)
    num_negatives: int = setting(10, "hard negatives per query", group=TRAINING, parse=int,
                                 minimum=1, roles=HYPER)
    num_negative_samples: int = setting(1000, "negatives sampled per query before mining",
                                        group=TRAINING, parse=int, minimum=1, roles=HYPER)
    cache_refresh_rate: int = setting(1000, "queries between descriptor cache rebuilds, 0: once "
                                      "per epoch", group=TRAINING, parse=int, minimum=0,
                                      aliases=("--cacheRefreshRate",), roles=HYPER)
    eval_every: int = setting(1, "validate every N epochs", group=TRAINING, parse=int,
                              minimum=1, aliases=("--evalEvery",), roles=HYPER)
    patience: int = setting(10, "stop after N validations without a better Recall@5, 0: never",
                            group=TRAINING, parse=int, minimum=0, roles=HYPER)
    start_epoch: int = setting(0, "epochs counted as done before training starts (the "
                               "reference's flag; not with --resume)", group=TRAINING,
                               parse=int, minimum=0, roles=(SPEC,))
    fresh_optimizer: bool = setting(False, "with --resume: start the optimiser afresh instead of "
                                    "refusing a checkpoint whose optimiser state does not fit",
                                    group=TRAINING, parse=bool)
    frozen_cache_gb: float | None = setting(
        None, "memory for the frozen layers' output of every image, computed once instead of at "
        "every step (pretrained encoders), 0: off", group=TRAINING, metavar="GB", parse=float,
        minimum=0.0, roles=(SPEC,), shown_default="30% of the GPU's, or a quarter of the "
        "host's up to 8 GB, split between sweep trials side by side")

    def validate(self) -> TrainConfig:
        """A resolved copy (paths absolute, SGD's defaults filled in), every setting checked."""
        sgd = self.optim_name == "SGD"
        filled = {name: default for name, default in SGD_DEFAULTS.items()
                  if sgd and getattr(self, name) is None}
        if self.resume is None:
            filled.update({name: default_of(CommonConfig, name) for name in ("arch", "aggregator")
                           if getattr(self, name) is None})
        resolved = dataclasses.replace(self, **filled)
        resolved = dataclasses.replace(
            resolved, **resolved._resolved(), optim=self.optim_name,
            run_dir=absolute(self.run_dir), resume=absolute(self.resume),
            centroids=absolute(self.centroids))
        check(resolved)
        resolved._check_common(weights_loaded=resolved.resume is None)
        resolved._check_resume()
        return resolved

    @property
    def optim_name(self) -> str:
        return str(self.optim).upper()

    def _check_resume(self) -> None:
        """Settings that only apply with (or without) --resume are refused, not ignored."""
        if self.resume is not None:
            if self.start_epoch:
                raise UserError("--start-epoch does not apply with --resume: training goes on "
                                "from the checkpoint's epoch; leave --start-epoch out")
            if self.centroids is not None:
                raise UserError("--centroids does not apply with --resume: the checkpoint "
                                "holds NetVLAD's parameters; leave --centroids out")
            for name, meta in declared(AggregatorSettings):
                if meta.only_with and getattr(self, name) is not None:
                    flag = flag_name(type(self), name)
                    raise UserError(f"{flag} does not apply with --resume: the checkpoint holds "
                                    f"the aggregator as it was built; leave {flag} out")
        elif self.fresh_optimizer:
            raise UserError("--fresh-optimizer applies with --resume only; leave it out")
        if self.start_epoch >= self.epochs:
            raise UserError(f"--start-epoch {self.start_epoch} leaves no epoch to train before "
                            f"--epochs {self.epochs}; lower it or raise --epochs")
