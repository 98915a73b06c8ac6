"""One writer per output directory.

A second command on the same output stops at once, naming the process that holds it (or waits
with --wait); commands on different outputs run side by side. The lock is an flock on a hidden
file beside the directory: the kernel releases it when its holder exits, however it exits, so
a lock left by a killed process is simply taken over. The holder removes the file when it is
done; a waiter that then wakes on the removed file sees that its inode is no longer the path's
and starts over on a new one, so two processes never hold "the" lock at once.

An flock belongs to the open file, which a forked child (a loader or pool worker) shares: a
child that outlived its killed parent would keep the lock. So every child closes the lock
files it inherited as soon as it is forked, and none reaches a program it executes.
"""
from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from .atomic import make_dirs, write_error
from .errors import BusyError


def lock_path(directory: Path) -> Path:
    directory = Path(directory)
    return directory.parent / f".{directory.name}.lock"


def _holder(fd: int) -> str:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        info = json.loads(os.read(fd, 4096).decode() or "{}")
    except (OSError, ValueError):
        info = {}
    if not info:
        return "another process"
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(info.get("since", 0)))
    return (f"process {info.get('pid')} on {info.get('host')} "
            f"(`{info.get('command', '?')}`, since {since})")


_HELD: set[int] = set()  # lock fds this process holds; closed in every forked child


def _close_inherited() -> None:
    for fd in _HELD:
        try:
            os.close(fd)
        except OSError:
            pass
    _HELD.clear()


os.register_at_fork(after_in_child=_close_inherited)


def _acquire(path: Path, directory: Path, wait: bool, echo: Callable[[str], None]) -> int:
    """An fd holding the flock on the file that is at `path` now."""
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except OSError as e:
            raise write_error(path, e) from None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                if not wait:
                    raise BusyError(f"{directory} is being written by {holder}; let it "
                                    "finish") from None
                echo(f"waiting for {holder} to finish with {directory}")
                fcntl.flock(fd, fcntl.LOCK_EX)
            try:
                current = os.stat(path).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fd).st_ino:
                return fd
        except BaseException:  # refused, interrupted: never keep the fd (and the lock)
            os.close(fd)
            raise
        os.close(fd)  # the holder removed that file as we waited on it: start over


@contextmanager
def output_lock(directory: Path, wait: bool = False,
                echo: Callable[[str], None] = print) -> Iterator[None]:
    """Hold the lock on `directory` for the block; BusyError if another process holds it."""
    path = lock_path(directory)
    make_dirs(path.parent)
    fd = _acquire(path, Path(directory), wait, echo)
    _HELD.add(fd)
    owner = os.getpid()
    try:
        info = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.time(),
                "command": " ".join([Path(sys.argv[0]).name] + sys.argv[1:])[:200]}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield
    finally:
        if os.getpid() == owner:  # not in a forked child, which closed its copy at fork
            _HELD.discard(fd)
            try:
                path.unlink()  # while still holding it; see the module's note
            except OSError:
                pass
            os.close(fd)
