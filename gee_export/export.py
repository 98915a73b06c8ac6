"""`prep export`: plan the cells of a region and run the recipe locally or on Earth Engine."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import GlacierError
from gee_export.common.grid import DEFAULT_CELL_SIZE, Cell, ExportGrid, Region, iter_cells
from gee_export.common.layout import (
    OUTLINES_FILE,
    SOURCES_DIR,
    file_sha256,
    product_name,
    read_manifest,
)
from gee_export.common.outlines import OutlineRasterizer, read_outlines
from gee_export.common.vectors import write_gpkg
from gee_export.config import Normalization, RecipeConfig
from gee_export.stack import ExportDir, write_cell_tif


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


def plan_cells(region: Region, outlines=None, buffer_m: float = 1000.0,
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
        raise GlacierError(f"no glacier outline lies within region {region.name} "
                           f"(grid bounds {tuple(round(v) for v in grid.bounds)} in {grid.crs}; "
                           f"outlines bounds {tuple(round(v) for v in outlines.total_bounds)})")
    return Plan(region, grid, keep, cell_size,
                outline_source or f"{len(outlines)} outlines buffered by {buffer_m:g} m")


def _progress(iterable, total, desc, quiet):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="cell", disable=quiet, leave=False)


def run_local_export(workspace: Path, region: Region, cfg: RecipeConfig, source_dir: Path,
                     outlines_path: Path | None = None, cell_size: int = DEFAULT_CELL_SIZE,
                     norm_from: Normalization | None = None, force: bool = False,
                     name: str | None = None, dem_source_map: bool = False,
                     quiet: bool = False, echo=print) -> ExportDir:
    """The recipe on local rasters: plan, DEM offset, (percentiles), then cell by cell."""
    from gee_export.local import LocalRecipe, LocalSources, OffsetHistogram, PercentileAccumulator

    sources = LocalSources.scan(source_dir)
    outlines_path = outlines_path or sources.outlines
    outlines = (read_outlines(outlines_path, region.crs).split_by_area(
        cfg.min_outline_area_km2)[0].frame if outlines_path else None)
    plan = plan_cells(region, outlines, cfg.outline_buffer_m, cell_size,
                      f"{outlines_path.name} buffered by {cfg.outline_buffer_m:g} m"
                      if outlines_path else "")
    glacier_mask = None
    if outlines is not None:
        raster = OutlineRasterizer(outlines.geometry.values, plan.grid.transform)
        glacier_mask = lambda c: raster.mask(c.row_off, c.col_off, c.height, c.width)  # noqa: E731
    recipe = LocalRecipe(sources, plan.grid, cfg, glacier_mask)
    parameters = {"region": region.name, "grid": plan.grid.to_dict(), "recipe": cfg.to_dict(),
                  "cell_size": cell_size, "source": "local",
                  "norm_from": norm_from.to_dict() if norm_from else None,
                  "inputs": {f.name: file_sha256(f, 1 << 22) for f in sources.all_files()}}
    exp = ExportDir.open_or_create(
        workspace, name or product_name(region.name, cfg.year), parameters,
        {"region": region.to_dict(), "year": cfg.year, "grid": plan.grid.to_dict(),
         "bands": list(BAND_NAMES), "synthetic": region.synthetic, "source": "local",
         "source_dir": str(source_dir), "plan": plan.summary(), "recipe": cfg.to_dict(),
         "images": recipe.report()}, force=force)
    if exp.manifest.get("complete"):
        echo(f"export {exp.path} is complete; nothing to do")
        return exp
    if outlines_path and not (exp.path / OUTLINES_FILE).is_file():
        _copy_outlines(outlines, exp.path / OUTLINES_FILE)
        exp.manifest["outlines"] = {"file": OUTLINES_FILE, "from": str(outlines_path),
                                    "sha256": file_sha256(outlines_path), "count": len(outlines)}
    exp.set_plan(plan.cells)
    echo(plan.describe())

    # Pass 1: one vertical offset between HMA and SRTM over the whole region.
    if "dem" not in exp.manifest:
        dem = {"hma_files": [f.name for f in sources.hma],
               "srtm_files": [f.name for f in sources.srtm], "datum": "EGM96 (SRTM)"}
        if sources.hma and sources.srtm:
            hist = OffsetHistogram()
            for c in _progress(plan.cells, len(plan.cells), "DEM offset", quiet):
                recipe.offset_sample(c, hist)
            if hist.n == 0:
                raise GlacierError("HMA and SRTM do not overlap off the glaciers: no offset")
            dem.update(offset_m=hist.median(), offset_pixels=hist.n,
                       offset_method="median of HMA - SRTM off glacier outlines")
        else:
            dem.update(offset_m=0.0, offset_pixels=0,
                       offset_method="none (one DEM source only)")
            if not sources.hma:
                echo("warning: no HMA DEM (DEM_HMA*.tif); elevation is SRTM alone")
        exp.manifest["dem"] = dem
        exp.save()
    offset = exp.manifest["dem"]["offset_m"]

    # Pass 2 (percentile mode only): region-wide band percentiles.
    def percentiles() -> Normalization:
        acc = PercentileAccumulator()
        for c in _progress(plan.cells, len(plan.cells), "percentiles", quiet):
            phys, _, _ = recipe.physical(c, offset)
            acc.add(phys)
        return acc.normalization(cfg.norm_percentiles)

    norm = ensure_normalization(exp, cfg, norm_from, percentiles)

    todo = exp.pending()
    for c in _progress(todo, len(todo), "cells", quiet):
        res = recipe.cell(c, offset, norm)
        if dem_source_map:
            write_cell_tif(exp.path / "dem_source" / f"{c.id}.tif", plan.grid, c,
                           res.dem_source[None].astype(np.float32), names=("dem_source",))
        write_cell_tif(exp.cell_file(c), plan.grid, c, res.stack)
        valid = np.isfinite(res.stack[0])
        exp.mark(c, "done", valid_fraction=round(float(valid.mean()), 4),
                 dem_fraction={"hma": round(float((res.dem_source == 1).mean()), 4),
                               "srtm": round(float((res.dem_source == 2).mean()), 4)},
                 glacier_pixels_masked=res.glacier_removed)
    exp.finish()
    echo(f"export complete: {exp.path} ({len(exp.cells)} cells, stack.vrt)")
    return exp


def ensure_normalization(exp: ExportDir, cfg: RecipeConfig, norm_from: Normalization | None,
                         percentiles) -> Normalization:
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


def _copy_outlines(outlines, dest: Path) -> None:
    write_gpkg(outlines, dest, "glaciers")


def demo_source_dir(workspace: Path, year: int, size: int) -> Path:
    from gee_export.demo import DEMO_SIZE

    return workspace / SOURCES_DIR / (f"demo-{year}" if size == DEMO_SIZE else
                                      f"demo{size}-{year}")


def load_norm_from(path: Path) -> Normalization:
    m = read_manifest(Path(path), "export")
    if "normalization" not in m:
        raise GlacierError(f"--norm-from {path}: that export has no normalization yet")
    return Normalization.from_dict(m["normalization"], str(path))
