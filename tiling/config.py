"""What a tile set is cut with (`TileConfig`, checked against the scene) and where its tiles
lie on the export grid: the full windows aligned to the grid's origin, their ids and their
footprints in map coordinates."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

from gee_export.common.bands import LABEL_BACKGROUND, LABEL_GLACIER, LABEL_IGNORE
from gee_export.common.errors import InputError
from gee_export.common.grid import ExportGrid
from gee_export.common.outlines import MIN_GLACIER_AREA_KM2

from .split import check_val_fraction

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


def _footprint(grid: ExportGrid, row_off: int, col_off: int, size: int):
    from shapely.geometry import box

    x0, y0 = grid.x0 + col_off * grid.res, grid.y0 - row_off * grid.res
    return box(x0, y0 - size * grid.res, x0 + size * grid.res, y0)
