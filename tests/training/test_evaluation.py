"""`train evaluate` on a real inventory of touching glaciers (RGI 7, Hintereisferner): a
perfect prediction scores perfectly, glacier by glacier, with and without a data gap; the
pixels the model trained on are found by following prediction -> run -> tiles and scored
apart from the held-out ones."""
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from affine import Affine
from rasterio.features import rasterize

from gee_export.common.layout import base_manifest
from gee_export.common.tile_index import tiles_id
from training.evaluation import EvalConfig, evaluate_prediction
from training.heldout import OTHER_YEAR, SAME_SCENE, UNKNOWN, training_footprint

DATA = Path(__file__).resolve().parents[1] / "data" / "oggm"
RGI7 = DATA / "rgi7g_hef_complex.shp"  # 23 glaciers, many sharing divides
CRS = "EPSG:32632"  # UTM 32N: the Oetztal Alps


def scene_root(tmp_path: Path) -> Path:
    """Where a test's prediction directory goes: WORKSPACE/predictions/RUN, as `train
    predict` lays it out, with tmp_path the workspace. Evaluation writes the workspace's STAC
    catalog (workspace_of: three levels up from the prediction), so a prediction made right
    in tmp_path would put `stac/` beside the other tests' directories."""
    root = tmp_path / "predictions" / "run"
    root.mkdir(parents=True)
    return root


def perfect_prediction(root: Path, outlines: Path, gap_rows: slice | None = None,
                       crs: str = CRS) -> Path:
    """A prediction directory whose probability is 1 exactly on the pixels whose centre lies
    in a reference outline (the labels' rule) and 0 elsewhere; NaN in the gap rows. `root`
    is a scene_root, so that the catalog evaluation writes stays in the test's directory."""
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
    pred = perfect_prediction(scene_root(tmp_path), RGI7)
    report = evaluate_prediction(pred, RGI7, EvalConfig(min_area_km2=0.0), echo=lambda *_: None)
    glaciers = by_id(report)
    rgi = gpd.read_file(RGI7)
    assert sorted(glaciers) == sorted(rgi["rgi_id"])  # the inventory's own ids
    assert all(g["error_km2"] == 0 and g["relative_error"] == 0 for g in glaciers.values())
    # No run is recorded for this prediction: nothing can be called held out.
    assert report["pixels"]["headline"] == "all" and report["pixels"]["held_out"] is None
    assert report["pixels"]["all"]["miou"] == 1.0 and report["area"]["outside_zones_km2"] == 0
    # Areas on the ellipsoid agree with the inventory's own figures (RGI area_km2).
    ours = np.array([glaciers[i]["inventory_km2"] for i in rgi["rgi_id"]])
    np.testing.assert_allclose(ours, rgi["area_km2"], rtol=2e-3)
    assert sum(ours) == pytest.approx(77.67023, rel=1e-3)  # tests/data/README.md
    # Boundaries: divides do not count, so a perfect prediction is within the pixel staircase.
    assert report["boundary_distance"]["divides_excluded_km"] > 10
    d = report["boundary_distance"]["all"]
    assert d["reference_to_predicted"]["mean_m"] < 4 and d["predicted_to_reference"]["p95_m"] < 8


def test_a_data_gap_is_not_scored(tmp_path):
    pred = perfect_prediction(scene_root(tmp_path), RGI7, gap_rows=slice(600, 800))
    report = evaluate_prediction(pred, RGI7, EvalConfig(min_area_km2=0.0), echo=lambda *_: None)
    glaciers = by_id(report).values()
    assert all(g["error_km2"] == 0 for g in glaciers)
    cut = [g for g in glaciers if 0 < g["observed_fraction"] < 1]
    assert cut and all(g["reference_km2"] < g["inventory_km2"] for g in cut)
    # The gap's edges are not glacier boundaries: distances stay within the staircase.
    assert report["boundary_distance"]["all"]["predicted_to_reference"]["p95_m"] < 8


def test_small_glaciers_are_ignored_not_missed(tmp_path):
    rgi = gpd.read_file(RGI7)
    limit = float(np.sort(rgi["area_km2"])[5]) + 1e-6  # the six smallest are "small"
    pred = perfect_prediction(scene_root(tmp_path), RGI7)
    with rasterio.open(pred / "probability.tif", "r+") as f:
        p = f.read(1)
        p[:] = 0.0  # predict nothing at all
        f.write(p, 1)
    said = []
    report = evaluate_prediction(pred, RGI7, EvalConfig(min_area_km2=limit), echo=said.append)
    # A map without ice is scored, but not as if it were one; both boundary directions say so.
    # (the summary line; the catalog of the test's workspace may warn after it that it
    # leaves this prediction out: its hand-made record names no export)
    line = next(s for s in said if s.startswith("evaluation"))
    assert "NO ICE" in line and line.count("n/a (no boundary to measure)") == 2
    assert report["area"]["small_glaciers_ignored"] == 6
    assert len(report["per_glacier"]["glaciers"]) == len(rgi) - 6
    full = evaluate_prediction(pred, RGI7, EvalConfig(min_area_km2=0.0), name="all",
                               echo=lambda *_: None)
    missed = lambda r: r["pixels"]["all"]["confusion_matrix"][1][0]  # noqa: E731
    assert missed(full) > missed(report)  # the small glaciers' pixels were not counted


def test_areas_are_ellipsoidal_whatever_the_grid(tmp_path):
    """On a Web Mercator grid a pixel covers 1/cos^2(46.8 deg) = 2.1 times its true area; the
    ellipsoidal areas still agree with the inventory's."""
    pred = perfect_prediction(scene_root(tmp_path), RGI7, crs="EPSG:3857")
    report = evaluate_prediction(pred, RGI7, EvalConfig(min_area_km2=0.0), echo=lambda *_: None)
    area = report["area"]
    assert area["reference_planar_km2"] / area["reference_km2"] == pytest.approx(
        1 / np.cos(np.radians(46.86)) ** 2, rel=5e-3)
    assert area["reference_km2"] == pytest.approx(77.67023, rel=3e-3)
    per_glacier = sum(g["reference_km2"] for g in report["per_glacier"]["glaciers"])
    assert per_glacier == pytest.approx(77.67023, rel=3e-3)


# -- held-out scoring ---------------------------------------------------------------------------

GRID = {"crs": "EPSG:32632", "note": "the grid record both manifests share"}
SIZE = 128
QUIET = {"echo": lambda *_: None}


def tile_set(root, windows, year=2018, region="hef", split_of=None):
    """A complete tile set whose index lists `windows` (row_off, col_off) as training tiles
    (and, with split_of, other splits), with geometries from the prediction's transform."""
    with rasterio.open(root / "prediction" / "probability.tif") as src:
        t = src.transform
    tiles = root / "tiles"
    tiles.mkdir()
    rows = []
    for k, (r, c) in enumerate(windows):
        (x0, y1), (x1, y0) = t * (c, r), t * (c + SIZE, r + SIZE)
        rows.append({"tile_id": f"r{r}_c{c}", "split": (split_of or {}).get(k, "train"),
                     "row_off": r, "col_off": c, "geometry": shapely.box(x0, y0, x1, y1)})
    gpd.GeoDataFrame(rows, crs=GRID["crs"]).to_file(tiles / "index.gpkg", layer="tiles")
    m = base_manifest("tiles", complete=True, parameters={"size": SIZE}, files={"a": [1, "x"]},
                      grid=GRID, region=region, year=year, tile_size=SIZE)
    (tiles / "manifest.json").write_text(json.dumps(m))
    return tiles, m


def record_training(pred, tiles, manifest, year=2018):
    """What `train predict` records: the tiles the model trained on, the scene predicted."""
    mf = pred / "prediction.json"
    m = json.loads(mf.read_text())
    m.update(grid=GRID, region="hef", year=year,
             trained_on={"tiles": "../tiles", "tiles_id": tiles_id(manifest)})
    mf.write_text(json.dumps(m))


WINDOWS = [(300, 300), (300, 428), (556, 700), (812, 1100)]


def in_tiles(shape, windows):
    m = np.zeros(shape, bool)
    for r, c in windows:
        m[r:r + SIZE, c:c + SIZE] = True
    return m


def test_right_in_training_tiles_wrong_elsewhere(tmp_path):
    pred = perfect_prediction(scene_root(tmp_path), RGI7)
    tiles, tm = tile_set(pred.parent, WINDOWS)
    record_training(pred, tiles, tm)
    with rasterio.open(pred / "probability.tif", "r+") as f:
        p = f.read(1)
        train = in_tiles(p.shape, WINDOWS)
        f.write(np.where(train, p, 1 - p).astype(np.float32), 1)  # wrong outside the tiles
    report = evaluate_prediction(pred, RGI7, EvalConfig(min_area_km2=0.0), **QUIET)
    px = report["pixels"]
    assert px["split"]["relation"] == SAME_SCENE and px["split"]["training_tiles"] == 4
    assert px["headline"] == "held_out"
    assert px["training"]["miou"] == 1.0 and px["held_out"]["miou"] == 0.0
    assert px["training"]["pixels"] == train.sum()  # a hand count of the tiles' pixels
    assert px["held_out"]["pixels"] + px["training"]["pixels"] == px["all"]["pixels"]
    # Boundary points inside the tiles lie on the true outline; outside, nowhere near it.
    d = report["boundary_distance"]
    assert d["training"]["reference_to_predicted"]["mean_m"] < 4
    assert d["held_out"]["reference_to_predicted"]["points"] > 0
    # Per glacier: the share inside training tiles, against shapely's own intersection.
    ref = gpd.read_file(RGI7).to_crs(GRID["crs"]).set_index("rgi_id")
    with rasterio.open(pred / "probability.tif") as src:
        boxes = shapely.union_all([shapely.box(*rasterio.windows.bounds(
            ((r, r + SIZE), (c, c + SIZE)), src.transform)) for r, c in WINDOWS])
    for g in report["per_glacier"]["glaciers"]:
        geom = ref.geometry[g["glacier_id"]]
        expected = geom.intersection(boxes).area / geom.area
        assert g["training_fraction"] == pytest.approx(expected, abs=0.02)
    assert max(g["training_fraction"] for g in report["per_glacier"]["glaciers"]) > 0.3


def test_validation_tiles_count_as_held_out(tmp_path):
    pred = perfect_prediction(scene_root(tmp_path), RGI7)
    tiles, tm = tile_set(pred.parent, WINDOWS, split_of={0: "val", 1: "guard"})
    record_training(pred, tiles, tm)
    report = evaluate_prediction(pred, RGI7, EvalConfig(min_area_km2=0.0), **QUIET)
    with rasterio.open(pred / "probability.tif") as src:
        train = in_tiles(src.shape, WINDOWS[2:])
    assert report["pixels"]["training"]["pixels"] == train.sum()


def test_another_year_is_held_out_in_time(tmp_path):
    pred = perfect_prediction(scene_root(tmp_path), RGI7)
    tiles, tm = tile_set(pred.parent, WINDOWS, year=2018)
    record_training(pred, tiles, tm, year=2020)
    report = evaluate_prediction(pred, RGI7, EvalConfig(min_area_km2=0.0), **QUIET)
    px = report["pixels"]
    assert px["split"]["relation"] == OTHER_YEAR and "held out in time" in px["split"]["note"]
    # Split by the 2018 tile set's ground: its training tiles' pixels are ground the model saw
    # in another year, not held out (tests/training/test_evaluation_ground.py has the rest).
    with rasterio.open(pred / "probability.tif") as src:
        assert px["training"]["pixels"] == in_tiles(src.shape, WINDOWS).sum()
    assert px["held_out"]["pixels"] == px["all"]["pixels"] - px["training"]["pixels"]
    assert max(g["training_fraction"] for g in report["per_glacier"]["glaciers"]) > 0.3


def test_retiled_tiles_make_the_split_unknown(tmp_path):
    pred = perfect_prediction(scene_root(tmp_path), RGI7)
    tiles, tm = tile_set(pred.parent, WINDOWS)
    record_training(pred, tiles, {**tm, "files": {"a": [2, "y"]}})  # trained on other tiles
    fp = training_footprint(pred, json.loads((pred / "prediction.json").read_text()))
    assert fp.relation == UNKNOWN and "re-cut since" in fp.note
    report = evaluate_prediction(pred, RGI7, EvalConfig(min_area_km2=0.0), **QUIET)
    assert report["pixels"]["headline"] == "all" and report["pixels"]["held_out"] is None


def test_older_predictions_find_their_run_in_the_workspace(tmp_path):
    ws = tmp_path
    pred_root = ws / "predictions" / "myrun"
    pred_root.mkdir(parents=True)
    pred = perfect_prediction(pred_root, RGI7)  # predictions/myrun/prediction
    tiles, tm = tile_set(pred_root, WINDOWS)  # anywhere: the run records where
    run = ws / "runs" / "myrun"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(base_manifest(
        "run", config={"tiles": "../../predictions/myrun/tiles", "tiles_id": tiles_id(tm)})))
    m = json.loads((pred / "prediction.json").read_text())
    m.update(grid=GRID, region="hef", year=2018)
    (pred / "prediction.json").write_text(json.dumps(m))
    fp = training_footprint(pred, m)
    assert fp.relation == SAME_SCENE
    assert sorted(map(tuple, fp.windows[:, [0, 2]])) == sorted(WINDOWS)


def test_a_prediction_without_data_is_refused(tmp_path):
    from gee_export.common.errors import InputError

    pred = perfect_prediction(scene_root(tmp_path), RGI7)
    with rasterio.open(pred / "probability.tif", "r+") as f:
        f.write(np.full(f.shape, np.nan, np.float32), 1)
    with pytest.raises(InputError, match="no pixel with data"):
        evaluate_prediction(pred, RGI7, EvalConfig(min_area_km2=0.0), **QUIET)
    assert not (pred / "report.json").exists()


def test_the_demo_split_against_the_tile_index(tiny_run, demo_export, cli):
    """End to end: the training pixels `train evaluate` finds are those of the index's train
    tiles, rasterized by rasterio from their geometries (read by pyogrio)."""
    from gee_export.common.cli import train

    ws, run = tiny_run
    out = ws / "predictions" / "tiny-fixture" / "heldout-demo"  # its own: tests share the ws
    cli(train, ["predict", "--workspace", ws, "--checkpoint", run / "best.pt", "--export",
                demo_export[1], "--name", "heldout-demo", "--quiet"])
    res = cli(train, ["evaluate", "--prediction", out, "--name", "heldout-check"])
    assert "HELD-OUT" in res.output and "in-sample (training tiles)" in res.output
    report = json.loads((out / "heldout-check.json").read_text())
    index = gpd.read_file(ws / "tiles" / "demo-2018" / "index.gpkg")
    with rasterio.open(out / "probability.tif") as src:
        valid = np.isfinite(src.read(1))
        train = rasterize(index.geometry[index["split"] == "train"], out_shape=src.shape,
                          transform=src.transform).astype(bool)
    px = report["pixels"]
    assert px["split"]["training_tiles"] == int((index["split"] == "train").sum())
    small = px["all"]["pixels"] - px["held_out"]["pixels"] - px["training"]["pixels"]
    assert small == 0
    # Pixels of glaciers under the size limit are ignored in both; allow for them.
    assert 0 <= (train & valid).sum() - px["training"]["pixels"] < 0.01 * train.sum()
    assert (out / "heldout-check.png").is_file()


def test_training_tiles_are_placed_by_map_coordinates():
    """The same ground under another export name or on a larger, shifted grid is still the
    scene the model trained on: the tiles are placed by their map coordinates."""
    from training.heldout import _placed

    tiles_grid = {"crs": "EPSG:32632", "x0": 1000.0, "y0": 9000.0, "res": 10.0,
                  "width": 600, "height": 600}
    rows = [(0, 0), (128, 256)]
    same = _placed(rows, 128, tiles_grid, dict(tiles_grid))
    assert same.tolist() == [[0, 128, 0, 128], [128, 256, 256, 384]]
    wider = {**tiles_grid, "x0": 900.0, "y0": 9100.0, "width": 700, "height": 700}
    assert _placed(rows, 128, tiles_grid, wider).tolist() == [[10, 138, 10, 138],
                                                              [138, 266, 266, 394]]
    coarser = {**tiles_grid, "res": 20.0}
    assert _placed(rows, 128, tiles_grid, coarser).tolist() == [[0, 64, 0, 64],
                                                                [64, 128, 128, 192]]
    assert _placed(rows, 128, tiles_grid, {**tiles_grid, "crs": "EPSG:32633"}) is None
    far = {**tiles_grid, "x0": 1e6}
    assert _placed(rows, 128, tiles_grid, far) is None


def test_a_report_name_cannot_overwrite_the_prediction(tmp_path, cli):
    from gee_export.common.cli import train

    pred = perfect_prediction(scene_root(tmp_path), RGI7)
    for name in ("prediction", "agreement", "../elsewhere"):
        res = cli(train, ["evaluate", "--prediction", pred, "--reference", RGI7, "--name", name,
                          "--force"], ok=False)
        assert res.exit_code != 0 and res.output.count("Error:") == 1 and "--name" in res.output
    assert json.loads((pred / "prediction.json").read_text())["kind"] == "prediction"



# -- a synthetic scene scored against hand counts -----------------------------------------------
# Glaciers as boxes whose edges lie on pixel edges, so the pixel-centre rule rasterizes each
# to exactly its rows and columns; every expected value below is counted on numpy arrays or
# measured by pyproj, not by the code under test.

SYN = Affine(10, 0, 600_000.0, 0, -10, 5_200_000.0)  # EPSG:32632, about 46.9 N
SYN_SHAPE = (200, 200)
PX_KM2 = 1e-4


def cells(r0, r1, c0, c1):
    """The polygon of rows r0..r1-1 and columns c0..c1-1 of the synthetic grid."""
    (x0, y1), (x1, y0) = SYN * (c0, r0), SYN * (c1, r1)
    return shapely.box(x0, y0, x1, y1)


def cells_mask(r0, r1, c0, c1):
    m = np.zeros(SYN_SHAPE, bool)
    m[r0:r1, c0:c1] = True
    return m


def synthetic(tmp_path, glaciers: dict, prob: np.ndarray):
    """(prediction directory, reference file) of a scene: `glaciers` id -> (r0, r1, c0, c1),
    `prob` the probability (NaN: no data)."""
    ref = tmp_path / "reference.gpkg"
    gpd.GeoDataFrame({"glac_id": list(glaciers)},
                     geometry=[cells(*b) for b in glaciers.values()],
                     crs=CRS).to_file(ref, layer="glaciers")
    out = scene_root(tmp_path) / "prediction"
    out.mkdir()
    with rasterio.open(out / "probability.tif", "w", driver="GTiff", width=SYN_SHAPE[1],
                       height=SYN_SHAPE[0], count=1, dtype="float32", crs=CRS, transform=SYN,
                       nodata=np.nan) as f:
        f.write(prob.astype(np.float32), 1)
    manifest = base_manifest("prediction", complete=True, completed_at="now",
                             parameters={"config": {"threshold": 0.5}})
    (out / "prediction.json").write_text(json.dumps(manifest))
    return out, ref


def geod_ratio(boxes) -> float:
    """Ellipsoidal over planar area of the boxes together, by pyproj.Geod."""
    from pyproj import Geod, Transformer

    to = Transformer.from_crs(CRS, "EPSG:4326", always_xy=True)
    geod = Geod(ellps="WGS84")
    ell = planar = 0.0
    for b in boxes:
        g = cells(*b).segmentize(10.0)
        lon, lat = to.transform(*np.asarray(g.exterior.coords).T)
        ell += abs(geod.polygon_area_perimeter(lon, lat)[0])
        planar += g.area
    return ell / planar


def test_boundary_distances_are_exact_and_skip_no_data_edges(tmp_path):
    """A 600 m square of two glaciers (a divide down its middle) predicted 30 m (3 px) east
    of where it is, with a data gap across it: every boundary point lies 0 to 30 m from the
    other outline, and more than 5 % of them exactly 30 m (the sides), so the 95th
    percentile is exactly 30 m and a percentile of 0.95 would be 0. The gap's edges are not
    outlines: the ice's edge along them (100 m and more from the glacier's outline) is not
    measured; nor is the divide (300 m from either side of the prediction)."""
    prob = cells_mask(50, 110, 53, 113).astype(np.float32)
    prob[70:80] = np.nan  # the gap, across the glacier
    pred, ref = synthetic(tmp_path, {"G": (50, 110, 50, 80), "H": (50, 110, 80, 110)}, prob)
    report = evaluate_prediction(pred, ref, EvalConfig(min_area_km2=0.0), **QUIET)
    d = report["boundary_distance"]["all"]
    for direction in ("predicted_to_reference", "reference_to_predicted"):
        s = d[direction]
        assert s["p95_m"] == pytest.approx(30.0, abs=1e-6), direction
        assert 8.0 < s["mean_m"] < 20.0, direction  # roughly half the points at 0, half at 30
        # every point on an outline, none on the gap's edges: about 4 x 600 m less the gap
        # (100 m) and 1.5 px either side of it on the two sides, one point every 10 m
        assert 200 <= s["points"] <= 4 * 60 - 2 * 13 + 8, direction
    assert report["boundary_distance"]["held_out"] is None  # no run: nothing is held out
    assert report["boundary_distance"]["divides_excluded_km"] == pytest.approx(0.6)


def test_divides_are_no_boundary_in_either_direction(tmp_path):
    """Of two glaciers side by side only the western one predicted: the prediction's eastern
    edge lies on the divide, 300 m from the outer outline it is measured against."""
    prob = cells_mask(50, 110, 50, 80).astype(np.float32)
    pred, ref = synthetic(tmp_path, {"G": (50, 110, 50, 80), "H": (50, 110, 80, 110)}, prob)
    report = evaluate_prediction(pred, ref, EvalConfig(min_area_km2=0.0), **QUIET)
    d = report["boundary_distance"]["all"]["predicted_to_reference"]
    # a quarter of the points (the eastern edge) at up to 300 m, the rest on the outline
    assert d["p95_m"] > 200 and 40 < d["mean_m"] < 80


def test_scores_areas_and_fractions_against_hand_counts(tmp_path):
    """Two touching glaciers A and B, a small one S (under the size limit) in A's zone, a
    data gap across B, one training tile over part of B and the gap; A predicted one column
    short with a column at exactly the threshold, B predicted two columns too wide, ice on
    S, and a block of ice 80 px from any glacier (in no zone)."""
    boxes = {"A": (40, 100, 40, 100), "B": (40, 100, 100, 130), "S": (140, 145, 60, 65)}
    a, b, s = (cells_mask(*boxes[k]) for k in "ABS")
    ice = cells_mask(40, 100, 40, 99) | cells_mask(40, 100, 100, 132) | s | \
        cells_mask(180, 190, 180, 195)
    prob = np.where(ice, 0.9, 0.1).astype(np.float32)
    prob[40:100, 45] = 0.5  # exactly the threshold: ice
    prob[60:100, 130] = 0.49  # just under it: not ice
    ice[60:100, 130] = False
    gap = cells_mask(85, 120, 90, 140)
    prob[gap] = np.nan
    pred, ref = synthetic(tmp_path, boxes, prob)
    tiles, tm = tile_set(pred.parent, [(70, 110)])  # rows 70..197, cols 110..237
    record_training(pred, tiles, tm)
    train = cells_mask(70, 198, 110, 238)
    limit = 0.5 * 25 * PX_KM2 + 0.5 * 1800 * PX_KM2  # between S's area and B's
    report = evaluate_prediction(pred, ref, EvalConfig(min_area_km2=limit), **QUIET)

    valid = ~gap
    truth, counted = a | b, valid & ~s  # S's pixels count for nothing
    predicted = ice & valid
    cm = {}
    for split, sel in (("training", train), ("held_out", ~train), ("all", np.ones_like(s))):
        m = counted & sel
        cm[split] = [[int((m & ~truth & ~predicted).sum()), int((m & ~truth & predicted).sum())],
                     [int((m & truth & ~predicted).sum()), int((m & truth & predicted).sum())]]
    px = report["pixels"]
    assert px["headline"] == "held_out" and px["split"]["relation"] == SAME_SCENE
    for split in cm:
        assert px[split]["confusion_matrix"] == cm[split], split
    (tn, fp), (fn, tp) = cm["all"]
    assert fp != fn  # asymmetric: precision and recall differ
    assert px["all"]["precision_glacier"] == pytest.approx(tp / (tp + fp))
    assert px["all"]["recall_glacier"] == pytest.approx(tp / (tp + fn))
    assert px["all"]["recall_background"] == pytest.approx(tn / (tn + fp))
    assert px["split"]["under_training_tiles_share"] == pytest.approx(
        (valid & train).sum() / valid.sum(), abs=1e-4)

    ratio = {k: geod_ratio([boxes[k]]) for k in "AB"}
    whole = geod_ratio([boxes["A"], boxes["B"]])
    rows = by_id(report)
    assert sorted(rows) == ["A", "B"] and report["area"]["small_glaciers_ignored"] == 1
    in_zone = {"A": predicted & cells_mask(30, 110, 30, 100),  # A's ice near A
               "B": predicted & cells_mask(30, 110, 100, 140)}  # B's and its two columns
    for k, mask in (("A", a), ("B", b)):
        r = rows[k]
        assert r["reference_km2"] == pytest.approx((mask & valid).sum() * PX_KM2 * ratio[k],
                                                   rel=1e-4), k
        assert r["predicted_km2"] == pytest.approx(in_zone[k].sum() * PX_KM2 * ratio[k],
                                                   rel=1e-4), k
        assert r["observed_fraction"] == pytest.approx((mask & valid).sum() / mask.sum()), k
        # each glacier scaled by its own ratio (A's and B's differ by 2e-6: exact here)
        assert r["reference_km2"] / r["inventory_km2"] == pytest.approx(
            (mask & valid).sum() / mask.sum(), rel=1e-9), k
        assert r["training_fraction"] == pytest.approx(
            (mask & valid & train).sum() / (mask & valid).sum()), k
    assert 0 < rows["B"]["observed_fraction"] < 1 and 0 < rows["B"]["training_fraction"] < 1
    assert rows["A"]["predicted_km2"] < rows["A"]["reference_km2"]  # one column short
    outside = predicted & cells_mask(180, 190, 180, 195)
    area = report["area"]
    assert area["outside_zones_km2"] == pytest.approx(outside.sum() * PX_KM2 * whole, rel=1e-4)
    assert area["predicted_planar_km2"] == pytest.approx((predicted & ~s).sum() * PX_KM2)
    assert area["predicted_planar_km2"] == pytest.approx(
        (in_zone["A"].sum() + in_zone["B"].sum() + outside.sum()) * PX_KM2)
    assert area["reference_planar_km2"] == pytest.approx((truth & valid).sum() * PX_KM2)
    assert area["reference_km2"] == pytest.approx((truth & valid).sum() * PX_KM2 * whole,
                                                  rel=1e-4)
