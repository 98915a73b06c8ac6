"""The cells on a Dask distributed cluster (`prep export --dask ADDRESS`): the same worker
functions as the local pool, each Dask worker set up once by a worker plugin. The workspace
must be on a file system every worker shares: workers write the cell files themselves.
"""
from __future__ import annotations

import threading
import uuid
from typing import Any, Callable, Iterable, Iterator

from gee_export.common.errors import InputError, ServiceError

try:
    from distributed.diagnostics.plugin import WorkerPlugin
except ImportError:  # without the stac extra: DaskPool says so when entered
    WorkerPlugin = object

CONNECT_TIMEOUT_S = 30
# One cell at a time per worker process: the recipe a worker builds keeps its datasets open,
# and GDAL datasets are not shared between threads. Start workers with --nthreads 1 and as
# many --nworkers as cores.
_ONE_AT_A_TIME = threading.Lock()


def _serialized(fn: Callable[[Any], Any], item: Any) -> Any:
    with _ONE_AT_A_TIME:
        return fn(item)


class _Setup(WorkerPlugin):
    """A worker plugin: init(*args) on each worker as it joins, teardown() as it leaves or
    the plugin is removed."""

    def __init__(self, init: Callable, args: tuple, teardown: Callable | None):
        self.init, self.args, self.end = init, args, teardown

    def setup(self, worker=None) -> None:
        self.init(*self.args)

    def teardown(self, worker=None) -> None:
        if self.end is not None:
            self.end()


class DaskPool:
    """WorkerPool's interface (workers, map, a context manager) over a Dask cluster."""

    def __init__(self, address: str, initializer: Callable, initargs: tuple = (),
                 teardown: Callable | None = None):
        self.address = address
        self._plugin = _Setup(initializer, initargs, teardown)
        self._name = f"glacier-export-{uuid.uuid4().hex[:8]}"
        self._client = None
        self.workers = 1

    def __enter__(self) -> "DaskPool":
        try:
            from distributed import Client
        except ImportError:
            raise InputError("--dask needs the stac extra: pip install -e \".[stac]\"") from None
        try:
            self._client = Client(self.address, timeout=CONNECT_TIMEOUT_S)
        except (OSError, TimeoutError) as e:
            raise ServiceError(f"--dask {self.address}: cannot reach the scheduler "
                               f"({str(e).splitlines()[0][:160]})") from None
        self._client.register_plugin(self._plugin, name=self._name)
        self.workers = max(1, len(self._client.scheduler_info()["workers"]))
        return self

    def __exit__(self, *exc) -> None:
        if self._client is not None:
            try:
                self._client.unregister_worker_plugin(self._name)
            finally:
                self._client.close()
                self._client = None

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any]) -> Iterator[tuple[Any, Any]]:
        """Yield (item, fn(item)) as they finish, at most two items per worker in flight;
        an error stops the map and cancels what is in flight."""
        from distributed import as_completed

        todo = iter(items)
        in_flight: dict = {}
        ac = as_completed()

        def submit() -> None:
            while len(in_flight) < 2 * self.workers and (item := next(todo, None)) is not None:
                f = self._client.submit(_serialized, fn, item, pure=False)
                in_flight[f] = item
                ac.add(f)
        try:
            submit()
            while in_flight:
                f = next(ac)
                item = in_flight.pop(f)
                yield item, f.result()
                submit()
        finally:
            for f in in_flight:
                f.cancel()
