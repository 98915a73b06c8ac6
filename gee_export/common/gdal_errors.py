"""GDAL's own error lines, kept instead of printed, and the one question asked of them: was the
disk full?

libtiff, under GDAL, prints a write failure straight to stderr ("_tiffWriteProc: No space left
on device.", several times) before GDAL raises an error that no longer says why ("TIFFAppend
ToStrip:Write error at scanline 0"). `keep_libtiff_errors` routes libtiff's messages into a
short list instead, so that a command can report the cause in its one line.
"""
from __future__ import annotations

import errno
import shutil
from collections import deque
from pathlib import Path

NO_SPACE_TEXTS = ("no space left on device", "not enough space on the disk")  # POSIX, Windows
_MESSAGES: deque[str] = deque(maxlen=50)
_HANDLER = None  # the ctypes callback, kept alive while libtiff holds it


def keep_libtiff_errors() -> bool:
    """Send libtiff's error messages to `recent_messages()` instead of stderr (once per
    process; forked workers inherit it). False where the libtiff that rasterio loaded
    cannot be found."""
    global _HANDLER
    if _HANDLER is not None:
        return True
    import ctypes
    import glob
    import os

    import rasterio  # noqa: F401  (loads GDAL and the libtiff it uses)

    libs = os.path.join(os.path.dirname(os.path.dirname(rasterio.__file__)), "rasterio.libs")
    paths = glob.glob(os.path.join(libs, "libtiff*.so*")) or ["libtiff.so.6", "libtiff.so.5"]
    for path in paths:
        try:
            lib = ctypes.CDLL(path)  # the already loaded library: same handle
            libc = ctypes.CDLL(None)
        except OSError:
            continue
        handler_type = ctypes.CFUNCTYPE(None, ctypes.c_char_p, ctypes.c_char_p,
                                        ctypes.c_void_p)

        def keep(module: bytes | None, fmt: bytes | None, args: int | None) -> None:
            buf = ctypes.create_string_buffer(512)
            if fmt:
                libc.vsnprintf(buf, len(buf), fmt, ctypes.c_void_p(args))
            _MESSAGES.append(f"{(module or b'').decode(errors='replace')}: "
                             f"{buf.value.decode(errors='replace')}")

        _HANDLER = handler_type(keep)
        lib.TIFFSetErrorHandler.restype = ctypes.c_void_p
        lib.TIFFSetErrorHandler(_HANDLER)
        return True
    return False


def recent_messages() -> list[str]:
    """libtiff's messages since the last `clear_messages()`, oldest first."""
    return list(_MESSAGES)


def clear_messages() -> None:
    _MESSAGES.clear()


def _chain(exc: BaseException | None):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def no_space_left(exc: BaseException, path: Path | None = None) -> bool:
    """Whether `exc` (a failed write) came from a full disk: ENOSPC anywhere in its chain, the
    words in its text or in libtiff's recent messages, or, for a GDAL error about writing
    `path`, a file system with no room left there."""
    texts = [str(e).lower() for e in _chain(exc)] + [m.lower() for m in _MESSAGES]
    if any(getattr(e, "errno", None) == errno.ENOSPC for e in _chain(exc)) or \
            any(t in text for text in texts for t in NO_SPACE_TEXTS):
        return True
    if path is None or not any(type(e).__module__.startswith("rasterio") for e in _chain(exc)):
        return False
    return disk_full(path)


def disk_full(path: Path) -> bool:
    """Whether libtiff said so since the messages were last cleared, or the file system
    holding `path` has less than 1 MiB left (GDAL may drop a failed write silently)."""
    if any(t in m.lower() for m in _MESSAGES for t in NO_SPACE_TEXTS):
        return True
    where = Path(path)
    while not where.exists() and where != where.parent:
        where = where.parent
    try:
        return shutil.disk_usage(where).free < 2 ** 20
    except OSError:
        return False
