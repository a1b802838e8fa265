"""Decode once: the images of a split as one memory-mapped uint8 array under `--cache-dir`.

`cache/images/<dataset>_<split>_<HxW>_<root>_<fingerprint>.npy` holds every image of the split
(database first, then queries: `Split.all_paths`) decoded and resized, [N, H, W, 3] uint8, with
a `.json` beside it that says what it holds. `<root>` is a hash of the dataset's folder; the
fingerprint covers the list of paths and each file's size and modification time, so a changed
dataset gets a store of its own (and the old one is removed). The store is
built once under a file lock (a sweep's trials wait for the one that builds it), written to a
temporary name and renamed, and validated when opened (shape, count, fingerprint); a damaged
one is rebuilt. Every process on a node maps the same file, so the page cache holds it once.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from ..fileio import atomic_path, file_lock, missing_ancestors, remove_created, write_json_atomic
from . import Split

STORE_VERSION = 1
STORE_DIR = "images"
log = logging.getLogger(__name__)


def store_bytes(count: int, size: tuple[int, int]) -> int:
    """Bytes a store of `count` images of `size` (H, W) takes."""
    return count * size[0] * size[1] * 3


def fingerprint(paths: Sequence[str]) -> str:
    """sha256 of each path with its file's size and modification time."""
    digest = hashlib.sha256()
    for path in paths:
        stat = os.stat(path)
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


class ImageStore:
    """A read-only view of a built store: `read(indices)` -> uint8 [G, H, W, 3]."""

    def __init__(self, path: Path, array: np.ndarray):
        self.path = path
        self.array = array

    def read(self, indices: Sequence[int]) -> np.ndarray:
        return self.array[np.asarray(indices, dtype=np.int64)]  # fancy indexing copies

    @classmethod
    def open_or_build(cls, split: Split, size: tuple[int, int], cache_dir: Path,
                      budget_bytes: int, decode_all: Callable[[np.ndarray], None]
                      ) -> ImageStore | None:
        """The split's store, built with `decode_all(out)` when missing; None when it does not
        fit `budget_bytes` or the disk (then images are decoded from their files)."""
        size = tuple(size)
        needed = store_bytes(split.num_database + split.num_queries, size)
        if needed > budget_bytes:
            return None
        meta = {"version": STORE_VERSION, "dataset": split.dataset, "split": split.split,
                "size": list(size), "count": len(split.all_paths),
                "fingerprint": fingerprint(split.all_paths)}
        folder = Path(cache_dir) / STORE_DIR
        # one lock and one current store per (dataset root, split, size)
        root_tag = hashlib.sha256(str(split.root).encode()).hexdigest()[:8]
        stem = f"{split.dataset}_{split.split}_{size[0]}x{size[1]}_{root_tag}"
        path = folder / f"{stem}_{meta['fingerprint'][:16]}.npy"
        found = _open_valid(path, meta)
        if found is not None:
            return cls(path, found)
        created = missing_ancestors(folder)
        lock = folder / f"{stem}.lock"
        lock_is_new = not lock.exists()
        try:
            found = _build_once(path, lock, meta, needed, decode_all)
        except BaseException:  # an unreadable image, Ctrl-C: leave nothing of ours behind
            remove_created(created, (lock,) if lock_is_new else ())
            raise
        return cls(path, found) if found is not None else None


def _build_once(path: Path, lock: Path, meta: dict, needed: int,
                decode_all: Callable[[np.ndarray], None]) -> np.ndarray | None:
    """Build the store under `lock` unless another process did while we waited."""
    with file_lock(lock):
        found = _open_valid(path, meta)
        if found is not None:
            return found
        if shutil.disk_usage(path.parent).free < needed * 1.05:
            log.warning("not enough free disk in %s for a %.1f GB image store; decoding "
                        "images from their files", path.parent, needed / 1e9)
            return None
        _remove_stale(path)
        _build(path, meta, decode_all)
        return _open_valid(path, meta)


def _open_valid(path: Path, meta: dict) -> np.ndarray | None:
    """The mapped array when the store at `path` is complete and holds what `meta` says."""
    try:
        if json.loads(path.with_suffix(".json").read_text()) != meta:
            return None
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return None  # missing, truncated or foreign: build it (again)
    expected = (meta["count"], *meta["size"], 3)
    return array if array.shape == expected and array.dtype == np.uint8 else None


def _build(path: Path, meta: dict, decode_all: Callable[[np.ndarray], None]) -> None:
    shape = (meta["count"], *meta["size"], 3)
    with atomic_path(path) as tmp:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        decode_all(out)
        out.flush()
        del out
        write_json_atomic(path.with_suffix(".json"), meta)


def _remove_stale(keep: Path) -> None:
    """Stores of the same root, split and size whose images changed since they were built."""
    stem = keep.stem.rsplit("_", 1)[0]
    for old in keep.parent.glob(f"{stem}_*.npy"):
        if old != keep:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)
