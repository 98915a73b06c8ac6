"""Building the catalog in memory: walking the workspace's complete products, kind by kind.

`stac/catalog.json` holds four collections: `exports` (an item per stack cell, and one per
export across UTM zones with its merged outlines), `tiles` (an item per tile set),
`predictions` (an item per predicted scene) and `changes` (an item per change). A product
across UTM zones (zones.json, or a tile set listing its zones') is an item of its own beside
its zones' items, so its zones are walked first. A complete product the catalog cannot
describe is named in `left_out` (update_catalog warns of it), never left out silently.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..layout import (
    CHANGE_FILES,
    EXPORT_MANIFEST,
    EXPORTS_DIR,
    PREDICTION_MANIFEST,
    PREDICTIONS_DIR,
    TILES_DIR,
    TILES_MANIFEST,
    ZONES_MANIFEST,
)
from .change import change_item
from .extents import set_extent
from .items import export_items, prediction_item, tiles_item
from .records import products
from .zoned import zoned_export_item, zoned_prediction_item, zoned_tiles_item

if TYPE_CHECKING:
    import pystac

CATALOG_ID = "glacier-mapping"
COLLECTIONS = {
    "exports": "11-band stacks (Sentinel-1, Sentinel-2, indices, DEM), one item per cell",
    "tiles": "Labelled training tile sets, one item per tile set",
    "predictions": "Glacier probability and outlines, one item per predicted scene",
    "changes": "Glacier change across years, one item per change",
}


def build_catalog(workspace: Path, left_out: list[str] | None = None) -> pystac.Catalog:
    """The catalog of every complete product in `workspace`, in memory, its asset hrefs
    relative to where `write_catalog` puts each item. A product whose manifest lacks what
    its item needs (an older or hand-made one) is left out and named in `left_out`."""
    import pystac

    workspace = Path(workspace)
    left_out = [] if left_out is None else left_out

    def made(d: Path, make):
        try:
            return make()
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            left_out.append(f"{d} ({type(e).__name__}: {e})")
            return None

    catalog = pystac.Catalog(CATALOG_ID, "Glacier mapping workspace: exports, tile sets, "
                             "predictions and glacier change", title="glacier-mapping")
    cols = {name: collection(name, text) for name, text in COLLECTIONS.items()}
    exports = {}  # export dir -> its cell items
    for d, m in products(workspace / EXPORTS_DIR, EXPORT_MANIFEST, left_out):
        items = made(d, lambda: export_items(workspace, d, m))
        if items is not None:
            exports[d] = items
            cols["exports"].add_items(items)
    for d, m in products(workspace / EXPORTS_DIR, ZONES_MANIFEST, left_out):
        item = made(d, lambda: zoned_export_item(workspace, d, m, exports))
        if item is not None:
            cols["exports"].add_item(item)
    tiles = {}
    sets = products(workspace / TILES_DIR, TILES_MANIFEST, left_out)
    for d, m in sorted(sets, key=lambda p: bool(p[1].get("zones"))):  # the zones' sets first
        item = made(d, lambda: zoned_tiles_item(workspace, d, m, tiles) if m.get("zones")
                    else tiles_item(workspace, d, m, exports))
        if item is not None:
            cols["tiles"].add_item(item)
            tiles[d] = item
    predictions = {}
    pred_dirs = sorted((workspace / PREDICTIONS_DIR).glob("*/*"))
    for manifest in (PREDICTION_MANIFEST, ZONES_MANIFEST):  # the zones' predictions first
        for d, m in products(pred_dirs, manifest, left_out):
            item = made(d, lambda: prediction_item(workspace, d, m, exports, tiles)
                        if manifest == PREDICTION_MANIFEST
                        else zoned_prediction_item(workspace, d, m, predictions))
            if item is not None:
                cols["predictions"].add_item(item)
                predictions[d] = item
    for d, m in products(pred_dirs, CHANGE_FILES[0], left_out):
        item = made(d, lambda: change_item(workspace, d, m, predictions))
        if item is not None:
            cols["changes"].add_item(item)
    for col in cols.values():
        set_extent(col)
        catalog.add_child(col)
    return catalog


def collection(name: str, description: str) -> pystac.Collection:
    """An empty collection; its extent is set from its items (extents.set_extent)."""
    import pystac

    return pystac.Collection(name, description, pystac.Extent(
        pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]),
        pystac.TemporalExtent([[None, None]])), title=name, license="other")
