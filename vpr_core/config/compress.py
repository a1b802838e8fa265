"""The settings of a compression: a checkpoint, one method and its settings, measured on a
split; optionally fine-tuned."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from ..compression import half, prune, quantize
from ..compression.methods import METHODS
from ..errors import UserError
from ..settings import COMPRESSION, TRAINING, Switch, check, declared, redeclared, setting, shown
from .common import CommonConfig, absolute, ckpt_setting, resume_setting, split_setting


def _of(method: str, name: str, help: str, **declared_as):
    """Setting `name` of one compression method (refused with any other); its default is the
    method's own."""
    known = METHODS[method].DEFAULTS
    return setting(None, f"{method}: {help}", group=COMPRESSION, only_with={"method": method},
                   shown_default=shown(known[name]) if name in known else None, **declared_as)


@dataclass(frozen=True)
class CompressConfig(CommonConfig):
    resume: Path | None = resume_setting("the checkpoint (or run folder) to compress")
    ckpt: str = ckpt_setting()
    method: str | None = setting(None, "the compression", group=COMPRESSION,
                                 choices=tuple(METHODS))
    dim: int | None = _of("pca-whiten", "dim", "output dimensions (e.g. 4096)", parse=int,
                          minimum=1)
    whiten: bool | None = _of("pca-whiten", "whiten", "scale to unit variance", flag="",
                              switches=(Switch("--no-whiten", False,
                                               "pca-whiten: project only, no whitening"),))
    amount: float | None = _of("prune", "amount", "share of weights (or of each layer's "
                               "channels) to remove", parse=float)
    structure: str | None = _of("prune", "structure", "zero single weights (unstructured) or "
                                "remove whole channels", choices=prune.STRUCTURES)
    refit: bool | None = _of("prune", "refit", "refit each pruned conv's successor", flag="",
                             switches=(Switch("--no-refit", False, "prune --structure channels: "
                                              "keep the sliced weights, without refitting the "
                                              "next conv to the original's outputs"),))
    mode: str | None = _of("quantize", "mode", "post-training (ptq-int8) or quantization-aware "
                           "training (qat-int8)", choices=quantize.MODES)
    dtype: str | None = _of("half", "dtype", "weight type", choices=tuple(half.DTYPES))
    pq_bytes: int | None = _of("pq", "pq_bytes", "bytes per database descriptor (a divisor of "
                               "its dimensions)", parse=int, minimum=1)
    finetune_epochs: int = setting(0, "prune, qat-int8: epochs of triplet training afterwards",
                                   group=TRAINING, parse=int, minimum=0)
    finetune_lr: float = setting(1e-4, "learning rate of the fine-tuning", group=TRAINING,
                                 parse=float, positive=True)
    train_split: str = setting("train", "PCA, PQ and int8 calibration images; fine-tuning",
                               group=COMPRESSION)
    split: str = split_setting("val", roles=())
    run_dir: Path | None = setting(None, "the variant's run folder", group=COMPRESSION,
                                   metavar="DIR", shown_default="runs/<run>_<method>_<time>")
    latency_batches: tuple = setting((1, 32), "batch sizes of the CPU latency", nargs="+",
                                     parse=int, metavar="B", group=COMPRESSION)
    # the checkpoint holds the whole model
    arch: str | None = redeclared(CommonConfig, "arch", default=None, flag="", roles=frozenset())
    aggregator: str | None = redeclared(CommonConfig, "aggregator", default=None, flag="",
                                        roles=frozenset())
    num_clusters: int | None = redeclared(CommonConfig, "num_clusters", default=None, flag="",
                                          roles=frozenset())
    weights: str = redeclared(CommonConfig, "weights", default="none", flag="", switches=(),
                              roles=frozenset())

    def validate(self) -> CompressConfig:
        if self.resume is None:
            raise UserError("compress needs --resume RUN_DIR|CHECKPOINT, the model to compress")
        if self.method not in METHODS:
            raise UserError(f"--method {self.method!r} must be one of {', '.join(METHODS)}")
        resolved = dataclasses.replace(
            self, **self._resolved(), resume=absolute(self.resume),
            run_dir=absolute(self.run_dir), latency_batches=_batches(self.latency_batches))
        if METHODS[self.method].CPU_ONLY:
            # int8 is its arithmetic; fake quantisation needs float32
            resolved = dataclasses.replace(resolved, precision="fp32")
        check(resolved)
        resolved._check_common()
        resolved._check_finetuning()
        return resolved

    def _check_finetuning(self) -> None:
        if self.finetune_epochs and self.method in ("half", "pq", "pca-whiten"):
            raise UserError(f"--finetune-epochs applies to prune and quantize (qat-int8), not "
                            f"to {self.method}")
        if self.method == "quantize" and (self.mode == "qat-int8") != bool(self.finetune_epochs):
            raise UserError("quantization-aware training is fine-tuning: --mode qat-int8 "
                            "needs --finetune-epochs, and --finetune-epochs needs --mode "
                            "qat-int8 (ptq-int8 trains nothing)")

    def settings(self) -> dict:
        """The method's settings given (the method fills in its defaults and checks them
        against the model)."""
        return {name: getattr(self, name) for name, meta in declared(type(self))
                if (meta.only_with or {}).get("method") == self.method
                and getattr(self, name) is not None}


def _batches(batches) -> tuple:
    if not isinstance(batches, (list, tuple)) or not batches or not all(
            isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batches):
        raise UserError(f"--latency-batches (latency_batches) must list batch sizes of at "
                        f"least 1, got {batches!r}")
    return tuple(batches)
