"""The per-pixel rules that make a cell's composite: Sentinel-1 border noise, the median over
dates, the fusion of the two DEMs and the rule that a pixel lacking a band lacks them all.
Pure numpy, no I/O."""
from __future__ import annotations

import numpy as np

from gee_export.config import DEM_SOURCE_HMA, DEM_SOURCE_NONE, DEM_SOURCE_SRTM, RecipeConfig


def s1_noise_rule(bands: dict[str, np.ndarray], cfg: RecipeConfig) -> np.ndarray:
    """Mask residual GRD border noise in place, on the source's own grid (before any
    resampling, so noise never blends into its neighbours): VV under its floor removes the
    pixel in both polarisations, VH under its own floor removes VH. Returns where it removed
    a value."""
    vv, vh = bands["VV"], bands["VH"]
    with np.errstate(invalid="ignore"):
        noise = vv < cfg.s1_noise_floor_db
        low_vh = (vh < cfg.s1_vh_floor_db) & ~noise
    removed = noise | low_vh
    vv[noise] = np.nan
    vh[removed] = np.nan
    return removed


def nan_median(stack: np.ndarray) -> np.ndarray:
    """Median over axis 0 ignoring NaN (the mean of the middle two for an even count), NaN
    where every date is masked. bottleneck's C partial sort is about 6x faster than
    np.nanmedian on (dates, h, w) stacks of float32 and gives identical results."""
    import bottleneck

    if stack.shape[0] == 0:
        return np.full(stack.shape[1:], np.nan, np.float32)
    return bottleneck.nanmedian(stack, axis=0).astype(np.float32, copy=False)


def fuse_dem(hma: np.ndarray, srtm: np.ndarray, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Elevation on SRTM's EGM96 datum: HMA minus the offset where HMA has data, else SRTM.

    Returns the elevation and which source filled each pixel (DEM_SOURCE_HMA 1, _SRTM 2,
    _NONE 0).
    """
    has_hma = np.isfinite(hma)
    elev = np.where(has_hma, hma - np.float32(offset), srtm).astype(np.float32)
    source = np.where(has_hma, DEM_SOURCE_HMA, np.where(np.isfinite(srtm), DEM_SOURCE_SRTM,
                                                        DEM_SOURCE_NONE)).astype(np.uint8)
    return elev, source


def mask_invalid_pixels(stack: np.ndarray) -> np.ndarray:
    """A pixel lacking any band is nodata in all bands: the label there becomes 255."""
    bad = ~np.isfinite(stack).all(axis=0)
    stack[:, bad] = np.nan
    return stack
