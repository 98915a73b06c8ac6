"""`train predict` as a function: rank 0 decides, under the output's lock, whether to
predict, reuse or refuse; every rank streams its share of the probability raster; rank 0
writes the outlines, their styles and the catalog entry.
"""
from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from gee_export.common.grid import ExportGrid
from gee_export.common.layout import (
    OUTLINE_FILES,
    OUTLINES_FILE,
    PREDICTION_MANIFEST,
    PROBABILITY_TIF,
    read_manifest,
)
from gee_export.common.locks import output_lock
from gee_export.common.qml import write_prediction_styles
from gee_export.common.rasters import bounded_gdal_cache
from gee_export.common.stac import update_catalog
from gee_export.common.vectors import write_outline_files

from . import shares
from .config import PredictConfig
from .job import PredictJob, prediction_stage
from .outlines import outline_layers
from .probability import prepare, probability
from .shares import follow
from .streaming import STREAM_CACHE_MB, ModelFn

if TYPE_CHECKING:
    from gee_export.common.outlines import Outlines

Echo = Callable[[str], None]


def predict(checkpoint: Path, export_dir: Path, workspace: Path,
            cfg: PredictConfig = PredictConfig(), name: str | None = None, force: bool = False,
            quiet: bool = False, echo: Callable[[str], None] = print,
            model_fn: ModelFn | None = None, wait: bool = False,
            formats: tuple[str, ...] = ("gpkg",)) -> Path:
    """Probability GeoTIFF and glacier outlines (in `formats`, keys of OUTLINE_FILES) for
    one export; rerunning resumes. GDAL's block cache is capped: every block is read about
    once.

    Under torchrun (WORLD_SIZE > 1) the processes share the scene's rows (`row_shares`):
    rank 0 holds the output's lock and decides whether to predict, reuse or refuse; every
    rank streams its rows into a part of its own; rank 0 assembles the parts and writes the
    outlines. The result is the one-process result, bit for bit, where each process runs as
    many CPU threads as the one process (the thread count changes the order of the model's
    sums on the CPU).
    """
    from gee_export.common.layout import check_name
    from training.runtime import Processes, fast_matmul, resolve_device

    check_name(name, "--name", zone_part=True)  # a zoned prediction names its zones' so
    # Prediction exchanges only small decisions, on the CPU: gloo also beside GPUs.
    procs = Processes.start("gloo", shares.RANKS_TIMEOUT)
    procs.leave_at_exit()
    with ExitStack() as held, bounded_gdal_cache(STREAM_CACHE_MB):
        job, manifest, todo = follow(procs, lambda: _claimed(
            Path(checkpoint), Path(export_dir), Path(workspace), cfg, name, force, wait, echo,
            formats, held, procs.world))
        job.model_fn = model_fn
        if todo == "predict":
            held.enter_context(fast_matmul(resolve_device(cfg.device, procs.local_rank)))
            probability(job, manifest, quiet, echo, procs)
        # Only rank 0 goes on; no process waits for another. The process group stays for
        # the next prediction this process makes (a zoned export's parts, `train change`).
        if todo == "done" or not procs.main:
            return job.out
        write_outlines(job, manifest, echo, formats)
        write_prediction_styles(job.out, cfg.threshold)
    update_catalog(workspace, echo)
    return job.out


def _claimed(checkpoint: Path, export_dir: Path, workspace: Path, cfg: PredictConfig,
             name: str | None, force: bool, wait: bool, echo: Echo, formats: tuple[str, ...],
             held: ExitStack, world: int) -> tuple[PredictJob, dict | None, str]:
    """Rank 0's decision, under the output's lock (held by `held`): the job, its manifest and
    what is left to do: "predict", "outlines" (the probability raster is done) or "done"."""
    job = PredictJob.open(checkpoint, export_dir, workspace, cfg, name, None)
    held.enter_context(output_lock(job.out, wait, echo))
    manifest = job.claim(force, echo)
    if manifest is None:
        if all((job.out / OUTLINE_FILES[f]).is_file() for f in formats):
            return job, None, "done"
        echo(f"writing the outlines as {', '.join(formats)}")  # polygonized again
        return job, read_manifest(job.out / PREDICTION_MANIFEST, "prediction"), "outlines"
    if (job.out / PROBABILITY_TIF).is_file():
        return job, manifest, "outlines"
    prepare(job, manifest, echo, world)
    return job, manifest, "predict"


def write_outlines(job: PredictJob, manifest: dict, echo: Echo,
                   formats: tuple[str, ...] = ("gpkg",)) -> None:
    """glaciers.gpkg: the predicted glaciers and, where the export recorded an inventory,
    the predicted ice of each inventory glacier (by zones); glaciers.parquet: the
    predicted glaciers (`formats`). Completes the prediction's manifest."""
    echo("polygonizing")
    inventory = _inventory(job)
    layers, valid_km2 = outline_layers(job.out / PROBABILITY_TIF, job.cfg, inventory)
    write_outline_files(layers, job.out, formats)
    g = layers["glaciers"]
    prediction_stage(job.out).complete(
        manifest, glaciers=len(g), glacier_area_km2=float(g["area_km2"].sum()),
        glacier_area_planar_km2=float(g.geometry.area.sum() / 1e6),
        valid_area_km2=valid_km2, inventory_layer=inventory is not None)
    echo(f"prediction complete: {job.out} ({len(g)} glaciers, "
         f"{manifest['glacier_area_km2']:.2f} km^2)")


def _inventory(job: PredictJob) -> Outlines | None:
    """The inventory outlines the export recorded, in its CRS; None where it recorded none."""
    from gee_export.common.outlines import read_outlines

    path = job.export_dir / OUTLINES_FILE
    if not path.is_file():
        return None
    return read_outlines(path, ExportGrid.from_dict(job.export["grid"]).crs)
