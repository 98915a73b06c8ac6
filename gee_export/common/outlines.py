"""Glacier outlines from any inventory: reading, repairing, identifying, measuring on the
ellipsoid, splitting off glaciers under the size limit, and rasterizing onto grid windows."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from .errors import InputError, InputNotFoundError

if TYPE_CHECKING:
    from rasterio.crs import CRS
    from shapely.geometry.base import BaseGeometry

# Identifier fields of the common inventories, tried in this order: GLIMS, RGI 7, RGI 6,
# the Chinese inventories, then anything called id.
ID_FIELDS = ("glac_id", "rgi_id", "RGIId", "GLIMSId", "glims_id", "GLIMS_ID", "FCGI_ID", "id")


@dataclass
class Outlines:
    """Glacier polygons in a grid's CRS with `glacier_id` and `area_km2` (ellipsoidal)."""
    frame: object  # GeoDataFrame
    path: Path
    id_field: str | None  # the inventory field the ids come from (None: row numbers)
    repaired: int  # invalid polygons that were repaired on reading

    def __len__(self) -> int:
        return len(self.frame)

    @property
    def geometries(self) -> np.ndarray:
        return np.asarray(self.frame.geometry.values)

    @property
    def ids(self) -> list[str]:
        return [str(v) for v in self.frame["glacier_id"]]

    def split_by_area(self, min_area_km2: float) -> tuple["Outlines", "Outlines"]:
        """(glaciers of at least min_area_km2, smaller ones), by ellipsoidal area."""
        small = self.frame["area_km2"] < min_area_km2
        return (Outlines(self.frame[~small].reset_index(drop=True), self.path, self.id_field,
                         self.repaired),
                Outlines(self.frame[small].reset_index(drop=True), self.path, self.id_field, 0))

    def describe(self) -> str:
        src = f"ids from {self.id_field!r}" if self.id_field else "ids are row numbers"
        rep = f", {self.repaired} invalid polygon(s) repaired" if self.repaired else ""
        return f"{len(self)} outlines from {self.path.name} ({src}{rep})"


def ellipsoidal_area_km2(geoms: Sequence[BaseGeometry], crs: str | CRS) -> np.ndarray:
    """Area of each geometry on the WGS84 ellipsoid, in km^2 (what inventories quote)."""
    import geopandas as gpd
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    lonlat = gpd.GeoSeries(geoms, crs=crs).to_crs("EPSG:4326")
    return np.array([abs(geod.geometry_area_perimeter(g)[0]) / 1e6 for g in lonlat])


def check_outlines_readable(path: Path) -> None:
    """Refuse a missing or unreadable outlines file cheaply (its header only), before any
    long work that would need it."""
    import pyogrio

    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"outlines {path}: no such file")
    try:
        pyogrio.read_info(path)
    except Exception as e:  # pyogrio raises several types for unreadable files
        raise InputError(f"outlines {path}: cannot be read ({str(e).splitlines()[0]})") from None


def read_outlines(path: Path, crs: str, id_field: str | None = None) -> Outlines:
    """Outlines from any file pyogrio reads, in any CRS, reprojected to `crs` and repaired.

    Multipart glaciers and holes (nunataks) are kept as they are.
    """
    import geopandas as gpd

    check_outlines_readable(path)
    try:
        df = gpd.read_file(path)
    except Exception as e:  # pyogrio raises several types for unreadable files
        raise InputError(f"outlines {path}: cannot be read ({str(e).splitlines()[0]})") from None
    if df.crs is None:
        raise InputError(f"outlines {path}: has no CRS; set one (e.g. in QGIS) and retry")
    df = df[df.geometry.notna() & ~df.geometry.is_empty]
    df = df[df.geom_type.isin(["Polygon", "MultiPolygon"])]
    if df.empty:
        raise InputError(f"outlines {path}: holds no polygon")
    ids, used = _glacier_ids(df, path, id_field)
    df = df.assign(glacier_id=ids)
    df, repaired = _repaired(df.to_crs(crs))
    df = df.assign(area_km2=ellipsoidal_area_km2(df.geometry.values, crs))
    return Outlines(df.reset_index(drop=True), path, used, repaired)


def _glacier_ids(df, path: Path, id_field: str | None) -> tuple[list[str], str | None]:
    if id_field is not None:
        if id_field not in df.columns:
            raise InputError(f"--id-field {id_field!r}: outlines {path} have no such field "
                             f"(fields: {', '.join(c for c in df.columns if c != 'geometry')})")
        return [str(v) for v in df[id_field]], id_field
    for f in ID_FIELDS:
        if f in df.columns and df[f].notna().all():
            return [str(v) for v in df[f]], f
    return [str(i + 1) for i in range(len(df))], None


def _repaired(df):
    """Invalid polygons made valid (keeping only their polygonal part); how many were."""
    import shapely

    invalid = ~df.geometry.is_valid
    if not invalid.any():
        return df, 0
    fixed = shapely.make_valid(df.geometry[invalid].values)
    parts = [shapely.get_parts(g) for g in fixed]
    fixed = [shapely.union_all(p[shapely.get_type_id(p) >= 3]) for p in parts]
    df = df.copy()
    df.loc[invalid, "geometry"] = fixed
    df = df[df.geom_type.isin(["Polygon", "MultiPolygon"]) & ~df.geometry.is_empty]
    return df, int(invalid.sum())


class OutlineRasterizer:
    """Rasterize outlines onto windows of a grid, touching only the polygons near each window.

    Pixel-centre rule (a pixel belongs to a polygon when its centre lies inside it): unbiased,
    so rasterized areas match polygon areas to a fraction of a percent, where "all touched"
    overshoots by the boundary length times half a pixel.
    """

    def __init__(self, geometries, transform):
        import shapely

        self.geoms = np.asarray(geometries)
        self.tree = shapely.STRtree(self.geoms)
        self.transform = transform

    def _near(self, row_off: int, col_off: int, height: int, width: int):
        from affine import Affine
        from shapely.geometry import box

        t = self.transform * Affine.translation(col_off, row_off)
        x0, y0 = t * (0, 0)
        x1, y1 = t * (width, height)
        return t, self.tree.query(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))

    def mask(self, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
        """True where a pixel centre lies inside any outline."""
        return self.index(row_off, col_off, height, width) > 0

    def index(self, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
        """1 + the index of the outline each pixel centre lies in, 0 outside every outline
        (where outlines overlap, the later one wins)."""
        from rasterio.features import rasterize

        t, near = self._near(row_off, col_off, height, width)
        if len(near) == 0:
            return np.zeros((height, width), np.int32)
        return rasterize(((self.geoms[i], int(i) + 1) for i in sorted(near)),
                         out_shape=(height, width), transform=t, fill=0, dtype="int32",
                         all_touched=False)
