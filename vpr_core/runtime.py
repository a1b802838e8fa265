"""Where computation runs: device choice, DataLoader workers, progress bars, seeding."""
from __future__ import annotations

import os
import random

import numpy as np
import torch
from tqdm import tqdm

from .errors import UserError


def resolve_device(device: str = "auto") -> torch.device:
    """'auto' picks CUDA when present; 'cuda' on a machine without a GPU is a user error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {device} was asked for but no CUDA GPU is visible; "
                        f"pass --device cpu (or auto)")
    try:
        return torch.device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r} is not a device; pass auto, cpu or cuda") from None


def default_workers() -> int:
    return min(4, os.cpu_count() or 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def progress(iterable=None, *, enabled: bool, desc: str, total: int | None = None,
             unit: str = "it"):
    """A tqdm bar on stderr when `enabled`, else the bare iterable."""
    return tqdm(iterable, total=total, desc=desc, unit=unit, disable=not enabled,
                dynamic_ncols=True, leave=False, mininterval=1.0)


def autocast(device: torch.device, enabled: bool):
    """bfloat16 autocast when `enabled` (needs no loss scaling, unlike float16)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)
