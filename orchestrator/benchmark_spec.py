"""What a benchmark runs: models x test sets under one protocol, from flags over an optional
YAML spec (`--config experiments/released_models.yaml`).

Each setting is declared once in `BenchmarkSpec` (its flag and its spec key); the evaluation's
own settings (batch size, device, workers, image size, ...) are `EvalConfig`'s, given as its
flags or in the spec's `eval` section. Flags win over the spec.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from vpr_core import arguments
from vpr_core.config import EvalConfig
from vpr_core.errors import UserError
from vpr_core.settings import SPEC, check, redeclared, setting

from .spec import read_mapping, section, spec_values

EXAMPLE = "experiments/released_models.yaml"
BENCHMARK = "benchmark"  # the help group of its own flags
# the evaluation settings a benchmark takes, for every model and test set alike
EVAL_SETTINGS = ("ckpt", "dataset", "image_size", "cache_batch_size", "workers", "device",
                 "precision", "decode", "image_store_gb", "cache_dir", "seed", "show_progress")


def _spec(key: str, default, help: str, **declared_as):
    return setting(default, help, spec_key=key, roles=(SPEC,), group=BENCHMARK, **declared_as)


@dataclass(frozen=True)
class ModelEntry:
    """A row: `source` a checkpoint file, a run folder, runs:/RUN_ID[/PATH] or a run id."""

    source: str
    label: str | None = None


@dataclass(frozen=True)
class TestSetEntry:
    """A column group: a dataset `root` (either layout), which .mat (`dataset`) if several."""

    root: Path
    dataset: str | None = None
    label: str | None = None


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str | None = _spec("name", None, "the benchmark's name: its MLflow runs' tag, and "
                             "with the time, its parent run's name", metavar="NAME",
                             shown_default="the spec's, else benchmark")
    description: str = _spec("description", "", "what the benchmark is for", flag="")
    models: tuple = _spec(
        "models", (), "the models, one row each: checkpoint files (this project's or a "
        "released CosPlace, EigenPlaces, MixVPR, SALAD, BoQ, MegaLoc file), run folders, or "
        "MLflow runs (runs:/RUN_ID[/PATH] or RUN_ID, in --tracking-uri's store)",
        flag="--resume", nargs="+", metavar="MODEL", shown_default="the spec's")
    test_sets: tuple = _spec(
        "datasets", (), "the test sets, one column group each: dataset roots, Pittsburgh "
        "(.mat) or @UTM@ folder layout", flag="--data-root", nargs="+", metavar="DIR",
        shown_default="the spec's")
    split: str = redeclared(EvalConfig, "split", default="test", spec_key="protocol.split",
                            roles=frozenset({SPEC}))
    positive_dist: float = redeclared(EvalConfig, "positive_dist", default=25.0,
                                      spec_key="protocol.positive_dist", shown_default=None,
                                      roles=frozenset({SPEC}))
    eval: dict = _spec("eval", dataclasses.MISSING, "the evaluation's settings", flag="",
                       default_factory=dict)
    tracking_uri: str | None = _spec("tracking.uri", None, "MLflow store", flag="")
    experiment: str | None = _spec("tracking.experiment", None, "MLflow experiment", flag="")

    def model_entries(self) -> list[ModelEntry]:
        if not self.models:
            raise UserError("a benchmark needs models: pass --resume FILE|RUN_DIR|runs:/ID ... "
                            f"or a spec with a models list (see {EXAMPLE})")
        return [_entry(item, i, "models", "checkpoint", ModelEntry, str)
                for i, item in enumerate(self.models)]

    def test_set_entries(self) -> list[TestSetEntry]:
        if not self.test_sets:
            raise UserError("a benchmark needs test sets: pass --data-root DIR ... or a spec "
                            f"with a datasets list (see {EXAMPLE})")
        return [_entry(item, i, "datasets", "root", TestSetEntry,
                       lambda root: Path(root).expanduser().absolute())
                for i, item in enumerate(self.test_sets)]

    def eval_config(self) -> EvalConfig:
        """The settings every cell is evaluated with, before its model and data are added
        (not validated: `eval` validates each cell's)."""
        return EvalConfig(**self.eval, split=self.split, positive_dist=self.positive_dist)


def _entry(item, index: int, key: str, main: str, cls, convert):
    """An entry of the spec's list `key`: a plain value (its `main` field) or a mapping of
    the fields of `cls`."""
    where = f"{key}[{index}]"
    if isinstance(item, (str, Path)):
        return cls(convert(item))
    fields = {f.name for f in dataclasses.fields(cls)}
    allowed = (fields - {"source", "label"}) | {main, "name"}
    values = section(item, allowed, where)
    if values.get(main) is None:
        raise UserError(f"{where} has no {main}; write it as a path or as {{{main}: PATH, "
                        f"name: LABEL}}")
    first = "source" if cls is ModelEntry else main
    values[first] = convert(values.pop(main))
    values["label"] = values.pop("name", None)
    for name, value in values.items():
        if value is not None and not isinstance(value, (str, Path)):
            raise UserError(f"{where}: {name} must be text, got {value!r}")
    return cls(**values)


def benchmark_spec(args) -> BenchmarkSpec:
    """The spec (`--config`, else empty) with the flags given over it; checked."""
    values = {}
    if getattr(args, "config", None) is not None:
        path = Path(args.config)
        values = spec_values(read_mapping(path, EXAMPLE), BenchmarkSpec, str(path))
        values["eval"] = section(values.get("eval"), set(EVAL_SETTINGS) - {"show_progress"},
                                 f"{path}: eval")
        for key in ("models", "test_sets"):
            if not isinstance(values.get(key, []), list):
                raise UserError(f"{path}: {key.replace('test_sets', 'datasets')} must be a list")
    values.update(arguments.given(args, BenchmarkSpec))  # --tracking-uri, --experiment too
    values["eval"] = dict(values.get("eval", {}), **arguments.given(args, EVAL_SETTINGS))
    spec = BenchmarkSpec(**{k: tuple(v) if isinstance(v, list) else v
                            for k, v in values.items()})
    check(spec)
    return spec


def add_flags(parser) -> None:
    """The benchmark's flags: its own, then the evaluation's it takes."""
    arguments.group_of(parser, BENCHMARK).add_argument(
        "--config", metavar="YAML", help=f"a benchmark spec: models, datasets, protocol (like "
                                         f"{EXAMPLE}); flags override it")
    arguments.add_settings(parser, BenchmarkSpec)
    arguments.add_settings(parser, EvalConfig, EVAL_SETTINGS)
