"""`prep tile` on an export of a region across UTM zones: one training set from every zone.

Each zone is cut as any export is (its own tile set, its own 70/30 spatial split, on its own
grid); the zoned tile set then lists them all as one: its images and labels are hard links to
the zones' files under `images/<zone>/`, its index holds every tile (footprints in EPSG:4326,
with the zone and the offsets on the zone's grid), and its band statistics pool the zones'.
Training reads it like any tile set; evaluation finds each zone's training tiles on that
zone's grid.
"""
from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np

from gee_export.common.atomic import write_bytes
from gee_export.common.errors import InputError
from gee_export.common.layout import (
    IMAGES_DIR,
    LABELS_DIR,
    TILE_INDEX,
    TILES_MANIFEST,
    base_manifest,
    read_manifest,
    stored_path,
)
from gee_export.common.stage import DONE, Stage
from gee_export.common.tile_index import ZONE_COLUMN, tiles_id
from gee_export.common.utm import part_name
from gee_export.common.zoned import OUTPUT_CRS, Part


def zone_tile_id(zone: str, tile_id: str) -> str:
    """A tile of one zone in the zoned set: `<zone>/<id>`, so its files are images/<zone>/."""
    return f"{zone}/{tile_id}"


def make_zoned_tiles(export_dir: Path, parts: list[Part], out: Path, workspace: Path,
                     make_part: Callable[[Path, str], Path], wait: bool,
                     echo: Callable[[str], None]) -> Path:
    """Cut every zone of the zoned export with `make_part(export_dir, name)` and list them as
    one tile set."""
    made = [(p.zone, make_part(p.path, part_name(out.name, p.zone))) for p in parts]
    return list_zones(out, export_dir, made, workspace, wait, echo)


def verify_zoned_tiles(out: Path, manifest: dict, workspace: Path,
                       verify_part: Callable[[Path], Path], wait: bool,
                       echo: Callable[[str], None]) -> Path:
    """`prep tile --verify` of a zoned tile set: every zone's set verified (and repaired) with
    `verify_part(tile_dir)`, then the listing linked to the repaired files."""
    from gee_export.common.layout import resolved_path

    made = [(z["zone"], verify_part(resolved_path(z["tiles"], out)))
            for z in manifest["zones"]]
    return list_zones(out, resolved_path(manifest["export"], out), made, workspace, wait, echo)


def list_zones(out: Path, export_dir: Path, made: list[tuple[str, Path]], workspace: Path,
               wait: bool, echo: Callable[[str], None]) -> Path:
    """The zones' tile sets listed as one, by the stage contract: done while every file is
    the zone's own (the same file: a zone's tile repaired or re-cut since is linked again)."""
    manifests = [(zone, d, read_manifest(d, "tiles")) for zone, d in made]
    ids = {zone: tiles_id(m) for zone, _, m in manifests}
    # A listing of the zones' tile sets: replacing one made of other zones loses nothing.
    stage = Stage("tiles", out / TILES_MANIFEST, "tiles", {"zones.*": "the tiles of zone {key}"},
                  verb="are")
    with stage.lock(wait, echo):
        if stage.decide({"zones": ids}, False, echo, intact=_unlinked(out, manifests),
                        nothing_lost=lambda old: "it only lists the zones' tile sets"
                        ).action == DONE:
            return out
        _assemble(out, export_dir, manifests, ids, workspace)
    echo(f"zoned tiles complete: {out} ({len(made)} UTM zones; "
         f"{sum(len(_rows(d, m)) for _, d, m in manifests)} tiles)")
    return out


def _unlinked(out: Path, manifests: list[tuple[str, Path, dict]]) -> Callable[[dict], str | None]:
    """The stage contract's integrity check of a listing: each file the zone's own (a hard
    link to it; a copy, across file systems, of its size)."""
    def check(old: dict) -> str | None:
        stale = []
        for zone, d, m in manifests:
            for rel, (size, _) in m.get("files", {}).items():
                sub, name = rel.split("/", 1)
                mine, theirs = out / sub / zone / name, d / rel
                if not mine.is_file() or not theirs.is_file() or not (
                        os.path.samefile(mine, theirs) or not old.get("linked", True)
                        and mine.stat().st_size == size):
                    stale.append(f"{sub}/{zone}/{name}")
        return (f"{len(stale)} file(s) are not their zone's ({', '.join(stale[:3])}): "
                "repaired or cut again since") if stale else None
    return check


def _assemble(out: Path, export_dir: Path, manifests: list[tuple[str, Path, dict]],
              ids: dict[str, str], workspace: Path) -> None:
    first = manifests[0][2]
    for _, _, m in manifests[1:]:
        for key in ("tile_size", "bands"):
            if m.get(key) != first.get(key):
                raise InputError(f"the zones' tile sets differ in {key} ({first.get(key)} and "
                                 f"{m.get(key)}); cut them with the same options")
    mf = out / TILES_MANIFEST
    if mf.is_file():
        mf.unlink()  # not complete while its files change
    files, rows, linked = {}, [], True
    for zone, d, m in manifests:
        for sub in (IMAGES_DIR, LABELS_DIR):
            shutil.rmtree(out / sub / zone, ignore_errors=True)
        for rel, record in m.get("files", {}).items():
            sub, name = rel.split("/", 1)
            linked &= _link(d / rel, out / sub / zone / name)
            files[f"{sub}/{zone}/{name}"] = record
        rows += [{**r, "tile_id": zone_tile_id(zone, r["tile_id"]), ZONE_COLUMN: zone}
                 for r in _rows(d, m)]
    _write_index(out / TILE_INDEX, rows)
    manifest = base_manifest(
        "tiles", parameters={"zones": ids}, region=first.get("region"), year=first.get("year"),
        export=stored_path(export_dir, out, workspace), linked=linked,
        tile_size=first.get("tile_size"), bands=first.get("bands"),
        zones=[{"zone": z, "tiles": stored_path(d, out, workspace), "tiles_id": ids[z],
                "grid": m.get("grid")} for z, d, m in manifests],
        counts=_summed([m.get("counts") or {} for _, _, m in manifests]),
        train_stats=pooled_stats([m["train_stats"] for _, _, m in manifests]),
        files=dict(sorted(files.items())))
    Stage("tiles", mf).complete(manifest)


def _rows(tile_dir: Path, manifest: dict) -> list[dict]:
    import geopandas as gpd

    index = gpd.read_file(tile_dir / TILE_INDEX).to_crs(OUTPUT_CRS)
    return [dict(r) for _, r in index.iterrows()]


def _write_index(path: Path, rows: list[dict]) -> None:
    import geopandas as gpd

    from gee_export.common.vectors import write_gpkg

    write_gpkg(gpd.GeoDataFrame(rows, crs=OUTPUT_CRS), path, "tiles")


def _link(src: Path, dest: Path) -> bool:
    """A hard link (no copy of the pixels), or a copy across file systems; whether linked."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dest)
        return True
    except OSError:
        write_bytes(dest, Path(src).read_bytes())
        return False


def _summed(counts: list[dict]) -> dict:
    keys = {k for c in counts for k in c}
    return {k: sum(int(c.get(k, 0)) for c in counts) for k in sorted(keys)}


def pooled_stats(stats: list[dict]) -> dict:
    """The zones' training-pixel band statistics as one: means weighted by pixel counts, and
    the pooled standard deviation (within and between zones). Percentiles do not pool and
    are left out."""
    n = np.array([s["pixels"] for s in stats], np.float64)
    out = {"pixels": int(n.sum()), "bands": {}}
    for band in stats[0]["bands"]:
        mean = np.array([s["bands"][band]["mean"] for s in stats])
        std = np.array([s["bands"][band]["std"] for s in stats])
        m = float((n * mean).sum() / n.sum())
        var = float((n * (std ** 2 + mean ** 2)).sum() / n.sum() - m ** 2)
        out["bands"][band] = {"mean": m, "std": max(var, 0.0) ** 0.5}
    return out
