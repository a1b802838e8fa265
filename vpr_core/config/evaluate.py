"""The settings of an evaluation: a checkpoint (or the untrained model) on a split."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..settings import (
    DATA,
    LOGGED,
    RESTORED,
    check,
    declared,
    default_of,
    flag_name,
    setting,
)
from .aggregator import AggregatorSettings
from .common import (
    MODEL_SETTINGS,
    CommonConfig,
    absolute,
    centroids_setting,
    ckpt_setting,
    from_checkpoint,
    resume_setting,
    split_setting,
)

# the settings that build a model besides its arch and aggregator: a checkpoint has its own
MODEL_BUILDING = tuple(name for name, _ in declared(AggregatorSettings))


@dataclass(frozen=True)
class EvalConfig(AggregatorSettings, CommonConfig):
    split: str = split_setting("val")
    resume: Path | None = resume_setting("checkpoint file, run folder or exported .onnx file "
                                         "to evaluate",
                                         shown_default="the untrained model")
    ckpt: str = ckpt_setting()
    centroids: Path | None = centroids_setting("untrained model: NetVLAD's centroids")
    # a checkpoint holds its model: these are its, unless given (then they must agree)
    arch: str | None = from_checkpoint("arch")
    aggregator: str | None = from_checkpoint("aggregator", roles=(LOGGED, RESTORED))
    num_clusters: int | None = from_checkpoint("num_clusters")
    weights: str | None = from_checkpoint("weights")
    save_descriptors: Path | None = setting(
        None, "also write the database's and the queries' descriptors to DIR as "
        "database_descriptors.npy and queries_descriptors.npy (with images.json, their paths)",
        metavar="DIR", group=DATA)
    positive_dist: float | None = setting(
        None, "a database image within this many metres of a query is a positive for Recall@N",
        metavar="METRES", parse=float, positive=True, group=DATA, roles=(LOGGED,),
        shown_default="the dataset's posDistThr, 25 m")

    def validate(self) -> EvalConfig:
        """A resolved copy: without a checkpoint, the model settings' defaults; with one,
        `weights` none (the checkpoint holds every weight)."""
        if self.resume is None:
            model = {name: default_of(CommonConfig, name) for name in MODEL_SETTINGS
                     if getattr(self, name) is None}
        else:
            for name in ("weights", "centroids", *MODEL_BUILDING):
                if getattr(self, name) not in (None, "none"):
                    flag = flag_name(type(self), name)
                    raise UserError(f"{flag} does not apply with --resume: the checkpoint holds "
                                    f"the whole model; leave {flag} out")
            model = {"weights": "none"}
        resolved = dataclasses.replace(self, **model)
        resolved = dataclasses.replace(resolved,
                                       **resolved._resolved(model_defaults=self.resume is None),
                                       resume=absolute(self.resume),
                                       centroids=absolute(self.centroids),
                                       save_descriptors=absolute(self.save_descriptors))
        check(resolved)
        resolved._check_common()
        return resolved
