"""`prep export --source-dir`: the recipe on local rasters, cell by cell in worker processes.

Three passes over the planned cells, each resumable: the HMA - SRTM offset (recorded once), the
region's percentiles (percentile normalization only), then the cells themselves. Every cell
file lands atomically with its own record, so a killed export resumes where it stopped.
This module prepares the job and decides what makes two exports the same; the passes
themselves are gee_export.cell_passes.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from gee_export.cell_passes import CellPasses, _init_worker, _teardown_worker
from gee_export.common.atomic import as_stored, clean_partials
from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import InputError
from gee_export.common.grid import DEFAULT_CELL_SIZE, Region
from gee_export.common.layout import (
    EXPORT_MANIFEST,
    EXPORTS_DIR,
    SOURCES_MANIFEST,
    file_sha256,
    product_name,
    read_manifest,
    stored_path,
)
from gee_export.common.locks import output_lock
from gee_export.common.outlines import features_id, read_outlines
from gee_export.common.workers import WorkerPool, cpu_workers
from gee_export.config import Normalization, RecipeConfig
from gee_export.export import (
    Plan,
    ensure_normalization,
    open_for_work,
    plan_cells,
    record_outlines,
    record_truth_outlines,
)
from gee_export.local import LocalRecipe, LocalSources
from gee_export.stack import ExportDir, broken_note, export_stage, season_note

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
class _LocalJob(CellPasses):
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

    def dem_record(self) -> dict:
        s = self.sources
        return {"hma_files": [f.name for f in s.hma], "srtm_files": [f.name for f in s.srtm],
                "datum": "EGM96 (SRTM)"}


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
