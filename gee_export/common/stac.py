"""A STAC catalog of the workspace, written with pystac: what each file is, where it lies, in
which projection, when its images were taken, and what it was made from.

`stac/catalog.json` holds four collections: `exports` (an item per stack cell, and one per
export across UTM zones with its merged outlines), `tiles` (an item per tile set),
`predictions` (an item per predicted scene) and `changes` (an item per change). A product
across UTM zones (zones.json, or a tile set listing its zones') is an item of its own beside
its zones' items: its footprint their union in WGS84, derived from them. A complete product
the catalog cannot describe is named in a warning, never left out silently. Items carry the
`proj` and `raster` extensions, `start_datetime`/`end_datetime` (the composite windows of the
images), `synthetic: true` on the demo, and `derived_from` links to what they were made from
(export cells, tile sets, predictions, model checkpoints and source files), so provenance can
be walked in any STAC browser.

Every command that writes to a workspace rebuilds the catalog when it ends, a rerun with
nothing to do included (common/cli.user_errors), so a product deleted by hand leaves no item
behind. The catalog is rebuilt from the stages' manifests (they are the record; the catalog
is a view of them), so it never disagrees with them: it is written by pystac into a scratch
directory, then copied file by file under temporary names and renamed (a reader sees whole
files, `catalog.json` last), under the workspace's catalog lock. Every href is relative, so
the workspace stays relocatable.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .atomic import make_dirs, write_bytes
from .errors import GlacierError
from .grid import Cell, ExportGrid
from .layout import (
    CHANGE_FILES,
    EXPORT_MANIFEST,
    EXPORTS_DIR,
    GLACIERS_GPKG,
    GLACIERS_PARQUET,
    OUTLINES_FILE,
    OVERVIEW_PNG,
    PREDICTION_MANIFEST,
    PREDICTIONS_DIR,
    PROBABILITY_TIF,
    RUNS_DIR,
    STAC_CATALOG,
    STAC_DIR,
    STACK_DIR,
    TILE_INDEX,
    TILES_DIR,
    TILES_MANIFEST,
    TRUTH_OUTLINES_FILE,
    ZONES_MANIFEST,
    resolved_path,
    tif_name,
)

if TYPE_CHECKING:
    import pystac

CATALOG_ID = "glacier-mapping"
COLLECTIONS = {
    "exports": "11-band stacks (Sentinel-1, Sentinel-2, indices, DEM), one item per cell",
    "tiles": "Labelled training tile sets, one item per tile set",
    "predictions": "Glacier probability and outlines, one item per predicted scene",
    "changes": "Glacier change across years, one item per change",
}
GPKG = "application/geopackage+sqlite3"
PARQUET = "application/vnd.apache.parquet"
QML = "application/xml"  # a QGIS layer style (.qml)
CSV = "text/csv"


def update_catalog(workspace: Path, echo: Callable[[str], None] = print) -> Path | None:
    """Rebuild the workspace's STAC catalog from the complete products' manifests.

    A catalog that cannot be written (a read-only or full workspace) is said in one warning
    line and never fails the stage that calls it: the products are complete without it, and
    the next stage writes it.

    Args:
        workspace: the workspace directory.
        echo: where the warning goes.

    Returns:
        The path of `catalog.json`, or None when it could not be written.
    """
    from .locks import output_lock

    root = Path(workspace) / STAC_DIR
    left_out: list[str] = []
    try:
        with output_lock(root, wait=True, echo=lambda _: None):
            write_catalog(Path(workspace), left_out)
    except Exception as e:  # noqa: BLE001 (GDAL's and pystac's errors are of many kinds)
        echo(f"warning: the STAC catalog {root} was not updated ({_first_line(e)}); the "
             "next stage writes it")
        return None
    if left_out:
        echo(f"warning: the STAC catalog leaves out {len(left_out)} product(s) whose record "
             f"it cannot read: {'; '.join(left_out[:3])}")
    return root / STAC_CATALOG


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text and not isinstance(
        e, GlacierError) else (text or type(e).__name__)


def write_catalog(workspace: Path, left_out: list[str] | None = None) -> Path:
    """Write `stac/` (unlocked: see update_catalog); the path of catalog.json. Products whose
    manifest lacks what an item needs are named in `left_out`."""
    import pystac

    workspace = Path(workspace)
    root = workspace / STAC_DIR
    catalog = build_catalog(workspace, left_out)
    scratch = Path(tempfile.mkdtemp(prefix=".stac-", dir=make_dirs(workspace)))
    try:
        catalog.normalize_hrefs(str(scratch))
        catalog.save(catalog_type=pystac.CatalogType.SELF_CONTAINED)
        _sync(scratch, root)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return root / STAC_CATALOG


def _sync(scratch: Path, root: Path) -> None:
    """Copy the files of `scratch` over `root` (each under a temporary name, renamed; unchanged
    ones left alone; catalog.json last), then remove what `root` holds that `scratch` does not."""
    files = sorted(p.relative_to(scratch) for p in scratch.rglob("*.json"))
    files.sort(key=lambda p: p == Path(STAC_CATALOG))
    for rel in files:
        data, dest = (scratch / rel).read_bytes(), root / rel
        if not (dest.is_file() and dest.read_bytes() == data):
            write_bytes(dest, data)
    keep = set(files)
    for p in sorted(root.rglob("*.json"), reverse=True):
        if p.relative_to(root) not in keep:
            p.unlink()
    for d in sorted((d for d in root.rglob("*") if d.is_dir()), reverse=True):
        if not any(d.iterdir()):
            d.rmdir()


# -- building the catalog (reads only) ---------------------------------------------------------

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
    cols = {name: _collection(name, text) for name, text in COLLECTIONS.items()}
    exports = {}  # export dir -> its cell items
    for d, m in _products(workspace / EXPORTS_DIR, EXPORT_MANIFEST, left_out):
        items = made(d, lambda: _export_items(workspace, d, m))
        if items is not None:
            exports[d] = items
            cols["exports"].add_items(items)
    for d, m in _products(workspace / EXPORTS_DIR, ZONES_MANIFEST, left_out):
        item = made(d, lambda: _zoned_export_item(workspace, d, m, exports))
        if item is not None:
            cols["exports"].add_item(item)
    tiles = {}
    sets = _products(workspace / TILES_DIR, TILES_MANIFEST, left_out)
    for d, m in sorted(sets, key=lambda p: bool(p[1].get("zones"))):  # the zones' sets first
        item = made(d, lambda: _zoned_tiles_item(workspace, d, m, tiles) if m.get("zones")
                    else _tiles_item(workspace, d, m, exports))
        if item is not None:
            cols["tiles"].add_item(item)
            tiles[d] = item
    predictions = {}
    pred_dirs = sorted((workspace / PREDICTIONS_DIR).glob("*/*"))
    for manifest in (PREDICTION_MANIFEST, ZONES_MANIFEST):  # the zones' predictions first
        for d, m in _products(pred_dirs, manifest, left_out):
            item = made(d, lambda: _prediction_item(workspace, d, m, exports, tiles)
                        if manifest == PREDICTION_MANIFEST
                        else _zoned_prediction_item(workspace, d, m, predictions))
            if item is not None:
                cols["predictions"].add_item(item)
                predictions[d] = item
    for d, m in _products(pred_dirs, CHANGE_FILES[0], left_out):
        item = made(d, lambda: _change_item(workspace, d, m, predictions))
        if item is not None:
            cols["changes"].add_item(item)
    for col in cols.values():
        _set_extent(col)
        catalog.add_child(col)
    return catalog


def _products(parent: Path | Iterable[Path], manifest: str,
              left_out: list[str] | None = None) -> list[tuple[Path, dict]]:
    """Complete products (directory, manifest) under `parent` (or among the directories given),
    by name; unreadable manifests are left out, and named in `left_out`."""
    dirs = sorted(parent.iterdir()) if isinstance(parent, Path) and parent.is_dir() else (
        [] if isinstance(parent, Path) else list(parent))
    found = []
    for d in dirs:
        try:
            m = json.loads((d / manifest).read_text())
        except OSError:
            continue
        except ValueError as e:
            if left_out is not None:
                left_out.append(f"{d} ({manifest} is not JSON: {e})")
            continue
        if isinstance(m, dict) and m.get("complete"):
            found.append((d, m))
    return found


def _collection(name: str, description: str) -> pystac.Collection:
    import pystac

    return pystac.Collection(name, description, pystac.Extent(
        pystac.SpatialExtent([[-180.0, -90.0, 180.0, 90.0]]),
        pystac.TemporalExtent([[None, None]])), title=name, license="other")


def _set_extent(col: pystac.Collection) -> None:
    import pystac

    items = list(col.get_items())
    if not items:
        return
    boxes = [i.bbox for i in items]
    starts = [i.common_metadata.start_datetime or i.datetime for i in items]
    ends = [i.common_metadata.end_datetime or i.datetime for i in items]
    col.extent = pystac.Extent(
        pystac.SpatialExtent([[min(b[0] for b in boxes), min(b[1] for b in boxes),
                               max(b[2] for b in boxes), max(b[3] for b in boxes)]]),
        pystac.TemporalExtent([[min(starts), max(ends)]]))


def _item(item_id: str, grid: ExportGrid, bounds: tuple, shape: tuple[int, int], transform,
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


def _export_items(workspace: Path, d: Path, m: dict) -> list[pystac.Item]:
    import pystac

    grid = ExportGrid.from_dict(m["grid"])
    window = composite_window(m)
    props = _common_props(m, d, workspace)
    props.update({"glacier:bands": m.get("bands"), "glacier:images": m.get("images"),
                  "glacier:source": m.get("source")})
    inputs = _input_links(workspace, d, m)
    items = []
    for cid, info in sorted((m.get("cells") or {}).items()):
        path = d / STACK_DIR / tif_name(cid)
        if info.get("state") != "done" or not path.is_file():
            continue
        cell = Cell.from_dict(info)
        item_id = f"{d.name}-{cid}"
        item = _item(item_id, grid, cell.bounds(grid), (cell.height, cell.width),
                     cell.transform(grid), window,
                     {**props, "glacier:cell": cid,
                      "glacier:valid_fraction": info.get("valid_fraction")})
        href = _href(workspace, "exports", item_id)
        _raster_asset(item, "data", href(path), path, ["data"], "11-band stack, normalized "
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


def _tiles_item(workspace: Path, d: Path, m: dict, exports: dict) -> pystac.Item:
    import pystac

    export_dir = resolved_path(m["export"], d)
    emf = _manifest(export_dir, EXPORT_MANIFEST) or {}
    grid = ExportGrid.from_dict(m["grid"])
    item_id = d.name
    item = _item(item_id, grid, grid.bounds, (grid.height, grid.width), grid.transform,
                 composite_window(emf) if emf else _completed(m),
                 {**_common_props(m, d, workspace), "glacier:tile_size": m.get("tile_size"),
                  "glacier:counts": m.get("counts"), "glacier:bands": m.get("bands")})
    href = _href(workspace, "tiles", item_id)
    for key, f, roles, title, kind in (
            ("index", d / TILE_INDEX, ["metadata"], "tile footprints, splits", GPKG),
            ("manifest", d / TILES_MANIFEST, ["metadata"], "manifest.json",
             pystac.MediaType.JSON),
            ("overview", d / OVERVIEW_PNG, ["overview"], "overview.png", pystac.MediaType.PNG)):
        if f.is_file():
            item.add_asset(key, pystac.Asset(href(f), title, media_type=kind, roles=roles))
    _derived_from(item, exports.get(export_dir, []))
    return item


def _prediction_item(workspace: Path, d: Path, m: dict, exports: dict,
                     tiles: dict) -> pystac.Item:
    import pystac

    export_dir = resolved_path(m["export"], d)
    emf = _manifest(export_dir, EXPORT_MANIFEST) or {}
    grid = ExportGrid.from_dict(m["grid"])
    item_id = f"{d.parent.name}-{d.name}"
    threshold = ((m.get("parameters") or {}).get("config") or {}).get("threshold")
    item = _item(item_id, grid, grid.bounds, (grid.height, grid.width), grid.transform,
                 composite_window(emf) if emf else _completed(m),
                 {**_common_props(m, d, workspace), "glacier:run": d.parent.name,
                  "glacier:threshold": threshold, "glacier:glaciers": m.get("glaciers"),
                  "glacier:glacier_area_km2": m.get("glacier_area_km2")})
    href = _href(workspace, "predictions", item_id)
    prob = d / PROBABILITY_TIF
    if prob.is_file():
        _raster_asset(item, "probability", href(prob), prob, ["data"],
                      "glacier probability" + (" and TTA spread" if len(
                          m.get("probability_bands") or []) > 1 else ""))
    _prediction_assets(item, d, href, PREDICTION_MANIFEST)
    _derived_from(item, exports.get(export_dir, []))
    trained = (m.get("trained_on") or {}).get("tiles")
    if trained and resolved_path(trained, d) in tiles:
        item.add_link(pystac.Link("related", tiles[resolved_path(trained, d)],
                                  title="the tile set the model was trained on"))
    ckpt = _checkpoint(workspace, d, m)
    if ckpt is not None:
        item.add_link(pystac.Link("derived_from", href(ckpt), title="model checkpoint"))
    return item


def _prediction_assets(item: pystac.Item, d: Path, href: Callable[[Path], str],
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


# -- products across UTM zones: an item over their zones' items ----------------------------------

def _union_item(item_id: str, members: list[pystac.Item], props: dict) -> pystac.Item:
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


def _zone_members(d: Path, paths: Iterable[str], known: dict) -> list:
    """The catalog's items of a zoned product's zones (recorded `paths`), each required."""
    out = []
    for p in paths:
        path = resolved_path(p, d)
        if path not in known:
            raise ValueError(f"its zone's product {path} is not a complete one")
        out.append(known[path])
    return out


def _add_files(item: pystac.Item, href: Callable[[Path], str], files: list[tuple]) -> None:
    import pystac

    for key, f, roles, title, kind in files:
        if f.is_file():
            item.add_asset(key, pystac.Asset(href(f), title, media_type=kind, roles=roles))


def _zoned_export_item(workspace: Path, d: Path, m: dict, exports: dict) -> pystac.Item:
    import pystac

    cells = _zone_members(d, [p["path"] for p in m["parts"]], exports)
    item = _union_item(d.name, [c for cs in cells for c in cs],
                       {**_common_props(m, d, workspace),
                        "glacier:zones": [p["zone"] for p in m["parts"]]})
    _add_files(item, _href(workspace, "exports", d.name), [
        ("outlines", d / OUTLINES_FILE, ["metadata"], "every zone's outlines, in EPSG:4326",
         GPKG),
        ("manifest", d / ZONES_MANIFEST, ["metadata"], ZONES_MANIFEST, pystac.MediaType.JSON)])
    _derived_from(item, [c for cs in cells for c in cs])
    return item


def _zoned_tiles_item(workspace: Path, d: Path, m: dict, tiles: dict) -> pystac.Item:
    import pystac

    members = _zone_members(d, [z["tiles"] for z in m["zones"]], tiles)
    item = _union_item(d.name, members, {
        **_common_props(m, d, workspace), "glacier:tile_size": m.get("tile_size"),
        "glacier:counts": m.get("counts"), "glacier:bands": m.get("bands"),
        "glacier:zones": [z["zone"] for z in m["zones"]]})
    _add_files(item, _href(workspace, "tiles", d.name), [
        ("index", d / TILE_INDEX, ["metadata"], "tile footprints, zones, splits", GPKG),
        ("manifest", d / TILES_MANIFEST, ["metadata"], "manifest.json", pystac.MediaType.JSON)])
    _derived_from(item, members)
    return item


def _zoned_prediction_item(workspace: Path, d: Path, m: dict,
                           predictions: dict) -> pystac.Item:
    members = _zone_members(d, [p["path"] for p in m["parts"]], predictions)
    item_id = f"{d.parent.name}-{d.name}"
    item = _union_item(item_id, members, {
        **_common_props(m, d, workspace), "glacier:run": d.parent.name,
        "glacier:glaciers": m.get("glaciers"), "glacier:glacier_area_km2":
        m.get("glacier_area_km2"), "glacier:zones": [p["zone"] for p in m["parts"]]})
    _prediction_assets(item, d, _href(workspace, "predictions", item_id), ZONES_MANIFEST)
    _derived_from(item, members)
    return item


def _change_item(workspace: Path, d: Path, m: dict, predictions: dict) -> pystac.Item:
    import pystac

    members = _zone_members(d, (m.get("parameters") or {}).get("predictions", []),
                            predictions)
    first = resolved_path(m["parameters"]["predictions"][0], d)
    pm = _manifest(first, PREDICTION_MANIFEST) or _manifest(first, ZONES_MANIFEST) or {}
    item_id = f"{d.parent.name}-{d.name}"
    props = {**_common_props({**pm, **m}, d, workspace), "glacier:years": m.get("years"),
             "glacier:glaciers": m.get("glaciers")}
    if "grid" not in pm:  # a change across UTM zones: over its predictions' footprints
        item = _union_item(item_id, members, props)
    else:
        grid = ExportGrid.from_dict(pm["grid"])
        starts = [i.common_metadata.start_datetime for i in members]
        ends = [i.common_metadata.end_datetime for i in members]
        item = _item(item_id, grid, grid.bounds, (grid.height, grid.width), grid.transform,
                     (min(starts), max(ends)), props)
    href = _href(workspace, "changes", item_id)
    kinds = {".json": (["metadata"], pystac.MediaType.JSON), ".csv": (["data"], CSV),
             ".gpkg": (["data"], GPKG), ".png": (["overview"], pystac.MediaType.PNG),
             ".qml": (["style"], QML)}
    for f in sorted(d.iterdir()):
        if f.suffix == ".tif":
            _raster_asset(item, f.stem, href(f), f, ["data"], f.name)
        elif f.suffix in kinds and not f.name.startswith("."):
            roles, kind = kinds[f.suffix]  # keys apart from the map's (change.tif: change)
            key = f"style_{f.stem}" if f.suffix == ".qml" else "manifest" if \
                f.name == CHANGE_FILES[0] else f"{f.stem}_{f.suffix[1:]}"
            item.add_asset(key, pystac.Asset(href(f), f.name, media_type=kind, roles=roles))
    _derived_from(item, members)
    return item


# -- pieces -------------------------------------------------------------------------------------

def composite_window(export_manifest: dict) -> tuple[datetime, datetime]:
    """The time the export's images span: from the first day of the earliest composite window
    (Sentinel-1 or -2) to the end of the last (the recorded windows end exclusively)."""
    recipe = export_manifest.get("recipe") or {}
    windows = [recipe[k] for k in ("s1_dates", "s2_dates") if recipe.get(k)]
    if not windows:
        return _completed(export_manifest)
    start = min(_day(w[0]) for w in windows)
    end = max(_day(w[1]) for w in windows) - timedelta(seconds=1)
    return start, end


def footprint(crs: str, bounds: tuple[float, float, float, float]) -> tuple[dict, list[float]]:
    """A projected rectangle in WGS84, its edges densified (a UTM rectangle is not one in
    longitude and latitude): a GeoJSON polygon and its bbox."""
    from pyproj import Transformer

    w, s, e, n = bounds
    k = 8
    xs = ([w + (e - w) * i / k for i in range(k)] + [e] * k
          + [e - (e - w) * i / k for i in range(k)] + [w] * k)
    ys = ([s] * k + [s + (n - s) * i / k for i in range(k)]
          + [n] * k + [n - (n - s) * i / k for i in range(k)])
    lon, lat = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(xs, ys)
    ring = [[round(x, 7), round(y, 7)] for x, y in zip(lon, lat)]
    ring.append(ring[0])
    return ({"type": "Polygon", "coordinates": [ring]},
            [min(lon), min(lat), max(lon), max(lat)])


def _raster_asset(item: pystac.Item, key: str, href: str, path: Path, roles: list[str],
                  title: str) -> None:
    """A GeoTIFF asset with its raster:bands (type, nodata, resolution) read from the file."""
    import math

    import pystac
    import rasterio
    from pystac.extensions.raster import RasterBand, RasterExtension

    asset = pystac.Asset(href, title, media_type=pystac.MediaType.COG, roles=roles)
    item.add_asset(key, asset)
    with rasterio.open(path) as f:
        nodata = f.nodata
        bands = [RasterBand.create(
            nodata=None if nodata is None else "nan" if math.isnan(nodata) else nodata,
            data_type=f.dtypes[i], spatial_resolution=abs(f.res[0]))
            for i in range(f.count)]
        names = [n or "" for n in f.descriptions]
    RasterExtension.ext(asset, add_if_missing=True).apply(bands)
    asset.extra_fields["glacier:band_names"] = names


def _href(workspace: Path, collection: str, item_id: str) -> Callable[[Path], str]:
    """Relative hrefs from where the item's JSON will be: stac/<collection>/<id>/<id>.json."""
    item_dir = Path(workspace) / STAC_DIR / collection / item_id
    return lambda p: Path(os.path.relpath(Path(p), item_dir)).as_posix()


def _derived_from(item: pystac.Item, sources: Iterable[pystac.Item]) -> None:
    import pystac

    for s in sources:
        item.add_link(pystac.Link("derived_from", s, media_type=pystac.MediaType.JSON,
                                  title=s.id))


def _common_props(m: dict, d: Path, workspace: Path) -> dict:
    region = m.get("region")
    return {"synthetic": True if m.get("synthetic") else None,
            "glacier:region": region.get("name") if isinstance(region, dict) else region,
            "glacier:year": m.get("year"),
            "glacier:kind": m.get("kind"),
            "glacier:package_version": m.get("package_version"),
            "created": m.get("created_at"), "updated": m.get("completed_at")}


def _input_links(workspace: Path, d: Path, m: dict) -> list[tuple[Path, str]]:
    """The local source files an export read (those that still exist), for provenance."""
    src = m.get("source_dir")
    if not src:
        return []
    src_dir = resolved_path(src, d)
    return [(src_dir / name, f"source: {name}") for name in sorted(m.get("input_files") or {})
            if (src_dir / name).is_file()]


def _checkpoint(workspace: Path, d: Path, m: dict) -> Path | None:
    name = (m.get("parameters") or {}).get("checkpoint")
    if not name:
        return None
    p = Path(workspace) / RUNS_DIR / d.parent.name / name
    return p if p.is_file() else None


def _manifest(d: Path, name: str) -> dict | None:
    try:
        m = json.loads((Path(d) / name).read_text())
    except (OSError, ValueError):
        return None
    return m if isinstance(m, dict) else None


def _completed(m: dict) -> tuple[datetime, datetime]:
    t = _parse(m.get("completed_at") or m.get("created_at")) or datetime.now(timezone.utc)
    return t, t


def _day(text: str) -> datetime:
    return datetime.strptime(text[:10], "%Y-%m-%d").replace(tzinfo=timezone.utc)


def _parse(text: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(text))
    except ValueError:
        return None
