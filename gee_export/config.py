"""The export recipe's parameters, shared by the Earth Engine and the local path.

Defaults follow the paper (Peng et al. 2023, section 2.1) where it states a value; each
non-obvious one says where it comes from.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields, replace
from datetime import date

import numpy as np

from gee_export.common.bands import BAND_NAMES, BANDS
from gee_export.common.errors import InputError

# Sentinel-2 L2A (COPERNICUS/S2_SR_HARMONIZED) starts on Earth Engine on 2017-03-28;
# Sentinel-1 GRD in 2014. The recipe needs both, so 2017 is the first year it can make.
FIRST_YEAR = 2017
S2_COLLECTIONS = {
    "l2a": "COPERNICUS/S2_SR_HARMONIZED",
    # L1C top-of-atmosphere; only for years where the L2A archive is thin (2017-2018 outside
    # Europe). Recorded in the manifest; never mix levels in one training set.
    "l1c": "COPERNICUS/S2_HARMONIZED",
}
S1_COLLECTION = "COPERNICUS/S1_GRD"
CLOUD_SCORE_COLLECTION = "GOOGLE/CLOUD_SCORE_PLUS/V1/S2_HARMONIZED"
SRTM_ASSET = "USGS/SRTMGL1_003"
GLIMS_COLLECTION = "GLIMS/current"
ORBITS = ("both", "ascending", "descending")
# --dem-source-map's codes, as the README states them: which DEM gave each pixel's height.
DEM_SOURCE_NONE, DEM_SOURCE_HMA, DEM_SOURCE_SRTM = 0, 1, 2
# The HMA - SRTM offset is a statistic, not pixels: measured at SRTM's native 30 m on the export
# grid's lattice, on both paths (nine times fewer pixels than at 10 m, the same median).
DEM_OFFSET_SCALE_M = 30.0


@dataclass(frozen=True)
class RecipeConfig:
    year: int
    # Paper: Sentinel-1 of July. Sentinel-1B failed in December 2021, so from 2022 a month has
    # about half the acquisitions: the default window widens to mid-June to mid-August then.
    s1_window: tuple[str, str] | None = None
    s2_window: tuple[str, str] = ("07-01", "10-01")  # paper: July-September (end exclusive)
    s1_orbit: str = "both"
    # Residual GRD border noise: VV below about -30 dB marks a noise pixel, in both
    # polarisations. VH alone legitimately reaches -35 dB (calm water, radar shadow), so it
    # has its own floor, below any return but noise.
    s1_noise_floor_db: float = -30.0
    s1_vh_floor_db: float = -40.0
    s2_level: str = "l2a"
    s2_max_scene_cloud: float = 5.0  # paper: scene cloud < 5 %
    cloud_score_band: str = "cs_cdf"
    # Low end of Google's recommended 0.50-0.65, to spare bright ice.
    cloud_score_threshold: float = 0.5
    # Snow/ice is never masked: bright in green, dark in SWIR (NDSI high, B11 low), unlike
    # cloud, which is bright in SWIR. Thresholds after Dozier 1989 (NDSI 0.4) and the
    # Sentinel-2 snow literature (cloud B11 above about 0.2).
    snow_ndsi_min: float = 0.4
    snow_b11_max: float = 0.2
    boa_offset: float = 0.0  # DN offset to remove before /10000 (0 for harmonized data)
    norm_mode: str = "fixed"
    norm_percentiles: tuple[float, float] = (2.0, 98.0)
    outline_buffer_m: float = 1000.0  # cells within this distance of an outline are exported
    min_outline_area_km2: float = 0.0

    def __post_init__(self):
        today = date.today()
        if not FIRST_YEAR <= self.year <= today.year:
            raise InputError(
                f"--year {self.year}: outside the Sentinel era this recipe can use, "
                f"{FIRST_YEAR}-{today.year} (Sentinel-2 surface reflectance on Earth Engine "
                "starts in March 2017; Sentinel-1 in 2014)")
        if self.s1_orbit not in ORBITS:
            raise InputError(f"--orbit {self.s1_orbit!r}: use one of {', '.join(ORBITS)}")
        if self.s2_level not in S2_COLLECTIONS:
            raise InputError(f"--s2-level {self.s2_level!r}: use l2a or l1c")
        if self.norm_mode not in ("fixed", "percentile"):
            raise InputError(f"--norm {self.norm_mode!r}: use fixed or percentile")
        for w in (self.s1_dates, self.s2_dates):
            if w[0] >= w[1]:
                raise InputError(f"date window {w[0]}..{w[1]} is empty")

    @property
    def s1_dates(self) -> tuple[str, str]:
        if self.s1_window is not None:
            a, b = self.s1_window
        elif self.year >= 2022:
            a, b = "06-15", "08-16"
        else:
            a, b = "07-01", "08-01"
        return _dated(self.year, a), _dated(self.year, b)

    @property
    def s2_dates(self) -> tuple[str, str]:
        return _dated(self.year, self.s2_window[0]), _dated(self.year, self.s2_window[1])

    @property
    def season_end(self) -> str:
        """The day after the last one the composite's date windows take (ISO)."""
        return max(self.s1_dates[1], self.s2_dates[1])

    def incomplete_season(self, today: date) -> str | None:
        """A one-line warning when `today` falls before the end of the season the composite
        takes: it would miss the scenes still to be acquired. None when the season is over."""
        if today.isoformat() >= self.season_end:
            return None
        return (f"warning: --year {self.year}: its season is incomplete (the date windows end "
                f"on {self.season_end}, today is {today.isoformat()}): the composite takes only "
                "the scenes acquired so far, and a rerun later reuses it as it is; rerun with "
                "--force after the season for the whole of it")

    @property
    def s2_collection(self) -> str:
        return S2_COLLECTIONS[self.s2_level]

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(s1_dates=list(self.s1_dates), s2_dates=list(self.s2_dates),
                 s2_collection=self.s2_collection)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "RecipeConfig":
        """The config a manifest recorded with to_dict (derived keys ignored)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()
                      if k in names})

    def with_(self, **kw) -> "RecipeConfig":
        return replace(self, **kw)


def started_before_season_end(manifest: dict, today: date) -> str | None:
    """A one-line note for a complete export that was started before the end of its season
    (RecipeConfig.incomplete_season warned then) now that the season is over: it lacks the
    scenes acquired after it was made. None otherwise."""
    recipe, started = manifest.get("recipe") or {}, str(manifest.get("created_at") or "")[:10]
    dates = [d[1] for d in (recipe.get("s1_dates"), recipe.get("s2_dates")) if d]
    if not dates or not started:
        return None
    end = max(dates)
    if not started < end <= today.isoformat():
        return None
    return (f"note: this export was started on {started}, before its season ended on {end}: "
            "it lacks the scenes acquired since; rerun with --force to make it with the whole "
            "season")


def _dated(year: int, month_day: str) -> str:
    try:
        return date.fromisoformat(f"{year}-{month_day}").isoformat()
    except ValueError:
        raise InputError(f"date {month_day!r}: use MM-DD") from None


# --------------------------------------------------------------------------------------------
# Normalization parameters: one (lo, hi) per band, frozen in the manifest.


@dataclass(frozen=True)
class Normalization:
    mode: str
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)
    source: str = "fixed physical ranges of the band table"

    @classmethod
    def fixed(cls) -> "Normalization":
        return cls("fixed", {b.name: b.fixed_range for b in BANDS})

    def to_dict(self) -> dict:
        return {"mode": self.mode, "source": self.source,
                "ranges": {k: list(map(float, v)) for k, v in self.ranges.items()}}

    @classmethod
    def from_dict(cls, d: dict, where: str = "manifest") -> "Normalization":
        try:
            ranges = {k: (float(v[0]), float(v[1])) for k, v in d["ranges"].items()}
            norm = cls(d["mode"], ranges, d.get("source", where))
        except (KeyError, TypeError, IndexError, ValueError):
            raise InputError(f"{where}: normalization block is malformed") from None
        missing = [b for b in BAND_NAMES if b not in ranges]
        if missing:
            raise InputError(f"{where}: normalization lacks band(s) {', '.join(missing)}")
        bad = [b for b, (lo, hi) in ranges.items() if not hi > lo]
        if bad:
            raise InputError(f"{where}: normalization range is empty for {', '.join(bad)}")
        return norm

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        lo = np.array([self.ranges[b][0] for b in BAND_NAMES], np.float32)
        hi = np.array([self.ranges[b][1] for b in BAND_NAMES], np.float32)
        return lo, hi


def normalize(stack: np.ndarray, norm: Normalization) -> np.ndarray:
    """Map each band of a (11, ...) physical stack to [0, 1] and clamp; NaN stays NaN."""
    lo, hi = norm.arrays()
    shape = (-1,) + (1,) * (stack.ndim - 1)
    out = (stack - lo.reshape(shape)) / (hi - lo).reshape(shape)
    return np.clip(out, 0.0, 1.0, out=out)
