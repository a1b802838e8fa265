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
from .aggregator import BUILT_SETTINGS, AggregatorSettings
from .common import (
    CommonConfig,
    absolute,
    centroids_setting,
    ckpt_setting,
    from_checkpoint,
    resume_setting,
)
from .recipe import check_loss_fits_data, check_recipe, is_place_data

OPTIMIZERS = ("SGD", "ADAM", "ADAMW")
PLACE_LOSSES = ("multi-similarity", "triplet-margin", "contrastive")  # place-batched recipe
LOSSES = ("triplet", *PLACE_LOSSES)
SCHEDULERS = ("constant", "step", "multistep", "linear", "cosine")
# SGD's settings (the reference's Adam takes none of them) and their defaults
SGD_DEFAULTS = {"momentum": 0.9, "weight_decay": 1e-3}
SGD_ONLY = {"optim": "SGD"}
# the schedules' settings and defaults: the reference's StepLR (triplets), MixVPR's multi-step
# (epochs 5, 10, 15, x1/3, 650 warm-up steps), SALAD's linear decay to 0.2 (AdamW)
SCHEDULE_DEFAULTS = {"step": {"lr_step": 5.0, "lr_gamma": 0.5},
                     "multistep": {"milestones": (5, 10, 15), "lr_gamma": 1 / 3},
                     "linear": {"lr_end_factor": 0.2}}
PLACE_WARMUP_STEPS = 650
# the place-batched losses' and miners' settings, at the authors' values (MixVPR's losses.py)
PLACE_DEFAULTS = {
    "all": {"places_per_batch": 120, "images_per_place": 4},
    "multi-similarity": {"ms_alpha": 1.0, "ms_beta": 50.0, "ms_base": 0.0, "ms_epsilon": 0.1},
    "triplet-margin": {"tm_margin": 0.1, "tm_miner_margin": 0.1, "tm_triplets": "semihard"},
    "contrastive": {"contrastive_pos_margin": 0.0, "contrastive_neg_margin": 1.0,
                    "pair_pos_margin": 0.7, "pair_neg_margin": 0.3},
}
HYPER = (RESTORED, LOGGED, SPEC)  # a training hyper-parameter's roles


def _sgd(name: str, help: str, aliases=(), only_with=SGD_ONLY, **bounds):
    return setting(None, help, group=TRAINING, parse=float, only_with=only_with,
                   aliases=aliases, shown_default=shown(SGD_DEFAULTS[name]), roles=HYPER,
                   **bounds)


def _place(default, help: str, loss=PLACE_LOSSES, **declared):
    """A setting of the place-batched recipe (of one of its losses)."""
    return setting(default, help, group=TRAINING, only_with={"loss": loss}, roles=HYPER,
                   **declared)


def _schedule(help: str, schedulers, shown_default: str, **declared):
    return setting(None, help, group=TRAINING, only_with={"scheduler": schedulers},
                   shown_default=shown_default, roles=HYPER, **declared)


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
    weight_decay: float | None = _sgd("weight_decay", "weight decay (SGD, AdamW)",
                                      aliases=("--weightDecay",), minimum=0.0,
                                      only_with={"optim": ("SGD", "ADAMW")})
    scheduler: str | None = setting(
        None, "learning-rate schedule: step and multistep per epoch, linear and cosine per "
        "step over the run", group=TRAINING, choices=SCHEDULERS, roles=HYPER,
        shown_default="step with SGD, constant with Adam (the reference's) on triplets; "
        "multistep on place batches (MixVPR's)")
    lr_step: float | None = _schedule("epochs per learning-rate step", "step", "5",
                                      aliases=("--lrStep",), parse=float, positive=True)
    lr_gamma: float | None = _schedule("learning-rate factor per step or milestone",
                                       ("step", "multistep"), "0.5 (step), 1/3 (multistep)",
                                       aliases=("--lrGamma",), parse=float, positive=True)
    milestones: tuple | None = _schedule("epochs after which the learning rate is multiplied "
                                         "by --lr-gamma", "multistep", "5 10 15", parse=int,
                                         nargs="+", metavar="EPOCH")
    lr_end_factor: float | None = _schedule("the last step's learning rate over --lr", "linear",
                                            "0.2 (SALAD's)", parse=float, minimum=0.0)
    warmup_steps: int | None = _place(None, "steps of linear learning-rate warm-up from 0",
                                      parse=int, minimum=0, shown_default=str(PLACE_WARMUP_STEPS))
    loss: str | None = setting(
        None, "training loss: triplet (hard negatives mined from a descriptor cache, the "
        "reference's) or, on place data (GSV-Cities, MSLS), a pytorch-metric-learning loss "
        "over P places x K images with its miner", group=TRAINING, choices=LOSSES, roles=HYPER,
        shown_default="multi-similarity on place data, else triplet")
    places_per_batch: int | None = _place(None, "places per batch (P)", parse=int, minimum=2,
                                          shown_default="120 (MixVPR's)")
    images_per_place: int | None = _place(None, "images of each place per batch (K)",
                                          parse=int, minimum=1, shown_default="4")
    ms_alpha: float | None = _place(None, "multi-similarity: weight of positive pairs",
                                    "multi-similarity", parse=float, positive=True,
                                    shown_default="1")
    ms_beta: float | None = _place(None, "multi-similarity: weight of negative pairs",
                                   "multi-similarity", parse=float, positive=True,
                                   shown_default="50")
    ms_base: float | None = _place(None, "multi-similarity: similarity offset (lambda)",
                                   "multi-similarity", parse=float, shown_default="0")
    ms_epsilon: float | None = _place(None, "multi-similarity miner: similarity margin of the "
                                      "pairs kept", "multi-similarity", parse=float,
                                      minimum=0.0, shown_default="0.1")
    tm_margin: float | None = _place(None, "triplet-margin: margin on L2 distances",
                                     "triplet-margin", parse=float, positive=True,
                                     shown_default="0.1")
    tm_miner_margin: float | None = _place(None, "triplet-margin miner: margin of the triplets "
                                           "kept", "triplet-margin", parse=float, minimum=0.0,
                                           shown_default="0.1")
    tm_triplets: str | None = _place(None, "triplet-margin miner: which triplets it keeps",
                                     "triplet-margin", choices=("all", "hard", "semihard",
                                                                "easy"),
                                     shown_default="semihard")
    contrastive_pos_margin: float | None = _place(
        None, "contrastive: distance under which positives cost nothing", "contrastive",
        parse=float, minimum=0.0, shown_default="0")
    contrastive_neg_margin: float | None = _place(
        None, "contrastive: distance over which negatives cost nothing", "contrastive",
        parse=float, minimum=0.0, shown_default="1")
    pair_pos_margin: float | None = _place(
        None, "contrastive's pair miner: positives with similarity under it are kept",
        "contrastive", parse=float, shown_default="0.7")
    pair_neg_margin: float | None = _place(
        None, "contrastive's pair miner: negatives with similarity over it are kept",
        "contrastive", parse=float, shown_default="0.3")
    val_root: Path | None = setting(
        None, "place data: the validation dataset (a layout --data-root reads; its split "
        "--val-split)", group=TRAINING, metavar="DIR",
        roles=(RESTORED, LOGGED, PER_TRIAL, SPEC))
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
        """A resolved copy (paths absolute; the loss, the scheduler and the defaults of the
        optimiser, schedule and loss filled in), every setting checked."""
        filled = self._recipe_defaults()
        if self.resume is None:
            filled.update({name: default_of(CommonConfig, name) for name in ("arch", "aggregator")
                           if getattr(self, name) is None})
        resolved = dataclasses.replace(self, **filled)
        resolved = dataclasses.replace(
            resolved, **resolved._resolved(model_defaults=self.resume is None),
            optim=self.optim_name,
            run_dir=absolute(self.run_dir), resume=absolute(self.resume),
            centroids=absolute(self.centroids), val_root=absolute(self.val_root),
            milestones=None if resolved.milestones is None else tuple(resolved.milestones))
        if resolved.loss in LOSSES:
            check_loss_fits_data(resolved)
        check(resolved)
        resolved._check_common(weights_loaded=resolved.resume is None)
        resolved._check_resume()
        check_recipe(resolved)
        return resolved

    def _recipe_defaults(self) -> dict:
        """The unset settings the chosen loss, optimiser and scheduler take, at their
        defaults."""
        values = {name: getattr(self, name) for name, _ in declared(type(self))}
        loss = self.resolves_to("loss", values)
        scheduler = self.resolves_to("scheduler", {**values, "loss": loss})
        wanted = {"loss": loss, "scheduler": scheduler}
        if self.optim_name in ("SGD", "ADAMW"):
            wanted["weight_decay"] = SGD_DEFAULTS["weight_decay"]
        if self.optim_name == "SGD":
            wanted["momentum"] = SGD_DEFAULTS["momentum"]
        wanted.update(SCHEDULE_DEFAULTS.get(scheduler, {}))
        if loss in PLACE_LOSSES:
            wanted.update(PLACE_DEFAULTS["all"], warmup_steps=PLACE_WARMUP_STEPS,
                          **PLACE_DEFAULTS[loss])
        return {name: value for name, value in wanted.items() if values.get(name) is None}

    @classmethod
    def resolves_to(cls, name: str, values: dict):
        """What the setting `name`, unset, resolves to under `values` (see
        `vpr_core.settings.applies`): the loss by the data's layout, the scheduler by the
        loss and optimiser."""
        if values.get(name) is not None or name not in ("loss", "scheduler"):
            return values.get(name)
        if name == "loss":
            root = values.get("data_root") or default_of(cls, "data_root")
            return PLACE_LOSSES[0] if is_place_data(Path(root)) else "triplet"
        if cls.resolves_to("loss", values) in PLACE_LOSSES:
            return "multistep"
        return "step" if str(values.get("optim") or "SGD").upper() == "SGD" else "constant"

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
            for name in BUILT_SETTINGS:
                if getattr(self, name) is not None:
                    flag = flag_name(type(self), name)
                    raise UserError(f"{flag} does not apply with --resume: the checkpoint holds "
                                    f"the aggregator as it was built; leave {flag} out")
        elif self.fresh_optimizer:
            raise UserError("--fresh-optimizer applies with --resume only; leave it out")
        if self.start_epoch >= self.epochs:
            raise UserError(f"--start-epoch {self.start_epoch} leaves no epoch to train before "
                            f"--epochs {self.epochs}; lower it or raise --epochs")
