"""Train/validation splits of a tile grid.

`spatial` (default) assigns blocks of tiles to one side and drops training tiles within one
tile width of a validation tile (the guard gap), so neighbouring tiles of one glacier never
land on both sides. `random` is the paper's tile-wise 70/30 split.
"""
from __future__ import annotations

import math

import numpy as np

from gee_export.contract import GlacierError

TRAIN, VAL, GUARD = "train", "val", "guard"


def check_val_fraction(val_fraction: float) -> None:
    if not 0 < val_fraction < 1:
        raise GlacierError(f"--val-fraction {val_fraction}: must lie strictly between 0 and 1")


def random_split(n: int, val_fraction: float, seed: int) -> list[str]:
    check_val_fraction(val_fraction)
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    n_val = int(round(val_fraction * n))
    out = [TRAIN] * n
    for i in order[:n_val]:
        out[i] = VAL
    return out


def spatial_split(rows: np.ndarray, cols: np.ndarray, val_fraction: float, seed: int,
                  block: int = 4, guard: int = 1) -> list[str]:
    """Split tiles at integer grid positions (rows, cols) by blocks with a guard ring.

    Validation blocks are drawn in a seeded order until validation holds `val_fraction` of the
    tiles that remain usable (train + val); training tiles within `guard` tile positions of a
    validation tile (8-neighbourhood) become guard tiles and are not used.
    """
    check_val_fraction(val_fraction)
    rows, cols = np.asarray(rows), np.asarray(cols)
    n = len(rows)
    if n == 0:
        return []
    brow, bcol = rows // block, cols // block
    block_ids = sorted(set(zip(brow.tolist(), bcol.tolist())))
    rng = np.random.default_rng(seed)
    order = [block_ids[i] for i in rng.permutation(len(block_ids))]
    occupied = {(r, c): i for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist()))}
    is_val = np.zeros(n, bool)
    best = None
    for b in order:
        members = np.flatnonzero((brow == b[0]) & (bcol == b[1]))
        is_val[members] = True
        labels = _with_guard(rows, cols, is_val, occupied, guard)
        n_val = labels.count(VAL)
        n_train = labels.count(TRAIN)
        frac = n_val / max(1, n_val + n_train)
        if best is None or abs(frac - val_fraction) < abs(best[0] - val_fraction):
            best = (frac, labels)
        if frac >= val_fraction:
            break
    if best is None or best[1].count(TRAIN) == 0 or best[1].count(VAL) == 0:
        raise GlacierError(f"spatial split of {n} tiles in blocks of {block} leaves one side "
                           "empty; use smaller --block-tiles, more area, or --split random")
    return best[1]


def _with_guard(rows, cols, is_val, occupied, guard) -> list[str]:
    labels = [VAL if v else TRAIN for v in is_val]
    for i in np.flatnonzero(is_val):
        r, c = int(rows[i]), int(cols[i])
        for dr in range(-guard, guard + 1):
            for dc in range(-guard, guard + 1):
                j = occupied.get((r + dr, c + dc))
                if j is not None and labels[j] == TRAIN:
                    labels[j] = GUARD
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
