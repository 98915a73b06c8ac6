import numpy as np
import pytest

from gee_export.common.errors import GlacierError
from gee_export.config import Normalization, RecipeConfig, denormalize, normalize
from gee_export.local import (
    OffsetHistogram,
    fuse_dem,
    indices,
    mask_invalid_pixels,
    mask_s1_noise,
    nan_median,
    normalized_difference,
    s2_clear,
)

CFG = RecipeConfig(2018)


def test_normalized_difference_matches_hand_values_and_masks_negatives():
    a = np.array([0.5, 0.2, -0.1, 0.0])
    b = np.array([0.1, 0.2, 0.3, 0.0])
    out = normalized_difference(a, b)
    assert out[0] == pytest.approx(0.4 / 0.6)
    assert out[1] == 0
    assert np.isnan(out[2]) and np.isnan(out[3])


def test_indices_use_standard_signs():
    r = {"B3": np.array([0.8]), "B4": np.array([0.05]), "B8": np.array([0.4]),
         "B11": np.array([0.1])}
    i = indices(r)
    assert i["NDVI"][0] == pytest.approx((0.4 - 0.05) / 0.45)
    assert i["NDSI"][0] == pytest.approx(0.7 / 0.9)
    assert i["NDWI"][0] == pytest.approx(0.4 / 1.2)


def test_clear_mask_keeps_snow_flagged_as_cloud_and_drops_real_cloud():
    # pixel 0: ice that SCL calls cloud (8); 1: real cloud (bright SWIR); 2: shadow;
    # 3: SCL snow (11); 4: clear rock; 5: no data
    scl = np.array([8, 9, 3, 11, 5, 0], np.uint8)
    refl = {"B3": np.array([0.8, 0.7, 0.1, 0.7, 0.15, 0.0]),
            "B11": np.array([0.06, 0.5, 0.08, 0.05, 0.28, 0.0])}
    keep = s2_clear(scl, refl, CFG)
    assert keep.tolist() == [True, False, False, True, True, False]


def test_median_ignores_masked_dates():
    s = np.array([[1.0, np.nan], [3.0, np.nan], [np.nan, np.nan]], np.float32)
    m = nan_median(s)
    assert m[0] == 2.0 and np.isnan(m[1])


def test_s1_border_noise_masked():
    out = mask_s1_noise(np.array([-10.0, -31.0, np.nan]), -30.0)
    assert out[0] == -10 and np.isnan(out[1:]).all()


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
    assert np.allclose(denormalize(n, norm), phys, atol=1e-3)
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


def test_s1_window_widens_after_sentinel_1b():
    assert RecipeConfig(2019).s1_dates == ("2019-07-01", "2019-08-01")
    assert RecipeConfig(2023).s1_dates == ("2023-06-15", "2023-08-16")
