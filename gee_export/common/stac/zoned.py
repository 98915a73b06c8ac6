"""Products across UTM zones: an item over their zones' items, beside them.

A product across zones (zones.json, or a tile set listing its zones') has no one projection:
its footprint is the union of its zones' items' in WGS84, its dates theirs, and it is
`derived_from` them. Each zone's product must itself be a complete one in the catalog.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from ..layout import OUTLINES_FILE, TILE_INDEX, TILES_MANIFEST, ZONES_MANIFEST, resolved_path
from .assets import GPKG, add_files, derived_from, relative_hrefs
from .items import prediction_assets
from .records import common_props

if TYPE_CHECKING:
    import pystac


def union_item(item_id: str, members: list[pystac.Item], props: dict) -> pystac.Item:
    """An item over several (a product across UTM zones): its footprint their union in WGS84,
    its dates theirs, and no one projection."""
    import pystac
    import shapely
    from shapely.geometry import shape

    if not members:
        raise ValueError("none of its zones' products is in the catalog")
    union = shapely.union_all([shape(i.geometry) for i in members])
    starts = [i.common_metadata.start_datetime or i.datetime for i in members]
    ends = [i.common_metadata.end_datetime or i.datetime for i in members]
    return pystac.Item(item_id, json.loads(shapely.to_geojson(union)), list(union.bounds),
                       None, {k: v for k, v in props.items() if v is not None},
                       start_datetime=min(starts), end_datetime=max(ends))


def zone_members(d: Path, paths: Iterable[str], known: dict) -> list:
    """The catalog's items of a zoned product's zones (recorded `paths`), each required."""
    out = []
    for p in paths:
        path = resolved_path(p, d)
        if path not in known:
            raise ValueError(f"its zone's product {path} is not a complete one")
        out.append(known[path])
    return out


def zoned_export_item(workspace: Path, d: Path, m: dict, exports: dict) -> pystac.Item:
    """An export across zones: over its zones' cells, with every zone's outlines."""
    import pystac

    cells = zone_members(d, [p["path"] for p in m["parts"]], exports)
    item = union_item(d.name, [c for cs in cells for c in cs],
                      {**common_props(m, d, workspace),
                       "glacier:zones": [p["zone"] for p in m["parts"]]})
    add_files(item, relative_hrefs(workspace, "exports", d.name), [
        ("outlines", d / OUTLINES_FILE, ["metadata"], "every zone's outlines, in EPSG:4326",
         GPKG),
        ("manifest", d / ZONES_MANIFEST, ["metadata"], ZONES_MANIFEST, pystac.MediaType.JSON)])
    derived_from(item, [c for cs in cells for c in cs])
    return item


def zoned_tiles_item(workspace: Path, d: Path, m: dict, tiles: dict) -> pystac.Item:
    """A tile set across zones: over its zones' tile sets, with its index of every zone."""
    import pystac

    members = zone_members(d, [z["tiles"] for z in m["zones"]], tiles)
    item = union_item(d.name, members, {
        **common_props(m, d, workspace), "glacier:tile_size": m.get("tile_size"),
        "glacier:counts": m.get("counts"), "glacier:bands": m.get("bands"),
        "glacier:zones": [z["zone"] for z in m["zones"]]})
    add_files(item, relative_hrefs(workspace, "tiles", d.name), [
        ("index", d / TILE_INDEX, ["metadata"], "tile footprints, zones, splits", GPKG),
        ("manifest", d / TILES_MANIFEST, ["metadata"], "manifest.json", pystac.MediaType.JSON)])
    derived_from(item, members)
    return item


def zoned_prediction_item(workspace: Path, d: Path, m: dict,
                          predictions: dict) -> pystac.Item:
    """A prediction across zones: over its zones' predictions, with its merged outlines."""
    members = zone_members(d, [p["path"] for p in m["parts"]], predictions)
    item_id = f"{d.parent.name}-{d.name}"
    item = union_item(item_id, members, {
        **common_props(m, d, workspace), "glacier:run": d.parent.name,
        "glacier:glaciers": m.get("glaciers"), "glacier:glacier_area_km2":
        m.get("glacier_area_km2"), "glacier:zones": [p["zone"] for p in m["parts"]]})
    prediction_assets(item, d, relative_hrefs(workspace, "predictions", item_id), ZONES_MANIFEST)
    derived_from(item, members)
    return item
