"""One dataset interface behind both layouts: `open_split(root, split)` returns a `Split`."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..errors import UserError
from . import pittsburgh, utm_folder
from .images import check_images
from .split import Split


def detect_layout(root: Path) -> str:
    """'pittsburgh' when ROOT/datasets/*.mat exist, 'folder' when ROOT/images/ exists."""
    if not root.is_dir():
        raise UserError(f"data root {root} does not exist; fix --data-root")
    if any(pittsburgh.struct_dir(root).glob("*.mat")):
        return "pittsburgh"
    if (root / "images").is_dir():
        return "folder"
    raise UserError(
        f"no dataset under {root}: expected ROOT/datasets/<name>_<split>.mat (Pittsburgh layout) "
        f"or ROOT/images/<split>/{{database,queries}}/ (@UTM@ folder layout); fix --data-root")


def open_split(root, split: str, dataset: str | None = None, check: bool = True) -> Split:
    """Read one split of the dataset under `root`, in either layout.

    With `check`, every listed image must exist and have a readable header, and the split must
    have both database images and queries; a problem raises `UserError`.
    """
    root = Path(root).expanduser().absolute()
    layout = detect_layout(root)
    if layout == "pittsburgh":
        result = pittsburgh.read_split(root, split, dataset)
    else:
        result = utm_folder.read_split(root, split)
    if not check:
        return result
    where = f"{result.dataset} {result.split}"
    if result.num_database == 0:
        raise UserError(f"split '{where}' has no database images; fix the dataset or --split")
    if result.num_queries == 0:
        raise UserError(f"split '{where}' has no queries; fix the dataset or --split")
    sizes = check_images(result.database_paths, f"{where} database")
    sizes |= check_images(result.query_paths, f"{where} query")
    native = next(iter(sizes)) if len(sizes) == 1 else None
    return dataclasses.replace(result, native_size=native)


def resolve_image_size(split: Split, requested: tuple[int, int] | None) -> tuple[int, int]:
    """The (H, W) every image is brought to: `requested`, else the images' one native size."""
    if requested is not None:
        return tuple(requested)
    if split.native_size is None:
        raise UserError(
            f"the images of {split.dataset} {split.split} differ in size; pass --image-size HxW "
            f"to resize them to one size")
    return split.native_size
