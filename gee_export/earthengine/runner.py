"""`prep export` on Earth Engine: outlines, image inventory (`inventory`), DEM offset,
normalization, then the cells, downloaded with computePixels or written by batch tasks
(`batch`).

Every request is small and per cell, so none meets the service's limits on request size,
payload, collection length or pixels per reduction; a cell that still runs out of memory or
time is split. Each request goes through `client.Retry`: transient errors are retried with
backoff, anything else stops the run with one line that names the step, keeping what landed.
"""
from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator

import numpy as np

from gee_export.common.atomic import clean_partials
from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import InputError, ServiceError, StateError
from gee_export.common.grid import DEFAULT_CELL_SIZE, Cell, ExportGrid, Region, coarse_cell, coarse_grid
from gee_export.common.layout import DEM_SOURCE_DIR, EXPORTS_DIR, product_name, tif_name
from gee_export.common.locks import output_lock
from gee_export.common.outlines import OutlineRasterizer, read_outlines
from gee_export.config import DEM_OFFSET_SCALE_M, Normalization, RecipeConfig
from gee_export.earthengine.cells import land_cell
from gee_export.earthengine.client import EarthEngineClient, Retry, TooBig
from gee_export.earthengine.inventory import fetch_glims, record_inventory
from gee_export.earthengine.recipe import export_image_for
from gee_export.export import Plan, ensure_normalization, open_for_work, plan_cells, record_outlines
from gee_export.local import OffsetHistogram, PercentileAccumulator
from gee_export.stack import ExportDir, write_cell_tif

if TYPE_CHECKING:
    import ee

# computePixels refuses requests over 48 MiB; some clients count a mask byte per pixel.
REQUEST_LIMIT_BYTES = 48 * 1024 * 1024
PAYLOAD_LIMIT_BYTES = 10 * 1024 * 1024  # any request body, geometries included
MIN_SPLIT_SIDE = 32  # below this a cell that still runs out of memory is a real failure


@dataclass(frozen=True)
class EEOptions:
    cell_size: int = DEFAULT_CELL_SIZE
    hma_asset: str | None = None
    norm_from: Normalization | None = None
    target: str = "download"  # or gcs, drive (batch tasks)
    bucket: str | None = None
    folder: str | None = None
    workers: int = 8  # requests in flight; the default quota allows about 40
    dem_source_map: bool = False
    retry: Retry = field(default_factory=Retry, compare=False)

    def __post_init__(self):
        if self.target == "gcs" and not self.bucket:
            raise InputError("--to gcs needs --bucket NAME")
        if self.target == "drive" and not self.folder:
            raise InputError("--to drive needs --folder NAME")
        if self.target != "drive" and self.folder or self.target != "gcs" and self.bucket:
            raise InputError(f"--to {self.target}: --bucket goes with --to gcs and --folder "
                             "with --to drive")


def run_ee_export(workspace: Path, region: Region, cfg: RecipeConfig,
                  options: EEOptions = EEOptions(), *, client: EarthEngineClient | None = None,
                  project: str | None = None, outlines_path: Path | None = None,
                  outlines_layer: str | None = None, force: bool = False,
                  name: str | None = None, wait: bool = False,
                  quiet: bool = False, echo: Callable[[str], None] = print) -> ExportDir:
    """The Earth Engine recipe for one region and year; rerunning resumes."""
    from gee_export.earthengine import batch

    name = name or product_name(region.name, cfg.year)
    with output_lock(Path(workspace) / EXPORTS_DIR / name, wait, echo):
        clean_partials(Path(workspace) / EXPORTS_DIR / name, echo)
        client = client or EarthEngineClient.connect(project)
        job = EEJob.prepare(client, region, cfg, outlines_path, options, echo, outlines_layer)
        exp, work = open_for_work(job, workspace, name, force, echo)
        if not work:
            return exp
        record_inventory(exp, client, job.plan, cfg, options.retry, echo)
        offset = job.dem_offset(exp, quiet)
        norm = ensure_normalization(exp, cfg, options.norm_from,
                                    lambda: job.percentiles(offset, quiet))
        image = export_image_for(job.plan.grid, cfg, options.hma_asset, offset, norm)
        if options.target != "download":
            batch.submit_tasks(exp, client, image, options.retry, echo)
            return exp
        job.download(exp, image, quiet)
        exp.finish()
    echo(f"export complete: {exp.path} ({len(exp.cells)} cells, stack.vrt)")
    return exp


@dataclass
class EEJob:
    client: EarthEngineClient
    region: Region
    cfg: RecipeConfig
    outlines: object  # GeoDataFrame in the grid's CRS, or None
    outline_source: str
    plan: Plan
    options: EEOptions

    @classmethod
    def prepare(cls, client: EarthEngineClient, region: Region, cfg: RecipeConfig,
                outlines_path: Path | None, options: EEOptions,
                echo: Callable[[str], None], outlines_layer: str | None = None) -> "EEJob":
        """The outlines (the user's, else GLIMS from the catalogue) and the cells near them."""
        if outlines_path:
            outl = read_outlines(outlines_path, region.crs, layer=outlines_layer).split_by_area(
                cfg.min_outline_area_km2)[0]
            for line in outl.notes():
                echo(line)
            outlines, source = outl.frame, Path(outlines_path).name + (
                f" (layer {outl.layer})" if outl.layer else "")
        else:
            echo(f"no --outlines: fetching GLIMS over {region.name}")
            outlines = fetch_glims(client, region, cfg.year, options.retry)
            source = f"GLIMS, {len(outlines)} glaciers" if outlines is not None else ""
        plan = plan_cells(region, outlines, cfg.outline_buffer_m, options.cell_size,
                          f"{source} buffered by {cfg.outline_buffer_m:g} m" if source else "")
        return cls(client, region, cfg, outlines, source, plan, options)

    def parameters(self) -> dict:
        o = self.options
        return {"region": self.region.name, "grid": self.plan.grid.to_dict(),
                "recipe": self.cfg.to_dict(), "cell_size": o.cell_size,
                "source": "earthengine", "hma_asset": o.hma_asset,
                "norm_from": o.norm_from.to_dict() if o.norm_from else None,
                "target": o.target, "bucket": o.bucket, "folder": o.folder,
                "outlines": self.outline_source}

    def open(self, workspace: Path, name: str, force: bool,
             echo: Callable[[str], None]) -> ExportDir:
        fields = {"region": self.region.to_dict(), "year": self.cfg.year,
                  "grid": self.plan.grid.to_dict(), "bands": list(BAND_NAMES),
                  "synthetic": False, "source": "earthengine", "plan": self.plan.summary(),
                  "recipe": self.cfg.to_dict(), "project": self.client.project}
        return ExportDir.open_or_create(workspace, name, self.parameters(), fields, force, echo)

    def record(self, exp: ExportDir) -> None:
        if self.outlines is not None:
            record_outlines(exp, self.outlines, self.outline_source)
        exp.set_plan(self.plan.cells)

    def dem_offset(self, exp: ExportDir, quiet: bool) -> float:
        """Once: the HMA - SRTM offset, from per-cell histograms at 30 m added up."""
        if "dem" not in exp.manifest:
            from gee_export.earthengine import recipe as R

            hma_asset = self.options.hma_asset
            dem = {"hma_asset": hma_asset, "srtm_asset": R.SRTM_ASSET, "datum": "EGM96 (SRTM)"}
            if hma_asset:
                hist = OffsetHistogram()
                for _, counts in requests(self.plan.cells, self._offset_counts,
                                          self.options.workers, "DEM offset", quiet):
                    hist.counts += counts
                if hist.n == 0:
                    raise StateError(f"--hma-asset {hma_asset}: HMA and SRTM do not overlap off "
                                     "the glaciers over the planned cells, so no offset")
                dem.update(offset_m=hist.median(), offset_pixels=hist.n, offset_method=(
                    f"median of HMA - SRTM off glacier outlines at {DEM_OFFSET_SCALE_M:g} m"))
            else:
                dem.update(offset_m=0.0, offset_method="none (SRTM only)")
            exp.manifest["dem"] = dem
            exp.save()
        return exp.manifest["dem"]["offset_m"]

    def _offset_counts(self, cell: Cell) -> np.ndarray:
        from gee_export.earthengine import recipe as R

        grid = self.plan.grid
        lattice = coarse_grid(grid, DEM_OFFSET_SCALE_M)
        coarse = coarse_cell(grid, cell, DEM_OFFSET_SCALE_M)
        out = OffsetHistogram().counts
        for part in split_until_small(coarse, lambda c: R.dem_offset_histogram(
                self.options.hma_asset, grid, c, lattice, self._outlines_near(lattice, c)),
                self.client, self.options.retry, f"DEM offset of cell {cell.id}"):
            out += _histogram_counts(part.get("diff"), len(out))
        return out

    def _outlines_near(self, grid: ExportGrid, cell: Cell):
        """The outlines a cell's request needs: only those that touch it."""
        from shapely.geometry import box

        from gee_export.earthengine import recipe as R

        if self.outlines is None:
            return None
        near = self.outlines[self.outlines.intersects(box(*cell.bounds(grid)))]
        return R.outlines_collection(near.geometry.values, grid.crs) if len(near) else None

    def percentiles(self, offset: float, quiet: bool) -> Normalization:
        """Per-band percentiles over the planned cells from per-cell histograms at 10 m, the
        bins of the local path's PercentileAccumulator."""
        from gee_export.earthengine import recipe as R

        acc = PercentileAccumulator()
        ranges = {b: (e[0], e[-1]) for b, e in acc.edges.items()}
        physical = R.physical_stack(R.grid_rectangle(self.plan.grid), self.cfg,
                                    self.options.hma_asset, offset)

        def cell_counts(cell: Cell) -> dict:
            counts = {b: np.zeros(acc.BINS, np.int64) for b in BAND_NAMES}
            for part in split_until_small(cell, lambda c: R.band_histograms(
                    physical, self.plan.grid, c, ranges, acc.BINS), self.client,
                    self.options.retry, f"percentiles of cell {cell.id}"):
                for b in BAND_NAMES:
                    counts[b] += _histogram_counts(part.get(b), acc.BINS)
            return counts

        for _, counts in requests(self.plan.cells, cell_counts, self.options.workers,
                                  "percentiles", quiet):
            for b in BAND_NAMES:
                acc.counts[b] += counts[b]
        return acc.normalization(self.cfg.norm_percentiles)

    def download(self, exp: ExportDir, image: ee.Image, quiet: bool) -> None:
        """computePixels for every pending cell, `workers` in flight; files land in this
        thread, so the manifest has one writer."""
        from gee_export.earthengine import recipe as R

        fetcher = CellFetcher(self.client, image, exp.grid, R.EXPORT_BANDS, self.options.retry)
        raster = (OutlineRasterizer(self.outlines.geometry.values, exp.grid.transform)
                  if self.outlines is not None else None)
        for cell, (data, n) in requests(exp.pending(), fetcher.fetch, self.options.workers,
                                        "cells", quiet, on_error=lambda c, e: exp.mark(
                                            c, "failed", error=str(e))):
            glacier = raster.mask(cell.row_off, cell.col_off, cell.height, cell.width) \
                if raster is not None else None
            land_cell(exp, cell, data, glacier, save=False, requests=n)
        exp.save()
        if self.options.dem_source_map:
            _download_dem_source(exp, self.client, R.dem_source(self.options.hma_asset),
                                 self.options.retry)


# -- requests: in flight, retried, split --------------------------------------------------------

def requests(items: list, fn: Callable, workers: int, desc: str, quiet: bool,
             on_error: Callable | None = None) -> Iterator[tuple[object, object]]:
    """Yield (item, fn(item)) with up to `workers` requests in flight: a sliding window, so
    results never pile up; after a failure (or Ctrl-C) nothing new is sent while the requests
    in flight still land, then the failure is raised."""
    from tqdm import tqdm

    todo = iter(items)
    bar = tqdm(total=len(items), desc=desc, unit="cell", disable=quiet, leave=False)
    failure = None
    in_flight: dict = {}
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        try:
            while True:
                while failure is None and len(in_flight) < max(1, workers) and \
                        (item := next(todo, None)) is not None:
                    in_flight[pool.submit(fn, item)] = item
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for f in done:
                    item = in_flight.pop(f)
                    try:
                        result = f.result()
                    except ServiceError as e:
                        if on_error is not None:
                            on_error(item, e)
                        failure = failure or e
                        continue
                    yield item, result
                    bar.update(1)
        finally:
            for f in in_flight:
                f.cancel()
            bar.close()
    if failure is not None:
        raise ServiceError(f"{failure}; finished cells are kept, fix the cause and rerun to "
                           "resume")


def split_until_small(cell: Cell, build: Callable[[Cell], object], client: EarthEngineClient,
                      retry: Retry,
                      step: str) -> list:
    """computeValue of build(cell); where the service answers that it is too big (memory,
    time), the cell in halves, recursively; the results of the parts, to be added up."""
    try:
        return [retry.call(step, client.compute_value, build(cell))]
    except TooBig as e:
        if min(cell.width, cell.height) <= MIN_SPLIT_SIDE:
            raise ServiceError(f"Earth Engine, {step}: still too big at {cell.width}x"
                               f"{cell.height} px ({e})") from None
        a, b = cell.halves()
        return (split_until_small(a, build, client, retry, step)
                + split_until_small(b, build, client, retry, step))


def _histogram_counts(hist, bins: int) -> np.ndarray:
    """fixedHistogram's [[bucket start, count], ...] (None over no pixel) as counts."""
    if hist is None:
        return np.zeros(bins, np.int64)
    counts = np.asarray(hist, float)[:, 1]
    if len(counts) != bins:
        raise ServiceError(f"Earth Engine returned a histogram of {len(counts)} bins, "
                           f"expected {bins}")
    return np.rint(counts).astype(np.int64)


@dataclass
class CellFetcher:
    """Fetch one cell with computePixels, splitting it where Earth Engine demands."""
    client: EarthEngineClient
    image: object  # ee.Image with EXPORT_BANDS
    grid: ExportGrid
    bands: tuple[str, ...]
    retry: Retry = field(default_factory=Retry)

    def request_bytes(self, cell: Cell) -> int:
        return cell.width * cell.height * (4 * len(self.bands) + 1)

    def fetch(self, cell: Cell) -> tuple[np.ndarray, int]:
        """(bands, h, w) float32 and the number of requests the cell took."""
        from gee_export.earthengine.recipe import cell_grid

        if self.request_bytes(cell) > REQUEST_LIMIT_BYTES:
            return self._split(cell, "larger than the 48 MiB request limit")
        params = {"expression": self.image, "fileFormat": "NUMPY_NDARRAY",
                  "grid": cell_grid(self.grid, cell), "bandIds": list(self.bands)}
        try:
            arr = self.retry.call(f"cell {cell.id}", self.client.compute_pixels, params)
        except TooBig as e:
            return self._split(cell, str(e))
        return structured_to_bands(arr, self.bands, cell), 1

    def _split(self, cell: Cell, why: str) -> tuple[np.ndarray, int]:
        if min(cell.width, cell.height) <= MIN_SPLIT_SIDE:
            raise ServiceError(f"Earth Engine, cell {cell.id}: still too big at {cell.width}x"
                               f"{cell.height} px ({why})")
        a, b = cell.halves()
        da, na = self.fetch(a)
        db, nb = self.fetch(b)
        axis = 2 if a.row_off == b.row_off else 1
        return np.concatenate([da, db], axis=axis), na + nb


def structured_to_bands(arr: np.ndarray, bands: tuple[str, ...], cell: Cell) -> np.ndarray:
    """computePixels' structured NUMPY_NDARRAY (h, w) with one field per band -> (b, h, w)."""
    names = getattr(getattr(arr, "dtype", None), "names", None) or ()
    missing = [b for b in bands if b not in names]
    if missing:
        raise ServiceError(f"Earth Engine, cell {cell.id}: returned no band(s) "
                           f"{', '.join(missing)}")
    if arr.shape != (cell.height, cell.width):
        raise ServiceError(f"Earth Engine, cell {cell.id}: returned {arr.shape[1]}x"
                           f"{arr.shape[0]} px, expected {cell.width}x{cell.height}")
    return np.stack([np.asarray(arr[b], np.float32) for b in bands])


# -- landing a cell in stack/ (shared by download and pull) ------------------------------------

def _download_dem_source(exp: ExportDir, client, dem_src, retry: Retry) -> None:
    fetcher = CellFetcher(client, dem_src.unmask(0), exp.grid, ("dem_source",), retry)
    for cid, info in exp.cells.items():
        cell = Cell.from_dict(info)
        path = exp.path / DEM_SOURCE_DIR / tif_name(cid)
        if not path.is_file():
            data, _ = fetcher.fetch(cell)
            write_cell_tif(path, exp.grid, cell, data, names=("dem_source",))
