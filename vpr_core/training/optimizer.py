"""The optimiser over a model's trainable parameters, and the triplet recipe's learning rate
per epoch (the place-batched recipe's, per step, is `schedule.Schedule`)."""
from __future__ import annotations

import math

import torch


def build_optimizer(config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or Adam (its own settings), as the reference; AdamW
    (weight decay), as SALAD."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if config.optim == "SGD":
        return torch.optim.SGD(trainable, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    if config.optim == "ADAMW":
        return torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.Adam(trainable, lr=config.lr)


def learning_rate(config, epoch: int) -> float:
    """The reference's StepLR (`--scheduler step`, SGD's default), stepped with the epoch
    number before each epoch; else (Adam's default) a constant learning rate."""
    if config.scheduler != "step":
        return config.lr
    return config.lr * config.lr_gamma ** math.floor(epoch / config.lr_step)
