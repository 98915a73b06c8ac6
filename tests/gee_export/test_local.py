"""The local recipe: its pure science against hand values, and reading real rasters that lack
nodata tags or cover only part of a cell."""
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import GlacierError
from gee_export.common.grid import Cell, ExportGrid
from gee_export.config import Normalization, RecipeConfig, normalize
from gee_export.local import (
    OffsetHistogram,
    fuse_dem,
    indices,
    keep_by_cloud_score,
    keep_by_scl,
    mask_invalid_pixels,
    nan_median,
    normalized_difference,
    placing,
    read_source,
    s1_noise_rule,
)
from tests.helpers import physical

CFG = RecipeConfig(2018)
DATA = Path(__file__).resolve().parents[1] / "data"


def test_normalized_difference_matches_hand_values_and_masks_negatives():
    a = np.array([0.5, 0.2, -0.1, 0.0, np.nan])
    b = np.array([0.1, 0.2, 0.3, 0.0, 0.2])
    out = normalized_difference(a, b)
    assert out[0] == pytest.approx(0.4 / 0.6)
    assert out[1] == 0
    assert np.isnan(out[2:]).all()


def test_indices_use_standard_signs():
    r = {"B3": np.array([0.8]), "B4": np.array([0.05]), "B8": np.array([0.4]),
         "B11": np.array([0.1])}
    i = indices(r)
    assert i["NDVI"][0] == pytest.approx((0.4 - 0.05) / 0.45)
    assert i["NDSI"][0] == pytest.approx(0.7 / 0.9)
    assert i["NDWI"][0] == pytest.approx(0.4 / 1.2)


def test_scl_mask_keeps_snow_flagged_as_cloud_and_drops_real_cloud():
    # pixel 0: ice that SCL calls cloud (8); 1: real cloud (bright SWIR); 2: shadow;
    # 3: SCL snow (11); 4: clear rock; 5: no data
    scl = np.array([8, 9, 3, 11, 5, 0], np.uint8)
    refl = {"B3": np.array([0.8, 0.7, 0.1, 0.7, 0.15, 0.0]),
            "B11": np.array([0.06, 0.5, 0.08, 0.05, 0.28, 0.0])}
    assert keep_by_scl(scl, refl, CFG).tolist() == [True, False, False, True, True, False]


def test_cloud_score_mask_follows_earth_engine_algebra():
    # 0: clear; 1: cloudy score, bright SWIR; 2: cloudy score but spectral snow; 3: cloudy
    # score, SCL snow; 4: clear score but no score value (masked); 5: clear score, B11 masked;
    # 6: clear score where SCL says no data
    score = np.array([0.9, 0.2, 0.2, 0.2, np.nan, 0.9, 0.9])
    scl = np.array([5, 5, 5, 11, 5, 5, 0], np.uint8)
    refl = {"B3": np.array([0.2, 0.7, 0.8, 0.3, 0.2, 0.2, 0.2]),
            "B11": np.array([0.25, 0.5, 0.07, 0.25, 0.25, np.nan, 0.25])}
    keep = keep_by_cloud_score(score, scl, refl, CFG)
    assert keep.tolist() == [True, False, True, True, False, False, False]
    # L1C has no SCL: the SCL term drops out, pixel 3 is cloud again.
    assert keep_by_cloud_score(score, None, refl, CFG).tolist()[3] is False


def test_median_ignores_masked_dates_and_averages_an_even_count():
    rng = np.random.default_rng(0)
    s = rng.random((4, 30, 30)).astype(np.float32)
    s[rng.random(s.shape) < 0.4] = np.nan
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):  # all-NaN pixels exist
        want = np.nanmedian(s, axis=0).astype(np.float32)
    np.testing.assert_array_equal(nan_median(s), want)
    two = np.array([[1.0, np.nan], [3.0, np.nan]], np.float32)
    assert nan_median(two)[0] == 2.0 and np.isnan(nan_median(two)[1])


def test_s1_noise_rule_keeps_legitimately_low_vh():
    vv = np.array([-12.0, -31.0, -24.0, -20.0, np.nan], np.float32)
    vh = np.array([-19.0, -36.0, -33.0, -41.0, -20.0], np.float32)  # 2: calm water
    removed = s1_noise_rule({"VV": vv, "VH": vh}, CFG)
    assert np.isnan(vv).tolist() == [False, True, False, False, True]
    assert np.isnan(vh).tolist() == [False, True, False, True, False]
    assert removed.tolist() == [False, True, False, True, False]


def test_dem_fusion_removes_offset_so_no_seam():
    truth = np.linspace(3000, 3100, 10)
    hma = truth - 31.7  # ellipsoidal = geoid + N, N = -31.7
    hma[6:] = np.nan  # HMA gap; SRTM fills it
    srtm = truth.copy()
    h = OffsetHistogram()
    h.add(hma - srtm)
    off = h.median()
    assert off == pytest.approx(-31.7, abs=0.05)
    elev, src = fuse_dem(hma, srtm, off)
    assert np.abs(elev - truth).max() < 0.05
    assert src.tolist() == [1] * 6 + [2] * 4


def test_normalization_round_trip_and_clamp():
    norm = Normalization.fixed()
    phys = np.array([[-12.0], [-20.0], [0.1], [0.2], [0.3], [0.4], [0.05], [0.5], [-0.2],
                     [0.1], [4321.0]], np.float32)
    n = normalize(phys.copy(), norm)
    assert ((n >= 0) & (n <= 1)).all()
    assert np.allclose(physical(n, norm), phys, atol=1e-3)
    big = phys.copy()
    big[10] = 12000
    assert normalize(big, norm)[10, 0] == 1.0
    assert Normalization.from_dict(norm.to_dict()).ranges == norm.ranges


def test_pixel_missing_a_band_is_nodata_everywhere():
    s = np.ones((11, 2, 2), np.float32)
    s[3, 0, 1] = np.nan
    out = mask_invalid_pixels(s)
    assert np.isnan(out[:, 0, 1]).all() and np.isfinite(out[:, 1, 1]).all()


@pytest.mark.parametrize("year", [2016, 2999])
def test_year_outside_sentinel_era(year):
    with pytest.raises(GlacierError, match="2017"):
        RecipeConfig(year)


def test_a_season_still_in_progress_is_said_in_one_line(tmp_path, monkeypatch, cli):
    from datetime import date

    from gee_export import cli as export_cli
    from gee_export.common.cli import prep

    cfg = RecipeConfig(2018)  # Sentinel-1 in July, Sentinel-2 July-September
    assert cfg.season_end == "2018-10-01"
    assert cfg.incomplete_season(date(2018, 10, 1)) is None
    assert cfg.incomplete_season(date(2019, 3, 1)) is None
    assert "end on 2018-10-01, today is 2018-09-30" in cfg.incomplete_season(date(2018, 9, 30))
    assert RecipeConfig(2018, s2_window=("07-01", "08-01")).incomplete_season(
        date(2018, 8, 5)) is None
    monkeypatch.setattr(export_cli, "_today", lambda: date(2018, 8, 15))
    res = cli(prep, ["export", "--region", "demo", "--year", 2018, "--demo-size", 512,
                     "--dry-run", "--workspace", tmp_path])
    warned = [ln for ln in res.output.splitlines() if "season" in ln]
    assert warned == [
        "warning: --year 2018: its season is incomplete (the date windows end on 2018-10-01, "
        "today is 2018-08-15): the composite takes only the scenes acquired so far, and a "
        "rerun later reuses it as it is; rerun with --force after the season for the whole "
        "of it"]
    monkeypatch.setattr(export_cli, "_today", lambda: date(2018, 10, 2))
    res = cli(prep, ["export", "--region", "demo", "--year", 2018, "--demo-size", 512,
                     "--dry-run", "--workspace", tmp_path])
    assert "season" not in res.output


def test_an_export_started_before_its_season_ended_says_so_when_reused(demo_export, tmp_path,
                                                                       cli):
    import json
    import shutil
    from datetime import date

    from gee_export.common.cli import prep
    from gee_export.config import started_before_season_end

    m = {"recipe": RecipeConfig(2018).to_dict(), "created_at": "2018-08-15T10:00:00+00:00"}
    assert started_before_season_end(m, date(2018, 9, 30)) is None  # still in it: warned then
    assert "started on 2018-08-15, before its season ended on 2018-10-01" in \
        started_before_season_end(m, date(2018, 10, 1))
    assert started_before_season_end(dict(m, created_at="2018-10-01T00:00:00+00:00"),
                                     date(2019, 1, 1)) is None
    ws = tmp_path / "ws"
    shutil.copytree(demo_export[0], ws, ignore=shutil.ignore_patterns("tiles", "runs",
                                                                      "predictions"))
    mf = ws / "exports" / "demo-2018" / "export.json"
    args = ["export", "--region", "demo", "--year", 2018, "--demo-size", 512, "--cell-size",
            256, "--workspace", ws, "--quiet"]
    assert "season" not in cli(prep, args).output
    mf.write_text(json.dumps(dict(json.loads(mf.read_text()), created_at=m["created_at"])))
    out = cli(prep, args).output.splitlines()
    assert out[-2].endswith("is complete; nothing to do")
    assert out[-1] == ("note: this export was started on 2018-08-15, before its season ended "
                       "on 2018-10-01: it lacks the scenes acquired since; rerun with --force "
                       "to make it with the whole season")


def test_s1_window_widens_after_sentinel_1b():
    assert RecipeConfig(2019).s1_dates == ("2019-07-01", "2019-08-01")
    assert RecipeConfig(2023).s1_dates == ("2023-06-15", "2023-08-16")


# -- reading real and partial sources ----------------------------------------------------------

HEF = DATA / "oggm" / "hef_srtm.tif"  # real SRTM, int16, no nodata tag


def _utm_grid_over(path: Path, crs: str, east_extra_m: float) -> tuple[ExportGrid, Cell]:
    """A 10 m grid over the middle of a raster, reaching east_extra_m past its east edge."""
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as src:
        w, s, e, n = transform_bounds(src.crs, crs, *src.bounds)
    grid = ExportGrid.covering(crs, (e - 3000, (s + n) / 2 - 1500, e + east_extra_m,
                                     (s + n) / 2 + 1500))
    return grid, Cell(0, 0, 0, 0, grid.height, grid.width)


def _outside(path: Path, grid: ExportGrid, margin_deg: float = 1e-4) -> np.ndarray:
    """Pixels of the grid whose centre lies outside the raster's footprint (by more than
    margin_deg, about 8 m, so that rounding on the very edge does not count)."""
    from pyproj import Transformer

    with rasterio.open(path) as src:
        bounds, crs = src.bounds, src.crs
    cols, rows = np.meshgrid(np.arange(grid.width) + 0.5, np.arange(grid.height) + 0.5)
    xs, ys = grid.transform * (cols, rows)
    lon, lat = Transformer.from_crs(grid.crs, crs, always_xy=True).transform(xs, ys)
    m = margin_deg
    return ((lon > bounds.right + m) | (lon < bounds.left - m) | (lat > bounds.top + m)
            | (lat < bounds.bottom - m))


def test_real_srtm_without_nodata_tag_is_nan_outside_its_footprint():
    """The bug this guards: warped without a nodata value, GDAL filled everything past the
    tile with 0 m, and the stack called it valid ground at sea level."""
    grid, cell = _utm_grid_over(HEF, "EPSG:32632", east_extra_m=2000)
    elev = read_source(HEF, "dem", grid, cell, None)[0]["value"]
    outside = _outside(HEF, grid)
    assert 0.2 < outside.mean() < 0.6
    assert np.isnan(elev[outside]).all()
    inner = ~_outside(HEF, grid, margin_deg=-1e-4)
    assert np.isfinite(elev[inner]).all()
    with rasterio.open(HEF) as src:
        lo, hi = src.read(1).min(), src.read(1).max()
    assert lo <= np.nanmin(elev) and np.nanmax(elev) <= hi  # bilinear stays inside the data


def test_dem_voids_are_masked_before_interpolation(tmp_path):
    """An SRTM void (-32768, no tag) must not be blended into its neighbours."""
    with rasterio.open(HEF) as src:
        data, profile = src.read(1), src.profile
    data[100:110, 200:210] = -32768
    void = tmp_path / "void.tif"
    with rasterio.open(void, "w", **profile) as dst:
        dst.write(data, 1)
    grid, cell = _utm_grid_over(HEF, "EPSG:32632", east_extra_m=0)
    grid = ExportGrid.covering("EPSG:32632", _bounds_of_pixels(void, 95, 115, 195, 215))
    cell = Cell(0, 0, 0, 0, grid.height, grid.width)
    elev = read_source(void, "dem", grid, cell, None)[0]["value"]
    assert np.isnan(elev).any() and np.nanmin(elev) > 1000  # no value dragged towards -32768


def _bounds_of_pixels(path, r0, r1, c0, c1):
    from rasterio.warp import transform_bounds

    with rasterio.open(path) as src:
        t = src.transform
        x0, y0 = t * (c0, r0)
        x1, y1 = t * (c1, r1)
        return transform_bounds(src.crs, "EPSG:32632", x0, y1, x1, y0)


def _write(path, data, transform, crs="EPSG:32647", nodata=None, names=()):
    data = np.asarray(data, np.float32)
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype="float32", crs=crs, transform=transform,
                       nodata=nodata) as f:
        f.write(data)
        for i, n in enumerate(names, 1):
            f.set_band_description(i, n)
    return path


GRID = ExportGrid("EPSG:32647", 400_000.0, 4_300_000.0, 64, 64)
CELL = Cell(0, 0, 0, 0, 64, 64)


def test_half_covering_s1_without_tag_is_nan_outside_its_swath(tmp_path):
    db = np.full((2, 66, 66), -12.0, np.float32)
    db[:, :, :30] = 0.0  # GRD fill west of the swath, no nodata tag
    f = _write(tmp_path / "s1.tif", db, Affine(10, 0, GRID.x0 - 5, 0, -10, GRID.y0 + 5),
               names=("VV", "VH"))
    got, _ = read_source(f, "s1", GRID, CELL, ["VV", "VH"])
    assert np.isnan(got["VV"][:, :29]).all() and np.isnan(got["VH"][:, :29]).all()
    # A cell pixel has data where the source pixel under its centre has, and bilinear leaves
    # masked neighbours out: column 29's centre is the edge between file columns 29 (no data)
    # and 30, belongs to 30, and takes its value.
    assert (got["VV"][:, 29:] == -12.0).all()


def test_aligned_source_smaller_than_the_cell_is_nan_around_it(tmp_path):
    f = _write(tmp_path / "small.tif", np.full((1, 20, 30), 7.0),
               Affine(10, 0, GRID.x0 + 100, 0, -10, GRID.y0 - 50))
    got = read_source(f, "dem", GRID, CELL, None)[0]["value"]
    assert (got[5:25, 10:40] == 7).all()
    got[5:25, 10:40] = np.nan
    assert np.isnan(got).all()


def test_a_nodata_tag_wins_over_the_defaults(tmp_path):
    db = np.full((2, 64, 64), -12.0, np.float32)
    db[:, 0, :] = 0.0  # a real 0 dB return
    db[:, 1, :] = np.nan
    f = _write(tmp_path / "tagged.tif", db, GRID.transform, nodata=np.nan, names=("VV", "VH"))
    got, _ = read_source(f, "s1", GRID, CELL, ["VV", "VH"])
    assert (got["VV"][0] == 0).all() and np.isnan(got["VV"][1]).all()


def test_an_alpha_band_is_the_footprint(tmp_path):
    from rasterio.enums import ColorInterp

    alpha = np.full((64, 64), 65535, np.uint16)  # GDAL honours Byte and UInt16 alpha bands
    alpha[:, 40:] = 0
    f = tmp_path / "alpha.tif"
    with rasterio.open(f, "w", driver="GTiff", width=64, height=64, count=2, dtype="uint16",
                       crs=GRID.crs, transform=GRID.transform, photometric="MINISBLACK",
                       alpha="UNSPECIFIED") as dst:
        dst.write(np.full((64, 64), 250, np.uint16), 1)
        dst.write(alpha, 2)
        dst.colorinterp = [ColorInterp.gray, ColorInterp.alpha]
    got = read_source(f, "s2", GRID, CELL, None)[0]["value"]
    assert np.isnan(got[:, 40:]).all() and (got[:, :40] == 250).all()


@pytest.mark.parametrize("scale,shift", [(10, 0), (10, 5), (20, 0), (20, 10), (30, 13), (8, 3), (5, 1),
                                         (9.6, 2)])
def test_numpy_resampling_equals_gdal_warper_per_band(tmp_path, monkeypatch, scale, shift):
    """The numpy path (sources on the grid's axes) against GDAL's warper, one band at a time,
    on data with scattered gaps: the same footprint, values within float32 rounding."""
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    rng = np.random.default_rng(int(10 * scale) + shift)
    n = int(64 * 10 / scale) + 6
    data = (rng.random((2, n, n)) * 40 - 30).astype(np.float32)
    data[rng.random(data.shape) < 0.15] = np.nan
    t = Affine(scale, 0, GRID.x0 - shift - 2 * scale, 0, -scale, GRID.y0 + shift + 2 * scale)
    f = _write(tmp_path / "s.tif", data, t, nodata=np.nan, names=("VV", "VH"))
    for resampling in ("bilinear", "nearest"):
        got, _ = read_source(f, "s1", GRID, CELL, ["VV", "VH"], resampling)
        for i, b in enumerate(("VV", "VH")):
            want = np.full((64, 64), np.nan, np.float32)
            reproject(data[i], want, src_transform=t, src_crs=GRID.crs, src_nodata=np.nan,
                      dst_transform=GRID.transform, dst_crs=GRID.crs, dst_nodata=np.nan,
                      resampling=getattr(Resampling, resampling))
            np.testing.assert_array_equal(np.isnan(got[b]), np.isnan(want))
            np.testing.assert_allclose(got[b], want, rtol=0, atol=2e-5, equal_nan=True)


def test_aligned_sources_are_copied_exactly_as_a_warp_would_resample(tmp_path, monkeypatch):
    rng = np.random.default_rng(1)
    data = rng.random((2, 80, 80)).astype(np.float32)
    data[:, 50:60, 10:20] = np.nan
    f = _write(tmp_path / "aligned.tif", data, Affine(10, 0, GRID.x0 - 80, 0, -10, GRID.y0 + 50),
               names=("VV", "VH"))
    fast, _ = read_source(f, "s1", GRID, CELL, ["VV", "VH"])
    monkeypatch.setattr(placing, "_aligned_offset", lambda *a: None)
    monkeypatch.setattr(placing, "_axis_sampling", lambda *a: None)
    warped, _ = read_source(f, "s1", GRID, CELL, ["VV", "VH"])
    for b in ("VV", "VH"):
        np.testing.assert_allclose(fast[b], warped[b], rtol=0, atol=1e-6, equal_nan=True)


def test_native_rule_removals_are_counted_on_the_cell(tmp_path):
    db = np.full((2, 66, 66), -12.0, np.float32)
    db[0, :, 60:] = -34.0  # border noise in the east, 6 columns of the file
    f = _write(tmp_path / "noise.tif", db, Affine(10, 0, GRID.x0 - 5, 0, -10, GRID.y0 + 5),
               names=("VV", "VH"))
    got, removed = read_source(f, "s1", GRID, CELL, ["VV", "VH"], "bilinear",
                               lambda b: s1_noise_rule(b, CFG))
    noise = np.isnan(got["VV"]) & np.isnan(got["VH"])
    assert noise[:, 61:].all() and not noise[:, :58].any()
    assert removed == pytest.approx(64 * 6, abs=64)


# -- the whole local export on real Sentinel-1/2 pixels ------------------------------------------

def test_local_export_on_real_snow_patch(tmp_path, cli):
    """Real Sentinel-2 L2A and Sentinel-1 pixels (BigEarthNet, a snow-covered patch in
    Finland) through `prep export --source-dir`: the indices come out as computed by hand
    from the files, the snow NDSI is the known +0.76, and outside the patch is nodata."""
    from gee_export.common.cli import prep
    from gee_export.common.grid import region_from_lonlat  # noqa: F401 (documents the grid)

    src = tmp_path / "src"
    src.mkdir()
    s2 = {b: rasterio.open(next((DATA / "bigearthnet" / "s2_snow").glob(f"*_{b}.tif")))
          for b in ("B02", "B03", "B04", "B08", "B11")}
    prof = s2["B02"].profile
    ten = np.stack([s2[b].read(1) for b in ("B02", "B03", "B04", "B08")])
    _write_typed(src / "S2_2018-07-15_B10m.tif", ten, prof, ("B2", "B3", "B4", "B8"), "uint16")
    twenty = np.stack([s2["B11"].read(1), np.full((60, 60), 11)])  # SCL: snow everywhere
    _write_typed(src / "S2_2018-07-15_B20m.tif", twenty, s2["B11"].profile, ("B11", "SCL"),
                 "uint16")
    s1 = DATA / "bigearthnet" / "s1_snow"
    vv = rasterio.open(next(s1.glob("*_VV.tif"))).read(1)
    vh = rasterio.open(next(s1.glob("*_VH.tif"))).read(1)
    _write_typed(src / "S1_2018-07-10_dB.tif", np.stack([vv, vh]), prof, ("VV", "VH"),
                 "float32")
    dem = np.full((1, 120, 120), 150.0)
    _write_typed(src / "DEM_SRTM.tif", dem, prof, ("elevation",), "float32")
    cli(prep, ["export", "--bbox", 30.2846, 62.6685, 30.3174, 62.6836, "--crs", "EPSG:32635",
               "--year", 2018, "--source-dir", src, "--workspace", tmp_path / "ws", "--quiet",
               "--cell-size", 128, "--workers", 1])
    with rasterio.open(tmp_path / "ws" / "exports" / "bbox-2018" / "stack.vrt") as f:
        stack, t = f.read(), f.transform
    col0, row0 = ~t * (prof["transform"].c, prof["transform"].f)
    assert col0 == int(col0) and row0 == int(row0)  # same 10 m lattice
    r, c = int(row0), int(col0)
    patch = stack[:, r:r + 120, c:c + 120]
    phys = physical(patch, Normalization.fixed())
    refl = ten.astype(np.float32) / 10000
    ndwi = (refl[1] - refl[3]) / (refl[1] + refl[3])
    np.testing.assert_allclose(phys[BAND_NAMES.index("NDWI")], ndwi, atol=1e-5)
    np.testing.assert_allclose(phys[BAND_NAMES.index("VV")], np.clip(vv, -30, 5), atol=1e-4)
    ndsi = phys[BAND_NAMES.index("NDSI")]
    assert np.median(ndsi) == pytest.approx(0.76, abs=0.02)
    outside = np.ones(stack.shape[1:], bool)
    outside[r:r + 120, c:c + 120] = False
    assert outside.any() and np.isnan(stack[:, outside]).all()


def _write_typed(path, data, profile, names, dtype):
    p = dict(profile, count=len(data), dtype=dtype, nodata=None)
    p.pop("blockxsize", None), p.pop("blockysize", None), p.pop("tiled", None)
    with rasterio.open(path, "w", **p) as f:
        f.write(np.asarray(data).astype(dtype))
        for i, n in enumerate(names, 1):
            f.set_band_description(i, n)


# -- what identifies the sources -----------------------------------------------------------------

def test_an_edit_anywhere_in_a_source_changes_its_identity(tmp_path, monkeypatch):
    """Sources were once identified by their first 4 MiB: an edit further in went unnoticed.
    A file whose size and time are those recorded is not read again."""
    import os

    from gee_export import local_export

    f = tmp_path / "S1_2018-07-08_dB.tif"
    data = bytearray(os.urandom(5 << 20))
    f.write_bytes(bytes(data))
    first = local_export.source_identities([f])
    data[-10] ^= 0xFF  # past the first 4 MiB, same size
    f.write_bytes(bytes(data))
    st = f.stat()
    os.utime(f, ns=(st.st_atime_ns, first[f.name]["mtime_ns"] + 1))
    edited = local_export.source_identities([f], first)
    assert edited[f.name]["sha256"] != first[f.name]["sha256"]
    assert edited[f.name]["size"] == first[f.name]["size"]

    reads = []
    monkeypatch.setattr(local_export, "file_sha256", lambda p, *a: reads.append(p) or "x")
    assert local_export.source_identities([f], edited) == edited and reads == []
    os.utime(f, ns=(st.st_atime_ns, edited[f.name]["mtime_ns"] + 1))  # touched: read again
    assert local_export.source_identities([f], edited)[f.name]["sha256"] == "x"
    assert reads == [f]


def test_an_edited_source_is_noticed_by_the_rerun(demo_export, tmp_path, cli):
    import shutil

    from click.testing import CliRunner

    from gee_export.common.cli import prep

    ws = tmp_path / "ws"
    shutil.copytree(demo_export[0], ws, ignore=shutil.ignore_patterns("tiles", "runs",
                                                                      "predictions"))
    args = ["export", "--region", "demo", "--year", "2018", "--demo-size", "512",
            "--cell-size", "256", "--workspace", str(ws), "--quiet"]
    assert "nothing to do" in cli(prep, args).output
    s1 = sorted((ws / "sources").glob("*/S1_*.tif"))[0]
    raw = bytearray(s1.read_bytes())
    raw[-3] ^= 0xFF
    s1.write_bytes(bytes(raw))
    res = CliRunner().invoke(prep, args)
    assert res.exit_code == 1 and "made with other options (--source-dir file S1_" in res.output, res.output


def test_an_export_identified_by_4_mib_checksums_is_resumed_and_upgraded(demo_export,
                                                                         tmp_path, cli,
                                                                         monkeypatch):
    """Exports made before whole-file identities are not refused as 'other parameters'."""
    import json
    import shutil

    from gee_export import local_export
    from gee_export.common.cli import prep
    from gee_export.common.layout import file_sha256

    monkeypatch.setattr(local_export, "EARLIER_PREFIX", 1024)  # the demo's files are small

    ws = tmp_path / "ws"
    shutil.copytree(demo_export[0], ws, ignore=shutil.ignore_patterns("tiles", "runs",
                                                                      "predictions"))
    exp = ws / "exports" / "demo-2018"
    m = json.loads((exp / "export.json").read_text())
    sources = ws / "sources" / "demo512-2018"  # other years' may lie beside it
    m["parameters"]["inputs"] = {n: file_sha256(sources / n, 1024)
                                 for n in m["parameters"]["inputs"]}
    del m["input_files"]
    (exp / "export.json").write_text(json.dumps(m))
    args = ["export", "--region", "demo", "--year", 2018, "--demo-size", 512, "--cell-size",
            256, "--workspace", ws, "--quiet"]
    with monkeypatch.context() as mp:  # a no-op, so without the lock (read-only workspaces)
        mp.setattr(local_export, "output_lock", lambda *a, **kw: pytest.fail("locked"))
        assert "nothing to do" in cli(prep, args).output
    sorted((exp / "stack").glob("*.tif"))[0].unlink()
    assert "missing, unreadable or off their grid (r000c000); making that again" in \
        cli(prep, args).output
    upgraded = json.loads((exp / "export.json").read_text())
    assert upgraded["complete"] and set(upgraded["input_files"]) == set(m["parameters"]["inputs"])
    assert upgraded["parameters"]["inputs"] == {n: r["sha256"] for n, r in
                                                upgraded["input_files"].items()}
    assert "nothing to do" in cli(prep, args).output


def test_outlines_are_identified_by_their_features_not_their_bytes(demo_export, tmp_path, cli):
    """issue 31, item 6: the source outlines written again with the same features (new bytes)
    leave the export current; grown by 5 m they do not, and are named."""
    import shutil

    import geopandas as gpd
    import pyogrio

    from gee_export.common.cli import prep
    from gee_export.common.layout import file_sha256

    ws = tmp_path / "ws"
    shutil.copytree(demo_export[0], ws, ignore=shutil.ignore_patterns("tiles", "runs",
                                                                      "predictions"))
    args = ["export", "--region", "demo", "--year", "2018", "--demo-size", "512",
            "--cell-size", "256", "--workspace", str(ws), "--quiet"]
    outlines = ws / "sources" / "demo512-2018" / "outlines.gpkg"
    (layer, _), = pyogrio.list_layers(outlines)
    frame, before = gpd.read_file(outlines), file_sha256(outlines)
    outlines.unlink()
    frame.iloc[::-1].to_file(outlines, layer=layer)  # the same features, in another order
    assert file_sha256(outlines) != before
    assert "nothing to do" in cli(prep, args).output
    utm = frame.estimate_utm_crs()
    outlines.unlink()
    frame.set_geometry(frame.to_crs(utm).buffer(5).to_crs(frame.crs)).to_file(outlines,
                                                                              layer=layer)
    res = cli(prep, args, ok=False)
    assert res.exit_code == 1 and "--outlines (ids and geometries)" in res.output, res.output
