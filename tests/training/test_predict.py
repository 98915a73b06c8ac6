"""Whole-scene prediction: seamless blending, streaming, outlines, resume, and evaluation
against hand-computed cases."""
from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from shapely.geometry import Polygon, box

from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import GlacierError
from training.evaluation import boundary_distances, score_scene
from training.predict import (
    PredictConfig,
    blend_weights,
    clean_polygons,
    normalization_warnings,
    polygonize_blocks,
    predict,
    stream_probability,
    window_starts,
)

CRS = "EPSG:32647"
T = Affine(10, 0, 400_000, 0, -10, 4_300_000)


def _write(path, data, transform=T, names=None):
    data = np.asarray(data, np.float32)
    if data.ndim == 2:
        data = data[None]
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1],
                       count=data.shape[0], dtype="float32", crs=CRS, transform=transform,
                       nodata=np.nan) as f:
        f.write(data)
        for i, n in enumerate(names or [], 1):
            f.set_band_description(i, n)
    return path


@pytest.fixture
def stack(tmp_path):
    """A 250 x 300 px, 11-band stack with a nodata corner: sizes no window divides."""
    rng = np.random.default_rng(0)
    data = rng.random((11, 250, 300), dtype=np.float32)
    data[:, :40, :50] = np.nan
    return _write(tmp_path / "stack.tif", data, names=BAND_NAMES), data


def _stream(stack_path, tmp_path, model_fn, window, overlap, band_width=4096, batch=3,
            standardize=lambda x: np.nan_to_num(x - 0.5)):
    out = tmp_path / f"p{window}_{overlap}_{band_width}.tif"
    with rasterio.open(stack_path) as src:
        prof = dict(driver="GTiff", width=src.width, height=src.height, count=1,
                    dtype="float32", crs=src.crs, transform=src.transform, nodata=np.nan)
        with rasterio.open(out, "w", **prof) as dst:
            stream_probability(src, dst, model_fn, [1, 2, 3], standardize, window, overlap,
                               batch, band_width)
    with rasterio.open(out) as f:
        return f.read(1), f.transform, f.crs


def test_window_starts_cover_the_scene_flush_with_its_end():
    for n, w, s in [(300, 64, 48), (250, 128, 128), (64, 64, 32), (40, 64, 48), (1000, 96, 56)]:
        starts = window_starts(n, w, s)
        covered = np.zeros(max(n, w), bool)
        for a in starts:
            covered[a:a + w] = True
        assert covered[:n].all() and starts[0] == 0
        assert starts[-1] == max(0, n - w)


def test_constant_model_gives_a_constant_mosaic(stack, tmp_path):
    path, data = stack
    p, _, _ = _stream(path, tmp_path, lambda x: np.full((len(x),) + x.shape[2:], 0.7,
                                                         np.float32), 64, 16)
    valid = np.isfinite(data).all(axis=0)
    np.testing.assert_allclose(p[valid], 0.7, rtol=0, atol=1e-6)
    assert np.isnan(p[~valid]).all()


def test_per_pixel_model_is_independent_of_window_overlap_and_band(stack, tmp_path):
    """A model that returns a function of one input band must come back unchanged, whatever
    the window, the overlap and the column band width: no seam anywhere."""
    path, data = stack

    def per_pixel(x):
        return 1 / (1 + np.exp(-4 * x[:, 1]))

    want = 1 / (1 + np.exp(-4 * (data[1] - 0.5)))
    want[~np.isfinite(data).all(axis=0)] = np.nan
    for window, overlap, band in [(64, 16, 4096), (96, 40, 100), (128, 0, 64), (32, 31, 77)]:
        p, t, crs = _stream(path, tmp_path, per_pixel, window, overlap, band)
        np.testing.assert_allclose(p, want, rtol=0, atol=1e-5, equal_nan=True)
        assert t == T and crs.to_string() == CRS  # the output grid is the stack's


def test_blend_weights_fall_towards_edges():
    w = blend_weights(64)
    assert w[32, 32] > 0.99 and w[0, 0] < 1e-3 + 1e-9 and (w > 0).all()
    assert np.allclose(w, w.T)


def test_polygon_across_block_borders_is_one_polygon(tmp_path):
    prob = np.zeros((100, 100), np.float32)
    prob[10:70, 20:90] = 0.9  # one glacier spanning four 32-px blocks
    prob[40:60, 40:50] = 0.1  # a 200-px hole (0.02 km^2)
    prob[80:90, 5:10] = 0.8  # a separate small glacier, 50 px
    prob[0, 0] = np.nan
    path = _write(tmp_path / "prob.tif", prob)
    with rasterio.open(path) as src:
        polys, valid = polygonize_blocks(src, 0.5, block=32)
    assert valid == 100 * 100 - 1
    polys = sorted(polys, key=lambda p: -p.area)
    assert len(polys) == 2
    assert polys[0].area == pytest.approx((60 * 70 - 200) * 100)
    assert len(polys[0].interiors) == 1 and polys[1].area == pytest.approx(50 * 100)


def test_clean_polygons_fills_small_holes_and_drops_small_glaciers():
    outer = box(0, 0, 300, 300)  # 0.09 km^2
    small_hole = box(10, 10, 50, 50)  # 0.0016 km^2
    big_hole = box(100, 100, 220, 220)  # 0.0144 km^2
    g = Polygon(outer.exterior, [small_hole.exterior, big_hole.exterior])
    tiny = box(1000, 0, 1200, 240)  # 0.048 km^2: below 0.05
    kept = clean_polygons([g, tiny], min_area_m2=0.05e6, max_hole_m2=0.01e6)
    assert len(kept) == 1 and len(kept[0].interiors) == 1
    assert kept[0].area == pytest.approx(90_000 - 14_400)
    # A glacier whose holes make it look small is judged by its filled outline.
    holey = Polygon(box(0, 0, 240, 240).exterior, [box(20, 20, 60, 60).exterior])
    assert len(clean_polygons([holey], 0.05e6, 0.01e6)) == 1


def test_scene_scores_against_hand_counts(tmp_path):
    prob = np.zeros((10, 10), np.float32)
    prob[:, :6] = 0.8  # predicted glacier: columns 0-5
    prob[9, 9] = np.nan  # one nodata pixel, ignored
    path = _write(tmp_path / "p.tif", prob)
    ref = [box(T.c, T.f - 100, T.c + 50, T.f)]  # columns 0-4, all rows
    small = [box(T.c + 70, T.f - 20, T.c + 90, T.f)]  # rows 0-1, columns 7-8: ignored
    with rasterio.open(path) as src:
        s = score_scene(src, ref, small, 0.5, buffer_m=15)
    # No training tiles given: every pixel is counted as held out, none as training.
    assert s.confusion["held_out"].tolist() == [[35, 10], [0, 50]]  # [TN, FP], [FN, TP]
    assert s.confusion["training"].sum() == 0
    # Zone of 1.5 px around the glacier: column 5 (10 predicted px) is in it, so nothing of
    # the prediction lies outside every zone.
    assert s.zones.reference[1] == 50 and s.zones.predicted["ice"][1] == 60
    assert s.zones.outside["ice"] == 0


def test_touching_glaciers_are_scored_apart(tmp_path):
    """The issue's minimal case: two glaciers sharing a divide, predicted as one polygon."""
    prob = np.zeros((10, 20), np.float32)
    prob[:, :20] = 1.0
    path = _write(tmp_path / "p.tif", prob)
    left, right = box(T.c, T.f - 100, T.c + 100, T.f), box(T.c + 100, T.f - 100, T.c + 200, T.f)
    with rasterio.open(path) as src:
        s = score_scene(src, [left, right], [], 0.5)
    assert s.zones.reference[1:].tolist() == [100, 100]
    assert s.zones.predicted["ice"][1:].tolist() == [100, 100]  # errors 0, not +1 and -1


def test_boundary_distance_by_hand():
    a, b = box(0, 0, 100, 100), box(-10, -10, 110, 110)
    d = boundary_distances([a], [b], spacing=10)
    np.testing.assert_allclose(d, 10.0, atol=1e-9)
    keep = box(-1, -1, 50, 101)  # only the points of a's boundary left of x = 50
    # 41 points every 10 m from (100, 0) round the ring: 5 on the top edge, 10 on the left,
    # 4 on the bottom lie left of x = 50.
    assert len(boundary_distances([a], [b], spacing=10, keep=keep)) == 5 + 10 + 4


def test_normalization_warnings_name_the_bands():
    fixed = {"mode": "fixed", "ranges": {b: [0, 1] for b in BAND_NAMES}}
    other = {"mode": "fixed", "ranges": {**fixed["ranges"], "VV": [-25, 0]}}
    meta = {"export_normalization": fixed,
            "norm_stats": {"bands": ["VV", "B3"], "mean": [0.5, 0.3], "std": [0.1, 0.05]}}
    assert normalization_warnings(meta, {"normalization": fixed}, {"VV": 0.52, "B3": 0.31}) == []
    w = normalization_warnings(meta, {"normalization": other}, {"VV": 0.52, "B3": 0.9})
    assert len(w) == 2 and "bands VV differ" in w[0] and "B3 (mean 0.900" in w[1]


def test_predict_and_evaluate_on_the_demo(tiny_run, demo_export, cli, tmp_path):
    from gee_export.common.cli import train

    ws, run = tiny_run
    _, exp = demo_export
    res = cli(train, ["predict", "--checkpoint", run / "best.pt", "--export", exp,
                      "--workspace", ws, "--quiet", "--overlap", 32])
    out = ws / "predictions" / "tiny-fixture" / "demo-2018"
    assert "prediction complete" in res.output
    with rasterio.open(out / "probability.tif") as p, rasterio.open(exp / "stack.vrt") as s:
        assert (p.crs, p.transform, p.shape) == (s.crs, s.transform, s.shape)
        prob = p.read(1)
        assert p.descriptions == ("glacier_probability",)
    assert np.nanmin(prob) >= 0 and np.nanmax(prob) <= 1
    m = json.loads((out / "prediction.json").read_text())
    assert m["complete"] and m["parameters"]["config"]["window"] == 128
    glaciers = gpd.read_file(out / "glaciers.gpkg", layer="glaciers")
    assert {"area_km2", "mean_probability", "glacier_ids"} <= set(glaciers.columns)
    assert (glaciers["area_km2"] >= 0.05).all()
    assert (glaciers["mean_probability"] >= 0.5).all()
    inventory = gpd.read_file(exp / "outlines.gpkg")
    by_glacier = gpd.read_file(out / "glaciers.gpkg", layer="by_glacier")
    assert set(by_glacier["glacier_id"]) <= set(inventory["glac_id"])
    res = cli(train, ["evaluate", "--prediction", out])
    assert res.output.splitlines()[0].startswith(  # the default reference, named
        f"--reference: {exp / 'outlines.gpkg'} (the outlines the predicted export recorded, "
        "which may date from another year than the imagery; give --reference")
    report = json.loads((out / "report.json").read_text())
    assert (out / "agreement.png").is_file()
    cm = np.array(report["pixels"]["all"]["confusion_matrix"])
    # Every pixel with data is scored, except those of glaciers under 0.05 km^2 (ignored).
    small = _small_glacier_pixels(exp, inventory, prob)
    assert small > 0 and cm.sum() == np.isfinite(prob).sum() - small
    ids = [g["glacier_id"] for g in report["per_glacier"]["glaciers"]]
    assert sorted(ids) == sorted(inventory.loc[inventory["area_km2"] >= 0.05, "glac_id"])
    # The same reference in lon/lat gives the same scores (reprojected onto the grid).
    ref = gpd.read_file(exp / "outlines.gpkg").to_crs("EPSG:4326")
    ref.to_file(tmp_path / "ref4326.gpkg")
    refused = cli(train, ["evaluate", "--prediction", out, "--reference",
                          tmp_path / "ref4326.gpkg"], ok=False)
    assert refused.exit_code == 1 and "--name for another report" in refused.output
    cli(train, ["evaluate", "--prediction", out, "--reference", tmp_path / "ref4326.gpkg",
                "--name", "lonlat"])
    assert (out / "lonlat.png").is_file()
    again = json.loads((out / "lonlat.json").read_text())
    assert np.abs(np.array(again["pixels"]["all"]["confusion_matrix"]) - cm).sum() <= \
        0.001 * cm.sum()
    assert again["area"]["reference_km2"] == pytest.approx(report["area"]["reference_km2"],
                                                           rel=1e-3)


def _small_glacier_pixels(exp, inventory, prob):
    """Pixels with data inside an outline under 0.05 km^2 and outside every larger one."""
    from rasterio.features import rasterize

    with rasterio.open(exp / "stack.vrt") as s:
        t, shape = s.transform, s.shape
    big = inventory["area_km2"] >= 0.05

    def burn(df):
        if df.empty:
            return np.zeros(shape, bool)
        return rasterize(df.to_crs(s.crs).geometry, out_shape=shape, transform=t) > 0

    return int((burn(inventory[~big]) & ~burn(inventory[big]) & np.isfinite(prob)).sum())


def test_interrupted_prediction_resumes_to_the_same_result(tiny_run, demo_export, tmp_path):
    ws, run = tiny_run
    _, exp = demo_export
    cfg = PredictConfig(band_width=128, overlap=32)
    calls = {"n": 0}

    def per_pixel(x):
        calls["n"] += 1
        if calls["n"] == 8:  # in the second column band (five calls per band)
            raise KeyboardInterrupt
        return 1 / (1 + np.exp(-x[:, 3]))

    with pytest.raises(KeyboardInterrupt):
        predict(run / "best.pt", exp, tmp_path, cfg, "cut", quiet=True, echo=lambda *a: None,
                model_fn=per_pixel)
    out = tmp_path / "predictions" / "tiny-fixture" / "cut"
    m = json.loads((out / "prediction.json").read_text())
    assert not m["complete"] and m["bands_done"] and not (out / "probability.tif").exists()
    predict(run / "best.pt", exp, tmp_path, cfg, "cut", quiet=True, echo=lambda *a: None,
            model_fn=per_pixel)
    predict(run / "best.pt", exp, tmp_path, cfg, "whole", quiet=True, echo=lambda *a: None,
            model_fn=per_pixel)
    whole = tmp_path / "predictions" / "tiny-fixture" / "whole"
    with rasterio.open(out / "probability.tif") as a, rasterio.open(whole / "probability.tif") as b:
        np.testing.assert_array_equal(a.read(1), b.read(1))


def test_predict_refuses_incomplete_export_and_bad_window(tiny_run, demo_export, tmp_path):
    ws, run = tiny_run
    _, exp = demo_export
    with pytest.raises(GlacierError, match="multiple of 32"):
        predict(run / "best.pt", exp, tmp_path, PredictConfig(window=100), quiet=True,
                echo=lambda *a: None)
    with pytest.raises(GlacierError, match="--overlap 128 must lie"):
        predict(run / "best.pt", exp, tmp_path, PredictConfig(overlap=128), quiet=True,
                echo=lambda *a: None)
    # a memory-sizing option is bounded by the scene (512 px): issue 31, item 3
    with pytest.raises(GlacierError, match=r"--window 1048576: larger than the scene needs "
                       r"\(512 px on its longer side: at most 512\)"):
        predict(run / "best.pt", exp, tmp_path, PredictConfig(window=2**20), quiet=True,
                echo=lambda *a: None)
    assert not (tmp_path / "predictions").exists()  # nothing half-made
    with pytest.raises(GlacierError, match="no such file"):
        predict(tmp_path / "none.pt", exp, tmp_path, PredictConfig(), quiet=True,
                echo=lambda *a: None)


def test_tta_averages_the_eight_views_mapped_back():
    import torch

    from training.predict import dihedral_view, torch_model_fn, undo_dihedral

    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    assert all(torch.equal(undo_dihedral(dihedral_view(x, k), k), x) for k in range(8))
    assert len({tuple(dihedral_view(x, k).flatten().tolist()) for k in range(8)}) == 8

    class Shifted(torch.nn.Module):  # glacier logit = the pixel's right neighbour: not symmetric
        def forward(self, t):
            right = torch.roll(t[:, :1], -1, dims=-1)
            return torch.cat([torch.zeros_like(right), right], 1)

    g = np.random.default_rng(0).random((1, 3, 8, 8)).astype(np.float32)
    out = torch_model_fn(Shifted(), torch.device("cpu"), None, tta=True)(g)
    assert out.shape == (1, 2, 8, 8)
    # Independently: each view in numpy, the model, the view undone, then mean and std.
    views = []
    for k in range(8):
        a = g[0, 0][:, ::-1] if k >= 4 else g[0, 0]
        a = np.rot90(a, k % 4)
        p = 1 / (1 + np.exp(-np.roll(a, -1, axis=-1)))  # softmax of (0, logit)
        p = np.rot90(p, -(k % 4))
        views.append(p[:, ::-1] if k >= 4 else p)
    np.testing.assert_allclose(out[0, 0], np.mean(views, 0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(out[0, 1], np.std(views, 0), rtol=1e-5, atol=1e-6)
    assert out[0, 1].max() > 0.01
    # A per-pixel (1x1) model is symmetric: TTA changes nothing and the spread is 0.
    conv = torch.nn.Conv2d(3, 2, 1)
    plain = torch_model_fn(conv, torch.device("cpu"), None)(g)
    both = torch_model_fn(conv, torch.device("cpu"), None, tta=True)(g)
    np.testing.assert_allclose(both[:, 0], plain, atol=1e-6)
    assert np.abs(both[:, 1]).max() < 1e-6


def test_predict_with_tta_writes_mean_and_spread(tiny_run, demo_export, tmp_path):
    ws, run = tiny_run
    _, exp = demo_export
    out = predict(run / "best.pt", exp, tmp_path, PredictConfig(tta=True, overlap=32), "tta",
                  quiet=True, echo=lambda *a: None)
    with rasterio.open(out / "probability.tif") as p:
        assert p.count == 2 and p.descriptions == ("glacier_probability", "tta_spread")
        mean, spread = p.read(1), p.read(2)
    ok = np.isfinite(mean)
    assert (spread[ok] >= 0).all() and spread[ok].max() > 0 and (spread[ok] <= 0.5).all()
