"""`pq --pq-bytes M`: database descriptors stored as faiss product-quantisation codes.

The model is unchanged; its descriptors are cut into M sub-vectors, each replaced by the
index of its nearest of 2^b centroids (b = 8 bits, fewer when the training database has fewer
than 256 images), so a database image takes M * b / 8 bytes instead of 4 per dimension.
Queries stay exact and are compared with the codes (faiss `IndexPQ`, asymmetric distances).
The trained quantiser travels in the checkpoint (`compression_extra["pq_index"]`).
"""
from __future__ import annotations

import math

import faiss
import numpy as np
import torch

from ..errors import UserError

NAME = "pq"
CPU_ONLY = False
DEFAULTS: dict = {}
LABEL_KEYS = ("pq_bytes",)
MAX_BITS = 8


def validate(settings: dict, model) -> dict:
    count, dim = settings.get("pq_bytes"), model.output_dim
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise UserError(f"--pq-bytes must be a positive integer, got {count!r}")
    if count > dim or dim % count:
        raise UserError(f"--pq-bytes {count} must divide the descriptor's {dim} dimensions "
                        f"(one code per sub-vector); try {_divisors_near(dim, count)}")
    return {"pq_bytes": count}


def _divisors_near(dim: int, count: int) -> str:
    divisors = [d for d in range(1, min(dim, 4096) + 1) if dim % d == 0]
    nearest = sorted(divisors, key=lambda d: abs(d - count))[:3]
    return " or ".join(str(d) for d in sorted(nearest))


def bits_for(count: int) -> int:
    """Bits per code: 8, or fewer when there are fewer than 256 training vectors."""
    bits = min(MAX_BITS, int(math.floor(math.log2(max(count, 2)))))
    if bits < 1:
        raise UserError("product quantisation needs at least 2 training database images")
    return bits


def apply(model, settings: dict, context):
    """Train the quantiser on the training database's descriptors."""
    descriptors = context.training_descriptors(model, "pq: training")
    bits = bits_for(len(descriptors))
    index = faiss.IndexPQ(descriptors.shape[1], settings["pq_bytes"], bits)
    index.pq.cp.min_points_per_centroid = 1  # only decides whether faiss prints a warning
    index.train(np.ascontiguousarray(descriptors, dtype=np.float32))
    return model, {"pq_index": torch.from_numpy(faiss.serialize_index(index).copy()),
                   "pq_bits": torch.tensor(bits)}


def rebuild(model, settings: dict, state_dict: dict, extra: dict):
    return model  # the model is the original; the quantiser is in `extra`


def index_of(extra: dict) -> faiss.Index:
    """The trained, empty quantiser a checkpoint carries."""
    return faiss.deserialize_index(extra["pq_index"].numpy())


def code_bytes(settings: dict, extra: dict) -> float:
    """Bytes one database image takes."""
    return settings["pq_bytes"] * int(extra["pq_bits"]) / 8
