"""Glacier zones against a brute-force nearest-glacier search in numpy (every pixel centre
against every glacier pixel centre), block by block as evaluation reads them; the per-zone
counts against hand counts on an imperfect map: a data gap, ice outside every zone, ice on a
glacier under the size limit, ice exactly on the buffer's edge."""
import numpy as np
import pytest
import shapely
from affine import Affine

from training.zones import ZONE_BUFFER_M, ZoneCounts, ZoneRaster, blocks, ellipsoidal_ratios

RES = 10.0
H, W = 150, 170
T = Affine(RES, 0, 500_000.0, 0, -RES, 5_200_000.0)


def cell_box(r0, r1, c0, c1):
    """The polygon covering pixels rows r0..r1-1, cols c0..c1-1 (edges on pixel edges)."""
    x0, y0 = T * (c0, r1)
    x1, y1 = T * (c1, r0)
    return shapely.box(x0, y0, x1, y1)


# Three glaciers: A and B 60 px apart (their zones meet half-way), C alone far to the east.
GLACIERS = [cell_box(20, 40, 10, 30), cell_box(20, 50, 90, 100), cell_box(110, 120, 150, 160)]


def brute_force(geoms, buffer_px):
    """(reference, zone, distance in pixels) of every pixel of the grid, by hand: the pixels
    whose centre lies in each glacier, then for every pixel its distance to each glacier's
    nearest pixel centre; the zone is the nearest glacier within the buffer (-1 where two
    are as near: no single answer to compare with)."""
    rows, cols = np.mgrid[0:H, 0:W]
    cx, cy = T * (cols + 0.5, rows + 0.5)
    ref = np.zeros((H, W), np.int64)
    for k, g in enumerate(geoms, 1):
        ref[shapely.contains_xy(g, cx, cy)] = k
    d = np.full((len(geoms), H, W), np.inf)
    for k in range(len(geoms)):
        for r, c in zip(*np.nonzero(ref == k + 1)):
            d[k] = np.minimum(d[k], np.hypot(rows - r, cols - c))
    dist = d.min(0)
    zone = np.where(dist <= buffer_px, d.argmin(0) + 1, 0)
    tie = (d == dist).sum(0) > 1
    zone[tie & (dist <= buffer_px)] = -1
    return ref, zone, dist


@pytest.fixture(scope="module")
def truth():
    return brute_force(GLACIERS, ZONE_BUFFER_M / RES)


def test_zones_are_the_nearest_glacier_within_the_buffer(truth):
    ref, zone, dist = truth
    got_ref, got_zone = ZoneRaster(GLACIERS, T).window(0, 0, H, W)
    assert np.array_equal(got_ref, ref)
    known = zone >= 0
    assert np.array_equal(got_zone[known], zone[known])
    assert (zone == -1).sum() < 0.02 * zone.size  # ties are few: the comparison is real
    # the buffer's edge: a pixel centre exactly 500 m (50 px) from the nearest glacier pixel
    # centre is in the zone, one pixel farther is not
    edge = np.isclose(dist, 50.0) & known
    assert edge.sum() > 10 and (got_zone[edge] > 0).all()
    assert (got_zone[(dist > 50.0) & known] == 0).all()
    assert got_zone[39 + 50, 20] == 1 and got_zone[39 + 51, 20] == 0  # below A
    assert got_zone[115, 150 - 50] == 3 and got_zone[115, 150 - 51] == 0  # west of C


def test_zones_block_by_block_are_the_whole_grid_zones(truth):
    """Every window sees the glaciers within the buffer of its pixels, even when they lie
    just beyond the window: 50 px past its edge, or in the next block."""
    ref, zone, _ = truth
    zr = ZoneRaster(GLACIERS, T)
    whole = zr.window(0, 0, H, W)[1]
    for r, c, h, w in list(blocks(H, W, 32)) + [(30, 80, 1, 1), (30, 129, 2, 1)]:
        got_ref, got_zone = zr.window(r, c, h, w)
        assert np.array_equal(got_ref, ref[r:r + h, c:c + w]), (r, c)
        assert np.array_equal(got_zone, whole[r:r + h, c:c + w]), (r, c)
    # one-pixel windows exactly 50 px from a glacier (lying 50 px outside the window)
    assert zr.window(39 + 50, 20, 1, 1)[1].tolist() == [[1]]
    assert zr.window(115, 150 - 50, 1, 1)[1].tolist() == [[3]]
    assert sorted(set(blocks(H, W, 64))) == [(r, c, min(64, H - r), min(64, W - c))
                                             for r in (0, 64, 128) for c in (0, 64, 128)]


def test_zone_counts_by_hand_on_an_imperfect_map():
    """Glacier 1 (4 px) and 2 (3 px) with a small one (ignored) between them, a data gap
    across glacier 1, ice in no zone, and ice on the small glacier."""
    ref = np.array([[1, 1, 0, 0, 0, 0],
                    [1, 1, 0, 0, 2, 2],
                    [0, 0, 0, 0, 2, 0]])
    zone = np.array([[1, 1, 1, 2, 2, 2],
                     [1, 1, 1, 2, 2, 2],
                     [1, 1, 0, 0, 2, 2]])
    small = np.zeros(ref.shape, bool)
    small[0, 3] = True  # a glacier under the size limit, in glacier 2's zone
    valid = np.ones(ref.shape, bool)
    valid[0, :2] = False  # the gap: two of glacier 1's pixels
    valid[2, 3] = False  # and one pixel in no zone
    ice = np.array([[1, 1, 0, 1, 0, 0],
                    [1, 0, 1, 0, 1, 1],
                    [0, 0, 1, 1, 0, 1]], bool)
    c = ZoneCounts(2)
    c.add(ref, zone, valid, {"ice": ice}, ignore=small)
    assert c.reference.tolist() == [15 - 2 - 3, 2, 3]  # with data only; index 0: no glacier
    assert c.reference_all.tolist() == [18 - 4 - 3, 4, 3]
    # glacier 1's zone: ice at (1,0), (1,2) (the gap's ice is not counted); glacier 2's zone:
    # (1,4), (1,5), (2,5) (the small glacier's ice at (0,3) counts for nothing); no zone:
    # (2,2) ((2,3) is in the gap)
    assert c.predicted["ice"].tolist() == [1, 2, 3]
    assert c.outside["ice"] == 1
    # hits: ice with data inside each outline, (1,0) in 1, (1,4) and (1,5) in 2; the
    # small glacier's pixel is in no outline of the reference
    assert c.hits.tolist() == [4, 1, 2]
    assert c.valid == 18 - 3 - 1
    # a second block adds up
    c.add(ref, zone, np.ones(ref.shape, bool), {"ice": ice})
    assert c.predicted["ice"].tolist() == [1 + 2, 2 + 4, 3 + 4]
    assert c.outside["ice"] == 3 and c.valid == 14 + 18


def test_a_zone_of_a_zoned_region_counts_only_the_pixel_centres_of_its_strip():
    """A glacier across 96 E on zone 46's grid: reference and zone only where the pixel's
    centre (pyproj, by hand) lies west of the line, in every block."""
    from pyproj import Transformer

    from gee_export.common.utm import Strip, StripMask

    crs = "EPSG:32646"
    x, y = Transformer.from_crs("EPSG:4326", crs, always_xy=True).transform(96.0, 30.5)
    t = Affine(RES, 0, np.floor(x / RES) * RES - 600 + RES / 3, 0, -RES,
               np.round(y / RES) * RES + 500)
    n = 120
    glacier = shapely.box(t.c + 300, t.f - 900, t.c + 900, t.f - 300)  # 600 m across the line
    zr = ZoneRaster([glacier], t, owned=StripMask(crs, t, Strip(None, 96.0)))
    whole = ZoneRaster([glacier], t)
    rows, cols = np.mgrid[0:n, 0:n]
    lon, _ = Transformer.from_crs(crs, "EPSG:4326", always_xy=True).transform(
        t.c + (cols + 0.5) * RES, t.f - (rows + 0.5) * RES)
    west = lon < 96.0
    assert 0.2 < west.mean() < 0.8
    for r, c, h, w in blocks(n, n, 40):
        ref, zone = zr.window(r, c, h, w)
        all_ref, all_zone = whole.window(r, c, h, w)
        own = west[r:r + h, c:c + w]
        assert np.array_equal(ref, np.where(own, all_ref, 0))
        assert np.array_equal(zone, np.where(own, all_zone, 0))
        valid = np.ones((h, w), bool)
        valid[0] = False
        assert np.array_equal(zr.counted(r, c, h, w, valid), valid & own)
    ref = zr.window(0, 0, n, n)[0]
    assert 0 < ref.sum() < whole.window(0, 0, n, n)[0].sum()  # the line cuts the glacier


def test_ellipsoidal_ratios_weigh_the_whole_by_area():
    import geopandas as gpd

    from gee_export.common.outlines import Outlines

    geoms = [cell_box(0, 100, 0, 100), cell_box(0, 10, 100, 110)]  # 1 km^2 and 0.01 km^2
    frame = gpd.GeoDataFrame({"glacier_id": ["a", "b"], "area_km2": [1.01, 0.0098]},
                             geometry=geoms, crs="EPSG:32632")
    ratios = ellipsoidal_ratios(Outlines(frame, None, None, 0))
    assert ratios[1:] == pytest.approx([1.01, 0.98])
    assert ratios[0] == pytest.approx((1.01 + 0.0098) / 1.01)  # not the mean of the two
