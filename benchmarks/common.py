"""What every benchmark shares: JSON-line output, alternating repeats, timing, memory."""
from __future__ import annotations

import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch


def frozen_weights_file(arch: str, folder: Path, aggregator: str = "netvlad") -> Path:
    """Random encoder weights saved as a weight file. Loading one freezes the layers that
    ImageNet weights freeze (the reference's default; a ResNet's up to layer2, a DINOv2's
    blocks but the last 4), without a download."""
    from vpr_core.models.backbones import save_fresh_weights
    from vpr_core.models.catalog import CNNS
    from vpr_core.models.encoders import encoder

    path = folder / f"{arch}_{aggregator}_random.pth"
    if arch in CNNS:
        return save_fresh_weights(arch, path)
    fresh = encoder(arch, aggregator).state_dict()
    torch.save({f"encoder.{key}": value for key, value in fresh.items()}, path)
    return path


def emit(record: dict) -> dict:
    """Print one JSON line (flushed at once, so a killed run keeps what it measured)."""
    print(json.dumps(record, default=_plain), flush=True)
    return record


def _plain(value):
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def machine(device: torch.device) -> dict:
    """Where the numbers come from."""
    info = {"host_cpus": _cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(),
            "device": str(device)}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


def device_and_precision(args) -> tuple[torch.device, str]:
    """The device and precision a benchmark's --device / --precision flags resolve to."""
    from vpr_core.runtime import resolve_device, resolve_precision

    device = resolve_device(args.device)
    return device, resolve_precision(args.precision, device)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(function: Callable[[], object], device: torch.device) -> float:
    """Seconds `function()` takes, device work included."""
    synchronize(device)
    started = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - started


def alternate(functions: dict[str, Callable[[], float]], repeats: int) -> dict[str, float]:
    """Run each function `repeats` times, in turn, and return the median of what each returns.

    Alternating means a slow moment of the machine hits every side alike.
    """
    return {name: statistics.median(values)
            for name, values in alternate_runs(functions, repeats).items()}


def alternate_runs(functions: dict[str, Callable[[], float]], repeats: int
                   ) -> dict[str, list[float]]:
    """What each function returns, run `repeats` times in turn (see `alternate`)."""
    results: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            results[name].append(function())
    return results


def peak_host_memory_gb() -> float:
    """The largest resident set this process has had, in GiB."""
    kilobytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    scale = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
    return kilobytes * scale / 2**30


def peak_gpu_memory_gb(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**30


def ratio(numerator: float, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if denominator else None


def rounded(value: float | None) -> float | None:
    """`value` to 2 decimals; None (not measured here) stays None."""
    return None if value is None else round(value, 2)
