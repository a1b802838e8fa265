"""Experiment specs: YAML files in `experiments/`, validated into a `SweepSpec`.

A spec names the data, the search space, the fixed training settings, the resources and the
tracking. Command-line flags override it. Unknown keys and wrong types are user errors.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vpr_core.config import TrainConfig, parse_image_size
from vpr_core.errors import UserError
from vpr_core.models import ARCHES

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"
DEFAULT_SPEC = EXPERIMENTS_DIR / "smoke.yaml"
SEARCHED = ("arch", "num_clusters", "margin", "lr")
# settings the sweep owns for each trial; a spec may not fix them in `train`
PER_TRIAL = set(SEARCHED) | {"data_root", "dataset", "cache_dir", "run_dir", "resume", "ckpt",
                             "show_progress", "centroids", "workers"}
SECTIONS = {
    "name": str, "description": str, "data": dict, "search": dict, "train": dict,
    "resources": dict, "tracking": dict, "evaluate": dict, "compress": dict,
}
DATA_KEYS = {"root", "dataset", "synthetic"}
SYNTHETIC_KEYS = {"places", "queries", "image_size", "seed"}
SEARCH_KEYS = {"num_samples", "seed", "metric", "space", "scheduler", "start_with"}
SCHEDULER_KEYS = {"type", "grace_period", "reduction_factor"}
RESOURCE_KEYS = {"cpus_per_trial", "gpus_per_trial", "max_concurrent", "miner_memory_gb",
                 "max_failures"}
TRACKING_KEYS = {"uri", "experiment"}
EVALUATE_KEYS = {"checkpoint", "ckpt", "split"}
METRICS = ("recall@1", "recall@5", "recall@10", "recall@20")


@dataclass
class SearchSpace:
    archs: list = field(default_factory=lambda: list(ARCHES))
    num_clusters: list = field(default_factory=lambda: [16, 32, 64])
    margin: tuple = (0.03, 0.3)  # log-uniform bounds
    lr: tuple = (1e-5, 1e-3)  # log-uniform bounds


@dataclass
class SweepSpec:
    name: str = "sweep"
    description: str = ""
    data_root: Path | None = None  # None: the synthetic dataset, made on first use
    dataset: str | None = None
    synthetic: dict = field(default_factory=dict)
    num_samples: int = 6
    seed: int = 0
    metric: str = "recall@5"
    space: SearchSpace = field(default_factory=SearchSpace)
    start_with: list = field(default_factory=list)  # configurations tried first, in order
    grace_period: int = 1
    reduction_factor: int = 2
    train: dict = field(default_factory=dict)  # fixed TrainConfig settings
    cpus_per_trial: float = 1
    gpus_per_trial: float | str = "auto"
    max_concurrent: int | str = "auto"
    miner_memory_gb: float | str = "auto"
    max_failures: int = 2
    tracking_uri: str | None = None
    experiment: str | None = None
    evaluate: dict | None = None  # evaluation-only spec: {checkpoint, ckpt, split}
    compress: dict | None = None  # compression study: {checkpoint, split, variants}

    @property
    def epochs(self) -> int:
        return int(self.train.get("epochs", TrainConfig.epochs))

    def validate(self) -> "SweepSpec":
        if self.evaluate is not None:
            if not self.evaluate.get("checkpoint"):
                raise UserError("the spec's evaluate section needs a checkpoint path")
            return self
        if self.compress is not None:
            return self  # checked with the data by orchestrator.compress_sweep.plan
        if not self.space.archs or any(a not in ARCHES for a in self.space.archs):
            raise UserError(f"search.space.arch must list some of {', '.join(ARCHES)}, got "
                            f"{self.space.archs}")
        if self.num_samples < len(self.space.archs):
            raise UserError(f"--num-samples {self.num_samples} is fewer than the "
                            f"{len(self.space.archs)} architectures to try; raise it")
        if not self.space.num_clusters or any(
                not isinstance(k, int) or k < 1 for k in self.space.num_clusters):
            raise UserError(f"search.space.num_clusters must be positive integers, got "
                            f"{self.space.num_clusters}")
        for name in ("margin", "lr"):
            low, high = getattr(self.space, name)
            if not (0 < low <= high and math.isfinite(high)):
                raise UserError(f"search.space.{name} must be a log-uniform range 0 < low <= "
                                f"high, got {[low, high]}")
        for point in self.start_with:
            self._check_point(point)
        if self.metric not in METRICS:
            raise UserError(f"search.metric {self.metric!r} must be one of {', '.join(METRICS)}")
        if self.grace_period < 1 or self.reduction_factor < 2:
            raise UserError("scheduler grace_period must be >= 1 and reduction_factor >= 2")
        if self.cpus_per_trial <= 0:
            raise UserError(f"resources.cpus_per_trial must be positive, got "
                            f"{self.cpus_per_trial}")
        self.trial_config({"arch": self.space.archs[0], "num_clusters": self.space.num_clusters[0],
                           "margin": self.space.margin[0], "lr": self.space.lr[0]},
                          data_root=Path("/"), cache_dir=Path("/"), run_dir=Path("/"))
        return self

    def _check_point(self, point) -> None:
        if not isinstance(point, dict) or set(point) != set(SEARCHED):
            raise UserError(f"search.start_with entries need exactly {', '.join(SEARCHED)}; "
                            f"got {point}")
        space = self.space
        inside = (point["arch"] in space.archs and point["num_clusters"] in space.num_clusters
                  and space.margin[0] <= point["margin"] <= space.margin[1]
                  and space.lr[0] <= point["lr"] <= space.lr[1])
        if not inside:
            raise UserError(f"search.start_with entry {point} lies outside the search space; "
                            f"widen the space or change the entry")

    def trial_config(self, sampled: dict, **paths) -> TrainConfig:
        """The validated TrainConfig of one trial: fixed settings + sampled ones + paths."""
        values = dict(self.train)
        values.update(sampled)
        values.update(paths)
        values.setdefault("dataset", self.dataset)
        values["show_progress"] = False
        try:
            config = TrainConfig(**values)
        except TypeError as error:
            raise UserError(f"the spec's train section has a setting TrainConfig does not know "
                            f"({error}); fix the YAML") from None
        return config.validate()


def load_spec(path: Path | None) -> SweepSpec:
    """Read a YAML spec (default: the embedded `smoke.yaml`)."""
    path = Path(path) if path is not None else DEFAULT_SPEC
    if not path.is_file():
        raise UserError(f"--config {path} does not exist; pass a YAML file like "
                        f"experiments/smoke.yaml")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path} is not valid YAML{where}; fix the file") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} must hold a mapping of sections ({', '.join(SECTIONS)})")
    return spec_from_dict(raw, str(path))


def spec_from_dict(raw: dict, source: str) -> SweepSpec:
    raw = copy.deepcopy(raw)
    _known(raw, set(SECTIONS), source)
    for key, kind in SECTIONS.items():
        if key in raw and raw[key] is not None and not isinstance(raw[key], kind):
            raise UserError(f"{source}: '{key}' must be a {kind.__name__}")
    spec = SweepSpec(name=str(raw.get("name", "sweep")),
                     description=str(raw.get("description", "")))
    data = raw.get("data") or {}
    _known(data, DATA_KEYS, f"{source}: data")
    spec.data_root = Path(data["root"]).expanduser() if data.get("root") else None
    spec.dataset = data.get("dataset")
    spec.synthetic = dict(data.get("synthetic") or {})
    _known(spec.synthetic, SYNTHETIC_KEYS, f"{source}: data.synthetic")
    search = raw.get("search") or {}
    _known(search, SEARCH_KEYS, f"{source}: search")
    spec.num_samples = _int(search.get("num_samples", spec.num_samples), "num_samples", source)
    spec.seed = _int(search.get("seed", spec.seed), "seed", source)
    spec.metric = search.get("metric", spec.metric)
    spec.space = _space(search.get("space") or {}, source)
    spec.start_with = list(search.get("start_with") or [])
    scheduler = search.get("scheduler") or {}
    _known(scheduler, SCHEDULER_KEYS, f"{source}: search.scheduler")
    if scheduler.get("type", "asha") != "asha":
        raise UserError(f"{source}: search.scheduler.type must be asha")
    spec.grace_period = _int(scheduler.get("grace_period", 1), "grace_period", source)
    spec.reduction_factor = _int(scheduler.get("reduction_factor", 2), "reduction_factor", source)
    spec.train = dict(raw.get("train") or {})
    if "amp" in spec.train:  # specs written before --precision
        spec.train.setdefault("precision", "bf16" if spec.train.pop("amp") else "fp32")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    _known(spec.train, fields - PER_TRIAL, f"{source}: train")
    if "image_size" in spec.train:
        spec.train["image_size"] = parse_image_size(spec.train["image_size"])
    resources = raw.get("resources") or {}
    _known(resources, RESOURCE_KEYS, f"{source}: resources")
    for key in RESOURCE_KEYS:
        if key in resources:
            setattr(spec, key, resources[key])
    tracking = raw.get("tracking") or {}
    _known(tracking, TRACKING_KEYS, f"{source}: tracking")
    spec.tracking_uri = tracking.get("uri")
    spec.experiment = tracking.get("experiment")
    if raw.get("compress") is not None:
        spec.compress = dict(raw["compress"])
    if raw.get("evaluate") is not None:
        _known(raw["evaluate"], EVALUATE_KEYS, f"{source}: evaluate")
        spec.evaluate = dict(raw["evaluate"])
    return spec


def _space(raw: dict, source: str) -> SearchSpace:
    _known(raw, set(SEARCHED), f"{source}: search.space")
    space = SearchSpace()
    if "arch" in raw:
        space.archs = list(raw["arch"]) if isinstance(raw["arch"], list) else [raw["arch"]]
    if "num_clusters" in raw:
        value = raw["num_clusters"]
        space.num_clusters = list(value) if isinstance(value, list) else [value]
    for name in ("margin", "lr"):
        if name in raw:
            setattr(space, name, _log_range(raw[name], f"{source}: search.space.{name}"))
    return space


def _log_range(value, where: str) -> tuple:
    if isinstance(value, dict) and set(value) == {"log_uniform"}:
        value = value["log_uniform"]
    if isinstance(value, (int, float)):
        return float(value), float(value)
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise UserError(f"{where} must be a number or {{log_uniform: [low, high]}}") from None
    return low, high


def _int(value, name: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{source}: {name} must be an integer, got {value!r}")
    return value


def _known(section: dict, allowed: set, where: str) -> None:
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; allowed: "
                        f"{', '.join(sorted(allowed))}")
