"""Shared fixtures: a small demo workspace made once per test session through the CLI."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.helpers import DEMO_TEST_SIZE, invoke

os.environ.setdefault("MPLBACKEND", "Agg")
# `make test` runs two test processes on two cores: one thread each, or the OpenMP threads of
# torch in both processes spin against each other (measured: 4 min 11 s instead of 42 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")


REPO = Path(__file__).resolve().parents[1]
# What pytest itself makes beside the temporary directories (numbered session directories,
# their lock files and symlinks, the directories it is removing, xdist's per-worker ones).
_PYTEST_OWN = re.compile(r"(pytest-\d+|pytest-current|garbage-.*|popen-gw\d+|.*current|"
                         r".*\.lock)$")
_CACHES = {"__pycache__", ".pytest_cache", ".ruff_cache", ".coverage"}


def _entries(d: Path) -> set[str]:
    try:
        return set(os.listdir(d))
    except OSError:
        return set()


def _repo_files() -> set[str]:
    """The repository's top level and every file under tests/ (caches aside)."""
    out = {p for p in _entries(REPO) if p not in _CACHES and not p.startswith(".coverage")}
    for root, dirs, files in os.walk(REPO / "tests"):
        dirs[:] = [d for d in dirs if d not in _CACHES]
        out |= {os.path.relpath(os.path.join(root, f), REPO) for f in files}
    return out


@pytest.fixture(scope="session", autouse=True)
def writes_only_in_tmp(tmp_path_factory):
    """Every test writes only inside its temporary directory: at the end of the session the
    directories around the session's base temporary directory hold nothing new but pytest's
    own directories, and the repository (its top level and tests/) holds no new file. A
    product laid out one level too shallow (a prediction right in tmp_path, whose workspace
    is then two levels above it) puts its workspace's stac/ there and fails this."""
    # The directory that holds the session's (or, under xdist, the worker's) base directory:
    # where the workspace of a prediction made right in tmp_path lies.
    around = [tmp_path_factory.getbasetemp().parent]
    before = [_entries(d) for d in around]
    repo_before = _repo_files()
    yield
    strays = [str(d / name) for d, seen in zip(around, before)
              for name in sorted(_entries(d) - seen) if not _PYTEST_OWN.fullmatch(name)]
    strays += sorted(str(REPO / p) for p in _repo_files() - repo_before)
    assert not strays, f"tests wrote outside their temporary directories: {strays}"


@pytest.fixture
def cli():
    """Run a click command in-process; fails the test with its output on a non-zero exit."""
    return invoke


@pytest.fixture(scope="session")
def demo_export(tmp_path_factory):
    from gee_export.common.cli import prep

    ws = tmp_path_factory.mktemp("ws")
    invoke(prep, ["export", "--region", "demo", "--year", 2018, "--demo-size", DEMO_TEST_SIZE,
                  "--cell-size", 256, "--workspace", ws, "--quiet"])
    return ws, ws / "exports" / "demo-2018"


@pytest.fixture(scope="session")
def demo_tiles(demo_export):
    from gee_export.common.cli import prep

    ws, exp = demo_export
    invoke(prep, ["tile", "--export", exp, "--workspace", ws, "--size", 128, "--block-tiles", 1,
                  "--quiet"])
    return ws, ws / "tiles" / "demo-2018"


@pytest.fixture(scope="session")
def tiny_run(demo_tiles):
    """A tiny model trained briefly on the demo tiles: a real checkpoint for prediction."""
    from gee_export.common.cli import train

    ws, tiles = demo_tiles
    invoke(train, ["run", "--tiles", tiles, "--workspace", ws, "--preset", "tiny", "--epochs", 2,
                   "--lr", "2e-3", "--batch-size", 4, "--name", "tiny-fixture", "--quiet"])
    return ws, ws / "runs" / "tiny-fixture"


@pytest.fixture(scope="session")
def demo_years(demo_export):
    """The demo exported for 2019 and 2020 beside 2018: glaciers that change by known amounts."""
    from gee_export.common.cli import prep

    ws, _ = demo_export
    for year in (2019, 2020):
        invoke(prep, ["export", "--region", "demo", "--year", year, "--demo-size",
                      DEMO_TEST_SIZE, "--cell-size", 256, "--workspace", ws, "--quiet"])
    return ws, [ws / "exports" / f"demo-{y}" for y in (2018, 2019, 2020)]
