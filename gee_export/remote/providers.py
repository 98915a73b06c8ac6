"""Where each public STAC API keeps the recipe's inputs, and how their values differ from the
Earth Engine collections the recipe was written for. Pure data and pure functions: no network.

A provider's layout is three collections (Sentinel-2 L2A, Sentinel-1, a DEM), each with the
asset key of every band the recipe reads and the kind of values the asset holds.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from gee_export.common.errors import InputError

PC_API = "https://planetarycomputer.microsoft.com/api/stac/v1"
ES_API = "https://earth-search.aws.element84.com/v1"
SENSORS = ("s2", "s1", "dem")
# L2A processing baseline 04.00 (from 2022-01-25) adds BOA_ADD_OFFSET = -1000 to the DN:
# reflectance = (DN - 1000) / 10000. Earth Engine's S2_SR_HARMONIZED shifts those scenes back;
# the recipe expects harmonized DN, so the offset is removed per scene.
BOA_OFFSET_DN = 1000.0
OFFSET_BASELINE = (4, 0)


@dataclass(frozen=True)
class Sensor:
    """One collection of one API as the recipe reads it."""
    collection: str
    api: str
    assets: tuple[tuple[str, str], ...]  # (recipe band, asset key)
    values: str  # "dn" (S2 L2A digital numbers), "linear" (S1 power, read as dB), "height"
    signed: bool = False  # Planetary Computer: asset URLs need a SAS token

    @property
    def sas(self) -> str:
        """Planetary Computer's token endpoint beside its STAC API (.../api/sas/v1/token)."""
        base = self.api.rstrip("/")
        return (base[:-len("/stac/v1")] if base.endswith("/stac/v1") else base) + "/sas/v1/token"


@dataclass(frozen=True)
class Provider:
    name: str
    s2: Sensor
    s1: Sensor
    dem: Sensor
    differences: tuple[str, ...]  # what differs from the Earth Engine recipe, for export.json

    def sensor(self, which: str) -> Sensor:
        return getattr(self, which)

    def with_api(self, url: str) -> "Provider":
        """Every collection searched at `url` instead (a mirror, or a test double)."""
        return replace(self, **{s: replace(self.sensor(s), api=url.rstrip("/"))
                                for s in SENSORS})

    def with_collections(self, names: dict[str, str]) -> "Provider":
        bad = [k for k in names if k not in SENSORS]
        if bad:
            raise InputError(f"--stac-collection {bad[0]}=...: name one of {', '.join(SENSORS)}")
        return replace(self, **{s: replace(self.sensor(s), collection=n) for s, n in names.items()})

    def to_dict(self) -> dict:
        return {"provider": self.name, **{s: {"collection": self.sensor(s).collection,
                                              "api": self.sensor(s).api,
                                              "assets": dict(self.sensor(s).assets),
                                              "signed": self.sensor(s).signed}
                                          for s in SENSORS}}


S1_RTC_NOTE = (
    "Sentinel-1 is Planetary Computer's sentinel-1-rtc: gamma0, radiometrically terrain-"
    "flattened (linear power, read as 10 log10), where Earth Engine's COPERNICUS/S1_GRD is "
    "sigma0 ellipsoid-corrected GRD in dB. gamma0 is brighter than sigma0 on slopes facing the "
    "sensor's opposite side and darker facing it, by up to several dB in mountains, and a few "
    "tenths of a dB on flat ice; the fixed VV/VH ranges of the normalization still hold them, "
    "but a model trained on Earth Engine exports sees shifted inputs: train and predict on one "
    "source, or normalize by region percentiles (--norm percentile)")
CLOUD_NOTE = ("Cloud Score+ is not offered by these APIs: the cloud mask is SCL (classes 0, 1, "
              "3, 8, 9, 10 masked; SCL snow/ice and spectral snow kept), as --cloud-mask scl on "
              "local sources; the scene filter is the items' eo:cloud_cover")
DEM_NOTE = ("The DEM fallback is Copernicus GLO-30 (cop-dem-glo-30, EGM2008 heights) in place "
            "of SRTM (EGM96); the HMA mosaic (--hma-file, ellipsoidal) is shifted onto it by "
            "the same rule: the median of HMA - GLO-30 off the glaciers at 30 m. Without "
            "--hma-file, elevation is GLO-30 alone")
BASELINE_NOTE = ("Sentinel-2 L2A of processing baseline 04.00 and later (from January 2022) "
                 "carries BOA_ADD_OFFSET -1000 in its DN; 1000 is subtracted from those scenes' "
                 "DN (unless the item says earthsearch:boa_offset_applied), as Earth Engine's "
                 "S2_SR_HARMONIZED does")

_PC_S1 = Sensor("sentinel-1-rtc", PC_API, (("VV", "vv"), ("VH", "vh")), "linear", signed=True)

PROVIDERS = {
    "planetary-computer": Provider(
        "planetary-computer",
        Sensor("sentinel-2-l2a", PC_API, (("B2", "B02"), ("B3", "B03"), ("B4", "B04"),
                                          ("B8", "B08"), ("B11", "B11"), ("SCL", "SCL")),
               "dn", signed=True),
        _PC_S1,
        Sensor("cop-dem-glo-30", PC_API, (("value", "data"),), "height", signed=True),
        (S1_RTC_NOTE, CLOUD_NOTE, DEM_NOTE, BASELINE_NOTE)),
    "earth-search": Provider(
        "earth-search",
        Sensor("sentinel-2-l2a", ES_API, (("B2", "blue"), ("B3", "green"), ("B4", "red"),
                                          ("B8", "nir"), ("B11", "swir16"), ("SCL", "scl")),
               "dn"),
        # Earth Search's sentinel-1-grd holds uncalibrated GRD amplitude (DN) in a
        # requester-pays bucket: without the calibration annotation there is no sigma0 in it.
        _PC_S1,
        Sensor("cop-dem-glo-30", ES_API, (("value", "data"),), "height"),
        (S1_RTC_NOTE + "; Earth Search's own sentinel-1-grd holds uncalibrated amplitudes "
         "(requester pays), so Sentinel-1 comes from Planetary Computer",
         CLOUD_NOTE, DEM_NOTE, BASELINE_NOTE)),
}


def resolve_provider(name: str | None, api: str | None, collections: dict[str, str]) -> Provider:
    """The layout of --stac-provider (planetary-computer when only --stac-api is given), at
    --stac-api when given, with --stac-collection's names."""
    if name is None and api is None:
        raise InputError("--source stac: give --stac-provider planetary-computer|earth-search "
                         "or --stac-api URL")
    name = name or "planetary-computer"
    if name not in PROVIDERS:
        raise InputError(f"--stac-provider {name!r}: use {', '.join(PROVIDERS)}")
    p = PROVIDERS[name]
    if api is not None:
        if not api.startswith(("http://", "https://")):
            raise InputError(f"--stac-api {api!r}: give an http(s) URL")
        p = p.with_api(api)
    return p.with_collections(collections) if collections else p


def baseline(props: dict) -> tuple[int, int] | None:
    """s2:processing_baseline ('04.00') as (4, 0); None when absent or unreadable."""
    v = str(props.get("s2:processing_baseline") or "")
    try:
        major, minor = v.split(".")
        return int(major), int(minor)
    except ValueError:
        return None


def dn_offset(props: dict) -> float:
    """The DN offset to subtract from one L2A scene to harmonize it: 1000 from baseline 04.00
    on, unless the provider already removed it (earthsearch:boa_offset_applied)."""
    b = baseline(props)
    if b is None or b < OFFSET_BASELINE or props.get("earthsearch:boa_offset_applied"):
        return 0.0
    return BOA_OFFSET_DN


def to_recipe_units(raw: np.ndarray, values: str, offset: float = 0.0) -> np.ndarray:
    """An asset's values in the units the local recipe reads: harmonized DN, dB, metres.
    Non-positive linear power has no dB (NaN)."""
    if values == "dn":
        return raw - np.float32(offset) if offset else raw
    if values == "linear":
        with np.errstate(divide="ignore", invalid="ignore"):
            db = (10.0 * np.log10(raw.astype(np.float64))).astype(np.float32)
        db[~(raw > 0)] = np.nan
        return db
    return raw
