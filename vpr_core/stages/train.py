"""The `train` stage: a training run of a `TrainConfig` (triplets with hard-negative mining, or
place batches with in-batch mining; validation and a checkpoint each epoch)."""
from __future__ import annotations

from torch import nn

from ..config import TrainConfig
from ..config.aggregator import with_model
from ..runtime import resolve_device, seed_everything
from ..training.inputs import TrainingData
from ..training.mining import Miner
from ..training.place_data import open_place_data
from ..training.results import TrainResult
from ..training.run import Start, TrainingRun
from .starting_model import training_start


def training_run(config: TrainConfig, miner: Miner | None = None, owner: str = "local", *,
                 model: nn.Module | None = None, after_step=None,
                 checkpoint_extra: dict | None = None) -> TrainingRun:
    """The run of `config`, everything checked and nothing written yet. `model`, when given,
    is trained from where it is (fine-tuning a compressed model) instead of the config's
    fresh or resumed one; `miner` mines (default: in this process) under the name `owner`."""
    config = config.validate()
    if model is not None and config.resume is not None:
        raise ValueError("a given model is trained from where it is: no --resume")
    device = resolve_device(config.device)
    data = TrainingData.open(config, device) if config.loss == "triplet" else \
        open_place_data(config, device)
    seed_everything(config.seed)
    start = Start(model) if model is not None else \
        training_start(config, data.train_split, data.image_size)
    if config.resume is not None:  # the model is the checkpoint's: its settings are the run's
        config = with_model(config, start.model.shape)
    return TrainingRun(config, data, start, miner, owner, after_step=after_step,
                       checkpoint_extra=checkpoint_extra)


def run(config: TrainConfig, miner: Miner | None = None, owner: str = "local") -> TrainResult:
    """Train `config` to the end (or to early stopping)."""
    return training_run(config, miner, owner).run()
