"""A compressed variant's checkpoint: what it records of the methods it went through, and what
follows from that (its search index, whether it runs on the CPU only)."""
from __future__ import annotations

import torch

from .methods import method


def compressed_checkpoint(model: torch.nn.Module, name: str, settings: dict, base,
                          extra: dict | None = None, previous: dict | None = None,
                          **fields) -> dict:
    """The checkpoint dict of a compressed variant of a model of `base` (a `ModelShape`):
    what `vpr_core.models.checkpoints.save_checkpoint` writes and `model_from_checkpoint` reads.

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
