"""Running the Earth Engine recipe: credentials, cell downloads, batch tasks, status, pull.

Every network call goes through one small class, `EarthEngineClient` (computeValue,
computePixels, task start, task status, Cloud Storage download). Tests swap in a double for
that class only; the graphs, retries, cell splitting, files and manifest are the production
code path.
"""
from __future__ import annotations

import os
import random
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import GlacierError
from gee_export.common.grid import DEFAULT_CELL_SIZE, Cell, ExportGrid, Region
from gee_export.common.layout import OUTLINES_FILE, file_sha256, product_name
from gee_export.config import Normalization, RecipeConfig
from gee_export.stack import ExportDir, write_cell_tif

# computePixels refuses responses over 48 MB; some clients count a mask byte per pixel.
REQUEST_LIMIT_BYTES = 48 * 1024 * 1024
MIN_SPLIT_SIDE = 32  # below this a cell that still runs out of memory is a real failure
TERMINAL_TASK_STATES = ("COMPLETED", "FAILED", "CANCELLED")
AUTH_HELP = ("run `earthengine authenticate` (or set GOOGLE_APPLICATION_CREDENTIALS to a "
             "service-account key file), then rerun")


# -- the network boundary ---------------------------------------------------------------------

class EarthEngineClient:
    """The only place that talks to Google. Methods are the calls the export makes."""

    def __init__(self, project: str):
        self.project = project

    @classmethod
    def connect(cls, project: str | None) -> "EarthEngineClient":
        """ee.Initialize with one clear message for a missing project or login."""
        import ee

        project = project or os.environ.get("EE_PROJECT")
        if not project:
            raise GlacierError("Earth Engine needs a Google Cloud project: give --project ID or "
                               "set EE_PROJECT (the project must have the Earth Engine API "
                               "enabled)")
        try:
            ee.Initialize(project=project)
        except Exception as e:  # ee and google-auth raise many types; none may escape raw
            raise GlacierError(connect_error_message(e, project)) from None
        return cls(project)

    def compute_value(self, obj):
        import ee

        return ee.data.computeValue(obj)

    def compute_pixels(self, params: dict) -> np.ndarray:
        import ee

        return ee.data.computePixels(params)

    def start_task(self, task) -> str:
        task.start()
        return task.id

    def task_status(self, task_ids: list[str]) -> list[dict]:
        import ee

        return ee.data.getTaskStatus(task_ids)

    def download_blob(self, bucket: str, name: str, dest: Path) -> bool:
        """Copy gs://bucket/name to dest; False when the object does not exist."""
        from google.api_core.exceptions import NotFound
        from google.cloud import storage

        blob = storage.Client(project=self.project).bucket(bucket).blob(name)
        try:
            blob.download_to_filename(str(dest))
        except NotFound:
            return False
        return True


def connect_error_message(exc: BaseException, project: str) -> str:
    """The user-facing line for a failed ee.Initialize; never includes tokens or key paths."""
    text = str(exc).lower()
    auth_words = ("authorize", "authenticate", "credential", "refresh", "invalid_grant",
                  "expired", "token", "unauthenticated", "permission")
    if any(w in text for w in auth_words) or type(exc).__name__ in (
            "DefaultCredentialsError", "RefreshError"):
        return f"Earth Engine login is missing or expired: {AUTH_HELP}"
    if "not found" in text or "not registered" in text or "disabled" in text:
        return (f"Earth Engine project {project!r} cannot be used (not found, not registered "
                "for Earth Engine, or the API is disabled); check --project / EE_PROJECT")
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return f"Earth Engine could not be initialized for project {project!r}: {first}"


# -- error policy ------------------------------------------------------------------------------

def classify_error(exc: BaseException) -> str:
    """'too_big' (deterministic for that request: split it), 'transient' (retry with backoff)
    or 'fatal' (the same request would fail again: stop and say so)."""
    text = str(exc).lower()
    if any(s in text for s in ("memory limit", "computation timed out", "too large",
                               "response size", "payload size", "exceeds")):
        return "too_big"
    if any(s in text for s in ("429", "too many requests", "quota", "rate limit",
                               "resource_exhausted", "too many concurrent", "503", "500",
                               "unavailable", "internal error", "deadline", "connection",
                               "temporarily", "try again", "backend error")):
        return "transient"
    if isinstance(exc, (ConnectionError, TimeoutError)):
        return "transient"
    return "fatal"


class CellFailed(GlacierError):
    def __init__(self, cell: Cell, message: str):
        super().__init__(f"cell {cell.id} (rows {cell.row_off}-{cell.row_off + cell.height}, "
                         f"cols {cell.col_off}-{cell.col_off + cell.width}): {message}")
        self.cell = cell


@dataclass
class CellFetcher:
    """Fetch one cell with computePixels, splitting and retrying as Earth Engine demands."""
    client: EarthEngineClient
    image: object  # ee.Image with EXPORT_BANDS
    grid: ExportGrid
    bands: tuple[str, ...]
    max_retries: int = 6
    base_delay_s: float = 2.0
    max_delay_s: float = 120.0
    sleep: object = time.sleep
    rng: random.Random | None = None

    def request_bytes(self, cell: Cell) -> int:
        return cell.width * cell.height * (4 * len(self.bands) + 1)

    def fetch(self, cell: Cell) -> tuple[np.ndarray, int]:
        """(bands, h, w) float32 and the number of requests the cell took."""
        if self.request_bytes(cell) > REQUEST_LIMIT_BYTES:
            return self._split(cell, "larger than the 48 MB request limit")
        from gee_export.earthengine.recipe import cell_grid

        rng = self.rng or random.Random()
        for attempt in range(self.max_retries + 1):
            try:
                arr = self.client.compute_pixels({
                    "expression": self.image, "fileFormat": "NUMPY_NDARRAY",
                    "grid": cell_grid(self.grid, cell), "bandIds": list(self.bands)})
                return structured_to_bands(arr, self.bands, cell), 1
            except CellFailed:
                raise
            except Exception as e:  # the ee client raises EEException, HttpError, OSError...
                kind = classify_error(e)
                if kind == "too_big":
                    return self._split(cell, _first_line(e))
                if kind == "fatal" or attempt == self.max_retries:
                    why = "gave up after retries: " if kind == "transient" else ""
                    raise CellFailed(cell, why + _first_line(e)) from None
                # Exponential backoff with full jitter, so many workers do not retry in step.
                delay = min(self.max_delay_s, self.base_delay_s * 2 ** attempt)
                self.sleep(rng.uniform(delay / 2, delay))
        raise AssertionError("unreachable")

    def _split(self, cell: Cell, why: str) -> tuple[np.ndarray, int]:
        if min(cell.width, cell.height) <= MIN_SPLIT_SIDE:
            raise CellFailed(cell, f"still too big at {cell.width}x{cell.height} px ({why})")
        a, b = cell.halves()
        da, na = self.fetch(a)
        db, nb = self.fetch(b)
        axis = 2 if a.row_off == b.row_off else 1
        return np.concatenate([da, db], axis=axis), na + nb


def structured_to_bands(arr, bands: tuple[str, ...], cell: Cell) -> np.ndarray:
    """computePixels' structured NUMPY_NDARRAY (h, w) with one field per band -> (b, h, w)."""
    names = getattr(getattr(arr, "dtype", None), "names", None) or ()
    missing = [b for b in bands if b not in names]
    if missing:
        raise CellFailed(cell, f"Earth Engine returned no band(s) {', '.join(missing)}")
    if arr.shape != (cell.height, cell.width):
        raise CellFailed(cell, f"Earth Engine returned {arr.shape[1]}x{arr.shape[0]} px, "
                               f"expected {cell.width}x{cell.height}")
    return np.stack([np.asarray(arr[b], np.float32) for b in bands])


def _first_line(e: BaseException) -> str:
    s = str(e).strip()
    return s.splitlines()[0][:300] if s else type(e).__name__


# -- landing a cell in stack/ (shared by download and pull) ------------------------------------

def land_cell(exp: ExportDir, cell: Cell, data: np.ndarray, glacier: np.ndarray | None,
              **info) -> None:
    """Write the 11 stack bands of an EXPORT_BANDS array as the cell's file and record the QA.

    EE_NODATA becomes NaN (the stack's nodata); the QA bands give the share of glacier-outline
    observations the cloud mask removed in this cell.
    """
    from gee_export.earthengine.recipe import EE_NODATA
    from gee_export.local import mask_invalid_pixels

    n = len(BAND_NAMES)
    stack = data[:n].astype(np.float32, copy=True)
    stack[stack <= EE_NODATA + 1] = np.nan
    mask_invalid_pixels(stack)
    removed = None
    if data.shape[0] >= n + 2 and glacier is not None and glacier.any():
        observed, masked = data[n][glacier].sum(), data[n + 1][glacier].sum()
        removed = round(float(masked / observed), 4) if observed > 0 else None
    write_cell_tif(exp.cell_file(cell), exp.grid, cell, stack)
    exp.mark(cell, "done", valid_fraction=round(float(np.isfinite(stack[0]).mean()), 4),
             glacier_pixels_masked={"all_scenes": removed}, **info)


# -- the export --------------------------------------------------------------------------------

def _lonlat_frame(fc_geojson: dict, crs: str):
    import geopandas as gpd

    feats = fc_geojson.get("features", []) if isinstance(fc_geojson, dict) else []
    if not feats:
        return gpd.GeoDataFrame({"id": [], "date": []}, geometry=[], crs=crs)
    return gpd.GeoDataFrame.from_features(feats, crs="EPSG:4326").to_crs(crs)


def count_per_cell(footprints, grid: ExportGrid, cells: list[Cell]) -> dict[str, int]:
    """How many images' footprints touch each cell (footprints already in the grid CRS)."""
    import shapely
    from shapely.geometry import box

    if len(footprints) == 0:
        return {c.id: 0 for c in cells}
    tree = shapely.STRtree(np.asarray(footprints.geometry.values))
    return {c.id: int(len(tree.query(box(*c.bounds(grid)), predicate="intersects")))
            for c in cells}


def check_coverage(counts: dict[str, dict[str, int]], cfg: RecipeConfig) -> None:
    """Refuse cells no image covers, naming them (the 2017-2018 L2A hole, DESIGN.md 3)."""
    for sensor, per_cell in counts.items():
        empty = sorted(cid for cid, n in per_cell.items() if n == 0)
        if not empty:
            continue
        hint = ""
        if sensor == "s2" and cfg.s2_level == "l2a":
            hint = (" Earth Engine's L2A archive is thin before December 2018; --s2-level l1c "
                    "uses top-of-atmosphere scenes (recorded; do not mix levels in one "
                    "training set)")
        elif sensor == "s2":
            hint = " Widen --s2-window or raise --max-scene-cloud."
        else:
            hint = " Widen --s1-window or use --orbit both."
        raise GlacierError(
            f"{len(empty)} cell(s) have 0 {sensor.upper()} images after filtering, e.g. "
            f"{', '.join(empty[:5])}.{hint}")


def run_ee_export(workspace: Path, region: Region, cfg: RecipeConfig, *,
                  client: EarthEngineClient | None = None, project: str | None = None,
                  outlines_path: Path | None = None, cell_size: int = DEFAULT_CELL_SIZE,
                  norm_from: Normalization | None = None, hma_asset: str | None = None,
                  target: str = "download", bucket: str | None = None,
                  folder: str | None = None, workers: int = 8, dem_source_map: bool = False,
                  force: bool = False, name: str | None = None, quiet: bool = False,
                  echo=print, fetcher_options: dict | None = None) -> ExportDir:
    """The Earth Engine recipe for one region and year; rerunning resumes."""
    from gee_export.common.outlines import OutlineRasterizer, read_outlines
    from gee_export.earthengine import recipe as R
    from gee_export.export import ensure_normalization, plan_cells, record_outlines

    if target == "gcs" and not bucket:
        raise GlacierError("--to gcs needs --bucket NAME")
    if target == "drive" and not folder:
        raise GlacierError("--to drive needs --folder NAME")
    client = client or EarthEngineClient.connect(project)
    aoi = R.grid_rectangle(region.grid)

    # Outlines: the user's file, else GLIMS from the catalogue (nearest source date per glacier).
    if outlines_path:
        outlines = read_outlines(outlines_path, region.crs).split_by_area(
            cfg.min_outline_area_km2)[0].frame
        outline_source = f"{Path(outlines_path).name} buffered by {cfg.outline_buffer_m:g} m"
    else:
        echo(f"no --outlines: fetching GLIMS ({R.GLIMS_COLLECTION}) over {region.name}")
        glims = _lonlat_frame(client.compute_value(R.glims_outlines(aoi)), region.crs)
        outlines = R.pick_nearest_outlines(glims, cfg.year) if len(glims) else None
        outline_source = (f"GLIMS, {len(outlines)} glaciers buffered by "
                          f"{cfg.outline_buffer_m:g} m" if outlines is not None else "")
    plan = plan_cells(region, outlines, cfg.outline_buffer_m, cell_size, outline_source)

    parameters = {"region": region.name, "grid": plan.grid.to_dict(), "recipe": cfg.to_dict(),
                  "cell_size": cell_size, "source": "earthengine", "hma_asset": hma_asset,
                  "norm_from": norm_from.to_dict() if norm_from else None, "target": target,
                  "bucket": bucket, "folder": folder,
                  "outlines": (file_sha256(outlines_path) if outlines_path else "GLIMS")}
    exp = ExportDir.open_or_create(
        workspace, name or product_name(region.name, cfg.year), parameters,
        {"region": region.to_dict(), "year": cfg.year, "grid": plan.grid.to_dict(),
         "bands": list(BAND_NAMES), "synthetic": False, "source": "earthengine",
         "plan": plan.summary(), "recipe": cfg.to_dict(), "project": client.project},
        force=force)
    if exp.manifest.get("complete"):
        echo(f"export {exp.path} is complete; nothing to do")
        return exp
    if outlines is not None:
        record_outlines(exp, outlines, str(outlines_path) if outlines_path else "GLIMS")
    exp.set_plan(plan.cells)
    echo(plan.describe())
    planned = R.shapely_to_ee(_plan_union(plan), plan.grid.crs)
    glaciers_ee = (R.outlines_collection(outlines.geometry.values, plan.grid.crs)
                   if outlines is not None else None)

    # Inputs: every image id, date and footprint each filter kept; refuse uncovered cells.
    if "images" not in exp.manifest:
        inv = client.compute_value(R.inventory(aoi, cfg))
        s1 = _lonlat_frame(inv["s1"], plan.grid.crs)
        s2 = _lonlat_frame(inv["s2"], plan.grid.crs)
        counts = {"s1": count_per_cell(s1, plan.grid, plan.cells),
                  "s2": count_per_cell(s2, plan.grid, plan.cells)}
        check_coverage(counts, cfg)
        exp.manifest["images"] = {
            "s1_collection": R.S1_COLLECTION, "s1_count": len(s1),
            "s1_images": sorted(zip(s1["id"], s1["date"])) if len(s1) else [],
            "s2_collection": cfg.s2_collection, "s2_scenes_in_window": int(inv["s2_in_window"]),
            "s2_count": len(s2),
            "s2_images": sorted(zip(s2["id"], s2["date"])) if len(s2) else [],
            "cloud_mask": f"Cloud Score+ {cfg.cloud_score_band} >= {cfg.cloud_score_threshold}"
                          " or spectral snow/ice" + (" or SCL 11" if cfg.s2_level == "l2a"
                                                     else "")}
        for cid, info in exp.cells.items():
            info["images"] = {"s1": counts["s1"][cid], "s2": counts["s2"][cid]}
        exp.save()
        echo(f"images: {len(s1)} Sentinel-1, {len(s2)} of {inv['s2_in_window']} Sentinel-2 "
             f"scenes under {cfg.s2_max_scene_cloud:g} % scene cloud")

    # One vertical offset HMA - SRTM off glaciers over the planned cells.
    if "dem" not in exp.manifest:
        dem = {"hma_asset": hma_asset, "srtm_asset": R.SRTM_ASSET, "datum": "EGM96 (SRTM)"}
        if hma_asset:
            off = client.compute_value(R.dem_offset(hma_asset, planned, glaciers_ee))
            if off is None:
                raise GlacierError(f"--hma-asset {hma_asset}: HMA and SRTM do not overlap off "
                                   "the glaciers over the planned cells, so no offset")
            dem.update(offset_m=float(off), offset_method=(
                f"median of HMA - SRTM off glacier outlines at {R.OFFSET_SCALE_M:g} m"))
        else:
            echo("warning: no --hma-asset; elevation is SRTM alone (DESIGN.md 3)")
            dem.update(offset_m=0.0, offset_method="none (SRTM only)")
        exp.manifest["dem"] = dem
        exp.save()
    offset = exp.manifest["dem"]["offset_m"]

    def percentiles() -> Normalization:
        stats = client.compute_value(R.percentile_stats(
            R.physical_stack(aoi, cfg, hma_asset, offset), planned, cfg.norm_percentiles))
        return R.norm_from_percentiles(
            stats, cfg.norm_percentiles,
            f"percentiles over planned cells at {R.PERCENTILE_SCALE_M:g} m on Earth Engine")

    norm = ensure_normalization(exp, cfg, norm_from, percentiles)
    physical = R.physical_stack(aoi, cfg, hma_asset, offset)
    image = R.export_image(physical, norm, R.s2_mask_counts(aoi, cfg))
    raster = (OutlineRasterizer(outlines.geometry.values, plan.grid.transform)
              if outlines is not None else None)

    def glacier(c: Cell):
        return raster.mask(c.row_off, c.col_off, c.height, c.width) if raster else None

    if target == "download":
        _download_cells(exp, client, image, glacier, workers, quiet, fetcher_options or {})
        if dem_source_map:
            _download_dem_source(exp, client, R.dem_source(hma_asset), quiet)
        exp.finish()
        echo(f"export complete: {exp.path} ({len(exp.cells)} cells, stack.vrt)")
    else:
        submit_tasks(exp, client, image, target, bucket, folder, echo)
    return exp


def _plan_union(plan):
    import shapely
    from shapely.geometry import box

    return shapely.union_all([box(*c.bounds(plan.grid)) for c in plan.cells])


def _download_cells(exp: ExportDir, client, image, glacier, workers: int, quiet: bool,
                    fetcher_options: dict) -> None:
    """computePixels for every pending cell, `workers` in flight; files land in this thread so
    the manifest has one writer. Ctrl-C stops submitting; cells already landed stay done."""
    from tqdm import tqdm

    from gee_export.earthengine.recipe import EXPORT_BANDS

    fetcher = CellFetcher(client, image, exp.grid, EXPORT_BANDS, **fetcher_options)
    pending = exp.pending()
    todo = iter(pending)
    bar = tqdm(total=len(pending), desc="cells", unit="cell", disable=quiet, leave=False)
    failure = None
    in_flight: dict = {}
    # A sliding window of `workers` requests: results never pile up in memory, and after a
    # failure (or Ctrl-C) nothing new is sent while the requests in flight still land.
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        try:
            while True:
                while failure is None and len(in_flight) < max(1, workers):
                    cell = next(todo, None)
                    if cell is None:
                        break
                    in_flight[pool.submit(fetcher.fetch, cell)] = cell
                if not in_flight:
                    break
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                for f in done:
                    cell = in_flight.pop(f)
                    try:
                        data, requests = f.result()
                    except CellFailed as e:
                        exp.mark(cell, "failed", error=str(e))
                        failure = failure or e
                        continue
                    land_cell(exp, cell, data, glacier(cell), requests=requests)
                    bar.update(1)
        finally:
            for f in in_flight:
                f.cancel()
            bar.close()
    if failure is not None:
        raise GlacierError(f"{failure}; finished cells are kept, fix the cause and rerun to "
                           "resume")


def _download_dem_source(exp: ExportDir, client, dem_src, quiet: bool) -> None:
    fetcher = CellFetcher(client, dem_src.unmask(0), exp.grid, ("dem_source",))
    for cid, info in exp.cells.items():
        cell = Cell.from_dict(info)
        path = exp.path / "dem_source" / f"{cid}.tif"
        if not path.is_file():
            data, _ = fetcher.fetch(cell)
            write_cell_tif(path, exp.grid, cell, data, names=("dem_source",))


# -- batch tasks, status and pull ------------------------------------------------------------

def submit_tasks(exp: ExportDir, client, image, target: str, bucket, folder, echo) -> int:
    """Start one task per cell that has no live task; failed or cancelled ones are restarted."""
    from gee_export.earthengine.recipe import export_task

    prefix = f"glacier-exports/{exp.path.name}"
    started = 0
    for cell in exp.pending():
        info = exp.cells[cell.id]
        if info.get("task_id") and info.get("state") not in ("FAILED", "CANCELLED"):
            continue
        task = export_task(image, exp.grid, cell, target, f"{exp.path.name}-{cell.id}", prefix,
                           bucket, folder)
        try:
            task_id = client.start_task(task)
        except Exception as e:
            exp.save()
            raise GlacierError(f"starting the task for cell {cell.id} failed: {_first_line(e)}; "
                               "tasks already started are recorded, rerun to continue") from None
        exp.mark(cell, "SUBMITTED", task_id=task_id, target=target,
                 file=(f"gs://{bucket}/{prefix}/{cell.id}.tif" if target == "gcs"
                       else f"Drive:{folder}/{cell.id}.tif"))
        started += 1
    exp.manifest["batch"] = {"target": target, "bucket": bucket, "folder": folder,
                             "prefix": prefix}
    exp.save()
    echo(f"{started} task(s) started; `prep status` shows their states, `prep pull` brings "
         "finished cells into stack/")
    return started


def refresh_status(exp: ExportDir, client) -> dict[str, int]:
    """Ask Earth Engine for the state of every recorded task; returns counts per state."""
    ids = {info["task_id"]: cid for cid, info in exp.cells.items()
           if info.get("task_id") and info.get("state") != "done"}
    id_list = list(ids)
    for i in range(0, len(id_list), 100):
        for st in client.task_status(id_list[i:i + 100]):
            cid = ids.get(st.get("id"))
            if cid is None:
                continue
            info = exp.cells[cid]
            info["state"] = st.get("state", "UNKNOWN")
            if st.get("error_message"):
                info["error"] = st["error_message"]
    exp.save()
    return state_counts(exp)


def state_counts(exp: ExportDir) -> dict[str, int]:
    counts: dict[str, int] = {}
    for info in exp.cells.values():
        counts[info.get("state", "pending")] = counts.get(info.get("state", "pending"), 0) + 1
    return dict(sorted(counts.items()))


def pull_cells(exp: ExportDir, client=None, from_dir: Path | None = None,
               echo=print) -> int:
    """Bring finished batch files into stack/: from Cloud Storage, or from a folder where the
    user put the files (Drive downloads). Each file is checked against its cell's grid."""
    import rasterio

    from gee_export.common.outlines import OutlineRasterizer, read_outlines
    from gee_export.earthengine.recipe import EXPORT_BANDS

    batch = exp.manifest.get("batch") or {}
    if from_dir is None and batch.get("target") != "gcs":
        raise GlacierError(f"{exp.path}: not a Cloud Storage export; download the Drive folder "
                           f"{batch.get('folder')!r} and give it with --from-dir")
    outl = exp.path / OUTLINES_FILE
    raster = None
    if outl.is_file():
        raster = OutlineRasterizer(read_outlines(outl, exp.grid.crs).geometries,
                                   exp.grid.transform)
    pulled = 0
    with tempfile.TemporaryDirectory(dir=exp.path) as tmp:
        for cell in exp.pending():
            if from_dir is not None:
                src = Path(from_dir) / f"{cell.id}.tif"
                if not src.is_file():
                    continue
            else:
                src = Path(tmp) / f"{cell.id}.tif"
                if not client.download_blob(batch["bucket"], f"{batch['prefix']}/{cell.id}.tif",
                                            src):
                    continue
            try:
                with rasterio.open(src) as f:
                    check_cell_file(f, src, exp.grid, cell, len(EXPORT_BANDS))
                    data = f.read().astype(np.float32)
            except rasterio.errors.RasterioIOError as e:
                raise GlacierError(f"{src}: cannot be read as a GeoTIFF ({e})") from None
            glacier = (raster.mask(cell.row_off, cell.col_off, cell.height, cell.width)
                       if raster else None)
            land_cell(exp, cell, data, glacier, pulled_from=str(src) if from_dir else
                      f"gs://{batch['bucket']}/{batch['prefix']}/{cell.id}.tif")
            pulled += 1
            if from_dir is None:
                src.unlink(missing_ok=True)
    echo(f"pulled {pulled} cell(s); {len(exp.pending())} still missing")
    if not exp.pending():
        exp.finish()
        echo(f"export complete: {exp.path}")
    return pulled


def check_cell_file(f, path: Path, grid: ExportGrid, cell: Cell, bands: int) -> None:
    from rasterio.crs import CRS

    want = cell.transform(grid)
    if f.count != bands:
        raise GlacierError(f"{path}: {f.count} bands, expected {bands} (11 stack + 2 QA)")
    if (f.width, f.height) != (cell.width, cell.height):
        raise GlacierError(f"{path}: {f.width}x{f.height} px, expected cell {cell.id}'s "
                           f"{cell.width}x{cell.height}")
    if f.crs != CRS.from_user_input(grid.crs) or not f.transform.almost_equals(want, 1e-6):
        raise GlacierError(f"{path}: grid {f.crs} {tuple(f.transform)[:6]} is not cell "
                           f"{cell.id}'s {grid.crs} {tuple(want)[:6]}")
