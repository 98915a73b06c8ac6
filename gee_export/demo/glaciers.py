"""The demo's glaciers: each a chain of discs from head to tongue, placed in the valleys and on
the ridges of the relief from the seed, with a known change every year (fast after the
inventory, slow before it); their outlines as an inventory draws them, their debris cover and
the ice they add to the surface."""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from .relief import Relief

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

# The demo's inventory year: the outlines shipped with every year's sources are this year's,
# as a real inventory's would be; the glaciers of other years differ by known amounts.
INVENTORY_YEAR = 2018
# Before the inventory, glaciers shrink at rates of real Qilian glaciers (about 0.5-1 % of
# their area a year since 2000), not at the demo's fast rates after it: every radius
# was larger by PAST_SHRINK_PER_YEAR of itself plus PAST_MARGIN_M_PER_YEAR each year back,
# and tongues reached PAST_FRONT_M_PER_YEAR further down-valley.
PAST_SHRINK_PER_YEAR = 0.003
PAST_MARGIN_M_PER_YEAR = 4.0
PAST_FRONT_M_PER_YEAR = 25.0


@dataclass(frozen=True)
class Glacier:
    """A glacier as a chain of discs (centre x, y, radius) from head to tongue, optionally
    with a nunatak hole, and how it changes each year after INVENTORY_YEAR."""
    gid: str
    discs: tuple[tuple[float, float, float], ...]
    thickness: float
    hole: tuple[float, float, float] | None = None
    debris_from: float | None = None  # fraction of the disc chain from which debris covers it
    front_m_per_year: float = 0.0  # tongue advance (+) or retreat (-) along the chain
    shrink_per_year: float = 0.0  # fraction of every radius lost per year (thinning margins)

    def at(self, year: int) -> "Glacier | None":
        """This glacier's outline in `year` (None once it has vanished): after the inventory
        at its own (fast) rates, before it at the slow rates of the past."""
        dt = year - INVENTORY_YEAR
        if dt < 0:
            back = -dt
            front = PAST_FRONT_M_PER_YEAR * back if self.front_m_per_year < 0 else 0.0
            discs = tuple((x, y, r * (1 + PAST_SHRINK_PER_YEAR * back)
                           + PAST_MARGIN_M_PER_YEAR * back)
                          for x, y, r in _chain_to(self.discs, front))
            return replace(self, discs=discs)
        scale = 1.0 - self.shrink_per_year * dt
        if scale <= 0.02:
            return None
        discs = _chain_to(self.discs, self.front_m_per_year * dt)
        return replace(self, discs=tuple((x, y, r * scale) for x, y, r in discs))


def _chain_to(discs, change_m: float):
    """The disc chain with its tongue moved by change_m along the flow (cut or extended)."""
    if len(discs) < 2 or change_m == 0:
        return discs
    pts = np.array(discs)
    seg = np.hypot(*np.diff(pts[:, :2], axis=0).T)
    dist = np.concatenate([[0.0], np.cumsum(seg)])
    front = max(1.0, dist[-1] + change_m)
    if front <= dist[-1]:
        i = int(np.searchsorted(dist, front))  # dist[i - 1] < front <= dist[i]
        t = (front - dist[i - 1]) / seg[i - 1]
        last = pts[i - 1] + t * (pts[i] - pts[i - 1])
        return tuple(map(tuple, pts[:i])) + (tuple(last),)
    direction = (pts[-1, :2] - pts[-2, :2]) / seg[-1]
    steps = np.arange(100.0, front - dist[-1] + 1e-9, 100.0)
    ext = [(*(pts[-1, :2] + k * direction), pts[-1, 2]) for k in steps]
    return tuple(map(tuple, pts)) + tuple(ext)


def inventory_glaciers(seed: int, relief: Relief) -> tuple[Glacier, ...]:
    """The glaciers as the inventory of INVENTORY_YEAR has them, with their change rates."""
    rng = np.random.default_rng(seed)
    out, n = [], 0
    L, E = relief.VALLEY_SPACING, relief.extent_m
    for side, sign in ((0.0, -1), (0.5, 1)):  # north side flows to -v, south side to +v
        k = 0
        while (uc := (k + 0.5 + side) * L) < E - 600:
            k += 1
            if uc < 600 or rng.random() < 0.15:
                continue
            length = rng.uniform(0.16, 0.30) * E
            r_head = rng.uniform(550, 850)
            v_head = float(relief.crest(np.array(uc))) + sign * 0.4 * r_head
            m = 24
            discs = []
            for i in range(m):
                t = i / (m - 1)
                discs.append((relief.grid.x0 + uc + 120 * math.sin(3 * t + k),
                              relief.grid.y0 - (v_head + sign * t * length),
                              r_head * (1 - t) + 130 * t))
            n += 1
            out.append(Glacier(f"DEMO{n:03d}", tuple(discs), rng.uniform(50, 90)))
    # The longest valley glacier gets a debris-covered tongue and a nunatak.
    longest = max(range(len(out)), key=lambda i: _chain_length(out[i].discs))
    g = out[longest]
    cx, cy, cr = g.discs[4]
    out[longest] = replace(g, hole=(cx, cy, 0.35 * cr), debris_from=0.62)
    # Cirque glaciers on inter-valley ridges near the crest, two of them below 0.05 km^2.
    for j, (fu, r) in enumerate(((0.18, 330), (0.52, 380), (0.84, 300), (0.33, 110),
                                 (0.69, 100))):
        u = fu * E
        v = float(relief.crest(np.array(u))) + (260 if j % 2 else -260)
        n += 1
        out.append(Glacier(f"DEMO{n:03d}", ((relief.grid.x0 + u, relief.grid.y0 - v, r),), 30.0))
    return _with_change(out, seed)


def _with_change(glaciers: list[Glacier], seed: int) -> tuple[Glacier, ...]:
    """Seeded, known change per year: valley tongues retreat and margins thin, the second
    valley glacier advances, cirques shrink and the two smallest vanish by 2020. Far
    faster than real Qilian glaciers, so that two years show at 10 m."""
    rng = np.random.default_rng(seed + 555)
    valley = [i for i, g in enumerate(glaciers) if len(g.discs) > 1]
    out = []
    for i, g in enumerate(glaciers):
        if i in valley:
            change = dict(front_m_per_year=rng.uniform(-150, -60),
                          shrink_per_year=rng.uniform(0.008, 0.016))
            if len(valley) > 1 and i == valley[1]:
                change = dict(front_m_per_year=90.0, shrink_per_year=0.0)
        elif g.discs[0][2] < 150:
            change = dict(shrink_per_year=0.5)  # gone two years after the inventory
        else:
            change = dict(shrink_per_year=rng.uniform(0.02, 0.05))
        out.append(replace(g, **change))
    return tuple(out)


def inventory_polygons(glaciers: tuple[Glacier | None, ...]) -> list:
    """Polygons of disc-chain glaciers that do not overlap: where two meet, the first keeps
    the ice (as in an inventory). A vanished glacier (None) gets an empty polygon."""
    import shapely
    from shapely.geometry import Point, Polygon

    polys, taken = [], None
    for g in glaciers:
        if g is None:
            polys.append(Polygon())
            continue
        shape = shapely.union_all([Point(x, y).buffer(r, 24) for x, y, r in g.discs])
        if g.hole:
            shape = shape.difference(Point(g.hole[0], g.hole[1]).buffer(g.hole[2], 24))
        shape = shapely.simplify(shape, 2.0)
        if taken is not None:
            shape = shape.difference(taken)
        taken = shape if taken is None else shapely.union(taken, shape)
        polys.append(shape)
    return polys


def debris_polygon(glaciers: tuple[Glacier, ...], polygons: list) -> BaseGeometry:
    """The debris cover in one year: the zone where the inventory's `glaciers` have it, cut to
    their `polygons` of that year."""
    import shapely
    from shapely.geometry import Point

    parts = []
    for g, poly in zip(glaciers, polygons):
        if g.debris_from is not None:  # the debris zone stays where it was
            i0 = int(g.debris_from * len(g.discs))
            zone = shapely.union_all([Point(x, y).buffer(r * 1.3, 24)
                                      for x, y, r in g.discs[i0:]])
            parts.append(poly.intersection(zone))
    return shapely.union_all(parts)


def ice_depth(glaciers: tuple[Glacier | None, ...], x: np.ndarray, y: np.ndarray
              ) -> tuple[np.ndarray, np.ndarray]:
    """How far inside `glaciers` (of one year) each point is (1 - (d/r)^2 of the deepest
    disc, 0 outside) and their ice thickness there: a dome over each disc chain."""
    ice, depth = np.zeros(np.shape(x)), np.zeros(np.shape(x))
    for g in glaciers:
        if g is None:
            continue
        xs, ys, rs = np.array(g.discs).T
        gx0, gx1 = (xs - rs).min(), (xs + rs).max()
        gy0, gy1 = (ys - rs).min(), (ys + rs).max()
        near = (x >= gx0) & (x <= gx1) & (y >= gy0) & (y <= gy1)
        if not near.any():
            continue
        px, py = x[near], y[near]
        inside = np.zeros(px.shape)
        for cx, cy, r in g.discs:
            inside = np.maximum(inside, 1 - ((px - cx) ** 2 + (py - cy) ** 2) / r ** 2)
        inside = np.clip(inside, 0, 1)
        depth[near] = np.maximum(depth[near], inside)
        ice[near] = np.maximum(ice[near], g.thickness * np.sqrt(inside))
    return depth, ice


def _chain_length(discs):
    return sum(math.hypot(b[0] - a[0], b[1] - a[1]) for a, b in zip(discs, discs[1:]))
