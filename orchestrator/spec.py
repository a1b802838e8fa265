"""Experiment specs: YAML files in `experiments/`, read into a frozen `SweepSpec`.

A spec names the data, the search space, the fixed training settings, the resources and the
tracking; or, instead of a search, one checkpoint to evaluate (`evaluate`) or to compress into
variants (`compress`). Each key of the YAML is a setting declared in `SweepSpec` (its
`spec_key`), in `TrainConfig` (the `train` section: its `SPEC` settings that are not searched)
or in `SynthConfig` (`data.synthetic`); unknown keys and wrong types are user errors.
Command-line flags override the spec (`with_flags`).
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from pathlib import Path

import yaml

from vpr_core.config import (
    MODEL_SETTINGS,
    CommonConfig,
    CompressConfig,
    EvalConfig,
    TrainConfig,
    parse_image_size,
)
from vpr_core.config.aggregator import BUILT_SETTINGS
from vpr_core.config.recipe import is_place_data
from vpr_core.data.synthetic import SynthConfig
from vpr_core.errors import UserError
from vpr_core.settings import (
    PER_TRIAL,
    SPEC,
    check,
    conditions_hold,
    declared,
    names_with,
    redeclared,
    setting,
    setting_of,
)
from vpr_tracking import search_points, search_space
from vpr_tracking.names import DEFAULT_METRIC, RECALL_NAMES

EXPERIMENTS_DIR = Path(__file__).resolve().parents[1] / "experiments"
DEFAULT_SPEC = EXPERIMENTS_DIR / "smoke.yaml"
SWEEP, EVALUATION, COMPRESSION = "sweep", "evaluation", "compression"  # the kinds of spec
RAY = (SWEEP, COMPRESSION)  # the kinds that run on Ray
# the evaluate section's keys, as EvalConfig's settings
EVALUATE_KEYS = {"checkpoint": "resume", "ckpt": "ckpt", "split": "split"}
COMPRESS_KEYS = {"checkpoint", "ckpt", "split", "variants", "latency_batches"}
SEARCH, RESOURCES = "search", "resources"


def _spec(key: str, default, help: str, kinds=None, **declared_as):
    return setting(default, help, spec_key=key, kinds=kinds, roles=(SPEC,), **declared_as)


def _auto(kind):
    """A flag's value: 'auto', or a number of `kind`."""
    def parse(text):
        return text if text == "auto" else kind(text)
    return parse


@dataclass(frozen=True)
class SweepSpec:
    name: str = _spec("name", "sweep", "the spec's name", flag="")
    description: str = _spec("description", "", "what the spec is for", flag="")
    data_root: Path | None = redeclared(CommonConfig, "data_root", default=None,
                                        spec_key="data.root", roles=frozenset({SPEC}),
                                        shown_default="the synthetic dataset, made on first use")
    dataset: str | None = redeclared(CommonConfig, "dataset", spec_key="data.dataset",
                                     roles=frozenset({SPEC}))
    synthetic: dict = _spec("data.synthetic", dataclasses.MISSING,
                            "the synthetic dataset's settings", flag="", default_factory=dict)
    num_samples: int = _spec(f"{SEARCH}.num_samples", 6, "trials to run", kinds=(SWEEP,),
                             parse=int, minimum=1, group=SEARCH)
    seed: int = _spec(f"{SEARCH}.seed", 0, "the search's seed (TPE)", kinds=(SWEEP,), parse=int,
                      group=SEARCH)
    metric: str = _spec(f"{SEARCH}.metric", DEFAULT_METRIC, "the metric the search maximises",
                        kinds=(SWEEP,), choices=RECALL_NAMES, flag="")
    space: dict = _spec(f"{SEARCH}.space", dataclasses.MISSING, "the search space",
                        kinds=(SWEEP,), flag="", default_factory=search_space.default_space)
    start_with: tuple = _spec(f"{SEARCH}.start_with", (), "configurations tried first",
                              kinds=(SWEEP,), flag="")
    scheduler: str = _spec(f"{SEARCH}.scheduler.type", "asha", "the trial scheduler",
                           kinds=(SWEEP,), choices=("asha",), flag="")
    grace_period: int = _spec(f"{SEARCH}.scheduler.grace_period", 1, "ASHA's grace period",
                              kinds=(SWEEP,), parse=int, minimum=1, flag="")
    reduction_factor: int = _spec(f"{SEARCH}.scheduler.reduction_factor", 2,
                                  "ASHA's reduction factor", kinds=(SWEEP,), parse=int,
                                  minimum=2, flag="")
    train: dict = _spec("train", dataclasses.MISSING, "fixed TrainConfig settings", flag="",
                        default_factory=dict)
    cpus_per_trial: float = _spec(f"{RESOURCES}.cpus_per_trial", 1.0, "CPUs per trial",
                                  kinds=RAY, parse=float, positive=True, group=RESOURCES)
    gpus_per_trial: float | str = _spec(f"{RESOURCES}.gpus_per_trial", "auto",
                                        "GPUs per trial (auto: 0.45 where there are GPUs)",
                                        kinds=RAY, parse=_auto(float), group=RESOURCES)
    max_concurrent: int | str = _spec(f"{RESOURCES}.max_concurrent", "auto",
                                      "trials at a time (auto: as many as resources allow)",
                                      kinds=RAY, parse=_auto(int), group=RESOURCES)
    miner_memory_gb: float | str = _spec(f"{RESOURCES}.miner_memory_gb", "auto",
                                         "memory budget of the shared mining service (auto: "
                                         "40% of RAM)", kinds=(SWEEP,),
                                         parse=_auto(float), group=RESOURCES)
    max_failures: int = _spec(f"{RESOURCES}.max_failures", 2, "retries of a lost trial",
                              kinds=(SWEEP,), parse=int, minimum=0, flag="")
    tracking_uri: str | None = _spec("tracking.uri", None, "MLflow store", flag="")
    experiment: str | None = _spec("tracking.experiment", None, "MLflow experiment", flag="")
    evaluate: dict | None = _spec("evaluate", None, "evaluation spec: one checkpoint",
                                  flag="")
    compress: dict | None = _spec("compress", None, "compression study: variants of one "
                                  "checkpoint", flag="")
    # what the sweep's runs are named after instead of the spec: the --experiment given, or
    # the data folder the embedded default runs on
    run_label: str | None = setting(None, "the sweep's label", flag="")

    @property
    def kind(self) -> str:
        if self.evaluate is not None:
            return EVALUATION
        return COMPRESSION if self.compress is not None else SWEEP

    @property
    def stage_config(self):
        """The config an evaluation or compression spec's `train` section feeds."""
        return {EVALUATION: EvalConfig, COMPRESSION: CompressConfig}.get(self.kind, TrainConfig)

    @property
    def epochs(self) -> int:
        return int(self.train.get("epochs", TrainConfig.epochs))

    @property
    def label(self) -> str:
        """What the sweep's runs are named after (`run_label`, else the spec's name)."""
        return self.run_label or self.name

    @property
    def experiment_name(self) -> str:
        """The MLflow experiment: tracking.experiment, else netvlad-<label>."""
        return self.experiment or f"netvlad-{self.label}"

    def validate(self) -> SweepSpec:
        check(self)
        self._check_resources()
        if self.kind != SWEEP:
            _stage_settings(self.train, self.stage_config, f"a {self.kind} spec")
            section = self.evaluate if self.kind == EVALUATION else self.compress
            if not section.get("checkpoint"):
                key = "evaluate" if self.kind == EVALUATION else "compress"
                raise UserError(f"the spec's {key} section needs a checkpoint path")
            return self  # a compression's variants are checked with the data (compress_sweep)
        self._check_search()
        place = self.place_data
        for point in self.deciding_points().values():  # every model and recipe of the space
            self.trial_config(point, data_root=self.data_root if place else Path("/"),
                              run_dir=Path("/")).validate()
        return self

    @property
    def place_data(self) -> bool:
        """Whether the data is place data (GSV-Cities, MSLS): trained with place losses."""
        return self.data_root is not None and is_place_data(self.data_root)

    def _check_resources(self) -> None:
        for name, least in (("gpus_per_trial", 0), ("max_concurrent", 1),
                            ("miner_memory_gb", 0)):
            value = getattr(self, name)
            if value != "auto" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                    or value < least or (name == "max_concurrent"
                                                         and not isinstance(value, int))):
                raise UserError(f"resources.{name} must be auto or a number of at least "
                                f"{least}, got {value!r}")

    def _check_search(self) -> None:
        search_space.check_space(self.space)
        _check_losses(self.space.get("loss"), self.data_root, self.place_data)
        first = search_points.first_points(self.space, self.start_with)  # checks start_with
        if self.num_samples < len(first):
            raise UserError(f"--num-samples {self.num_samples} is fewer than the {len(first)} "
                            f"first trials (every architecture and every aggregator is tried "
                            f"once, or search.start_with); raise it")
        for name in sorted(self.train):
            if not any(_applies_to(name, point) for point in self.deciding_points().values()):
                other, wanted = next(iter(setting_of(TrainConfig, name).only_with.items()))
                wanted = " or ".join(wanted) if isinstance(wanted, tuple) else wanted
                raise UserError(f"train.{name} applies to {other} {wanted} only, which "
                                f"search.space.{other} does not list; leave it out")

    def deciding_points(self) -> dict:
        """{deciding key: a point of the space with those values}: a trial config of each
        combination of the values that decide which settings apply (each aggregator, loss,
        optimiser and schedule listed; `search_space.DECIDING`)."""
        return {search_space.deciding_key(values): search_points.point_with(self.space, **values)
                for values in search_space.deciding_points(self.space)}

    def trial_config(self, sampled: dict, **per_trial) -> TrainConfig:
        """The TrainConfig of one trial: the fixed settings that apply to its sampled values
        (a spec's GeM setting is not a NetVLAD trial's), the `sampled` ones, and what the
        sweep gives each trial (`PER_TRIAL` settings: its folder, its checkpoint, workers)."""
        unknown = set(per_trial) - set(names_with(TrainConfig, PER_TRIAL))
        if unknown:
            raise ValueError(f"not per-trial settings: {sorted(unknown)}")
        fixed = {name: value for name, value in self.train.items()
                 if _applies_to(name, sampled)}
        values = dict(fixed, **sampled, **per_trial)
        if per_trial.get("resume") is not None:  # a restored trial: its model is its checkpoint's
            values = {name: value for name, value in values.items()
                      if name not in BUILT_SETTINGS}
        values.setdefault("dataset", self.dataset)
        return TrainConfig(**values, show_progress=False)  # validated by the trial's run


def _applies_to(name: str, sampled: dict) -> bool:
    """Whether a fixed setting applies under a trial's sampled values (only conditions on
    searched settings are read here; the others are for `TrainConfig.validate` to refuse)."""
    condition = {other: wanted
                 for other, wanted in (setting_of(TrainConfig, name).only_with or {}).items()
                 if other in search_space.NAMES}
    return conditions_hold(condition, search_space.with_unlisted(sampled), TrainConfig)


def _check_losses(losses: list | None, data_root: Path | None, place: bool) -> None:
    """The losses the space lists train on the data: triplets on database and query splits,
    the place losses on place data (which lists them, having no default loss in a sweep)."""
    where = f"data.root {data_root}"
    if losses is None:
        if place:
            raise UserError(f"{where} holds place data (GSV-Cities or MSLS): list the losses "
                            f"to search under search.space.loss (--loss): multi-similarity, "
                            f"triplet-margin or contrastive")
        return
    wrong = [loss for loss in losses if (loss == "triplet") == place]
    if wrong and place:
        raise UserError(f"search.space.loss triplet needs database images and queries, and "
                        f"{where} holds place data (GSV-Cities or MSLS); list multi-similarity, "
                        f"triplet-margin or contrastive")
    if wrong:
        raise UserError(f"search.space.loss {wrong[0]} needs place data (GSV-Cities or MSLS) "
                        f"under data.root (--data-root), not "
                        f"{data_root or 'the synthetic dataset'}; pass such a root or list "
                        f"triplet only")


def train_keys() -> set[str]:
    """What a spec's `train` section may set: TrainConfig's `SPEC` settings, but the
    searched ones (they belong to `search.space`)."""
    return set(names_with(TrainConfig, SPEC)) - set(search_space.NAMES)


def stage_settings(config) -> set[str]:
    """What an evaluation or compression spec's `train` section may set: that stage's
    settings but the model's (the checkpoint holds it)."""
    return {f.name for f in dataclasses.fields(config)} - set(MODEL_SETTINGS)


def _stage_settings(train: dict, config, what: str) -> None:
    """An evaluation or compression spec's `train` section holds that stage's settings only."""
    foreign = sorted(set(train) - stage_settings(config))
    if foreign:
        raise UserError(f"train.{', train.'.join(foreign)} does not apply to {what}; leave "
                        f"it out")


def load_spec(path: Path | None) -> SweepSpec:
    """Read a YAML spec (default: the embedded `smoke.yaml`)."""
    path = Path(path) if path is not None else DEFAULT_SPEC
    return spec_from_dict(read_mapping(path, "experiments/smoke.yaml"), str(path))


def read_mapping(path: Path, example: str) -> dict:
    """The mapping of sections a YAML spec file holds (`example` names a file like it)."""
    if not path.is_file():
        raise UserError(f"--config {path} does not exist; pass a YAML file like {example}")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise UserError(f"{path} is not valid YAML{where}; fix the file") from None
    if not isinstance(raw, dict):
        raise UserError(f"{path} must hold a mapping of sections")
    return raw


def spec_values(raw: dict, cls, source: str) -> dict:
    """{setting: value} of the settings of `cls` that the mapping `raw` holds, each read from
    where its `spec_key` says; a key that is no setting's is a `UserError`."""
    keys = {name: meta.spec_key for name, meta in declared(cls) if meta.spec_key}
    _check_keys(raw, set(keys.values()), source)
    values = {}
    for name, key in keys.items():
        found, value = _lookup(raw, key)
        if found and value is not None:
            values[name] = value
    return values


def spec_from_dict(raw: dict, source: str) -> SweepSpec:
    """The spec a YAML mapping describes: every key read from where its setting says."""
    values = spec_values(copy.deepcopy(raw), SweepSpec, source)
    values["synthetic"] = section(values.get("synthetic"), set(names_with(SynthConfig, SPEC)),
                                   f"{source}: data.synthetic")
    _recipe_constants(values, source)
    values["space"] = search_space.parse_space(section(values.get("space"), None,
                                                        f"{source}: search.space"),
                                               f"{source}: search.space")
    values["start_with"] = tuple(values.get("start_with") or ())
    values["train"] = _train_section(values.get("train"), source)
    if "data_root" in values:
        values["data_root"] = Path(values["data_root"]).expanduser()
    if values.get("evaluate") is not None:
        section(values["evaluate"], set(EVALUATE_KEYS), f"{source}: evaluate")
    if values.get("compress") is not None:
        section(values["compress"], COMPRESS_KEYS, f"{source}: compress")
    return SweepSpec(**values)


def _recipe_constants(values: dict, source: str) -> None:
    """A recipe setting searched only where a space lists it (optim, loss, ...), given as one
    value in `train` (as specs did before it was searched: `optim: SGD`), is that one choice
    of the space."""
    train, space = values.get("train"), values.setdefault("space", {})
    if not isinstance(train, dict) or not isinstance(space, dict):
        return  # `section` says what is wrong with them
    for name in sorted(set(train) & (set(search_space.NAMES) - set(search_space.LISTED))):
        if name in space:
            raise UserError(f"{source}: {name} is given as train.{name} and as "
                            f"search.space.{name}; keep one")
        space[name] = train.pop(name)


def _train_section(train, source: str) -> dict:
    train = section(train, None, f"{source}: train")
    if "amp" in train:  # specs written before --precision
        train.setdefault("precision", "bf16" if train.pop("amp") else "fp32")
    searched = sorted(set(train) & set(search_space.NAMES))
    if searched:
        raise UserError(f"{source}: train.{searched[0]} is searched: give it under "
                        f"search.space.{searched[0]} (one value or a list of choices)")
    section(train, train_keys(), f"{source}: train")
    if "image_size" in train:
        train["image_size"] = parse_image_size(train["image_size"])
    return train


def _check_keys(raw: dict, keys: set, source: str) -> None:
    """Every key of `raw` (nested sections included) must be one of `keys` (dotted) or lie
    inside one of them (a section the setting holds whole, such as `train`)."""
    def walk(section: dict, prefix: str) -> None:
        if not isinstance(section, dict):
            raise UserError(f"{source}: '{prefix.rstrip('.')}' must be a mapping")
        allowed = {k[len(prefix):].split(".")[0] for k in keys if k.startswith(prefix)}
        unknown = sorted(map(str, set(section) - allowed))
        if unknown:
            where = f"{source}: {prefix.rstrip('.')}" if prefix else source
            raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: "
                            f"{', '.join(sorted(allowed))}")
        for key, value in section.items():
            if f"{prefix}{key}" not in keys and value is not None:
                walk(value, f"{prefix}{key}.")
    walk(raw, "")


def _lookup(raw: dict, key: str) -> tuple[bool, object]:
    section = raw
    for part in key.split("."):
        if not isinstance(section, dict) or part not in section:
            return False, None
        section = section[part]
    return True, section


def section(value, allowed: set | None, where: str) -> dict:
    """A mapping section (None: empty), its keys among `allowed` when given."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise UserError(f"{where} must be a mapping")
    unknown = sorted(map(str, set(value) - allowed)) if allowed is not None else []
    if unknown:
        raise UserError(f"{where}: unknown key(s) {', '.join(unknown)}; allowed: "
                        f"{', '.join(sorted(allowed))}")
    return dict(value)
