"""The Earth Engine recipe executed offline (ee_evaluator) on the demo sources gives the local
path's stack; and each plausible mistake in the recipe breaks that equivalence."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio

from gee_export.common.bands import BAND_NAMES, S1_BANDS, S2_BANDS
from gee_export.common.grid import Cell
from gee_export.config import SRTM_ASSET, Normalization, RecipeConfig
from gee_export.demo.scene import demo_region
from gee_export.earthengine import recipe as R
from gee_export.earthengine.client import Retry
from gee_export.earthengine.recipe import export_image_for
from gee_export.earthengine.runner import EEOptions, run_ee_export
from gee_export.local_export import LocalOptions, run_local_export

# The July scene has 9 % scene cloud in the 512 px demo: raise the limit so that the
# composites meet clouds, cirrus and the snow rule on both paths.
CFG = RecipeConfig(2018, s2_max_scene_cloud=20.0)
HMA = "users/test/hma"
TOLERANCE, SHARE = 1e-4, 0.999  # the bar: 99.9 % of valid pixels within 1e-4


@pytest.fixture(scope="module")
def local_stack(demo_sources, tmp_path_factory):
    ws = tmp_path_factory.mktemp("local")
    exp = run_local_export(ws, demo_region(512), CFG, demo_sources,
                           options=LocalOptions(cell_size=256, cloud_mask="cloudscore",
                                                workers=1), quiet=True, echo=lambda *a: None)
    with rasterio.open(exp.vrt) as f:
        return f.read(), exp.manifest


def agreement(a: np.ndarray, b: np.ndarray) -> tuple[bool, dict[str, float]]:
    """Whether the nodata masks are the same, and per band the share of pixels valid in both
    that agree within TOLERANCE."""
    shares = {}
    for i, name in enumerate(BAND_NAMES):
        both = np.isfinite(a[i]) & np.isfinite(b[i])
        shares[name] = float((np.abs(a[i] - b[i])[both] <= TOLERANCE).mean()) if both.any() else 0
    return bool(np.array_equal(np.isnan(a), np.isnan(b))), shares


def equivalent(a: np.ndarray, b: np.ndarray) -> bool:
    same_mask, shares = agreement(a, b)
    return same_mask and min(shares.values()) >= SHARE


def test_earth_engine_recipe_equals_local_path(double, local_stack, demo_sources, tmp_path):
    """The whole Earth Engine export (inventory, per-cell DEM offset histograms, cells) run
    against the double gives the local export's stack, band by band."""
    local, local_manifest = local_stack
    exp = run_ee_export(tmp_path, demo_region(512), CFG,
                        EEOptions(cell_size=256, hma_asset=HMA, retry=Retry(sleep=lambda s: None)),
                        client=double, outlines_path=demo_sources / "outlines.gpkg", quiet=True,
                        echo=lambda *a: None)
    with rasterio.open(exp.vrt) as f:
        ee_stack = f.read()
    same_mask, shares = agreement(ee_stack, local)
    assert same_mask, "nodata masks differ"
    assert min(shares.values()) >= SHARE, shares
    assert exp.manifest["dem"]["offset_m"] == pytest.approx(local_manifest["dem"]["offset_m"])
    # The decoys (outside the windows, EW mode, single-pol, 40 m) were filtered out.
    images = exp.manifest["images"]
    assert images["s1_count"] == 2 and images["s2_count"] == 3
    assert images["s2_scenes_in_window"] == 4  # the cloudy decoy, refused by the scene limit
    # What each validity rule removed agrees too, cell by cell.
    for cid, cell in exp.manifest["cells"].items():
        assert cell["removed_pixels"] == local_manifest["cells"][cid]["removed_pixels"], cid
    assert {"Image.resample", "Image.unmask", "reduce.median", "Image.linkCollection",
            "Reducer.fixedHistogram", "Image.paint"} <= double.evaluator.used


def cell_stack(double, offset: float, cfg: RecipeConfig = CFG) -> np.ndarray:
    """The export image over the whole 512 px demo as one cell, landed as the runner does."""
    from gee_export.earthengine.runner import structured_to_bands

    grid = demo_region(512).grid
    cell = Cell(0, 0, 0, 0, grid.height, grid.width)
    image = export_image_for(grid, cfg, HMA, offset, Normalization.fixed())
    arr = double.compute_pixels({"expression": image, "fileFormat": "NUMPY_NDARRAY",
                                 "grid": R.cell_grid(grid, cell),
                                 "bandIds": list(R.EXPORT_BANDS)})
    wrong = [b for b in R.EXPORT_BANDS if arr.dtype[b] != np.float32]
    if wrong:  # a batch export needs one type; the stack is float32
        raise TypeError(f"bands {wrong} are not float32")
    stack = structured_to_bands(arr, R.EXPORT_BANDS, cell)[:len(BAND_NAMES)]
    stack[stack <= R.EE_NODATA + 1] = np.nan
    return stack


def test_the_whole_scene_as_one_cell_is_equivalent_too(double, local_stack):
    local, manifest = local_stack
    assert equivalent(cell_stack(double, manifest["dem"]["offset_m"]), local)


# -- deliberate mistakes: each a plausible slip in the recipe ---------------------------------------

def _set(name, fn):
    return lambda mp: mp.setattr(R, name, fn)


def _indices_swapped(refl):
    import ee

    return ee.Image.cat([refl.normalizedDifference(["B8", "B4"]).rename("NDVI"),
                         refl.normalizedDifference(["B3", "B8"]).rename("NDSI"),
                         refl.normalizedDifference(["B3", "B11"]).rename("NDWI")])


def _scenes_moved(aoi, cfg):  # June-August instead of July-September
    import ee

    return ee.ImageCollection(cfg.s2_collection).filterBounds(aoi).filterDate(
        f"{cfg.year}-06-01", f"{cfg.year}-09-01")


def _composite_before_mask(aoi, cfg):
    return (R.s2_collection(aoi, cfg).map(lambda im: R.s2_reflectance(im, cfg)).median()
            .rename(list(S2_BANDS)))


def _keep(image, cfg, threshold_op="gte", scl="keeps", band=None):
    refl = R.s2_reflectance(image, cfg)
    score = image.select(band or cfg.cloud_score_band)
    keep = getattr(score, threshold_op)(cfg.cloud_score_threshold).Or(R.snow_ice(refl, cfg))
    if scl == "keeps":
        keep = keep.Or(image.select("SCL").eq(11))
    else:  # SCL 11 used to remove pixels
        keep = keep.And(image.select("SCL").neq(11))
    return keep.unmask(0)


def _collection(aoi, cfg, cloud_property="CLOUDY_PIXEL_PERCENTAGE", scene_filter=True,
                band=None):
    import ee

    coll = R.s2_scenes(aoi, cfg)
    if scene_filter:
        coll = coll.filter(ee.Filter.lt(cloud_property, cfg.s2_max_scene_cloud))
    return coll.linkCollection(ee.ImageCollection(R.CLOUD_SCORE_COLLECTION),
                               [band or cfg.cloud_score_band])


def _srtm_nearest():
    import ee

    return ee.Image(SRTM_ASSET).select("elevation").toFloat()


def _s1_nearest(image, cfg):
    db = image.select(list(S1_BANDS))
    return db.updateMask(R.s1_valid(db, cfg))


def _s1_one_floor(image, cfg):  # VV's -30 dB floor applied to VH too
    db = image.select(list(S1_BANDS))
    return db.updateMask(db.gte(cfg.s1_noise_floor_db)).resample("bilinear")


def _export_image(mask_rule=True, to_float=True, sign=1):
    import ee

    def build(physical, norm, qa=None):
        stack = R.normalize(physical, norm)
        if mask_rule:
            stack = stack.updateMask(stack.mask().reduce(ee.Reducer.min()))
        if to_float:
            stack = stack.toFloat()
        out = stack.unmask(R.EE_NODATA, False)
        return out.addBands(qa.addBands(ee.Image(0).rename("missing_band")).toFloat()
                            .unmask(0, False))
    return build


def _hma_fill_kept(asset):
    import ee

    return ee.Image(asset).select(0).toFloat().resample("bilinear")


def _offset_added(hma_asset, offset):
    return (R.hma(hma_asset).add(offset).unmask(R.srtm(), False)).rename("elevation")


def _same_footprint(hma_asset, offset):
    return (R.hma(hma_asset).subtract(offset).unmask(R.srtm())).rename("elevation")


def _no_mode_filter(aoi, cfg):
    import ee

    return (ee.ImageCollection(R.S1_COLLECTION).filterBounds(aoi).filterDate(*cfg.s1_dates)
            .filter(ee.Filter.listContains("transmitterReceiverPolarisation", "VV"))
            .filter(ee.Filter.listContains("transmitterReceiverPolarisation", "VH"))
            .filter(ee.Filter.eq("resolution_meters", 10)))


def _dn_not_scaled(image, cfg):
    return image.select(list(S2_BANDS)).subtract(cfg.boa_offset).resample("bilinear")


def _normalize_swapped(img, norm):
    import ee

    lo, hi = norm.arrays()
    return (img.subtract(ee.Image.constant([float(v) for v in hi]))
            .divide(ee.Image.constant([float(v) for v in lo - hi])).clamp(0, 1)
            .rename(list(BAND_NAMES)))


def _grid_without_affine(grid, cell):
    return {"dimensions": {"width": cell.width, "height": cell.height}, "crsCode": grid.crs}


MISTAKES = {
    # The reviewer's list.
    "NDSI and NDWI band pairs swapped": _set("indices", _indices_swapped),
    "Sentinel-2 date window moved": _set("s2_scenes", _scenes_moved),
    "composited before the cloud mask": _set("s2_composite", _composite_before_mask),
    "SCL 11 removes pixels": _set("s2_keep", lambda im, cfg: _keep(im, cfg, scl="removes")),
    "SRTM not resampled bilinearly": _set("srtm", _srtm_nearest),
    "Sentinel-1 not resampled bilinearly": _set("s1_masked", _s1_nearest),
    "all-band nodata mask dropped": _set("export_image", _export_image(mask_rule=False)),
    "toFloat dropped": _set("export_image", _export_image(to_float=False)),
    "Cloud Score+ threshold reversed": _set("s2_keep", lambda im, cfg: _keep(im, cfg, "lt")),
    "wrong scene cloud property": _set("s2_collection", lambda aoi, cfg: _collection(
        aoi, cfg, cloud_property="CLOUD_COVER")),
    "computePixels without its affine transform": _set("cell_grid", _grid_without_affine),
    # Ours.
    "VV's noise floor applied to VH": _set("s1_masked", _s1_one_floor),
    "HMA's -9999 fill left unmasked": _set("hma", _hma_fill_kept),
    "DEM offset added, not subtracted": _set("elevation", _offset_added),
    "SRTM confined to HMA's footprint (sameFootprint)": _set("elevation", _same_footprint),
    "Cloud Score+ band cs instead of cs_cdf": _set("s2_collection", lambda aoi, cfg: _collection(
        aoi, cfg, band="cs")),
    "scene cloud filter dropped": _set("s2_collection", lambda aoi, cfg: _collection(
        aoi, cfg, scene_filter=False)),
    "Sentinel-1 instrument mode filter dropped": _set("s1_collection", _no_mode_filter),
    "reflectance left as DN": _set("s2_reflectance", _dn_not_scaled),
    "normalization range upside down": _set("normalize", _normalize_swapped),
}


@pytest.mark.parametrize("mistake", list(MISTAKES))
def test_each_deliberate_mistake_breaks_the_equivalence(mistake, double, local_stack,
                                                         monkeypatch):
    import ee

    local, manifest = local_stack
    MISTAKES[mistake](monkeypatch)
    try:
        stack = cell_stack(double, manifest["dem"]["offset_m"])
    except (ee.EEException, TypeError):  # refused by the service, or not one float32 type
        return
    assert not equivalent(stack, local), f"{mistake}: still equivalent"
