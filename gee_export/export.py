"""What both export paths share: the plan of cells, the normalization decision, the copied
outlines; `local_export` and `earthengine.runner` run the recipe."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import InputError
from gee_export.common.grid import DEFAULT_CELL_SIZE, Cell, ExportGrid, Region, iter_cells
from gee_export.common.layout import OUTLINES_FILE, SOURCES_DIR, TRUTH_OUTLINES_FILE, read_manifest
from gee_export.common.stage import DONE
from gee_export.common.vectors import write_gpkg
from gee_export.config import Normalization, RecipeConfig
from gee_export.stack import ExportDir

if TYPE_CHECKING:
    from geopandas import GeoDataFrame


class NoOutlinesHere(InputError):
    """No glacier outline lies in a region (or in one UTM zone of it)."""


# Earth Engine's documented default quotas per project (developers.google.com/earth-engine/
# guides/usage): 40 concurrent requests, 2 concurrent batch tasks on average, 3,000 queued tasks.
EE_CONCURRENT_REQUESTS, EE_CONCURRENT_TASKS, EE_QUEUED_TASKS = 40, 2, 3000
# Server time per 768 px cell of the recipe: an assumption (no account here to measure it);
# the estimate scales with it, so time a few cells of your own and scale.
ASSUMED_SECONDS_PER_CELL = 30.0


def earth_engine_estimate(cells: int, target: str, workers: int,
                          seconds_per_cell: float = ASSUMED_SECONDS_PER_CELL) -> dict:
    """Requests or batch tasks of an export of `cells` cells, against the queue, and hours at
    the documented default quotas, with the time per cell stated as the assumption it is."""
    if target == "download":
        in_flight = min(workers, EE_CONCURRENT_REQUESTS)
        hours = cells * seconds_per_cell / in_flight / 3600
        says = (f"Earth Engine: {cells} computePixels requests (one per cell; more where a "
                f"cell is split on a memory error), {in_flight} in flight (--workers; the "
                f"default quota allows {EE_CONCURRENT_REQUESTS}): about {hours:.1f} h at an "
                f"assumed {seconds_per_cell:g} s per cell")
        return {"requests": cells, "in_flight": in_flight, "hours": round(hours, 2),
                "assumed_seconds_per_cell": seconds_per_cell, "says": says}
    waves = -(-cells // EE_QUEUED_TASKS)
    hours = cells * seconds_per_cell / EE_CONCURRENT_TASKS / 3600
    says = (f"Earth Engine: {cells} batch tasks to {target}, {waves} wave(s) under the "
            f"{EE_QUEUED_TASKS}-task queue (`prep status` submits each next wave), "
            f"{EE_CONCURRENT_TASKS} running at a time (the default quota's average): about "
            f"{hours:.1f} h at an assumed {seconds_per_cell:g} s per cell")
    return {"tasks": cells, "queue_waves": waves, "concurrent_tasks": EE_CONCURRENT_TASKS,
            "hours": round(hours, 2), "assumed_seconds_per_cell": seconds_per_cell,
            "says": says}


@dataclass
class Plan:
    region: Region
    grid: ExportGrid
    cells: list[Cell]
    cell_size: int
    outline_source: str

    @property
    def pixels(self) -> int:
        return sum(c.width * c.height for c in self.cells)

    def summary(self) -> dict:
        bbox_px = self.grid.width * self.grid.height
        bytes_ = self.pixels * len(BAND_NAMES) * 4
        return {"region": self.region.name, "crs": self.grid.crs, "cells": len(self.cells),
                "cell_size_px": self.cell_size, "pixels": self.pixels,
                "bytes_float32": bytes_, "area_km2": self.pixels * self.grid.res ** 2 / 1e6,
                "bbox_area_km2": bbox_px * self.grid.res ** 2 / 1e6,
                "fraction_of_bbox": self.pixels / bbox_px, "outlines": self.outline_source}

    def describe(self) -> str:
        s = self.summary()
        return (f"plan for {s['region']} on {s['crs']} (10 m): {s['cells']} cells of up to "
                f"{s['cell_size_px']} px, {s['pixels'] / 1e6:.1f} Mpx, "
                f"{s['bytes_float32'] / 1e9:.2f} GB as 11 float32 bands, "
                f"{s['area_km2']:.0f} km^2 = {100 * s['fraction_of_bbox']:.1f} % of the "
                f"bounding box ({s['bbox_area_km2']:.0f} km^2); cells chosen by {s['outlines']}")


def plan_cells(region: Region, outlines: GeoDataFrame | None = None, buffer_m: float = 1000.0,
               cell_size: int = DEFAULT_CELL_SIZE, outline_source: str = "") -> Plan:
    """The grid cells within `buffer_m` of a glacier outline, or the whole box without outlines."""
    grid = region.grid
    cells = list(iter_cells(grid, cell_size))
    if outlines is None or len(outlines) == 0:
        return Plan(region, grid, cells, cell_size, outline_source or
                    "none given: the whole bounding box (give --outlines to export less)")
    import shapely
    from shapely.geometry import box

    geoms = shapely.buffer(np.asarray(outlines.geometry.values), buffer_m)
    tree = shapely.STRtree(geoms)
    keep = [c for c in cells if len(tree.query(box(*c.bounds(grid)))) > 0]
    if not keep:
        raise NoOutlinesHere(f"no glacier outline lies within region {region.name} "
                         f"(grid bounds {tuple(round(v) for v in grid.bounds)} in {grid.crs}; "
                         f"outlines bounds {tuple(round(v) for v in outlines.total_bounds)})")
    return Plan(region, grid, keep, cell_size,
                outline_source or f"{len(outlines)} outlines buffered by {buffer_m:g} m")


def open_for_work(job, workspace: Path, name: str, force: bool,
                  echo: Callable[[str], None]) -> tuple[ExportDir, bool]:
    """Under the export's lock, for either path's job: the export opened by the stage
    contract, and whether there is work to do; when there is, the job's record and plan are
    written and said, when not, only a season's note."""
    from gee_export.stack import season_note

    exp = job.open(Path(workspace), name, force, echo)
    if exp.decision.action == DONE:
        season_note(exp, echo)
        return exp, False
    job.record(exp)
    echo(job.plan.describe())
    return exp, True


def ensure_normalization(exp: ExportDir, cfg: RecipeConfig, norm_from: Normalization | None,
                         percentiles: Callable[[], dict[str, tuple[float, float]]]
                         ) -> Normalization:
    """The export's normalization, decided once and frozen in its manifest: another export's
    (--norm-from), region percentiles (`percentiles()`, only called in that mode) or fixed."""
    if "normalization" not in exp.manifest:
        if norm_from is not None:
            norm = norm_from
        elif cfg.norm_mode == "percentile":
            norm = percentiles()
        else:
            norm = Normalization.fixed()
        exp.manifest["normalization"] = norm.to_dict()
        exp.save()
    return Normalization.from_dict(exp.manifest["normalization"], str(exp.path))


def record_outlines(exp: ExportDir, outlines: GeoDataFrame | None, source: str,
                    **fields: Any) -> None:
    """Copy the outlines that chose the cells into the export (labels and evaluation default
    to them) and say where they came from."""
    if not (exp.path / OUTLINES_FILE).is_file():
        if (exp.manifest.get("region") or {}).get("zone"):  # a zone: the glaciers on its grid
            from shapely.geometry import box

            grid = ExportGrid.from_dict(exp.manifest["parameters"]["grid"])
            outlines = outlines[outlines.intersects(box(*grid.bounds))]
        write_gpkg(outlines, exp.path / OUTLINES_FILE, "glaciers")
        exp.manifest["outlines"] = {"file": OUTLINES_FILE, "from": source,
                                    "count": len(outlines), **fields}


def record_truth_outlines(exp: ExportDir, source_dir: Path) -> None:
    """A synthetic scene's true outlines of the export's own year, copied beside its stack so
    that any year can be scored against its own ice (`train evaluate --reference`)."""
    from gee_export.common.atomic import write_bytes
    from gee_export.common.layout import file_sha256

    src = Path(source_dir) / TRUTH_OUTLINES_FILE
    if not src.is_file() or (exp.path / TRUTH_OUTLINES_FILE).is_file():
        return
    write_bytes(exp.path / TRUTH_OUTLINES_FILE, src.read_bytes())
    exp.manifest["truth_outlines"] = {"file": TRUTH_OUTLINES_FILE, "year": exp.manifest.get(
        "year"), "synthetic": True, "sha256": file_sha256(src)}


def demo_source_dir(workspace: Path, year: int, size: int, seed: int | None = None) -> Path:
    from gee_export.demo.scene import DEMO_SEED, DEMO_SIZE, demo_region_name

    sized = "demo" if size == DEMO_SIZE else f"demo{size}"
    return workspace / SOURCES_DIR / f"{demo_region_name(seed or DEMO_SEED, sized)}-{year}"


def load_norm_from(path: Path) -> Normalization:
    m = read_manifest(Path(path), "export")
    if "normalization" not in m:
        raise InputError(f"--norm-from {path}: that export has no normalization yet")
    return Normalization.from_dict(m["normalization"], str(path))


def merge_zone_outlines(dest: Path, part_dirs: list[Path]) -> int:
    """The zones' recorded outlines as one file in EPSG:4326, each glacier once (one the
    zone line cuts lies on both grids): a zoned export's reference for evaluation and
    change. Returns the number of glaciers."""
    import geopandas as gpd
    import pandas as pd

    from gee_export.common.zoned import OUTPUT_CRS

    frames = [gpd.read_file(d / OUTLINES_FILE).to_crs(OUTPUT_CRS) for d in part_dirs
              if (d / OUTLINES_FILE).is_file()]
    if not frames:
        return 0
    merged = pd.concat(frames, ignore_index=True).drop_duplicates(subset="glacier_id")
    write_gpkg(gpd.GeoDataFrame(merged, crs=OUTPUT_CRS), dest / OUTLINES_FILE, "glaciers")
    return len(merged)
