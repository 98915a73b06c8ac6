import hashlib

import numpy as np
import pytest
import rasterio

from gee_export.demo.scene import ELA, DemoScene, demo_outlines_frame
from gee_export.demo.sensors import render_s1, render_s2
from gee_export.demo.sources import write_demo_sources


def _digest(d):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(d.glob("*.tif"))}


def test_same_seed_same_bytes(tmp_path):
    a = write_demo_sources(tmp_path / "a", 2018, size=512)
    b = write_demo_sources(tmp_path / "b", 2018, size=512)
    assert _digest(a) == _digest(b) and len(_digest(a)) == 13
    c = write_demo_sources(tmp_path / "c", 2018, seed=7, size=512)
    assert _digest(c) != _digest(a)


@pytest.fixture(scope="module")
def scene_points():
    scene = DemoScene()
    g = scene.grid
    cols, rows = np.meshgrid(np.arange(0, g.width, 4) + 0.5, np.arange(0, g.height, 4) + 0.5)
    xs, ys = g.transform * (cols, rows)
    return scene, xs, ys, scene.surface(xs, ys)


def test_scene_has_glaciers_debris_lakes_and_relief(scene_points):
    scene, xs, ys, s = scene_points
    outlines = demo_outlines_frame(scene)
    assert 30 < outlines.area_km2.sum() < 80  # tens of km^2 of ice
    assert (outlines.area_km2 < 0.05).any()  # some fall under the paper's 0.05 km^2 cut
    assert any(len(list(p.interiors)) for p in outlines.geometry if p.geom_type == "Polygon")
    assert s["debris"].any() and s["lake"].any()
    e = s["elevation"]
    assert e.max() - e.min() > 1500
    assert np.median(e[s["glacier"]]) > np.median(e[~s["glacier"]])  # ice sits high


def test_seasonal_snow_is_optically_like_glacier_but_not_in_radar(scene_points):
    scene, xs, ys, s = scene_points
    snow = scene.seasonal_snow(xs, ys, s["elevation"], s["glacier"], 2018, 1)
    assert snow.mean() > 0.01 and not (snow & s["glacier"]).any()
    refl = render_s2(scene, xs, ys, 2018, 1).reflectance
    ndsi = (refl[1] - refl[4]) / (refl[1] + refl[4])
    high_ice = s["glacier"] & ~s["debris"] & (s["elevation"] > ELA + 200)
    assert np.median(ndsi[snow]) > 0.6 and np.median(ndsi[high_ice]) > 0.6
    vv = render_s1(scene, xs, ys, 2018, 0)[0]
    assert np.median(vv[snow]) - np.median(vv[s["glacier"]]) > 5  # dB


def test_debris_tongue_looks_like_rock_optically(scene_points):
    scene, xs, ys, s = scene_points
    refl = render_s2(scene, xs, ys, 2018, 1).reflectance
    rock = ~s["glacier"] & ~s["lake"] & (s["elevation"] > 4000)
    ndsi = (refl[1] - refl[4]) / (refl[1] + refl[4])
    assert np.median(ndsi[s["debris"]]) < 0  # not snow-like
    assert abs(np.median(refl[3][s["debris"]]) - np.median(refl[3][rock])) < 0.08


def test_clouds_in_some_dates_only(scene_points):
    scene, xs, ys, _ = scene_points
    cover = [float((scene.cloud(xs, ys, 2018, i) > 0.3).mean()) for i in range(3)]
    assert cover[1] == 0 and cover[0] > 0 and cover[2] > cover[0]


def test_sources_are_georeferenced_with_band_names(tmp_path):
    d = write_demo_sources(tmp_path / "s", 2019, size=512)
    with rasterio.open(d / "S2_2019-07-12_B20m.tif") as src:
        assert src.descriptions == ("B11", "SCL") and src.res == (20.0, 20.0)
    with rasterio.open(d / "DEM_SRTM.tif") as src:
        assert src.crs.to_epsg() == 4326


def test_glaciers_change_by_known_amounts_between_years():
    """Tongues retreat, margins thin, the small glaciers vanish, one glacier advances; the
    outlines stay those of the inventory year."""
    from gee_export.demo.scene import INVENTORY_YEAR

    scene = DemoScene()
    a18, a20 = scene.glacier_area_km2(2018), scene.glacier_area_km2(2020)
    assert set(a18) == set(a20) == set(demo_outlines_frame(scene)["glac_id"])
    change = {g: a20[g] - a18[g] for g in a18}
    grew = [g for g, d in change.items() if d > 0]
    gone = [g for g in a18 if a20[g] == 0]
    assert len(grew) == 1 and a18[grew[0]] > 1 and len(gone) >= 1
    assert -0.10 < sum(change.values()) / sum(a18.values()) < -0.02
    shrinking = [g for g, d in change.items() if d < 0]
    assert len(shrinking) == len(a18) - 1
    # The truth is the area of the year's outlines, on the ellipsoid.
    poly18 = scene.glacier_polygons(INVENTORY_YEAR)
    assert sum(p.area for p in poly18) / 1e6 == pytest.approx(sum(a18.values()), rel=0.01)


def test_sources_record_the_years_truth_and_ship_the_inventory(tmp_path):
    import geopandas as gpd

    from gee_export.common.layout import read_manifest

    d = write_demo_sources(tmp_path / "s", 2020, size=512)
    truth = read_manifest(d / "sources.json", "sources")["synthetic_truth"]
    assert truth["glacier_area_km2"] == DemoScene(size=512).glacier_area_km2(2020)
    shipped = gpd.read_file(d / "outlines.gpkg")
    inventory = demo_outlines_frame(DemoScene(size=512))
    assert sorted(shipped["glac_id"]) == sorted(inventory["glac_id"])  # 2018's, not 2020's


def test_cloud_score_and_scl_see_different_clouds():
    """Thin cirrus: SCL flags only its core, Cloud Score+ all of it; and on the July date,
    Cloud Score+ calls some bright glacier snow cloud (what the snow rule is for)."""
    scene = DemoScene()
    g = scene.grid
    cols, rows = np.meshgrid(np.arange(0, g.width, 4) + 0.5, np.arange(0, g.height, 4) + 0.5)
    xs, ys = g.transform * (cols, rows)
    july = render_s2(scene, xs, ys, 2018, 0)
    cirrus = scene.cirrus(xs, ys, 2018, 0)
    thin = (cirrus > 0.12) & (cirrus < 0.2)
    assert thin.mean() > 0.01
    assert (july.scl[thin] != 10).all() and (july.cs_cdf[thin] < 0.5).mean() > 0.5
    glacier = scene.surface(xs, ys, 2018)["glacier"]
    flagged = glacier & (july.contamination == 0) & (july.cs_cdf < 0.5)
    assert flagged.sum() > 100


def _kink_m(scene, polygons, offset_m: float = 0.0, h: float = 10.0) -> float:
    """Mean |second difference| of the DEM surface across outlines (moved outward by
    offset_m), from points every 20 m: a step, a dome's edge or a change of roughness at
    the outline makes it large; smooth terrain gives a fraction of a metre."""
    import shapely

    from gee_export.demo.scene import DEM_YEAR

    out = []
    for p in polygons:
        if p.is_empty:
            continue
        ring = shapely.buffer(p, offset_m).exterior if offset_m else p.exterior
        xy = np.array([[q.x, q.y] for q in (ring.interpolate(i * 20.0)
                                              for i in range(int(ring.length // 20)))])
        t = np.roll(xy, -1, 0) - np.roll(xy, 1, 0)
        normal = np.stack([t[:, 1], -t[:, 0]], 1) / (np.hypot(*t.T)[:, None] + 1e-9)
        e = [scene.surface(*(xy + k * h * normal).T, DEM_YEAR)["elevation"] for k in (-1, 0, 1)]
        out.append(np.abs(e[0] + e[2] - 2 * e[1]))
    return float(np.mean(np.concatenate(out)))


def test_the_dem_does_not_know_any_imagery_years_outlines():
    """The DEMs date from DEM_YEAR, when the glaciers were larger: across the outlines of
    every imagery year the surface is as smooth as 30-60 m beside them, while the outlines
    of the DEM's own year do show (the measure sees a glacier edge where there is one)."""
    from gee_export.demo.scene import DEM_YEAR

    scene = DemoScene()
    for year in (2018, 2019, 2020):
        polys = scene.glacier_polygons(year)
        beside = np.median([_kink_m(scene, polys, d) for d in (30, 60)])
        assert _kink_m(scene, polys) < 2 * beside, year
    own = scene.glacier_polygons(DEM_YEAR)
    assert _kink_m(scene, own) > 5 * _kink_m(scene, scene.glacier_polygons(2018))
    a_dem, a18 = (sum(scene.glacier_area_km2(y).values()) for y in (DEM_YEAR, 2018))
    assert 1.1 < a_dem / a18 < 1.5  # larger then, at the slow rates of the past


def test_each_year_ships_its_own_true_outlines(tmp_path):
    import geopandas as gpd

    from gee_export.common.layout import read_manifest

    d = write_demo_sources(tmp_path / "s", 2020, size=512)
    truth = gpd.read_file(d / "truth_outlines.gpkg")
    areas = read_manifest(d / "sources.json", "sources")["synthetic_truth"]["glacier_area_km2"]
    assert truth["synthetic"].all() and (truth["year"] == 2020).all()
    # The same glaciers as the recorded truth (vanished ones have no outline), same areas.
    assert set(truth["glac_id"]) == {g for g, a in areas.items() if a > 0}
    for gid, a in zip(truth["glac_id"], truth["area_km2"]):
        assert a == areas[gid]
    from gee_export.common.outlines import ellipsoidal_area_km2

    measured = ellipsoidal_area_km2(list(truth.to_crs("EPSG:32647").geometry), "EPSG:32647")
    np.testing.assert_allclose(measured, truth["area_km2"], rtol=2e-3)


def test_hard_cases_for_change_a_cloud_gap_and_late_snow(scene_points):
    """GAP_YEAR: one glacier is under thick cloud on every date over more than a tenth of it
    (so that year cannot see it whole); LATE_SNOW_YEAR: snow lingers into September beside
    the heads of a few glaciers, and not in other years."""
    import shapely

    from gee_export.demo.scene import GAP_YEAR, LATE_SNOW_YEAR

    scene, xs, ys, _ = scene_points
    gid = scene.cloud_gap[0]
    k = [g.gid for g in scene.glaciers].index(gid)
    for year in (2018, GAP_YEAR, 2020):
        on = shapely.contains_xy(scene.glacier_polygons(year)[k], xs, ys)
        hidden = np.all([scene.cloud(xs, ys, year, d) > 0.6 for d in range(3)], axis=0)
        share = (hidden & on).sum() / on.sum()
        assert (share > 0.1) if year == GAP_YEAR else (share == 0), (year, share)
    heads = np.zeros(xs.shape, bool)
    for g in scene.glaciers:
        if g.gid in scene.late_snow_glaciers:
            hx, hy, hr = g.discs[0]
            heads |= np.hypot(xs - hx, ys - hy) < hr + 250
    for year in (2019, LATE_SNOW_YEAR):
        s = scene.surface(xs, ys, year)
        sept = scene.seasonal_snow(xs, ys, s["elevation"], s["glacier"], year, 2)
        share = (sept & heads & ~s["glacier"]).sum() / (heads & ~s["glacier"]).sum()
        assert (share > 0.9) if year == LATE_SNOW_YEAR else (share < 0.5), (year, share)


def test_demo_sources_are_reused_resumed_or_refused_by_the_stage_contract(tmp_path):
    import json

    from gee_export.common.errors import StateError
    from gee_export.common.layout import base_manifest
    from gee_export.demo.scene import DEMO_SEED
    from gee_export.demo.sources import _source_params, demo_sources_ready

    assert not demo_sources_ready(tmp_path, 2018, size=512)  # nothing there: make them
    m = base_manifest("sources", parameters=_source_params(2018, DEMO_SEED, 512))
    (tmp_path / "sources.json").write_text(json.dumps(m))
    assert not demo_sources_ready(tmp_path, 2018, size=512)  # unfinished: make them again
    (tmp_path / "sources.json").write_text(json.dumps({**m, "complete": True}))
    assert demo_sources_ready(tmp_path, 2018, size=512)
    with pytest.raises(StateError, match=r"made with other options \(--size: 512 -> 1024\); "
                                         r"remove it"):
        demo_sources_ready(tmp_path, 2018, size=1024)
