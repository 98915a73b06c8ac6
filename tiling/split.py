"""Train/validation splits of a tile grid.

`spatial` (default) assigns blocks of tiles to one side and drops training tiles within one
tile width of a validation tile (the guard gap), so neighbouring tiles of one glacier never
land on both sides. `random` is the paper's tile-wise 70/30 split.
"""
from __future__ import annotations

import math

import numpy as np

from gee_export.common.errors import InputError

TRAIN, VAL, GUARD = "train", "val", "guard"


def check_val_fraction(val_fraction: float) -> None:
    if not 0 < val_fraction < 1:
        raise InputError(f"--val-fraction {val_fraction}: must lie strictly between 0 and 1")


def random_split(n: int, val_fraction: float, seed: int) -> list[str]:
    check_val_fraction(val_fraction)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_val = int(round(val_fraction * n))
    out = [TRAIN] * n
    for i in order[:n_val]:
        out[i] = VAL
    return out


CANDIDATES = 200  # seeded block orders tried; the best balances tiles and glacier area


def spatial_split(rows: np.ndarray, cols: np.ndarray, val_fraction: float, seed: int,
                  block: int = 4, guard: int = 1, glacier: np.ndarray | None = None
                  ) -> list[str]:
    """Split tiles at integer grid positions (rows, cols) by blocks with a guard ring.

    Validation blocks are drawn in a seeded order until validation holds `val_fraction` of the
    usable tiles (train + val); training tiles within `guard` tile positions of a validation
    tile become guard tiles and are not used. Of CANDIDATES seeded orders, the one whose
    validation share of tiles and of glacier pixels (`glacier`, per tile) both come closest to
    `val_fraction` wins, so validation is not left without ice by chance.
    """
    check_val_fraction(val_fraction)
    rows, cols = np.asarray(rows), np.asarray(cols)
    if len(rows) == 0:
        return []
    keys = list(zip((rows // block).tolist(), (cols // block).tolist()))
    return block_split(keys, grid_neighbours(rows, cols, guard), val_fraction, seed, glacier,
                       f"in blocks of {block} x {block}")


def grid_neighbours(rows: np.ndarray, cols: np.ndarray, guard: int) -> list[list[int]]:
    """For each tile at grid position (row, col), the tiles within `guard` positions."""
    positions = list(zip(np.asarray(rows).tolist(), np.asarray(cols).tolist()))
    occupied = {rc: i for i, rc in enumerate(positions)}
    return [[occupied[(r + dr, c + dc)] for dr in range(-guard, guard + 1)
             for dc in range(-guard, guard + 1) if (r + dr, c + dc) in occupied]
            for r, c in positions]


def block_split(keys: list, neighbours: list[list[int]], val_fraction: float, seed: int,
                glacier: np.ndarray | None = None, blocks: str = "in blocks") -> list[str]:
    """The spatial split of tiles by their blocks (`keys`, one sortable block key per tile),
    the tiles in `neighbours[i]` becoming guard tiles when tile i is validation: of
    CANDIDATES seeded block orders, the one whose validation shares of tiles and of glacier
    come closest to `val_fraction`."""
    n = len(keys)
    glacier = np.ones(n) if glacier is None else np.asarray(glacier, float)
    block_ids = sorted(set(keys))
    members: dict = {b: [] for b in block_ids}
    for i, k in enumerate(keys):
        members[k].append(i)
    rng = np.random.default_rng(seed)
    total_glacier = glacier.sum()
    best = None
    for _ in range(CANDIDATES):
        order = [block_ids[i] for i in rng.permutation(len(block_ids))]
        labels = _grow(order, members, neighbours, n, val_fraction)
        if labels is None:
            continue
        lab = np.array(labels)
        n_val, n_train = (lab == VAL).sum(), (lab == TRAIN).sum()
        g_val, g_train = glacier[lab == VAL].sum(), glacier[lab == TRAIN].sum()
        score = abs(n_val / (n_val + n_train) - val_fraction)
        if total_glacier > 0:
            score += abs(g_val / max(1e-9, g_val + g_train) - val_fraction)
        if best is None or score < best[0]:
            best = (score, labels)
    if best is None:
        raise InputError(f"spatial split of {n} tiles {blocks} leaves one side empty; use a "
                         "smaller --block-tiles, more area, or --split random")
    return best[1]


def _grow(order, members, neighbours, n, val_fraction):
    """Add validation blocks in order, updating the guard ring incrementally."""
    labels = [TRAIN] * n
    n_val, n_train = 0, n
    for b in order:
        for i in members[b]:
            if labels[i] == TRAIN:
                n_train -= 1
            if labels[i] != VAL:
                labels[i] = VAL
                n_val += 1
            for j in neighbours[i]:
                if labels[j] == TRAIN:
                    labels[j] = GUARD
                    n_train -= 1
        if n_val / max(1, n_val + n_train) >= val_fraction:
            break
    if n_val == 0 or n_train == 0:
        return None
    return labels


def min_distance(boxes_a: list, boxes_b: list) -> float:
    """Smallest distance between two sets of footprints (metres in a projected CRS)."""
    import shapely

    if not boxes_a or not boxes_b:
        return math.nan
    tree = shapely.STRtree(boxes_b)
    best = math.inf
    for a in boxes_a:
        j = tree.query_nearest(a, return_distance=True)
        best = min(best, float(j[1][0]))
    return best
