"""`train evaluate` on a real inventory of touching glaciers (RGI 7, Hintereisferner): a
perfect prediction scores perfectly, glacier by glacier, with and without a data gap."""
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.features import rasterize

from gee_export.common.layout import base_manifest
from training.evaluation import EvalConfig, evaluate_prediction

DATA = Path(__file__).resolve().parents[1] / "data" / "oggm"
RGI7 = DATA / "rgi7g_hef_complex.shp"  # 23 glaciers, many sharing divides
CRS = "EPSG:32632"  # UTM 32N: the Oetztal Alps


def perfect_prediction(root: Path, outlines: Path, gap_rows: slice | None = None,
                       crs: str = CRS) -> Path:
    """A prediction directory whose probability is 1 exactly on the pixels whose centre lies
    in a reference outline (the labels' rule) and 0 elsewhere; NaN in the gap rows."""
    ref = gpd.read_file(outlines).to_crs(crs)
    x0, y0, x1, y1 = ref.total_bounds
    t = Affine(10, 0, np.floor(x0 / 10) * 10 - 500, 0, -10, np.ceil(y1 / 10) * 10 + 500)
    width, height = int((x1 - t.c) / 10) + 50, int((t.f - y0) / 10) + 50
    prob = rasterize(ref.geometry, out_shape=(height, width), transform=t).astype(np.float32)
    if gap_rows is not None:
        prob[gap_rows] = np.nan
    out = root / "prediction"
    out.mkdir()
    with rasterio.open(out / "probability.tif", "w", driver="GTiff", width=width,
                       height=height, count=1, dtype="float32", crs=crs, transform=t,
                       nodata=np.nan) as f:
        f.write(prob, 1)
    manifest = base_manifest("prediction", complete=True, completed_at="now",
                             parameters={"config": {"threshold": 0.5}})
    (out / "prediction.json").write_text(json.dumps(manifest))
    return out


def by_id(report: dict) -> dict:
    return {g["glacier_id"]: g for g in report["per_glacier"]["glaciers"]}


def test_perfect_prediction_on_touching_real_glaciers(tmp_path):
    pred = perfect_prediction(tmp_path, RGI7)
    report = evaluate_prediction(pred, RGI7, EvalConfig(min_area_km2=0.0), echo=lambda *_: None)
    glaciers = by_id(report)
    rgi = gpd.read_file(RGI7)
    assert sorted(glaciers) == sorted(rgi["rgi_id"])  # the inventory's own ids
    assert all(g["error_km2"] == 0 and g["relative_error"] == 0 for g in glaciers.values())
    assert report["pixels"]["miou"] == 1.0 and report["area"]["outside_zones_km2"] == 0
    # Areas on the ellipsoid agree with the inventory's own figures (RGI area_km2).
    ours = np.array([glaciers[i]["inventory_km2"] for i in rgi["rgi_id"]])
    np.testing.assert_allclose(ours, rgi["area_km2"], rtol=2e-3)
    assert sum(ours) == pytest.approx(77.67023, rel=1e-3)  # tests/data/README.md
    # Boundaries: divides do not count, so a perfect prediction is within the pixel staircase.
    d = report["boundary_distance"]
    assert d["divides_excluded_km"] > 10
    assert d["reference_to_predicted"]["mean_m"] < 4 and d["predicted_to_reference"]["p95_m"] < 8


def test_a_data_gap_is_not_scored(tmp_path):
    pred = perfect_prediction(tmp_path, RGI7, gap_rows=slice(600, 800))
    report = evaluate_prediction(pred, RGI7, EvalConfig(min_area_km2=0.0), echo=lambda *_: None)
    glaciers = by_id(report).values()
    assert all(g["error_km2"] == 0 for g in glaciers)
    cut = [g for g in glaciers if 0 < g["observed_fraction"] < 1]
    assert cut and all(g["reference_km2"] < g["inventory_km2"] for g in cut)
    # The gap's edges are not glacier boundaries: distances stay within the staircase.
    assert report["boundary_distance"]["predicted_to_reference"]["p95_m"] < 8


def test_small_glaciers_are_ignored_not_missed(tmp_path):
    rgi = gpd.read_file(RGI7)
    limit = float(np.sort(rgi["area_km2"])[5]) + 1e-6  # the six smallest are "small"
    pred = perfect_prediction(tmp_path, RGI7)
    with rasterio.open(pred / "probability.tif", "r+") as f:
        p = f.read(1)
        p[:] = 0.0  # predict nothing at all
        f.write(p, 1)
    report = evaluate_prediction(pred, RGI7, EvalConfig(min_area_km2=limit),
                                 echo=lambda *_: None)
    assert report["area"]["small_glaciers_ignored"] == 6
    assert len(report["per_glacier"]["glaciers"]) == len(rgi) - 6
    full = evaluate_prediction(pred, RGI7, EvalConfig(min_area_km2=0.0), name="all",
                               echo=lambda *_: None)
    missed = lambda r: r["pixels"]["confusion_matrix"][1][0]  # noqa: E731
    assert missed(full) > missed(report)  # the small glaciers' pixels were not counted


def test_areas_are_ellipsoidal_whatever_the_grid(tmp_path):
    """On a Web Mercator grid a pixel covers 1/cos^2(46.8 deg) = 2.1 times its true area; the
    ellipsoidal areas still agree with the inventory's."""
    pred = perfect_prediction(tmp_path, RGI7, crs="EPSG:3857")
    report = evaluate_prediction(pred, RGI7, EvalConfig(min_area_km2=0.0), echo=lambda *_: None)
    area = report["area"]
    assert area["reference_planar_km2"] / area["reference_km2"] == pytest.approx(
        1 / np.cos(np.radians(46.86)) ** 2, rel=5e-3)
    assert area["reference_km2"] == pytest.approx(77.67023, rel=3e-3)
    per_glacier = sum(g["reference_km2"] for g in report["per_glacier"]["glaciers"])
    assert per_glacier == pytest.approx(77.67023, rel=3e-3)
