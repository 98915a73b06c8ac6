"""Worker processes that die with their parent.

A pool's workers block on a pipe to the parent; if the parent is killed (kill -9), nothing
tells them, and they would wait forever. On Linux each worker asks the kernel for SIGTERM when
its parent dies; elsewhere the pool's own shutdown is all there is.
"""
from __future__ import annotations

import ctypes
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Callable, Iterable, Iterator

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def die_with_parent() -> None:
    """Ask the kernel to send this process SIGTERM when its parent exits (Linux only)."""
    if not sys.platform.startswith("linux"):
        return
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def _init(initializer: Callable | None, args: tuple) -> None:
    die_with_parent()
    # The parent handles Ctrl-C; a worker that also raised KeyboardInterrupt would print a
    # traceback per process.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if initializer is not None:
        initializer(*args)


def process_pool(workers: int, initializer: Callable | None = None,
                 initargs: tuple = ()) -> ProcessPoolExecutor:
    """A process pool whose workers exit when this process does, however it exits."""
    return ProcessPoolExecutor(workers, initializer=_init, initargs=(initializer, initargs))


PROCESSES_PER_CPU = 4  # more processes than this per CPU only hold more memory


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_workers(requested: int | str | None, cap: int = 8) -> int:
    """'auto' (or None): the CPUs this process may use, at most `cap`; else the number given,
    within what the machine can run (check_processes)."""
    if requested in (None, "auto"):
        return max(1, min(cap, available_cpus()))
    return max(1, check_processes(int(requested)))


def check_processes(n: int, option: str = "--workers") -> int:
    """`n` worker processes, refused where they are more than PROCESSES_PER_CPU per CPU this
    process may use: each holds its own memory, and none of them would run any faster.

    Raises:
        InputError: naming `option` and the most it may be here.
    """
    from .errors import InputError

    most = PROCESSES_PER_CPU * available_cpus()
    if n > most:
        raise InputError(f"{option} {n}: more processes than this machine runs at once "
                         f"({available_cpus()} CPUs; at most {most}), each holding its own "
                         "memory")
    return n


class WorkerPool:
    """`workers` processes that each run `initializer(*initargs)` once, then any number of
    parallel maps; with one worker, everything runs in this process (`teardown()` after).
    Use as a context manager."""

    def __init__(self, workers: int, initializer: Callable | None = None,
                 initargs: tuple = (), teardown: Callable | None = None):
        self.workers = max(1, workers)
        self._init, self._args, self._teardown = initializer, initargs, teardown
        self._pool = None

    def __enter__(self) -> "WorkerPool":
        if self.workers > 1:
            self._pool = process_pool(self.workers, self._init, self._args)
        elif self._init is not None:
            self._init(*self._args)
        return self

    def __exit__(self, *exc) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
        elif self._teardown is not None:
            self._teardown()

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        """Yield (item, fn(item)) as they finish. At most two items per worker are in flight,
        so results never pile up; after Ctrl-C or an error nothing new starts, and items
        already running finish before the pool closes."""
        if self._pool is None:
            for item in items:
                yield item, fn(item)
            return
        from concurrent.futures import FIRST_COMPLETED, wait

        todo = iter(items)
        in_flight: dict = {}
        try:
            while True:
                while len(in_flight) < 2 * self.workers and (item := next(todo, None)) is not None:
                    in_flight[self._pool.submit(fn, item)] = item
                if not in_flight:
                    return
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for f in done:
                    item = in_flight.pop(f)
                    yield item, f.result()
        finally:
            for f in in_flight:
                f.cancel()
