"""Checkpoints in the reference's format: reading safely, writing atomically, reading the model.

Layout: `<run>/checkpoints/{checkpoint.pth.tar, model_best.pth.tar, flags.json}`. The dict has
`epoch, state_dict, recalls, best_score, optimizer, parallel` (this project adds a few keys the
reference ignores). Loading never unpickles arbitrary objects: `weights_only=True` with an
allow-list of the numpy scalar types the released pretrained VGG16 file holds.
"""
from __future__ import annotations

import json
import pickle
import zipfile
from pathlib import Path

import numpy as np
import torch

from ..errors import UserError
from ..fileio import write_atomic

CHECKPOINT_DIR = "checkpoints"
LATEST_FILE = "checkpoint.pth.tar"
BEST_FILE = "model_best.pth.tar"
FLAGS_FILE = "flags.json"
CKPT_FILES = {"latest": LATEST_FILE, "best": BEST_FILE}  # `--ckpt`: what `--resume` reads
CKPT_CHOICES = tuple(CKPT_FILES)
RUN_FILES = (LATEST_FILE, BEST_FILE, FLAGS_FILE)  # what a run folder's checkpoints/ holds


def _allowed_numpy_globals() -> list:
    scalar = np._core.multiarray.scalar
    allowed = [scalar, (scalar, "numpy.core.multiarray.scalar"), np.dtype]
    # numpy 2 pickles a dtype's class too; older files name only numpy.dtype
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType"):
        if hasattr(np.dtypes, name):
            allowed.append(getattr(np.dtypes, name))
    return allowed


ALLOWED_GLOBALS = _allowed_numpy_globals()


def checkpoint_file(resume: Path, ckpt: str = CKPT_CHOICES[0]) -> Path:
    """The checkpoint file meant by `--resume` (a file, or a run directory) and `--ckpt`."""
    resume = Path(resume)
    if resume.is_file():
        return resume
    if not resume.exists():
        raise UserError(f"--resume {resume} does not exist; pass a checkpoint file or a run folder")
    if ckpt not in CKPT_CHOICES:
        raise UserError(f"--ckpt {ckpt!r} must be one of {', '.join(CKPT_CHOICES)}")
    name = CKPT_FILES[ckpt]
    # a run folder, its checkpoints/ folder, or the released zip's doubly nested folder
    for candidate in (resume / CHECKPOINT_DIR / name, resume / name,
                      resume / resume.name / CHECKPOINT_DIR / name):
        if candidate.is_file():
            return candidate
    raise UserError(f"no {name} in {resume / CHECKPOINT_DIR}; pass the run folder that holds "
                    f"checkpoints/{name}, or the file itself")


def load_checkpoint(path: Path) -> dict:
    """Read a checkpoint safely; returns it with `state_dict` keys free of `module.` prefixes."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        blocked = _blocked_global(error)
        if blocked is None:  # not a pickle at all (text, garbage)
            raise UserError(f"{path} is not a readable checkpoint (UnpicklingError); it may be "
                            f"truncated; pass an intact checkpoint.pth.tar") from None
        raise UserError(f"refused to load {path}: it holds the object {blocked}, which is "
                        f"outside the checkpoint allow-list (tensors, numbers, numpy scalars); "
                        f"re-save it as plain tensors") from None
    except (RuntimeError, EOFError, OSError, ValueError, zipfile.BadZipFile, KeyError,
            AttributeError, IndexError, TypeError) as error:
        raise UserError(f"{path} is not a readable checkpoint ({type(error).__name__}); it may be "
                        f"truncated; pass an intact checkpoint.pth.tar") from None
    if isinstance(checkpoint, dict) and "state_dict" not in checkpoint and checkpoint and all(
            isinstance(v, torch.Tensor) for v in checkpoint.values()):
        checkpoint = {"state_dict": checkpoint}  # a bare state_dict
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        raise UserError(f"{path} has no 'state_dict'; it is not a NetVLAD checkpoint")
    checkpoint["state_dict"] = strip_parallel_prefix(checkpoint["state_dict"])
    return checkpoint


def _blocked_global(error: Exception) -> str | None:
    """The 'module.name' torch's safe unpickler refused, from its message (None: none was)."""
    for line in str(error).splitlines():
        words = line.split()
        if "GLOBAL" in words and words.index("GLOBAL") + 1 < len(words):
            return words[words.index("GLOBAL") + 1]
    return None


def strip_parallel_prefix(state_dict: dict) -> dict:
    """Drop DataParallel's `module.`: `encoder.module.0.weight` -> `encoder.0.weight`."""
    out = {}
    for key, value in state_dict.items():
        parts = [part for part in key.split(".") if part != "module"]
        out[".".join(parts)] = value
    return out


def read_flags(checkpoint_path: Path) -> dict:
    """flags.json beside the checkpoint ({} when there is none; the released checkpoint may
    come without it). One that does not read as a JSON object is a `UserError`."""
    path = Path(checkpoint_path).parent / FLAGS_FILE
    try:
        flags = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as error:
        raise UserError(f"{path} cannot be read as JSON ({type(error).__name__}); repair it, "
                        f"or delete it to resume with the command line's flags only") from None
    if not isinstance(flags, dict):
        raise UserError(f"{path} does not hold a JSON object of flags; repair or delete it")
    return flags


def save_checkpoint(path: Path, checkpoint: dict) -> Path:
    """torch.save to a temporary name, then rename: never a half-written checkpoint."""
    return write_atomic(path, lambda tmp: torch.save(checkpoint, tmp))
