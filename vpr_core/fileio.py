"""Atomic file writes: a reader sees the old file or the complete new one, never half of one."""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path


def _current_umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is fsynced and renamed onto `path`.

    On any exception the temporary file is removed and `path` is left untouched; an `OSError`
    (a full disk, a read-only folder) names `path`, not the temporary file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except OSError as error:
        raise OSError(error.errno, error.strerror or str(error), str(path)) from error
    finally:
        if tmp.exists():
            tmp.unlink()


def write_atomic(path: str | os.PathLike, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` and move the result onto `path` atomically."""
    with atomic_path(path) as tmp:
        write(tmp)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, data) -> Path:
    def write(tmp: Path) -> None:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_json_default) + "\n")

    return write_atomic(path, write)


def _json_default(value):
    # numpy scalars and paths appear in results and flags.
    if hasattr(value, "item"):
        return value.item()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def file_lock(path: str | os.PathLike) -> Iterator[None]:
    """An exclusive advisory lock on `path` (created if needed), held across processes."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def missing_ancestors(directory: str | os.PathLike) -> list[Path]:
    """The folders of `directory`'s path that do not exist yet, outermost first."""
    missing = []
    directory = Path(directory).absolute()
    while not directory.exists():
        missing.append(directory)
        if directory.parent == directory:
            break
        directory = directory.parent
    return missing[::-1]


def remove_created(folders: list[Path], files: tuple = ()) -> None:
    """Undo a failed step: remove `files`, then the `folders` it created, where empty.

    Folders are only removed when empty, so another process's results are never touched.
    """
    for file in files:
        Path(file).unlink(missing_ok=True)
    for folder in reversed(folders):
        try:
            folder.rmdir()
        except OSError:
            break


def sha256_of(path: Path) -> str:
    """The file's sha256, read once per process while the file stays the same (a study logs
    its source checkpoint with every variant)."""
    stat = Path(path).stat()
    return _sha256(str(Path(path).absolute()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=16)
def _sha256(path: str, mtime_ns: int, size: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
