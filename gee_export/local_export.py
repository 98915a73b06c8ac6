"""`prep export --source-dir`: the recipe on local rasters, cell by cell in worker processes.

Three passes over the planned cells, each resumable: the HMA - SRTM offset (recorded once), the
region's percentiles (percentile normalization only), then the cells themselves. Every cell
file lands atomically with its own record, so a killed export resumes where it stopped.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from gee_export.common.atomic import as_stored, clean_partials
from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import InputError, StateError
from gee_export.common.grid import DEFAULT_CELL_SIZE, Cell, ExportGrid, Region
from gee_export.common.layout import (
    DEM_SOURCE_DIR,
    EXPORT_MANIFEST,
    EXPORTS_DIR,
    SOURCES_MANIFEST,
    file_sha256,
    product_name,
    read_manifest,
    stored_path,
    tif_name,
)
from gee_export.common.locks import output_lock
from gee_export.common.outlines import features_id, read_outlines
from gee_export.common.rasters import bounded_gdal_cache
from gee_export.common.workers import WorkerPool, cpu_workers
from gee_export.config import DEM_OFFSET_SCALE_M, DEM_SOURCE_HMA, DEM_SOURCE_SRTM, Normalization, RecipeConfig
from gee_export.export import (
    Plan,
    ensure_normalization,
    open_for_work,
    plan_cells,
    record_outlines,
    record_truth_outlines,
)
from gee_export.local import LocalRecipe, LocalSources, OffsetHistogram, PercentileAccumulator
from gee_export.stack import ExportDir, broken_note, export_stage, season_note, write_cell_tif

CELLS_PER_TASK = 4  # neighbouring cells one worker does in a row (shared source blocks)
WORKER_CACHE_MB = 64  # GDAL block cache per worker: the source blocks a run of cells shares
# Exports made before sources were identified by their whole content used the checksum of
# the first 4 MiB of each.
EARLIER_PREFIX = 1 << 22


@dataclass(frozen=True)
class LocalOptions:
    cell_size: int = DEFAULT_CELL_SIZE
    cloud_mask: str = "auto"  # Cloud Score+ where every scene has it (as on Earth Engine)
    norm_from: Normalization | None = None
    dem_source_map: bool = False
    workers: int | str = "auto"  # processes; auto: every CPU this process may use, up to 8
    outlines_layer: str | None = None  # the layer of an outlines file of several
    dask: str | None = None  # a Dask scheduler's address: the cells run on its workers


def run_local_export(workspace: Path, region: Region, cfg: RecipeConfig, source_dir: Path,
                     outlines_path: Path | None = None, options: LocalOptions = LocalOptions(),
                     force: bool = False, name: str | None = None, wait: bool = False,
                     quiet: bool = False, echo: Callable[[str], None] = print) -> ExportDir:
    """Export the 11-band stack of a region and year from local rasters; rerunning resumes."""
    name = name or product_name(region.name, cfg.year)
    job = _LocalJob.prepare(region, cfg, Path(source_dir), outlines_path, options, echo)
    return run_job(job, Path(workspace), name, force, wait, quiet, echo)


def run_job(job: "_LocalJob", workspace: Path, name: str, force: bool, wait: bool, quiet: bool,
            echo: Callable[[str], None]) -> ExportDir:
    """The three passes of a prepared job (local files or STAC scenes), resumable."""
    done = None if force else job.finished(workspace, name, echo)
    if done is not None:  # found without the lock: a read-only workspace reruns too
        season_note(done, echo)
        return done
    with output_lock(workspace / EXPORTS_DIR / name, wait, echo):
        clean_partials(workspace / EXPORTS_DIR / name, echo)
        exp, work = open_for_work(job, workspace, name, force, echo)
        if not work:
            return exp
        with job.pool():
            offset = job.dem_offset(exp, quiet, echo)
            norm = ensure_normalization(exp, job.cfg, job.options.norm_from,
                                        lambda: job.percentiles(offset, quiet))
            job.run_cells(exp, offset, norm, quiet)
        exp.finish()
    echo(f"export complete: {exp.path} ({len(exp.cells)} cells, stack.vrt)")
    return exp


@dataclass
class _LocalJob:
    region: Region
    cfg: RecipeConfig
    source_dir: Path
    sources: LocalSources
    outlines: object  # Outlines or None
    plan: Plan
    recipe: LocalRecipe
    options: LocalOptions
    _workers: WorkerPool | None = None

    @classmethod
    def prepare(cls, region: Region, cfg: RecipeConfig, source_dir: Path,
                outlines_path: Path | None, options: LocalOptions, echo) -> "_LocalJob":
        sources = LocalSources.scan(source_dir)
        outlines_path = outlines_path or sources.outlines
        outlines = None
        if outlines_path:
            outlines = read_outlines(outlines_path, region.crs,
                                     layer=options.outlines_layer).split_by_area(
                cfg.min_outline_area_km2)[0]
            for line in outlines.notes():
                echo(line)
        plan = plan_cells(region, outlines.frame if outlines else None, cfg.outline_buffer_m,
                          options.cell_size, f"{outlines_path.name} buffered by "
                          f"{cfg.outline_buffer_m:g} m" if outlines_path else "")
        recipe = LocalRecipe(sources, plan.grid, cfg, options.cloud_mask)
        return cls(region, cfg, source_dir, sources, outlines, plan, recipe, options)

    def parameters(self, inputs: dict[str, dict]) -> dict:
        """What makes two exports the same: a rerun with equal parameters resumes. `inputs`
        are the source files' identities (source_identities)."""
        o = self.options
        layer = {"outlines_layer": self.outlines.layer} if self.outlines is not None and \
            self.outlines.layer else {}
        return {"region": self.region.name, "grid": self.plan.grid.to_dict(),
                "recipe": self.cfg.to_dict(), "cell_size": o.cell_size, "source": "local",
                "cloud_mask": self.recipe.cloud_mask,
                "norm_from": o.norm_from.to_dict() if o.norm_from else None,
                "inputs": {n: r["sha256"] for n, r in inputs.items()},
                "outlines": features_id(self.outlines) if self.outlines else None, **layer}

    def finished(self, workspace: Path, name: str, echo) -> ExportDir | None:
        """The export of these parameters when it is complete and intact (every cell on its
        grid, no unfinished file), said so; else None. Reads only, so it needs no lock."""
        exp_dir = workspace / EXPORTS_DIR / name
        inputs = source_identities(self.sources.all_files(), _recorded_inputs(exp_dir))
        decision = export_stage(exp_dir).done_without_lock(
            self.parameters(inputs), echo, self.earlier_parameters(exp_dir, inputs),
            broken_note(exp_dir))
        return ExportDir(exp_dir, decision.old, decision) if decision else None

    def earlier_parameters(self, exp_dir: Path, inputs: dict[str, dict]) -> list[dict]:
        """The parameters of this export as older versions recorded them, so that such an
        export is resumed, not refused, and upgraded: before outlines were identified by
        their features (by the file's checksum), and before sources were identified by their
        whole content (no input_files recorded: the checksums of each source's first 4 MiB)."""
        def by_bytes(params: dict) -> dict:
            return as_stored({**params, "outlines": file_sha256(self.outlines.path)
                              if self.outlines else None})

        out = [by_bytes(self.parameters(inputs))]
        if (exp_dir / EXPORT_MANIFEST).is_file() and not _recorded_inputs(exp_dir):
            prefix = self.parameters({f.name: {"sha256": file_sha256(f, EARLIER_PREFIX)}
                                      for f in self.sources.all_files()})
            out += [as_stored(prefix), by_bytes(prefix)]
        return out

    def open(self, workspace: Path, name: str, force: bool, echo) -> ExportDir:
        exp_dir = workspace / EXPORTS_DIR / name
        inputs = source_identities(self.sources.all_files(), _recorded_inputs(exp_dir))
        fields = {"region": self.region.to_dict(), "year": self.cfg.year,
                  "grid": self.plan.grid.to_dict(), "bands": list(BAND_NAMES),
                  "synthetic": self.region.synthetic, "source": "local",
                  "source_dir": stored_path(self.source_dir, exp_dir, workspace),
                  "plan": self.plan.summary(), "recipe": self.cfg.to_dict(),
                  "images": self.recipe.report(), "input_files": inputs,
                  **self._synthetic_truth()}
        return ExportDir.open_or_create(workspace, name, self.parameters(inputs), fields, force,
                                        echo, self.earlier_parameters(exp_dir, inputs),
                                        {"input_files": inputs})

    def _synthetic_truth(self) -> dict:
        """The demo generator's truth (glacier areas of the year), carried into export.json."""
        mf = self.source_dir / SOURCES_MANIFEST
        if not mf.is_file():
            return {}
        truth = read_manifest(mf, "sources").get("synthetic_truth")
        return {"synthetic_truth": truth} if truth else {}

    def record_outlines(self, exp: ExportDir) -> None:
        """The outlines the export was cut by, beside it (with what reading them repaired)."""
        if self.outlines is not None:
            record_outlines(exp, self.outlines.frame, stored_path(
                self.outlines.path, exp.path, exp.path.parents[1]),
                sha256=file_sha256(self.outlines.path), id_field=self.outlines.id_field,
                repaired=self.outlines.repaired, layer=self.outlines.layer,
                ignored=self.outlines.ignored)

    def record(self, exp: ExportDir) -> None:
        self.record_outlines(exp)
        record_truth_outlines(exp, self.source_dir)
        exp.set_plan(self.plan.cells)

    def pool(self):
        """Worker processes that each build this job's recipe once, for all three passes."""
        o = self.outlines
        init = (self.sources, self.plan.grid, self.cfg, self.recipe.cloud_mask,
                o.geometries if o is not None else None)
        self._workers = cell_pool(self.options, _init_worker, init, _teardown_worker)
        return self._workers

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

    def dem_record(self) -> dict:
        s = self.sources
        return {"hma_files": [f.name for f in s.hma], "srtm_files": [f.name for f in s.srtm],
                "datum": "EGM96 (SRTM)"}

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


def cell_pool(options: LocalOptions, init: Callable, args: tuple, teardown: Callable):
    """Where the cells run: on a Dask cluster's workers (--dask ADDRESS) or local processes;
    each worker runs init(*args) once and teardown() at the end."""
    if options.dask:
        from gee_export.common.dask_pool import DaskPool

        return DaskPool(options.dask, init, args, teardown)
    return WorkerPool(cpu_workers(options.workers), init, args, teardown)


def source_identities(files: list[Path], known: dict[str, dict] | None = None
                      ) -> dict[str, dict]:
    """Each source file's identity by name: its size, modification time (ns) and the SHA-256
    of its whole content. An edit anywhere in a file changes it. A file whose size and
    modification time equal a `known` record (what the export recorded) keeps that record's
    checksum without being read again, so a rerun costs a stat per file."""
    known = known or {}
    out = {}
    for f in files:
        st = f.stat()
        rec = {"size": st.st_size, "mtime_ns": st.st_mtime_ns}
        old = known.get(f.name) or {}
        same = {k: old.get(k) for k in rec} == rec and isinstance(old.get("sha256"), str)
        out[f.name] = {**rec, "sha256": old["sha256"] if same else file_sha256(f)}
    return out


def _recorded_inputs(exp_dir: Path) -> dict[str, dict]:
    """The source identities an earlier run of this export recorded, if any (read only)."""
    try:
        m = read_manifest(exp_dir, "export")
    except (InputError, OSError):
        return {}
    rec = m.get("input_files")
    return rec if isinstance(rec, dict) else {}


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
