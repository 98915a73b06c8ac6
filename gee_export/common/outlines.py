"""Glacier outlines from any inventory: reading, repairing, identifying, measuring on the
ellipsoid, splitting off glaciers under the size limit, and rasterizing onto grid windows."""
from __future__ import annotations

from dataclasses import dataclass, field
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
# The smallest glacier mapped, km^2 (ellipsoidal): the paper's minimum glacier area (Peng et
# al. 2023 map the 2072 glaciers of the Qilian Mountains over 0.05 km^2). Tiles label smaller
# glaciers apart, predictions drop smaller polygons, evaluations ignore smaller references.
MIN_GLACIER_AREA_KM2 = 0.05


@dataclass
class Outlines:
    """Glacier polygons in a grid's CRS with `glacier_id` and `area_km2` (ellipsoidal)."""
    frame: object  # GeoDataFrame
    path: Path
    id_field: str | None  # the inventory field the ids come from (None: row numbers)
    repaired: int  # invalid polygons that were repaired on reading
    ignored: dict[str, int] = field(default_factory=dict)  # features that are no polygon
    layer: str | None = None  # the layer read, in a file of several

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
                         self.repaired, self.ignored, self.layer),
                Outlines(self.frame[small].reset_index(drop=True), self.path, self.id_field, 0,
                         {}, self.layer))

    @property
    def source(self) -> str:
        """The file, and the layer where it has several."""
        return f"{self.path} (layer {self.layer})" if self.layer else str(self.path)

    def describe(self) -> str:
        src = f"ids from {self.id_field!r}" if self.id_field else "ids are row numbers"
        rep = f", {self.repaired} invalid polygon(s) repaired" if self.repaired else ""
        return f"{len(self)} outlines from {self.path.name} ({src}{rep})"

    def notes(self) -> list[str]:
        """What reading changed or left out, one line each: for the command's output."""
        out = []
        if self.repaired:
            out.append(f"repaired {self.repaired} invalid outline polygon(s) in {self.source}")
        if self.ignored:
            what = ", ".join(f"{n} {k}" for k, n in self.ignored.items())
            out.append(f"ignored {what} in {self.source}: only polygons are glaciers")
        return out


def features_id(*parts: Outlines) -> str:
    """What identifies outlines: their glaciers' ids and geometries (normalized, as read in
    the grid's CRS), in a fixed order, not the file's bytes, so a file written again with the
    same features (a GeoPackage's new timestamps after `prep export --force`) is the same."""
    import hashlib

    import shapely

    h = hashlib.sha256()
    for part in parts:
        wkb = shapely.to_wkb(shapely.normalize(part.geometries))
        for gid, geom in sorted(zip(part.ids, wkb)):
            h.update(f"{len(gid)}:{gid}:{len(geom)}:".encode() + geom)
        h.update(b"|")
    return h.hexdigest()


def ellipsoidal_area_km2(geoms: Sequence[BaseGeometry], crs: str | CRS) -> np.ndarray:
    """Area of each geometry on the WGS84 ellipsoid, in km^2 (what inventories quote)."""
    import geopandas as gpd
    from pyproj import Geod

    geod = Geod(ellps="WGS84")
    lonlat = gpd.GeoSeries(geoms, crs=crs).to_crs("EPSG:4326")
    return np.array([abs(geod.geometry_area_perimeter(g)[0]) / 1e6 for g in lonlat])


LAYER_OPTION = "--outlines-layer"  # how a command names the layer of a file of several
GLACIERS_LAYER = "glaciers"  # the layer of glacier polygons in the GeoPackages written here
# Layer geometry types that may hold polygons ("Unknown": mixed types, as GeoPackages say).
_MAY_HOLD_POLYGONS = ("Polygon", "MultiPolygon", "Unknown", "Geometry", "GeometryCollection")


def check_outlines_readable(path: Path, layer: str | None = None) -> str | None:
    """Refuse a missing or unreadable outlines file cheaply (its header only), before any
    long work that would need it; the layer to read (None: the file's only one).

    A file of several layers needs `layer`, unless exactly one of them may hold polygons or
    one is called "glaciers" (GLACIERS_LAYER, as this toolkit's own files name it).

    Raises:
        InputNotFoundError: no such file.
        InputError: unreadable; no such layer; several layers that may hold glaciers.
    """
    import pyogrio

    path = Path(path)
    if not path.is_file():
        raise InputNotFoundError(f"outlines {path}: no such file")
    try:
        layers = [(str(n), str(t)) for n, t in pyogrio.list_layers(path)]
    except Exception as e:  # pyogrio raises several types for unreadable files
        raise InputError(f"outlines {path}: cannot be read ({str(e).splitlines()[0]})") from None
    listed = ", ".join(f"{n} ({t})" for n, t in layers)
    if layer is not None:
        if layer not in [n for n, _ in layers]:
            raise InputError(f"{LAYER_OPTION} {layer!r}: outlines {path} have no such layer "
                             f"(layers: {listed})")
        return layer
    if len(layers) <= 1:
        return None
    candidates = [n for n, t in layers if t.removesuffix(" Z") in _MAY_HOLD_POLYGONS]
    if len(candidates) == 1:
        return candidates[0]
    if GLACIERS_LAYER in candidates:
        return GLACIERS_LAYER
    raise InputError(f"outlines {path} hold {len(layers)} layers ({listed}); name the one "
                     f"with the glacier polygons with {LAYER_OPTION}")


def read_outlines(path: Path, crs: str, id_field: str | None = None,
                  layer: str | None = None) -> Outlines:
    """Outlines from any file pyogrio reads, in any CRS, reprojected to `crs` and repaired;
    from `layer` in a file of several (check_outlines_readable says which may be left out).

    Multipart glaciers and holes (nunataks) are kept as they are. Points, lines and
    features without geometry are left out and counted (Outlines.ignored).
    """
    import geopandas as gpd

    path = Path(path)
    layer = check_outlines_readable(path, layer)
    try:
        df = gpd.read_file(path, **({"layer": layer} if layer is not None else {}))
    except Exception as e:  # pyogrio raises several types for unreadable files
        raise InputError(f"outlines {path}: cannot be read ({str(e).splitlines()[0]})") from None
    where = f"outlines {path}" + (f" (layer {layer})" if layer is not None else "")
    if df.crs is None:
        raise InputError(f"{where}: has no CRS; set one (e.g. in QGIS) and retry")
    polygon = df.geometry.notna() & ~df.geometry.is_empty & \
        df.geom_type.isin(["Polygon", "MultiPolygon"])
    ignored = _count_kinds(df[~polygon])
    df = df[polygon]
    if df.empty:
        held = ", ".join(f"{n} {k}" for k, n in ignored.items()) or "no feature"
        raise InputError(f"{where}: holds no polygon ({held})")
    ids, used = _glacier_ids(df, path, id_field)
    df = df.assign(glacier_id=ids)
    df, repaired = _repaired(df.to_crs(crs))
    df = df.assign(area_km2=ellipsoidal_area_km2(df.geometry.values, crs))
    return Outlines(df.reset_index(drop=True), path, used, repaired, ignored, layer)


def _count_kinds(df) -> dict[str, int]:
    """Features by kind, in words: {"point(s)": 3, "line(s)": 1}."""
    kinds: dict[str, int] = {}
    for g in df.geometry:
        t = "feature(s) without geometry" if g is None or g.is_empty else {
            "Point": "point(s)", "MultiPoint": "point(s)", "LineString": "line(s)",
            "MultiLineString": "line(s)", "LinearRing": "line(s)"}.get(g.geom_type,
                                                                       "other shape(s)")
        kinds[t] = kinds.get(t, 0) + 1
    return kinds


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
