"""The STAC source under the faults a network brings, against the STAC API double: 5xx and
timeouts retried with backoff, an expired signature renewed, a missing asset and a cell
without scenes named in one line, a killed export resumed cell by cell. Each test fails
when its handling is removed."""
from __future__ import annotations

import time
from copy import deepcopy
from pathlib import Path

import pytest

from tests.gee_export.stac_double import serve_demo
from tests.helpers import DEMO_TEST_SIZE, invoke

pytest.importorskip("pystac_client")
YEAR = 2022
QUICK = None  # NetConfig for the tests: short backoff and timeout, set in the fixture


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    double, demo = serve_demo(tmp_path_factory.mktemp("stac-faults"), YEAR, DEMO_TEST_SIZE,
                              ("pc",))
    yield double, demo
    double.close()


@pytest.fixture
def double(served):
    """The double with its faults cleared and its items restored after each test."""
    from gee_export.remote import assets
    from tests.gee_export.stac_double import Faults

    d, _ = served
    items = deepcopy(d.items)
    d.faults, d.log[:] = Faults(), []
    # new tokens, so new URLs: nothing comes from GDAL's HTTP cache of an earlier test
    d.valid_tokens.clear()
    assets._SIGNERS.clear()
    yield d
    d.items, d.faults = items, Faults()


def export(double, demo: Path, ws: Path, retries: int = 3, timeout_s: float = 30.0):
    """The library call the CLI makes, with a short backoff (and timeout) for the test."""
    from gee_export.config import RecipeConfig
    from gee_export.demo.scene import demo_region
    from gee_export.local_export import LocalOptions
    from gee_export.remote.client import NetConfig
    from gee_export.remote.export import StacOptions, run_stac_export
    from gee_export.remote.providers import resolve_provider

    stac = StacOptions(resolve_provider("planetary-computer", double.api("pc"), {}),
                       demo / "DEM_HMA.tif", NetConfig(retries, 0.01, timeout_s))
    return run_stac_export(ws, demo_region(DEMO_TEST_SIZE), RecipeConfig(
        YEAR, s2_max_scene_cloud=50.0), stac, demo / "outlines.gpkg",
        LocalOptions(cell_size=256, workers=1), quiet=True, echo=lambda _: None)


def searches(double) -> int:
    return sum(1 for m, p in double.log if p.endswith("/search"))


def test_search_5xx_is_retried_with_backoff(double, served, tmp_path):
    double.faults.search_503 = 2
    exp = export(double, served[1], tmp_path)
    assert exp.manifest["complete"] and double.faults.search_503 == 0


def test_search_timeout_is_retried(double, served, tmp_path):
    double.faults.search_delay = (1, 2.5)  # the first search answers after 2.5 s
    t = time.monotonic()
    exp = export(double, served[1], tmp_path, timeout_s=1.0)
    assert exp.manifest["complete"] and time.monotonic() - t < 20


def test_asset_5xx_is_retried(double, served, tmp_path):
    double.faults.asset_503 = 3
    exp = export(double, served[1], tmp_path)
    assert exp.manifest["complete"] and double.faults.asset_503 == 0


def test_expired_signature_is_renewed(double, served, tmp_path):
    double.faults.expire_after = 20  # mid-export, every token issued so far stops working
    exp = export(double, served[1], tmp_path)
    assert exp.manifest["complete"]
    assert sum(1 for _, p in double.log if "/sas/v1/token/" in p) >= 2


def test_a_service_that_stays_down_is_one_line(double, served, tmp_path):
    from gee_export.common.errors import ServiceError

    double.faults.search_503 = 10 ** 6
    with pytest.raises(ServiceError) as e:
        export(double, served[1], tmp_path)
    line = str(e.value)
    assert "\n" not in line and "sentinel-2-l2a" in line and "HTTP 503" in line, line
    assert searches(double) == 4  # the first try and 3 retries


def _error_line(res) -> str:
    """The failure's one line: the last of the output, after the plan (no traceback)."""
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    line = res.output.strip().splitlines()[-1]
    assert line.startswith("Error: "), res.output
    return line


def _cli_args(double, demo: Path, ws: Path, *more) -> list:
    return ["export", "--region", "demo", "--year", YEAR, "--demo-size", DEMO_TEST_SIZE,
            "--cell-size", 256, "--max-scene-cloud", 50, "--workers", 1, "--quiet",
            "--source", "stac", "--stac-api", double.api("pc"), "--hma-file",
            demo / "DEM_HMA.tif", "--outlines", demo / "outlines.gpkg", "--workspace", ws, *more]


def test_missing_asset_is_named_in_one_line(double, served, tmp_path):
    from gee_export.common.cli import prep

    item = next(it for it in double.items["pc"] if it["collection"] == "sentinel-2-l2a")
    del item["assets"]["B11"]
    res = invoke(prep, _cli_args(double, served[1], tmp_path), ok=False)
    line = _error_line(res)
    assert item["id"] in line and "'B11'" in line, line


def test_missing_asset_file_is_named_in_one_line(double, served, tmp_path):
    from gee_export.common.cli import prep

    item = next(it for it in double.items["pc"] if it["collection"] == "sentinel-1-rtc")
    item["assets"]["vh"]["href"] += ".gone"
    res = invoke(prep, _cli_args(double, served[1], tmp_path), ok=False)
    line = _error_line(res)
    assert "vh.tif.gone: not found" in line and "gave up" not in line, line


def test_cell_without_scenes_is_named_in_one_line(double, served, tmp_path):
    from gee_export.common.cli import prep

    res = invoke(prep, _cli_args(double, served[1], tmp_path, "--s2-window", "11-01", "12-01"),
                 ok=False)
    line = _error_line(res)
    assert line.startswith("Error: cell ") and "no sentinel-2-l2a item" in line, line
    assert "2022-11-01" in line


def test_bad_options_are_one_line(double, served, tmp_path):
    from gee_export.common.cli import prep

    base = _cli_args(double, served[1], tmp_path)
    for extra, words in ((["--cloud-mask", "cloudscore"], "--cloud-mask cloudscore"),
                         (["--stac-collection", "s3=x"], "--stac-collection s3")):
        res = invoke(prep, base + extra, ok=False)
        assert words in _error_line(res) and len(res.output.strip().splitlines()) == 1
    res = invoke(prep, ["export", "--region", "demo", "--year", YEAR, "--source", "stac",
                        "--workspace", tmp_path], ok=False)
    assert "--stac-provider" in _error_line(res)


def test_killed_export_resumes_cell_by_cell_on_the_scenes_it_found(double, served, tmp_path):
    from gee_export.common.errors import ServiceError
    from gee_export.common.layout import read_manifest

    double.faults.fail_after = 74  # of 82 reads: the asset host goes away during the cells
    with pytest.raises(ServiceError):
        export(double, served[1], tmp_path, retries=1)
    exp_dir = tmp_path / "exports" / f"demo-{YEAR}"
    done = {f.name: f.stat().st_mtime_ns for f in (exp_dir / "stack").glob("*.tif")}
    assert done, "the first run finished no cell: raise fail_after"
    planned = len(read_manifest(exp_dir, "export")["cells"])
    assert len(done) < planned
    double.faults.fail_after, before = None, searches(double)
    exp = export(double, served[1], tmp_path)
    assert exp.manifest["complete"]
    assert searches(double) == before  # the scenes the first run found, not a new search
    for name, mtime in done.items():  # finished cells kept, not made again
        assert (exp_dir / "stack" / name).stat().st_mtime_ns == mtime


def test_retries_back_off_exponentially_then_give_up_in_one_line():
    from gee_export.common.errors import ServiceError
    from gee_export.remote.client import NetConfig, Transient, with_retries

    waits, calls = [], []

    def flaky(attempt: int) -> str:
        calls.append(attempt)
        if attempt < 3:
            raise Transient("HTTP 503")
        return "ok"
    net = NetConfig(retries=3, backoff_s=1.0)
    assert with_retries(flaky, "x", net, sleep=waits.append) == "ok"
    assert waits == [1.0, 2.0, 4.0] and calls == [0, 1, 2, 3]
    with pytest.raises(ServiceError, match=r"^y: HTTP 503 \(gave up after 3 tries\)$"):
        with_retries(lambda a: flaky(0), "y", NetConfig(retries=2), sleep=waits.append)
