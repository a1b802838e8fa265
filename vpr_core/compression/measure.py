"""What a compressed variant costs and gives, measured the same way for every model.

Recall@1/5/10/20 on a split, the model's size on disk (its state dict and the extra tensors
a checkpoint keeps, as `torch.save` writes them), bytes per database descriptor, forward
latency per image (CPU at batch 1 and 32, CUDA at batch 32 where there is one) and the share
of exactly-zero encoder weights.
"""
from __future__ import annotations

import io
import statistics
import time
from dataclasses import dataclass, field

import torch

from ..data.image_feed import ImageFeed
from ..evaluation.recall import RECALL_NS, evaluate, named_recalls
from ..runtime import autocast, memory_format, prepare_model

LATENCY_REPEATS = 3
# warm-up time before timing: faiss's OpenMP threads keep spinning for a moment after a search
# and would slow the first forwards on a small machine a hundredfold
WARM_UP_SECONDS = 0.5


@dataclass
class Figures:
    """One model's figures; `label` names it ("original", "prune 0.3 channels", ...)."""

    label: str
    method: str  # "none" for the original
    settings: dict
    recalls: dict
    size_bytes: int
    descriptor_bytes: float
    zero_share: float
    latency_ms: dict = field(default_factory=dict)  # {"cpu_b1": ms per image, ...}
    eval_device: str = "cpu"

    def metrics(self) -> dict:
        """Flat numbers, for JSON results and MLflow (recall@N, size_mb, latency_..._ms)."""
        out = named_recalls(self.recalls)
        out.update(size_mb=self.size_bytes / 2**20, descriptor_bytes=self.descriptor_bytes,
                   zero_share=self.zero_share)
        out.update({f"latency_{key}_ms": value for key, value in self.latency_ms.items()})
        return out

    def to_dict(self) -> dict:
        return {"label": self.label, "method": self.method, "settings": self.settings,
                "eval_device": self.eval_device, "size_bytes": self.size_bytes,
                "latency": self.latency_ms, **self.metrics()}

    @classmethod
    def from_dict(cls, data: dict) -> Figures:
        """The figures `to_dict` wrote (a sweep's trial reports them as such)."""
        recalls = {int(key.split("@")[1]): value for key, value in data.items()
                   if key.startswith("recall@")}
        return cls(data["label"], data["method"], data["settings"], recalls,
                   data["size_bytes"], data["descriptor_bytes"], data["zero_share"],
                   dict(data["latency"]), data["eval_device"])


def figures_table(rows: list[Figures]) -> list[str]:
    """Models side by side (the original first), as the terminal shows them."""
    timings = sorted({key for figures in rows for key in figures.latency_ms})
    recall_titles = " ".join(f"{'R@' + str(n):>6}" for n in RECALL_NS)
    header = (f"{'variant':<30} {recall_titles} {'MB':>7} {'B/image':>8} {'zeros':>6}"
              + "".join(f" {key + ' ms':>12}" for key in timings))
    lines = [header, "-" * len(header)]
    for figures in rows:
        recalls = " ".join(f"{figures.recalls[n]:6.3f}" for n in RECALL_NS)
        latency = "".join(f" {figures.latency_ms.get(key, float('nan')):12.2f}"
                          for key in timings)
        lines.append(f"{figures.label[:30]:<30} {recalls} {figures.size_bytes / 2**20:7.1f} "
                     f"{figures.descriptor_bytes:8.0f} {figures.zero_share:6.1%}{latency}")
    return lines


def size_bytes(model: torch.nn.Module, extra: dict | None = None) -> int:
    """Bytes `torch.save` writes for the model's state dict and `extra`."""
    buffer = io.BytesIO()
    torch.save({"state_dict": model.state_dict(), "extra": extra or {}}, buffer)
    return buffer.tell()


def zero_share(model: torch.nn.Module) -> float:
    """Share of exactly-zero values among the encoder's weights (int8 ones dequantized)."""
    zeros = total = 0
    for name, value in model.encoder.state_dict().items():
        if not isinstance(value, torch.Tensor) or not name.endswith("weight"):
            continue
        value = value.dequantize() if value.is_quantized else value
        if value.is_floating_point():
            zeros += int((value == 0).sum())
            total += value.numel()
    return zeros / total if total else 0.0


@torch.no_grad()
def latency_ms(model: torch.nn.Module, image_size: tuple[int, int], batch: int,
               device: torch.device, precision: str) -> float:
    """Median milliseconds per image of a forward pass of `batch` images (after a warm-up)."""
    model.eval()
    images = torch.randn(batch, 3, *image_size, device=device)
    images = images.contiguous(memory_format=memory_format(device, precision))

    def forward() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        started = time.perf_counter()
        with autocast(device, precision):
            model(images)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return time.perf_counter() - started

    deadline = time.perf_counter() + WARM_UP_SECONDS
    forward()
    while time.perf_counter() < deadline:
        forward()
    runs = [forward() for _ in range(LATENCY_REPEATS)]
    return 1000 * statistics.median(runs) / batch


def measure(label: str, method: str, settings: dict, model: torch.nn.Module, feed: ImageFeed,
            *, batch_size: int, precision: str, descriptor_bytes: float, extra: dict,
            latency_batches=(1, 32), index=None, cuda: bool = False) -> Figures:
    """Every figure of one model. It runs where `feed` runs (the CPU for int8 models); its
    CPU latencies on the CPU, and on CUDA too when `cuda`."""
    model = prepare_model(model, feed.device, precision)
    result = evaluate(model, feed, batch_size=batch_size, precision=precision, index=index)
    cpu = torch.device("cpu")
    cpu_precision = "fp32" if feed.device.type == "cuda" else precision
    latencies = {}
    for batch in latency_batches:
        latencies[f"cpu_b{batch}"] = latency_ms(prepare_model(model, cpu, cpu_precision),
                                                feed.size, batch, cpu, cpu_precision)
    if cuda:
        gpu = torch.device("cuda")
        latencies[f"cuda_b{max(latency_batches)}"] = latency_ms(
            prepare_model(model, gpu, precision), feed.size, max(latency_batches), gpu,
            precision)
    return Figures(label, method, settings, result.recalls, size_bytes(model, extra),
                   descriptor_bytes, zero_share(model), latencies, str(feed.device))
