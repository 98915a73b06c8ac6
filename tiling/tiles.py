"""`prep tile`: labelled tiles from an export and glacier outlines.

Two streaming passes over tile windows, never the whole scene: a scan (valid fraction from one
band, glacier fraction from the rasterized outlines) that decides which tiles to keep and the
split, then the writes (11-band image, label, per-tile statistics and checksums), in parallel
over tiles. Nothing is written until the split exists, so a split that cannot be made leaves
no stub behind; a killed run resumes with the tiles it wrote.

This module is the command's run from start to finish; each step has its own module: the
configuration and windows (config), the inputs (inputs), the scan and the split (plan), the
worker processes (worker), the stage bookkeeping (stage), the statistics (statistics) and the
overview figure (overview). Their names used elsewhere are importable from here too.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from gee_export.common.atomic import clean_partials, make_dirs
from gee_export.common.bands import BAND_NAMES
from gee_export.common.layout import (
    OVERVIEW_PNG,
    TILE_INDEX,
    TILES_DIR,
    TILES_MANIFEST,
    base_manifest,
    file_sha256,
    read_manifest,
    stored_path,
    tile_files,
    workspace_of,
    write_manifest,
)
from gee_export.common.rasters import bounded_gdal_cache
from gee_export.common.stac import update_catalog
from gee_export.common.stage import DONE
from gee_export.common.vectors import write_gpkg
from gee_export.common.workers import WorkerPool

from .config import SMALL_GLACIER_LABELS, TileConfig, _footprint, tile_id, tile_windows
from .inputs import SINGLE_ZONE_SPLIT_ALGORITHM, SPLIT_ALGORITHM, TileInputs
from .overview import _overview_png
from .plan import (
    AUTO_BLOCKS,
    SHARE_TOLERANCE,
    RecordedSplit,
    TilePlan,
    ZoneSplitter,
    _plan,
    choose_block,
    scan_tiles,
)
from .split import GUARD, TRAIN, VAL, min_distance
from .stage import TILE_OPTIONS, _check_same_tiles, _Damaged, _intact, _known_files, tiles_stage, tiles_to_verify
from .statistics import PERCENTILES, STAT_BINS, _BandStats, _LabelArea, _Side, _train_stats, unit_histograms
from .worker import _close_worker, _init_worker, _progress, _write

__all__ = [  # the names other modules, tests and benchmarks import from here
    "AUTO_BLOCKS", "PERCENTILES", "SHARE_TOLERANCE", "SINGLE_ZONE_SPLIT_ALGORITHM",
    "SMALL_GLACIER_LABELS", "SPLIT_ALGORITHM", "STAT_BINS", "TILE_OPTIONS", "RecordedSplit",
    "TileConfig", "TileInputs", "TilePlan", "ZoneSplitter", "_BandStats", "_close_worker",
    "_footprint", "_init_worker", "_train_stats", "choose_block", "make_tiles", "scan_tiles",
    "tile_id", "tile_windows", "tiles_stage", "tiles_to_verify", "unit_histograms",
]


def make_tiles(export_dir: Path, workspace: Path, cfg: TileConfig = TileConfig(),
               outlines_path: Path | None = None, name: str | None = None, workers: int = 1,
               force: bool = False, verify: bool = False, wait: bool = False,
               quiet: bool = False, echo: Callable[[str], None] = print,
               only_existing: bool = False, outlines_layer: str | None = None,
               zoned: ZoneSplitter | None = None) -> Path:
    """Cut an export into labelled tiles with a train/val split; rerunning resumes, and with
    `verify` checks every tile against its checksum and rewrites the bad ones. With
    `only_existing`, refuse instead of starting a tile set that is not there yet.
    `outlines_layer` names the layer of an outlines file of several. With `zoned` (a zone of
    a zoned export), the split is the one made with the other zones (tiling/zoned.py)."""
    inputs = TileInputs.open(export_dir, cfg, outlines_path, echo, outlines_layer)
    out = Path(workspace) / TILES_DIR / (name or Path(export_dir).name)
    params = inputs.parameters(out, Path(workspace), cfg, zoned.parameters if zoned else None)
    earlier = inputs.earlier_parameters(params)
    stage = tiles_stage(out)
    if not force and _intact(stage, params, earlier, verify, echo):
        return out  # found without the lock: a read-only workspace reruns too
    with stage.lock(wait, echo), bounded_gdal_cache():
        clean_partials(out, echo)
        if only_existing:
            _check_same_tiles(stage, params, earlier)
        damaged = _Damaged(out, verify)
        decision = stage.decide(params, force, echo, earlier, damaged, checked=damaged.note)
        if decision.action == DONE:
            return out
        known = _known_files(out, decision, damaged)
        plan = zoned.plan(inputs, cfg, quiet) if zoned else None  # before this pool: its own
        with WorkerPool(workers, _init_worker, inputs.worker_args(out, cfg),
                        _close_worker) as pool:
            plan = plan or _plan(pool, inputs, cfg, quiet)
            manifest = _start_manifest(out, inputs, params, plan, Path(workspace), known)
            results = _write_tiles(pool, plan, cfg, known, quiet)
        _finish(out, manifest, inputs, cfg, plan, results)
        recut = sum(r["recut"] for r in results.values())
        if recut:
            echo(f"{recut} tile(s) did not match their recorded checksums and were cut again")
    update_catalog(Path(workspace), echo)
    s = manifest["splits"]
    echo(f"tiles complete: {out} ({s[TRAIN]['tiles']} train, {s[VAL]['tiles']} val, "
         f"{manifest['counts'][GUARD]} guard; split distance {manifest['split_distance_m']:.0f} m;"
         f" labels {manifest['label_area']['rasterized_km2']:.2f} km^2 vs polygons "
         f"{manifest['label_area']['polygons_km2']:.2f} km^2)")
    return out


def _start_manifest(out: Path, inputs: TileInputs, params: dict, plan: TilePlan,
                    workspace: Path, known: dict) -> dict:
    exp = inputs.export
    mf = out / TILES_MANIFEST
    manifest = base_manifest(
        "tiles", parameters=params, export=stored_path(inputs.export_dir, out, workspace),
        region=exp.get("region", {}).get("name"), year=exp.get("year"),
        synthetic=exp.get("synthetic", False), bands=list(BAND_NAMES),
        grid=inputs.grid.to_dict(), tile_size=params["config"]["size"],
        normalization=exp.get("normalization"), block_tiles=plan.block_tiles, files=known)
    if mf.is_file():  # resuming: keep when this tile set was first started
        manifest["created_at"] = read_manifest(mf, "tiles").get("created_at")
    make_dirs(out)
    write_manifest(mf, manifest)
    return manifest


def _write_tiles(pool: WorkerPool, plan: TilePlan, cfg: TileConfig, known: dict,
                 quiet: bool) -> dict:
    jobs = plan.jobs(cfg.size, known)
    return {job[0]: result for job, result in
            _progress(pool.map(_write, jobs), len(jobs), "tiles", quiet)}


def _finish(out: Path, manifest: dict, inputs: TileInputs, cfg: TileConfig, plan: TilePlan,
            results: dict) -> None:
    """Index, statistics, area check, figure; then the manifest, marked complete, last."""
    import geopandas as gpd

    res = inputs.grid.res
    per_split = {TRAIN: _Side(res), VAL: _Side(res)}
    train_stats = _BandStats()
    label_area = _LabelArea(inputs.outlines.frame.geometry, res)
    rows, files = [], {}
    for (r, c, ro, co), (vf, gf), sp in zip(plan.kept, plan.fractions, plan.split):
        tid, fp = tile_id(r, c), _footprint(inputs.grid, ro, co, cfg.size)
        image, label = tile_files(tid) if sp != GUARD else (None, None)
        rows.append({"tile_id": tid, "split": sp, "glacier_fraction": round(gf, 5),
                     "valid_fraction": round(vf, 5), "row_off": ro, "col_off": co,
                     "image": image, "label": label, "geometry": fp})
        if sp == GUARD:
            continue
        st = results[tid]
        files.update(st.pop("files"))
        per_split[sp].add(st, fp)
        label_area.add(st, fp)
        if sp == TRAIN:
            train_stats.add(st)
    index = gpd.GeoDataFrame(rows, crs=inputs.grid.crs)
    write_gpkg(index, out / TILE_INDEX, "tiles")
    _overview_png(out / OVERVIEW_PNG, index, inputs.outlines.frame, inputs.grid)
    manifest.update(
        counts={"windows": plan.windows, "kept": len(plan.kept),
                **{k: plan.split.count(k) for k in (TRAIN, VAL, GUARD)}},
        splits={k: v.report() for k, v in per_split.items()},
        split_distance_m=min_distance(per_split[TRAIN].boxes, per_split[VAL].boxes),
        label_area=label_area.report(), outlines=_outline_summary(inputs, cfg, out),
        train_stats=_train_stats(train_stats, manifest), files=dict(sorted(files.items())))
    tiles_stage(out).complete(manifest)


def _outline_summary(inputs: TileInputs, cfg: TileConfig, out: Path) -> dict:
    large, small = inputs.outlines, inputs.small
    return {"file": stored_path(large.path, out, workspace_of(out, "tiles")), "sha256":
            file_sha256(large.path), "layer": large.layer, "ignored": large.ignored,
            "id_field": large.id_field, "repaired": large.repaired,
            "count": len(large), "area_km2": float(large.frame["area_km2"].sum()),
            "area": "ellipsoidal (WGS84)", "min_area_km2": cfg.min_area_km2,
            "small": {"count": len(small), "area_km2": float(small.frame["area_km2"].sum()),
                      "label": cfg.small_glaciers}}
