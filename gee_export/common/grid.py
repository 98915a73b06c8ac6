"""Export grids and their cells: where the pixels of every year fall.

A region fixes a CRS and a 10 m grid whose pixel edges lie on multiples of 10 m, so exports of
different years (and the tiles cut from them) align pixel for pixel.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterator

from affine import Affine

from .errors import InputError

PIXEL_SIZE = 10.0  # metres; the Sentinel-2 10 m bands set the stack's resolution (paper 2.1)
# 768 x 768 x 11 float32 plus a mask byte per pixel is 26.5 MB, about half of computePixels'
# 48 MB request limit: room for the mask and a retry without splitting first.
DEFAULT_CELL_SIZE = 768


@dataclass(frozen=True)
class ExportGrid:
    crs: str  # "EPSG:32647"
    x0: float  # west edge, metres, a multiple of the pixel size
    y0: float  # north edge, metres
    width: int
    height: int
    res: float = PIXEL_SIZE

    def __post_init__(self):
        step = min(self.res, PIXEL_SIZE)  # coarser lattices share the 10 m grid's origin
        for v, what in ((self.x0, "x0"), (self.y0, "y0")):
            if abs(v / step - round(v / step)) > 1e-9:
                raise InputError(f"grid {what}={v} is not on a {step:g} m multiple")

    @property
    def transform(self) -> Affine:
        return Affine(self.res, 0.0, self.x0, 0.0, -self.res, self.y0)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return (self.x0, self.y0 - self.height * self.res, self.x0 + self.width * self.res, self.y0)

    def to_dict(self) -> dict:
        return {"crs": self.crs, "x0": self.x0, "y0": self.y0, "width": self.width,
                "height": self.height, "res": self.res}

    @classmethod
    def from_dict(cls, d: dict) -> "ExportGrid":
        return cls(d["crs"], float(d["x0"]), float(d["y0"]), int(d["width"]), int(d["height"]),
                   float(d.get("res", PIXEL_SIZE)))

    @classmethod
    def covering(cls, crs: str, bounds: tuple[float, float, float, float],
                 res: float = PIXEL_SIZE) -> "ExportGrid":
        """The smallest grid with edges on `res` multiples that covers projected bounds."""
        w, s, e, n = bounds
        x0, y0 = math.floor(w / res) * res, math.ceil(n / res) * res
        x1, y1 = math.ceil(e / res) * res, math.floor(s / res) * res
        return cls(crs, x0, y0, int(round((x1 - x0) / res)), int(round((y0 - y1) / res)), res)


@dataclass(frozen=True)
class Cell:
    """One request or task of an export: a window of the region grid."""
    row: int
    col: int
    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def id(self) -> str:
        return f"r{self.row:03d}c{self.col:03d}"

    def transform(self, grid: ExportGrid) -> Affine:
        return grid.transform * Affine.translation(self.col_off, self.row_off)

    def bounds(self, grid: ExportGrid) -> tuple[float, float, float, float]:
        x0 = grid.x0 + self.col_off * grid.res
        y0 = grid.y0 - self.row_off * grid.res
        return (x0, y0 - self.height * grid.res, x0 + self.width * grid.res, y0)

    def halves(self) -> tuple["Cell", "Cell"]:
        """Split along the longer side; used when Earth Engine runs out of memory on a cell."""
        if self.width >= self.height:
            w = self.width // 2
            return (Cell(self.row, self.col, self.row_off, self.col_off, self.height, w),
                    Cell(self.row, self.col, self.row_off, self.col_off + w, self.height,
                         self.width - w))
        h = self.height // 2
        return (Cell(self.row, self.col, self.row_off, self.col_off, h, self.width),
                Cell(self.row, self.col, self.row_off + h, self.col_off, self.height - h,
                     self.width))

    def to_dict(self) -> dict:
        return {"id": self.id, "row": self.row, "col": self.col, "row_off": self.row_off,
                "col_off": self.col_off, "height": self.height, "width": self.width}

    @classmethod
    def from_dict(cls, d: dict) -> "Cell":
        return cls(d["row"], d["col"], d["row_off"], d["col_off"], d["height"], d["width"])


def iter_cells(grid: ExportGrid, size: int = DEFAULT_CELL_SIZE) -> Iterator[Cell]:
    for r, row_off in enumerate(range(0, grid.height, size)):
        for c, col_off in enumerate(range(0, grid.width, size)):
            yield Cell(r, c, row_off, col_off, min(size, grid.height - row_off),
                       min(size, grid.width - col_off))


def coarse_grid(grid: ExportGrid, res: float) -> ExportGrid:
    """The grid's lattice at a coarser resolution, from the same origin."""
    f = res / grid.res
    return ExportGrid(grid.crs, grid.x0, grid.y0, math.ceil(grid.width / f),
                      math.ceil(grid.height / f), res)


def coarse_cell(grid: ExportGrid, cell: Cell, res: float) -> Cell | None:
    """The pixels of the coarse lattice (coarse_grid) whose centres lie in `cell`: every
    coarse pixel belongs to exactly one cell of a tiling, so per-cell statistics add up to the
    region's. None when no coarse centre falls in the cell."""
    f = res / grid.res

    def span(off: int, n: int) -> tuple[int, int]:
        lo = math.ceil((off - f / 2) / f - 1e-9)
        hi = math.ceil((off + n - f / 2) / f - 1e-9)
        return lo, hi - lo

    r0, h = span(cell.row_off, cell.height)
    c0, w = span(cell.col_off, cell.width)
    return Cell(cell.row, cell.col, r0, c0, h, w) if h > 0 and w > 0 else None


# No projected grid of 10 m pixels spans more than this; a region file whose polygon crosses
# the antimeridian has bounds of about 360 degrees (its parts at -180 and +180).
MAX_LON_SPAN = 180.0


def check_grid_crs(crs: str) -> None:
    """Refuse a CRS a 10 m grid cannot be laid on: unknown, geographic (degrees), geocentric
    (3-D metres) or projected in any unit but the metre (feet).

    Raises:
        InputError: naming --crs and why.
    """
    from pyproj import CRS
    from pyproj.exceptions import CRSError

    try:
        c = CRS.from_user_input(crs)
    except CRSError:
        raise InputError(f"--crs {crs!r} is not a CRS pyproj knows") from None
    why = None
    if c.is_geocentric:
        why = "a geocentric (earth-centred 3-D) CRS"
    elif not c.is_projected:
        why = "a geographic CRS in degrees"
    else:
        units = {a.unit_name for a in c.axis_info[:2]}
        if units != {"metre"}:
            why = f"a projected CRS in {', '.join(sorted(units))}, not metres"
    if why:
        raise InputError(f"--crs {crs!r} ({c.name}) is {why}; the grid's 10 m pixels need a "
                         "projected CRS in metres, such as the region's UTM zone (the default)")


def utm_crs_for(lon: float, lat: float) -> str:
    zone = min(60, int((lon + 180) // 6) + 1)
    return f"EPSG:{32600 + zone if lat >= 0 else 32700 + zone}"


@dataclass(frozen=True)
class Region:
    name: str
    crs: str
    lonlat_bounds: tuple[float, float, float, float]  # west, south, east, north (degrees)
    grid: ExportGrid
    synthetic: bool = False
    description: str = ""
    geometry_wkt: str | None = field(default=None, compare=False)  # lon/lat polygon if not a box
    # A part of a region across UTM zones (utm.split_region): its zone ("46N") and the strip
    # of longitudes it owns (a utm.Strip); None for a region of one grid.
    zone: str | None = None
    strip: object = None

    def to_dict(self) -> dict:
        part = {"zone": self.zone, "strip": self.strip.to_list()} if self.zone else {}
        return {"name": self.name, "crs": self.crs, "lonlat_bounds": list(self.lonlat_bounds),
                "synthetic": self.synthetic, "description": self.description,
                "geometry_wkt": self.geometry_wkt, **part}


# A transverse Mercator grid is true to 0.04 % within 3 degrees of its central meridian (UTM's
# k0 = 0.9996 and the zone's edges); beyond that, its lengths grow faster.
MAX_DEGREES_OFF_MERIDIAN = 3.0


def scale_warning(region: Region) -> str | None:
    """One line when a region's grid is stretched far from true: for a UTM grid, an edge more
    than MAX_DEGREES_OFF_MERIDIAN from its central meridian, with the scale there (pyproj's
    projection factors at the region's corners and edge midpoints)."""
    from pyproj import CRS, Proj

    crs = CRS.from_user_input(region.crs)
    zone = crs.utm_zone
    if zone is None or region.zone is not None:  # a part of a region lies in its own zone
        return None
    meridian = -183 + 6 * int(zone[:-1])
    w, s, e, n = region.lonlat_bounds
    lons, lats = [w, e, w, e, w, e], [s, s, n, n, (s + n) / 2, (s + n) / 2]
    off = max(abs(lon - meridian) for lon in lons)
    if off <= MAX_DEGREES_OFF_MERIDIAN:
        return None
    k = max(Proj(crs).get_factors(lons, lats).meridional_scale)
    side = "west" if abs(w - meridian) >= abs(e - meridian) else "east"
    return (f"warning: region {region.name}: its {side} edge lies {off:.1f} degrees from "
            f"{region.crs}'s central meridian ({meridian} E), where the grid's lengths are "
            f"{100 * (k - 1):.2f} % long (areas are reported on the ellipsoid and are not "
            "affected; lengths and boundary distances are)")


def region_from_lonlat(name: str, bounds: tuple[float, float, float, float],
                       crs: str | None = None, description: str = "",
                       geometry_wkt: str | None = None) -> Region:
    from pyproj import Transformer

    w, s, e, n = bounds
    if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
        source = description.removeprefix("from ") or f"region {name}"
        raise InputError(f"{source}: bounds {bounds} must be W S E N in degrees, with "
                         "-180 <= W < E <= 180 and -90 <= S < N <= 90")
    if e - w > MAX_LON_SPAN:
        source = description.removeprefix("from ") or f"region {name}"
        raise InputError(f"{source}: spans {e - w:g} degrees of longitude ({w:g} to {e:g}), "
                         f"more than {MAX_LON_SPAN:g}: a region crossing the antimeridian "
                         "(180 degrees) is refused, as --bbox refuses it; export one region "
                         "on each side of it")
    crs = crs or utm_crs_for((w + e) / 2, (s + n) / 2)
    check_grid_crs(crs)
    t = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    proj = t.transform_bounds(w, s, e, n, densify_pts=51)
    return Region(name, crs, tuple(bounds), ExportGrid.covering(crs, proj), False, description,
                  geometry_wkt)
