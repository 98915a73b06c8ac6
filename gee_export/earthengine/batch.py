"""Batch exports: one task per cell, at most MAX_QUEUED in Earth Engine's queue at a time,
their states (`prep status`, which also submits more as others finish), and `prep pull`.

Earth Engine queues at most 3000 tasks per project; a plan of 4000 cells is submitted in waves.
Each task writes a cloud-optimized GeoTIFF with -9999 tagged as nodata.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from gee_export.common.errors import InputError, ServiceError, StateError
from gee_export.common.grid import Cell, ExportGrid
from gee_export.common.layout import OUTLINES_FILE
from gee_export.common.outlines import OutlineRasterizer, read_outlines
from gee_export.config import Normalization, RecipeConfig
from gee_export.earthengine.client import Retry, TooBig, first_line
from gee_export.stack import ExportDir

if TYPE_CHECKING:
    import ee
    from rasterio.io import DatasetReader

    from gee_export.earthengine.client import EarthEngineClient

MAX_QUEUED = 2900  # of Earth Engine's 3000 queued tasks per project: room for the user's own
LIVE_STATES = ("SUBMITTED", "READY", "RUNNING")  # a task in the queue
RESTART_STATES = ("FAILED", "CANCELLED")  # a task to start again; COMPLETED awaits `prep pull`
QUEUE_FULL_TEXT = "too many tasks"  # what the service answers a start beyond its queue limit


def submit_tasks(exp: ExportDir, client: EarthEngineClient, image: ee.Image,
                 retry: Retry = Retry(), echo: Callable[[str], None] = print,
                 max_queued: int | None = None) -> int:
    """Start a task for each pending cell without a live one (failed or cancelled ones again),
    keeping at most `max_queued` in the queue; a rerun or `prep status` starts the rest."""
    from gee_export.earthengine.recipe import export_task

    batch = exp.manifest.setdefault("batch", _batch_record(exp))
    max_queued = MAX_QUEUED if max_queued is None else max_queued
    live = sum(1 for c in exp.cells.values() if c.get("state") in LIVE_STATES)
    waiting = [c for c in exp.pending() if not exp.cells[c.id].get("task_id")
               or exp.cells[c.id].get("state") in RESTART_STATES]
    started = 0
    for cell in waiting[:max(0, max_queued - live)]:
        task = export_task(image, exp.grid, cell, batch["target"], f"{exp.path.name}-{cell.id}",
                           batch["prefix"], batch["bucket"], batch["folder"])
        try:
            task_id = retry.call(f"starting the task of cell {cell.id}", client.start_task, task)
        except (ServiceError, TooBig) as e:
            if QUEUE_FULL_TEXT in str(e).lower():
                echo(f"Earth Engine's task queue is full ({first_line(e)}); `prep status` "
                     "submits the rest as tasks finish")
                break
            exp.save()
            raise ServiceError(f"{e}; tasks already started are recorded, rerun to continue"
                               ) from None
        exp.mark(cell, "SUBMITTED", save=False, task_id=task_id, target=batch["target"],
                 file=_destination(batch, cell))
        started += 1
    exp.save()
    left = len(waiting) - started
    echo(f"{started} task(s) started, {live + started} in Earth Engine's queue"
         + (f", {left} cell(s) waiting for room" if left else "")
         + "; `prep status` shows their states, `prep pull` brings finished cells into stack/")
    return started


def _batch_record(exp: ExportDir) -> dict:
    p = exp.manifest["parameters"]
    return {"target": p["target"], "bucket": p.get("bucket"), "folder": p.get("folder"),
            "prefix": f"glacier-exports/{exp.path.name}"}


def _destination(batch: dict, cell: Cell) -> str:
    if batch["target"] == "gcs":
        return f"gs://{batch['bucket']}/{batch['prefix']}/{cell.id}.tif"
    return f"Drive:{batch['folder']}/{cell.id}.tif"


def refresh_status(exp: ExportDir, client: EarthEngineClient, retry: Retry = Retry()
                   ) -> dict[str, int]:
    """Ask Earth Engine for the state of every recorded task; returns counts per state."""
    ids = {info["task_id"]: cid for cid, info in exp.cells.items()
           if info.get("task_id") and info.get("state") != "done"}
    id_list = list(ids)
    for i in range(0, len(id_list), 100):
        for st in retry.call("task status", client.task_status, id_list[i:i + 100]):
            cid = ids.get(st.get("id"))
            if cid is None:
                continue
            info = exp.cells[cid]
            info["state"] = st.get("state", "UNKNOWN")
            if st.get("error_message"):
                info["error"] = st["error_message"]
    exp.save()
    return state_counts(exp)


def continue_queue(exp: ExportDir, client: EarthEngineClient, retry: Retry = Retry(),
                   echo: Callable[[str], None] = print) -> int:
    """Submit the cells still waiting for room in the queue, with the image the export
    recorded (grid, recipe, HMA asset, DEM offset, normalization)."""
    from gee_export.earthengine.recipe import export_image_for

    m = exp.manifest
    cfg = RecipeConfig.from_dict(m["recipe"])
    image = export_image_for(exp.grid, cfg, m["parameters"].get("hma_asset"),
                             m["dem"]["offset_m"], Normalization.from_dict(m["normalization"]))
    return submit_tasks(exp, client, image, retry, echo)


def state_counts(exp: ExportDir) -> dict[str, int]:
    counts: dict[str, int] = {}
    for info in exp.cells.values():
        counts[info.get("state", "pending")] = counts.get(info.get("state", "pending"), 0) + 1
    return dict(sorted(counts.items()))


def pull_cells(exp: ExportDir, client: EarthEngineClient | None = None,
               from_dir: Path | None = None, echo: Callable[[str], None] = print) -> int:
    """Bring finished batch files into stack/: from Cloud Storage, or from a folder where the
    user put the files (Drive downloads). Each file is checked against its cell's grid."""
    from gee_export.earthengine.cells import land_cell

    batch = exp.manifest.get("batch") or {}
    if from_dir is None and batch.get("target") != "gcs":
        raise InputError(f"{exp.path}: not a Cloud Storage export; download the Drive folder "
                         f"{batch.get('folder')!r} and give it with --from-dir")
    raster = _glacier_raster(exp)
    pulled = 0
    with tempfile.TemporaryDirectory(dir=exp.path) as tmp:
        for cell in exp.pending():
            src = _fetched_file(exp, cell, client, from_dir, Path(tmp))
            if src is None:
                continue
            data = _read_cell_file(src, exp.grid, cell)
            glacier = raster.mask(cell.row_off, cell.col_off, cell.height, cell.width) \
                if raster else None
            land_cell(exp, cell, data, glacier, save=False, pulled_from=str(src)
                      if from_dir else _destination(batch, cell))
            pulled += 1
            if from_dir is None:
                src.unlink(missing_ok=True)
    exp.save()
    echo(f"pulled {pulled} cell(s); {len(exp.pending())} still missing")
    if not exp.pending():
        exp.finish()
        echo(f"export complete: {exp.path}")
    return pulled


def _glacier_raster(exp: ExportDir):
    outl = exp.path / OUTLINES_FILE
    if not outl.is_file():
        return None
    return OutlineRasterizer(read_outlines(outl, exp.grid.crs).geometries, exp.grid.transform)


def _fetched_file(exp: ExportDir, cell: Cell, client, from_dir: Path | None,
                  tmp: Path) -> Path | None:
    """The finished file of a cell, from the user's folder or downloaded; None if not there."""
    if from_dir is not None:
        src = Path(from_dir) / f"{cell.id}.tif"
        return src if src.is_file() else None
    batch = exp.manifest["batch"]
    src = tmp / f"{cell.id}.tif"
    return src if client.download_blob(batch["bucket"], f"{batch['prefix']}/{cell.id}.tif",
                                       src) else None


def _read_cell_file(src: Path, grid: ExportGrid, cell: Cell) -> np.ndarray:
    import rasterio

    from gee_export.earthengine.recipe import EXPORT_BANDS

    try:
        with rasterio.open(src) as f:
            check_cell_file(f, src, grid, cell, len(EXPORT_BANDS))
            return f.read(masked=False).astype(np.float32)
    except rasterio.errors.RasterioIOError as e:
        raise InputError(f"{src}: cannot be read as a GeoTIFF ({first_line(e)})") from None


def check_cell_file(f: DatasetReader, path: Path, grid: ExportGrid, cell: Cell, bands: int) -> None:
    from rasterio.crs import CRS

    want = cell.transform(grid)
    if f.count != bands:
        raise StateError(f"{path}: {f.count} bands, expected {bands} (11 stack + QA)")
    if (f.width, f.height) != (cell.width, cell.height):
        raise StateError(f"{path}: {f.width}x{f.height} px, expected cell {cell.id}'s "
                         f"{cell.width}x{cell.height}")
    if f.crs != CRS.from_user_input(grid.crs) or not f.transform.almost_equals(want, 1e-6):
        raise StateError(f"{path}: grid {f.crs} {tuple(f.transform)[:6]} is not cell "
                         f"{cell.id}'s {grid.crs} {tuple(want)[:6]}")
