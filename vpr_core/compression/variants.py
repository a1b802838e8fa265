"""A compressed variant's checkpoint: what it records of the methods it went through, and what
follows from that (its search index, whether it runs on the CPU only)."""
from __future__ import annotations

from pathlib import Path

import torch

from ..errors import UserError
from ..models.catalog import ENCODER_DIMS
from ..models.place_model import build
from ..models.shape import ModelShape, check_shape
from .methods import METHODS, method


def compressed_checkpoint(model: torch.nn.Module, name: str, settings: dict, base,
                          extra: dict | None = None, previous: dict | None = None,
                          **fields) -> dict:
    """The checkpoint dict of a compressed variant of a model of `base` (a `ModelShape`):
    what `vpr_core.models.checkpoints.save_checkpoint` writes and `model_from_checkpoint` reads.

    `previous` is the record of the checkpoint that was compressed, when it was itself a
    compressed variant (prune, then quantize): it is rebuilt first.
    """
    record = {"method": name, "settings": dict(settings), "base": base.record()}
    if previous:
        record["previous"] = previous
    return {"epoch": 0, "state_dict": model.state_dict(), "compression": record,
            "compression_extra": dict(extra or {}), "arch": base.arch,
            "pooling": base.aggregator, "parallel": False, **fields}


def base_shape(record: dict, path: Path) -> ModelShape:
    """The model a compressed variant was made from (as its record says; the first variants
    wrote `pooling` and `num_clusters` where later ones write `aggregator` and `settings`)."""
    base = record.get("base") or {}
    if "aggregator" in base:
        return ModelShape.from_record(base, path)
    if base.get("arch") not in ENCODER_DIMS:
        raise UserError(f"{path} names a model this version does not know; evaluate it with "
                        f"the version that made it")
    clusters = base.get("num_clusters")
    return ModelShape.of(base["arch"], base.get("pooling", "netvlad"),
                         {"num_clusters": clusters} if clusters else {})


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


def descriptor_bytes(model: torch.nn.Module, checkpoint: dict) -> float:
    """Bytes one database image's descriptor takes: float32 values, or PQ codes."""
    for step in reversed(chain(checkpoint.get("compression"))):
        if step["method"] == "pq":
            from .pq import code_bytes

            return code_bytes(step["settings"], checkpoint["compression_extra"])
    return 4.0 * model.output_dim


def compressed_model(path: Path, checkpoint: dict, arch: str | None = None,
                     num_clusters: int | None = None) -> tuple[torch.nn.Module, ModelShape]:
    """The model of a compressed variant's checkpoint: the original architecture, reshaped by
    each method it went through, then its state dict. `arch` / `num_clusters`, when given,
    must agree with the checkpoint."""
    record = checkpoint["compression"]
    if any(step.get("method") not in METHODS for step in chain(record)):
        raise UserError(f"{path} names a compression this version does not know "
                        f"({record.get('method')!r}); evaluate it with the version that made it")
    shape = base_shape(record, path)
    check_shape(shape, arch, num_clusters, path)
    model = build(shape)
    for step in chain(record):  # a variant of a variant: its steps in order
        model = method(step["method"]).rebuild(model, step.get("settings") or {},
                                               checkpoint["state_dict"],
                                               checkpoint.get("compression_extra") or {})
    try:
        model.load_state_dict(checkpoint["state_dict"], strict=True)
    except RuntimeError as error:
        raise UserError(f"{path} does not fit the {record['method']} variant it says it is "
                        f"({str(error).splitlines()[-1][:160]}); it is damaged") from None
    return model, shape
