"""What a pretrained encoder's frozen layers make of each image, computed once per run.

With pretrained weights the encoder is frozen up to its last conv layers, as in the reference
(AlexNet: all but conv5; VGG16: up to pool4). Those layers' output for an image never changes
while training, yet every cache refresh and every training step (12 images per query) would
run them again, and they are most of the forward's arithmetic (85% for AlexNet, 91% for
VGG16). `FrozenFeatures` runs them once per image and keeps their output in memory, on the
device, so that refreshes, training steps and validation run only the trainable layers
(`FromLayer`). The arithmetic is the same; only the batch an image is computed in changes,
which moves the last bits of a float32 result at most.

It is off when no layer is frozen (`--weights none` trains every layer) and when the
features do not fit the budget (`--frozen-cache-gb`); training then runs the whole encoder.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Iterator, Sequence

import torch
from torch import nn

from ..data.image_feed import ImageFeed, chunks
from ..runtime import autocast, progress, to_device

# layers whose output depends on their input and weights only, once frozen (a frozen BatchNorm
# runs on its stored statistics: see `PlaceModel.train`)
STATELESS_LAYERS = (nn.Conv2d, nn.ReLU, nn.MaxPool2d, nn.BatchNorm2d)
HOST_SHARE, HOST_CAP_GB = 0.25, 8.0  # default budget on the CPU: a quarter of memory, <= 8 GB
DEVICE_SHARE = 0.3  # default budget on CUDA: this share of the GPU's memory (of a trial's part)
log = logging.getLogger(__name__)


def frozen_layers(model: nn.Module) -> int:
    """How many leading encoder layers are frozen, stateless and so computable once (0: none).

    Only a plain `nn.Sequential` encoder counts, whose layers are made of stateless layers
    alone (a ResNet's blocks are; an int8 model in training has observers and fake
    quantisation in its layers), and the frozen part must hold a conv layer.
    """
    encoder = getattr(model, "encoder", None)
    if type(encoder) is not nn.Sequential:
        return 0
    count = 0
    for layer in encoder:
        trainable = any(p.requires_grad for p in layer.parameters())
        leaves = [m for m in layer.modules() if not list(m.children())]
        if trainable or not all(isinstance(m, STATELESS_LAYERS) for m in leaves):
            break
        count += 1
    has_conv = any(isinstance(layer, nn.Conv2d) for layer in list(encoder)[:count])
    return count if has_conv else 0


def budget_bytes(budget_gb: float | None, device: torch.device) -> int:
    """`--frozen-cache-gb` in bytes (None: `default_budget_gb`)."""
    if budget_gb is None:
        budget_gb = default_budget_gb(device)
    return int(float(budget_gb) * 1e9)


def default_budget_gb(device: torch.device, share: float = 1.0) -> float:
    """30% of the GPU's memory, or on the CPU a quarter of the host's memory, at most 8 GB;
    times `share`, the part of the GPU or host that one of several sweep trials side by side
    holds."""
    if device.type == "cuda":
        total = torch.cuda.get_device_properties(device).total_memory
        return DEVICE_SHARE * share * total / 1e9
    try:
        host = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        host = 4 * HOST_CAP_GB * 1e9
    return share * min(HOST_CAP_GB, HOST_SHARE * host / 1e9)


class FromLayer(nn.Module):
    """`model` run from encoder layer `start` on: its input is the output of the layers
    before (a batch of `FrozenFeatures`). Train and eval modes pass through to `model`."""

    def __init__(self, model: nn.Module, start: int):
        super().__init__()
        self.model, self.start = model, start

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.model(features, start=self.start)


class FrozenFeatures:
    """The frozen layers' output for every image of a feed's split, indexed as the feed is.

    Stands in for the `ImageFeed` where a model's forward starts after its frozen layers:
    `batches(groups)` gathers rows on the device instead of reading images.
    """

    def __init__(self, feed: ImageFeed, storage: torch.Tensor, layers: int, channels_last: bool):
        self.feed, self.storage, self.layers = feed, storage, layers
        self.channels_last = channels_last  # storage rows are [h, w, C], else [C, h, w]

    @property
    def split(self):
        return self.feed.split

    @property
    def device(self) -> torch.device:
        return self.feed.device

    @property
    def nbytes(self) -> int:
        return self.storage.numel() * self.storage.element_size()

    def query_index(self, query: int) -> int:
        return self.feed.query_index(query)

    def batches(self, groups: Iterable[Sequence[int]]) -> Iterator[torch.Tensor]:
        """For each group of indices, its rows [G, C, h, w] (channels-last where the feed is)."""
        for group in groups:
            index = to_device(torch.as_tensor(group, dtype=torch.long), self.device)
            rows = self.storage.index_select(0, index)
            yield rows.permute(0, 3, 1, 2) if self.channels_last else rows

    def forward_of(self, model: nn.Module) -> FromLayer:
        """The part of `model` that runs on these features."""
        return FromLayer(model, self.layers)

    @classmethod
    def build(cls, model: nn.Module, feed: ImageFeed, *, budget: int, batch_size: int,
              precision: str, show_progress: bool = False) -> FrozenFeatures | None:
        """The frozen layers of `model` run once over the feed's split; None when `model` has
        no frozen layer or their output does not fit `budget` bytes."""
        layers = frozen_layers(model)
        if layers == 0 or budget <= 0:
            return None
        trunk = model.encoder[:layers].eval()  # frozen: BatchNorm on its statistics
        count = len(feed.split.all_paths)
        channels_last = feed.memory_format == torch.channels_last
        shape, dtype = _output_shape(trunk, feed, precision)
        row = (shape[1], shape[2], shape[0]) if channels_last else shape
        needed = count * shape.numel() * dtype.itemsize
        if needed > budget:
            log.info("the frozen layers' output for %d %s images needs %.2f GB, over the "
                     "%.2f GB of --frozen-cache-gb: every step runs the whole encoder",
                     count, feed.split.split, needed / 1e9, budget / 1e9)
            return None
        storage = torch.empty((count, *row), dtype=dtype, device=feed.device)
        groups = chunks(range(count), batch_size)
        with torch.no_grad():
            batches = feed.batches(groups)
            for group, images in progress(zip(groups, batches), enabled=show_progress,
                                          total=len(groups), unit="batch",
                                          desc=f"frozen layers: {feed.split.split}"):
                with autocast(feed.device, precision):
                    out = trunk(images)
                rows = slice(int(group[0]), int(group[-1]) + 1)
                storage[rows] = out.permute(0, 2, 3, 1) if channels_last else out
        return cls(feed, storage, layers, channels_last)


def _output_shape(trunk: nn.Module, feed: ImageFeed, precision: str
                  ) -> tuple[torch.Size, torch.dtype]:
    """(C, h, w) and dtype of the trunk's output for one image of the feed's size."""
    probe = torch.zeros(1, 3, *feed.size, device=feed.device)
    probe = probe.contiguous(memory_format=feed.memory_format)
    with torch.no_grad(), autocast(feed.device, precision):
        out = trunk(probe)
    return out.shape[1:], out.dtype
