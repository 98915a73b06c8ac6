"""The demo's weather and seasons: seasonal snow patches (and, in LATE_SNOW_YEAR, snow that
lingers beside a few glaciers), clouds and thin cirrus, per year and date, as pure functions
of map coordinates and the seed; and in GAP_YEAR, one cloud that stays over part of a glacier."""
from __future__ import annotations

from functools import cached_property
from typing import Callable

import numpy as np

from .glaciers import Glacier
from .noise import fbm, smoothstep

# Hard cases for measuring change: in GAP_YEAR a cloud stays over part of one glacier on every
# date, so that year sees it only in part; in LATE_SNOW_YEAR seasonal snow lingers beside a
# few glaciers all summer, as after a cold spring.
GAP_YEAR = 2019
LATE_SNOW_YEAR = 2020
LATE_SNOW_REACH_M = 300.0  # how far beyond a glacier's head the lingering snow reaches


class Weather:
    """The weather of one scene: its seed, extent (m), the inventory's glaciers and a function
    giving their polygons of INVENTORY_YEAR (drawn only when the gap cloud needs them)."""

    def __init__(self, seed: int, extent_m: float, glaciers: tuple[Glacier, ...],
                 inventory_polygons: Callable[[], list]):
        self.seed, self.extent_m, self.glaciers = seed, extent_m, glaciers
        self.inventory_polygons = inventory_polygons

    def seasonal_snow(self, x: np.ndarray, y: np.ndarray, elevation: np.ndarray,
                      glacier: np.ndarray, year: int, date_i: int) -> np.ndarray:
        """Snow patches outside glaciers; they shrink from July to September, except beside
        the heads of a few glaciers in LATE_SNOW_YEAR."""
        f = fbm(x, y, 900, self.seed + 31 + year, 3) + (elevation - 4300) / 1400
        return ((f > 0.68 + 0.1 * date_i) | self.late_snow(x, y, year)) & ~glacier

    @cached_property
    def late_snow_glaciers(self) -> tuple[str, ...]:
        """The glaciers with lingering snow beside their heads in LATE_SNOW_YEAR: two valley
        glaciers and a cirque."""
        valley = [g for g in self.glaciers if len(g.discs) > 1]
        cirques = [g for g in self.glaciers if len(g.discs) == 1 and g.discs[0][2] > 150]
        picks = valley[1:2] + valley[-1:] + cirques[:1]  # small scenes have fewer
        return tuple(dict.fromkeys(g.gid for g in picks))

    def late_snow(self, x: np.ndarray, y: np.ndarray, year: int) -> np.ndarray:
        out = np.zeros(np.shape(x), bool)
        if year != LATE_SNOW_YEAR:
            return out
        for g in self.glaciers:
            if g.gid in self.late_snow_glaciers:
                hx, hy, hr = g.discs[0]
                out |= (x - hx) ** 2 + (y - hy) ** 2 < (hr + LATE_SNOW_REACH_M) ** 2
        return out

    @cached_property
    def cloud_gap(self) -> tuple[str, float, float, float]:
        """(glacier id, x, y, radius) of the cloud that covers part of one glacier on every
        date of GAP_YEAR: the second largest valley glacier (the largest when it is alone),
        across the middle of its tongue."""
        valley = sorted((g for g in self.glaciers if len(g.discs) > 1),
                        key=lambda g: -self.inventory_polygons()[
                            self.glaciers.index(g)].area)
        g = valley[min(1, len(valley) - 1)]  # small scenes may have one valley glacier
        x, y, r = g.discs[len(g.discs) // 2]
        return g.gid, x, y, min(1.6 * r, 0.08 * self.extent_m)  # 2 % of the scene at most

    def cloud(self, x: np.ndarray, y: np.ndarray, year: int, date_i: int) -> np.ndarray:
        """Cloud opacity in [0, 1]: a few clouds in July (under the paper's 5 % scene limit),
        none in August, many in September (a scene the limit rejects); in GAP_YEAR, one
        cloud over part of a glacier on every date."""
        op = np.zeros(np.shape(x))
        if date_i != 1:
            f = fbm(x, y, 2200, self.seed + 1000 * year + 17 * date_i, 3)
            lo = 0.47 if date_i == 0 else 0.25
            op = smoothstep(lo, lo + 0.15, f)
        if year == GAP_YEAR:
            _, cx, cy, r = self.cloud_gap
            op = np.maximum(op, smoothstep(r, 0.8 * r, np.hypot(x - cx, y - cy)))
        return op

    def cirrus(self, x: np.ndarray, y: np.ndarray, year: int, date_i: int) -> np.ndarray:
        """Thin cirrus (opacity up to 0.22) in July: SCL flags only its thickest core."""
        if date_i != 0:
            return np.zeros(np.shape(x))
        return 0.22 * smoothstep(0.25, 0.75, fbm(x, y, 3000, self.seed + 2000 * year + 5, 2))
