"""The scenes of every cell, found by searching a provider's collections with the cell's box,
the season's dates, the scene cloud limit and the orbit; kept in the export as
stac_items.json, so that a resumed export reads the scenes its first run found.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from gee_export.common.errors import InputError, InputNotFoundError
from gee_export.common.grid import Cell, ExportGrid
from gee_export.config import RecipeConfig
from gee_export.local import LocalSources
from gee_export.remote.assets import RemoteAsset
from gee_export.remote.client import NetConfig, search_items
from gee_export.remote.providers import Provider, Sensor, dn_offset

KINDS = {"s2": "s2", "s1": "s1", "dem": "dem"}  # the recipe's kind of source, per sensor
CELL_MARGIN_DEG = 0.001  # the searched box exceeds the cell by this much (interpolation)


@dataclass
class Catalogue:
    """Items by key (sensor/id) with what the recipe needs of them, and each cell's keys."""
    items: dict[str, dict] = field(default_factory=dict)
    cells: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"items": self.items, "cells": self.cells}

    @classmethod
    def from_dict(cls, d: dict) -> "Catalogue":
        return cls(dict(d["items"]), dict(d["cells"]))


def cell_lonlat_box(grid: ExportGrid, cell: Cell) -> tuple[float, float, float, float]:
    from rasterio.warp import transform_bounds

    w, s, e, n = transform_bounds(grid.crs, "EPSG:4326", *cell.bounds(grid), densify_pts=21)
    m = CELL_MARGIN_DEG
    return (w - m, s - m, e + m, n + m)


def searches(provider: Provider, cfg: RecipeConfig) -> dict[str, tuple]:
    """Per sensor: (dates, query) of its search, and what the query says in words."""
    s1_query = {} if cfg.s1_orbit == "both" else {"sat:orbit_state": {"eq": cfg.s1_orbit}}
    return {"s2": (cfg.s2_dates, {"eo:cloud_cover": {"lt": cfg.s2_max_scene_cloud}},
                   f" with eo:cloud_cover under {cfg.s2_max_scene_cloud:g} %"),
            "s1": (cfg.s1_dates, s1_query or None,
                   f" in {cfg.s1_orbit} orbit" if s1_query else ""),
            "dem": (None, None, "")}


def search_cells(provider: Provider, cfg: RecipeConfig, grid: ExportGrid, cells: list[Cell],
                 net: NetConfig, progress: Callable[[int], None] | None = None) -> Catalogue:
    """Every cell's items of the three collections; a cell without any of them, or an item
    without an asset the recipe reads, is refused in one line."""
    cat = Catalogue()
    for i, cell in enumerate(cells):
        bbox = cell_lonlat_box(grid, cell)
        cat.cells[cell.id] = {}
        for sensor, (dates, query, says) in searches(provider, cfg).items():
            spec = provider.sensor(sensor)
            found = search_items(spec.api, spec.collection, bbox, dates, query, net)
            if not found:
                when = f" from {dates[0]} to {dates[1]} (end exclusive)" if dates else ""
                raise InputNotFoundError(
                    f"cell {cell.id} (lon/lat {', '.join(f'{v:.4f}' for v in bbox)}): no "
                    f"{spec.collection} item at {spec.api}{when}{says}")
            for item in found:
                key = f"{sensor}/{item['id']}"
                cat.items.setdefault(key, item_record(sensor, spec, item))
            cat.cells[cell.id][sensor] = sorted(f"{sensor}/{it['id']}" for it in found)
        if progress:
            progress(i + 1)
    return cat


def item_record(sensor: str, spec: Sensor, item: dict) -> dict:
    """What the recipe needs of one item: its date, cloud, DN offset and band hrefs."""
    props, assets = item.get("properties") or {}, item.get("assets") or {}
    missing = [(band, key) for band, key in spec.assets if key not in assets]
    if missing:
        band, key = missing[0]
        raise InputError(f"item {item.get('id')} of {spec.collection}: no asset {key!r} (the "
                         f"recipe's band {band}); it has {', '.join(sorted(assets)) or 'none'}")
    dt = str(props.get("datetime") or props.get("start_datetime") or "")[:10]
    if sensor != "dem" and len(dt) != 10:
        raise InputError(f"item {item.get('id')} of {spec.collection}: no datetime property")
    rec = {"id": item["id"], "date": dt, "hrefs": {b: assets[k]["href"] for b, k in spec.assets}}
    if sensor == "s2":
        rec.update(cloud=props.get("eo:cloud_cover"), offset=dn_offset(props),
                   baseline=props.get("s2:processing_baseline"))
    if sensor == "s1":
        rec["orbit"] = props.get("sat:orbit_state")
    return rec


def cell_sources(cat: Catalogue, provider: Provider, cell_id: str, hma: list[Path],
                 net: NetConfig) -> LocalSources:
    """One cell's scenes as the local recipe's sources: Sentinel-1 by date (frames of a date
    merged, as local files of a date are), Sentinel-2 by date and item (each tile its own
    scene), GLO-30 as the fallback DEM, the HMA mosaic when given."""
    src = LocalSources(hma=list(hma))
    for key in cat.cells[cell_id].get("s1", []):
        rec = cat.items[key]
        src.s1.setdefault(rec["date"], []).extend(_assets(rec, provider.s1, "s1", net))
    for key in cat.cells[cell_id].get("s2", []):
        rec = cat.items[key]
        scene = f"{rec['date']}_{rec['id']}"
        src.s2[scene] = _assets(rec, provider.s2, "s2", net)
        if rec.get("cloud") is not None:
            src.cloud_percent[scene] = float(rec["cloud"])
    for key in cat.cells[cell_id].get("dem", []):
        src.srtm.extend(_assets(cat.items[key], provider.dem, "dem", net))
    return src


def _assets(rec: dict, spec: Sensor, sensor: str, net: NetConfig) -> list[RemoteAsset]:
    """Sentinel-1's polarisations as one source (the noise rule needs both on their grid);
    every other band its own (Sentinel-2's bands differ in resolution)."""
    groups = [tuple(rec["hrefs"])] if sensor == "s1" else [(b,) for b in rec["hrefs"]]
    return [RemoteAsset(tuple(rec["hrefs"][b] for b in bands), bands, KINDS[sensor],
                        spec.values, rec.get("offset", 0.0) if bands != ("SCL",) else 0.0,
                        spec.sas if spec.signed else None, spec.collection, net)
            for bands in groups]


def describe(cat: Catalogue, provider: Provider) -> list[str]:
    """The dry run's lines: per cell, the scenes and the assets whose windows will be read."""
    lines = []
    for cid, sensors in cat.cells.items():
        parts = []
        for sensor, keys in sensors.items():
            spec = provider.sensor(sensor)
            ids = ", ".join(cat.items[k]["id"] for k in keys)
            parts.append(f"{spec.collection} {len(keys)} ({ids}) reading "
                         f"{'/'.join(k for _, k in spec.assets)}")
        lines.append(f"cell {cid}: " + "; ".join(parts))
    return lines
