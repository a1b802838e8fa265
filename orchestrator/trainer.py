"""The Ray Tune trainable: one NetVLAD training trial through vpr_core, mining in the service.

Reports once per epoch (Recall@1/5/10/20, loss, triplets, epoch time) with the checkpoint of
that epoch in the reference's format; resumes from `tune.get_checkpoint()` after a failure or
a restored sweep. A NaN loss raises, so the trial fails with its reason (Optuna is told FAIL,
never a value).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

from ray import tune

from vpr_core.config import TrainConfig
from vpr_core.errors import UserError
from vpr_core.models.checkpoints import CHECKPOINT_DIR, LATEST_FILE, RUN_FILES
from vpr_core.runtime import resolve_device
from vpr_core.stages.train import training_run
from vpr_core.training.frozen_features import default_budget_gb
from vpr_tracking import search_space

from .mining_service import RayMiner
from .spec import SweepSpec

FAILURE_NOTE = "deterministic_failure.txt"


def train_trial(config: dict, *, spec: SweepSpec, data_root: str, service: str) -> None:
    """Tune function trainable: `config` holds the sampled values of the search space (the
    dimensions that apply to the trial's aggregator and loss only). `service`: the mining
    service's name, "" when no trial of the sweep trains triplets.

    A failure that would repeat (a NaN loss, an impossible setting) is noted in the trial's
    folder, so that Tune's retries (meant for killed processes) end at once instead of
    training again into the same failure.
    """
    context = tune.get_context()
    note = Path(context.get_trial_dir()) / FAILURE_NOTE
    if note.is_file():
        raise UserError(note.read_text().strip())
    try:
        _train(config, spec, data_root, service, context)
    except UserError as error:  # TrainingDiverged is one
        note.write_text(f"{type(error).__name__}: {error}\n")
        raise


def _train(config: dict, spec: SweepSpec, data_root: str, service: str, context) -> None:
    # the run's working copy lives in the trial's local working directory; what persists is
    # the checkpoint handed to Tune each epoch (into the sweep's storage)
    run_dir = Path.cwd().absolute() / "run"
    shutil.rmtree(run_dir, ignore_errors=True)
    resume = _restore_checkpoint(run_dir)
    train_config = spec.trial_config(
        search_space.searched_values(config), data_root=Path(data_root),
        run_dir=run_dir, resume=resume, workers=max(0, int(spec.cpus_per_trial) - 1))
    miner = RayMiner(service) if service else None  # none: no trial of the sweep mines
    run = training_run(_share_frozen_budget(train_config, context), miner,
                       context.get_trial_id())
    centroids = str(run.centroids_path or "")
    try:
        for result in run.epochs():
            metrics = result.metrics()
            metrics.update(epoch=result.epoch, best_recall_at_5=run.best_score,
                           centroids=centroids)
            with tempfile.TemporaryDirectory() as scratch:
                _copy_run_files(run_dir / CHECKPOINT_DIR, Path(scratch))
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(scratch))
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _share_frozen_budget(train_config: TrainConfig, context) -> TrainConfig:
    """Trials side by side on one GPU (or one host) each keep their part of the default
    frozen-feature budget (see `vpr_core.training.frozen_features`): together, what one run
    would."""
    if train_config.frozen_cache_gb is not None:
        return train_config
    resources = context.get_trial_resources().required_resources
    device = resolve_device(train_config.device)
    if device.type == "cuda":
        share = float(resources.get("GPU", 0)) or 1.0
    else:
        share = float(resources.get("CPU", 1)) / (os.cpu_count() or 1)
    if share >= 1:
        return train_config
    return dataclasses.replace(train_config, frozen_cache_gb=default_budget_gb(device, share))


def _restore_checkpoint(run_dir: Path) -> Path | None:
    """Put the checkpoint Tune hands back (if any) into the run folder; return its path."""
    checkpoint = tune.get_checkpoint()
    if checkpoint is None:
        return None
    target = run_dir / CHECKPOINT_DIR
    target.mkdir(parents=True, exist_ok=True)
    with checkpoint.as_directory() as folder:
        _copy_run_files(Path(folder), target)
    return target / LATEST_FILE


def _copy_run_files(source: Path, target: Path) -> None:
    for name in RUN_FILES:
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
