"""Settings every stage shares (data, model, runtime), each declared once (see
`vpr_core.settings`); `validate()` returns a resolved copy, or raises `UserError`."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

from ..data.image_feed import DECODE_CHOICES, DEFAULT_STORE_GB, decodes_on_gpu
from ..errors import UserError
from ..models.aggregators import defaults
from ..models.catalog import AGGREGATORS, ARCHES, backbone_problem
from ..models.checkpoints import CKPT_CHOICES
from ..runtime import PRECISIONS, default_workers, resolve_device, resolve_precision
from ..settings import (
    DATA,
    LOGGED,
    MODEL,
    PER_TRIAL,
    RESTORED,
    SPEC,
    TRAINING,
    Switch,
    check,
    declared,
    default_text,
    redeclared,
    setting,
    shown,
)

CLUSTERING = ("netvlad", "salad", "megaloc")  # the aggregators with a number of clusters

WEIGHT_CHOICES = ("imagenet", "none")
# what the model is: a checkpoint holds these (eval and compress take them from it)
MODEL_SETTINGS = ("arch", "aggregator", "num_clusters", "weights")


def parse_image_size(text) -> tuple[int, int] | None:
    """'HxW' (or (H, W)) -> (H, W); None or 'native' -> None (the images' own size)."""
    if text is None or str(text).lower() == "native":
        return None
    if isinstance(text, (tuple, list)) and len(text) == 2:
        height, width = (int(v) for v in text)
    else:
        match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
        if not match:
            raise UserError(f"--image-size {text!r} is not HxW; write it like 480x640 or 'native'")
        height, width = int(match.group(1)), int(match.group(2))
    if height < 1 or width < 1:
        raise UserError(f"--image-size {text!r} must be positive; write it like 480x640")
    return height, width


def format_image_size(size: tuple[int, int] | None) -> str:
    return "native" if size is None else f"{size[0]}x{size[1]}"


def applies_to_aggregator(meta, aggregator: str) -> bool:
    wanted = (meta.only_with or {}).get("aggregator")
    return wanted is not None and aggregator in (wanted if isinstance(wanted, tuple)
                                                 else (wanted,))


def aggregator_defaults(config) -> dict:
    """The chosen aggregator's settings left unset, at its defaults (what validate resolves)."""
    if config.aggregator not in AGGREGATORS:
        return {}
    known = defaults(config.aggregator)
    out = {}
    for name, meta in declared(type(config)):
        key = name.removeprefix(f"{config.aggregator}_")
        if applies_to_aggregator(meta, config.aggregator) and getattr(config, name) is None \
                and key in known:
            out[name] = known[key]
    return out


def absolute(path) -> Path | None:
    return None if path is None else Path(path).expanduser().absolute()


# ---- settings several configs declare, each with its own default --------------------------
def split_setting(default: str, roles=(LOGGED,)):
    return setting(default, "split to use; test250k reads pitts250k_test.mat", group=DATA,
                   roles=roles)


def resume_setting(help: str, shown_default: str | None = None):
    return setting(None, help, group=TRAINING, metavar="RUN_DIR|FILE|models:/NAME@ALIAS",
                   roles=(PER_TRIAL,),
                   shown_default=shown_default, aliases=())


def ckpt_setting():
    return setting("latest", "which checkpoint of the run --resume reads", group=TRAINING,
                   choices=CKPT_CHOICES, roles=(PER_TRIAL,))


def from_checkpoint(name: str, roles=(LOGGED,)):
    """A model setting that a checkpoint decides; without one, CommonConfig's default (which
    `validate` fills in)."""
    shown_default = f"the checkpoint's, else {default_text(CommonConfig, name)}"
    return redeclared(CommonConfig, name, default=None, shown_default=shown_default,
                      roles=frozenset(roles))


def centroids_setting(help: str):
    return setting(None, help, group=TRAINING, metavar="FILE", roles=(PER_TRIAL,),
                   shown_default="the cache's, clustered when missing")


@dataclass(frozen=True)
class CommonConfig:
    """Settings shared by clustering, training, evaluation and compression."""

    data_root: Path = setting(
        Path("data"), "dataset root: Pittsburgh layout (ROOT/datasets/*.mat), @UTM@ folders "
        "(ROOT/images/<split>/{database,queries}) or MSLS (ROOT/train_val/<city>/)", group=DATA,
        metavar="DIR", roles=(RESTORED, LOGGED, PER_TRIAL))
    dataset: str | None = setting(
        None, "Pittsburgh layout: which <name>_<split>.mat when several are present (e.g. "
        "pitts30k); MSLS: the query set, msls (official, 740 on val) or msls-all", group=DATA,
        roles=(RESTORED, LOGGED, PER_TRIAL), shown_default="the only one")
    image_size: tuple[int, int] | None = setting(
        None, "resize every image to HxW", group=DATA, metavar="HxW",
        roles=(RESTORED, LOGGED, SPEC), shown_default="native size, as the reference",
        written=format_image_size)
    arch: str = setting("vgg16", "backbone", group=MODEL, choices=ARCHES,
                        roles=(RESTORED, LOGGED, SPEC))
    aggregator: str = setting("netvlad", "aggregator of the backbone's features", group=MODEL,
                              choices=AGGREGATORS, aliases=("--pooling",), formerly=("pooling",),
                              roles=(RESTORED, LOGGED, SPEC))
    num_clusters: int | None = setting(
        None, "clusters of NetVLAD, SALAD and MegaLoc", group=MODEL, aliases=("--num_clusters",),
        metavar="K", parse=int, minimum=1, roles=(RESTORED, LOGGED, SPEC),
        only_with={"aggregator": CLUSTERING},
        shown_default=str(defaults("netvlad")["num_clusters"]))
    weights: str = setting(
        "imagenet", "encoder initialisation: its authors' pretrained weights (torchvision's "
        "ImageNet files, DINOv2's own) from torch's hub cache, none, or a weight file",
        group=MODEL, metavar="imagenet|none|PATH",
        switches=(Switch("--fromscratch", "none", "same as --weights none"),),
        roles=(RESTORED, LOGGED, SPEC))
    cache_dir: Path = setting(Path("cache"), "centroid files and caches", metavar="DIR",
                              aliases=("--cachePath", "--dataPath"), roles=(RESTORED, SPEC))
    cache_batch_size: int = setting(24, "batch size for caching, evaluation and clustering",
                                    aliases=("--cacheBatchSize",), metavar="N", parse=int,
                                    minimum=1, roles=(SPEC,))
    workers: int = setting(default_factory=default_workers, help="image-loading worker threads",
                           aliases=("--threads",), metavar="N", parse=int, minimum=0,
                           shown_default="the CPUs, at most 4", roles=(PER_TRIAL,))
    device: str = setting("auto", "auto, cpu or cuda (auto: CUDA when there is one)",
                          switches=(Switch("--nocuda", "cpu", "same as --device cpu"),),
                          roles=(SPEC,))
    seed: int = setting(123, "random seed", parse=int, roles=(RESTORED, LOGGED, SPEC))
    precision: str | None = setting(
        None, "forward passes in float32 or bfloat16 autocast", choices=PRECISIONS,
        shown_default="bf16 on CUDA, fp32 on the CPU", roles=(LOGGED, SPEC),
        switches=(Switch("--amp", "bf16", "same as --precision bf16"),))
    decode: str = setting("auto", "where JPEGs are decoded (auto: on the GPU with CUDA)",
                          choices=DECODE_CHOICES, roles=(SPEC,))
    image_store_gb: float | None = setting(
        None, "budget of the decoded-image store under --cache-dir, 0: off", metavar="GB",
        parse=float, minimum=0.0, roles=(SPEC,),
        shown_default=f"{shown(DEFAULT_STORE_GB)} when images are decoded on the CPU, else off")
    show_progress: bool = setting(True, "progress bars", flag="",
                                  switches=(Switch("--quiet", False, "no progress bars"),))

    def validate(self):
        """A resolved copy: absolute paths, the image size as (H, W), the precision the device
        takes; every declared setting checked."""
        resolved = dataclasses.replace(self, **self._resolved())
        check(resolved)
        resolved._check_common()
        return resolved

    def _resolved(self, model_defaults: bool = True) -> dict:
        """The resolved values; `model_defaults`: the aggregator's unset settings at their
        defaults (not where a checkpoint decides them)."""
        device = resolve_device(self.device)
        return {"data_root": absolute(self.data_root), "cache_dir": absolute(self.cache_dir),
                "image_size": parse_image_size(self.image_size),
                "precision": resolve_precision(self.precision, device),
                **(aggregator_defaults(self) if model_defaults else {})}

    def aggregator_settings(self) -> dict:
        """The settings of the chosen aggregator, as its module takes them (a setting named
        after its aggregator, `mixvpr_out_rows`, is its `out_rows`)."""
        return {name.removeprefix(f"{self.aggregator}_"): getattr(self, name)
                for name, meta in declared(type(self))
                if applies_to_aggregator(meta, self.aggregator)}

    def _check_common(self, weights_loaded: bool = True) -> None:
        """`weights_loaded`: the encoder's weights are read from `weights` (not from a
        checkpoint), so a weight file must exist."""
        decodes_on_gpu(self.decode, resolve_device(self.device))  # --decode gpu needs CUDA
        problem = self.arch and self.aggregator and backbone_problem(self.arch, self.aggregator)
        if problem:
            raise UserError(problem)
        if weights_loaded and self.weights not in (None, *WEIGHT_CHOICES) \
                and not Path(self.weights).is_file():
            raise UserError(f"--weights {self.weights!r} is neither imagenet, none nor an "
                            f"existing file; fix the path or pass none")
