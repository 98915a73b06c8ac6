"""Glacier outlines: reading, repairing, filtering, and rasterizing them onto a grid window."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from .contract import GlacierError


def read_outlines(path: Path, crs: str, min_area_km2: float = 0.0):
    """Outlines from any file pyogrio reads, reprojected to `crs`, repaired, filtered by area.

    Multipart glaciers and holes (nunataks) are kept as they are; area is measured in `crs`
    (a UTM grid: within 0.1 % of the geodesic area over a glacier region).
    """
    import geopandas as gpd
    import shapely

    path = Path(path)
    if not path.is_file():
        raise GlacierError(f"outlines {path}: no such file")
    try:
        df = gpd.read_file(path)
    except Exception as e:  # pyogrio raises several types for unreadable files
        raise GlacierError(f"outlines {path}: cannot be read ({str(e).splitlines()[0]})") from None
    if df.crs is None:
        raise GlacierError(f"outlines {path}: has no CRS; set one (e.g. in QGIS) and retry")
    df = df[df.geometry.notna() & ~df.geometry.is_empty]
    df = df[df.geom_type.isin(["Polygon", "MultiPolygon"])]
    if df.empty:
        raise GlacierError(f"outlines {path}: holds no polygon")
    df = df.to_crs(crs)
    invalid = ~df.geometry.is_valid
    if invalid.any():
        df.loc[invalid, "geometry"] = shapely.make_valid(df.geometry[invalid].values)
        # make_valid can return collections with lines; keep the polygonal part only.
        df["geometry"] = [shapely.union_all(shapely.get_parts(g)[
            shapely.get_type_id(shapely.get_parts(g)) >= 3]) if g.geom_type == "GeometryCollection"
            else g for g in df.geometry]
    df = df[df.geom_type.isin(["Polygon", "MultiPolygon"]) & ~df.geometry.is_empty]
    df = df.assign(area_km2_grid=df.geometry.area / 1e6)
    if min_area_km2 > 0:
        df = df[df["area_km2_grid"] >= min_area_km2]
    if df.empty:
        raise GlacierError(f"outlines {path}: no polygon of at least {min_area_km2} km^2")
    return df.reset_index(drop=True)


class OutlineRasterizer:
    """Rasterize outlines onto windows of a grid, touching only the polygons near each window.

    Pixel-centre rule (a pixel is glacier when its centre lies inside a polygon): unbiased, so
    the rasterized area matches the polygons' area to within a fraction of a percent, where
    "all touched" overshoots by the boundary length times half a pixel.
    """

    def __init__(self, geometries, transform):
        import shapely

        self.geoms = np.asarray(geometries)
        self.tree = shapely.STRtree(self.geoms)
        self.transform = transform

    def window(self, row_off: int, col_off: int, height: int, width: int) -> np.ndarray:
        from affine import Affine
        from rasterio.features import rasterize
        from shapely.geometry import box

        t = self.transform * Affine.translation(col_off, row_off)
        x0, y0 = t * (0, 0)
        x1, y1 = t * (width, height)
        near = self.tree.query(box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)))
        if len(near) == 0:
            return np.zeros((height, width), bool)
        return rasterize(((g, 1) for g in self.geoms[near]), out_shape=(height, width),
                         transform=t, fill=0, dtype="uint8", all_touched=False).astype(bool)
