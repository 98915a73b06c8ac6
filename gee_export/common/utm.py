"""Regions across UTM zones: one 10 m grid per zone, as Sentinel-2's own tiling has it.

A region whose box spans several UTM zones is exported in parts, one per zone, each on its own
zone's grid (fixed, so years align). Each part owns the strip of longitudes of its zone; its
grid reaches PART_MARGIN_M beyond the zone line so that the model sees context there and a
glacier cut by the line is predicted whole on both sides. Everything measured from a part
counts only what lies in its strip (`StripMask` for pixels, `clip_to_strip` for outlines),
so the parts of a glacier add up to the glacier, once.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from .errors import InputError
from .grid import Region, region_from_lonlat

if TYPE_CHECKING:
    from affine import Affine

ZONE_WIDTH_DEG = 6.0
# Each part's grid reaches this far past its zone line: wider than a model window's context
# (512 px x 10 m / 2) would be costlier than it is worth; 1 km keeps the cut out of the
# outermost windows of every standard window and overlap and costs 2 km of double export.
PART_MARGIN_M = 1000.0
METRES_PER_DEGREE = 111_320.0  # along the equator (and along any meridian, to 0.5 %)
EDGE_TOLERANCE_DEG = 1e-4  # about a 10 m pixel


def zone_number(lon: float) -> int:
    """The UTM zone (1-60) holding a longitude; 180 E belongs to zone 60."""
    return min(60, int(math.floor((lon + 180.0) / ZONE_WIDTH_DEG)) + 1)


def zone_name(number: int, north: bool) -> str:
    return f"{number:02d}{'N' if north else 'S'}"


def zone_crs(name: str) -> str:
    """EPSG code of a zone named like "46N"."""
    number, hemisphere = int(name[:-1]), name[-1]
    return f"EPSG:{(32600 if hemisphere == 'N' else 32700) + number}"


def zone_west(number: int) -> float:
    return -180.0 + ZONE_WIDTH_DEG * (number - 1)


@dataclass(frozen=True)
class Strip:
    """The longitudes a part owns: [west, east), None on a side with no other part."""
    west: float | None
    east: float | None

    def to_list(self) -> list:
        return [self.west, self.east]

    @classmethod
    def from_list(cls, v) -> "Strip":
        return cls(*(None if x is None else float(x) for x in v))


def zone_parts(lonlat_bounds: tuple[float, float, float, float]) -> list[tuple[str, Strip]]:
    """The UTM zones a lon/lat box spans, west to east, with the strip each owns. One box
    that crosses the equator is refused: its two hemispheres need two grids of the same
    zone, which this does not make."""
    w, s, e, n = lonlat_bounds
    if s < 0 < n:
        raise InputError(f"region {lonlat_bounds} crosses the equator: export the northern "
                         "and southern parts as two regions")
    north = (s + n) / 2 >= 0
    first, last = zone_number(w), zone_number(e)
    # A box edge on a zone line, or past it by less than a pixel, spans no part of the zone
    # beyond: a part made of the 1 km margin alone would hold no pixel of its own.
    if last > first and e - zone_west(last) < EDGE_TOLERANCE_DEG:
        last -= 1
    if last > first and zone_west(first + 1) - w < EDGE_TOLERANCE_DEG:
        first += 1
    parts = []
    for z in range(first, last + 1):
        west = None if z == first else zone_west(z)
        east = None if z == last else zone_west(z + 1)
        parts.append((zone_name(z, north), Strip(west, east)))
    return parts


def split_region(region: Region) -> list[Region]:
    """One region per UTM zone the region's box spans (the region itself when it spans one;
    regions.region_parts keeps a region whole under --crs or a fixed built-in grid). Each part's
    grid is its zone's, over its strip widened by PART_MARGIN_M."""
    parts = zone_parts(region.lonlat_bounds)
    if len(parts) == 1:
        return [region]
    w, s, e, n = region.lonlat_bounds
    widen = PART_MARGIN_M / (METRES_PER_DEGREE * math.cos(math.radians(max(abs(s), abs(n)))))
    out = []
    for zone, strip in parts:
        box = (max(w, (strip.west if strip.west is not None else w) - widen), s,
               min(e, (strip.east if strip.east is not None else e) + widen), n)
        part = region_from_lonlat(region.name, box, zone_crs(zone), region.description,
                                  region.geometry_wkt)
        out.append(replace(part, zone=zone, strip=strip))
    return out


def part_name(name: str, zone: str) -> str:
    """The export (or tile set, or prediction) of one zone of a product `name`."""
    return f"{name}-utm{zone}"


class StripMask:
    """Which pixels of a grid have their centre in a part's strip of longitudes."""

    def __init__(self, crs: str, transform: Affine, strip: Strip):
        from pyproj import Transformer

        self.transform, self.strip = transform, strip
        self.to_lonlat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)

    def window(self, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
        corner_cols = np.array([0, width, 0, width, width / 2, width / 2]) + col_off
        corner_rows = np.array([0, 0, height, height, 0, height]) + row_off
        lon, _ = self.to_lonlat.transform(*(self.transform * (corner_cols, corner_rows)))
        # A zone line is nearly straight on its own zone's grid: a block whose corners and
        # edge midpoints lie well inside (or outside) the strip lies wholly so.
        if self._inside(lon - 1e-3).all() and self._inside(lon + 1e-3).all():
            return np.ones((height, width), bool)
        if not (self._inside(lon - 1e-3).any() or self._inside(lon + 1e-3).any()):
            return np.zeros((height, width), bool)
        cols, rows = np.meshgrid(np.arange(width) + col_off + 0.5,
                                 np.arange(height) + row_off + 0.5)
        x, y = self.transform * (cols, rows)
        lon, _ = self.to_lonlat.transform(x, y)
        return self._inside(lon)

    def _inside(self, lon: np.ndarray) -> np.ndarray:
        inside = np.ones(np.shape(lon), bool)
        if self.strip.west is not None:
            inside &= lon >= self.strip.west
        if self.strip.east is not None:
            inside &= lon < self.strip.east
        return inside


def strip_box(strip: Strip, lat_range: tuple[float, float] = (-90.0, 90.0)):
    """The strip as a lon/lat polygon (open sides reach the antimeridian)."""
    from shapely.geometry import box

    return box(-180.0 if strip.west is None else strip.west, lat_range[0],
               180.0 if strip.east is None else strip.east, lat_range[1])


def clip_to_strip(frame, strip: Strip):
    """A GeoDataFrame in EPSG:4326, cut to a part's strip (features outside it dropped)."""
    frame = frame.to_crs("EPSG:4326")
    cut = frame.geometry.intersection(strip_box(strip))
    frame = frame.set_geometry(cut)
    return frame[~frame.geometry.is_empty].reset_index(drop=True)

