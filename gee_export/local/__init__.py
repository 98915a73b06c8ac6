"""The export recipe on local rasters: the same steps as the Earth Engine path, in numpy.

Inputs, found in a source directory by name (dates ISO, YYYY-MM-DD):
- `S1_<date>*.tif`: Sentinel-1 sigma0 in dB, bands described VV and VH (or in that order);
- `S2_<date>*.tif`: Sentinel-2 L2A DN (reflectance x 10000), bands described B2 B3 B4 B8 B11
  and SCL, spread over any number of files per date (10 m and 20 m files);
- `CS_<date>*.tif`: optionally, Cloud Score+ for that date, bands cs and cs_cdf;
- `DEM_HMA*.tif` (ellipsoidal heights) and `DEM_SRTM*.tif` (EGM96 heights);
- optionally `outlines.gpkg` (or --outlines) for the plan and the DEM offset.

Any CRS and resolution: each source is read in the window that covers a cell, masked where it
has no data, then warped onto the cell in one pass for all its bands (bilinear; SCL and Cloud
Score+ nearest, as Earth Engine samples them without resample()). Memory is bounded by the cell
size, never by the scene.

One concern per module: `spectral` (indices, snow and ice, the cloud masks), `composite` (S1
noise, median, DEM fusion), `histograms` (the region's DEM offset and percentiles), `reading`
(one source onto one cell), `placing` (resampling onto the cell's grid), `sources` (the files
on disk), `cell_reads` (a cell's DEMs and scenes) and `recipe` (`LocalRecipe`: one cell).
"""
from __future__ import annotations

from .composite import fuse_dem, mask_invalid_pixels, nan_median, s1_noise_rule
from .histograms import OffsetHistogram, PercentileAccumulator
from .placing import placer
from .reading import NODATA_DEFAULTS, _valid_mask, band_map, read_source, source_window
from .recipe import CellResult, LocalRecipe
from .sources import CLOUD_MASKS, LocalSources, resolve_cloud_mask, scene_cloud_percent
from .spectral import (
    SCL_CLOUDY,
    SCL_MASKED,
    SCL_SNOW_ICE,
    indices,
    keep_by_cloud_score,
    keep_by_scl,
    normalized_difference,
    snow_ice,
)

__all__ = [
    "CLOUD_MASKS", "NODATA_DEFAULTS", "SCL_CLOUDY", "SCL_MASKED", "SCL_SNOW_ICE", "CellResult",
    "LocalRecipe", "LocalSources", "OffsetHistogram", "PercentileAccumulator", "_valid_mask",
    "band_map", "fuse_dem", "indices", "keep_by_cloud_score", "keep_by_scl",
    "mask_invalid_pixels", "nan_median", "normalized_difference", "placer", "read_source",
    "resolve_cloud_mask", "s1_noise_rule", "scene_cloud_percent", "snow_ice", "source_window",
]
