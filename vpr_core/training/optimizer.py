"""The optimiser over a model's trainable parameters, and its learning rate per epoch."""
from __future__ import annotations

import math

import torch


def build_optimizer(config, model: torch.nn.Module) -> torch.optim.Optimizer:
    """SGD (momentum, weight decay) or Adam (its own settings), as the reference."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    if config.optim == "SGD":
        return torch.optim.SGD(trainable, lr=config.lr, momentum=config.momentum,
                               weight_decay=config.weight_decay)
    return torch.optim.Adam(trainable, lr=config.lr)


def learning_rate(config, epoch: int) -> float:
    """The reference's StepLR, stepped with the epoch number before each epoch; Adam keeps
    a constant learning rate."""
    if config.optim != "SGD":
        return config.lr
    return config.lr * config.lr_gamma ** math.floor(epoch / config.lr_step)
