"""Fine-tuning a compressed model (`compress --finetune-epochs`): the project's training, with
the settings its source run was trained with, keeping the best validated epoch."""
from __future__ import annotations

import copy
import dataclasses
import logging
import tempfile
from pathlib import Path

from ..config import MODEL_SETTINGS, CommonConfig, CompressConfig, TrainConfig
from ..evaluation.recall import named_recalls
from ..models.checkpoints import read_flags
from ..settings import restored

log = logging.getLogger(__name__)


def finetune_config(config: CompressConfig, source: Path, model, run_dir: Path) -> TrainConfig:
    """The training settings of fine-tuning a variant of `source`: those `train --resume`
    would restore from its run, under the compress command's data and runtime settings,
    epochs and learning rate; no early stopping. The model is the variant's (no weights are
    loaded)."""
    shared = {f.name: getattr(config, f.name) for f in dataclasses.fields(CommonConfig)
              if f.name not in MODEL_SETTINGS}
    given = dict(shared, arch=model.arch, aggregator=model.aggregator,
                 num_clusters=model.num_clusters, weights="none",
                 epochs=config.finetune_epochs, lr=config.finetune_lr,
                 train_split=config.train_split, patience=0)
    return TrainConfig(**restored(TrainConfig, read_flags(source), given), run_dir=run_dir)


def finetuner(config: CompressConfig, source: Path, history: list):
    """`finetune(model, after_step)`: the project's training on the compressed model for
    `config.finetune_epochs` (none: the model as it is). As `train` keeps its best checkpoint,
    the model returned is the one with the best validation Recall@5 among the epochs and the
    start (fine-tuning can also lose recall). Each epoch's figures, the start's as epoch 0,
    are appended to `history`. Its checkpoints are scratch (a half-compressed model): only
    the final variant is kept."""
    def finetune(model, after_step=None):
        if not config.finetune_epochs:
            return model
        from .train import training_run

        with tempfile.TemporaryDirectory() as scratch:
            train = finetune_config(config, source, model, Path(scratch) / "finetune")
            run = training_run(train, model=model, after_step=after_step)
            _keep_best(run, history)
        return run.model
    return finetune


def _keep_best(run, history: list) -> None:
    """Fine-tune through `run`, then put back the weights of its best validated epoch (or of
    the start, epoch 0); `history` gets each epoch's figures, the kept one marked."""
    start = run.validate()
    history.append({"epoch": 0, **named_recalls(start), "kept": False})
    best, best_state = len(history) - 1, copy.deepcopy(run.model.state_dict())
    run.standing.best_score = start.get(5, 0.0)  # an epoch is best only when it beats the start
    for result in run.epochs():
        history.append({"epoch": result.epoch, **result.metrics(), "kept": False})
        if result.is_best:
            best, best_state = len(history) - 1, copy.deepcopy(run.model.state_dict())
    history[best]["kept"] = True
    run.model.load_state_dict(best_state)
    if best != len(history) - 1:
        log.info("fine-tuning: epoch %d had the best validation Recall@5 (%.4f); keeping it",
                 history[best]["epoch"], run.best_score)
