"""The Pittsburgh layout: `ROOT/datasets/<name>_<split>.mat` dbStruct files.

Database images live at `ROOT/<dbImageFns[i]>` and queries at `ROOT/queries_real/<qImageFns[i]>`.
The dbStruct fields are read by position, as the reference does, so the real Pitts30k/250k
files open unchanged.
"""
from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
from scipy.io import loadmat
from scipy.io.matlab import MatReadError

from ..errors import UserError
from .paths import join_inside
from .split import Split

DBSTRUCT_FIELDS = ("whichSet", "dbImageFns", "utmDb", "qImageFns", "utmQ", "numImages",
                   "numQueries", "posDistThr", "posDistSqThr", "nonTrivPosDistSqThr")
QUERIES_DIR = "queries_real"
# What scipy.io.loadmat raises for a damaged or foreign file (tried on truncated, corrupted and
# non-MATLAB files): its MatReadError, and the OSError, ValueError, TypeError, IndexError or
# zlib.error of the reader that met the damage
MAT_READ_ERRORS = (MatReadError, OSError, EOFError, ValueError, TypeError, IndexError, zlib.error)
# The reference's `--split test250k` reads pitts250k_test.mat.
SPLIT_ALIASES = {"test250k": ("pitts250k", "test")}


def struct_dir(root: Path) -> Path:
    return root / "datasets"


def dataset_names(root: Path, split: str) -> list[str]:
    """Names `<name>` for which `ROOT/datasets/<name>_<split>.mat` exists."""
    suffix = f"_{split}.mat"
    return sorted(p.name[: -len(suffix)] for p in struct_dir(root).glob(f"*{suffix}"))


def resolve_name(root: Path, split: str, dataset: str | None) -> tuple[str, str]:
    """(dataset name, split) for a request; the name is found when only one is present."""
    if dataset == "pittsburgh":
        dataset = None  # the reference's --dataset choice: "the Pittsburgh .mat files"
    if split in SPLIT_ALIASES and dataset is None:
        return SPLIT_ALIASES[split]
    if dataset is not None:
        return dataset, split
    names = dataset_names(root, split)
    if not names:
        raise UserError(
            f"no '<name>_{split}.mat' in {struct_dir(root)}; fix --data-root or --split "
            f"(found: {_listing(struct_dir(root))})")
    if len(names) > 1:
        raise UserError(
            f"{struct_dir(root)} holds several datasets for split '{split}' ({', '.join(names)}); "
            f"pick one with --dataset")
    return names[0], split


def read_split(root: Path, split: str, dataset: str | None = None) -> Split:
    name, split = resolve_name(root, split, dataset)
    mat_path = struct_dir(root) / f"{name}_{split}.mat"
    if not mat_path.is_file():
        raise UserError(f"{mat_path} does not exist; fix --data-root, --dataset or --split")
    fields = _read_dbstruct(mat_path)
    source = str(mat_path)
    db_names = _cell_strings(fields[1], "dbImageFns", source)
    q_names = _cell_strings(fields[3], "qImageFns", source)
    db_utm = _utm(fields[2], len(db_names), "utmDb", source)
    q_utm = _utm(fields[4], len(q_names), "utmQ", source)
    num_db = _scalar(fields[5], "numImages", source)
    num_q = _scalar(fields[6], "numQueries", source)
    if int(num_db) != len(db_names) or int(num_q) != len(q_names):
        raise UserError(
            f"{source}: numImages={num_db} and numQueries={num_q} disagree with the "
            f"{len(db_names)} database and {len(q_names)} query file names; fix the .mat file")
    pos_dist_thr = _scalar(fields[7], "posDistThr", source)
    nontriv = _scalar(fields[9], "nonTrivPosDistSqThr", source)
    return Split(
        dataset=name,
        split=split,
        root=root,
        database_paths=tuple(join_inside(root, p, source) for p in db_names),
        query_paths=tuple(join_inside(root / QUERIES_DIR, p, source) for p in q_names),
        database_utm=db_utm,
        query_utm=q_utm,
        pos_dist_thr=float(pos_dist_thr),
        nontriv_pos_dist_sq_thr=float(nontriv),
    )


def _read_dbstruct(mat_path: Path) -> list:
    try:
        mat = loadmat(str(mat_path))
    except NotImplementedError as error:  # scipy's answer to a v7.3 file (HDF5)
        if "v7.3" not in str(error):
            raise
        raise UserError(f"{mat_path} is a MATLAB v7.3 file, which scipy does not read; save it "
                        f"again with save(..., '-v7')") from None
    except MAT_READ_ERRORS as error:
        raise UserError(
            f"{mat_path} cannot be read as a MATLAB file ({type(error).__name__}: {error}); "
            f"replace it with an intact copy") from None
    if "dbStruct" not in mat:
        raise UserError(f"{mat_path} has no 'dbStruct' variable; it is not a Pittsburgh "
                        f"dataset file")
    struct = mat["dbStruct"]
    try:
        fields = list(struct.item())
    except (ValueError, TypeError, AttributeError):
        raise UserError(f"{mat_path}: 'dbStruct' is not a single struct; it is not a Pittsburgh "
                        f"dataset file") from None
    if len(fields) < len(DBSTRUCT_FIELDS):
        missing = ", ".join(DBSTRUCT_FIELDS[len(fields):])
        raise UserError(f"{mat_path}: dbStruct has {len(fields)} fields, the field(s) {missing} "
                        f"are missing; regenerate the file with all {len(DBSTRUCT_FIELDS)} fields")
    return fields


def _cell_strings(value, name: str, source: str) -> list[str]:
    """A MATLAB cell array of strings (N x 1) as a Python list."""
    bad = UserError(f"{source}: field '{name}' is not a cell array of file names; "
                    f"fix the .mat file")
    array = np.asarray(value)
    if array.dtype != object:
        if array.size == 0:
            return []
        raise bad
    names = []
    for cell in array.ravel():
        cell = np.asarray(cell).ravel()
        if cell.size != 1 or not isinstance(cell[0], str):
            raise bad
        names.append(str(cell[0]))
    return names


def _utm(value, count: int, name: str, source: str) -> np.ndarray:
    array = np.asarray(value)
    if count == 0:
        return np.zeros((0, 2))
    if array.dtype.kind not in "fiu" or array.ndim != 2 or array.shape != (2, count):
        raise UserError(f"{source}: field '{name}' should be a 2x{count} numeric array of UTM "
                        f"coordinates, found {array.dtype} {array.shape}; fix the .mat file")
    return np.ascontiguousarray(array.T, dtype=np.float64)


def _scalar(value, name: str, source: str):
    array = np.asarray(value)
    if array.size != 1 or array.dtype.kind not in "fiu":
        raise UserError(f"{source}: field '{name}' should be a number; fix the .mat file")
    return array.item()


def _listing(directory: Path) -> str:
    if not directory.is_dir():
        return "the folder does not exist"
    names = sorted(p.name for p in directory.iterdir())
    return ", ".join(names[:8]) + (" ..." if len(names) > 8 else "") if names else "nothing"
