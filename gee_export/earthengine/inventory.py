"""What the catalogue holds over the plan, fetched in pages under the collection limit: every
image id, date and footprint each filter kept, how many touch each cell (a cell no image
covers is refused by name), and the GLIMS outlines where the user gives none."""
from __future__ import annotations

from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np

from gee_export.common.errors import StateError
from gee_export.common.grid import Cell, ExportGrid, Region
from gee_export.config import RecipeConfig
from gee_export.earthengine.client import EarthEngineClient, Retry
from gee_export.export import Plan
from gee_export.stack import ExportDir

if TYPE_CHECKING:
    import ee
    from geopandas import GeoDataFrame
    from shapely.geometry.base import BaseGeometry

PAGE = 4000  # elements per computeValue of a collection: the service aborts over 5000


def record_inventory(exp: ExportDir, client: EarthEngineClient, plan: Plan, cfg: RecipeConfig,
                     retry: Retry, echo: Callable[[str], None]) -> None:
    """Every image id, date and footprint each filter kept; cells no image covers are
    refused by name (the 2017-2018 L2A hole)."""
    if "images" in exp.manifest:
        return
    from gee_export.earthengine import recipe as R

    aoi, grid = R.grid_rectangle(plan.grid), plan.grid
    sizes = retry.call("image inventory", client.compute_value, R.inventory_sizes(aoi, cfg))
    s1 = features(client, retry, "Sentinel-1 footprints", R.footprints(R.s1_collection(aoi, cfg)),
                  sizes["s1"], grid.crs)
    s2 = features(client, retry, "Sentinel-2 footprints", R.footprints(R.s2_collection(aoi, cfg)),
                  sizes["s2"], grid.crs)
    counts = {"s2": count_per_cell(s2, grid, plan.cells),  # the known L2A hole first
              "s1": count_per_cell(s1, grid, plan.cells)}
    check_coverage(counts, cfg)
    exp.manifest["images"] = {
        "s1_collection": R.S1_COLLECTION, "s1_count": len(s1),
        "s1_images": sorted(zip(s1["id"], s1["date"])) if len(s1) else [],
        "s2_collection": cfg.s2_collection, "s2_scenes_in_window": int(sizes["s2_in_window"]),
        "s2_count": len(s2), "s2_images": sorted(zip(s2["id"], s2["date"])) if len(s2) else [],
        "cloud_mask": f"Cloud Score+ {cfg.cloud_score_band} >= {cfg.cloud_score_threshold}"
                      " or spectral snow/ice" + (" or SCL 11" if cfg.s2_level == "l2a" else "")}
    for cid, info in exp.cells.items():
        info["images"] = {"s1": counts["s1"][cid], "s2": counts["s2"][cid]}
    exp.save()
    echo(f"images: {len(s1)} Sentinel-1, {len(s2)} of {sizes['s2_in_window']} Sentinel-2 "
         f"scenes under {cfg.s2_max_scene_cloud:g} % scene cloud")


def features(client: EarthEngineClient, retry: Retry, step: str,
             collection: ee.FeatureCollection, size: int, crs: str) -> GeoDataFrame:
    """A feature collection fetched in pages of PAGE elements, in the grid's CRS."""
    from gee_export.earthengine import recipe as R

    feats = []
    for k, offset in enumerate(range(0, int(size), PAGE)):
        fc = retry.call(f"{step} (page {k + 1} of {-(-int(size) // PAGE)})",
                        client.compute_value, R.page(collection, offset, PAGE))
        feats += fc.get("features", []) if isinstance(fc, dict) else []
    return _lonlat_frame(feats, crs)


def fetch_glims(client: EarthEngineClient, region: Region, year: int, retry: Retry
                ) -> GeoDataFrame:
    """GLIMS outlines over the region in pages under the collection limit, one analysis per
    glacier with its nunataks cut out, in the region's CRS (None when there is none)."""
    from gee_export.earthengine import recipe as R

    coll = R.glims_outlines(R.grid_rectangle(region.grid))
    size = int(retry.call("GLIMS outlines (count)", client.compute_value, coll.size()))
    feats = []
    pages = -(-size // PAGE)
    for k, offset in enumerate(range(0, size, PAGE)):
        fc = retry.call(f"GLIMS outlines (page {k + 1} of {pages})", client.compute_value,
                        R.page(coll, offset, PAGE))
        feats += fc.get("features", [])
    frame = _lonlat_frame(feats, region.crs)
    return R.glims_glaciers(frame, year) if len(frame) else None


def _lonlat_frame(features: list, crs: str):
    import geopandas as gpd

    if not features:
        return gpd.GeoDataFrame({"id": [], "date": []}, geometry=[], crs=crs)
    return gpd.GeoDataFrame.from_features(features, crs="EPSG:4326").to_crs(crs)


def count_per_cell(footprints: Sequence[BaseGeometry], grid: ExportGrid, cells: list[Cell]) -> dict[str, int]:
    """How many images' footprints touch each cell (footprints already in the grid CRS)."""
    import shapely
    from shapely.geometry import box

    if len(footprints) == 0:
        return {c.id: 0 for c in cells}
    tree = shapely.STRtree(np.asarray(footprints.geometry.values))
    return {c.id: int(len(tree.query(box(*c.bounds(grid)), predicate="intersects")))
            for c in cells}


def check_coverage(counts: dict[str, dict[str, int]], cfg: RecipeConfig) -> None:
    """Refuse cells no image covers, naming them (the 2017-2018 L2A hole)."""
    for sensor, per_cell in counts.items():
        empty = sorted(cid for cid, n in per_cell.items() if n == 0)
        if not empty:
            continue
        if sensor == "s2" and cfg.s2_level == "l2a":
            hint = (" Earth Engine's L2A archive is thin before December 2018; --s2-level l1c "
                    "uses top-of-atmosphere scenes (recorded; do not mix levels in one "
                    "training set)")
        elif sensor == "s2":
            hint = " Widen --s2-window or raise --max-scene-cloud."
        elif cfg.s1_orbit != "both":
            hint = (f" --orbit {cfg.s1_orbit} kept none of the window's scenes: use --orbit "
                    "both or widen --s1-window.")
        else:
            hint = " Widen --s1-window."
        raise StateError(
            f"{len(empty)} cell(s) have 0 {sensor.upper()} images after filtering, e.g. "
            f"{', '.join(empty[:5])}.{hint}")
