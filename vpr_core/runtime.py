"""Where computation runs: device, numeric precision, workers, progress bars, seeding."""
from __future__ import annotations

import contextlib
import os
import random
import time

import numpy as np
import torch
from tqdm import tqdm

from .errors import UserError

PRECISIONS = ("fp32", "bf16")


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


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """The precision of forward passes: `precision`, else bf16 on CUDA and fp32 elsewhere."""
    if precision is None:
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise UserError(f"--precision {precision!r} must be fp32 or bf16")
    return precision


def memory_format(device: torch.device, precision: str) -> torch.memory_format:
    """The layout images and weights take: channels-last (NHWC) where it computes faster, on
    CUDA (what the tensor cores read) and for bf16 on the CPU; fp32 on the CPU keeps the
    reference's NCHW, so its results are the reference's bit for bit."""
    if device.type == "cuda" or precision == "bf16":
        return torch.channels_last
    return torch.contiguous_format


def prepare_model(model: torch.nn.Module, device: torch.device,
                  precision: str = "fp32") -> torch.nn.Module:
    """`model` on `device`, in `memory_format(device, precision)`; on CUDA with cuDNN's
    autotuner on."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    return model.to(device).to(memory_format=memory_format(device, precision))


def to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on `device` without making the host wait: through pinned memory on CUDA."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


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


def autocast(device: torch.device, precision: str):
    """bfloat16 autocast for `precision` 'bf16' (no loss scaling needed, unlike float16).

    What stays float32 under it is chosen where it matters: NetVLAD's normalisations and the
    triplet loss (see `NetVLAD.forward` and the training step).
    """
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


class StageClock:
    """Wall time per named stage; the device's queued work is counted in the stage it was
    queued in (one synchronisation at each stage's end)."""

    def __init__(self, device: torch.device):
        self.device = device
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, stage: str):
        started = time.perf_counter()
        try:
            yield
        finally:
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - started

    def take(self) -> dict[str, float]:
        """The seconds so far, then start again from zero."""
        seconds, self.seconds = self.seconds, {}
        return seconds
