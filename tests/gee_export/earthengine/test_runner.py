"""The Earth Engine export end to end against the double: requests per cell, resume, outlines
from GLIMS, batch tasks in waves, status, pull, percentiles, and the credential messages."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from shapely.geometry import box

from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import GlacierError, ServiceError
from gee_export.common.grid import Cell
from gee_export.config import RecipeConfig
from gee_export.demo.scene import demo_region
from gee_export.earthengine import recipe as R
from gee_export.earthengine.client import Retry
from gee_export.earthengine.runner import EEOptions, run_ee_export
from gee_export.local_export import LocalOptions, run_local_export
from gee_export.stack import ExportDir
from tests.gee_export.earthengine.ee_double import MEMORY, QUOTA, EarthEngineDouble, Failure, glims_table

REGION = demo_region(512)
CFG = RecipeConfig(2018)
NO_WAIT = Retry(sleep=lambda s: None)


def _run(ws, client, outlines, **kw):
    options = EEOptions(**{"cell_size": 128, "hma_asset": "users/test/hma", "retry": NO_WAIT,
                           **kw.pop("options", {})})
    return run_ee_export(ws, kw.pop("region", REGION), kw.pop("cfg", CFG), options,
                         client=client, outlines_path=outlines, quiet=True,
                         echo=kw.pop("echo", lambda *a: None), **kw)


def _stack(exp: ExportDir) -> np.ndarray:
    with rasterio.open(exp.vrt) as f:
        assert f.descriptions == BAND_NAMES
        return f.read()


@pytest.fixture
def outlines(demo_sources):
    return demo_sources / "outlines.gpkg"


def test_one_request_per_cell_on_its_grid_and_a_rerun_sends_nothing(tmp_path, double, outlines):
    exp = _run(tmp_path, double, outlines)
    m = exp.manifest
    cells = [Cell.from_dict(c) for c in exp.cells.values()]
    assert m["complete"] and m["source"] == "earthengine" and len(cells) == 16
    assert sorted(str(p["grid"]) for p in double.pixel_calls) == \
        sorted(str(R.cell_grid(exp.grid, c)) for c in cells)
    assert all(p["bandIds"] == list(R.EXPORT_BANDS) for p in double.pixel_calls)
    # One DEM offset histogram per cell, each carrying only the outlines near its cell.
    offset_calls = [t for t in double.value_calls if "Reducer.fixedHistogram" in str(t)]
    assert len(offset_calls) == len(cells)
    assert m["dem"]["offset_m"] == pytest.approx(-31.7, abs=0.1)
    masked = [c["glacier_pixels_masked"]["all_scenes"] for c in exp.cells.values()]
    assert any(v is not None and 0 <= v < 1 for v in masked)
    n_pixels, n_values = len(double.pixel_calls), len(double.value_calls)
    left = exp.stack_dir / ".r000c001.4242.partial.tif"  # from a run killed with SIGKILL
    left.write_bytes(b"half a cell")
    said = []
    _run(tmp_path, double, outlines, echo=said.append)
    assert (len(double.pixel_calls), len(double.value_calls)) == (n_pixels, n_values)
    assert not left.exists() and said[0] == (f"removed 1 unfinished file(s) an interrupted run "
                                             f"left in {exp.path}")


def test_a_cell_out_of_memory_is_split_and_reassembled(tmp_path, double, outlines, catalogue):
    whole = _stack(_run(tmp_path / "whole", EarthEngineDouble(catalogue), outlines))
    double.failures = [Failure("pixels", lambda g: g["dimensions"]["width"] == 128, 400, MEMORY)]
    exp = _run(tmp_path / "split", double, outlines)
    split = [c for c in exp.cells.values() if c["requests"] > 1]
    assert len(split) == 1 and split[0]["requests"] == 2
    # Equal up to float32 rounding: the halves are resampled from another request origin
    # (the test double warps with GDAL, as Earth Engine would on its own grid), which moves
    # bilinear results in their last bits: 1e-5 of the normalized range is 9 cm of elevation.
    np.testing.assert_allclose(_stack(exp), whole, rtol=0, atol=1e-5, equal_nan=True)
    assert np.array_equal(np.isnan(_stack(exp)), np.isnan(whole))


def test_quota_errors_back_off_then_give_up_naming_the_cell(tmp_path, double, outlines):
    import random

    slept = []
    double.failures = [Failure("pixels", lambda g: True, 429, QUOTA, times=3)]
    retry = Retry(sleep=slept.append, rng=random.Random(0))
    _run(tmp_path / "a", double, outlines, options={"retry": retry, "workers": 1})
    assert len(slept) == 3 and slept[0] < 2.0 <= slept[2] <= 8.0  # 2, 4, 8 s with jitter
    double.failures = [Failure("pixels", lambda g: True, 503, "Service unavailable.", times=99)]
    with pytest.raises(ServiceError, match=r"Earth Engine, cell r\d{3}c\d{3}: gave up after "
                                           r"retries: Service unavailable"):
        _run(tmp_path / "b", double, outlines, options={"retry": Retry(
            max_retries=2, sleep=lambda s: None)})


def test_a_fatal_error_stops_names_the_cell_and_the_rerun_resumes(tmp_path, double, outlines):
    seen = {"n": 0}

    def second(g):
        seen["n"] += 1
        return seen["n"] == 2

    double.failures = [Failure("pixels", second, 404, "Image.load: Image asset 'users/test/"
                               "hma2' not found (does not exist or caller does not have access).")]
    with pytest.raises(GlacierError, match=r"cell r\d{3}c\d{3}: .*asset 'users/test/hma2' not "
                                           r"found.*rerun to resume"):
        _run(tmp_path, double, outlines, options={"workers": 1})
    exp = ExportDir.open(tmp_path / "exports" / "demo-2018")
    states = [c["state"] for c in exp.cells.values()]
    assert not exp.manifest.get("complete") and states.count("failed") == 1
    assert states.count("done") == 1 and not list(exp.path.rglob("*.partial*"))
    before = len(double.pixel_calls)
    exp = _run(tmp_path, double, outlines)
    assert exp.manifest["complete"]
    assert len(double.pixel_calls) - before == len(exp.cells) - 1


def test_cells_no_sentinel2_scene_covers_are_refused_with_the_l1c_hint(tmp_path, double):
    """Outlines east of the demo's images: the cells there have no scene."""
    from gee_export.common.grid import region_from_lonlat

    region = region_from_lonlat("wide", (97.69, 39.12, 98.05, 39.31), "EPSG:32647")
    far = tmp_path / "far.gpkg"
    g = REGION.grid
    gpd.GeoDataFrame(geometry=[box(g.x0 + 7000, g.y0 - 3000, g.x0 + 7500, g.y0 - 2500)],
                     crs=g.crs).to_file(far)
    with pytest.raises(GlacierError, match=r"0 S2 images.*r\d{3}c\d{3}.*--s2-level l1c"):
        _run(tmp_path, double, far, region=region)
    assert not double.pixel_calls


def test_glims_outlines_nearest_analysis_with_nunataks_cut_out(tmp_path, double):
    """Without --outlines, GLIMS: per glacier the analysis nearest the year, its internal rocks
    subtracted (they are not ice)."""
    from shapely.geometry import Polygon

    g = REGION.grid
    x, y = g.x0 + 2000, g.y0 - 2000
    old = box(x, y - 900, x + 900, y)
    new = box(x, y - 800, x + 800, y)
    rock = box(x + 300, y - 500, x + 500, y - 300)
    frame = gpd.GeoDataFrame({
        "glac_id": ["G1", "G1", "G1"], "anlys_id": [1, 2, 2],
        "line_type": ["glac_bound", "glac_bound", "intrnl_rock"],
        "src_date": ["2000-08-01", "2017-08-20", "2017-08-20"], "db_area": [0.8, 0.6, 0.0]},
        geometry=[old, new, rock], crs=g.crs)
    double.catalogue.tables["GLIMS/current"] = glims_table(frame)
    try:
        exp = _run(tmp_path, double, None)
    finally:
        double.catalogue.tables.pop("GLIMS/current")
    kept = gpd.read_file(exp.path / "outlines.gpkg").to_crs(g.crs)
    assert list(kept["src_date"]) == ["2017-08-20"]
    shape = kept.geometry.iloc[0]
    assert isinstance(shape, Polygon) and len(shape.interiors) == 1
    assert shape.area == pytest.approx(new.area - rock.area, rel=1e-3)


def test_percentile_normalization_equals_the_local_paths(tmp_path, double, outlines,
                                                         demo_sources):
    """Per-cell histograms at 10 m on Earth Engine add up to the local path's percentiles."""
    cfg = RecipeConfig(2018, norm_mode="percentile", s2_max_scene_cloud=20.0)
    local = run_local_export(tmp_path / "local", REGION, cfg, demo_sources,
                             options=LocalOptions(cell_size=256, cloud_mask="cloudscore",
                                                  workers=1), quiet=True, echo=lambda *a: None)
    ee = _run(tmp_path / "ee", double, outlines, cfg=cfg, options={"cell_size": 256})
    got, want = ee.manifest["normalization"], local.manifest["normalization"]
    assert got["mode"] == "percentile" and got["ranges"] == want["ranges"]
    requests = [t for t in double.value_calls if "Reducer.fixedHistogram" in str(t) and
                "'VV'" in str(t)]
    assert requests and all("EPSG:32647" in str(t) for t in requests)  # the grid's CRS


def _prep(args, tmp_path, env_extra=None):
    env = {k: v for k, v in os.environ.items()
           if k not in ("GOOGLE_APPLICATION_CREDENTIALS", "EE_PROJECT")}
    env.update(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path), **(env_extra or {}))
    exe = Path(sys.executable).with_name("prep")
    return subprocess.run([str(exe), *args], capture_output=True, text=True, env=env,
                          timeout=120)


def test_missing_login_and_project_give_one_clear_line(tmp_path):
    args = ["export", "--region", "qilian", "--year", "2018", "--workspace", str(tmp_path / "ws")]
    res = _prep(args, tmp_path)
    assert res.returncode == 1
    assert "--project" in res.stderr and "EE_PROJECT" in res.stderr
    res = _prep(args + ["--project", "my-project"], tmp_path)
    assert res.returncode == 1
    assert "earthengine authenticate" in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "ws" / "exports" / "qilian-2018").exists()  # nothing half-made
