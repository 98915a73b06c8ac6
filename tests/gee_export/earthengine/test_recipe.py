"""The Earth Engine recipe as serialized graphs: built offline, asserted on what the server
would be asked to compute."""
from __future__ import annotations

import geopandas as gpd
import pytest
from ee_double import calls, graph
from shapely.geometry import box

from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import GlacierError
from gee_export.common.grid import iter_cells
from gee_export.config import Normalization, RecipeConfig
from gee_export.earthengine import recipe as R
from gee_export.regions import QILIAN


@pytest.fixture
def aoi(ee_offline):
    return R.grid_rectangle(QILIAN.grid)


def _filters(tree, name):
    return [c.args for c in calls(tree, name)]


def test_s1_filters_and_noise_floor(aoi):
    cfg = RecipeConfig(year=2019, s1_orbit="descending")
    tree = graph(R.s1_composite(aoi, cfg))
    assert calls(tree, "ImageCollection.load")[0].args["id"] == "COPERNICUS/S1_GRD"
    eqs = {(a["leftField"], a["rightValue"]) for a in _filters(tree, "Filter.equals")}
    assert {("instrumentMode", "IW"), ("resolution_meters", 10),
            ("orbitProperties_pass", "DESCENDING")} <= eqs
    pols = {a["rightValue"] for a in _filters(tree, "Filter.listContains")}
    assert pols == {"VV", "VH"}
    window = calls(tree, "Filter.dateRangeContains")[0].args["leftValue"].args
    assert (window["start"], window["end"]) == ("2019-07-01", "2019-08-01")
    floor = calls(tree, "Image.gte")[0].args
    assert floor["image2"].args["value"] == -30.0
    assert floor["image1"].args["bandSelectors"] == ["VV", "VH"]
    assert calls(tree, "reduce.median")
    both = graph(R.s1_composite(aoi, RecipeConfig(year=2019)))
    assert not any(a["leftField"] == "orbitProperties_pass"
                   for a in _filters(both, "Filter.equals"))


def test_s1_window_widens_after_sentinel_1b(aoi):
    tree = graph(R.s1_collection(aoi, RecipeConfig(year=2023)))
    window = calls(tree, "Filter.dateRangeContains")[0].args["leftValue"].args
    assert (window["start"], window["end"]) == ("2023-06-15", "2023-08-16")


def test_s2_collection_cloud_filter_and_cloud_score_link(aoi):
    cfg = RecipeConfig(year=2020)
    tree = graph(R.s2_collection(aoi, cfg))
    loads = {c.args["id"] for c in calls(tree, "ImageCollection.load")}
    assert loads == {"COPERNICUS/S2_SR_HARMONIZED", "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED"}
    lt = _filters(tree, "Filter.lessThan")
    assert lt == [{"leftField": "CLOUDY_PIXEL_PERCENTAGE", "rightValue": 5.0}]
    link = calls(tree, "Image.linkCollection")
    assert link and link[0].args["linkedBands"] == ["cs_cdf"]


def test_s2_keep_mask_spares_snow_and_ice(aoi):
    """The mask is Cloud Score+ OR spectral snow OR SCL 11: snow/ice survives a cloud score
    that calls it cloud."""
    cfg = RecipeConfig(year=2020, cloud_score_threshold=0.6)
    import ee

    tree = graph(R.s2_keep(ee.Image("x"), cfg))
    ors = calls(tree, "Image.or")
    assert len(ors) == 2  # cloud score | snow, then | SCL 11
    gte = [c for c in calls(tree, "Image.gte")]
    consts = sorted(str(c.args["image2"]) for c in gte)
    assert any("0.6" in s for s in consts) and any("0.4" in s for s in consts)
    assert any("0.2" in str(c.args["image2"]) for c in calls(tree, "Image.lte"))
    assert any("11" in str(c.args["image2"]) for c in calls(tree, "Image.eq"))
    # L1C has no SCL: only Cloud Score+ and the spectral test.
    l1c = graph(R.s2_keep(ee.Image("x"), cfg.with_(s2_level="l1c")))
    assert len(calls(l1c, "Image.or")) == 1 and not calls(l1c, "Image.eq")


def test_l1c_option_uses_top_of_atmosphere_collection(aoi):
    tree = graph(R.s2_scenes(aoi, RecipeConfig(year=2018, s2_level="l1c")))
    assert calls(tree, "ImageCollection.load")[0].args["id"] == "COPERNICUS/S2_HARMONIZED"


def test_reflectance_scaled_and_resampled_before_composite(aoi):
    import ee

    tree = graph(R.s2_reflectance(ee.Image("x"), RecipeConfig(year=2020)))
    assert calls(tree, "Image.resample")[0].args["mode"] == "bilinear"
    assert "10000" in str(calls(tree, "Image.divide")[0].args["image2"])


def test_indices_are_normalized_differences_of_the_band_table(ee_offline):
    import ee

    tree = graph(R.indices(ee.Image("refl")))
    pairs = [c.args["bandNames"] for c in calls(tree, "Image.normalizedDifference")]
    assert sorted(map(tuple, pairs)) == sorted([("B8", "B4"), ("B3", "B11"), ("B3", "B8")])


def test_dem_mosaic_keeps_srtm_outside_hma_and_removes_offset(ee_offline):
    tree = graph(R.elevation("users/me/hma", -31.7))
    unmask = calls(tree, "Image.unmask")[-1]
    assert unmask.args["sameFootprint"] is False
    assert calls(tree, "Image.subtract") and "-31.7" in str(calls(tree, "Image.subtract")[0].args)
    ids = {c.args["id"] for c in calls(tree, "Image.load")}
    assert ids == {"users/me/hma", "USGS/SRTMGL1_003"}
    assert any("-9999" in str(c.args) for c in calls(tree, "Image.neq"))
    srtm_only = graph(R.elevation(None, 0.0))
    assert {c.args["id"] for c in calls(srtm_only, "Image.load")} == {"USGS/SRTMGL1_003"}


def test_dem_offset_is_a_median_off_glaciers(ee_offline):
    glaciers = R.outlines_collection([box(0, 0, 100, 100)], "EPSG:32647")
    tree = graph(R.dem_offset("users/me/hma", R.grid_rectangle(QILIAN.grid), glaciers))
    rr = calls(tree, "Image.reduceRegion")[0].args
    assert rr["scale"] == R.OFFSET_SCALE_M and rr["tileScale"] == R.STATS_TILE_SCALE
    assert "bestEffort" not in rr
    assert calls(tree, "Image.paint")  # glacier outlines excluded via a painted mask
    assert calls(tree, "Image.not")


def test_export_image_bands_order_nodata_and_normalization(aoi):
    cfg = RecipeConfig(year=2018)
    img = R.export_image(R.physical_stack(aoi, cfg, None, 0.0), Normalization.fixed(),
                         R.s2_mask_counts(aoi, cfg))
    tree = graph(img)
    renames = [c.args["names"] for c in calls(tree, "Image.rename")]
    assert list(BAND_NAMES) in renames
    assert any(c.args.get("bandSelectors") == list(BAND_NAMES)
               for c in calls(tree, "Image.select"))
    unm = [c.args for c in calls(tree, "Image.unmask")
           if c.args["value"].args["value"] == R.EE_NODATA]
    assert unm and unm[0]["sameFootprint"] is False
    assert calls(tree, "Image.clamp")[0].args["low"] == 0
    consts = [c.args["value"] for c in calls(tree, "Image.constant")]
    lo, hi = Normalization.fixed().arrays()
    assert [float(v) for v in lo] in consts and [float(v) for v in hi - lo] in consts
    assert calls(tree, "Image.toFloat")


def test_cell_grid_matches_cell_transform():
    grid = QILIAN.grid
    cell = list(iter_cells(grid, 768))[5]
    g = R.cell_grid(grid, cell)
    t = g["affineTransform"]
    assert g["crsCode"] == "EPSG:32647"
    assert (t["translateX"], t["translateY"]) == (grid.x0 + cell.col_off * 10,
                                                 grid.y0 - cell.row_off * 10)
    assert (t["scaleX"], t["scaleY"]) == (10.0, -10.0)
    assert g["dimensions"] == {"width": cell.width, "height": cell.height}


def test_export_task_to_gcs_and_drive(ee_offline):
    import ee

    grid, cell = QILIAN.grid, list(iter_cells(QILIAN.grid, 768))[3]
    t = R.export_task(ee.Image(1), grid, cell, "gcs", "qilian-2018-" + cell.id, "pre", bucket="b")
    opts = t.config["fileExportOptions"]
    assert opts["cloudStorageDestination"] == {"bucket": "b", "filenamePrefix": f"pre/{cell.id}"}
    assert opts["fileFormat"] == "GEO_TIFF"
    tree = graph(t.config["expression"])
    rp = calls(tree, "Image.reproject")[0].args
    tr = cell.transform(grid)
    assert rp["crs"].args["crs"] == "EPSG:32647"
    assert rp["crsTransform"] == [tr.a, tr.b, tr.c, tr.d, tr.e, tr.f]
    clip = calls(tree, "Image.clipToBoundsAndScale")[0].args["geometry"].args
    assert clip["coordinates"] == [0, 0, cell.width, cell.height]
    d = R.export_task(ee.Image(1), grid, cell, "drive", "x", "pre", folder="F")
    assert d.config["fileExportOptions"]["driveDestination"]["folder"] == "F"
    with pytest.raises(GlacierError, match="--to"):
        R.export_task(ee.Image(1), grid, cell, "ftp", "x", "pre")


def test_pick_nearest_outline_per_glacier():
    f = gpd.GeoDataFrame({"glac_id": ["G1", "G1", "G2", "G3"],
                          "src_date": ["2001-08-01", "2016-09-10", "1999-01-01", None],
                          "db_area": [1.0, 0.9, 2.0, 0.1]},
                         geometry=[box(0, 0, 1, 1)] * 4, crs="EPSG:4326")
    out = R.pick_nearest_outlines(f, 2018).set_index("glac_id")
    assert out.loc["G1", "src_date"] == "2016-09-10"
    assert set(out.index) == {"G1", "G2", "G3"}


def test_percentile_stats_parsed_into_normalization():
    stats = {f"{b}_p2": -1.0 for b in BAND_NAMES} | {f"{b}_p98": 2.0 for b in BAND_NAMES}
    n = R.norm_from_percentiles(stats, (2.0, 98.0), "test")
    assert n.mode == "percentile" and n.ranges["VV"] == (-1.0, 2.0)
    del stats["NDSI_p98"]
    with pytest.raises(GlacierError, match="NDSI"):
        R.norm_from_percentiles(stats, (2.0, 98.0), "test")
