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
"""
from __future__ import annotations

import re
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from gee_export.common.bands import BAND_NAMES, S1_BANDS, S2_BANDS
from gee_export.common.errors import InputError, InputNotFoundError
from gee_export.common.grid import Cell, ExportGrid, coarse_cell, coarse_grid
from gee_export.common.outlines import OutlineRasterizer
from gee_export.config import (
    DEM_OFFSET_SCALE_M,
    DEM_SOURCE_HMA,
    DEM_SOURCE_NONE,
    DEM_SOURCE_SRTM,
    Normalization,
    RecipeConfig,
    normalize,
)

if TYPE_CHECKING:
    from affine import Affine
    from rasterio.crs import CRS
    from rasterio.io import DatasetReader
    from rasterio.windows import Window

# SCL classes masked as no data (0, 1), cloud shadow (3), cloud (8, 9) or cirrus (10).
SCL_MASKED = (0, 1, 3, 8, 9, 10)
SCL_CLOUDY = (8, 9, 10)
SCL_SNOW_ICE = 11
CLOUD_MASKS = ("auto", "cloudscore", "scl")
_DATED = re.compile(r"^(S1|S2|CS)_(\d{4}-\d{2}-\d{2})")
DEM_OFFSET_BIN_M = 0.05  # resolution of the HMA - SRTM offset histogram
DEM_OFFSET_RANGE_M = 300.0  # plausible |HMA - SRTM| (geoid undulation is within +-110 m)

# What "no data" means in a file without a nodata tag, by kind of source (NaN always does):
# DEMs use -9999 (HMA's fill), -32768 and -32767 (SRTM voids, int16 fills); Sentinel-2 DN 0 is
# L2A's no-data value; Sentinel-1 GRD products are filled with 0 outside the swath.
# "none": every value is data (an asset ingested without a mask).
NODATA_DEFAULTS: dict[str, tuple[float, ...]] = {
    "dem": (-9999.0, -32768.0, -32767.0), "s2": (0.0,), "s1": (0.0,), "cloudscore": (),
    "none": ()}


# --------------------------------------------------------------------------------------------
# Pure science: indices, masks, composites, DEM fusion


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


class OffsetHistogram:
    """Running median of HMA - SRTM at 5 cm resolution in constant memory."""

    def __init__(self):
        self.edges = np.arange(-DEM_OFFSET_RANGE_M, DEM_OFFSET_RANGE_M + DEM_OFFSET_BIN_M / 2,
                               DEM_OFFSET_BIN_M)
        self.counts = np.zeros(len(self.edges) - 1, np.int64)

    def add(self, diff: np.ndarray) -> None:
        d = diff[np.isfinite(diff)]
        self.counts += np.histogram(d, self.edges)[0]

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    def median(self) -> float:
        if self.n == 0:
            return float("nan")
        cum = np.cumsum(self.counts)
        i = int(np.searchsorted(cum, (self.n + 1) / 2))
        return float((self.edges[i] + self.edges[i + 1]) / 2)


def mask_invalid_pixels(stack: np.ndarray) -> np.ndarray:
    """A pixel lacking any band is nodata in all bands: the label there becomes 255."""
    bad = ~np.isfinite(stack).all(axis=0)
    stack[:, bad] = np.nan
    return stack


class PercentileAccumulator:
    """Per-band percentiles over a region in constant memory (histograms on the fixed ranges,
    widened by half on each side so out-of-range values still count)."""

    BINS = 4096

    def __init__(self):
        fixed = Normalization.fixed()
        self.edges = {}
        for b, (lo, hi) in fixed.ranges.items():
            span = hi - lo
            self.edges[b] = np.linspace(lo - span / 2, hi + span / 2, self.BINS + 1)
        self.counts = {b: np.zeros(self.BINS, np.int64) for b in BAND_NAMES}

    def add(self, physical: np.ndarray) -> None:
        for i, b in enumerate(BAND_NAMES):
            v = physical[i][np.isfinite(physical[i])]
            self.counts[b] += np.histogram(v, self.edges[b])[0]

    def merge(self, other: "PercentileAccumulator") -> None:
        for b in BAND_NAMES:
            self.counts[b] += other.counts[b]

    def normalization(self, pcts: tuple[float, float]) -> Normalization:
        ranges = {}
        for b in BAND_NAMES:
            c = np.cumsum(self.counts[b])
            if c[-1] == 0:
                raise InputError(f"percentile normalization: band {b} has no valid pixel")
            e = self.edges[b]
            lo = e[int(np.searchsorted(c, c[-1] * pcts[0] / 100))]
            hi = e[min(len(e) - 1, int(np.searchsorted(c, c[-1] * pcts[1] / 100)) + 1)]
            ranges[b] = (float(lo), float(hi))
        return Normalization("percentile", ranges,
                             f"percentiles {pcts[0]:g}/{pcts[1]:g} over the region (local)")


# --------------------------------------------------------------------------------------------
# Reading any source onto a cell


_CANONICAL = {"CS": "cs", "CS_CDF": "cs_cdf"}  # Cloud Score+ keeps its lower-case names


def band_map(src: DatasetReader) -> dict[str, int]:
    """Band name -> 1-based index from band descriptions (B02 and B2 both accepted)."""
    out = {}
    for i, d in enumerate(src.descriptions, 1):
        if d:
            name = re.sub(r"^B0(\d)$", r"B\1", d.strip().upper())
            out[_CANONICAL.get(name, name)] = i
    return out


def _open(path: Path):
    import rasterio

    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        raise InputError(f"{path}: cannot be read as a raster ({str(e).splitlines()[0]})"
                         ) from None
    if src.crs is None:
        src.close()
        raise InputError(f"{path}: has no CRS")
    return src


def _valid_mask(src, data: np.ndarray, indexes: list[int], window, kind: str) -> np.ndarray:
    """Where the source has data: its nodata tag, alpha band or internal mask when it has
    one, else the documented defaults for its kind; never NaN."""
    from rasterio.enums import MaskFlags

    valid = ~np.isnan(data)
    flags = [src.mask_flag_enums[i - 1] for i in indexes]
    if src.nodata is not None and not np.isnan(src.nodata):
        valid &= data != np.float32(src.nodata)
    elif any(MaskFlags.per_dataset in f or MaskFlags.alpha in f for f in flags):
        valid &= src.read_masks(indexes, window=window) > 0
    elif src.nodata is None:
        for v in NODATA_DEFAULTS[kind]:
            valid &= data != np.float32(v)
    return valid


def source_window(crs: str | CRS, transform: Affine, shape: tuple[int, int], grid: ExportGrid,
                  cell: Cell) -> Window | None:
    """The window of a source (its CRS, transform and (height, width)) that covers the cell
    plus a margin for interpolation, clipped to the source (None when they do not overlap),
    and whether it covers the whole cell. The margin holds every pixel an interpolation
    kernel can reach, which widens where the source is finer than the grid, so that a pixel's
    value never depends on which cell (or half cell) it is computed in."""
    from rasterio.warp import transform_bounds
    from rasterio.windows import Window, from_bounds

    b = transform_bounds(grid.crs, crs, *cell.bounds(grid), densify_pts=21)
    w = from_bounds(*b, transform=transform)
    per_pixel = max(w.width / cell.width, w.height / cell.height)  # source px per cell px
    margin = 2 + int(np.ceil(per_pixel))
    c0, r0 = int(np.floor(w.col_off)) - margin, int(np.floor(w.row_off)) - margin
    c1 = int(np.ceil(w.col_off + w.width)) + margin
    r1 = int(np.ceil(w.row_off + w.height)) + margin
    height, width = shape
    covers = c0 >= 0 and r0 >= 0 and c1 <= width and r1 <= height
    c0, r0, c1, r1 = max(c0, 0), max(r0, 0), min(c1, width), min(r1, height)
    if c1 <= c0 or r1 <= r0:
        return None, False
    return Window(c0, r0, c1 - c0, r1 - r0), covers


def _aligned_offset(crs, t, grid: ExportGrid, cell: Cell) -> tuple[int, int] | None:
    """(row, col) of a window (transform t) on the cell's pixel lattice when the source shares
    the grid's CRS and pixel lattice (then a read needs no resampling), else None."""
    from rasterio.crs import CRS

    g = cell.transform(grid)
    if (t.b, t.d) != (0, 0) or abs(t.a - g.a) > 1e-9 or abs(t.e - g.e) > 1e-9 or \
            CRS.from_user_input(crs) != CRS.from_user_input(grid.crs):
        return None
    col, row = (t.c - g.c) / g.a, (t.f - g.f) / g.e
    if abs(col - round(col)) > 1e-6 or abs(row - round(row)) > 1e-6:
        return None
    return int(round(row)), int(round(col))


def read_source(source: Path, kind: str, grid: ExportGrid, cell: Cell, bands: list[str] | None,
                resampling: str = "bilinear",
                native_rule: Callable[[dict[str, np.ndarray]], np.ndarray] | None = None
                ) -> tuple[dict[str, np.ndarray], int]:
    """Bands of one file (a path or an open dataset) on one cell of the export grid, NaN
    wherever the file has no data (outside its footprint included), all bands in one pass.
    `native_rule` masks values on the file's own grid before resampling and returns where it
    did; the second result is how many cell pixels that removed. `bands=None` reads band 1 as
    "value"."""
    with _opened(source) as src:
        names = _band_indices(src, bands)
        if not names:
            return {}, 0
        window, covers = source_window(src.crs, src.transform, src.shape, grid, cell)
        if window is None:
            return {b: np.full((cell.height, cell.width), np.nan, np.float32) for b in names}, 0
        idx = list(names.values())
        data = src.read(idx, window=window, out_dtype="float32")
        data[~_valid_mask(src, data, idx, window, kind)] = np.nan
        removed = native_rule(dict(zip(names, data))) if native_rule else None
        place = placer(src.crs, src.window_transform(window), grid, cell, covers)
        out = dict(zip(names, place(data, resampling)))
        if removed is None or not removed.any():
            return out, 0
        return out, int((place(removed[None].astype(np.float32), "nearest")[0] > 0.5).sum())


@contextmanager
def _opened(source):
    """An open dataset for a path (closed after), or the dataset given (left open)."""
    if isinstance(source, (str, Path)):
        with _open(Path(source)) as src:
            yield src
    else:
        yield source


def placer(crs: str | CRS, window_transform: Affine, grid: ExportGrid, cell: Cell,
           covers: bool = False) -> Callable[[np.ndarray, str], np.ndarray]:
    """A function putting (bands, h, w) arrays of a source window (its CRS and transform), NaN
    where it has no data, onto the cell; NaN where nothing lands: a plain copy where the
    source shares the cell's pixel lattice, numpy where it is only shifted or scaled on the
    same axes, GDAL's warper otherwise. Every local source goes through here."""
    from rasterio.enums import Resampling
    from rasterio.warp import reproject

    aligned = _aligned_offset(crs, window_transform, grid, cell)
    axes = _axis_sampling(crs, window_transform, grid, cell) if aligned is None else None

    def place(data: np.ndarray, resampling: str) -> np.ndarray:
        if aligned is not None:
            return _copy_aligned(data, aligned, cell)
        if axes is not None:
            return _resample_axes(data, axes, resampling)
        dst = np.full((len(data), cell.height, cell.width), np.nan, np.float32)
        # Where the window covers the whole cell and holds no gap, GDAL's warper can skip its
        # validity masks: 2.6x faster, the same values. With gaps, one band at a time: GDAL
        # would otherwise unify the bands' masks.
        gaps = not covers or np.isnan(data).any()
        for band, out in ([(data, dst)] if not gaps else zip(data, dst)):
            reproject(band, out, src_transform=window_transform, src_crs=crs,
                      src_nodata=np.nan if gaps else None, dst_transform=cell.transform(grid),
                      dst_crs=grid.crs, dst_nodata=np.nan if gaps else None,
                      resampling=getattr(Resampling, resampling), num_threads=1)
        return dst

    return place


def _copy_aligned(data: np.ndarray, offset: tuple[int, int], cell: Cell) -> np.ndarray:
    r, c = offset
    h, w = data.shape[1:]
    dst = np.full((len(data), cell.height, cell.width), np.nan, np.float32)
    rs = slice(max(r, 0), min(r + h, cell.height))
    cs = slice(max(c, 0), min(c + w, cell.width))
    dst[:, rs, cs] = data[:, rs.start - r:rs.stop - r, cs.start - c:cs.stop - c]
    return dst


def _axis_sampling(crs, t, grid: ExportGrid, cell: Cell):
    """Where each cell pixel centre falls in a window (transform t), per axis, and each axis'
    scale (source pixel size over cell pixel size), when the source is in the grid's CRS
    without rotation; else None."""
    from rasterio.crs import CRS

    g = cell.transform(grid)
    if (t.b, t.d, g.b, g.d) != (0, 0, 0, 0) or \
            CRS.from_user_input(crs) != CRS.from_user_input(grid.crs):
        return None
    cols = ((g.c + g.a * (np.arange(cell.width) + 0.5)) - t.c) / t.a
    rows = ((g.f + g.e * (np.arange(cell.height) + 0.5)) - t.f) / t.e
    return rows, cols, abs(t.e / g.e), abs(t.a / g.a)


def _resample_axes(data: np.ndarray, axes, resampling: str) -> np.ndarray:
    """Nearest or bilinear resampling along unrotated axes, as GDAL's warper does it for one
    band: a cell pixel has data where the source pixel under its centre has; bilinear weighs
    the source pixels around the centre with a tent (2 x 2 pixels, or wider when the source
    is finer than the cell, stretched by the scale), leaves masked (NaN) or missing ones out
    and renormalizes. Separable, so two 1-D passes: rows, then columns."""
    rows, cols, row_scale, col_scale = axes
    if row_scale >= 0.95 and col_scale >= 0.95:  # GDAL's switch to its plain 2x2 kernel
        row_scale = col_scale = 1.0
    h, w = data.shape[1:]
    if resampling == "nearest":
        r, c = np.floor(rows).astype(int), np.floor(cols).astype(int)
        ok = (r >= 0) & (r < h), (c >= 0) & (c < w)
        out = data[:, np.clip(r, 0, h - 1)][:, :, np.clip(c, 0, w - 1)]
        out[:, ~ok[0]] = np.nan
        out[:, :, ~ok[1]] = np.nan
        return out.astype(np.float32, copy=False)
    valid = np.isfinite(data)
    values = np.where(valid, data, np.float32(0))
    (ri, rw), (ci, cw) = _tent_taps(rows, h, row_scale), _tent_taps(cols, w, col_scale)
    num = _apply_taps(_apply_taps(values, ri, rw, axis=1), ci, cw, axis=2)
    den = _apply_taps(_apply_taps(valid.astype(np.float32), ri, rw, axis=1), ci, cw, axis=2)
    under = _resample_axes(valid.astype(np.float32), axes, "nearest") > 0  # centre's pixel
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(under & (den > 0), num / den,
                        np.float32(np.nan)).astype(np.float32, copy=False)


def _tent_taps(coords: np.ndarray, n: int, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """For pixel coordinates along one axis: the source indices around each centre and their
    weights under GDAL's bilinear tent, whose radius grows to 1 / scale where the source is
    finer than the cell (scale < 1); weight 0 for an index outside 0..n-1 (then clipped)."""
    scale = min(1.0, scale)
    radius = int(np.ceil(1 / scale - 1e-9))
    i0 = np.floor(coords - 0.5).astype(int)
    delta = 0.5 - (coords - i0)  # GDAL's dfDeltaX
    taps = np.arange(1 - radius, radius + 1)
    idx = i0[None, :] + taps[:, None]
    weights = np.maximum(0.0, 1 - np.abs((taps[:, None] + delta[None, :]) * scale))
    weights = weights * ((idx >= 0) & (idx < n))
    return np.clip(idx, 0, n - 1), weights.astype(np.float32)


def _apply_taps(a: np.ndarray, idx: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    shape = [1, 1, 1]
    shape[axis] = -1
    out = None
    for i, wt in zip(idx, weights):
        term = np.take(a, i, axis=axis) * wt.reshape(shape)
        out = term if out is None else out + term
    return out


def _band_indices(src, bands: list[str] | None) -> dict[str, int]:
    if bands is None:
        return {"value": 1}
    names = band_map(src)
    if not names and src.count == len(bands):
        names = {b: i for i, b in enumerate(bands, 1)}
    return {b: names[b] for b in bands if b in names}


# --------------------------------------------------------------------------------------------
# Sources on disk


@dataclass
class LocalSources:
    s1: dict[str, list[Path]] = field(default_factory=dict)  # date -> files
    s2: dict[str, list[Path]] = field(default_factory=dict)
    cloud_score: dict[str, list[Path]] = field(default_factory=dict)
    hma: list[Path] = field(default_factory=list)
    srtm: list[Path] = field(default_factory=list)
    outlines: Path | None = None
    # scene -> cloud percent known from its metadata (a STAC item's eo:cloud_cover); a scene
    # not in it has its cloud measured from its SCL
    cloud_percent: dict[str, float] = field(default_factory=dict)

    @classmethod
    def scan(cls, directory: Path) -> "LocalSources":
        directory = Path(directory)
        if not directory.is_dir():
            raise InputNotFoundError(f"--source-dir {directory}: no such directory")
        s = cls()
        groups = {"S1": defaultdict(list), "S2": defaultdict(list), "CS": defaultdict(list)}
        for f in sorted(directory.glob("*.tif")):
            m = _DATED.match(f.name)
            if m:
                groups[m.group(1)][m.group(2)].append(f)
            elif f.name.startswith("DEM_HMA"):
                s.hma.append(f)
            elif f.name.startswith("DEM_"):
                s.srtm.append(f)
        s.s1, s.s2, s.cloud_score = (dict(groups[k]) for k in ("S1", "S2", "CS"))
        if (directory / "outlines.gpkg").is_file():
            s.outlines = directory / "outlines.gpkg"
        return s

    def in_window(self, which: str, window: tuple[str, str]) -> dict[str, list[Path]]:
        return {d: fs for d, fs in getattr(self, which).items() if window[0] <= d < window[1]}

    def all_files(self) -> list[Path]:
        fs = [f for d in (self.s1, self.s2, self.cloud_score) for v in d.values() for f in v]
        return sorted(fs + self.hma + self.srtm)


def scene_cloud_percent(files: list[Path]) -> float | None:
    """Share of a scene's valid pixels that SCL calls cloud, from a decimated read of SCL
    (the local stand-in for the scene metadata's CLOUDY_PIXEL_PERCENTAGE)."""
    from rasterio.enums import Resampling

    for f in files:
        with _open(f) as src:
            names = band_map(src)
            if "SCL" in names:
                h, w = max(1, src.height // 4), max(1, src.width // 4)
                scl = src.read(names["SCL"], out_shape=(h, w), resampling=Resampling.nearest)
                valid = (scl != 0) & (scl != 1)
                return 100.0 * float(np.isin(scl, SCL_CLOUDY)[valid].sum()) / max(1, valid.sum())
    return None


def resolve_cloud_mask(requested: str, sources: LocalSources, s2_dates: list[str]) -> str:
    """'cloudscore' or 'scl'; 'auto' picks Cloud Score+ when every scene has a CS_ file, as
    the Earth Engine recipe uses it."""
    if requested not in CLOUD_MASKS:
        raise InputError(f"--cloud-mask {requested!r}: use {', '.join(CLOUD_MASKS)}")
    have = all(d in sources.cloud_score for d in s2_dates)
    if requested == "cloudscore" and not have:
        missing = [d for d in s2_dates if d not in sources.cloud_score]
        raise InputNotFoundError(f"--cloud-mask cloudscore: no CS_<date>*.tif for scene(s) "
                                 f"{', '.join(missing)}")
    if requested == "auto":
        return "cloudscore" if have else "scl"
    return requested


# --------------------------------------------------------------------------------------------
# One cell of the recipe


@dataclass
class CellResult:
    stack: np.ndarray  # (11, h, w) normalized float32
    physical: np.ndarray  # (11, h, w) before normalization
    dem_source: np.ndarray
    glacier_removed: dict[str, float]  # S2 date -> share of glacier pixels the mask removed
    removed: dict[str, int]  # validity rule -> pixels it removed


@dataclass
class _S2Scene:
    refl: dict[str, np.ndarray]
    keep: np.ndarray
    observed: np.ndarray


class LocalRecipe:
    """The recipe over local sources for one grid and config."""

    def __init__(self, sources: LocalSources, grid: ExportGrid, cfg: RecipeConfig,
                 cloud_mask: str = "auto", glaciers=None):
        self.grid, self.cfg = grid, cfg
        self.coarse = coarse_grid(grid, DEM_OFFSET_SCALE_M)
        self._glaciers = None if glaciers is None else (
            OutlineRasterizer(glaciers, grid.transform),
            OutlineRasterizer(glaciers, self.coarse.transform))
        self._datasets: dict[Path, object] = {}
        self._requested_mask = cloud_mask
        self._use(sources)

    def _use(self, sources: LocalSources) -> None:
        """Choose the scenes of `sources` in the config's windows and the cloud mask."""
        cfg = self.cfg
        self.src = sources
        self.s1_dates = sources.in_window("s1", cfg.s1_dates)
        s2_all = sources.in_window("s2", cfg.s2_dates)
        self.s2_cloud = {d: sources.cloud_percent[d] if d in sources.cloud_percent else
                         scene_cloud_percent(fs) for d, fs in s2_all.items()}
        self.s2_dates = {d: fs for d, fs in s2_all.items()
                         if self.s2_cloud[d] is None or self.s2_cloud[d] < cfg.s2_max_scene_cloud}
        self._check(s2_all)
        self.cloud_mask = resolve_cloud_mask(self._requested_mask, sources, sorted(self.s2_dates))

    def with_sources(self, sources: LocalSources) -> "LocalRecipe":
        """This recipe (grid, config, glacier rasters, open datasets) over other sources: one
        cell's scenes found in a catalogue. Closing either closes the datasets of both."""
        from copy import copy

        new = copy(self)
        new._use(sources)
        return new

    def _check(self, s2_all: dict) -> None:
        cfg = self.cfg
        if not self.s1_dates:
            raise InputNotFoundError(f"no Sentinel-1 file (S1_<date>*.tif) dated {cfg.s1_dates[0]}"
                                     f" to {cfg.s1_dates[1]} in the source directory")
        if not s2_all:
            raise InputNotFoundError(f"no Sentinel-2 file (S2_<date>*.tif) dated {cfg.s2_dates[0]}"
                                     f" to {cfg.s2_dates[1]} in the source directory")
        if not self.s2_dates:
            clouds = ", ".join(f"{d}: {p:.1f} %" for d, p in self.s2_cloud.items())
            raise InputError(f"all {len(s2_all)} Sentinel-2 scenes exceed the scene cloud limit "
                             f"of {cfg.s2_max_scene_cloud:g} % ({clouds}); raise "
                             "--max-scene-cloud")
        if not self.src.srtm and not self.src.hma:
            raise InputNotFoundError("no DEM (DEM_HMA*.tif or DEM_SRTM*.tif) in the source "
                                     "directory")

    def report(self) -> dict:
        return {"s1_images": sorted(self.s1_dates), "s1_count": len(self.s1_dates),
                "s2_scenes_in_window": len(self.s2_cloud),
                "s2_scene_cloud_percent": {d: (None if p is None else round(p, 2))
                                           for d, p in sorted(self.s2_cloud.items())},
                "s2_images": sorted(self.s2_dates), "s2_count": len(self.s2_dates),
                "cloud_mask": self.cloud_mask}

    # -- sources ------------------------------------------------------------------------------
    def dataset(self, path: Path) -> DatasetReader:
        """The source opened once and kept open: consecutive cells then share GDAL's block
        cache for the blocks their windows overlap."""
        if path not in self._datasets:  # a file, or a remote asset that opens itself
            opener = getattr(path, "open_dataset", None)
            self._datasets[path] = opener() if opener else _open(path)
        return self._datasets[path]

    def close(self) -> None:
        for ds in self._datasets.values():
            ds.close()
        self._datasets.clear()

    def _glacier_mask(self, cell: Cell, coarse: bool = False) -> np.ndarray | None:
        if self._glaciers is None:
            return None
        return self._glaciers[coarse].mask(cell.row_off, cell.col_off, cell.height, cell.width)

    def _dem(self, cell: Cell, grid: ExportGrid | None = None) -> tuple[np.ndarray, np.ndarray]:
        """HMA and SRTM on the cell (the first file with data wins where tiles overlap)."""
        grid = grid or self.grid
        out = []
        for files in (self.src.hma, self.src.srtm):
            acc = np.full((cell.height, cell.width), np.nan, np.float32)
            for f in files:
                a = read_source(self.dataset(f), "dem", grid, cell, None)[0]["value"]
                acc = np.where(np.isfinite(acc), acc, a)
            out.append(acc)
        return out[0], out[1]

    def _s1(self, cell: Cell) -> tuple[dict[str, list[np.ndarray]], int]:
        """VV and VH of every acquisition, border noise removed on the native grid."""
        s1 = {b: [] for b in S1_BANDS}
        removed = 0
        for d, files in sorted(self.s1_dates.items()):
            got: dict[str, np.ndarray] = {}
            for f in files:
                arrays, n = read_source(self.dataset(f), "s1", self.grid, cell, list(S1_BANDS),
                                        "bilinear", lambda bands: s1_noise_rule(bands, self.cfg))
                removed += n
                for b, a in arrays.items():
                    got[b] = a if b not in got else np.where(np.isfinite(got[b]), got[b], a)
            missing = [b for b in S1_BANDS if b not in got]
            if missing:
                raise InputError(f"{files[0]}: lacks band(s) {', '.join(missing)} (set band "
                                 "descriptions VV, VH)")
            for b in S1_BANDS:
                s1[b].append(got[b])
        return s1, removed

    def _s2_scene(self, d: str, files: list[Path], cell: Cell) -> _S2Scene:
        """One scene's reflectance and the pixels its cloud mask keeps."""
        cfg = self.cfg
        refl = self._read_date(files, "s2", cell, list(S2_BANDS), "bilinear")
        scl = self._read_date(files, "s2", cell, ["SCL"], "nearest").get("SCL")
        missing = [b for b in S2_BANDS if b not in refl] + ([] if scl is not None else ["SCL"])
        if missing:
            raise InputError(f"Sentinel-2 {d}: lacks band(s) {', '.join(missing)}")
        refl = {b: (a - np.float32(cfg.boa_offset)) / np.float32(10000.0)
                for b, a in refl.items()}
        scl = np.nan_to_num(scl, nan=0).astype(np.uint8)
        if self.cloud_mask == "cloudscore":
            band = cfg.cloud_score_band
            score = self._read_date(self.src.cloud_score[d], "cloudscore", cell, [band],
                                    "nearest").get(band)
            if score is None:
                raise InputError(f"Cloud Score+ {d}: lacks band {band}")
            keep = keep_by_cloud_score(score, scl if cfg.s2_level == "l2a" else None, refl,
                                       cfg)
        else:
            keep = keep_by_scl(scl, refl, cfg)
        return _S2Scene(refl, keep, np.isfinite(refl["B3"]))  # as Earth Engine: B3's mask

    def _read_date(self, files: list[Path], kind: str, cell: Cell, bands: list[str],
                   resampling: str) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for f in files:
            for b, a in read_source(self.dataset(f), kind, self.grid, cell, bands,
                                    resampling)[0].items():
                out.setdefault(b, a)
        return out

    # -- the recipe ---------------------------------------------------------------------------
    def offset_counts(self, cell: Cell) -> np.ndarray | None:
        """The histogram (OffsetHistogram bins) of HMA - SRTM off the glaciers, at 30 m, over
        the coarse pixels whose centres lie in this cell; None without both DEMs."""
        coarse = coarse_cell(self.grid, cell, DEM_OFFSET_SCALE_M)
        if not (self.src.hma and self.src.srtm) or coarse is None:
            return None
        hma, srtm = self._dem(coarse, self.coarse)
        diff = hma - srtm
        glaciers = self._glacier_mask(coarse, coarse=True)
        if glaciers is not None:
            diff[glaciers] = np.nan  # glacier surfaces changed between the acquisitions
        hist = OffsetHistogram()
        hist.add(diff)
        return hist.counts

    def physical(self, cell: Cell, dem_offset: float
                 ) -> tuple[np.ndarray, np.ndarray, dict[str, float], dict[str, int]]:
        """The 11 bands in physical units, the DEM source per pixel, the share of glacier
        pixels the cloud mask removed per scene and the pixels each validity rule removed."""
        s1, s1_removed = self._s1(cell)
        s2 = {b: [] for b in S2_BANDS}
        glacier_removed, cloud_removed = {}, 0
        glaciers = self._glacier_mask(cell)
        for d, files in sorted(self.s2_dates.items()):
            scene = self._s2_scene(d, files, cell)
            cloud_removed += int((scene.observed & ~scene.keep).sum())
            if glaciers is not None and glaciers.any():
                seen = glaciers & scene.observed
                glacier_removed[d] = round(float((seen & ~scene.keep).sum())
                                           / max(1, int(seen.sum())), 4)
            for b in S2_BANDS:
                s2[b].append(np.where(scene.keep, scene.refl[b], np.float32(np.nan)))
        comp = {b: nan_median(np.stack(v)) for b, v in {**s1, **s2}.items()}
        comp.update(indices(comp))
        hma, srtm = self._dem(cell)
        comp["elevation"], dem_source = fuse_dem(hma, srtm, dem_offset)
        stack = np.stack([comp[b] for b in BAND_NAMES]).astype(np.float32, copy=False)
        return stack, dem_source, glacier_removed, {"s1_noise_floor": s1_removed,
                                                    "s2_cloud_mask": cloud_removed}

    def cell(self, cell: Cell, dem_offset: float, norm: Normalization) -> CellResult:
        phys, dem_source, glacier_removed, removed = self.physical(cell, dem_offset)
        some = np.isfinite(phys).any(axis=0)
        phys = mask_invalid_pixels(phys)
        removed["missing_band"] = int((some & ~np.isfinite(phys[0])).sum())
        return CellResult(normalize(phys.copy(), norm), phys, dem_source, glacier_removed,
                          removed)
