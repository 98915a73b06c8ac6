"""UTM zones and strips against independent computations: zone numbers at the zone lines and
the antimeridian, each pixel's centre (not its corner) tested against the line with pyproj,
and the margin a part's grid reaches past its zone line measured along the parallel with
pyproj.Geod."""
import numpy as np
import pytest
from affine import Affine
from pyproj import Geod, Transformer
from shapely.geometry import box

from gee_export.common.grid import region_from_lonlat
from gee_export.common.utm import (
    PART_MARGIN_M,
    Strip,
    StripMask,
    clip_to_strip,
    split_region,
    zone_crs,
    zone_number,
    zone_parts,
    zone_west,
)


@pytest.mark.parametrize("lon, zone", [
    (-180.0, 1), (-179.9999, 1), (-174.0001, 1), (-174.0, 2), (-0.0001, 30), (0.0, 31),
    (95.9999, 46), (96.0, 47), (101.9999, 47), (174.0, 60), (179.9999, 60), (180.0, 60)])
def test_zone_numbers_at_zone_lines_and_the_antimeridian(lon, zone):
    """Zone n covers [-180 + 6 (n - 1), -180 + 6 n); 180 E, the last meridian, is zone 60's."""
    assert zone_number(lon) == zone
    assert zone_west(zone) <= lon <= zone_west(zone) + 6


def test_boxes_at_the_antimeridian_are_zones_1_and_60():
    assert [z for z, _ in zone_parts((-180.0, 60.0, -173.0, 61.0))] == ["01N", "02N"]
    assert zone_parts((-180.0, 60.0, -173.0, 61.0))[0][1] == Strip(None, -174.0)
    assert [z for z, _ in zone_parts((175.0, -50.0, 180.0, -49.0))] == ["60S"]
    assert zone_crs("01N") == "EPSG:32601" and zone_crs("60S") == "EPSG:32760"
    assert zone_west(1) == -180.0 and zone_west(47) == 96.0


def test_a_strip_owns_its_west_line_not_its_east_one():
    lon = np.array([95.9999999, 96.0, 96.0000001])
    mask = StripMask("EPSG:32646", Affine.identity(), Strip(None, 96.0))
    assert mask._inside(lon).tolist() == [True, False, False]
    mask = StripMask("EPSG:32647", Affine.identity(), Strip(96.0, 102.0))
    assert mask._inside(lon).tolist() == [False, True, True]
    assert mask._inside(np.array([101.9999999, 102.0])).tolist() == [True, False]


def _grid_across_96e(crs: str, lat: float = 30.5, res: float = 10.0, size: int = 96):
    """A grid of `size` pixels a side on `crs` whose middle column straddles 96 E, offset by
    a third of a pixel so that no pixel edge lies on the line."""
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(96.0, lat)
    x0 = np.floor(x / res) * res - (size // 2) * res + res / 3
    return Affine(res, 0, x0, 0, -res, np.round(y / res) * res + size * res / 2), size


def _centres_west_of_96(crs: str, t: Affine, rows, cols) -> np.ndarray:
    """Each pixel's centre, placed by hand and turned into a longitude by pyproj."""
    r, c = np.meshgrid(np.asarray(rows, float), np.asarray(cols, float), indexing="ij")
    x = t.c + (c + 0.5) * t.a
    y = t.f + (r + 0.5) * t.e
    lon, _ = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(x, y)
    return lon < 96.0


@pytest.mark.parametrize("crs", ["EPSG:32646", "EPSG:32647"])
def test_the_strip_mask_tests_each_pixel_centre(crs):
    t, n = _grid_across_96e(crs)
    west = StripMask(crs, t, Strip(None, 96.0))
    east = StripMask(crs, t, Strip(96.0, None))
    truth = _centres_west_of_96(crs, t, range(n), range(n))
    assert 0 < truth.sum() < truth.size  # the line crosses the grid
    got = west.window(0, 0, n, n)
    assert np.array_equal(got, truth)
    assert np.array_equal(east.window(0, 0, n, n), ~truth)  # every pixel owned once
    # a pixel's corner and its centre fall on different sides somewhere: the test can tell
    corner = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(
        *(t * np.meshgrid(np.arange(n), np.arange(n))))[0] < 96.0
    assert not np.array_equal(corner, truth)
    # windows of the grid: across the line, wholly west, wholly east, one pixel wide
    for r0, c0, h, w in [(10, 30, 40, 37), (0, 0, n, 20), (0, n - 20, n, 20),
                         (5, n // 2 - 1, 1, 3), (50, 0, 46, n)]:
        assert np.array_equal(west.window(r0, c0, h, w), truth[r0:r0 + h, c0:c0 + w]), \
            (r0, c0, h, w)


def _reach_m(part, side: str, lat: float, geod: Geod) -> float:
    """How far along the parallel `lat` past 96 E (east for the western part, west for the
    eastern one) the part's grid reaches, to a metre: the grid's edge is a straight line of
    its projection, found by walking the parallel in steps of about a metre."""
    sign = 1 if side == "east" else -1
    lons = 96.0 + sign * np.linspace(0.0, 0.2, 20001)
    x, _ = Transformer.from_crs("EPSG:4326", part.crs, always_xy=True).transform(
        lons, np.full_like(lons, lat))
    w, _, e, _ = part.grid.bounds
    inside = x <= e if side == "east" else x >= w
    assert inside[0] and not inside[-1]
    last = lons[np.flatnonzero(inside)[-1]]
    return geod.inv(96.0, lat, last, lat)[2]


def test_the_margin_past_the_zone_line_is_the_part_margin_along_the_region():
    """Along every parallel of the region the grid reaches at least PART_MARGIN_M past the
    zone line, measured on the ellipsoid (the widening uses the box's highest latitude, where
    a degree is shortest); where it reaches least, no more than that plus what a lower
    latitude adds to a degree (1 %) and a 10 m pixel."""
    assert PART_MARGIN_M == 1000.0
    geod = Geod(ellps="WGS84")
    for bounds in [(95.5, 30.0, 96.5, 31.0), (95.8, 60.0, 96.3, 60.2),
                   (95.5, -45.0, 96.5, -44.0)]:
        parts = split_region(region_from_lonlat("x", bounds))
        assert [p.zone[:2] for p in parts] == ["46", "47"]
        for p, side in zip(parts, ("east", "west")):
            reach = [_reach_m(p, side, lat, geod)
                     for lat in np.linspace(bounds[1], bounds[3], 9)]
            assert PART_MARGIN_M - 1 <= min(reach) <= PART_MARGIN_M * 1.012 + 15, \
                (bounds, p.zone, reach)
            # the part's own lon/lat box, before the grid's 10 m snap: PART_MARGIN_M past
            # the line along its poleward edge, where a degree is shortest (a degree of the
            # ellipsoid is up to 0.3 % longer there than 111.32 km x cos(lat))
            w, s, e, n = p.lonlat_bounds
            poleward = max(s, n, key=abs)
            box_reach = geod.inv(96.0, poleward, e if side == "east" else w, poleward)[2]
            assert PART_MARGIN_M <= box_reach <= PART_MARGIN_M * 1.003, (bounds, box_reach)


def test_clip_to_strip_keeps_each_side_and_the_open_sides_reach_the_antimeridian():
    import geopandas as gpd

    frame = gpd.GeoDataFrame({"k": [1, 2, 3]}, geometry=[
        box(95.9, 30.0, 96.2, 30.1), box(-179.9, 30.0, -179.0, 30.1),
        box(179.0, 30.0, 179.9, 30.1)], crs="EPSG:4326")
    west = clip_to_strip(frame, Strip(None, 96.0))
    assert west["k"].tolist() == [1, 2]
    assert [g.area for g in west.geometry] == pytest.approx([0.1 * 0.1, 0.9 * 0.1])
    assert west.geometry[0].bounds == pytest.approx((95.9, 30.0, 96.0, 30.1))
    east = clip_to_strip(frame, Strip(96.0, None))
    assert east["k"].tolist() == [1, 3]
    assert [g.area for g in east.geometry] == pytest.approx([0.2 * 0.1, 0.9 * 0.1])
