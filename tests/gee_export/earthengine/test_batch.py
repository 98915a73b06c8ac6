"""Batch exports against the double: tasks in waves under the queue limit, status submitting the
rest as tasks finish, failed tasks restarted, files pulled with their nodata tag and grid
checked, the same stack as a download."""
from __future__ import annotations

import json

import numpy as np
import pytest
import rasterio

from gee_export.common.grid import Cell
from gee_export.earthengine import batch
from gee_export.earthengine import recipe as R
from gee_export.stack import ExportDir
from tests.gee_export.earthengine.ee_double import QUEUE_FULL, EarthEngineDouble, calls, graph
from tests.gee_export.earthengine.test_runner import NO_WAIT, _run, _stack


@pytest.fixture
def outlines(demo_sources):
    return demo_sources / "outlines.gpkg"


def _gcs(tmp_path, double, outlines, **kw):
    return _run(tmp_path, double, outlines,
                options={"target": "gcs", "bucket": "my-bucket", **kw.pop("options", {})}, **kw)


def test_the_queue_limits_are_earth_engines():
    from tests.gee_export.earthengine import ee_double

    assert ee_double.QUEUE_LIMIT == 3000 and batch.MAX_QUEUED <= 3000


def test_tasks_go_in_waves_and_status_submits_the_rest(tmp_path, double, outlines, monkeypatch):
    """16 cells with room for 5 in the queue: 5 start; as tasks finish, `prep status` (here
    continue_queue) starts more; a rerun never starts a second task for a live cell."""
    monkeypatch.setattr(batch, "MAX_QUEUED", 5)
    exp = _gcs(tmp_path, double, outlines)
    assert len(double.tasks) == 5 and not double.pixel_calls
    _gcs(tmp_path, double, outlines)  # a rerun while all five are queued: nothing new
    assert len(double.tasks) == 5
    double.finish_tasks(list(double.tasks)[:3], out_dir=tmp_path)
    exp = ExportDir.open(exp.path)
    counts = batch.refresh_status(exp, double, NO_WAIT)
    assert counts == {"COMPLETED": 3, "READY": 2, "pending": 11}
    batch.continue_queue(exp, double, NO_WAIT, echo=lambda *a: None)
    assert len(double.tasks) == 8
    live = sum(1 for t in double.tasks.values() if t["state"] == "READY")
    assert live == 5


def test_a_full_queue_stops_submitting_without_failing(tmp_path, double, outlines, monkeypatch):
    """Other tasks of the project fill Earth Engine's queue: the service refuses the next
    start; the export says so and keeps what it started."""
    from tests.gee_export.earthengine import ee_double

    monkeypatch.setattr(ee_double, "QUEUE_LIMIT", 4)
    said = []
    exp = _gcs(tmp_path, double, outlines, echo=said.append)
    assert len(double.tasks) == 4
    assert any("task queue is full" in s and QUEUE_FULL.split(" (")[0] in s for s in said)
    assert sum(1 for c in exp.cells.values() if c.get("state") == "SUBMITTED") == 4


def test_failed_tasks_restart_and_pull_completes_the_export(tmp_path, double, outlines,
                                                             catalogue):
    exp = _gcs(tmp_path / "batch", double, outlines)
    n = len(exp.cells)
    first, second = list(double.tasks)[:2]
    double.finish_tasks(fail={first: "Earth Engine memory limit"}, out_dir=tmp_path)
    exp = ExportDir.open(exp.path)
    counts = batch.refresh_status(exp, double, NO_WAIT)
    assert counts["FAILED"] == 1 and counts["COMPLETED"] == n - 1
    failed = [c for c in exp.cells.values() if c["state"] == "FAILED"]
    assert failed[0]["error"] == "Earth Engine memory limit"
    _gcs(tmp_path / "batch", double, outlines)  # the rerun restarts exactly that one
    assert len(double.tasks) == n + 1
    exp = ExportDir.open(exp.path)
    assert batch.pull_cells(exp, double, echo=lambda *a: None) == n - 1
    assert not exp.manifest.get("complete")
    double.finish_tasks(out_dir=tmp_path)
    batch.pull_cells(exp, double, echo=lambda *a: None)
    assert exp.manifest["complete"]
    # The same stack as the download path.
    download = _stack(_run(tmp_path / "download", EarthEngineDouble(catalogue), outlines))
    np.testing.assert_array_equal(_stack(exp), download)


def test_task_files_are_cloud_optimized_with_nodata_tagged(tmp_path, double, outlines):
    exp = _gcs(tmp_path, double, outlines)
    opts = next(iter(double.tasks.values()))["task"].config["fileExportOptions"]
    assert opts["geoTiffOptions"] == {"cloudOptimized": True, "noData": {"floatValue": -9999.0}}
    double.finish_tasks(out_dir=tmp_path)
    path = next(iter(double.bucket.values()))
    with rasterio.open(path) as f:
        assert f.nodata == -9999.0 and f.count == len(R.EXPORT_BANDS)
        assert f.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert exp.cells


def test_a_task_without_its_crs_transform_writes_a_file_pull_refuses(tmp_path, double,
                                                                     outlines, monkeypatch):
    def no_transform(image, grid, cell, target, description, prefix, bucket=None, folder=None):
        import ee

        return ee.batch.Export.image.toCloudStorage(
            image=image, description=description, crs=grid.crs, scale=10,
            dimensions=f"{cell.width}x{cell.height}", bucket=bucket,
            fileNamePrefix=f"{prefix}/{cell.id}", fileFormat="GeoTIFF")

    monkeypatch.setattr(R, "export_task", no_transform)
    exp = _gcs(tmp_path, double, outlines)
    double.finish_tasks(out_dir=tmp_path)
    with pytest.raises(Exception, match=r"is not cell r\d{3}c\d{3}'s"):
        batch.pull_cells(ExportDir.open(exp.path), double, echo=lambda *a: None)


def test_the_task_graph_pins_each_cells_grid(ee_offline):
    from gee_export.common.grid import iter_cells
    from gee_export.regions import QILIAN

    grid, cell = QILIAN.grid, list(iter_cells(QILIAN.grid, 768))[3]
    t = R.export_task(ee_offline.Image(1), grid, cell, "gcs", "q-" + cell.id, "pre", bucket="b")
    rp = calls(graph(t.config["expression"]), "Image.reproject")[0].args
    tr = cell.transform(grid)
    assert rp["crsTransform"] == [tr.a, tr.b, tr.c, tr.d, tr.e, tr.f]
    assert rp["crs"].args["crs"] == "EPSG:32647"
    clip = calls(graph(t.config["expression"]), "Image.clipToBoundsAndScale")[0].args
    assert clip["geometry"].args["coordinates"] == [0, 0, cell.width, cell.height]
    d = R.export_task(ee_offline.Image(1), grid, cell, "drive", "x", "pre", folder="F")
    assert d.config["fileExportOptions"]["driveDestination"]["folder"] == "F"
    assert json.dumps(d.config["fileExportOptions"]["geoTiffOptions"])


def test_pull_from_a_folder_refuses_a_file_on_another_grid(tmp_path, double, outlines, cli):
    from affine import Affine

    from gee_export.common.cli import prep

    exp = _run(tmp_path, double, outlines, options={"target": "drive", "folder": "glaciers"})
    cell = Cell.from_dict(next(iter(exp.cells.values())))
    drive = tmp_path / "drive"
    drive.mkdir()
    data = np.zeros((len(R.EXPORT_BANDS), cell.height, cell.width), np.float32)
    for name, transform in (("shifted", cell.transform(exp.grid) * Affine.translation(1, 0)),
                            ("right", cell.transform(exp.grid))):
        with rasterio.open(drive / f"{cell.id}.tif", "w", driver="GTiff", width=cell.width,
                           height=cell.height, count=len(data), dtype="float32",
                           crs=exp.grid.crs, transform=transform) as f:
            f.write(data)
        res = cli(prep, ["pull", "--export", exp.path, "--from-dir", drive], ok=name == "right")
        if name == "shifted":
            assert res.exit_code == 1 and f"{cell.id}.tif: grid" in res.output
            assert "Traceback" not in res.output
        else:
            assert "pulled 1 cell(s)" in res.output
