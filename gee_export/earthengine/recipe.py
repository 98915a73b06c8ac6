"""The export recipe as Earth Engine graphs: pure functions from parameters to ee objects.

Nothing here talks to the network; `earthengine.runner` sends what these functions build. Every
step is the local recipe's (`gee_export.local`: the same thresholds from `RecipeConfig`, the same
band table, the same order of masking and resampling), and the tests execute these graphs on
the demo sources and compare the result with the local path pixel by pixel. Requires an
initialized `ee` library.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Sequence

import ee
import numpy as np

from gee_export.common.bands import BAND_NAMES, S1_BANDS, S2_BANDS
from gee_export.common.errors import InputError
from gee_export.common.grid import Cell, ExportGrid
from gee_export.config import (
    CLOUD_SCORE_COLLECTION,
    DEM_OFFSET_SCALE_M,
    DEM_SOURCE_HMA,
    DEM_SOURCE_SRTM,
    GLIMS_COLLECTION,
    S1_COLLECTION,
    SRTM_ASSET,
    Normalization,
    RecipeConfig,
)

if TYPE_CHECKING:
    from geopandas import GeoDataFrame
    from shapely.geometry.base import BaseGeometry

# Value of masked pixels in what Earth Engine sends: 0 is a valid normalized value, and batch
# exports need one numeric type. Turned back into NaN when a cell lands in stack/.
EE_NODATA = -9999.0
# Quality bands fetched with every cell and stripped before the stack is written, per pixel:
# how many Sentinel-2 scenes observed it and how many of those the cloud mask removed (over
# glacier outlines their ratio says whether the mask eats ice), how many Sentinel-1
# acquisitions the noise floors removed, and 1 where a pixel some band had was dropped because
# another band had none.
QA_BANDS = ("s2_observed", "s2_masked", "s1_removed", "missing_band")
EXPORT_BANDS = BAND_NAMES + QA_BANDS
STATS_TILE_SCALE = 4
SCL_SNOW_ICE = 11
# The HMA - SRTM histogram: the bins of local.OffsetHistogram (5 cm over +-300 m).
OFFSET_RANGE_M, OFFSET_BINS = 300.0, 12000
GLIMS_LINES = ("glac_bound", "intrnl_rock")  # the glacier, and its nunataks to cut out
GLIMS_FIELDS = ["glac_id", "anlys_id", "line_type", "src_date", "db_area"]


# -- geometry --------------------------------------------------------------------------------

def grid_rectangle(grid: ExportGrid, cell: Cell | None = None) -> ee.Geometry:
    """The grid (or one cell of it) as a planar rectangle in the grid's CRS."""
    x0, y0, x1, y1 = cell.bounds(grid) if cell is not None else grid.bounds
    return ee.Geometry.Rectangle([x0, y0, x1, y1], grid.crs, False)


def shapely_to_ee(geom: BaseGeometry, crs: str) -> ee.Geometry:
    """A shapely geometry in `crs` as a planar ee.Geometry (no lon/lat round trip)."""
    return ee.Geometry(geom.__geo_interface__, crs, False)


def outlines_collection(geoms: Sequence[BaseGeometry], crs: str, simplify_m: float = 5.0) -> ee.FeatureCollection:
    """Outlines as an in-request FeatureCollection, simplified to half a pixel so the request
    stays small (labels are rasterized locally from the full-resolution file)."""
    import shapely

    geoms = shapely.simplify(np.asarray(geoms), simplify_m, preserve_topology=True)
    return ee.FeatureCollection([ee.Feature(shapely_to_ee(g, crs)) for g in geoms])


def glims_outlines(aoi: ee.Geometry) -> ee.FeatureCollection:
    """GLIMS glacier boundaries and their internal rocks over the area, with what is needed to
    pick one analysis per glacier. Fetched in pages (`page`): a collection of over 5000
    elements cannot come back in one request."""
    return (ee.FeatureCollection(GLIMS_COLLECTION).filterBounds(aoi)
            .filter(ee.Filter.inList("line_type", list(GLIMS_LINES)))
            .select(GLIMS_FIELDS))


def page(collection: ee.FeatureCollection, offset: int, count: int) -> ee.FeatureCollection:
    """Elements offset .. offset + count of a collection, as a collection."""
    return ee.FeatureCollection(collection.toList(count, offset))


def glims_glaciers(frame: GeoDataFrame, year: int) -> GeoDataFrame:
    """One outline per GLIMS glacier, the analysis whose source date is nearest the year, with
    its internal rocks (nunataks) cut out."""
    import pandas as pd

    if len(frame) == 0:
        return frame
    bounds = frame[frame["line_type"] == "glac_bound"]
    rocks = frame[frame["line_type"] == "intrnl_rock"]
    years = pd.to_datetime(bounds["src_date"], errors="coerce").dt.year
    gap = (years - year).abs().fillna(9999)
    chosen = (bounds.assign(_gap=gap).sort_values(["glac_id", "_gap"], kind="stable")
              .drop_duplicates("glac_id").drop(columns="_gap").reset_index(drop=True))
    if len(rocks):
        holes = rocks.dissolve(by="anlys_id").geometry
        chosen["geometry"] = [g.difference(holes[a]) if a in holes.index else g
                              for g, a in zip(chosen.geometry, chosen["anlys_id"])]
    return chosen


# -- Sentinel-1 ------------------------------------------------------------------------------

def s1_collection(aoi: ee.Geometry, cfg: RecipeConfig) -> ee.ImageCollection:
    coll = (ee.ImageCollection(S1_COLLECTION).filterBounds(aoi).filterDate(*cfg.s1_dates)
            .filter(ee.Filter.eq("instrumentMode", "IW"))
            .filter(ee.Filter.listContains("transmitterReceiverPolarisation", "VV"))
            .filter(ee.Filter.listContains("transmitterReceiverPolarisation", "VH"))
            .filter(ee.Filter.eq("resolution_meters", 10)))
    if cfg.s1_orbit != "both":
        coll = coll.filter(ee.Filter.eq("orbitProperties_pass", cfg.s1_orbit.upper()))
    return coll


def s1_valid(db: ee.Image, cfg: RecipeConfig) -> ee.Image:
    """local.s1_noise_rule as masks: VV under its floor is border noise in both bands; VH has
    its own, lower floor (calm water and radar shadow reach -35 dB in VH)."""
    vv_ok = db.select("VV").gte(cfg.s1_noise_floor_db)
    vh_ok = vv_ok.And(db.select("VH").gte(cfg.s1_vh_floor_db))
    return ee.Image.cat([vv_ok, vh_ok]).rename(list(S1_BANDS))


def s1_masked(image: ee.Image, cfg: RecipeConfig) -> ee.Image:
    """VV and VH in dB, the border noise masked on the scene's own grid before bilinear
    resampling, so noise never blends into its neighbours."""
    db = image.select(list(S1_BANDS))
    return db.updateMask(s1_valid(db, cfg)).resample("bilinear")


def s1_composite(aoi: ee.Geometry, cfg: RecipeConfig) -> ee.Image:
    # The median is order-preserving, so the median of dB is the dB of the median power.
    return (s1_collection(aoi, cfg).map(lambda im: s1_masked(im, cfg)).median()
            .rename(list(S1_BANDS)))


def s1_removed_counts(aoi: ee.Geometry, cfg: RecipeConfig) -> ee.Image:
    """Per pixel: acquisitions whose value the noise floors removed."""
    def one(im):
        db = im.select(list(S1_BANDS))
        seen = db.select("VV").mask().gt(0)
        return seen.And(s1_valid(db, cfg).reduce(ee.Reducer.min()).Not()).toFloat()

    return s1_collection(aoi, cfg).map(one).sum().rename("s1_removed")


# -- Sentinel-2 ------------------------------------------------------------------------------

def s2_scenes(aoi: ee.Geometry, cfg: RecipeConfig) -> ee.ImageCollection:
    """Every scene of the window over the area, before the scene-level cloud filter."""
    return ee.ImageCollection(cfg.s2_collection).filterBounds(aoi).filterDate(*cfg.s2_dates)


def s2_collection(aoi: ee.Geometry, cfg: RecipeConfig) -> ee.ImageCollection:
    """Scenes under the paper's scene cloud limit, each with its Cloud Score+ band linked."""
    kept = s2_scenes(aoi, cfg).filter(
        ee.Filter.lt("CLOUDY_PIXEL_PERCENTAGE", cfg.s2_max_scene_cloud))
    return kept.linkCollection(ee.ImageCollection(CLOUD_SCORE_COLLECTION),
                               [cfg.cloud_score_band])


def s2_reflectance(image: ee.Image, cfg: RecipeConfig) -> ee.Image:
    """DN to reflectance 0-1, resampled bilinearly (B11 is 20 m) before any compositing."""
    return (image.select(list(S2_BANDS)).subtract(cfg.boa_offset).divide(10000)
            .resample("bilinear"))


def snow_ice(refl: ee.Image, cfg: RecipeConfig) -> ee.Image:
    """local.snow_ice: high NDSI and a dark SWIR, which cloud never has."""
    ndsi = refl.normalizedDifference(["B3", "B11"])
    return ndsi.gte(cfg.snow_ndsi_min).And(refl.select("B11").lte(cfg.snow_b11_max))


def s2_keep(image: ee.Image, cfg: RecipeConfig) -> ee.Image:
    """Per-pixel keep mask (local.keep_by_cloud_score): Cloud Score+ clear, or snow/ice by
    spectrum, or SCL 11 (L2A); 0 where any input is masked.

    Cloud Score+ rather than SCL, QA60 or s2cloudless: those three flag bright snow as cloud
    (QA60 is also empty from 2022-01-25 to 2024-02-28). Cloud Score+ is not validated over ice
    either, so snow is additionally spared explicitly and the loss is measured per cell.
    """
    refl = s2_reflectance(image, cfg)
    keep = image.select(cfg.cloud_score_band).gte(cfg.cloud_score_threshold)
    keep = keep.Or(snow_ice(refl, cfg))
    if cfg.s2_level == "l2a":
        keep = keep.Or(image.select("SCL").eq(SCL_SNOW_ICE))
    return keep.unmask(0)


def s2_clear(image: ee.Image, cfg: RecipeConfig) -> ee.Image:
    return s2_reflectance(image, cfg).updateMask(s2_keep(image, cfg))


def s2_composite(aoi: ee.Geometry, cfg: RecipeConfig) -> ee.Image:
    return (s2_collection(aoi, cfg).map(lambda im: s2_clear(im, cfg)).median()
            .rename(list(S2_BANDS)))


def s2_mask_counts(aoi: ee.Geometry, cfg: RecipeConfig) -> ee.Image:
    """Per pixel: scenes that observed it, and how many of those the keep mask removed."""
    def one(im):
        observed = im.select("B3").mask().gt(0)
        masked = observed.And(s2_keep(im, cfg).Not())
        return ee.Image.cat([observed, masked]).rename(["s2_observed", "s2_masked"]).toFloat()

    return s2_collection(aoi, cfg).map(one).sum().rename(["s2_observed", "s2_masked"])


def indices(refl: ee.Image) -> ee.Image:
    """NDVI, NDSI, NDWI on reflectance; normalizedDifference masks negatives, exactly like
    local.normalized_difference."""
    return ee.Image.cat([refl.normalizedDifference(["B8", "B4"]).rename("NDVI"),
                         refl.normalizedDifference(["B3", "B11"]).rename("NDSI"),
                         refl.normalizedDifference(["B3", "B8"]).rename("NDWI")])


# -- DEM -------------------------------------------------------------------------------------

def srtm() -> ee.Image:
    return ee.Image(SRTM_ASSET).select("elevation").toFloat().resample("bilinear")


def hma(asset: str) -> ee.Image:
    """The user's HMA mosaic with its -9999 fill masked (ellipsoidal heights)."""
    img = ee.Image(asset).select(0).toFloat()
    return img.updateMask(img.neq(-9999)).resample("bilinear")


def glacier_image(outlines: ee.FeatureCollection) -> ee.Image:
    return ee.Image(0).byte().paint(outlines, 1)


def offset_lattice(grid: ExportGrid) -> list[float]:
    """The crsTransform of the DEM offset's 30 m lattice, on the export grid's origin."""
    return [DEM_OFFSET_SCALE_M, 0.0, grid.x0, 0.0, -DEM_OFFSET_SCALE_M, grid.y0]


def dem_offset_histogram(hma_asset: str, grid: ExportGrid, coarse: Cell, coarse_grid: ExportGrid,
                         outlines: ee.FeatureCollection | None) -> ee.Dictionary:
    """The histogram of HMA - SRTM off the glaciers over one cell's pixels of the 30 m
    lattice (gee_export.common.grid.coarse_cell): local.OffsetHistogram's bins, so that the
    runner adds the cells up into the region's median exactly as the local path does. Per
    cell, a request carries only that cell's outlines."""
    diff = hma(hma_asset).subtract(srtm()).rename("diff")
    if outlines is not None:
        diff = diff.updateMask(glacier_image(outlines).Not())
    return diff.reduceRegion(
        reducer=ee.Reducer.fixedHistogram(-OFFSET_RANGE_M, OFFSET_RANGE_M, OFFSET_BINS),
        geometry=grid_rectangle(coarse_grid, coarse), crs=grid.crs,
        crsTransform=offset_lattice(grid), maxPixels=int(1e9), tileScale=STATS_TILE_SCALE)


def elevation(hma_asset: str | None, offset: float) -> ee.Image:
    """HMA minus the offset where it has data, SRTM elsewhere. sameFootprint=False, or the
    result would keep only HMA's footprint and SRTM would never fill anything."""
    if not hma_asset:
        return srtm().rename("elevation")
    return (hma(hma_asset).subtract(offset).unmask(srtm(), False)).rename("elevation")


def dem_source(hma_asset: str | None) -> ee.Image:
    """DEM_SOURCE_HMA (1) where HMA gave the height, DEM_SOURCE_SRTM (2) where SRTM filled,
    masked where neither has data."""
    fill = ee.Image(DEM_SOURCE_SRTM).byte().updateMask(srtm().mask())
    if not hma_asset:
        return fill.rename("dem_source")
    return ee.Image(DEM_SOURCE_HMA).byte().updateMask(hma(hma_asset).mask()).unmask(fill, False) \
        .rename("dem_source")


# -- the stack -------------------------------------------------------------------------------

def physical_stack(aoi: ee.Geometry, cfg: RecipeConfig, hma_asset: str | None,
                   offset: float) -> ee.Image:
    """The 11 bands in physical units (dB, reflectance, ratio, m), in the band table's order."""
    s2 = s2_composite(aoi, cfg)
    img = ee.Image.cat([s1_composite(aoi, cfg), s2, indices(s2), elevation(hma_asset, offset)])
    return img.select(list(BAND_NAMES))


def normalize(img: ee.Image, norm: Normalization) -> ee.Image:
    """config.normalize on Earth Engine: (x - lo) / (hi - lo), clamped to [0, 1]."""
    lo, hi = norm.arrays()
    return (img.subtract(ee.Image.constant([float(v) for v in lo]))
            .divide(ee.Image.constant([float(v) for v in hi - lo])).clamp(0, 1)
            .rename(list(BAND_NAMES)))


def export_image(physical: ee.Image, norm: Normalization,
                 qa: ee.Image | None = None) -> ee.Image:
    """What each cell request or task computes: the normalized stack with local.mask_invalid_
    pixels' rule (a pixel lacking any band is nodata in all), float32, EE_NODATA where masked;
    then the QA bands (0 where unobserved)."""
    stack = normalize(physical, norm)
    has = stack.mask()
    stack = stack.updateMask(has.reduce(ee.Reducer.min()))
    out = stack.toFloat().unmask(EE_NODATA, False)
    if qa is not None:
        missing = has.reduce(ee.Reducer.max()).And(has.reduce(ee.Reducer.min()).Not())
        out = out.addBands(qa.addBands(missing.rename("missing_band")).toFloat()
                           .unmask(0, False))
    return out


def qa_counts(aoi: ee.Geometry, cfg: RecipeConfig) -> ee.Image:
    return s2_mask_counts(aoi, cfg).addBands(s1_removed_counts(aoi, cfg))


def band_histograms(physical: ee.Image, grid: ExportGrid, cell: Cell,
                    ranges: dict[str, tuple[float, float]], bins: int) -> ee.Dictionary:
    """Per band, the histogram over one cell at 10 m (the bins of local.PercentileAccumulator),
    so that per-cell requests add up to the region's percentiles exactly as on the local
    path."""
    t = cell.transform(grid)
    return ee.Dictionary({b: physical.select(b).reduceRegion(
        reducer=ee.Reducer.fixedHistogram(lo, hi, bins), geometry=grid_rectangle(grid, cell),
        crs=grid.crs, crsTransform=[t.a, t.b, t.c, t.d, t.e, t.f], maxPixels=int(1e9),
        tileScale=STATS_TILE_SCALE).get(b) for b, (lo, hi) in ranges.items()})


# -- what the export records about its inputs ---------------------------------------------------

def footprints(coll: ee.ImageCollection) -> ee.FeatureCollection:
    """One feature per image: footprint, id, date; cheap metadata, no pixels."""
    return ee.FeatureCollection(coll.map(lambda im: ee.Feature(im.geometry(), {
        "id": im.get("system:index"), "date": im.date().format("YYYY-MM-dd")})))


def inventory_sizes(aoi: ee.Geometry, cfg: RecipeConfig) -> ee.Dictionary:
    """How many images each filter kept: S1 used, S2 in the window, S2 under the cloud limit
    (the footprints then come in pages)."""
    return ee.Dictionary({"s1": s1_collection(aoi, cfg).size(),
                          "s2_in_window": s2_scenes(aoi, cfg).size(),
                          "s2": s2_collection(aoi, cfg).size()})


def cell_grid(grid: ExportGrid, cell: Cell) -> dict:
    """computePixels' pixel grid for one cell: explicit CRS and affine, never a default
    projection (a composite has none worth using)."""
    t = cell.transform(grid)
    return {"dimensions": {"width": cell.width, "height": cell.height},
            "affineTransform": {"scaleX": t.a, "shearX": t.b, "translateX": t.c,
                                "shearY": t.d, "scaleY": t.e, "translateY": t.f},
            "crsCode": grid.crs}


def export_task(image: ee.Image, grid: ExportGrid, cell: Cell, target: str, description: str,
                prefix: str, bucket: str | None = None, folder: str | None = None
                ) -> ee.batch.Task:
    """An unstarted batch task writing one cell as one cloud-optimized GeoTIFF named
    `<prefix>/<cell>.tif` (Drive: `<cell>.tif` in the folder), EE_NODATA tagged as nodata."""
    t = cell.transform(grid)
    common = dict(image=image, description=description[:100], crs=grid.crs,
                  crsTransform=[t.a, t.b, t.c, t.d, t.e, t.f],
                  dimensions=f"{cell.width}x{cell.height}", maxPixels=int(1e10),
                  fileFormat="GeoTIFF",
                  formatOptions={"cloudOptimized": True, "noData": EE_NODATA})
    if target == "gcs":
        return ee.batch.Export.image.toCloudStorage(
            bucket=bucket, fileNamePrefix=f"{prefix}/{cell.id}", **common)
    if target == "drive":
        return ee.batch.Export.image.toDrive(folder=folder, fileNamePrefix=cell.id, **common)
    raise InputError(f"--to {target!r}: use download, gcs or drive")


def export_image_for(grid: ExportGrid, cfg: RecipeConfig, hma_asset: str | None, offset: float,
                     norm: Normalization) -> ee.Image:
    """The image every cell request or task computes (also rebuilt from a manifest by `prep
    status`, which submits more batch tasks as others finish)."""
    aoi = grid_rectangle(grid)
    return export_image(physical_stack(aoi, cfg, hma_asset, offset), norm, qa_counts(aoi, cfg))
