"""The export recipe on local rasters: the same steps as the Earth Engine path, in numpy.

Inputs, found in a source directory by name (dates ISO, YYYY-MM-DD):
- `S1_<date>*.tif`: Sentinel-1 sigma0 in dB, bands described VV and VH (or in that order);
- `S2_<date>*.tif`: Sentinel-2 L2A DN (reflectance x 10000), bands described B2 B3 B4 B8 B11
  and SCL, spread over any number of files per date (10 m and 20 m files);
- `DEM_HMA*.tif` (ellipsoidal heights, fill -9999) and `DEM_SRTM*.tif` (EGM96 heights);
- optionally `outlines.gpkg` (or --outlines) for the plan and the DEM offset.
Any CRS and resolution: every input is warped onto the export grid cell by cell (bilinear,
SCL nearest), so memory is bounded by the cell size, never by the scene.
"""
from __future__ import annotations

import re
import warnings
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gee_export.common.bands import BAND_NAMES, S1_BANDS, S2_BANDS
from gee_export.common.errors import GlacierError
from gee_export.common.grid import Cell, ExportGrid
from gee_export.config import Normalization, RecipeConfig, normalize

# SCL classes masked as cloud or cloud shadow: 3 shadow, 8/9 cloud, 10 cirrus; 0/1 no data.
SCL_MASKED = (0, 1, 3, 8, 9, 10)
SCL_CLOUDY = (8, 9, 10)
SCL_SNOW_ICE = 11
_DATE = re.compile(r"^(S1|S2)_(\d{4}-\d{2}-\d{2})")
DEM_OFFSET_BIN_M = 0.05  # resolution of the HMA - SRTM offset histogram
DEM_OFFSET_RANGE_M = 300.0  # plausible |HMA - SRTM| (geoid undulation is within +-110 m)


# --------------------------------------------------------------------------------------------
# Pure science: indices, masks, composites, DEM fusion


def normalized_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a - b) / (a + b) as Earth Engine computes it: masked (NaN) where an input is negative
    or both are zero."""
    with np.errstate(invalid="ignore", divide="ignore"):
        out = (a - b) / (a + b)
    out[(a < 0) | (b < 0) | ~np.isfinite(out)] = np.nan
    return out


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


def s2_clear(scl: np.ndarray, refl: dict[str, np.ndarray], cfg: RecipeConfig) -> np.ndarray:
    """Pixels kept from one scene: not cloud or shadow, and snow/ice always.

    SCL marks bright snow as cloud often enough to eat glaciers, so SCL snow/ice (11) and the
    spectral snow test both overrule a cloud flag; SCL no-data (0, 1) never does.
    """
    nodata = (scl == 0) | (scl == 1)
    cloudy = np.isin(scl, SCL_MASKED)
    keep = ~cloudy | (scl == SCL_SNOW_ICE) | snow_ice(refl, cfg)
    return keep & ~nodata


def nan_median(stack: np.ndarray) -> np.ndarray:
    """Median over axis 0 ignoring NaN; NaN where every date is masked."""
    if stack.shape[0] == 0:
        return np.full(stack.shape[1:], np.nan, np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices are expected
        return np.nanmedian(stack, axis=0).astype(np.float32)


def mask_s1_noise(db: np.ndarray, floor_db: float) -> np.ndarray:
    out = db.astype(np.float32, copy=True)
    out[~(out >= floor_db)] = np.nan  # also masks NaN inputs
    return out


def fuse_dem(hma: np.ndarray, srtm: np.ndarray, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Elevation on SRTM's EGM96 datum: HMA minus the offset where HMA has data, else SRTM.

    Returns the elevation and which source filled each pixel (1 HMA, 2 SRTM, 0 none).
    """
    has_hma = np.isfinite(hma)
    elev = np.where(has_hma, hma - offset, srtm).astype(np.float32)
    source = np.where(has_hma, 1, np.where(np.isfinite(srtm), 2, 0)).astype(np.uint8)
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


# --------------------------------------------------------------------------------------------
# Sources on disk


@dataclass
class LocalSources:
    s1: dict[str, list[Path]] = field(default_factory=dict)  # date -> files
    s2: dict[str, list[Path]] = field(default_factory=dict)
    hma: list[Path] = field(default_factory=list)
    srtm: list[Path] = field(default_factory=list)
    outlines: Path | None = None

    @classmethod
    def scan(cls, directory: Path) -> "LocalSources":
        directory = Path(directory)
        if not directory.is_dir():
            raise GlacierError(f"--source-dir {directory}: no such directory")
        s = cls()
        groups = {"S1": defaultdict(list), "S2": defaultdict(list)}
        for f in sorted(directory.glob("*.tif")):
            m = _DATE.match(f.name)
            if m:
                groups[m.group(1)][m.group(2)].append(f)
            elif f.name.startswith("DEM_HMA"):
                s.hma.append(f)
            elif f.name.startswith("DEM_SRTM") or f.name.startswith("DEM_"):
                s.srtm.append(f)
        s.s1, s.s2 = dict(groups["S1"]), dict(groups["S2"])
        if (directory / "outlines.gpkg").is_file():
            s.outlines = directory / "outlines.gpkg"
        return s

    def in_window(self, which: str, window: tuple[str, str]) -> dict[str, list[Path]]:
        return {d: fs for d, fs in getattr(self, which).items() if window[0] <= d < window[1]}

    def all_files(self) -> list[Path]:
        fs = [f for d in (self.s1, self.s2) for v in d.values() for f in v]
        return sorted(fs + self.hma + self.srtm)


def _band_map(path: Path, src) -> dict[str, int]:
    """Band name -> 1-based index from band descriptions (B02 and B2 both accepted)."""
    out = {}
    for i, d in enumerate(src.descriptions, 1):
        if d:
            name = re.sub(r"^B0(\d)$", r"B\1", d.strip().upper())
            out[name] = i
    return out


def read_on_grid(path: Path, grid: ExportGrid, cell: Cell, bands: list[str] | None,
                 resampling: str = "bilinear", nodata: float | None = None
                 ) -> dict[str, np.ndarray] | np.ndarray:
    """Warp a file onto one cell of the export grid; nodata becomes NaN."""
    import rasterio
    from rasterio.enums import Resampling
    from rasterio.vrt import WarpedVRT

    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioIOError as e:
        raise GlacierError(f"{path}: cannot be read as a raster ({e})") from None
    with src:
        if src.crs is None:
            raise GlacierError(f"{path}: has no CRS")
        src_nodata = nodata if nodata is not None else src.nodata
        idx = None
        if bands is not None:
            names = _band_map(path, src)
            if not names:
                names = {b: i for i, b in enumerate(bands, 1)} if src.count == len(bands) else {}
            idx = {b: names[b] for b in bands if b in names}
        with WarpedVRT(src, crs=grid.crs, transform=cell.transform(grid), width=cell.width,
                       height=cell.height, resampling=getattr(Resampling, resampling),
                       src_nodata=src_nodata, nodata=np.nan if src_nodata is not None else None,
                       dtype="float32") as vrt:
            if idx is None:
                a = vrt.read(1, masked=True)
                return np.ma.filled(a.astype(np.float32), np.nan)
            out = {}
            for b, i in idx.items():
                a = vrt.read(i, masked=True)
                out[b] = np.ma.filled(a.astype(np.float32), np.nan)
            return out


def _read_date(files: list[Path], grid, cell, bands, resampling, nodata=None):
    out = {}
    for f in files:
        for b, a in read_on_grid(f, grid, cell, bands, resampling, nodata).items():
            out.setdefault(b, a)
    return out


def scene_cloud_percent(files: list[Path]) -> float | None:
    """Share of a scene's valid pixels that SCL calls cloud, from a decimated read of SCL."""
    import rasterio
    from rasterio.enums import Resampling

    for f in files:
        with rasterio.open(f) as src:
            names = _band_map(f, src)
            if "SCL" in names:
                h, w = max(1, src.height // 4), max(1, src.width // 4)
                scl = src.read(names["SCL"], out_shape=(h, w), resampling=Resampling.nearest)
                valid = (scl != 0) & (scl != 1)
                return 100.0 * float(np.isin(scl, SCL_CLOUDY)[valid].sum()) / max(1, valid.sum())
    return None


# --------------------------------------------------------------------------------------------
# One cell of the recipe


@dataclass
class CellResult:
    stack: np.ndarray  # (11, h, w) normalized float32
    physical: np.ndarray  # (11, h, w) before normalization
    dem_source: np.ndarray
    glacier_removed: dict[str, float]  # S2 date -> share of glacier pixels the mask removed


class LocalRecipe:
    """The recipe over local sources for one grid and config."""

    def __init__(self, sources: LocalSources, grid: ExportGrid, cfg: RecipeConfig,
                 glacier_mask_fn=None):
        self.src, self.grid, self.cfg = sources, grid, cfg
        self.glacier_mask_fn = glacier_mask_fn  # cell -> bool array of glacier outlines
        self.s1_dates = sources.in_window("s1", cfg.s1_dates)
        s2_all = sources.in_window("s2", cfg.s2_dates)
        self.s2_cloud = {d: scene_cloud_percent(fs) for d, fs in s2_all.items()}
        self.s2_dates = {d: fs for d, fs in s2_all.items()
                         if self.s2_cloud[d] is None or self.s2_cloud[d] < cfg.s2_max_scene_cloud}
        if not self.s1_dates:
            raise GlacierError(f"no Sentinel-1 file (S1_<date>*.tif) dated {cfg.s1_dates[0]} to "
                               f"{cfg.s1_dates[1]} in the source directory")
        if not s2_all:
            raise GlacierError(f"no Sentinel-2 file (S2_<date>*.tif) dated {cfg.s2_dates[0]} to "
                               f"{cfg.s2_dates[1]} in the source directory")
        if not self.s2_dates:
            raise GlacierError(
                f"all {len(s2_all)} Sentinel-2 scenes exceed the scene cloud limit of "
                f"{cfg.s2_max_scene_cloud:g} % ({', '.join(f'{d}: {p:.1f} %' for d, p in self.s2_cloud.items())}); "
                "raise --max-scene-cloud")
        if not sources.srtm and not sources.hma:
            raise GlacierError("no DEM (DEM_HMA*.tif or DEM_SRTM*.tif) in the source directory")

    def report(self) -> dict:
        return {"s1_images": sorted(self.s1_dates), "s1_count": len(self.s1_dates),
                "s2_scenes_in_window": len(self.s2_cloud),
                "s2_scene_cloud_percent": {d: (None if p is None else round(p, 2))
                                           for d, p in sorted(self.s2_cloud.items())},
                "s2_images": sorted(self.s2_dates), "s2_count": len(self.s2_dates)}

    def _dem(self, cell: Cell) -> tuple[np.ndarray, np.ndarray]:
        nan = np.full((cell.height, cell.width), np.nan, np.float32)
        hma, srtm = nan.copy(), nan.copy()
        for f in self.src.hma:
            a = read_on_grid(f, self.grid, cell, None, "bilinear")
            hma = np.where(np.isfinite(hma), hma, a)
        for f in self.src.srtm:
            a = read_on_grid(f, self.grid, cell, None, "bilinear")
            srtm = np.where(np.isfinite(srtm), srtm, a)
        return hma, srtm

    def offset_sample(self, cell: Cell, hist: OffsetHistogram) -> None:
        """Add this cell's HMA - SRTM differences off the glaciers to the offset histogram."""
        if not (self.src.hma and self.src.srtm):
            return
        hma, srtm = self._dem(cell)
        diff = hma - srtm
        if self.glacier_mask_fn is not None:
            diff[self.glacier_mask_fn(cell)] = np.nan  # glacier surfaces changed since 2000
        hist.add(diff)

    def physical(self, cell: Cell, dem_offset: float) -> tuple[np.ndarray, np.ndarray, dict]:
        g, cfg = self.grid, self.cfg
        shape = (cell.height, cell.width)
        # Sentinel-1: drop the border noise, median per band over dates.
        s1 = {b: [] for b in S1_BANDS}
        for d, files in sorted(self.s1_dates.items()):
            got = _read_date(files, g, cell, list(S1_BANDS), "bilinear")
            for b in S1_BANDS:
                if b not in got:
                    raise GlacierError(f"{files[0]}: lacks band {b} (set band descriptions VV, VH)")
                s1[b].append(mask_s1_noise(got[b], cfg.s1_noise_floor_db))
        # Sentinel-2: per-scene clear mask that keeps snow and ice, then median.
        s2 = {b: [] for b in S2_BANDS}
        removed = {}
        glaciers = self.glacier_mask_fn(cell) if self.glacier_mask_fn else None
        for d, files in sorted(self.s2_dates.items()):
            refl = _read_date(files, g, cell, list(S2_BANDS), "bilinear", nodata=0)
            scl = _read_date(files, g, cell, ["SCL"], "nearest").get("SCL")
            missing = [b for b in S2_BANDS if b not in refl]
            if missing or scl is None:
                raise GlacierError(f"Sentinel-2 {d}: lacks band(s) "
                                   f"{', '.join(missing + ([] if scl is not None else ['SCL']))}")
            refl = {b: (a - cfg.boa_offset) / 10000.0 for b, a in refl.items()}
            scl = np.nan_to_num(scl, nan=0).astype(np.uint8)
            keep = s2_clear(scl, refl, cfg)
            if glaciers is not None and glaciers.any():
                seen = glaciers & (scl > 1)
                removed[d] = round(float((seen & ~keep).sum()) / max(1, int(seen.sum())), 4)
            for b in S2_BANDS:
                a = refl[b].astype(np.float32)
                a[~keep] = np.nan
                s2[b].append(a)
        comp = {b: nan_median(np.stack(v)) for b, v in {**s1, **s2}.items()}
        comp.update(indices(comp))
        hma, srtm = self._dem(cell)
        comp["elevation"], dem_source = fuse_dem(hma, srtm, dem_offset)
        stack = np.stack([comp[b] for b in BAND_NAMES]).astype(np.float32)
        assert stack.shape == (len(BAND_NAMES),) + shape
        return stack, dem_source, removed

    def cell(self, cell: Cell, dem_offset: float, norm: Normalization) -> CellResult:
        phys, dem_source, removed = self.physical(cell, dem_offset)
        phys = mask_invalid_pixels(phys)
        return CellResult(normalize(phys.copy(), norm), phys, dem_source, removed)


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

    def normalization(self, pcts: tuple[float, float]) -> Normalization:
        ranges = {}
        for b in BAND_NAMES:
            c = np.cumsum(self.counts[b])
            if c[-1] == 0:
                raise GlacierError(f"percentile normalization: band {b} has no valid pixel")
            e = self.edges[b]
            lo = e[int(np.searchsorted(c, c[-1] * pcts[0] / 100))]
            hi = e[min(len(e) - 1, int(np.searchsorted(c, c[-1] * pcts[1] / 100)) + 1)]
            ranges[b] = (float(lo), float(hi))
        return Normalization("percentile", ranges,
                             f"percentiles {pcts[0]:g}/{pcts[1]:g} over the region (local)")
