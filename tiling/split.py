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
    n = len(rows)
    if n == 0:
        return []
    glacier = np.ones(n) if glacier is None else np.asarray(glacier, float)
    brow, bcol = rows // block, cols // block
    block_ids = sorted(set(zip(brow.tolist(), bcol.tolist())))
    members = {b: np.flatnonzero((brow == b[0]) & (bcol == b[1])) for b in block_ids}
    occupied = {(r, c): i for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist()))}
    neighbours = [[occupied[(r + dr, c + dc)] for dr in range(-guard, guard + 1)
                   for dc in range(-guard, guard + 1) if (r + dr, c + dc) in occupied]
                  for r, c in zip(rows.tolist(), cols.tolist())]
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
        raise InputError(f"spatial split of {n} tiles in blocks of {block} x {block} leaves one "
                         "side empty; use a smaller --block-tiles, more area, or --split random")
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
