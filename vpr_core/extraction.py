"""Batched image loading and descriptor extraction, shared by clustering, training and eval."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader

from .datasets.images import ImageList, raise_unreadable
from .runtime import autocast, progress


def image_batches(paths: Sequence[str], size: tuple[int, int], batch_size: int, workers: int,
                  device: torch.device, *, indices: Sequence[int] | None = None,
                  show_progress: bool = False, desc: str = "images"
                  ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (images [B, 3, H, W] on `device`, indices [B]) over `paths` (or `indices` of them).

    An image that does not decode raises `UserError` naming the file.
    """
    dataset = ImageList(paths, size)
    subset = dataset if indices is None else torch.utils.data.Subset(dataset, list(indices))
    loader = DataLoader(subset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=False)
    for images, batch_indices, ok in progress(loader, enabled=show_progress, desc=desc,
                                              unit="batch"):
        if not bool(ok.all()):
            raise_unreadable(paths, batch_indices, ok)
        yield images.to(device, non_blocking=True), batch_indices


@torch.no_grad()
def extract_descriptors(model: torch.nn.Module, paths: Sequence[str], size: tuple[int, int], *,
                        batch_size: int, workers: int, device: torch.device,
                        indices: Sequence[int] | None = None, amp: bool = False,
                        show_progress: bool = False, desc: str = "descriptors",
                        forward: Callable[[torch.Tensor], torch.Tensor] | None = None
                        ) -> np.ndarray:
    """Descriptors [len(indices or paths), D] float32, in the order of `indices` (or `paths`).

    `forward` defaults to `model` (encoder then pool); the model is put in eval mode.
    """
    was_training = model.training
    model.eval()
    forward = forward or model
    count = len(paths) if indices is None else len(indices)
    out: np.ndarray | None = None
    row = 0
    try:
        for images, _ in image_batches(paths, size, batch_size, workers, device, indices=indices,
                                       show_progress=show_progress, desc=desc):
            with autocast(device, amp):
                descriptors = forward(images)
            descriptors = descriptors.float().cpu().numpy()
            if out is None:
                out = np.empty((count, descriptors.shape[1]), dtype=np.float32)
            out[row:row + len(descriptors)] = descriptors
            row += len(descriptors)
    finally:
        model.train(was_training)
    return out if out is not None else np.empty((0, 0), dtype=np.float32)
