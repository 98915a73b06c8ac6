"""Earth Engine's limits, each met by the double with the service's own text, and how the
export stays under them or recovers: requests over 48 MiB, payloads over 10 MiB, collections
over 5000 elements, timeouts and memory errors, quota errors, pixels over maxPixels; errors
classified by status, never by digits in the message."""
from __future__ import annotations

import random

import ee
import geopandas as gpd
import numpy as np
import pytest
from shapely.geometry import Point

from gee_export.common.errors import ServiceError
from gee_export.common.grid import Cell, coarse_cell, coarse_grid
from gee_export.config import DEM_OFFSET_SCALE_M, Normalization, RecipeConfig
from gee_export.demo.scene import demo_region
from gee_export.earthengine import recipe as R
from gee_export.earthengine import runner
from gee_export.earthengine.client import Retry, TooBig, classify_error
from gee_export.earthengine.recipe import export_image_for
from gee_export.earthengine.runner import CellFetcher, EEJob, EEOptions
from gee_export.export import plan_cells
from gee_export.regions import QILIAN
from tests.gee_export.earthengine.ee_double import (
    COLLECTION,
    MEMORY,
    PAYLOAD,
    QUOTA,
    TIMEOUT,
    TOO_BIG,
    EarthEngineDouble,
    Failure,
    glims_table,
    graph,
    raise_like_ee,
)
from tests.gee_export.earthengine.ee_evaluator import request_size

REGION = demo_region(512)
CFG = RecipeConfig(2018)
NO_WAIT = Retry(sleep=lambda s: None)


def _raised(status, message) -> Exception:
    try:
        raise_like_ee(status, message)
    except ee.EEException as e:
        return e


@pytest.mark.parametrize("status,message,kind", [
    (400, TOO_BIG.format(n=56623104), "too_big"),  # digits 503 and 500 inside: still a split
    (400, PAYLOAD, "too_big"),
    (400, COLLECTION, "too_big"),  # "5000 elements": not a 500
    (400, TIMEOUT, "too_big"),
    (400, MEMORY, "too_big"),
    (429, QUOTA, "transient"),
    (503, "The service is currently unavailable.", "transient"),
    (404, "Image.load: Image asset 'users/x/hma_5030' not found.", "fatal"),
    (400, "Image.select: Pattern 'B13' did not match any bands.", "fatal"),
])
def test_errors_are_classified_by_status_and_the_services_texts(status, message, kind):
    assert classify_error(_raised(status, message)) == kind


def test_without_a_status_digits_in_a_message_mean_nothing():
    assert classify_error(ee.EEException("Image.load: asset 'users/me/dem_429' not found")) \
        == "fatal"
    assert classify_error(ee.EEException("Too Many Requests")) == "transient"
    assert classify_error(ConnectionResetError("reset by peer")) == "transient"


def test_a_too_big_answer_is_not_retried_as_is():
    calls = []

    def too_big():
        calls.append(1)
        raise_like_ee(400, TOO_BIG.format(n=56623104))

    with pytest.raises(TooBig):
        NO_WAIT.call("cell r000c000", too_big)
    assert len(calls) == 1


def _cell_image(offset: float = -31.7):
    return export_image_for(REGION.grid, CFG, "users/test/hma", offset, Normalization.fixed())


def test_compute_pixels_over_48_mib_is_refused_and_the_cell_split(double, monkeypatch):
    grid, cell = REGION.grid, Cell(0, 0, 0, 0, 512, 512)
    params = {"expression": _cell_image(), "fileFormat": "NUMPY_NDARRAY",
              "grid": R.cell_grid(grid, cell), "bandIds": list(R.EXPORT_BANDS)}
    whole = double.compute_pixels(params)
    # The same request at a lower limit: refused with the service's text and status...
    monkeypatch.setattr("tests.gee_export.earthengine.ee_double.REQUEST_LIMIT", 4 * 2 ** 20)
    with pytest.raises(ee.EEException, match=r"Total request size \(\d+ bytes\) must be less "
                                             r"than or equal to 50331648 bytes\.") as e:
        double.compute_pixels(params)
    assert classify_error(e.value) == "too_big"
    # ... which the fetcher answers by splitting, here with its own check switched off.
    monkeypatch.setattr(runner, "REQUEST_LIMIT_BYTES", 2 ** 40)
    data, requests = CellFetcher(double, _cell_image(), grid, R.EXPORT_BANDS, NO_WAIT).fetch(cell)
    assert requests == 4
    # The quarters reassemble the cell. SRTM, in lon/lat, goes through GDAL's warper, whose
    # approximate transformer depends slightly on the region warped: elevations near the HMA
    # edge, where SRTM fills, move by under a metre (within the equivalence bar of 1e-4).
    want = np.stack([whole[b] for b in R.EXPORT_BANDS])
    np.testing.assert_allclose(data, want, rtol=0, atol=1e-4)
    assert np.array_equal(data[:10], want[:10])  # every band but elevation: identical


def test_the_fetcher_splits_before_sending_a_cell_over_the_limit():
    fetcher = CellFetcher(None, None, QILIAN.grid, R.EXPORT_BANDS)
    assert fetcher.request_bytes(Cell(0, 0, 0, 0, 2048, 2048)) > runner.REQUEST_LIMIT_BYTES
    assert fetcher.request_bytes(Cell(0, 0, 0, 0, 768, 768)) < runner.REQUEST_LIMIT_BYTES


def _many_outlines(region, n: int, vertices: int = 200) -> gpd.GeoDataFrame:
    """n glaciers of `vertices` jagged vertices (as digitized outlines are) over the region."""
    from shapely.geometry import Polygon

    rng = np.random.default_rng(0)
    g = region.grid
    xs = rng.uniform(g.x0, g.x0 + g.width * g.res, n)
    ys = rng.uniform(g.y0 - g.height * g.res, g.y0, n)
    a = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
    polys = []
    for x, y in zip(xs, ys):
        r = 300 + rng.uniform(-40, 40, vertices)
        polys.append(Polygon(np.c_[x + r * np.cos(a), y + r * np.sin(a)]))
    return gpd.GeoDataFrame(geometry=polys, crs=g.crs)


def test_payload_over_10_mib_is_refused_but_each_cell_ships_only_its_outlines(double):
    """2072 outlines of 200 vertices (the paper's Qilian inventory) in one request are about
    18 MiB; the DEM offset asks per cell, with the outlines near that cell."""
    from gee_export.common.grid import region_from_lonlat

    region = region_from_lonlat("wide", (97.0, 38.5, 99.0, 39.5), "EPSG:32647")
    outlines = _many_outlines(region, 2072)
    plan = plan_cells(region, outlines, 1000.0, 768)
    lattice = coarse_grid(plan.grid, DEM_OFFSET_SCALE_M)
    everything = R.dem_offset_histogram("users/test/hma", plan.grid, coarse_cell(
        plan.grid, plan.cells[0], DEM_OFFSET_SCALE_M), lattice,
        R.outlines_collection(outlines.geometry.values, plan.grid.crs))
    assert request_size(everything) > 10 * 2 ** 20
    with pytest.raises(ee.EEException, match="Request payload size exceeds the limit: "
                                             "10485760 bytes."):
        double.compute_value(everything)
    job = EEJob(double, region, CFG, outlines, "test", plan, EEOptions(hma_asset="x"))
    sizes = []
    for cell in plan.cells[::25]:
        c = coarse_cell(plan.grid, cell, DEM_OFFSET_SCALE_M)
        sizes.append(request_size(R.dem_offset_histogram(
            "users/test/hma", plan.grid, c, lattice, job._outlines_near(lattice, c))))
    assert max(sizes) < 2 ** 20  # per cell, well under a megabyte


def test_collections_over_5000_elements_come_in_pages(double):
    g = REGION.grid
    rng = np.random.default_rng(1)
    pts = rng.uniform(0, g.width * g.res, (12_000, 2))
    frame = gpd.GeoDataFrame({
        "glac_id": [f"G{i:05d}" for i in range(len(pts))], "anlys_id": range(len(pts)),
        "line_type": "glac_bound", "src_date": "2015-08-01", "db_area": 0.001},
        geometry=[Point(g.x0 + x, g.y0 - y).buffer(15, 2) for x, y in pts], crs=g.crs)
    double.catalogue.tables["GLIMS/current"] = glims_table(frame)
    try:
        with pytest.raises(ee.EEException, match="Collection query aborted after accumulating "
                                                 "over 5000 elements."):
            double.compute_value(R.glims_outlines(R.grid_rectangle(g)))
        got = runner.fetch_glims(double, REGION, 2018, NO_WAIT)
    finally:
        double.catalogue.tables.pop("GLIMS/current")
    assert len(got) == 12_000
    pages = [t for t in double.value_calls if "Collection.toList" in str(t)]
    assert len(pages) == 3


@pytest.mark.parametrize("message", [TIMEOUT, MEMORY])
def test_value_requests_too_big_for_the_service_are_split_and_added_up(double, message,
                                                                       demo_sources, catalogue):
    """A cell's DEM offset histogram that times out (or runs out of memory) comes back as the
    sum of its halves' histograms: the same counts."""
    from gee_export.common.outlines import read_outlines

    outlines = read_outlines(demo_sources / "outlines.gpkg", REGION.crs).frame
    plan = plan_cells(REGION, outlines, 1000.0, 256)
    options = EEOptions(hma_asset="users/test/hma", retry=NO_WAIT)
    want = EEJob(EarthEngineDouble(catalogue), REGION, CFG, outlines, "t", plan,
                 options)._offset_counts(plan.cells[0])
    double.failures = [Failure("value", lambda obj: True, 400, message)]
    got = EEJob(double, REGION, CFG, outlines, "t", plan, options)._offset_counts(plan.cells[0])
    assert len(double.value_calls) == 3 and want.sum() > 0
    # The halves hold the same pixels; SRTM (lon/lat) is warped per request, and GDAL scales
    # its kernel by the region warped, so a few values move by a bin: the median does not.
    assert got.sum() == want.sum()
    assert np.abs(np.cumsum(got) - np.cumsum(want)).max() <= 0.01 * want.sum()
    median = [int(np.searchsorted(np.cumsum(h), (h.sum() + 1) / 2)) for h in (got, want)]
    assert abs(median[0] - median[1]) <= 1


def test_quota_errors_are_retried_with_jittered_backoff(double):
    slept = []
    sizes = R.inventory_sizes(R.grid_rectangle(REGION.grid), CFG)
    want = double.compute_value(sizes)
    double.failures = [Failure("value", lambda obj: True, 429, QUOTA, times=2)]
    retry = Retry(sleep=slept.append, rng=random.Random(3))
    assert retry.call("image inventory", double.compute_value, sizes) == want
    assert len(slept) == 2 and 1 <= slept[0] <= 2 and 2 <= slept[1] <= 4


def test_region_wide_reductions_over_max_pixels_are_refused(double):
    """Over Qilian at 30 m a reduction meets the default maxPixels (1e7); the recipe reduces
    per cell, and says maxPixels explicitly."""
    aoi = R.grid_rectangle(QILIAN.grid)
    region_wide = R.srtm().reduceRegion(reducer=ee.Reducer.median(), geometry=aoi,
                                        crs=QILIAN.crs, crsTransform=R.offset_lattice(QILIAN.grid))
    with pytest.raises(ee.EEException, match=r"Image.reduceRegion: Too many pixels in the "
                                             r"region\. Found \d+, but maxPixels allows only "
                                             r"10000000\."):
        double.compute_value(region_wide)
    biggest = Cell(0, 0, 0, 0, 4096, 4096)  # prep export --cell-size at most 4096
    hist = R.band_histograms(R.srtm(), QILIAN.grid, biggest, {"elevation": (0.0, 9000.0)}, 16)
    assert biggest.width * biggest.height > 1e7 and "'maxPixels': 1000000000" in str(
        graph(hist))


def test_a_failing_region_step_is_one_line_naming_it(tmp_path, double, demo_sources):
    from gee_export.earthengine.runner import run_ee_export

    double.failures = [Failure("value", lambda obj: True, 403,
                               "Permission denied on asset 'users/test/hma'.")]
    with pytest.raises(ServiceError, match=r"^Earth Engine, image inventory: Permission denied "
                                           r"on asset 'users/test/hma'\.$"):
        run_ee_export(tmp_path, REGION, CFG, EEOptions(hma_asset="users/test/hma",
                                                       retry=NO_WAIT),
                      client=double, outlines_path=demo_sources / "outlines.gpkg", quiet=True,
                      echo=lambda *a: None)
