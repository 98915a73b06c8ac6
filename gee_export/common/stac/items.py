"""One item per product on one grid: an export's cells, a tile set, a predicted scene.

Items carry the `proj` and `raster` extensions, `start_datetime`/`end_datetime` (the
composite windows of the images), `synthetic: true` on the demo, and `derived_from` links to
what they were made from (export cells, tile sets, model checkpoints and source files), so
provenance can be walked in any STAC browser.
"""
from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..grid import Cell, ExportGrid
from ..layout import (
    EXPORT_MANIFEST,
    GLACIERS_GPKG,
    GLACIERS_PARQUET,
    OUTLINES_FILE,
    OVERVIEW_PNG,
    PREDICTION_MANIFEST,
    PROBABILITY_TIF,
    STACK_DIR,
    TILE_INDEX,
    TILES_MANIFEST,
    TRUTH_OUTLINES_FILE,
    resolved_path,
    tif_name,
)
from .assets import GPKG, PARQUET, QML, derived_from, raster_asset, relative_hrefs
from .extents import completed_window, composite_window, footprint
from .records import checkpoint, common_props, input_links, read_manifest

if TYPE_CHECKING:
    import pystac


def grid_item(item_id: str, grid: ExportGrid, bounds: tuple, shape: tuple[int, int], transform,
              window: tuple[datetime, datetime], props: dict) -> pystac.Item:
    """An item on the grid's projection: footprint in WGS84, proj extension, a date range."""
    import pystac
    from pystac.extensions.projection import ProjectionExtension

    geometry, bbox = footprint(grid.crs, bounds)
    item = pystac.Item(item_id, geometry, bbox, None, {k: v for k, v in props.items()
                                                       if v is not None},
                       start_datetime=window[0], end_datetime=window[1])
    proj = ProjectionExtension.ext(item, add_if_missing=True)
    proj.apply(code=grid.crs, shape=[shape[0], shape[1]], bbox=list(bounds),
               transform=list(transform)[:6])
    return item


def export_items(workspace: Path, d: Path, m: dict) -> list[pystac.Item]:
    """An item per finished cell of an export's stack."""
    import pystac

    grid = ExportGrid.from_dict(m["grid"])
    window = composite_window(m)
    props = common_props(m, d, workspace)
    props.update({"glacier:bands": m.get("bands"), "glacier:images": m.get("images"),
                  "glacier:source": m.get("source")})
    inputs = input_links(workspace, d, m)
    items = []
    for cid, info in sorted((m.get("cells") or {}).items()):
        path = d / STACK_DIR / tif_name(cid)
        if info.get("state") != "done" or not path.is_file():
            continue
        cell = Cell.from_dict(info)
        item_id = f"{d.name}-{cid}"
        item = grid_item(item_id, grid, cell.bounds(grid), (cell.height, cell.width),
                         cell.transform(grid), window,
                         {**props, "glacier:cell": cid,
                          "glacier:valid_fraction": info.get("valid_fraction")})
        href = relative_hrefs(workspace, "exports", item_id)
        raster_asset(item, "data", href(path), path, ["data"], "11-band stack, normalized "
                     "to [0, 1]")
        for key, f, roles, title, kind in (
                ("manifest", d / EXPORT_MANIFEST, ["metadata"], "export.json",
                 pystac.MediaType.JSON),
                ("outlines", d / OUTLINES_FILE, ["metadata"], "the inventory outlines used",
                 GPKG),
                ("truth_outlines", d / TRUTH_OUTLINES_FILE, ["metadata"],
                 "synthetic: the year's true glaciers", GPKG)):
            if f.is_file():
                item.add_asset(key, pystac.Asset(href(f), title, media_type=kind, roles=roles))
        for link in inputs:
            item.add_link(pystac.Link("derived_from", href(link[0]), title=link[1]))
        items.append(item)
    return items


def tiles_item(workspace: Path, d: Path, m: dict, exports: dict) -> pystac.Item:
    """A tile set's item, over its export's grid, derived from the export's cells."""
    import pystac

    export_dir = resolved_path(m["export"], d)
    emf = read_manifest(export_dir, EXPORT_MANIFEST) or {}
    grid = ExportGrid.from_dict(m["grid"])
    item_id = d.name
    item = grid_item(item_id, grid, grid.bounds, (grid.height, grid.width), grid.transform,
                     composite_window(emf) if emf else completed_window(m),
                     {**common_props(m, d, workspace), "glacier:tile_size": m.get("tile_size"),
                      "glacier:counts": m.get("counts"), "glacier:bands": m.get("bands")})
    href = relative_hrefs(workspace, "tiles", item_id)
    for key, f, roles, title, kind in (
            ("index", d / TILE_INDEX, ["metadata"], "tile footprints, splits", GPKG),
            ("manifest", d / TILES_MANIFEST, ["metadata"], "manifest.json",
             pystac.MediaType.JSON),
            ("overview", d / OVERVIEW_PNG, ["overview"], "overview.png", pystac.MediaType.PNG)):
        if f.is_file():
            item.add_asset(key, pystac.Asset(href(f), title, media_type=kind, roles=roles))
    derived_from(item, exports.get(export_dir, []))
    return item


def prediction_item(workspace: Path, d: Path, m: dict, exports: dict,
                    tiles: dict) -> pystac.Item:
    """A predicted scene's item: its probability and outlines, derived from the export's
    cells and the model checkpoint, related to the tile set the model was trained on."""
    import pystac

    export_dir = resolved_path(m["export"], d)
    emf = read_manifest(export_dir, EXPORT_MANIFEST) or {}
    grid = ExportGrid.from_dict(m["grid"])
    item_id = f"{d.parent.name}-{d.name}"
    threshold = ((m.get("parameters") or {}).get("config") or {}).get("threshold")
    item = grid_item(item_id, grid, grid.bounds, (grid.height, grid.width), grid.transform,
                     composite_window(emf) if emf else completed_window(m),
                     {**common_props(m, d, workspace), "glacier:run": d.parent.name,
                      "glacier:threshold": threshold, "glacier:glaciers": m.get("glaciers"),
                      "glacier:glacier_area_km2": m.get("glacier_area_km2")})
    href = relative_hrefs(workspace, "predictions", item_id)
    prob = d / PROBABILITY_TIF
    if prob.is_file():
        raster_asset(item, "probability", href(prob), prob, ["data"],
                     "glacier probability" + (" and TTA spread" if len(
                         m.get("probability_bands") or []) > 1 else ""))
    prediction_assets(item, d, href, PREDICTION_MANIFEST)
    derived_from(item, exports.get(export_dir, []))
    trained = (m.get("trained_on") or {}).get("tiles")
    if trained and resolved_path(trained, d) in tiles:
        item.add_link(pystac.Link("related", tiles[resolved_path(trained, d)],
                                  title="the tile set the model was trained on"))
    ckpt = checkpoint(workspace, d, m)
    if ckpt is not None:
        item.add_link(pystac.Link("derived_from", href(ckpt), title="model checkpoint"))
    return item


def prediction_assets(item: pystac.Item, d: Path, href: Callable[[Path], str],
                      manifest: str) -> None:
    """A prediction's outlines, manifest, styles, and train evaluate's reports and figures."""
    import pystac

    assets = [("outlines", d / GLACIERS_GPKG, ["data"], "glacier outlines", GPKG),
              ("outlines_parquet", d / GLACIERS_PARQUET, ["data"],
               "glacier outlines (GeoParquet)", PARQUET),
              ("manifest", d / manifest, ["metadata"], manifest, pystac.MediaType.JSON)]
    assets += [(f"style_{f.stem}", f, ["style"], f"QGIS style of {f.stem}", QML)
               for f in sorted(d.glob("*.qml"))]
    for f in sorted(d.glob("*.json")):
        if f.name != manifest:  # train evaluate's reports, with their figures
            assets.append((f"report_{f.stem}", f, ["metadata"], f"evaluation {f.stem}",
                           pystac.MediaType.JSON))
    assets += [(f"figure_{f.stem}", f, ["overview"], f.name, pystac.MediaType.PNG)
               for f in sorted(d.glob("*.png"))]
    for key, f, roles, title, kind in assets:
        if f.is_file():
            item.add_asset(key, pystac.Asset(href(f), title, media_type=kind, roles=roles))
