"""`prep tile` on an export of a region across UTM zones: one training set from every zone.

Each zone is cut as any export is (its own tile set on its own grid), but the split is made
once for all zones (`ZonedSplit`): the zones' grids overlap by about 2 km across each zone
line, so zones split apart would validate one zone on another zone's training ground. The
blocks of the spatial split are laid out in one frame across the zone lines (each tile goes
to the block its centre falls in), and the guard gap holds across the lines as within a zone:
no training tile of any zone lies within one tile width of a validation tile of another.
The zoned tile set then lists the zones as one: its images and labels are hard links to the
zones' files under `images/<zone>/`, its index holds every tile (footprints in EPSG:4326,
with the zone and the offsets on the zone's grid), and its band statistics pool the zones'.
Training reads it like any tile set; evaluation counts every zone's tiles, on any zone's grid.
"""
from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
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
    export_identity,
    file_sha256,
    read_manifest,
    stored_path,
)
from gee_export.common.stage import DONE, Stage
from gee_export.common.tile_index import ZONE_COLUMN, tiles_id
from gee_export.common.utm import METRES_PER_DEGREE, part_name
from gee_export.common.workers import WorkerPool
from gee_export.common.zoned import OUTPUT_CRS, Part

from .split import GUARD, TRAIN, VAL, block_split, grid_neighbours, random_split
from .tiles import (
    TileConfig,
    TileInputs,
    TilePlan,
    _close_worker,
    _footprint,
    _init_worker,
    choose_block,
    scan_tiles,
)


def zone_tile_id(zone: str, tile_id: str) -> str:
    """A tile of one zone in the zoned set: `<zone>/<id>`, so its files are images/<zone>/."""
    return f"{zone}/{tile_id}"


@dataclass
class ZoneTiles:
    """The tiles kept in one zone: grid positions, footprints on the zone's grid, glacier."""
    crs: str
    res: float
    rows: np.ndarray
    cols: np.ndarray
    boxes: np.ndarray  # shapely boxes in the zone's CRS
    glacier: np.ndarray  # glacier pixels (fraction of the tile) per tile


class ZonedSplit:
    """The split of every zone of a zoned export, made once for all; each zone's
    `make_tiles` asks for its plan (the first ask scans every zone)."""

    def __init__(self, parts: list[Part], cfg: TileConfig, outlines: Path | None,
                 outlines_layer: str | None, workers: int):
        self.workers, self.plans = workers, None
        self.inputs = {p.zone: TileInputs.open(p.path, cfg, outlines, lambda _: None,
                                               outlines_layer) for p in parts}
        self.parameters = {z: f"export {export_identity(i.export)} outlines "
                              f"{file_sha256(i.outlines.path)[:16]}"
                           for z, i in self.inputs.items()}

    def plan(self, inputs: TileInputs, cfg: TileConfig, quiet: bool) -> TilePlan:
        if self.plans is None:
            self.plans = self._make(cfg, quiet)
        here = Path(inputs.export_dir).resolve()
        return next(self.plans[z] for z, i in self.inputs.items()
                    if Path(i.export_dir).resolve() == here)

    def _make(self, cfg: TileConfig, quiet: bool) -> dict[str, TilePlan]:
        scans, zones = {}, []
        for zone, inputs in self.inputs.items():
            with WorkerPool(self.workers, _init_worker, inputs.worker_args(Path("."), cfg),
                            _close_worker) as pool:
                scans[zone] = scan_tiles(pool, inputs, cfg, quiet)
            _, kept, fractions = scans[zone]
            g = inputs.grid
            zones.append(ZoneTiles(
                g.crs, g.res, np.array([w[0] for w in kept]), np.array([w[1] for w in kept]),
                np.array([_footprint(g, w[2], w[3], cfg.size) for w in kept]),
                np.array([v * f for v, f in fractions])))
        labels, block = joint_split(zones, cfg)
        out, start = {}, 0
        for zone, (n_windows, kept, fractions) in scans.items():
            out[zone] = TilePlan(n_windows, kept, fractions, labels[start:start + len(kept)],
                                 block)
            start += len(kept)
        return out


def joint_split(zones: list[ZoneTiles], cfg: TileConfig) -> tuple[list[str], int | None]:
    """The split of the zones' tiles (concatenated in order) as one: with --split spatial,
    blocks in one frame across the zone lines and the guard ring within a zone by grid
    positions, across a zone line by distance; with --split random, the tile-wise draw over
    all zones, then the training tiles that meet another zone's validation tile are guard."""
    across = _across(zones, cfg.size * max(z.res for z in zones))
    if cfg.split == "random":
        labels = random_split(sum(len(z.rows) for z in zones), cfg.val_fraction, cfg.seed)
        for i, near in enumerate(across):
            if labels[i] == VAL:
                for j in near:
                    labels[j] = GUARD if labels[j] == TRAIN else labels[j]
        return labels, None
    neighbours, start = [], 0
    for z in zones:
        neighbours += [[start + j for j in near]
                       for near in grid_neighbours(z.rows, z.cols, cfg.guard_positions)]
        start += len(z.rows)
    neighbours = [a + b for a, b in zip(neighbours, across)]
    centres = _frame_centres(zones)
    glacier = np.concatenate([z.glacier for z in zones])
    return choose_block(lambda block: block_split(
        [tuple(k) for k in np.floor(centres / (block * cfg.step * zones[0].res)).astype(
            np.int64).tolist()], neighbours, cfg.val_fraction, cfg.seed, glacier,
        f"in blocks of {block} x {block} across the zones"), cfg, len(glacier))


def _frame_centres(zones: list[ZoneTiles]) -> np.ndarray:
    """The tiles' centres in one frame for all zones, (south, east) in metres: longitude and
    latitude scaled as on the equirectangular projection true at the tiles' mean latitude."""
    import shapely
    from pyproj import Transformer

    lonlat = []
    for z in zones:
        xy = shapely.get_coordinates(shapely.centroid(z.boxes))
        lonlat.append(np.column_stack(Transformer.from_crs(
            z.crs, "EPSG:4326", always_xy=True).transform(xy[:, 0], xy[:, 1])))
    lonlat = np.concatenate(lonlat)
    k = np.cos(np.radians(lonlat[:, 1].mean()))
    return np.column_stack([-lonlat[:, 1], lonlat[:, 0] * k]) * METRES_PER_DEGREE


def _across(zones: list[ZoneTiles], gap_m: float) -> list[list[int]]:
    """For each tile (of all zones, concatenated), the tiles of other zones less than `gap_m`
    (one tile width) away: each zone's tiles moved onto the other's grid, edges densified."""
    import shapely
    from pyproj import Transformer

    starts = np.cumsum([0] + [len(z.rows) for z in zones])
    out: list[list[int]] = [[] for _ in range(starts[-1])]
    for i, a in enumerate(zones):
        for j in range(i + 1, len(zones)):
            b, t = zones[j], Transformer.from_crs(zones[j].crs, a.crs, always_xy=True)
            moved = shapely.transform(shapely.segmentize(b.boxes, gap_m / 16),
                                      lambda xy, t=t: np.column_stack(t.transform(*xy.T)))
            near_a, near_b = shapely.STRtree(moved).query(
                a.boxes, predicate="dwithin", distance=gap_m - a.res / 2)
            for p, q in zip(near_a.tolist(), near_b.tolist()):
                out[starts[i] + p].append(starts[j] + q)
                out[starts[j] + q].append(starts[i] + p)
    return out


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
    stats = [s for s in stats if s["pixels"]]  # a zone may have no training tile
    n = np.array([s["pixels"] for s in stats], np.float64)
    out = {"pixels": int(n.sum()), "bands": {}}
    for band in stats[0]["bands"]:
        mean = np.array([s["bands"][band]["mean"] for s in stats])
        std = np.array([s["bands"][band]["std"] for s in stats])
        m = float((n * mean).sum() / n.sum())
        var = float((n * (std ** 2 + mean ** 2)).sum() / n.sum() - m ** 2)
        out["bands"][band] = {"mean": m, "std": max(var, 0.0) ** 0.5}
    return out
