"""Reading a tile set's index.gpkg without GDAL. A GeoPackage is an SQLite database and the
tiles' split and windows are plain attribute columns, so the standard library reads them:
training needs no GDAL vector driver (nor its 25 MB wheel on a GPU machine), and evaluation
finds the training tiles the same way training found them."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

from .errors import InputError, InputNotFoundError
from .layout import TILE_INDEX

ZONE_COLUMN = "zone"  # the UTM zone of each tile of a zoned tile set (tiling/zoned.py)


def read_tile_rows(tile_dir: Path, split: str, columns: Sequence[str] = ("tile_id",)
                   ) -> list[tuple]:
    """Rows (the given columns) of the tiles of one split, sorted; [] when the split is
    empty."""
    import sqlite3
    from contextlib import closing

    index = Path(tile_dir) / TILE_INDEX
    if not index.is_file():
        raise InputNotFoundError(f"{tile_dir}: no {TILE_INDEX}; make tiles with `prep tile`")
    names = ", ".join(f'"{c}"' for c in columns)
    try:
        with closing(sqlite3.connect(index.resolve().as_uri() + "?mode=ro", uri=True)) as db:
            (table,) = db.execute("SELECT table_name FROM gpkg_contents "
                                  "WHERE data_type = 'features'").fetchone()
            rows = db.execute(f'SELECT {names} FROM "{table}" WHERE split = ?',
                              (split,)).fetchall()
    except (sqlite3.Error, TypeError, ValueError) as e:
        raise InputError(f"{index}: cannot be read as the tile index ({e})") from None
    return sorted(rows)


def tiles_id(tiles: dict) -> str:
    """What identifies a tile set: its parameters and its files' checksums (not the paths, so
    a moved workspace still matches; not the manifest's times, which --verify updates)."""
    key = json.dumps([tiles.get("parameters"), tiles.get("files")], sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()


def zone_tile_rows(tile_dir: Path, tiles: dict, grid_crs: str, split: str
                   ) -> tuple[list[tuple], dict]:
    """Of a zoned tile set: the (row_off, col_off) of one split's tiles of the zone whose grid
    has `grid_crs`, and that zone's grid; ([], {}) when no zone of the set is on that CRS."""
    for z in tiles.get("zones") or []:
        if (z.get("grid") or {}).get("crs") == grid_crs:
            rows = read_tile_rows(tile_dir, split, ("row_off", "col_off", ZONE_COLUMN))
            return [(r, c) for r, c, zone in rows if zone == z["zone"]], z["grid"]
    return [], {}
