"""A compression study as one command: the variants of a spec's `compress` section, each a Ray
Tune trial running `vpr_core.stages.compress`, then one MLflow study (a parent, the original and one
child per variant).

    compress:
      checkpoint: runs/alexnet          # the trained model
      split: val
      variants:                         # a list value is searched: every combination runs
        - {method: pca-whiten, dim: [256, 64]}
        - {method: prune, amount: [0.3, 0.5], structure: channels, finetune_epochs: 2,
           finetune_lr: [1.0e-4, 1.0e-3]}
"""
from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from pathlib import Path

from vpr_core.compression.methods import METHODS
from vpr_core.config import CompressConfig
from vpr_core.errors import CommandFailed, UserError
from vpr_core.settings import declared, default_of

# a variant's keys: the method, its settings, and the fine-tuning's
VARIANT_KEYS = {"method", "finetune_epochs", "finetune_lr"} | {
    name for name, meta in declared(CompressConfig) if (meta.only_with or {}).get("method")}


def expand(variants: list) -> list[dict]:
    """Each variant with list values as every combination of them, in order."""
    if not isinstance(variants, list) or not variants:
        raise UserError("the spec's compress.variants must be a non-empty list of variants")
    out = []
    for variant in variants:
        if not isinstance(variant, dict) or variant.get("method") not in METHODS:
            raise UserError(f"compress.variants entry {variant!r} needs a method: one of "
                            f"{', '.join(METHODS)}")
        unknown = sorted(set(variant) - VARIANT_KEYS)
        if unknown:
            raise UserError(f"compress.variants entry {variant!r} has unknown key(s) "
                            f"{', '.join(unknown)}; allowed: {', '.join(sorted(VARIANT_KEYS))}")
        empty = [key for key, value in variant.items() if value == []]
        if empty:
            raise UserError(f"compress.variants entry {variant!r} lists no value for "
                            f"{', '.join(empty)}; give at least one")
        keys = list(variant)
        values = [v if isinstance(v, list) else [v] for v in variant.values()]
        out += [dict(zip(keys, combination)) for combination in itertools.product(*values)]
    return out


@dataclass
class StudyPlan:
    """What the trials share: the source checkpoint, the data and where variants go."""

    checkpoint: Path
    data_root: Path
    dataset: str | None
    split: str
    ckpt: str
    latency_batches: tuple
    runs: Path  # each variant's run folder lies under it
    train: dict  # the spec's runtime settings (image_size, precision, workers, ...)

    def config(self, variant: dict, run_dir: Path) -> CompressConfig:
        return CompressConfig(resume=self.checkpoint, ckpt=self.ckpt, data_root=self.data_root,
                              dataset=self.dataset, split=self.split, run_dir=run_dir,
                              latency_batches=self.latency_batches, show_progress=False,
                              **self.train, **variant)


def plan(spec, data_root: Path | None) -> tuple[StudyPlan, list[dict]]:
    """The study's plan and variants, every one validated before Ray starts."""
    from vpr_core.data import open_split
    from vpr_core.models.checkpoints import checkpoint_file

    spec.validate()
    section = spec.compress
    if data_root is None:
        raise UserError("a compression spec needs data.root (or --data-root)")
    runtime = dict(spec.train)  # CompressConfig's settings, as SweepSpec.validate checked
    study = StudyPlan(Path(section["checkpoint"]).expanduser().absolute(), data_root,
                      spec.dataset, section.get("split", default_of(CompressConfig, "split")),
                      section.get("ckpt", default_of(CompressConfig, "ckpt")),
                      section.get("latency_batches",
                                  default_of(CompressConfig, "latency_batches")),
                      Path("runs").absolute() / spec.name, runtime)
    checkpoint_file(study.checkpoint, study.ckpt)  # missing files fail here, before Ray
    open_split(study.data_root, study.split, study.dataset)
    variants = expand(section.get("variants"))
    for variant in variants:
        study.config(variant, study.runs).validate()  # a mistake fails here, not in a trial
    return study, variants


def compress_trial(config: dict, *, study: StudyPlan) -> None:
    """Tune function trainable: one variant, reported once with its figures."""
    from ray import tune

    from vpr_core.compression.methods import label
    from vpr_core.stages import compress

    variant = config["variant"]
    settings = CompressConfig(**variant).settings()
    name = label(variant["method"], settings, variant.get("finetune_epochs", 0),
                 variant.get("finetune_lr", default_of(CompressConfig, "finetune_lr")))
    run_dir = study.runs / name.replace(" ", "_").replace("+", "")
    result = compress.run(study.config(variant, run_dir))
    # the whole result as text: Tune's loggers take numbers and strings, not nested lists
    tune.report({**result.variant.metrics(), "result": json.dumps(result.to_dict())})


def run_compress_study(spec, *, storage: str | None, name: str | None,
                       ray_address: str | None):
    """Run the study's variants as Tune trials; returns (results, mlflow parent id)."""
    from ray import tune

    from vpr_tracking.uri import check_tracking_uri

    from . import ray_cluster
    from .sweep import default_name, plan_resources, storage_location
    from .tracking import Tracker

    uri = check_tracking_uri(spec.tracking_uri)
    study, variants = plan(spec, spec.data_root)
    name = name or default_name(spec)
    resources = ray_cluster.connect(ray_address)
    per_trial, concurrency, _ = plan_resources(spec, resources, service=False)
    trainable = tune.with_resources(tune.with_parameters(compress_trial, study=study),
                                    per_trial)
    storage_path = str(storage_location(storage))
    tuner = tune.Tuner(trainable,
                       param_space={"variant": tune.grid_search(variants)},
                       tune_config=tune.TuneConfig(max_concurrent_trials=concurrency),
                       run_config=tune.RunConfig(name=name, storage_path=storage_path,
                                                 verbose=0))
    grid = tuner.fit()
    results = [json.loads(r.metrics["result"]) for r in grid
               if r.metrics and "result" in r.metrics]
    failed = [str(r.error).splitlines()[-1] for r in grid if r.error]
    tracker = Tracker(uri, spec.experiment_name)
    parent = log_study(tracker, name, results)
    if not results:
        raise CommandFailed(f"every variant of the study failed; the first: {failed[0]}")
    return results, failed, parent, uri


def log_study(tracker, study: str, results: list[dict]) -> str | None:
    """One MLflow study for the sweep: the parent, the original once, a child per variant."""
    from vpr_core.stages.compress import CompressResult

    parent = None
    for result in results:
        parent, _ = tracker.log_compression(study, CompressResult.from_dict(result))
    return parent
