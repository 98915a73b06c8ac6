"""Sentinel-2's pixels by their spectrum: the normalized differences, snow and ice, and which
pixels of one scene a cloud mask keeps (by SCL or by Cloud Score+). Pure numpy, no I/O."""
from __future__ import annotations

import numpy as np

from gee_export.config import RecipeConfig

# SCL classes masked as no data (0, 1), cloud shadow (3), cloud (8, 9) or cirrus (10).
SCL_MASKED = (0, 1, 3, 8, 9, 10)
SCL_CLOUDY = (8, 9, 10)
SCL_SNOW_ICE = 11


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a - b) / (a + b) as Earth Engine computes it: masked (NaN) where an input is masked or
    negative, or both are zero."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (a - b) / (a + b)
    out[(a < 0) | (b < 0) | ~np.isfinite(out)] = np.nan
    return out.astype(np.float32, copy=False)


def indices(refl: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """NDVI, NDSI, NDWI from composite reflectance (never from dB or DN)."""
    return {"NDVI": normalized_difference(refl["B8"], refl["B4"]),
            "NDSI": normalized_difference(refl["B3"], refl["B11"]),
            "NDWI": normalized_difference(refl["B3"], refl["B8"])}


def snow_ice(refl: dict[str, np.ndarray], cfg: RecipeConfig) -> np.ndarray:
    """Snow and ice by their spectrum: high NDSI and a dark SWIR, which cloud never has."""
    with np.errstate(invalid="ignore"):
        ndsi = normalized_difference(refl["B3"], refl["B11"])
        return (ndsi >= cfg.snow_ndsi_min) & (refl["B11"] <= cfg.snow_b11_max)


def keep_by_scl(scl: np.ndarray, refl: dict[str, np.ndarray], cfg: RecipeConfig) -> np.ndarray:
    """Pixels kept from one scene by SCL: not cloud or shadow, and snow/ice always.

    SCL marks bright snow as cloud often enough to eat glaciers, so SCL snow/ice (11) and the
    spectral snow test both overrule a cloud flag; SCL no-data (0, 1) never does.
    """
    nodata = (scl == 0) | (scl == 1)
    cloudy = np.isin(scl, SCL_MASKED)
    keep = ~cloudy | (scl == SCL_SNOW_ICE) | snow_ice(refl, cfg)
    return keep & ~nodata


def keep_by_cloud_score(score: np.ndarray, scl: np.ndarray | None,
                        refl: dict[str, np.ndarray], cfg: RecipeConfig) -> np.ndarray:
    """Pixels kept from one scene by Cloud Score+ (the Earth Engine recipe's mask): clear by the
    score, or snow/ice by spectrum, or SCL snow/ice (L2A). As in Earth Engine's image algebra,
    a pixel where any input of the test is masked is not kept."""
    tested = np.isfinite(score) & np.isfinite(refl["B3"]) & np.isfinite(refl["B11"])
    with np.errstate(invalid="ignore"):
        keep = (score >= cfg.cloud_score_threshold) | snow_ice(refl, cfg)
    if scl is not None:
        tested &= (scl != 0) & (scl != 1)
        keep |= scl == SCL_SNOW_ICE
    return keep & tested
