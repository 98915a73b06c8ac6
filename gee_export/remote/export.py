"""`prep export --source stac`: the local recipe cell by cell on scenes found through a STAC
API, in local processes or on a Dask cluster. The job is the local export's, with the
catalogue of each cell's scenes in place of a directory of files.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from gee_export import cell_passes
from gee_export.cell_passes import _RECIPE, _teardown_worker
from gee_export.common.atomic import write_json
from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import InputError, InputNotFoundError, StateError
from gee_export.common.grid import Cell, ExportGrid, Region
from gee_export.common.layout import EXPORTS_DIR, file_sha256, product_name
from gee_export.common.outlines import read_outlines
from gee_export.config import RecipeConfig
from gee_export.export import plan_cells
from gee_export.local import LocalRecipe, LocalSources
from gee_export.local_export import (
    LocalOptions,
    _LocalJob,
    _recorded_inputs,
    cell_pool,
    run_job,
    source_identities,
)
from gee_export.remote.catalogue import Catalogue, cell_sources, search_cells
from gee_export.remote.client import NetConfig
from gee_export.remote.providers import Provider
from gee_export.stack import ExportDir, broken_note, export_stage

ITEMS_FILE = "stac_items.json"  # each cell's scenes, as the first run found them
CLOUD_MASK = "scl"  # no Cloud Score+ behind these APIs
DATASETS_KEPT = 256  # open remote assets a worker keeps between cells at most


@dataclass(frozen=True)
class StacOptions:
    provider: Provider
    hma_file: Path | None = None  # the HMA mosaic (ellipsoidal heights), a local GeoTIFF
    net: NetConfig = field(default_factory=NetConfig)


def check_cloud_mask(requested: str) -> None:
    if requested == "cloudscore":
        raise InputError("--cloud-mask cloudscore: the STAC APIs offer no Cloud Score+; use scl "
                         "(auto picks it for --source stac)")


def run_stac_export(workspace: Path, region: Region, cfg: RecipeConfig, stac: StacOptions,
                    outlines_path: Path | None = None, options: LocalOptions = LocalOptions(),
                    force: bool = False, name: str | None = None, wait: bool = False,
                    quiet: bool = False, echo: Callable[[str], None] = print) -> ExportDir:
    """Export the 11-band stack of a region and year from STAC scenes; rerunning resumes."""
    check_cloud_mask(options.cloud_mask)
    name = name or product_name(region.name, cfg.year)
    job = _StacJob.prepare_stac(region, cfg, stac, outlines_path, options, echo)
    return run_job(job, Path(workspace), name, force, wait, quiet, echo)


def read_plan_outlines(region: Region, cfg: RecipeConfig, outlines_path: Path | None,
                       layer: str | None, echo):
    if not outlines_path:
        return None
    outlines = read_outlines(outlines_path, region.crs, layer=layer).split_by_area(
        cfg.min_outline_area_km2)[0]
    for line in outlines.notes():
        echo(line)
    return outlines


@dataclass
class _StacJob(_LocalJob):
    stac: StacOptions | None = None
    catalogue: Catalogue | None = None

    @classmethod
    def prepare_stac(cls, region: Region, cfg: RecipeConfig, stac: StacOptions,
                     outlines_path: Path | None, options: LocalOptions, echo) -> "_StacJob":
        if stac.hma_file is not None and not Path(stac.hma_file).is_file():
            raise InputNotFoundError(f"--hma-file {stac.hma_file}: no such file")
        outlines = read_plan_outlines(region, cfg, outlines_path, options.outlines_layer, echo)
        plan = plan_cells(region, outlines.frame if outlines else None, cfg.outline_buffer_m,
                          options.cell_size, f"{outlines_path.name} buffered by "
                          f"{cfg.outline_buffer_m:g} m" if outlines_path else "")
        hma = [Path(stac.hma_file)] if stac.hma_file else []
        return cls(region, cfg, Path("."), LocalSources(hma=hma), outlines, plan, None, options,
                   stac=stac)

    def parameters(self, inputs: dict | None = None) -> dict:
        """What makes two exports the same; `inputs` are the HMA file's identity
        (source_identities: its checksum computed once, then reused while its size and
        modification time stay)."""
        o = self.options
        layer = {"outlines_layer": self.outlines.layer} if self.outlines is not None and \
            self.outlines.layer else {}
        return {"region": self.region.name, "grid": self.plan.grid.to_dict(),
                "recipe": self.cfg.to_dict(), "cell_size": o.cell_size, "source": "stac",
                "stac": self.stac.provider.to_dict(), "cloud_mask": CLOUD_MASK,
                "norm_from": o.norm_from.to_dict() if o.norm_from else None,
                "hma_file": next((r["sha256"] for r in (inputs or {}).values()), None),
                "outlines": file_sha256(self.outlines.path) if self.outlines else None, **layer}

    def inputs(self, exp_dir: Path) -> dict[str, dict]:
        return source_identities(self.sources.hma, _recorded_inputs(exp_dir))

    def finished(self, workspace: Path, name: str, echo) -> ExportDir | None:
        exp_dir = workspace / EXPORTS_DIR / name
        decision = export_stage(exp_dir).done_without_lock(self.parameters(self.inputs(exp_dir)),
                                                           echo, [], broken_note(exp_dir))
        return ExportDir(exp_dir, decision.old, decision) if decision else None

    def open(self, workspace: Path, name: str, force: bool, echo) -> ExportDir:
        p, inputs = self.stac.provider, self.inputs(workspace / EXPORTS_DIR / name)
        fields = {"region": self.region.to_dict(), "year": self.cfg.year,
                  "grid": self.plan.grid.to_dict(), "bands": list(BAND_NAMES),
                  "synthetic": False, "source": "stac", "plan": self.plan.summary(),
                  "recipe": self.cfg.to_dict(), "cloud_mask": CLOUD_MASK, "input_files": inputs,
                  "stac": {**p.to_dict(), "items_file": ITEMS_FILE,
                           "differences_from_earth_engine": list(p.differences)}}
        return ExportDir.open_or_create(workspace, name, self.parameters(inputs), fields, force,
                                        echo)

    def record(self, exp: ExportDir) -> None:
        """The outlines and plan, and each cell's scenes: searched on the first run, read
        back from stac_items.json on a resumed one (the catalogue may have grown since)."""
        self.record_outlines(exp)
        exp.set_plan(self.plan.cells)
        self.catalogue = load_or_search(exp, self.stac, self.cfg, self.plan.grid, self.plan.cells)
        exp.manifest["images"] = scene_counts(self.catalogue)

    def dem_record(self) -> dict:
        return {"hma_files": [f.name for f in self.sources.hma], "srtm_files": [],
                "fallback": self.stac.provider.dem.collection, "datum": "EGM2008 (Copernicus "
                "GLO-30)"}

    def pool(self):
        o = self.outlines
        init = (self.catalogue, self.stac, self.plan.grid, self.cfg,
                o.geometries if o is not None else None)
        self._workers = cell_pool(self.options, _init_stac_worker, init, _teardown_worker)
        return self._workers


def load_or_search(exp: ExportDir, stac: StacOptions, cfg: RecipeConfig, grid: ExportGrid,
                   cells: list[Cell]) -> Catalogue:
    path = exp.path / ITEMS_FILE
    if path.is_file():
        try:
            return Catalogue.from_dict(json.loads(path.read_text())["catalogue"])
        except (KeyError, TypeError, ValueError):
            raise StateError(f"{path}: unreadable; rerun with --force") from None
    cat = search_cells(stac.provider, cfg, grid, cells, stac.net)
    write_json(path, {"kind": "stac_items", "catalogue": cat.to_dict()})
    return cat


def scene_counts(cat: Catalogue) -> dict:
    by = {s: sorted({cat.items[k]["id"] for c in cat.cells.values() for k in c.get(s, [])})
          for s in ("s2", "s1", "dem")}
    return {"s2_items": by["s2"], "s2_count": len(by["s2"]), "s1_items": by["s1"],
            "s1_count": len(by["s1"]), "dem_items": by["dem"], "cloud_mask": CLOUD_MASK}


class StacRecipe:
    """The local recipe per cell, on that cell's scenes (a worker's recipe: the interface
    the worker functions of gee_export/cell_passes.py use)."""

    def __init__(self, catalogue: Catalogue, stac: StacOptions, grid: ExportGrid,
                 cfg: RecipeConfig, glaciers=None):
        self.catalogue, self.stac, self.grid, self.cfg = catalogue, stac, grid, cfg
        self._glaciers = glaciers
        self._base: LocalRecipe | None = None

    def _for(self, cell: Cell) -> LocalRecipe:
        hma = [Path(self.stac.hma_file)] if self.stac.hma_file else []
        src = cell_sources(self.catalogue, self.stac.provider, cell.id, hma, self.stac.net)
        if self._base is None:
            self._base = LocalRecipe(src, self.grid, self.cfg, CLOUD_MASK, self._glaciers)
            return self._base
        if len(self._base._datasets) > DATASETS_KEPT:
            self._base.close()
        return self._base.with_sources(src)

    def offset_counts(self, cell: Cell) -> np.ndarray | None:
        return self._for(cell).offset_counts(cell)

    def physical(self, cell: Cell, dem_offset: float):
        return self._for(cell).physical(cell, dem_offset)

    def cell(self, cell: Cell, dem_offset: float, norm):
        return self._for(cell).cell(cell, dem_offset, norm)

    def close(self) -> None:
        if self._base is not None:
            self._base.close()


def _init_stac_worker(catalogue: Catalogue, stac: StacOptions, grid: ExportGrid,
                      cfg: RecipeConfig, glaciers) -> None:
    from gee_export.common.rasters import bounded_gdal_cache

    env = bounded_gdal_cache(cell_passes.WORKER_CACHE_MB)
    env.__enter__()  # for the worker's lifetime
    _RECIPE.update(env=env, recipe=StacRecipe(catalogue, stac, grid, cfg, glaciers))
