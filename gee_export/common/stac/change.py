"""A change's item: over its predictions' grid (or, across UTM zones, the union of their
footprints), every file of the change directory an asset, derived from its predictions."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..grid import ExportGrid
from ..layout import CHANGE_FILES, PREDICTION_MANIFEST, ZONES_MANIFEST, resolved_path
from .assets import CSV, GPKG, QML, derived_from, raster_asset, relative_hrefs
from .items import grid_item
from .records import common_props, read_manifest
from .zoned import union_item, zone_members

if TYPE_CHECKING:
    import pystac


def change_item(workspace: Path, d: Path, m: dict, predictions: dict) -> pystac.Item:
    """A change's item; its predictions (recorded in its parameters) must be in the catalog."""
    import pystac

    members = zone_members(d, (m.get("parameters") or {}).get("predictions", []),
                           predictions)
    first = resolved_path(m["parameters"]["predictions"][0], d)
    pm = read_manifest(first, PREDICTION_MANIFEST) or read_manifest(first, ZONES_MANIFEST) or {}
    item_id = f"{d.parent.name}-{d.name}"
    props = {**common_props({**pm, **m}, d, workspace), "glacier:years": m.get("years"),
             "glacier:glaciers": m.get("glaciers")}
    if "grid" not in pm:  # a change across UTM zones: over its predictions' footprints
        item = union_item(item_id, members, props)
    else:
        grid = ExportGrid.from_dict(pm["grid"])
        starts = [i.common_metadata.start_datetime for i in members]
        ends = [i.common_metadata.end_datetime for i in members]
        item = grid_item(item_id, grid, grid.bounds, (grid.height, grid.width), grid.transform,
                         (min(starts), max(ends)), props)
    href = relative_hrefs(workspace, "changes", item_id)
    kinds = {".json": (["metadata"], pystac.MediaType.JSON), ".csv": (["data"], CSV),
             ".gpkg": (["data"], GPKG), ".png": (["overview"], pystac.MediaType.PNG),
             ".qml": (["style"], QML)}
    for f in sorted(d.iterdir()):
        if f.suffix == ".tif":
            raster_asset(item, f.stem, href(f), f, ["data"], f.name)
        elif f.suffix in kinds and not f.name.startswith("."):
            roles, kind = kinds[f.suffix]  # keys apart from the map's (change.tif: change)
            key = f"style_{f.stem}" if f.suffix == ".qml" else "manifest" if \
                f.name == CHANGE_FILES[0] else f"{f.stem}_{f.suffix[1:]}"
            item.add_asset(key, pystac.Asset(href(f), f.name, media_type=kind, roles=roles))
    derived_from(item, members)
    return item
