"""Shared fixtures: a small demo workspace made once per test session through the CLI."""
from __future__ import annotations

import os

import pytest

from tests.helpers import DEMO_TEST_SIZE, invoke

os.environ.setdefault("MPLBACKEND", "Agg")
# `make test` runs two test processes on two cores: one thread each, or the OpenMP threads of
# torch in both processes spin against each other (measured: 4 min 11 s instead of 42 s).
os.environ.setdefault("OMP_NUM_THREADS", "1")


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
