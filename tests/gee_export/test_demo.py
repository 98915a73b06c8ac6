import hashlib

import numpy as np
import pytest
import rasterio

from gee_export.demo import ELA, DemoScene, demo_outlines_frame, write_demo_sources


def _digest(d):
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest()
            for f in sorted(d.glob("*.tif"))}


def test_same_seed_same_bytes(tmp_path):
    a = write_demo_sources(tmp_path / "a", 2018, size=512)
    b = write_demo_sources(tmp_path / "b", 2018, size=512)
    assert _digest(a) == _digest(b) and len(_digest(a)) == 10
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
    refl, scl = scene.s2(xs, ys, 2018, 1)
    ndsi = (refl[1] - refl[4]) / (refl[1] + refl[4])
    high_ice = s["glacier"] & ~s["debris"] & (s["elevation"] > ELA + 200)
    assert np.median(ndsi[snow]) > 0.6 and np.median(ndsi[high_ice]) > 0.6
    vv = scene.s1(xs, ys, 2018, 0)[0]
    assert np.median(vv[snow]) - np.median(vv[s["glacier"]]) > 5  # dB


def test_debris_tongue_looks_like_rock_optically(scene_points):
    scene, xs, ys, s = scene_points
    refl, _ = scene.s2(xs, ys, 2018, 1)
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
