"""Compressed variants of a trained model, each a method module with the same four functions.

A method module (`pca`, `prune`, `quantize`, `half`, `pq`) has:

- `validate(settings: dict, model: PlaceModel) -> dict`: the settings, checked against the
  model (a `UserError` for an amount outside (0, 1), a dimension too large, ...);
- `apply(model, settings, context: CompressionContext) -> (model, extra)`: the compressed
  model (an `nn.Module` from images [N, 3, H, W] to descriptors [N, D']) and `extra`, a dict
  of tensors the checkpoint keeps beside the state dict (e.g. a PQ codebook);
- `rebuild(model, settings, state_dict, extra) -> nn.Module`: a freshly built model of the
  original architecture, reshaped so that `load_state_dict(state_dict)` fits (a pruned
  encoder's widths, quantized modules, a whitening layer, a dtype);
- `CPU_ONLY`: True when the compressed model runs on the CPU only (int8).

A compressed checkpoint is an ordinary one (`epoch`, `state_dict`, `recalls`, ...) plus
`compression = {"method", "settings", "base": {"arch", "pooling", "num_clusters"}}` and
`compression_extra` (tensors); `vpr_core.loading.model_from_checkpoint` rebuilds it.
"""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..extraction import extract_descriptors
from ..image_feed import ImageFeed, chunks


@dataclass
class CompressionContext:
    """What a method may use besides the model.

    `train_feed` reads the training split's images (PCA descriptors, int8 calibration);
    `finetune(model, after_step)` trains `model` with the project's triplet loss, mining and
    validation for the requested fine-tuning epochs and returns it (unchanged when none were
    asked for); `after_step` runs after every optimiser step (a pruned model's zeros).
    """

    train_feed: ImageFeed
    device: torch.device
    batch_size: int
    precision: str
    seed: int
    finetune: Callable

    def calibration_batches(self, count: int) -> Iterator[torch.Tensor]:
        """Batches of up to `count` training database images spread evenly over the database
        (consecutive images often show one street), on the feed's device."""
        total = self.train_feed.split.num_database
        picked = np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(np.int64))
        return self.train_feed.batches(chunks(picked, self.batch_size))

    def training_descriptors(self, model, desc: str):
        """The descriptors `model` gives the training split's database images (numpy)."""
        feed = self.train_feed
        return extract_descriptors(model, feed, range(feed.split.num_database),
                                   batch_size=self.batch_size, precision=self.precision,
                                   desc=desc)


def method(name: str):
    """The module implementing method `name`."""
    from . import half, pca, pq, prune, quantize

    return {"pca-whiten": pca, "prune": prune, "quantize": quantize, "half": half,
            "pq": pq}[name]


def compressed_checkpoint(model: torch.nn.Module, name: str, settings: dict, base,
                          extra: dict | None = None, previous: dict | None = None,
                          **fields) -> dict:
    """The checkpoint dict of a compressed variant of a model of `base` (a `ModelShape`):
    what `vpr_core.checkpoints.save_checkpoint` writes and `model_from_checkpoint` reads.

    `previous` is the record of the checkpoint that was compressed, when it was itself a
    compressed variant (prune, then quantize): it is rebuilt first.
    """
    record = {"method": name, "settings": dict(settings),
              "base": {"arch": base.arch, "pooling": base.pooling,
                       "num_clusters": base.num_clusters}}
    if previous:
        record["previous"] = previous
    return {"epoch": 0, "state_dict": model.state_dict(), "compression": record,
            "compression_extra": dict(extra or {}), "arch": base.arch,
            "pooling": base.pooling, "parallel": False, **fields}


def chain(record: dict | None) -> list[dict]:
    """The methods a compressed checkpoint went through, first first."""
    steps = []
    while record:
        steps.insert(0, record)
        record = record.get("previous")
    return steps


def search_index(checkpoint: dict):
    """The compressed-database index (product quantisation) a checkpoint carries, or None."""
    if any(step["method"] == "pq" for step in chain(checkpoint.get("compression"))):
        from .pq import index_of

        return index_of(checkpoint["compression_extra"])
    return None


def cpu_only(checkpoint: dict) -> bool:
    """Whether the checkpoint's model runs on the CPU only (int8)."""
    return any(method(step["method"]).CPU_ONLY
               for step in chain(checkpoint.get("compression")))
