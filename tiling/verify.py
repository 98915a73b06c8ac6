"""`prep tile --verify`: one tile set, or a tile set of several UTM zones zone by zone.

Apart from tiles and zoned so that neither imports the other back."""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from gee_export.common.errors import StateError
from gee_export.common.layout import TILES_MANIFEST, resolved_path

from .tiles import RecordedSplit, TileConfig, make_tiles, tiles_to_verify
from .zoned import verify_zoned_tiles


def verify_tiles(workspace: Path, export_dir: Path | None = None, name: str | None = None,
                 workers: int = 1, wait: bool = False, quiet: bool = False,
                 echo: Callable[[str], None] = print) -> Path:
    """`prep tile --verify`: check every file of one complete tile set against the checksum
    recorded when it was written and rewrite the ones that differ, with the parameters,
    export and outlines the set was cut with. Never cuts a new tile set."""
    out, manifest = tiles_to_verify(workspace, export_dir, name, echo)
    if manifest.get("zones"):  # a tile set of several UTM zones: each zone's, then the list
        return verify_zoned_tiles(out, manifest, workspace, lambda zone: verify_tiles(
            workspace, name=zone.name, workers=workers, wait=wait, quiet=quiet, echo=echo),
            wait, echo)
    p = manifest["parameters"]
    zoned = RecordedSplit(out, p["zoned_split"], workers) if p.get("zoned_split") else None
    outlines = manifest.get("outlines", {}).get("file")
    if outlines is None:
        raise StateError(f"{out / TILES_MANIFEST}: records no outlines file; cut the tiles "
                         "again with `prep tile --force`")
    return make_tiles(resolved_path(p["export"], out), workspace, TileConfig(**p["config"]),
                      resolved_path(outlines, out), out.name, workers, verify=True,
                      wait=wait, quiet=quiet, echo=echo, only_existing=True,
                      outlines_layer=p.get("outlines_layer"), zoned=zoned)
