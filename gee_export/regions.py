"""The regions `prep export` knows by name, and regions from a box or a polygon file."""
from __future__ import annotations

from pathlib import Path

from gee_export.common.errors import InputError, InputNotFoundError
from gee_export.common.grid import Region, region_from_lonlat
from gee_export.demo.scene import DEMO_REGION

# The paper's study area (section 2.1): the Qilian Mountains, 37.3-39.7 N, 93.4-102.8 E.
QILIAN = region_from_lonlat("qilian", (93.4, 37.3, 102.8, 39.7), "EPSG:32647",
                            "Qilian Mountains, the study area of Peng et al. 2023")


# High Mountain Asia: a lon/lat box around RGI 6.0 first-order regions 13-15 (Central Asia,
# South Asia West, South Asia East; RGI Consortium 2017), 65-105 E and 26-46 N. It spans UTM
# zones 41-48 and is exported in one part per zone (utm.split_region).
HMA = region_from_lonlat("hma", (65.0, 26.0, 105.0, 46.0), None,
                         "High Mountain Asia: a box around RGI 6.0 regions 13-15")
# Built-in regions exported on one grid whatever they span: Qilian spans zones 46-48 but its
# grid is the paper's, and its edges' 0.26 % length error does not reach areas (ellipsoidal).
ONE_GRID = {"qilian", "demo"}


def builtin_regions() -> dict[str, Region]:
    return {"qilian": QILIAN, "demo": DEMO_REGION, "hma": HMA}


def region_parts(region: Region, crs_given: bool) -> list[Region]:
    """The parts a region is exported in: one per UTM zone its box spans, unless --crs forces
    one grid or the region is a built-in one of one grid."""
    from gee_export.common.utm import split_region

    if crs_given or region.name in ONE_GRID and region in builtin_regions().values():
        return [region]
    return split_region(region)


def region_from_file(path: Path, crs: str | None = None) -> Region:
    import geopandas as gpd

    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"--region-file {path}: no such file")
    try:
        df = gpd.read_file(path)
    except Exception as e:  # pyogrio raises several types for unreadable files
        raise InputError(f"--region-file {path}: cannot be read ({e})") from None
    df = df[df.geometry.notna() & df.geom_type.isin(["Polygon", "MultiPolygon"])]
    if df.empty:
        raise InputError(f"--region-file {path}: holds no polygon")
    if df.crs is None:
        raise InputError(f"--region-file {path}: has no CRS")
    geom = df.to_crs("EPSG:4326").geometry.union_all()
    return region_from_lonlat(path.stem, tuple(geom.bounds), crs, f"from {path.name}", geom.wkt)


def resolve_region(name: str | None, bbox: tuple[float, ...] | None = None,
                   region_file: Path | None = None, crs: str | None = None) -> Region:
    given = [o for o, v in (("--bbox", bbox), ("--region-file", region_file)) if v is not None]
    if len(given) > 1:
        raise InputError("give --bbox or --region-file, not both")
    if given and name in builtin_regions():
        raise InputError(f"--region {name} is a built-in region; with {given[0]}, --region "
                         "only names the new region: choose another name")
    if region_file is not None:
        return region_from_file(region_file, crs)
    if bbox is not None:
        return region_from_lonlat(name or "bbox", tuple(bbox), crs, "from --bbox")
    regions = builtin_regions()
    if name not in regions:
        raise InputError(f"unknown region {name!r}; known: {', '.join(sorted(regions))} "
                         "(or give --bbox W S E N or --region-file)")
    r = regions[name]
    if crs and crs != r.crs:
        raise InputError(f"region {name} has the fixed CRS {r.crs}; its grid cannot change, "
                         "or years would not align")
    return r
