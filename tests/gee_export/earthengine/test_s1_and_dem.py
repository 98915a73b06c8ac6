"""The recipe mistakes the demo's two Sentinel-1 scenes and its default orbit let through
(issue 31, item 7): the Sentinel-1 reducer on three scenes whose median is not their mean, the
orbit filter on the catalogue's own property spelling (`orbitProperties_pass`, ASCENDING or
DESCENDING, as COPERNICUS/S1_GRD spells it) with a filter that empties the collection refused,
and the DEM source codes pinned to the README's."""
from __future__ import annotations

import re
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio

from gee_export.common.errors import StateError
from gee_export.common.grid import Cell
from gee_export.config import DEM_SOURCE_HMA, DEM_SOURCE_NONE, DEM_SOURCE_SRTM
from gee_export.demo.scene import demo_region
from gee_export.earthengine import recipe as R
from gee_export.earthengine.client import Retry
from gee_export.earthengine.runner import EEOptions, run_ee_export
from gee_export.local import fuse_dem
from gee_export.local_export import LocalOptions, run_local_export
from tests.gee_export.earthengine.ee_double import EarthEngineDouble, demo_catalogue
from tests.gee_export.earthengine.test_equivalence import CFG, HMA, cell_stack, equivalent

README = Path(__file__).resolve().parents[3] / "README.md"
THIRD = "S1_2018-07-26_dB.tif"  # the third July scene: ascending, as the first (ee_double)
ASCENDING = replace(CFG, s1_orbit="ascending")


@pytest.fixture(scope="module")
def three_scenes(demo_sources, tmp_path_factory) -> Path:
    """The demo sources with a third Sentinel-1 scene: the first one 5 dB brighter, so that
    the three scenes' median is the second scene where their mean is not."""
    out = tmp_path_factory.mktemp("s1x3") / "sources"
    shutil.copytree(demo_sources, out)
    with rasterio.open(out / "S1_2018-07-08_dB.tif") as f:
        profile, data, names = f.profile, f.read(), f.descriptions
        nodata = f.nodata
    brighter = np.where(data == nodata, data, data + 5.0) if nodata is not None else data + 5.0
    with rasterio.open(out / THIRD, "w", **profile) as f:
        f.write(brighter)
        f.descriptions = names
    return out


def _local(sources: Path, root: Path, cfg, dem_map: bool = False):
    exp = run_local_export(root, demo_region(512), cfg, sources,
                           options=LocalOptions(cell_size=256, cloud_mask="cloudscore",
                                                workers=1, dem_source_map=dem_map),
                           quiet=True, echo=lambda *a: None)
    with rasterio.open(exp.vrt) as f:
        return f.read(), exp


@pytest.fixture(scope="module")
def three_local(three_scenes, tmp_path_factory):
    return _local(three_scenes, tmp_path_factory.mktemp("local3"), CFG, dem_map=True)


@pytest.fixture(scope="module")
def three_double(three_scenes, ee_offline, tmp_path_factory):
    cat = demo_catalogue(three_scenes, 2018, tmp_path_factory.mktemp("cat3"))
    return lambda: EarthEngineDouble(cat)


def test_the_fixture_scenes_have_a_median_that_is_not_their_mean(three_scenes):
    files = sorted(three_scenes.glob("S1_*.tif"))
    assert len(files) == 3
    stack = []
    for p in files:
        with rasterio.open(p) as f:
            a = f.read(1).astype(np.float64)
            stack.append(np.where(a == f.nodata, np.nan, a) if f.nodata is not None else a)
    stack = np.stack(stack)
    differ = np.abs(np.nanmedian(stack, 0) - np.nanmean(stack, 0)) > 0.1
    assert differ[np.isfinite(stack).all(0)].mean() > 0.9


def _mean_composite(aoi, cfg):
    return (R.s1_collection(aoi, cfg).map(lambda im: R.s1_masked(im, cfg)).mean()
            .rename(list(R.S1_BANDS)))


def _orbit_filter(prop: str, value):
    """s1_collection with its orbit filter written otherwise."""
    def collection(aoi, cfg):
        import ee

        coll = (ee.ImageCollection(R.S1_COLLECTION).filterBounds(aoi).filterDate(*cfg.s1_dates)
                .filter(ee.Filter.eq("instrumentMode", "IW"))
                .filter(ee.Filter.listContains("transmitterReceiverPolarisation", "VV"))
                .filter(ee.Filter.listContains("transmitterReceiverPolarisation", "VH"))
                .filter(ee.Filter.eq("resolution_meters", 10)))
        return coll.filter(ee.Filter.eq(prop, value(cfg)))
    return collection


S1_MISTAKES = {
    "a mean instead of the median": ("s1_composite", _mean_composite),
    "orbit value as --orbit spells it (lower case)": (
        "s1_collection", _orbit_filter("orbitProperties_pass", lambda cfg: cfg.s1_orbit)),
    "orbit on another property's name": (
        "s1_collection", _orbit_filter("orbitProperties_Pass", lambda cfg: "ASCENDING")),
}


@pytest.fixture(scope="module")
def ascending_local(three_scenes, tmp_path_factory):
    """The local export of the ascending scenes only (what --orbit ascending must keep)."""
    only = tmp_path_factory.mktemp("asc") / "sources"
    shutil.copytree(three_scenes, only)
    (only / "S1_2018-07-20_dB.tif").unlink()  # the one descending scene (ee_double)
    return _local(only, tmp_path_factory.mktemp("local-asc"), CFG)


@pytest.mark.parametrize("mistake", [None, *S1_MISTAKES])
def test_sentinel_1_of_three_scenes_and_one_orbit(mistake, three_local, ascending_local,
                                                  three_double, monkeypatch):
    """Both orbits, then --orbit ascending, against the local stack of the same scenes: equal
    with the recipe as it is, and each mistake breaks one of them (or is refused)."""
    import ee

    if mistake:
        monkeypatch.setattr(R, *S1_MISTAKES[mistake])
    results = []
    for (local, exp), cfg in ((three_local, CFG), (ascending_local, ASCENDING)):
        try:
            stack = cell_stack(three_double(), exp.manifest["dem"]["offset_m"], cfg)
        except (ee.EEException, TypeError):
            results.append(False)
            continue
        results.append(equivalent(stack, local))
    assert all(results) if mistake is None else not all(results), (mistake, results)


def test_an_orbit_that_leaves_no_scene_is_refused_naming_it(three_scenes, three_double,
                                                              tmp_path):
    """Only the descending scene lies in a window of 07-19 to 07-21: --orbit ascending keeps
    none, and the export says so instead of writing a stack without radar."""
    cfg = replace(ASCENDING, s1_window=("07-19", "07-21"))
    with pytest.raises(StateError, match=r"0 S1 images.*--orbit ascending kept none"):
        run_ee_export(tmp_path, demo_region(512), cfg,
                      EEOptions(cell_size=256, hma_asset=HMA, retry=Retry(sleep=lambda s: None)),
                      client=three_double(), outlines_path=three_scenes / "outlines.gpkg",
                      quiet=True, echo=lambda *a: None)
    assert not list(tmp_path.glob("exports/*/stack/*.tif"))


def test_dem_source_codes_are_the_readmes(three_local, three_double):
    """The README states the codes; the local path and the Earth Engine recipe write them."""
    text = " ".join(README.read_text().split())
    said = re.search(r"(\d) where HMA gave the height, (\d) where SRTM filled, (\d) where "
                     r"neither has data", text)
    assert said, "the README no longer states --dem-source-map's codes"
    assert tuple(map(int, said.groups())) == (DEM_SOURCE_HMA, DEM_SOURCE_SRTM, DEM_SOURCE_NONE)
    _, codes = fuse_dem(np.array([1.0, np.nan, np.nan]), np.array([2.0, 3.0, np.nan]), 0.0)
    assert codes.tolist() == [DEM_SOURCE_HMA, DEM_SOURCE_SRTM, DEM_SOURCE_NONE]
    _, exp = three_local
    grid = demo_region(512).grid
    local = np.zeros((grid.height, grid.width), np.float32)
    for p in (exp.path / "dem_source").glob("*.tif"):
        with rasterio.open(p) as f:
            col, row = (round(v) for v in ~grid.transform * (f.transform.c, f.transform.f))
            local[row:row + f.height, col:col + f.width] = f.read(1)
    assert {DEM_SOURCE_HMA, DEM_SOURCE_SRTM} <= set(np.unique(local).astype(int))
    cell = Cell(0, 0, 0, 0, grid.height, grid.width)
    arr = three_double().compute_pixels({
        "expression": R.dem_source(HMA).unmask(0), "fileFormat": "NUMPY_NDARRAY",
        "grid": R.cell_grid(grid, cell), "bandIds": ["dem_source"]})
    assert (arr["dem_source"] == local).mean() > 0.999
