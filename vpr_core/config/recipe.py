"""Which training recipe a config is (triplets, or place batches), and its checks that need no
data: a place-batched loss needs place data and a validation set; triplets need a database and
queries. The checks that need the data (P x K images, K images of each place) are in
`vpr_core.training.place_data`."""
from __future__ import annotations

from pathlib import Path

from ..data.places import place_layout
from ..errors import UserError


def is_place_data(root: Path) -> bool:
    """Whether `root` holds place data (GSV-Cities or MSLS), the layouts
    `vpr_core.data.datasets.open_places` reads."""
    return place_layout(root) is not None


def check_loss_fits_data(config) -> None:
    """Refuse a loss the data under --data-root cannot train (checked before the settings
    that apply to one loss only, so that the message names the cause)."""
    place_loss = config.loss != "triplet"
    place_data = is_place_data(config.data_root)
    if place_loss and not place_data:
        raise UserError(f"--loss {config.loss} needs place data (GSV-Cities or MSLS) under "
                        f"--data-root {config.data_root}; pass such a root or --loss triplet")
    if not place_loss and place_data:
        raise UserError(f"--loss triplet needs database images and queries, and "
                        f"{config.data_root} holds place data (GSV-Cities or MSLS); pass "
                        f"--loss multi-similarity, triplet-margin or contrastive")


def check_recipe(config) -> None:
    """Refuse, in one line each, a schedule triplets do not take and a place batch that
    cannot mine (`config` validated: loss and scheduler resolved)."""
    if config.loss == "triplet":
        if config.scheduler not in ("step", "constant"):
            raise UserError(f"--scheduler {config.scheduler} applies to place batches only; "
                            f"triplets take the reference's step (per epoch) or constant")
        if config.val_root is not None:
            raise UserError("--val-root applies to place data only (triplets validate on "
                            "--data-root's --val-split); leave it out")
        return
    if config.images_per_place < 2:
        raise UserError(f"--images-per-place {config.images_per_place} gives no positive pair "
                        f"in a batch; pass 2 or more (the field uses 4)")
    if config.val_root is None:
        raise UserError("place data has no validation split; pass --val-root DIR, a dataset "
                        "in the Pittsburgh or @UTM@ folder layout (e.g. Pitts30k), with "
                        "--val-split (default val)")
