"""The demo's rock relief: a crest across the scene, staggered valleys on its two sides and rough
ground, with the hillshade a sun in the south-east casts on it. Pure functions of map
coordinates and the seed, before ice and lakes."""
from __future__ import annotations

import math

import numpy as np

from gee_export.common.grid import ExportGrid

from .noise import fbm, smoothstep, value_noise


class Relief:
    """The rock surface of one scene (seed, grid and extent in metres)."""

    VALLEY_SPACING = 3400.0

    def __init__(self, seed: int, grid: ExportGrid, extent_m: float):
        self.seed, self.grid, self.extent_m = seed, grid, extent_m
        self.crest_v = self.extent_m / 2

    def local(self, x, y):
        return x - self.grid.x0, self.grid.y0 - y  # u east, v south, metres from the NW corner

    def crest(self, u):
        return self.crest_v + 0.035 * self.extent_m * np.sin(2 * math.pi * u / (0.45 * self.extent_m))

    def elevation(self, x: np.ndarray, y: np.ndarray, detail: bool = True) -> np.ndarray:
        """Rock surface elevation (m, EGM96) before ice and lakes."""
        u, v = self.local(x, y)
        d = np.clip(np.abs(v - self.crest(u)) / (self.extent_m / 2), 0, 1.2)
        base = 5350 - 2100 * d ** 1.15
        side = np.where(v > self.crest(u), 0.5, 0.0)  # valleys on the two sides are staggered
        phase = 2 * math.pi * (u / self.VALLEY_SPACING - side)
        ridges = 320 * (0.5 + 0.5 * np.cos(phase)) * smoothstep(0.04, 0.35, d)
        rough = 220 * fbm(x, y, 2500, self.seed, 2)
        if detail:  # the small scales matter for texture, not for shading
            rough = rough + 70 * fbm(x, y, 500, self.seed + 7, 2) + 18 * value_noise(
                x, y, 120, self.seed + 9)
        return base + ridges + rough

    def hillshade(self, x: np.ndarray, y: np.ndarray, h: float = 10.0) -> np.ndarray:
        """Illumination factor from a sun in the south-east at 50 degrees elevation."""
        dzdx = (self.elevation(x + h, y, False) - self.elevation(x - h, y, False)) / (2 * h)
        dzdy = (self.elevation(x, y + h, False) - self.elevation(x, y - h, False)) / (2 * h)
        az, el = math.radians(135), math.radians(50)
        sx, sy, sz = math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el)
        n = np.sqrt(dzdx ** 2 + dzdy ** 2 + 1)
        return np.clip((-dzdx * sx - dzdy * sy + sz) / n / sz, 0.25, 1.4)
