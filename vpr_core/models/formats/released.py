"""What a recognised released checkpoint is, in this project's terms."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Released:
    """A released checkpoint: the model it holds and how its authors evaluate it.

    `state_dict` is in this project's keys (`encoder.*` for the backbone, `pool.*` for the
    aggregator), so that `build_model(arch, aggregator, **settings)` loads it strictly.
    `image_size`: the (H, W) the authors evaluate at (None: the images' own size).
    """

    family: str  # "cosplace", "eigenplaces", "mixvpr", "salad", "boq", "megaloc"
    arch: str  # a backbone of vpr_core.models.catalog.ARCHES
    aggregator: str  # an aggregator of vpr_core.models.catalog.AGGREGATORS
    settings: dict = field(default_factory=dict)  # the aggregator's settings
    state_dict: dict = field(default_factory=dict, repr=False)
    image_size: tuple[int, int] | None = None
    descriptor_dim: int = 0
