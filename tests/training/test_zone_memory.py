"""Glacier zones (training/zones.py): what a window's zones are does not depend on how much
memory they take, and a buffer wider than the outlines reach costs no more than that reach
(issue 31, item 3: --zone-buffer 1e9 was a MemoryError, 30 km on a 5 km scene 2 GB)."""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from affine import Affine
from shapely.geometry import Polygon, box

from training.zones import ZoneRaster

T = Affine(10, 0, 500_000, 0, -10, 4_200_000)  # 10 m pixels, north up


def _outlines() -> list:
    """Glaciers inside the scene, one across its edge and one outside it (as a reference
    that reaches past a prediction holds)."""
    x, y = T.c, T.f
    return [box(x + 300, y - 900, x + 900, y - 300),
            Polygon([(x + 1200, y - 400), (x + 2000, y - 500), (x + 1500, y - 1500)]),
            box(x - 400, y - 2400, x + 200, y - 1800),  # across the western edge
            box(x + 3000, y - 3200, x + 3500, y - 2700)]  # east of a 256 px window


def _unbounded(raster: ZoneRaster) -> ZoneRaster:
    """The same zones with the window padded by the whole margin, as it was before."""
    raster.reach = (-10**9, -10**9, 10**9, 10**9)
    return raster


@pytest.mark.parametrize("buffer_m", [0.0, 50.0, 500.0, 2_000.0, 6_000.0])
@pytest.mark.parametrize("window", [(0, 0, 256, 256), (100, 180, 64, 200), (0, 300, 40, 40)])
def test_zones_are_those_of_the_whole_margin(buffer_m, window):
    got = ZoneRaster(_outlines(), T, buffer_m).window(*window)
    want = _unbounded(ZoneRaster(_outlines(), T, buffer_m)).window(*window)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)


def test_a_buffer_past_every_outline_costs_what_their_reach_costs():
    far = ZoneRaster(_outlines(), T, 6_000.0).window(0, 0, 256, 256)
    tracemalloc.start()
    huge = ZoneRaster(_outlines(), T, 1e9).window(0, 0, 256, 256)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 64 * 2**20, f"{peak / 2**20:.0f} MiB"
    for g, w in zip(huge, far):  # every pixel in reach of the nearest glacier either way
        np.testing.assert_array_equal(g, w)
    assert (huge[1] > 0).all()


def test_no_outline_no_zone():
    ref, zone = ZoneRaster([], T, 1e9).window(0, 0, 32, 32)
    assert not ref.any() and not zone.any()
