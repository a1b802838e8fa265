"""Experiment specs: YAML files in `experiments/`, validated into a `SweepSpec`.

A spec names the data, the search space, the fixed training settings, the resources and the
tracking. Command-line flags override it. Unknown keys and wrong types are user errors.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from vpr_core.config.common import TrainConfig, parse_image_size
from vpr_core.errors import UserError
from vpr_tracking import search_space
from vpr_tracking.names import DEFAULT_METRIC, RECALL_NAMES

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"
DEFAULT_SPEC = EXPERIMENTS_DIR / "smoke.yaml"
# settings the sweep owns for each trial; a spec may not fix them in `train`
PER_TRIAL = set(search_space.NAMES) | {"data_root", "dataset", "cache_dir", "run_dir", "resume",
                                       "ckpt", "show_progress", "centroids", "workers"}
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
COMPRESS_KEYS = {"checkpoint", "ckpt", "split", "variants", "latency_batches"}


@dataclass
class SweepSpec:
    name: str = "sweep"
    description: str = ""
    data_root: Path | None = None  # None: the synthetic dataset, made on first use
    dataset: str | None = None
    synthetic: dict = field(default_factory=dict)
    num_samples: int = 6
    seed: int = 0
    metric: str = DEFAULT_METRIC
    # {dimension: choices or (low, high)}, see vpr_tracking.search_space
    space: dict = field(default_factory=search_space.default_space)
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

    @property
    def experiment_name(self) -> str:
        """The MLflow experiment: tracking.experiment, else netvlad-<name>."""
        return self.experiment or f"netvlad-{self.name}"

    def validate(self) -> "SweepSpec":
        if self.evaluate is not None:
            if not self.evaluate.get("checkpoint"):
                raise UserError("the spec's evaluate section needs a checkpoint path")
            return self
        if self.compress is not None:
            if not self.compress.get("checkpoint"):
                raise UserError("the spec's compress section needs a checkpoint path")
            return self  # its variants are checked with the data by compress_sweep.plan
        search_space.check_space(self.space)
        archs = self.space["arch"]
        if self.num_samples < len(archs):
            raise UserError(f"--num-samples {self.num_samples} is fewer than the "
                            f"{len(archs)} architectures to try; raise it")
        for point in self.start_with:
            search_space.check_point(self.space, point)
        if self.metric not in RECALL_NAMES:
            raise UserError(f"search.metric {self.metric!r} must be one of "
                            f"{', '.join(RECALL_NAMES)}")
        if self.grace_period < 1 or self.reduction_factor < 2:
            raise UserError("scheduler grace_period must be >= 1 and reduction_factor >= 2")
        if self.cpus_per_trial <= 0:
            raise UserError(f"resources.cpus_per_trial must be positive, got "
                            f"{self.cpus_per_trial}")
        self.trial_config(self.first_point(), data_root=Path("/"), cache_dir=Path("/"),
                          run_dir=Path("/")).validate()
        return self

    def first_point(self) -> dict:
        """A point of the space (each dimension's first choice or lower bound)."""
        return {name: values[0] for name, values in self.space.items()}

    def trial_config(self, sampled: dict, **given) -> TrainConfig:
        """The TrainConfig of one trial: fixed settings + sampled ones + `given` (its paths
        and whatever else the caller settles)."""
        values = dict(self.train)
        values.update(sampled)
        values.update(given)
        values.setdefault("dataset", self.dataset)
        values["show_progress"] = False
        try:
            config = TrainConfig(**values)
        except TypeError as error:
            raise UserError(f"the spec's train section has a setting TrainConfig does not know "
                            f"({error}); fix the YAML") from None
        return config  # validated by the trial's TrainingRun (and once by `validate`)


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
    spec.space = search_space.parse_space(search.get("space") or {}, f"{source}: search.space")
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
        _known(raw["compress"], COMPRESS_KEYS, f"{source}: compress")
        spec.compress = dict(raw["compress"])
    if raw.get("evaluate") is not None:
        _known(raw["evaluate"], EVALUATE_KEYS, f"{source}: evaluate")
        spec.evaluate = dict(raw["evaluate"])
    return spec


def _int(value, name: str, source: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{source}: {name} must be an integer, got {value!r}")
    return value


def _known(section: dict, allowed: set, where: str) -> None:
    unknown = sorted(set(section) - allowed)
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(map(str, unknown))}; allowed: "
                        f"{', '.join(sorted(allowed))}")
