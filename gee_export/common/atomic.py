"""One mechanism for every output file: write under a temporary name, rename when complete.

A reader (a later stage, a rerun, QGIS) sees the previous file or the finished one, never a
half-written one; a failed write leaves nothing behind that a rerun could mistake for done.
Files are created with the process umask, like every other file the stages write.
"""
from __future__ import annotations

import errno
import json
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from .errors import GlacierError, WriteError
from .gdal_errors import no_space_left

PARTIAL_MARK = ".partial"
# Side files GDAL's GeoPackage (SQLite) driver may leave beside a database it was writing.
_SIDE_SUFFIXES = ("-journal", "-wal", "-shm", ".aux.xml")


def partial_path(path: Path) -> Path:
    """The hidden temporary name `path` is written under. It keeps the suffix, since GDAL
    chooses drivers by it, and carries the process id, so two writers never share one."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}{PARTIAL_MARK}{path.suffix}")


def is_partial(path: Path) -> bool:
    return Path(path).name.startswith(".") and PARTIAL_MARK in Path(path).name


def remove_partials(directory: Path) -> int:
    """Remove the temporary files (partial_path) a killed writer left anywhere under
    `directory`; how many. Call it holding the directory's lock, before writing: no live
    writer has a partial file there then. One that cannot be removed is left alone."""
    directory = Path(directory)
    if not directory.is_dir():
        return 0
    n = 0
    for p in directory.rglob(f".*{PARTIAL_MARK}*"):
        if p.is_file():  # the pattern is is_partial's
            try:
                p.unlink()
                n += 1
            except OSError:
                pass
    return n


def has_partials(directory: Path) -> bool:
    """Whether a killed writer left temporary files under `directory` (reads only)."""
    return any(p.is_file() for p in Path(directory).rglob(f".*{PARTIAL_MARK}*"))


def clean_partials(directory: Path, echo: Callable[[str], None]) -> int:
    """remove_partials, said in one line when there were any; how many."""
    n = remove_partials(directory)
    if n:
        echo(f"removed {n} unfinished file(s) an interrupted run left in {directory}")
    return n


def remove_file(path: Path) -> None:
    """Remove a file and any side file a driver left next to it."""
    path = Path(path)
    for p in [path] + [path.with_name(path.name + s) for s in _SIDE_SUFFIXES]:
        try:
            p.unlink()
        except FileNotFoundError:
            pass


def make_dirs(path: Path) -> Path:
    """mkdir -p, with a failure reported as one line naming the directory."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise write_error(path, e) from None
    return path


def write_error(path: Path, exc: BaseException) -> WriteError:
    """The one-line error for an output that could not be written."""
    code = getattr(exc, "errno", None) if isinstance(exc, OSError) else None  # not GDAL's
    reason = {errno.ENOSPC: "no space left on device", errno.EROFS: "read-only file system",
              errno.EACCES: "permission denied", errno.EPERM: "operation not permitted",
              errno.EDQUOT: "disk quota exceeded"}.get(code)
    if reason is None and no_space_left(exc, path):  # GDAL's errors carry no errno
        reason = "no space left on device"
    if reason is None:
        text = str(getattr(exc, "strerror", None) or exc).strip()
        reason = text.splitlines()[0] if text else type(exc).__name__
    err = WriteError(f"cannot write {path}: {reason}")
    err.errno = code
    return err


@contextmanager
def atomic_output(path: Path) -> Iterator[Path]:
    """Yield the temporary path to write `path` under; rename it over `path` when the block
    succeeds, remove it when the block fails. Keep the block to writing: an OSError inside it
    is reported as 'cannot write PATH: reason'."""
    path = Path(path)
    make_dirs(path.parent)
    tmp = partial_path(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException as e:
        remove_file(tmp)
        if (isinstance(e, OSError) or isinstance(e, Exception) and no_space_left(e, path)) \
                and not isinstance(e, GlacierError):
            raise write_error(path, e) from None
        raise


def write_bytes(path: Path, data: bytes) -> None:
    with atomic_output(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)


def write_text(path: Path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, default=json_default) + "\n")


def json_default(o: Any) -> Any:
    if hasattr(o, "item"):  # numpy scalars
        return o.item()
    if hasattr(o, "tolist"):  # numpy arrays
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serializable: {type(o).__name__}")


def as_stored(obj: Any) -> Any:
    """obj as it reads back from JSON (tuples become lists, numpy scalars numbers), so
    parameters can be compared with the ones an earlier run stored."""
    return json.loads(json.dumps(obj, default=json_default))
