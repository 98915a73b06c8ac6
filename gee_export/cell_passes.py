"""The three passes of an export over its cells, run in worker processes: the HMA - SRTM offset,
the region's percentiles and the cells themselves; and what the workers run. Shared by the
local and the STAC export jobs, which differ in their sources and parameters, not in this."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import StateError
from gee_export.common.grid import Cell, ExportGrid
from gee_export.common.layout import DEM_SOURCE_DIR, tif_name
from gee_export.common.rasters import bounded_gdal_cache
from gee_export.config import DEM_OFFSET_SCALE_M, DEM_SOURCE_HMA, DEM_SOURCE_SRTM, Normalization, RecipeConfig
from gee_export.local import LocalRecipe, LocalSources, OffsetHistogram, PercentileAccumulator
from gee_export.stack import ExportDir, write_cell_tif

CELLS_PER_TASK = 4  # neighbouring cells one worker does in a row (shared source blocks)
WORKER_CACHE_MB = 64  # GDAL block cache per worker: the source blocks a run of cells shares


class CellPasses:
    """The passes of an export job over its planned cells, on the worker pool its pool() made.
    The job holds `plan`, `cfg`, `options` (LocalOptions), `sources` and `_workers`, and says
    what its DEM record holds (dem_record())."""

    def _pool(self, fn, items: list):
        return self._workers.map(fn, items)

    def dem_offset(self, exp: ExportDir, quiet: bool, echo) -> float:
        """Pass 1, once: the vertical offset of HMA against SRTM, off the glaciers."""
        if "dem" not in exp.manifest:
            s = self.sources
            dem = self.dem_record()
            if dem["hma_files"] and (dem["srtm_files"] or dem.get("fallback")):
                hist = OffsetHistogram()
                for _, counts in _progress(self._pool(_offset_counts, self.plan.cells),
                                           len(self.plan.cells), "DEM offset", quiet):
                    hist.counts += counts
                if hist.n == 0:
                    raise StateError("HMA and SRTM do not overlap off the glaciers: no offset")
                dem.update(offset_m=hist.median(), offset_pixels=hist.n,
                           offset_method=f"median of HMA - {dem.get('fallback') or 'SRTM'} "
                                         "off glacier outlines at "
                                         f"{DEM_OFFSET_SCALE_M:g} m")
            else:
                dem.update(offset_m=0.0, offset_pixels=0,
                           offset_method="none (one DEM source only)")
                if not s.hma:
                    echo("warning: no HMA DEM (DEM_HMA*.tif); elevation is SRTM alone")
            exp.manifest["dem"] = dem
            exp.save()
        return exp.manifest["dem"]["offset_m"]

    def percentiles(self, offset: float, quiet: bool) -> Normalization:
        """Pass 2 (percentile mode only): each band's percentiles over the region."""
        acc = PercentileAccumulator()
        cells = [(c, offset) for c in self.plan.cells]
        for _, counts in _progress(self._pool(_percentile_counts, cells), len(cells),
                                   "percentiles", quiet):
            for b in BAND_NAMES:
                acc.counts[b] += counts[b]
        return acc.normalization(self.cfg.norm_percentiles)

    def run_cells(self, exp: ExportDir, offset: float, norm: Normalization,
                  quiet: bool) -> None:
        """Pass 3: every cell not yet on disk; workers write the files, this process keeps
        the manifest. Neighbouring cells go to one worker together, which reads the source
        blocks they share once."""
        todo = exp.pending()
        dem_dir = exp.path / DEM_SOURCE_DIR if self.options.dem_source_map else None
        # Runs of neighbours share source blocks, but keep at least 8 tasks per worker so that
        # no worker idles at the end.
        length = max(1, min(CELLS_PER_TASK, len(todo) // (8 * self._workers.workers)))
        jobs = [[(c, exp.cell_file(c)) for c in run] for run in _runs(todo, length)]
        bar = _progress(None, len(todo), "cells", quiet)
        for _, infos in self._pool(_write_cells, [(j, offset, norm, dem_dir) for j in jobs]):
            for c, info in infos:
                exp.mark(c, "done", save=False, **info)
            bar.update(len(infos))
        bar.close()
        exp.save()


def _runs(cells: list[Cell], length: int = CELLS_PER_TASK) -> list[list[Cell]]:
    """Cells cut into runs of up to `length` neighbours along a row of the grid."""
    runs: list[list[Cell]] = []
    for c in sorted(cells, key=lambda c: (c.row, c.col)):
        last = runs[-1][-1] if runs else None
        if last and last.row == c.row and last.col == c.col - 1 and len(runs[-1]) < length:
            runs[-1].append(c)
        else:
            runs.append([c])
    return runs


def _progress(iterable, total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="cell", disable=quiet, leave=False)


# -- in the worker processes ------------------------------------------------------------------

_RECIPE: dict = {}


def _init_worker(sources: LocalSources, grid: ExportGrid, cfg: RecipeConfig, cloud_mask: str,
                 glaciers) -> None:
    env = bounded_gdal_cache(WORKER_CACHE_MB)
    env.__enter__()  # for the worker's lifetime
    _RECIPE.update(env=env, recipe=LocalRecipe(sources, grid, cfg, cloud_mask, glaciers))


def _teardown_worker() -> None:
    if not _RECIPE:  # never set up (a Dask worker that joined late and ran nothing)
        return
    _RECIPE["recipe"].close()
    _RECIPE.pop("env").__exit__(None, None, None)
    _RECIPE.clear()


def _offset_counts(cell: Cell) -> np.ndarray:
    counts = _RECIPE["recipe"].offset_counts(cell)
    return counts if counts is not None else OffsetHistogram().counts


def _percentile_counts(job: tuple[Cell, float]) -> dict:
    acc = PercentileAccumulator()
    acc.add(_RECIPE["recipe"].physical(*job)[0])
    return acc.counts


def _write_cells(job) -> list[tuple[Cell, dict]]:
    cells, offset, norm, dem_dir = job
    return [(cell, _write_cell(cell, path, offset, norm, dem_dir)) for cell, path in cells]


def _write_cell(cell: Cell, path: Path, offset: float, norm: Normalization,
                dem_dir: Path | None) -> dict:
    recipe: LocalRecipe = _RECIPE["recipe"]
    res = recipe.cell(cell, offset, norm)
    info = {"valid_fraction": round(float(np.isfinite(res.stack[0]).mean()), 4),
            "dem_fraction": {"hma": round(float((res.dem_source == DEM_SOURCE_HMA).mean()), 4),
                             "srtm": round(float((res.dem_source == DEM_SOURCE_SRTM).mean()),
                                           4)},
            "glacier_pixels_masked": res.glacier_removed, "removed_pixels": res.removed}
    if dem_dir is not None:
        write_cell_tif(dem_dir / tif_name(cell.id), recipe.grid, cell,
                       res.dem_source[None].astype(np.float32), names=("dem_source",))
    write_cell_tif(path, recipe.grid, cell, res.stack, info=info)
    return info
