"""The export recipe as Earth Engine graphs: pure functions from parameters to ee objects.

Nothing here talks to the network; `earthengine.runner` sends what these functions build. Every step
mirrors one of `local.py` (same thresholds from `RecipeConfig`, same band table), so the local
path and its tests pin down what the graphs compute. Requires an initialized `ee` library.
"""
from __future__ import annotations

import ee
import numpy as np

from gee_export.common.bands import BAND_NAMES, S1_BANDS, S2_BANDS
from gee_export.common.errors import GlacierError
from gee_export.common.grid import Cell, ExportGrid
from gee_export.config import (
    CLOUD_SCORE_COLLECTION,
    GLIMS_COLLECTION,
    S1_COLLECTION,
    SRTM_ASSET,
    Normalization,
    RecipeConfig,
)

# Value of masked pixels in what Earth Engine sends: 0 is a valid normalized value, and batch
# exports need one numeric type. Turned back into NaN when a cell lands in stack/.
EE_NODATA = -9999.0
# Quality bands fetched with every cell and stripped before the stack is written: per pixel,
# how many Sentinel-2 scenes observed it and how many of those the cloud mask removed. Over
# glacier outlines their ratio says whether the mask eats ice (DESIGN.md 3).
QA_BANDS = ("s2_observed", "s2_masked")
EXPORT_BANDS = BAND_NAMES + QA_BANDS
# DEM offset and percentiles are statistics, not pixels: a coarser explicit scale keeps them
# cheap and deterministic (never bestEffort, which silently coarsens; DESIGN.md 3).
OFFSET_SCALE_M = 30.0  # SRTM's native spacing
PERCENTILE_SCALE_M = 100.0
STATS_TILE_SCALE = 4
SCL_SNOW_ICE = 11


# -- geometry --------------------------------------------------------------------------------

def grid_rectangle(grid: ExportGrid, cell: Cell | None = None) -> ee.Geometry:
    """The grid (or one cell of it) as a planar rectangle in the grid's CRS."""
    x0, y0, x1, y1 = cell.bounds(grid) if cell is not None else grid.bounds
    return ee.Geometry.Rectangle([x0, y0, x1, y1], grid.crs, False)


def shapely_to_ee(geom, crs: str) -> ee.Geometry:
    """A shapely geometry in `crs` as a planar ee.Geometry (no lon/lat round trip)."""
    return ee.Geometry(geom.__geo_interface__, crs, False)


def outlines_collection(geoms, crs: str, simplify_m: float = 5.0) -> ee.FeatureCollection:
    """User outlines as an in-request FeatureCollection, simplified to half a pixel so the
    request stays small (the labels are rasterized locally from the full-resolution file)."""
    import shapely

    geoms = shapely.simplify(np.asarray(geoms), simplify_m, preserve_topology=True)
    return ee.FeatureCollection([ee.Feature(shapely_to_ee(g, crs)) for g in geoms])


def glims_outlines(aoi: ee.Geometry) -> ee.FeatureCollection:
    """GLIMS glacier boundaries over the area, with what is needed to pick one per glacier."""
    return (ee.FeatureCollection(GLIMS_COLLECTION).filterBounds(aoi)
            .filter(ee.Filter.eq("line_type", "glac_bound"))
            .select(["glac_id", "src_date", "db_area"]))


def pick_nearest_outlines(frame, year: int):
    """One outline per GLIMS glacier: the one whose source date is nearest the year."""
    import pandas as pd

    if len(frame) == 0:
        return frame
    years = pd.to_datetime(frame["src_date"], errors="coerce").dt.year
    gap = (years - year).abs().fillna(9999)
    order = frame.assign(_gap=gap).sort_values(["glac_id", "_gap"], kind="stable")
    return order.drop_duplicates("glac_id").drop(columns="_gap").reset_index(drop=True)


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


def s1_masked(image: ee.Image, cfg: RecipeConfig) -> ee.Image:
    """VV and VH in dB without the residual border noise (local.mask_s1_noise)."""
    db = image.select(list(S1_BANDS))
    return db.updateMask(db.gte(cfg.s1_noise_floor_db)).resample("bilinear")


def s1_composite(aoi: ee.Geometry, cfg: RecipeConfig) -> ee.Image:
    # The median is order-preserving, so the median of dB is the dB of the median power.
    return (s1_collection(aoi, cfg).map(lambda im: s1_masked(im, cfg)).median()
            .rename(list(S1_BANDS)))


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
    """Per-pixel keep mask: Cloud Score+ clear, or snow/ice by spectrum, or SCL 11 (L2A).

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
        return ee.Image.cat([observed, masked]).rename(list(QA_BANDS)).toFloat()

    return s2_collection(aoi, cfg).map(one).sum().rename(list(QA_BANDS))


def indices(refl: ee.Image) -> ee.Image:
    """NDVI, NDSI, NDWI (DESIGN.md 2) on reflectance; normalizedDifference masks negatives,
    exactly like local.normalized_difference."""
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


def dem_offset(hma_asset: str, region: ee.Geometry,
               outlines: ee.FeatureCollection | None) -> ee.Number:
    """Median of HMA - SRTM over their overlap off the glaciers (whose surfaces changed between
    the acquisitions): one number that moves HMA's ellipsoidal heights onto SRTM's geoid."""
    diff = hma(hma_asset).subtract(srtm()).rename("diff")
    if outlines is not None:
        diff = diff.updateMask(glacier_image(outlines).Not())
    stats = diff.reduceRegion(reducer=ee.Reducer.median(), geometry=region,
                              scale=OFFSET_SCALE_M, maxPixels=1e12, tileScale=STATS_TILE_SCALE)
    return ee.Number(stats.get("diff"))


def elevation(hma_asset: str | None, offset: float) -> ee.Image:
    """HMA minus the offset where it has data, SRTM elsewhere. sameFootprint=False, or the
    result would keep only HMA's footprint and SRTM would never fill anything."""
    if not hma_asset:
        return srtm().rename("elevation")
    return (hma(hma_asset).subtract(offset).unmask(srtm(), False)).rename("elevation")


def dem_source(hma_asset: str | None) -> ee.Image:
    """1 where HMA gave the height, 2 where SRTM filled, masked where neither has data."""
    fill = ee.Image(2).byte().updateMask(srtm().mask())
    if not hma_asset:
        return fill.rename("dem_source")
    return ee.Image(1).byte().updateMask(hma(hma_asset).mask()).unmask(fill, False) \
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
    stack = stack.updateMask(stack.mask().reduce(ee.Reducer.min()))
    out = stack.toFloat().unmask(EE_NODATA, False)
    if qa is not None:
        out = out.addBands(qa.toFloat().unmask(0, False))
    return out


def percentile_stats(physical: ee.Image, region: ee.Geometry,
                     percentiles: tuple[float, float]) -> ee.Dictionary:
    return physical.reduceRegion(
        reducer=ee.Reducer.percentile([percentiles[0], percentiles[1]]), geometry=region,
        scale=PERCENTILE_SCALE_M, maxPixels=1e12, tileScale=STATS_TILE_SCALE)


def norm_from_percentiles(stats: dict, percentiles: tuple[float, float],
                          source: str) -> Normalization:
    """Parse reduceRegion's {'VV_p2': ..., 'VV_p98': ...} into a Normalization."""
    lo_p, hi_p = (f"{p:g}" for p in percentiles)
    ranges = {}
    for b in BAND_NAMES:
        lo, hi = stats.get(f"{b}_p{lo_p}"), stats.get(f"{b}_p{hi_p}")
        if lo is None or hi is None:
            raise GlacierError(f"percentile normalization: Earth Engine returned no value for "
                               f"band {b} (no valid pixel over the planned cells?)")
        ranges[b] = (float(lo), float(hi) if hi > lo else float(lo) + 1e-6)
    return Normalization("percentile", ranges, source)


# -- what the export records about its inputs ---------------------------------------------------

def footprints(coll: ee.ImageCollection) -> ee.FeatureCollection:
    """One feature per image: footprint, id, date; cheap metadata, no pixels."""
    return ee.FeatureCollection(coll.map(lambda im: ee.Feature(im.geometry(), {
        "id": im.get("system:index"), "date": im.date().format("YYYY-MM-dd")})))


def inventory(aoi: ee.Geometry, cfg: RecipeConfig) -> ee.Dictionary:
    """Images each filter kept: S1 used, S2 in the window, S2 under the scene cloud limit."""
    return ee.Dictionary({
        "s1": footprints(s1_collection(aoi, cfg)),
        "s2_in_window": s2_scenes(aoi, cfg).size(),
        "s2": footprints(s2_collection(aoi, cfg)),
    })


def cell_grid(grid: ExportGrid, cell: Cell) -> dict:
    """computePixels' pixel grid for one cell: explicit CRS and affine, never a default
    projection (a composite has none worth using)."""
    t = cell.transform(grid)
    return {"dimensions": {"width": cell.width, "height": cell.height},
            "affineTransform": {"scaleX": t.a, "shearX": t.b, "translateX": t.c,
                                "shearY": t.d, "scaleY": t.e, "translateY": t.f},
            "crsCode": grid.crs}


def export_task(image: ee.Image, grid: ExportGrid, cell: Cell, target: str, description: str,
                prefix: str, bucket: str | None = None, folder: str | None = None):
    """An unstarted batch task writing one cell as one GeoTIFF named `<prefix>/<cell>.tif`
    (Drive: `<cell>.tif` in the folder)."""
    t = cell.transform(grid)
    common = dict(image=image, description=description[:100], crs=grid.crs,
                  crsTransform=[t.a, t.b, t.c, t.d, t.e, t.f],
                  dimensions=f"{cell.width}x{cell.height}", maxPixels=int(1e10),
                  fileFormat="GeoTIFF")
    if target == "gcs":
        return ee.batch.Export.image.toCloudStorage(
            bucket=bucket, fileNamePrefix=f"{prefix}/{cell.id}", **common)
    if target == "drive":
        return ee.batch.Export.image.toDrive(folder=folder, fileNamePrefix=cell.id, **common)
    raise GlacierError(f"--to {target!r}: use download, gcs or drive")
