"""Safe joining of dataset-relative paths: a dataset file cannot point outside its root."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import UserError


def join_inside(root: Path, relative: str, source: str) -> str:
    """`root / relative` as an absolute path, refusing absolute paths and `..` escapes.

    The check is lexical on purpose: symbolic links the user placed inside the root are
    the user's choice and are followed; a path string in a data file is not trusted.
    """
    relative = str(relative).strip()
    normal = os.path.normpath(relative.replace("\\", "/"))
    if not relative or os.path.isabs(relative) or normal == ".." or normal.startswith("../"):
        raise UserError(
            f"{source} lists the image path {relative!r}, which is outside the dataset root "
            f"{root}; fix the file so that every image path is relative to the root")
    return str(Path(root, normal).absolute())
