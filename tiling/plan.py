"""The first pass of `prep tile`: which tile windows to keep (valid fraction, background
limit) and the split (random, or spatial in blocks, the block side chosen with
--block-tiles auto); for a zone of a zoned tile set, the split made with the other zones."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol

import numpy as np

from gee_export.common.errors import InputError, StateError
from gee_export.common.layout import read_manifest, tile_files
from gee_export.common.workers import WorkerPool

from .config import TileConfig, tile_id, tile_windows
from .inputs import TileInputs
from .split import GUARD, TRAIN, VAL, random_split, spatial_split
from .worker import _close_worker, _init_worker, _progress, _scan

AUTO_BLOCKS = (4, 3, 2, 1)  # --block-tiles auto: block sides tried, largest first
SHARE_TOLERANCE = 0.1  # auto blocks: accepted distance of the validation share from the target


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
