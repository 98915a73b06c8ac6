"""`prep tile` cutting tiles: one export, or an export of a region across UTM zones zone by
zone, the split made once for all zones (tiling/zoned.py).

Apart from tiles and zoned, as verify is, so that neither imports the other back."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from gee_export.common.layout import TILES_DIR
from gee_export.common.workers import cpu_workers
from gee_export.common.zoned import zoned_parts

from .config import TileConfig
from .tiles import make_tiles


def cut_tiles(export_dir: Path, ws: Path, cfg: TileConfig, outlines: Path | None,
              outlines_layer: str | None, name: str | None, workers: int | str, force: bool,
              wait: bool, quiet: bool, echo: Callable[[str], None]) -> None:
    """Cut the tile set of `export_dir` in the workspace `ws` (`workers`: a number or auto),
    a zoned export's zone by zone with their split made together."""
    parts = zoned_parts(export_dir, "export")
    if parts is None:
        make_tiles(export_dir, ws, cfg, outlines, name, cpu_workers(workers), force=force,
                   wait=wait, quiet=quiet, echo=echo, outlines_layer=outlines_layer)
        return
    from .zoned import ZonedSplit, make_zoned_tiles

    split = ZonedSplit(parts, cfg, outlines, outlines_layer, cpu_workers(workers))  # one for all
    make_zoned_tiles(export_dir, parts, ws / TILES_DIR / (name or export_dir.name), ws,
                     lambda part, part_name: make_tiles(
                         part, ws, cfg, outlines, part_name, cpu_workers(workers), force=force,
                         wait=wait, quiet=quiet, echo=echo, outlines_layer=outlines_layer,
                         zoned=split),
                     wait, echo)
