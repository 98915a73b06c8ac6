"""`prep tile`: labelled tiles from an export and glacier outlines.

Two streaming passes over tile windows, never the whole scene: a scan (valid fraction from one
band, glacier fraction from the rasterized outlines) that decides which tiles to keep and the
split, then the writes (11-band image, label, per-tile statistics and checksums), in parallel
over tiles. Nothing is written until the split exists, so a split that cannot be made leaves
no stub behind; a killed run resumes with the tiles it wrote.
"""
from __future__ import annotations

import math
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Protocol

import numpy as np

from gee_export.common.atomic import as_stored, clean_partials, make_dirs, remove_file
from gee_export.common.bands import BAND_NAMES, LABEL_BACKGROUND, LABEL_GLACIER, LABEL_IGNORE
from gee_export.common.errors import InputError, StateError
from gee_export.common.grid import ExportGrid
from gee_export.common.layout import (
    IMAGES_DIR,
    LABELS_DIR,
    OUTLINES_FILE,
    OVERVIEW_PNG,
    STACK_VRT,
    TILE_INDEX,
    TILES_DIR,
    TILES_MANIFEST,
    base_manifest,
    check_files,
    describe_problems,
    export_identity,
    file_record,
    file_sha256,
    read_manifest,
    require_complete,
    resolved_path,
    stored_path,
    tile_files,
    workspace_of,
    write_manifest,
)
from gee_export.common.outlines import (
    MIN_GLACIER_AREA_KM2,
    OutlineRasterizer,
    Outlines,
    features_id,
    read_outlines,
)
from gee_export.common.rasters import bounded_gdal_cache, check_stack, geotiff_profile, write_geotiff
from gee_export.common.stac import update_catalog
from gee_export.common.stage import DONE, START, Decision, Stage
from gee_export.common.vectors import write_gpkg
from gee_export.common.workers import WorkerPool

from .split import GUARD, TRAIN, VAL, check_val_fraction, min_distance, random_split, spatial_split

STAT_BINS = 1000  # histogram bins on [0, 1] for the training-split percentiles
PERCENTILES = (1, 2, 50, 98, 99)
SPLIT_ALGORITHM = 5  # bump when the split changes, so old tiles are not taken as current
# 5: the zones of a zoned tile set split once, together (tiling/zoned.py). The split of a tile
# set of one zone is algorithm 4's, unchanged: such sets record 4 and stay current.
SINGLE_ZONE_SPLIT_ALGORITHM = 4
AUTO_BLOCKS = (4, 3, 2, 1)  # --block-tiles auto: block sides tried, largest first
SHARE_TOLERANCE = 0.1  # auto blocks: accepted distance of the validation share from the target
# What pixels of glaciers under --min-area become: ignored by loss and metrics (they are ice,
# but an inventory's size limit is not something the model can see), background (the paper's
# choice of dropping the outlines), or glacier.
SMALL_GLACIER_LABELS = {"ignore": LABEL_IGNORE, "background": LABEL_BACKGROUND,
                        "glacier": LABEL_GLACIER}


@dataclass(frozen=True)
class TileConfig:
    size: int = 512  # paper: 512 x 512 tiles
    stride: int | None = None  # default = size (no overlap, as the paper)
    min_valid: float = 0.5  # drop tiles with less valid (non-nodata) area than this
    background_ratio: float | None = None  # keep at most this many glacier-free per glacier tile
    split: str = "spatial"
    val_fraction: float = 0.3  # paper: 70/30
    block_tiles: int | None = None  # spatial split: N x N blocks; None: the first of AUTO_BLOCKS
    seed: int = 0
    min_area_km2: float = MIN_GLACIER_AREA_KM2
    small_glaciers: str = "ignore"  # label of glaciers under min_area_km2 (SMALL_GLACIER_LABELS)

    @property
    def step(self) -> int:
        return self.stride or self.size

    @property
    def guard_positions(self) -> int:
        # No training pixel within one tile width of a validation tile: a training tile k
        # positions away leaves a gap of k*step - size >= size.
        return max(1, math.ceil(2 * self.size / self.step) - 1)

    def check(self, grid: ExportGrid) -> None:
        """The checks that need the scene (the CLI checks each value's range on its own)."""
        if self.size < 32 or self.size % 32:
            raise InputError(f"--size {self.size}: use a multiple of 32 (the model's stride)")
        if not 0 < self.step <= self.size:
            raise InputError(f"--stride {self.step}: must lie in 1..{self.size}")
        if self.size > min(grid.width, grid.height):
            raise InputError(f"--size {self.size} px is larger than the scene "
                             f"({grid.width} x {grid.height} px)")
        if not 0 <= self.min_valid <= 1:
            raise InputError(f"--min-valid {self.min_valid}: must lie in [0, 1]")
        if self.split not in ("spatial", "random"):
            raise InputError(f"--split {self.split!r}: use spatial or random")
        if self.small_glaciers not in SMALL_GLACIER_LABELS:
            raise InputError(f"--small-glaciers {self.small_glaciers!r}: use one of "
                             f"{', '.join(SMALL_GLACIER_LABELS)}")
        check_val_fraction(self.val_fraction)


def tile_windows(grid: ExportGrid, size: int, step: int) -> Iterable[tuple[int, int, int, int]]:
    """(row, col, row_off, col_off) of every full tile on the grid, aligned to its origin."""
    for r, row_off in enumerate(range(0, grid.height - size + 1, step)):
        for c, col_off in enumerate(range(0, grid.width - size + 1, step)):
            yield r, c, row_off, col_off


def tile_id(r: int, c: int) -> str:
    return f"t{r:04d}_{c:04d}"


# -- what tiling reads --------------------------------------------------------------------------

@dataclass
class TileInputs:
    """A complete export and the outlines that label it, split by the size limit."""
    export_dir: Path
    export: dict  # the export manifest
    grid: ExportGrid
    outlines: Outlines  # glaciers of at least --min-area
    small: Outlines  # the ones under it

    @classmethod
    def open(cls, export_dir: Path, cfg: TileConfig, outlines_path: Path | None,
             echo: Callable[[str], None], outlines_layer: str | None = None) -> "TileInputs":
        from shapely.geometry import box

        export_dir = Path(export_dir)
        exp = require_complete(export_dir, "export",
                               "rerun `prep export` with the same options to finish it")
        grid = ExportGrid.from_dict(exp["grid"])
        cfg.check(grid)
        check_stack(export_dir / STACK_VRT)
        if outlines_path is None:
            outlines_path = export_dir / OUTLINES_FILE
            if not outlines_path.is_file():
                raise InputError(f"{export_dir} recorded no outlines; give --outlines FILE")
        every = read_outlines(outlines_path, grid.crs, layer=outlines_layer)
        for line in every.notes():
            echo(line)
        if not every.frame.intersects(box(*grid.bounds)).any():
            raise InputError(
                f"outlines {outlines_path} do not overlap the stack: outlines bounds "
                f"{tuple(round(v) for v in every.frame.total_bounds)}, stack bounds "
                f"{tuple(round(v) for v in grid.bounds)} (both in {grid.crs})")
        large, small = every.split_by_area(cfg.min_area_km2)
        return cls(export_dir, exp, grid, large, small)

    def parameters(self, out: Path, workspace: Path, cfg: TileConfig,
                   zoned_split: dict | None = None) -> dict:
        """What makes two tile sets the same. Paths are stored relative to the workspace and
        the outlines by checksum, so a moved workspace is still up to date. The export counts
        by its identity, not by when it last completed: a cell it made again with the same
        options (a repair) leaves the tiles current. A zone of a zoned tile set records what
        its split, made with the other zones', depends on (`zoned_split`)."""
        algorithm = SPLIT_ALGORITHM if zoned_split else SINGLE_ZONE_SPLIT_ALGORITHM
        return as_stored({"export": stored_path(self.export_dir, out, workspace),
                          "export_id": export_identity(self.export),
                          "outlines_features": features_id(self.outlines, self.small),
                          "config": asdict(cfg), "split_algorithm": algorithm,
                          **({"outlines_layer": self.outlines.layer} if self.outlines.layer
                             else {}),
                          **({"zoned_split": zoned_split} if zoned_split else {})})

    def earlier_parameters(self, params: dict) -> list[dict]:
        """`params` as tile sets made before this version recorded them: before export_id
        (by the export's completion time: current while the export has not completed again
        since) and before outlines_features (by the outlines file's checksum: current while
        its bytes are the same)."""
        by_bytes = {**{k: v for k, v in params.items() if k != "outlines_features"},
                    "outlines_sha256": file_sha256(self.outlines.path)}
        return [as_stored(by_bytes)] + [as_stored(
            {**{k: v for k, v in p.items() if k != "export_id"},
             "export_completed_at": self.export.get("completed_at")}) for p in (params, by_bytes)]

    def worker_args(self, out: Path, cfg: TileConfig) -> tuple:
        return (str(self.export_dir / STACK_VRT), self.outlines.geometries,
                self.small.geometries, SMALL_GLACIER_LABELS[cfg.small_glaciers],
                self.grid.transform, str(out))


class ZoneSplitter(Protocol):
    """The split of one zone of a zoned tile set, made with the other zones' tiles."""
    parameters: dict  # what the split depends on beyond this zone's own inputs

    def plan(self, inputs: TileInputs, cfg: TileConfig, quiet: bool) -> TilePlan: ...


class RecordedSplit:
    """`--verify` of a zone of a zoned tile set: its split as its index records it (made with
    the other zones', which a repair of this zone's files does not revisit)."""

    def __init__(self, out: Path, parameters: dict, workers: int):
        self.out, self.parameters, self.workers = out, parameters, workers

    def plan(self, inputs: TileInputs, cfg: TileConfig, quiet: bool) -> TilePlan:
        from gee_export.common.tile_index import read_tile_rows

        recorded = {(ro, co): split for split in (TRAIN, VAL, GUARD)
                    for ro, co in read_tile_rows(self.out, split, ("row_off", "col_off"))}
        with WorkerPool(self.workers, _init_worker, inputs.worker_args(self.out, cfg),
                        _close_worker) as pool:
            n_windows, kept, fractions = scan_tiles(pool, inputs, cfg, quiet)
        if sorted(recorded) != sorted((w[2], w[3]) for w in kept):
            raise StateError(f"{self.out}: its index does not list the tiles its export gives "
                             "now; cut the zoned tile set again with `prep tile --force`")
        return TilePlan(n_windows, kept, fractions, [recorded[w[2:]] for w in kept],
                        read_manifest(self.out, "tiles").get("block_tiles"))


# -- the command --------------------------------------------------------------------------------

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


# prep tile's parameters as its options (the stage contract names differences so).
TILE_OPTIONS = {"export": "--export", "export_id": "--export (made again since)",
                "export_completed_at": "--export (completed again since)",
                "outlines_sha256": "--outlines (contents)",
                "outlines_features": "--outlines (ids and geometries)",
                "outlines_layer": "--outlines-layer",
                "split_algorithm": "the split's algorithm (this version's)",
                "zoned_split.*": "zone {key}'s export or outlines (the zones split together)",
                "config.min_area_km2": "--min-area", "config.val_fraction": "--val-fraction",
                "config.block_tiles": "--block-tiles", "config.small_glaciers":
                "--small-glaciers"}


def tiles_stage(out: Path) -> Stage:
    return Stage("tiles", out / TILES_MANIFEST, "tiles", TILE_OPTIONS, verb="are",
                 hint="use --force to replace them, or --name to tile beside them")


class _Damaged:
    """The stage contract's integrity check of a complete tile set: every file as recorded
    (its size; with --verify its checksum). Keeps what it found for the repair."""

    def __init__(self, out: Path, verify: bool):
        self.out, self.verify, self.problems, self.files = out, verify, {}, 0

    def __call__(self, old: dict) -> str | None:
        files = old.get("files", {})
        self.problems, self.files = check_files(self.out, files, full=self.verify), len(files)
        if not self.problems:
            return None
        return (f"{len(self.problems)} tile file(s) are corrupt or missing "
                f"({describe_problems(self.problems)})")

    def note(self) -> str:
        return f"; {self.files} files match their checksums" if self.verify else ""


def _intact(stage: Stage, params: dict, earlier: list, verify: bool,
            echo: Callable[[str], None]) -> bool:
    """Whether the tile set is complete and intact for these parameters, with no unfinished
    file; said when so. Reads only (no lock, nothing written)."""
    damaged = _Damaged(stage.dir, verify)
    return stage.done_without_lock(params, echo, earlier, damaged, damaged.note) is not None


def tiles_to_verify(workspace: Path, export_dir: Path | None, name: str | None,
                    echo: Callable[[str], None]) -> tuple[Path, dict]:
    """The tile set --verify checks and its manifest: --name, else the one cut from
    --export, else the only one in the workspace. Several candidates are refused, listed."""
    parent = Path(workspace) / TILES_DIR
    if name is not None:
        return parent / name, require_complete(parent / name, "tiles",
                                               "rerun `prep tile` to finish it first")
    sets = []
    for mf in sorted(parent.glob(f"*/{TILES_MANIFEST}")):
        try:
            m = read_manifest(mf, "tiles")
        except InputError:
            continue
        cut_from = (m.get("parameters") or {}).get("export") or m.get("export")  # or zoned
        if m.get("complete") and (export_dir is None or resolved_path(
                cut_from, mf.parent).resolve() == Path(export_dir).resolve()):
            sets.append((mf.parent, m))
    of = f" cut from {export_dir}" if export_dir is not None else ""
    if not sets:
        raise StateError(f"no complete tile set{of} in {parent} to verify; cut one with "
                         "`prep tile`")
    if len(sets) > 1:
        raise InputError(f"--verify: {len(sets)} tile sets{of} in {parent} "
                         f"({', '.join(d.name for d, _ in sets)}); choose one with --name")
    echo(f"verifying {sets[0][0]}")
    return sets[0]


def _check_same_tiles(stage: Stage, params: dict, earlier: list) -> None:
    """Refuse to verify a tile set whose inputs changed since it was cut: there is nothing
    to check the tiles against."""
    changed = stage.unchanged(params, earlier)
    if changed:
        raise StateError(f"{stage.dir}: its inputs changed since the tiles were cut "
                         f"({changed}); --verify only checks tiles against their own inputs: "
                         "cut them again with `prep tile --force`")


def _known_files(out: Path, decision: Decision, damaged: _Damaged) -> dict:
    """Make `out` ready for a run that starts over or resumes, and return the checksums
    recorded for the files it keeps (a kept file that no longer matches is cut again)."""
    if decision.action == START:
        if decision.old is not None or decision.replaced:
            shutil.rmtree(out, ignore_errors=True)  # another product, or made afresh
        else:
            for sub in (IMAGES_DIR, LABELS_DIR):  # tiles without a manifest belong to no run
                shutil.rmtree(out / sub, ignore_errors=True)
        return {}
    known = decision.old.get("files", {})
    if not decision.old.get("complete"):
        return known
    for rel in damaged.problems:  # a repair: the damaged files are cut again
        remove_file(out / rel)
    write_manifest(out / TILES_MANIFEST, dict(decision.old, complete=False))
    return known


# -- pass 1: which tiles, and the split -----------------------------------------------------------

@dataclass
class TilePlan:
    windows: int  # full tile windows on the grid
    kept: list  # (row, col, row_off, col_off) of the tiles kept
    fractions: list  # (valid fraction, glacier fraction of the valid pixels) per kept tile
    split: list  # TRAIN, VAL or GUARD per kept tile
    block_tiles: int | None  # the block side the spatial split used

    def jobs(self, size: int, known: dict) -> list[tuple]:
        """One write per train or val tile, with the checksums recorded for its files."""
        out = []
        for (r, c, ro, co), sp in zip(self.kept, self.split):
            if sp != GUARD:
                tid = tile_id(r, c)
                out.append((tid, ro, co, size, sp == TRAIN,
                            [known.get(rel) for rel in tile_files(tid)]))
        return out


def _plan(pool: WorkerPool, inputs: TileInputs, cfg: TileConfig, quiet: bool) -> TilePlan:
    n_windows, kept, fractions = scan_tiles(pool, inputs, cfg, quiet)
    split, block = _split(kept, fractions, cfg)
    return TilePlan(n_windows, kept, fractions, split, block)


def scan_tiles(pool: WorkerPool, inputs: TileInputs, cfg: TileConfig, quiet: bool
               ) -> tuple[int, list, list]:
    """The first pass: the number of tile windows, the tiles kept (row, col, row_off,
    col_off) and their (valid, glacier) fractions."""
    windows = list(tile_windows(inputs.grid, cfg.size, cfg.step))
    scans = dict(_progress(pool.map(_scan, [(ro, co, cfg.size) for _, _, ro, co in windows]),
                           len(windows), "scan", quiet))
    kept = [w for w in windows if _valid(scans[w[2:] + (cfg.size,)], cfg.min_valid)]
    fractions = [scans[w[2:] + (cfg.size,)] for w in kept]
    if cfg.background_ratio is not None:
        keep = _limit_background([g for _, g in fractions], cfg.background_ratio, cfg.seed)
        kept = [w for w, k in zip(kept, keep) if k]
        fractions = [f for f, k in zip(fractions, keep) if k]
    if not kept:
        raise InputError(f"no tile of {cfg.size} px has a valid fraction >= {cfg.min_valid}; "
                         "lower --min-valid or --size")
    return len(windows), kept, fractions


def _valid(scan: tuple[float, float], min_valid: float) -> bool:
    return scan[0] >= min_valid and scan[0] > 0


def _limit_background(glacier_fractions: list[float], ratio: float, seed: int) -> list[bool]:
    """Keep every tile with ice and a seeded choice of at most ratio x as many without."""
    with_ice = np.array(glacier_fractions) > 0
    without = np.flatnonzero(~with_ice)
    n = int(round(ratio * max(1, int(with_ice.sum()))))
    keep = with_ice.copy()
    keep[np.random.default_rng(seed).permutation(without)[:n]] = True
    return keep.tolist()


def _split(kept: list, fractions: list, cfg: TileConfig) -> tuple[list[str], int | None]:
    """The split, and for a spatial one the block side used. With --block-tiles auto, the
    largest block whose validation share lies within SHARE_TOLERANCE of --val-fraction (large
    blocks keep neighbouring tiles together), else the block that comes closest."""
    if cfg.split == "random":
        return random_split(len(kept), cfg.val_fraction, cfg.seed), None
    rows, cols = np.array([w[0] for w in kept]), np.array([w[1] for w in kept])
    glacier = [v * g for v, g in fractions]
    return choose_block(lambda block: spatial_split(rows, cols, cfg.val_fraction, cfg.seed,
                                                    block, cfg.guard_positions, glacier),
                        cfg, len(kept))


def choose_block(split_in: Callable[[int], list[str]], cfg: TileConfig, n: int
                 ) -> tuple[list[str], int]:
    """The spatial split `split_in(block side)` with --block-tiles, or with auto the largest
    block that lands within SHARE_TOLERANCE of --val-fraction, else the closest."""
    if cfg.block_tiles:
        return split_in(cfg.block_tiles), cfg.block_tiles
    tried = []
    for block in AUTO_BLOCKS:
        try:
            split = split_in(block)
        except InputError:
            continue
        miss = abs(split.count(VAL) / (split.count(VAL) + split.count(TRAIN)) - cfg.val_fraction)
        if miss <= SHARE_TOLERANCE:
            return split, block
        tried.append((miss, -block, split))
    if not tried:
        raise InputError(f"a spatial split of {n} tiles leaves one side empty even in "
                         "blocks of 1 tile (the guard gap takes the rest); use --split random, "
                         "a smaller --size, or a larger area")
    miss, block, split = min(tried, key=lambda t: t[:2])
    return split, -block


# -- pass 2: the tiles ----------------------------------------------------------------------------

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


def _progress(pairs, total: int, desc: str, quiet: bool):
    from tqdm import tqdm

    return tqdm(pairs, total=total, desc=desc, unit="tile", disable=quiet, leave=False)


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


def _train_stats(stats: _BandStats, manifest: dict) -> dict:
    """The training split's band statistics; of a zone of a zoned tile set, none when the
    split made with the other zones left it no training tile (the zones' pool them)."""
    if not stats.count and manifest["parameters"].get("zoned_split"):
        return {"pixels": 0, "bands": {}}
    return stats.report()


def _footprint(grid: ExportGrid, row_off: int, col_off: int, size: int):
    from shapely.geometry import box

    x0, y0 = grid.x0 + col_off * grid.res, grid.y0 - row_off * grid.res
    return box(x0, y0 - size * grid.res, x0 + size * grid.res, y0)


def _outline_summary(inputs: TileInputs, cfg: TileConfig, out: Path) -> dict:
    large, small = inputs.outlines, inputs.small
    return {"file": stored_path(large.path, out, workspace_of(out, "tiles")), "sha256":
            file_sha256(large.path), "layer": large.layer, "ignored": large.ignored,
            "id_field": large.id_field, "repaired": large.repaired,
            "count": len(large), "area_km2": float(large.frame["area_km2"].sum()),
            "area": "ellipsoidal (WGS84)", "min_area_km2": cfg.min_area_km2,
            "small": {"count": len(small), "area_km2": float(small.frame["area_km2"].sum()),
                      "label": cfg.small_glaciers}}


# -- worker functions (module level so processes can run them) -------------------------------------

_W: dict = {}


def _init_worker(vrt: str, large, small, small_label: int, transform, out_dir: str) -> None:
    import rasterio

    _W.update(src=rasterio.open(vrt), large=OutlineRasterizer(large, transform),
              small=OutlineRasterizer(small, transform) if len(small) else None,
              small_label=small_label, out=Path(out_dir))


def _close_worker() -> None:
    _W.pop("src").close()


def _scan(window: tuple[int, int, int]) -> tuple[float, float]:
    """Valid and glacier fraction of one tile window (one band read, one rasterization)."""
    from rasterio.windows import Window

    row_off, col_off, size = window
    valid = np.isfinite(_W["src"].read(1, window=Window(col_off, row_off, size, size)))
    ice = _W["large"].mask(row_off, col_off, size, size) & valid
    return float(valid.mean()), float(ice.sum()) / max(1, int(valid.sum()))


def _write(job: tuple) -> dict:
    """Write one tile's image and label, or read them back if an earlier run wrote them and
    they match the checksums it recorded; return its statistics and its files' checksums."""
    tid, row_off, col_off, size, is_train, known = job
    rels = tile_files(tid)
    paths = [_W["out"] / rel for rel in rels]
    records = [file_record(p) if p.is_file() else None for p in paths]
    changed = any(r is not None and k is not None and r != k for r, k in zip(records, known))
    intact = not changed and None not in records
    img_lbl = _read_tile(*paths) if intact else None
    if img_lbl is None:
        img_lbl = _cut_tile(row_off, col_off, size)
        _write_tile(paths, *img_lbl, row_off, col_off, size)
        records = [file_record(p) for p in paths]
    img, lbl = img_lbl
    valid = lbl != LABEL_IGNORE
    stats = {"glacier_px": int((lbl == LABEL_GLACIER).sum()), "valid_px": int(valid.sum()),
             "files": dict(zip(rels, records)),
             "recut": changed}
    if is_train:
        v = img[:, valid]
        stats["sum"] = v.sum(axis=1, dtype=np.float64)
        stats["sumsq"] = (v.astype(np.float64) ** 2).sum(axis=1)
        stats["hist"] = unit_histograms(v)
    return stats


def _read_tile(img_path: Path, lbl_path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """A tile an earlier run wrote, or None when either file cannot be read (then it is cut
    again)."""
    import rasterio

    try:
        with rasterio.open(img_path) as s:
            img = s.read()
        with rasterio.open(lbl_path) as s:
            return img, s.read(1)
    except rasterio.errors.RasterioError:
        return None


def _cut_tile(row_off: int, col_off: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    """The stack window and its label: glacier, background, 255 where any band lacks data,
    and small glaciers as --small-glaciers says (a large outline wins where they overlap)."""
    from rasterio.windows import Window

    img = _W["src"].read(window=Window(col_off, row_off, size, size))
    lbl = np.full((size, size), LABEL_BACKGROUND, np.uint8)
    if _W["small"] is not None:
        lbl[_W["small"].mask(row_off, col_off, size, size)] = _W["small_label"]
    lbl[_W["large"].mask(row_off, col_off, size, size)] = LABEL_GLACIER
    lbl[~np.isfinite(img).all(axis=0)] = LABEL_IGNORE
    return img, lbl


def _write_tile(paths: list[Path], img: np.ndarray, lbl: np.ndarray, row_off: int,
                col_off: int, size: int) -> None:
    from rasterio.windows import Window

    src = _W["src"]
    t = src.window_transform(Window(col_off, row_off, size, size))
    # Tiles are COGs without overviews: the loader reads each whole, at full resolution.
    write_geotiff(paths[0], img, geotiff_profile(size, size, img.shape[0], "float32", src.crs, t,
                                                 np.nan), BAND_NAMES, resampling=None)
    write_geotiff(paths[1], lbl[None], geotiff_profile(size, size, 1, "uint8", src.crs, t,
                                                       LABEL_IGNORE), ("glacier",), resampling=None)


def unit_histograms(v: np.ndarray) -> np.ndarray:
    """Per-row histograms of values in [0, 1] into STAT_BINS equal bins (1.0 in the last):
    one bincount over all rows instead of a np.histogram call per band."""
    bins = np.minimum((v * STAT_BINS).astype(np.int64), STAT_BINS - 1)
    bins += (np.arange(v.shape[0]) * STAT_BINS)[:, None]
    return np.bincount(bins.ravel(), minlength=v.shape[0] * STAT_BINS).reshape(v.shape[0], -1)


# -- summaries ------------------------------------------------------------------------------------

class _Side:
    """Tiles, pixels and footprints of one side of the split."""

    def __init__(self, res: float):
        self.tiles = self.glacier_px = self.valid_px = 0
        self.boxes: list = []
        self.res = res

    def add(self, st: dict, fp) -> None:
        self.tiles += 1
        self.glacier_px += st["glacier_px"]
        self.valid_px += st["valid_px"]
        self.boxes.append(fp)

    def report(self) -> dict:
        return {"tiles": self.tiles, "glacier_pixels": self.glacier_px,
                "valid_pixels": self.valid_px,
                "glacier_area_km2": self.glacier_px * self.res ** 2 / 1e6,
                "glacier_fraction": self.glacier_px / max(1, self.valid_px)}


class _LabelArea:
    """Rasterized glacier area against the polygons' area inside the same tiles (planar, in
    the grid's CRS, as the pixels are): the check that labels follow the outlines."""

    def __init__(self, geometries, res: float):
        self.geoms, self.sindex, self.res = geometries, geometries.sindex, res
        self.polygons = self.raster = 0.0

    def add(self, st: dict, fp) -> None:
        near = self.geoms.iloc[self.sindex.query(fp)]
        # Area of the union: overlapping inventory polygons must not count twice.
        self.polygons += float(near.union_all().intersection(fp).area) if len(near) else 0.0
        self.raster += st["glacier_px"] * self.res ** 2

    def report(self) -> dict:
        return {"polygons_km2": self.polygons / 1e6, "rasterized_km2": self.raster / 1e6,
                "relative_difference": ((self.raster - self.polygons) / self.polygons
                                        if self.polygons else None),
                "rule": "pixel centre inside polygon"}


class _BandStats:
    """Per-band mean, std and percentiles of the training split's valid pixels."""

    def __init__(self):
        n = len(BAND_NAMES)
        self.count = 0
        self.sum, self.sumsq = np.zeros(n), np.zeros(n)
        self.hist = np.zeros((n, STAT_BINS), np.int64)

    def add(self, st: dict) -> None:
        self.count += st["valid_px"]
        self.sum += st["sum"]
        self.sumsq += st["sumsq"]
        self.hist += st["hist"]

    def report(self) -> dict:
        if self.count == 0:
            raise InputError("the training split has no valid pixel")
        mean = self.sum / self.count
        std = np.sqrt(np.maximum(self.sumsq / self.count - mean ** 2, 0))
        cum = np.cumsum(self.hist, axis=1)
        out = {"pixels": int(self.count), "bands": {}}
        for i, b in enumerate(BAND_NAMES):
            pct = {str(p): float(np.searchsorted(cum[i], cum[i, -1] * p / 100) / STAT_BINS)
                   for p in PERCENTILES}
            out["bands"][b] = {"mean": float(mean[i]), "std": float(max(std[i], 1e-6)),
                               "percentiles": pct}
        return out


def _overview_png(path: Path, index, outlines, grid: ExportGrid) -> None:
    from matplotlib.patches import Patch
    from matplotlib.ticker import FuncFormatter

    from gee_export.common.figures import new_figure, save_png

    colors = {TRAIN: "#4c9be8", VAL: "#f28e2b", GUARD: "#cccccc"}
    fig, ax = new_figure(figsize=(8, 8 * grid.height / grid.width))
    for sp, col in colors.items():
        sub = index[index["split"] == sp]
        if len(sub):
            sub.plot(ax=ax, facecolor=col, edgecolor="white", linewidth=0.5, alpha=0.8)
    outlines.plot(ax=ax, facecolor="none", edgecolor="#1b3a6b", linewidth=0.6)
    w, s, e, n = grid.bounds
    ax.plot([w, e, e, w, w], [s, s, n, n, s], color="black", linewidth=1)
    ax.legend(handles=[Patch(color=c, label=k) for k, c in colors.items()] +
              [Patch(facecolor="none", edgecolor="#1b3a6b", label="glacier outlines")],
              loc="upper right", fontsize=8)
    ax.set_title("tiles by split, glacier outlines, export footprint")
    km = FuncFormatter(lambda v, _: f"{v / 1e3:g}")  # as the other maps: km, no 1e6 offset
    ax.xaxis.set_major_formatter(km)
    ax.yaxis.set_major_formatter(km)
    ax.set_xlabel(f"easting (km, {grid.crs})")
    ax.set_ylabel("northing (km)")
    fig.tight_layout()
    save_png(fig, path)
