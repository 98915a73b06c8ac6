"""Glacier outlines from a probability raster (the paper's section 2.2: convert to polygons,
drop small isolated ones), read block by block so that memory does not grow with the scene:
the polygons over a threshold, cleaned, with their mean probability, and the predicted ice of
each glacier of an inventory.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from geopandas import GeoDataFrame
    from rasterio.crs import CRS
    from rasterio.io import DatasetReader

    from gee_export.common.outlines import Outlines

    from .config import PredictConfig


def outline_layers(probability: Path, cfg: PredictConfig, inventory: Outlines | None
                   ) -> tuple[dict[str, GeoDataFrame], float]:
    """The layers of a prediction's outlines: "glaciers", the cleaned polygons over the
    threshold with their mean probability and, where an inventory is given, the ids of the
    inventory glaciers each holds; "by_glacier", the predicted ice of each inventory glacier.
    Also the valid (non-NaN) area in km^2."""
    import rasterio

    with rasterio.open(probability) as prob:
        raw_polys, valid_px = polygonize_blocks(prob, cfg.threshold)
        polys = clean_polygons(raw_polys, cfg.min_area_km2 * 1e6, cfg.max_hole_km2 * 1e6,
                               cfg.simplify_m)
        layers = {"glaciers": glacier_frame(polys, mean_probability(prob, polys),
                                            prob.crs)}
        if inventory is not None:
            layers["by_glacier"] = ice_by_glacier(prob, inventory, cfg.threshold)
            layers["glaciers"] = with_inventory_ids(layers["glaciers"],
                                                    layers["by_glacier"])
        valid_km2 = valid_px * abs(prob.res[0] * prob.res[1]) / 1e6
    return layers, valid_km2

def polygonize_blocks(src: DatasetReader, threshold: float, block: int = 1024) -> tuple[list, int]:
    """Glacier polygons (probability >= threshold, 4-connected) of a probability raster, read
    block by block; pieces cut by block borders are dissolved back into one polygon. Also
    returns the number of valid (non-NaN) pixels, counted in the same pass."""
    import shapely
    from rasterio import features
    from rasterio.windows import Window
    from shapely.geometry import shape

    final, edge, valid = [], [], 0
    for r in range(0, src.height, block):
        for c in range(0, src.width, block):
            win = Window(c, r, min(block, src.width - c), min(block, src.height - r))
            p = src.read(1, window=win)
            valid += int(np.isfinite(p).sum())
            mask = np.nan_to_num(p, nan=0.0) >= threshold
            if not mask.any():
                continue
            t = src.window_transform(win)
            x0, y1 = t * (0, 0)
            x1, y0 = t * (win.width, win.height)
            for geom, _ in features.shapes(mask.astype(np.uint8), mask=mask, transform=t):
                poly = shape(geom)
                b = poly.bounds
                touches = ((b[0] <= x0 and c > 0) or (b[2] >= x1 and c + win.width < src.width)
                           or (b[3] >= y1 and r > 0) or (b[1] <= y0 and r + win.height <
                                                          src.height))
                (edge if touches else final).append(poly)
    if edge:
        merged = shapely.union_all(edge)
        final.extend(shapely.get_parts(merged).tolist())
    return final, valid


def clean_polygons(polys: list, min_area_m2: float, max_hole_m2: float,
                   simplify_m: float = 0.0) -> list:
    """Fill holes smaller than max_hole_m2, drop polygons smaller than min_area_m2 (after
    filling, so a glacier is judged by its outline), optionally simplify."""
    from shapely.geometry import Polygon

    out = []
    for p in polys:
        holes = [h for h in p.interiors if Polygon(h).area >= max_hole_m2]
        q = Polygon(p.exterior, holes)
        if q.area < min_area_m2:
            continue
        if simplify_m > 0:
            q = q.simplify(simplify_m, preserve_topology=True)
        out.append(q)
    return out


def mean_probability(src: DatasetReader, polys: list, block: int = 1024) -> list[float]:
    """Mean probability inside each polygon (pixel-centre rule), accumulated block by block so
    a glacier as big as the scene costs no more memory than a small one."""
    import shapely
    from rasterio import features
    from rasterio.windows import Window
    from rasterio.windows import bounds as window_bounds
    from shapely.geometry import box

    n = len(polys)
    if n == 0:
        return []
    geoms = np.asarray(polys)
    tree = shapely.STRtree(geoms)
    sums, counts = np.zeros(n + 1), np.zeros(n + 1)
    for r in range(0, src.height, block):
        for c in range(0, src.width, block):
            win = Window(c, r, min(block, src.width - c), min(block, src.height - r))
            t = src.window_transform(win)
            idx = tree.query(box(*window_bounds(win, src.transform)))
            if not len(idx):
                continue
            p = src.read(1, window=win)
            lab = features.rasterize(((geoms[i], int(i) + 1) for i in idx),
                                     out_shape=p.shape, transform=t, fill=0, dtype="int32")
            ok = (lab > 0) & np.isfinite(p)
            sums += np.bincount(lab[ok], weights=p[ok], minlength=n + 1)
            counts += np.bincount(lab[ok], minlength=n + 1)
    with np.errstate(invalid="ignore"):
        return [float(v) for v in np.where(counts > 0, sums / np.maximum(counts, 1),
                                           np.nan)[1:]]


def ice_by_glacier(prob: DatasetReader, inventory: Outlines, threshold: float
                   ) -> GeoDataFrame:
    """The predicted ice of each inventory glacier: the pixels at or over the threshold in
    its zone, as a polygon, with the glacier's id and the ellipsoidal area."""
    import geopandas as gpd

    from gee_export.common.outlines import ellipsoidal_area_km2
    from training.zones import GlacierPieces, zone_blocks, zones_of

    pieces = GlacierPieces()
    for b in zone_blocks(prob, zones_of(prob, inventory.geometries)):
        pieces.add(np.where(b.at_least(threshold), b.zone, 0), b.transform)
    merged = pieces.dissolved()
    ids = inventory.ids
    keys = sorted(merged)
    geoms = [merged[k] for k in keys]
    return gpd.GeoDataFrame(
        {"glacier_id": [ids[k - 1] for k in keys],
         "area_km2": ellipsoidal_area_km2(geoms, prob.crs) if geoms else []},
        geometry=geoms, crs=prob.crs)


def glacier_frame(polys: list, means: list[float], crs: CRS) -> GeoDataFrame:
    """The predicted glaciers as a layer: an id, the ellipsoidal area and the mean
    probability of each polygon."""
    import geopandas as gpd

    from gee_export.common.outlines import ellipsoidal_area_km2

    return gpd.GeoDataFrame(
        {"polygon_id": np.arange(1, len(polys) + 1, dtype=np.int64),
         "area_km2": ellipsoidal_area_km2(polys, crs) if polys else [],
         "mean_probability": means}, geometry=list(polys), crs=crs)


def with_inventory_ids(glaciers: GeoDataFrame, by_glacier: GeoDataFrame) -> GeoDataFrame:
    """Each predicted polygon with the ids of the inventory glaciers whose ice it holds
    (several where glaciers touch)."""
    import geopandas as gpd

    pairs = gpd.sjoin(glaciers[["polygon_id", "geometry"]], by_glacier[["glacier_id",
                                                                         "geometry"]],
                      predicate="intersects")
    ids = pairs.groupby("polygon_id")["glacier_id"].apply(lambda v: ",".join(sorted(set(v))))
    return glaciers.assign(glacier_ids=glaciers["polygon_id"].map(ids).fillna(""))
