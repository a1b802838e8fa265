"""Descriptor extraction over an `ImageFeed`, shared by clustering, training and evaluation."""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

import numpy as np
import torch

from ..data.image_feed import ImageFeed, chunks
from ..runtime import autocast, progress

IN_FLIGHT = 4  # descriptor batches copied to the host asynchronously before one is awaited


@torch.no_grad()
def extract_descriptors(model: torch.nn.Module, feed: ImageFeed, indices: Sequence[int], *,
                        batch_size: int, precision: str = "fp32", dtype=np.float32,
                        show_progress: bool = False, desc: str = "descriptors",
                        forward: Callable[[torch.Tensor], torch.Tensor] | None = None
                        ) -> np.ndarray:
    """Descriptors [len(indices), D] of `dtype`, in the order of `indices` (positions in the
    feed's split, see `ImageFeed`).

    `forward` defaults to `model` (encoder then pool); the model is put in eval mode. On a GPU
    the host never waits for the batch it has just queued (see `_HostSink`).
    """
    was_training = model.training
    model.eval()
    forward = forward or model
    groups = chunks(indices, batch_size)
    sink = _HostSink(len(indices), dtype)
    try:
        for images in progress(feed.batches(groups), enabled=show_progress, desc=desc,
                               total=len(groups), unit="batch"):
            with autocast(feed.device, precision):
                descriptors = forward(images)
            sink.add(descriptors)
    finally:
        model.train(was_training)
    return sink.result()


class _HostSink:
    """Gathers descriptor batches into one host array.

    From a GPU each batch is copied into pinned host memory without waiting (the copy is
    queued behind the batch's forward pass); the host waits only for a batch several batches
    old, which is done by then, so the device never runs dry.
    """

    def __init__(self, count: int, dtype):
        self.count, self.dtype = count, np.dtype(dtype)
        self.torch_dtype = torch.from_numpy(np.empty(0, dtype=self.dtype)).dtype
        self.out: np.ndarray | None = None
        self.in_flight: deque = deque()  # (row, pinned host copy, event marking it done)
        self.row = 0

    def add(self, descriptors: torch.Tensor) -> None:
        descriptors = descriptors.detach().to(self.torch_dtype)
        if self.out is None:
            self.out = np.empty((self.count, descriptors.shape[1]), dtype=self.dtype)
        rows = slice(self.row, self.row + len(descriptors))
        self.row += len(descriptors)
        if descriptors.device.type != "cuda":
            self.out[rows] = descriptors.numpy()
            return
        host = torch.empty(descriptors.shape, dtype=self.torch_dtype, pin_memory=True)
        host.copy_(descriptors, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        self.in_flight.append((rows, host, done))
        while len(self.in_flight) > IN_FLIGHT:
            self._land()

    def _land(self) -> None:
        rows, host, done = self.in_flight.popleft()
        done.synchronize()
        self.out[rows] = host.numpy()

    def result(self) -> np.ndarray:
        while self.in_flight:
            self._land()
        if self.out is None:
            return np.empty((0, 0), dtype=self.dtype)
        return self.out
