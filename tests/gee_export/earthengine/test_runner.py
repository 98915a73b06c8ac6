"""The Earth Engine export end to end with only the network calls doubled: planning, image
inventory, DEM offset, computePixels with retries and cell splits, batch tasks, status, pull,
resume, and the credential messages."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from ee_double import FakeEarthEngine, pixel_values, write_batch_file
from shapely.geometry import box

from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import GlacierError
from gee_export.common.grid import Cell, iter_cells, region_from_lonlat
from gee_export.config import RecipeConfig
from gee_export.earthengine.recipe import EXPORT_BANDS, cell_grid
from gee_export.earthengine.runner import CellFetcher, classify_error, run_ee_export
from gee_export.stack import ExportDir

REGION = region_from_lonlat("testreg", (99.00, 38.00, 99.05, 38.04))
CELL = 128


class EEException(Exception):
    """Stands for ee.EEException: the runner must go by the message, as the client raises."""


def _lonlat_fc(boxes):
    return {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": box(*b).__geo_interface__,
         "properties": {"id": f"IMG{i}", "date": f"2018-07-{i + 1:02d}"}}
        for i, b in enumerate(boxes)]}


WHOLE = (98.9, 37.9, 99.1, 38.1)


def make_fake(s2_boxes=(WHOLE, WHOLE), glims=None) -> FakeEarthEngine:
    fake = FakeEarthEngine()
    fake.values = [
        (lambda t: "s2_in_window" in str(t),
         {"s1": _lonlat_fc([WHOLE]), "s2_in_window": 7, "s2": _lonlat_fc(s2_boxes)}),
        (lambda t: "GLIMS/current" in str(t), glims),
        (lambda t: "Image.reduceRegion" in str(t) and "percentile" not in str(t), -31.7),
    ]
    return fake


@pytest.fixture
def outlines(tmp_path):
    g = REGION.grid
    x, y = g.x0 + 1800, g.y0 - 1900  # one glacier near the middle
    path = tmp_path / "glaciers.gpkg"
    gpd.GeoDataFrame({"name": ["G"]}, geometry=[box(x, y - 700, x + 900, y)],
                     crs=g.crs).to_file(path)
    return path


def _run(ws, fake, outlines, **kw):
    kw.setdefault("fetcher_options", {"sleep": lambda s: None})
    return run_ee_export(ws, REGION, RecipeConfig(year=2018), client=fake,
                         outlines_path=outlines, cell_size=CELL, hma_asset="users/me/hma",
                         quiet=True, echo=lambda *a: None, **kw)


def _expected(grid, cells):
    """The stack the double's pixels should produce, on the full grid (NaN off the cells)."""
    out = np.full((len(BAND_NAMES), grid.height, grid.width), np.nan, np.float32)
    for c in cells:
        arr = pixel_values(cell_grid(grid, c), EXPORT_BANDS)
        out[:, c.row_off:c.row_off + c.height, c.col_off:c.col_off + c.width] = \
            np.stack([arr[b] for b in BAND_NAMES])
    return out


def _read_stack(exp: ExportDir):
    with rasterio.open(exp.vrt) as f:
        assert f.descriptions == BAND_NAMES
        return f.read(masked=False)


def test_download_export_end_to_end(tmp_path, ee_offline, outlines):
    fake = make_fake()
    exp = _run(tmp_path, fake, outlines)
    m = exp.manifest
    assert m["complete"] and m["source"] == "earthengine"
    cells = [Cell.from_dict(c) for c in exp.cells.values()]
    assert 0 < len(cells) < len(list(iter_cells(REGION.grid, CELL)))  # only near the glacier
    # One request per cell, each on exactly its cell's grid and with the 13 export bands.
    assert sorted(str(p["grid"]) for p in fake.pixel_calls) == \
        sorted(str(cell_grid(exp.grid, c)) for c in cells)
    assert all(p["bandIds"] == list(EXPORT_BANDS) for p in fake.pixel_calls)
    assert all(p["fileFormat"] == "NUMPY_NDARRAY" for p in fake.pixel_calls)
    # The stack on disk is what Earth Engine returned, cell by cell, in band-table order.
    got = _read_stack(exp)
    want = _expected(exp.grid, cells)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=0, atol=1e-6)
    # Recorded: images, per-cell coverage, DEM offset, mask loss over the glacier (1 of 4).
    assert m["images"]["s2_count"] == 2 and m["images"]["s2_scenes_in_window"] == 7
    assert [i for i, _ in m["images"]["s1_images"]] == ["IMG0"]
    assert m["dem"]["offset_m"] == -31.7 and m["dem"]["hma_asset"] == "users/me/hma"
    assert m["normalization"]["mode"] == "fixed"
    on_glacier = [c for c in exp.cells.values()
                  if c["glacier_pixels_masked"]["all_scenes"] is not None]
    assert on_glacier and all(c["glacier_pixels_masked"]["all_scenes"] == 0.25
                              for c in on_glacier)
    assert all(c["images"] == {"s1": 1, "s2": 2} for c in exp.cells.values())
    # The offset computation excluded the glaciers and the graph carries the HMA asset.
    off = [t for t in fake.value_calls if "Image.reduceRegion" in str(t)]
    assert off and "Image.paint" in str(off[0]) and "users/me/hma" in str(off[0])
    # A rerun does nothing: no request at all.
    n = len(fake.pixel_calls)
    _run(tmp_path, fake, outlines)
    assert len(fake.pixel_calls) == n


def test_nodata_from_earth_engine_becomes_nan(tmp_path, ee_offline, outlines):
    fake = make_fake()
    fake.nodata_x_below = REGION.grid.x0 + 1500
    exp = _run(tmp_path, fake, outlines)
    got = _read_stack(exp)
    cols = np.arange(REGION.grid.width) * 10 + REGION.grid.x0 + 5
    west = cols < REGION.grid.x0 + 1500
    stacked = got[:, :, west]
    assert np.isnan(stacked).all()
    assert not (got == -9999).any()


def test_memory_limit_splits_the_cell_and_reassembles_it(tmp_path, ee_offline, outlines):
    fake = make_fake()
    fake.pixel_errors = [[lambda g: g["dimensions"]["width"] == CELL,
                          EEException("User memory limit exceeded."), 1]]
    exp = _run(tmp_path, fake, outlines)
    split = [c for c in exp.cells.values() if c["requests"] > 1]
    assert len(split) == 1 and split[0]["requests"] == 2
    assert len(fake.pixel_calls) == len(exp.cells) + 2  # the failed request and two halves
    cells = [Cell.from_dict(c) for c in exp.cells.values()]
    np.testing.assert_allclose(_read_stack(exp), _expected(exp.grid, cells), atol=1e-6)


def test_quota_errors_back_off_and_retry(ee_offline):
    fake = make_fake()
    fake.pixel_errors = [[lambda g: True, EEException("Too Many Requests (HTTP 429)"), 3]]
    slept = []
    import random

    fetcher = CellFetcher(fake, ee_offline.Image(1), REGION.grid, EXPORT_BANDS,
                          sleep=slept.append, rng=random.Random(0))
    data, n = fetcher.fetch(Cell(0, 0, 0, 0, 64, 64))
    assert data.shape == (len(EXPORT_BANDS), 64, 64) and n == 1
    assert len(slept) == 3 and slept[0] < 2.0 <= slept[2] <= 8.0  # 2, 4, 8 s with jitter
    fake.pixel_errors = [[lambda g: True, EEException("Service unavailable"), 99]]
    with pytest.raises(GlacierError, match="gave up after retries"):
        CellFetcher(fake, ee_offline.Image(1), REGION.grid, EXPORT_BANDS, max_retries=2,
                    sleep=lambda s: None).fetch(Cell(0, 0, 0, 0, 64, 64))


def test_classify_error():
    assert classify_error(EEException("User memory limit exceeded.")) == "too_big"
    assert classify_error(EEException("Computation timed out.")) == "too_big"
    assert classify_error(EEException("Quota exceeded: too many concurrent")) == "transient"
    assert classify_error(ConnectionResetError("reset")) == "transient"
    assert classify_error(EEException("Image.load: Image asset 'x' not found.")) == "fatal"


def test_fatal_error_stops_names_the_cell_and_rerun_resumes(tmp_path, ee_offline, outlines):
    fake = make_fake()
    bad = {"n": 0}

    def second_cell(g):
        bad["n"] += 1
        return bad["n"] == 2

    fake.pixel_errors = [[second_cell, EEException(
        "Image.load: Image asset 'users/me/hma' not found (does not exist or caller does not "
        "have access)."), 1]]
    with pytest.raises(GlacierError, match=r"cell r\d{3}c\d{3} .*asset 'users/me/hma' not found"):
        _run(tmp_path, fake, outlines, workers=1)
    exp = ExportDir.open(tmp_path / "exports" / "testreg-2018")
    assert not exp.manifest.get("complete")
    states = [c["state"] for c in exp.cells.values()]
    assert states.count("failed") == 1 and states.count("done") == 1
    assert not list(exp.path.rglob("*.partial"))
    # The rerun only asks for the cells not on disk.
    before = len(fake.pixel_calls)
    exp = _run(tmp_path, fake, outlines)
    assert exp.manifest["complete"]
    assert len(fake.pixel_calls) - before == len(exp.cells) - 1


def test_cells_without_sentinel2_are_refused_with_the_l1c_hint(tmp_path, ee_offline, outlines):
    fake = make_fake(s2_boxes=[(98.9, 37.9, 99.02, 38.1)])  # covers only the western part
    with pytest.raises(GlacierError, match=r"0 S2 images.*r\d{3}c\d{3}.*--s2-level l1c"):
        _run(tmp_path, fake, outlines)
    assert not fake.pixel_calls


def test_glims_outlines_when_the_user_has_none(tmp_path, ee_offline):
    g = REGION.grid
    from pyproj import Transformer

    t = Transformer.from_crs(g.crs, "EPSG:4326", always_xy=True)
    x, y = g.x0 + 2000, g.y0 - 2000
    old = box(*t.transform_bounds(x, y - 900, x + 900, y))
    new = box(*t.transform_bounds(x, y - 500, x + 500, y))
    glims = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": geom.__geo_interface__,
         "properties": {"glac_id": "G0001", "src_date": d, "db_area": 0.5}}
        for geom, d in ((old, "2000-08-01"), (new, "2017-08-20"))]}
    fake = make_fake(glims=glims)
    exp = _run(tmp_path, fake, None)
    assert exp.manifest["outlines"] == {"file": "outlines.gpkg", "from": "GLIMS", "count": 1}
    kept = gpd.read_file(exp.path / "outlines.gpkg")
    assert list(kept["src_date"]) == ["2017-08-20"]


def test_batch_to_gcs_status_restart_and_pull(tmp_path, ee_offline, outlines, cli):
    from gee_export.earthengine.runner import pull_cells, refresh_status

    fake = make_fake()
    exp = _run(tmp_path, fake, outlines, target="gcs", bucket="my-bucket")
    n = len(exp.cells)
    assert len(fake.tasks) == n and not fake.pixel_calls and not exp.manifest.get("complete")
    opts = fake.tasks[0].config["fileExportOptions"]
    assert opts["cloudStorageDestination"]["bucket"] == "my-bucket"
    assert opts["cloudStorageDestination"]["filenamePrefix"].startswith(
        "glacier-exports/testreg-2018/r")
    # Rerun while tasks are alive: nothing new is started.
    _run(tmp_path, fake, outlines, target="gcs", bucket="my-bucket")
    assert len(fake.tasks) == n
    # One task failed: status sees it, the rerun restarts exactly that one.
    first, second = sorted(fake.task_states)[:2]
    fake.task_states[first] = "FAILED"
    fake.task_states[second] = "COMPLETED"
    exp = ExportDir.open(exp.path)
    counts = refresh_status(exp, fake)
    assert counts["FAILED"] == 1 and counts["COMPLETED"] == 1
    failed = [c for c in exp.cells.values() if c["state"] == "FAILED"]
    assert failed[0]["error"] == "Earth Engine memory limit"
    _run(tmp_path, fake, outlines, target="gcs", bucket="my-bucket")
    assert len(fake.tasks) == n + 1
    # Pull: only finished files come in; the export completes when the last one lands.
    exp = ExportDir.open(exp.path)
    grid = exp.grid
    cells = [Cell.from_dict(c) for c in exp.cells.values()]
    prefix = exp.manifest["batch"]["prefix"]
    for c in cells[:-1]:
        fake.blobs[f"{prefix}/{c.id}.tif"] = \
            lambda d, c=c: write_batch_file(d, grid, c, EXPORT_BANDS)
    assert pull_cells(exp, fake, echo=lambda *a: None) == n - 1
    assert not exp.manifest.get("complete")
    fake.blobs[f"{prefix}/{cells[-1].id}.tif"] = \
        lambda d: write_batch_file(d, grid, cells[-1], EXPORT_BANDS)
    pull_cells(exp, fake, echo=lambda *a: None)
    assert exp.manifest["complete"]
    np.testing.assert_allclose(_read_stack(exp), _expected(grid, cells), atol=1e-6)
    # prep status on a complete export needs no network.
    from gee_export.common.cli import prep

    res = cli(prep, ["status", "--export", exp.path])
    assert "complete" in res.output and f"done       {n}" in res.output


def test_pull_from_dir_rejects_a_file_on_another_grid(tmp_path, ee_offline, outlines, cli):
    from gee_export.common.cli import prep

    fake = make_fake()
    exp = _run(tmp_path, fake, outlines, target="drive", folder="glaciers")
    cell = Cell.from_dict(next(iter(exp.cells.values())))
    drive = tmp_path / "drive"
    drive.mkdir()
    shifted = cell.transform(exp.grid) * Affine.translation(1, 0)
    write_batch_file(drive / f"{cell.id}.tif", exp.grid, cell, EXPORT_BANDS, shifted)
    res = cli(prep, ["pull", "--export", exp.path, "--from-dir", drive], ok=False)
    assert res.exit_code == 1
    assert f"{cell.id}.tif: grid" in res.output and "Traceback" not in res.output
    write_batch_file(drive / f"{cell.id}.tif", exp.grid, cell, EXPORT_BANDS)
    res = cli(prep, ["pull", "--export", exp.path, "--from-dir", drive])
    assert "pulled 1 cell(s)" in res.output


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
    assert not (tmp_path / "ws" / "exports").exists()  # nothing half-made


def test_percentile_normalization_computed_on_earth_engine(tmp_path, ee_offline, outlines):
    fake = make_fake()
    stats = {f"{b}_p2": 0.1 * i for i, b in enumerate(BAND_NAMES)}
    stats |= {f"{b}_p98": 0.1 * i + 1.0 for i, b in enumerate(BAND_NAMES)}
    fake.values.insert(0, (lambda t: "Reducer.percentile" in str(t), stats))
    exp = run_ee_export(tmp_path, REGION, RecipeConfig(year=2018, norm_mode="percentile"),
                        client=fake, outlines_path=outlines, cell_size=CELL, quiet=True,
                        echo=lambda *a: None, fetcher_options={"sleep": lambda s: None})
    norm = exp.manifest["normalization"]
    assert norm["mode"] == "percentile" and norm["ranges"]["B2"] == [0.2, 1.2]
    pct = [t for t in fake.value_calls if "Reducer.percentile" in str(t)][0]
    assert "bestEffort" not in str(pct) and "'scale': 100.0" in str(pct)
    # The cells were computed with the recorded ranges: lo and hi - lo as constant images.
    from ee_double import calls, graph

    consts = [c.args["value"] for c in calls(graph(fake.pixel_calls[0]["expression"]),
                                            "Image.constant")]
    lo = [norm["ranges"][b][0] for b in BAND_NAMES]
    assert any(isinstance(v, list) and np.allclose(v, lo) for v in consts)
    assert any(isinstance(v, list) and np.allclose(v, [1.0] * len(BAND_NAMES)) for v in consts)
