"""`train change`: areas per glacier and year, trends and bounds, on a demo whose glaciers
change by known amounts (export.json synthetic_truth)."""
import csv
import json
from pathlib import Path

import geopandas as gpd
import matplotlib.pyplot as plt
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.features import rasterize
from scipy.optimize import linprog

from gee_export.common.layout import base_manifest
from gee_export.demo.scene import DemoScene
from tests.helpers import DEMO_TEST_SIZE, invoke
from training.change import parse_years, run_change, slope, slope_bounds
from training.trend import wls_rate

YEARS = (2018, 2019, 2020)


def truth(export: Path) -> dict[str, float]:
    return json.loads((export / "export.json").read_text())["synthetic_truth"][
        "glacier_area_km2"]


def glaciers_of(export: Path, year: int) -> list:
    """The true outlines in `year` of the glaciers the export's truth lists (a glacier that
    enters the scene later is not one of them)."""
    scene = DemoScene(size=DEMO_TEST_SIZE)
    listed = truth(export)
    return [p for g, p in zip(scene.glaciers, scene.glacier_polygons(year))
            if g.gid in listed and not p.is_empty]


def oracle_prediction(ws: Path, export: Path, year: int, ring_m: float = 0.0,
                      run: str | None = None) -> Path:
    """A prediction that is the truth: probability 1 on the year's true glaciers; with
    ring_m, bands of that width at 0.45 outside and 0.55 inside each outline, both with a TTA
    spread of 0.1: ice for the high bound, not ice for the low bound."""
    polys = glaciers_of(export, year)
    out = ws / "predictions" / (run or f"oracle-{ring_m:g}") / f"demo-{year}"
    out.mkdir(parents=True)
    with rasterio.open(export / "stack.vrt") as src:
        shape, t, crs = (src.height, src.width), src.transform, src.crs
    prob = rasterize(polys, out_shape=shape, transform=t).astype(np.float32)
    bands = [prob]
    if ring_m:
        outer = rasterize([p.buffer(ring_m) for p in polys], out_shape=shape, transform=t) > 0
        core = rasterize([p.buffer(-ring_m) for p in polys], out_shape=shape, transform=t) > 0
        outer &= prob == 0
        inner = (prob == 1) & ~core
        bands = [np.select([outer, inner], [0.45, 0.55], prob).astype(np.float32),
                 np.where(outer | inner, 0.1, 0.0).astype(np.float32)]
    with rasterio.open(out / "probability.tif", "w", driver="GTiff", width=shape[1],
                       height=shape[0], count=len(bands), dtype="float32", crs=crs,
                       transform=t, nodata=np.nan) as f:
        for i, b in enumerate(bands, 1):
            f.write(b, i)
    manifest = base_manifest("prediction", complete=True, completed_at="now", year=year,
                             region="demo", export=f"../../../exports/{export.name}",
                             parameters={"config": {"threshold": 0.5}})
    (out / "prediction.json").write_text(json.dumps(manifest))
    return out


def touching_groups(export: Path) -> list[list[str]]:
    """Glacier ids grouped by outlines of the reference that touch (within a pixel)."""
    ref = gpd.read_file(export / "outlines.gpkg")
    ids = list(ref["glac_id"])
    groups = {g: {g} for g in ids}
    for i, a in enumerate(ref.geometry):
        for j, b in enumerate(ref.geometry):
            if i < j and a.distance(b) < 10:
                merged = groups[ids[i]] | groups[ids[j]]
                for g in merged:
                    groups[g] = merged
    return sorted({tuple(sorted(v)) for v in groups.values()})


def fit_sigma(row: dict, year: int) -> float:
    """The year-to-year sigma a glacier's rate is weighted by."""
    return float(np.hypot(float(row[f"sigma_year_{year}"]),
                          float(row[f"sigma_unobserved_{year}"])))


def read_rows(out: Path) -> dict[str, dict]:
    with open(out / "change.csv", newline="") as f:
        return {r["glacier_id"]: r for r in csv.DictReader(f)}


def test_slope_is_least_squares_and_bounds_are_its_extremes():
    rng = np.random.default_rng(3)
    years = np.array([2018, 2019, 2021, 2024], float)
    area = rng.uniform(1, 2, 4)
    assert slope(years, area) == pytest.approx(np.polyfit(years, area, 1)[0], rel=1e-12)
    low, high = area - rng.uniform(0, 0.3, 4), area + rng.uniform(0, 0.3, 4)
    lo, hi = slope_bounds(years, low, high)
    # Independently: the least and greatest slope over every series within the bounds (an LP).
    t = (years - years.mean()) / ((years - years.mean()) ** 2).sum()
    box = list(zip(low, high))
    assert lo == pytest.approx(linprog(t, bounds=box).fun, abs=1e-12)
    assert hi == pytest.approx(-linprog(-t, bounds=box).fun, abs=1e-12)
    assert lo < slope(years, area) < hi


def test_parse_years():
    assert parse_years("2018-2020") == [2018, 2019, 2020]
    assert parse_years("2024,2018,2020") == [2018, 2020, 2024]
    for bad in ("2018", "2018-x", "twenty"):
        with pytest.raises(ValueError, match="--years"):
            parse_years(bad)


def test_a_perfect_prediction_recovers_the_known_change(demo_years):
    ws, exports = demo_years
    preds = [oracle_prediction(ws, e, y) for e, y in zip(exports, YEARS)]
    out = run_change(preds[::-1], ws, echo=lambda *_: None)  # any order of years
    rows = read_rows(out)
    truths = [truth(e) for e in exports]
    # The divide between touching glaciers stays where the reference has it, while the truth
    # moves it each year: compare each group of touching glaciers as a whole.
    for group in touching_groups(exports[0]):
        for year, tr in zip(YEARS, truths):  # within the pixel staircase
            ours = sum(float(rows[g][f"area_km2_{year}"]) for g in group)
            want = sum(tr[g] for g in group)
            assert ours == pytest.approx(want, abs=0.004 + 0.003 * want), (group, year)
        # The rate the same weighted fit gives on the true areas (a vanishing glacier's
        # areas are far from a line, so the weights matter).
        true_rate = sum(wls_rate(np.array(YEARS, float), np.array([t[g] for t in truths]),
                                 np.array([fit_sigma(rows[g], y) for y in YEARS]),
                                 1e-4).rate for g in group)
        rate = sum(float(rows[g]["rate_km2_per_year"]) for g in group)
        assert rate == pytest.approx(true_rate, abs=2e-3)
    assert truths[-1]["DEMO006"] == 0 and float(rows["DEMO006"]["area_km2_2020"]) == 0
    # No ice is known to the detection limit, not to a pixel: the zeros do not pin the fit.
    assert float(rows["DEMO006"]["sigma_year_2020"]) == pytest.approx(
        np.hypot(0.025, float(rows["DEMO001"]["sigma_year_2020"])))
    report = json.loads((out / "change.json").read_text())
    assert abs(report["truth_check"]["total_change_error"]) < 0.01
    assert report["years"] == list(YEARS)
    assert "at threshold +- 0.1" in report["method"]["edge_envelope"]
    assert report["method"]["model_term"].startswith("not estimated")
    assert rows["DEMO001"]["sigma_model_2018"] == ""  # not estimated: empty, not zero
    # No area error model beside these predictions: nothing corrected, and said so.
    assert report["uncertainty"]["bias_corrected"] is False
    assert rows["DEMO001"]["area_best_km2_2019"] == rows["DEMO001"]["area_km2_2019"]
    # A perfect map: the truth lies in every interval, and no glacier-year is left out.
    assert report["truth_check"]["coverage90"] == 1.0 and not report["truth_check"]["flagged"]
    assert all(r["years_used"] == "2018;2019;2020" for r in rows.values())
    outlines = gpd.read_file(out / "change.gpkg", layer="outlines")
    assert sorted(set(outlines["year"])) == list(YEARS)
    by_year = outlines.groupby("year")["area_km2"].sum()
    for year in YEARS:
        assert by_year[year] == pytest.approx(float(rows["total"][f"area_km2_{year}"]),
                                              rel=1e-3)
    # Rerun: complete, nothing to do; another set of predictions is refused without --force.
    said = []
    run_change(preds, ws, echo=said.append)
    assert "nothing to do" in said[-1]
    with pytest.raises(Exception, match="--force"):
        run_change(preds[:2], ws, echo=lambda *_: None)


def test_tta_spread_gives_the_bounds(demo_years):
    ws, exports = demo_years
    ring = 20.0
    preds = [oracle_prediction(ws, e, y, ring) for e, y in zip(exports, YEARS)]
    out = run_change(preds, ws, echo=lambda *_: None)
    report = json.loads((out / "change.json").read_text())
    assert "tta spread" in report["method"]["edge_envelope"]
    assert report["method"]["model_term"] == "TTA spread"
    rows = read_rows(out)
    for year, export in zip(YEARS, exports):  # the mean band alone gives the true areas
        assert float(rows["total"][f"area_km2_{year}"]) == pytest.approx(
            sum(truth(export).values()), rel=5e-3)
    lo, hi = float(rows["total"]["rate_edge_low"]), float(rows["total"]["rate_edge_high"])
    def area(year: int, export: Path, by: float) -> float:
        return shapely.union_all([p.buffer(by) for p in glaciers_of(export, year)]).area / 1e6

    # Each year's high bound is its area grown by the 20 m ring, the low bound shrunk by it.
    want = slope_bounds(np.array(YEARS, float),
                        np.array([area(y, e, -ring) for y, e in zip(YEARS, exports)]),
                        np.array([area(y, e, ring) for y, e in zip(YEARS, exports)]))
    assert lo == pytest.approx(want[0], abs=0.01) and hi == pytest.approx(want[1], abs=0.01)
    # The model term is half the distance between the areas at mean - spread and mean + spread.
    for year, export in zip(YEARS, exports):
        half = (area(year, export, ring) - area(year, export, -ring)) / 2
        assert sum(float(r[f"sigma_model_{year}"]) for g, r in rows.items() if g != "total") \
            == pytest.approx(half, rel=0.03)


def test_real_touching_glaciers_on_a_web_mercator_grid(tmp_path):
    """RGI 7 around Hintereisferner (23 glaciers sharing divides), the same perfect prediction
    in two years on a grid that inflates areas 2.1 times: every glacier keeps its inventory
    area (ellipsoidal) and does not change; no synthetic truth, no truth check."""
    from tests.training.test_evaluation import RGI7, perfect_prediction

    preds = []
    for year in (2018, 2021):
        (tmp_path / str(year)).mkdir()
        pred = perfect_prediction(tmp_path / str(year), RGI7, crs="EPSG:3857")
        manifest = json.loads((pred / "prediction.json").read_text())
        (pred / "prediction.json").write_text(json.dumps({**manifest, "year": year}))
        preds.append(pred)
    out = run_change(preds, tmp_path, reference=RGI7, echo=lambda *_: None)
    rows = read_rows(out)
    rgi = gpd.read_file(RGI7)
    for gid, km2 in zip(rgi["rgi_id"], rgi["area_km2"]):
        assert float(rows[gid]["area_km2_2021"]) == pytest.approx(km2, rel=3e-3, abs=2e-3)
        assert float(rows[gid]["rate_km2_per_year"]) == 0
    assert float(rows["total"]["area_km2_2018"]) == pytest.approx(77.67023, rel=2e-3)
    assert json.loads((out / "change.json").read_text())["truth_check"] == {}


@pytest.mark.slow
def test_train_change_on_the_demo_recovers_the_change(demo_years, demo_tiles):
    """The issue's check: a model trained on 2018 measures 2018-2020 within 25 % of the true
    total change, gets the sign of every glacier over 1 km^2 right, and the truth lies within
    the bounds for most glaciers."""
    from gee_export.common.cli import train

    ws, exports = demo_years
    _, tiles = demo_tiles
    invoke(train, ["run", "--tiles", tiles, "--workspace", ws, "--preset", "tiny", "--epochs",
                   60, "--lr", "1e-3", "--batch-size", 2, "--name", "change-2018", "--quiet"])
    ckpt = ws / "runs" / "change-2018" / "best.pt"
    res = invoke(train, ["change", "--checkpoint", ckpt, "--region", "demo", "--years",
                         "2018-2021", "--workspace", ws, "--quiet"])
    assert "no complete export for 2021" in res.output
    assert "no area error model" in res.output  # 2018 not yet evaluated: said, not hidden
    out = ws / "predictions" / "change-2018" / "demo-change"
    check = json.loads((out / "change.json").read_text())["truth_check"]
    assert abs(check["total_change_error"]) < 0.25, check
    assert check["large_glaciers"] >= 1 and check["large_sign_right"] == check["large_glaciers"]
    assert check["coverage90"] >= 0.5 and check["coverage90_glaciers"] >= 4, check
    rows = read_rows(out)
    assert list(rows["total"])[:7] == ["glacier_id", "area_km2_2018", "area_km2_2019",
                                       "area_km2_2020", "area_best_km2_2018",
                                       "area_best_km2_2019", "area_best_km2_2020"]
    # The glacier under 2019's cloud is flagged and left out of its fit that year.
    gap = DemoScene(size=DEMO_TEST_SIZE).cloud_gap[0]
    assert rows[gap]["area_km2_2019"] == "" and rows[gap]["years_used"] == "2018;2020"
    assert float(rows[gap]["observed_2019"]) < 0.9 and "2019" in rows[gap]["flags"]
    assert [f["glacier_id"] for f in check["flagged"]] == [gap]
    assert rows["total"]["area_km2_2019"] != "" and "2019: 1 glacier" in rows["total"]["flags"]
    assert set(rows) == set(truth(exports[0])) | {"total"}
    assert plt.imread(out / "change.png").shape[1] > 1000
    # 2020 scored against 2020's own ice: held out in time, split by the 2018 tiles' ground.
    invoke(train, ["evaluate", "--prediction", out.parent / "demo-2020", "--reference",
                   exports[2] / "truth_outlines.gpkg", "--name", "truth-2020"])
    px = json.loads((out.parent / "demo-2020" / "truth-2020.json").read_text())["pixels"]
    assert px["split"]["relation"] == "other year" and px["training"]["pixels"] > 0
    assert px["headline"] == "validation" and px["validation"]["miou"] > 0.7, px["validation"]
    again = invoke(train, ["change", "--checkpoint", ckpt, "--region", "demo", "--years",
                           "2018-2020", "--workspace", ws])
    assert again.output.count("nothing to do") == 4  # three predictions and the change
    # --tta lives beside it: test_a_tta_change_lives_beside_the_plain_one
    # With the error model of the 2018 scene's validation ground the areas are corrected, and
    # their intervals hold the truth far more often than the uncorrected ones did.
    # With the error model of the 2018 scene's held-out ground the areas are corrected, and
    # their intervals hold the truth at least as often as the uncorrected ones did.
    before = check["area_coverage90"]
    invoke(train, ["evaluate", "--prediction", out.parent / "demo-2018"])
    fitted = json.loads((out.parent / "demo-2018" / "report.json").read_text())[
        "area_error_model"]
    assert fitted["fitted"] and fitted["ground"] == "validation and guard", fitted
    stale = invoke(train, ["change", "--checkpoint", ckpt, "--region", "demo", "--years",
                           "2018-2020", "--workspace", ws], ok=False)
    assert "the area error model (train evaluate, made since)" in stale.output  # refused
    invoke(train, ["change", "--checkpoint", ckpt, "--region", "demo", "--years", "2018-2020",
                   "--workspace", ws, "--force", "--quiet"])
    report = json.loads((out / "change.json").read_text())
    assert report["uncertainty"]["bias_corrected"], report["uncertainty"]
    assert report["uncertainty"]["error_model_source"].startswith("demo-2018/report.json")
    assert report["truth_check"]["area_coverage90"] >= max(0.6, before), report["truth_check"]


def test_predictions_on_other_grids_are_refused_and_gaps_show_in_the_total(demo_years,
                                                                          tmp_path):
    ws, exports = demo_years
    preds = [oracle_prediction(ws, e, y, run="oracle-grids")
             for e, y in zip(exports[:2], YEARS[:2])]
    for i, p in enumerate(preds):
        m = json.loads((p / "prediction.json").read_text())
        (p / "prediction.json").write_text(json.dumps({**m, "grid": {"crs": f"EPSG:3264{i}"}}))
    with pytest.raises(ValueError, match="lies on another grid"):
        run_change(preds, ws, name="grids", echo=lambda *_: None)
    # A data gap over part of the glaciers in one year: the total says how much was seen.
    for p in preds:
        m = json.loads((p / "prediction.json").read_text())
        (p / "prediction.json").write_text(json.dumps({**m, "grid": None}))
    with rasterio.open(preds[1] / "probability.tif", "r+") as f:
        a = f.read(1)
        rows = np.flatnonzero((a == 1).any(axis=1))
        a[rows[0]:rows[len(rows) // 2]] = np.nan
        f.write(a, 1)
    out = run_change(preds, ws, name="gap", echo=lambda *_: None)
    total = read_rows(out)["total"]
    assert 0.2 < float(total["observed_min"]) < 0.9


def test_the_change_map_keeps_one_pixel_margins_visible(tmp_path):
    """At a tenth of the resolution, a block with a single lost or gained pixel shows it; a
    pixel not seen in either year is no data, never gained or lost."""
    from affine import Affine

    from training.plots import _lost_gained

    first = np.zeros((100, 100), np.float32)
    first[:50] = 1.0
    last = first.copy()
    last[5, 5] = 0.0  # lost, in block (0, 0)
    last[55, 55] = 1.0  # gained, in block (5, 5)
    last[15, 15] = 0.0  # lost, in block (1, 1)
    last[65, 15] = 1.0  # gained, in block (6, 1)
    last[90:, 90:] = np.nan  # no data in block (9, 9)
    first[75, 35] = np.nan  # not seen in the first year, ice in the last: not "gained"
    last[75, 35] = 1.0
    dirs = []
    for name, p in (("a", first), ("b", last)):
        d = tmp_path / name
        d.mkdir()
        with rasterio.open(d / "probability.tif", "w", driver="GTiff", width=100, height=100,
                           count=1, dtype="float32", crs="EPSG:32647", nodata=np.nan,
                           transform=Affine(10, 0, 400000, 0, -10, 4300000)) as f:
            f.write(p, 1)
        dirs.append((d, 0.5))
    cls, extent, crs = _lost_gained(dirs, max_side=10)
    assert cls.shape == (10, 10) and crs == "EPSG:32647"
    assert cls[0, 0] == 2 and cls[5, 5] == 3 and cls[9, 9] == 4
    assert cls[1, 1] == 2 and cls[6, 1] == 3 and cls[2, 2] == 1 and cls[7, 7] == 0
    assert cls[7, 3] == 4
    assert extent == (400.0, 401.0, 4299.0, 4300.0)


def _made_by(pred: Path, checkpoint: str, **config) -> Path:
    m = json.loads((pred / "prediction.json").read_text())
    m["parameters"] = {"checkpoint": checkpoint, "checkpoint_sha256": checkpoint * 8,
                       "config": {"threshold": 0.5, "tta": False, **config}}
    (pred / "prediction.json").write_text(json.dumps(m))
    return pred


def test_predictions_made_otherwise_are_not_mixed(demo_years):
    ws, exports = demo_years
    preds = [oracle_prediction(ws, e, y, run="oracle-mixed") for e, y in zip(exports, YEARS)]
    for p in preds:
        _made_by(p, "a.pt")
    _made_by(preds[1], "b.pt")
    with pytest.raises(ValueError, match=r"--checkpoint: a\.pt -> b\.pt"):
        run_change(preds, ws, name="mixed", echo=lambda *_: None)
    _made_by(preds[1], "a.pt", threshold=0.6)
    with pytest.raises(ValueError, match=r"--threshold: 0\.5 -> 0\.6"):
        run_change(preds, ws, name="mixed", echo=lambda *_: None)
    _made_by(preds[1], "a.pt", batch_size=16)  # how it was computed, not what: accepted
    run_change(preds, ws, name="mixed", echo=lambda *_: None)


def test_an_ensemble_spread_is_the_model_term(demo_years):
    """Two members: the truth, and the truth grown by 30 m. Each glacier's model term is the
    standard deviation of its two areas, |a - b| / sqrt(2), as the single-member runs give
    them; the same checkpoint twice is refused."""
    ws, exports = demo_years
    a = [_made_by(oracle_prediction(ws, e, y, run="ens-a"), "a.pt")
         for e, y in zip(exports, YEARS)]
    b = []
    for e, y in zip(exports, YEARS):
        p = _made_by(oracle_prediction(ws, e, y, run="ens-b"), "b.pt")
        with rasterio.open(p / "probability.tif", "r+") as f:
            grown = rasterize([g.buffer(30) for g in glaciers_of(e, y)], out_shape=f.shape,
                              transform=f.transform)
            f.write(grown.astype(np.float32), 1)
        b.append(p)
    single = [read_rows(run_change(m, ws, echo=lambda *_: None)) for m in (a, b)]
    out = run_change(a, ws, name="ensemble", ensemble=[b], echo=lambda *_: None)
    rows = read_rows(out)
    for gid in single[0]:
        if gid == "total":
            continue
        for y in YEARS:
            x, z = (float(s[gid][f"area_km2_{y}"]) for s in single)
            assert float(rows[gid][f"area_km2_{y}"]) == pytest.approx((x + z) / 2, abs=1e-6)
            assert float(rows[gid][f"sigma_model_{y}"]) == pytest.approx(abs(x - z) / 2 ** 0.5,
                                                                         abs=1e-6)
        # The rate's error holds the spread of the members' own rates (each fitted with the
        # ensemble's weights, by numpy here), not of their levels.
        sigma = np.maximum(np.hypot(*[[float(rows[gid][f"sigma_{t}_{y}"]) for y in YEARS]
                                      for t in ("year", "unobserved")]), 1e-4)
        ra, rb = (np.polyfit(YEARS, [float(s[gid][f"area_km2_{y}"]) for y in YEARS], 1,
                             w=1 / sigma)[0] for s in single)
        assert float(rows[gid]["rate_se_ensemble_km2_per_year"]) == pytest.approx(
            abs(ra - rb) / 2 ** 0.5, rel=2e-3, abs=1e-7)  # areas rounded to 1e-6 km^2
    for y in YEARS:  # the total's: the spread of the members' totals, as correlated as it is
        tx, tz = (float(s["total"][f"area_km2_{y}"]) for s in single)
        assert float(rows["total"][f"sigma_model_{y}"]) == pytest.approx(abs(tx - tz) / 2 ** 0.5,
                                                                         rel=1e-3)
    method = json.loads((out / "change.json").read_text())["method"]
    assert method["model_term"] == "ensemble of 2 checkpoints"
    with pytest.raises(ValueError, match="same checkpoint"):
        run_change(a, ws, name="twice", ensemble=[a], echo=lambda *_: None)
    with pytest.raises(ValueError, match="same checkpoint"):  # any pair, not only the first
        run_change(a, ws, name="twice", ensemble=[b, b], echo=lambda *_: None)
    m = json.loads((b[0] / "prediction.json").read_text())
    (b[0] / "prediction.json").write_text(json.dumps({**m, "bands": ["elevation"]}))
    with pytest.raises(ValueError, match="bands: None -> \\['elevation'\\]"):
        run_change(a, ws, name="recipes", ensemble=[b], echo=lambda *_: None)


def test_a_glacier_seen_in_part_is_filled_or_left_out(tmp_path):
    """Real RGI 7 outlines, a perfect prediction in two years, rows of one year without data:
    a glacier seen over 90 % or more is filled to its whole area, with the unseen part's
    area / sqrt(12) as its unobserved term; one seen less gets no area that year."""
    from tests.training.test_evaluation import RGI7, perfect_prediction

    preds = []
    for year, gap in ((2018, None), (2021, slice(600, 640))):
        (tmp_path / str(year)).mkdir()
        pred = perfect_prediction(tmp_path / str(year), RGI7, gap_rows=gap)
        m = json.loads((pred / "prediction.json").read_text())
        (pred / "prediction.json").write_text(json.dumps({**m, "year": year}))
        preds.append(pred)
    rows = read_rows(run_change(preds, tmp_path, reference=RGI7, echo=lambda *_: None))
    rgi = gpd.read_file(RGI7).set_index("rgi_id")
    filled = left_out = 0
    for gid, r in rows.items():
        if gid == "total":
            continue
        seen = float(r["observed_2021"])
        if seen >= 0.9:
            assert float(r["area_km2_2021"]) == pytest.approx(rgi.area_km2[gid], rel=5e-3,
                                                              abs=2e-3)
            unseen = (1 - seen) * rgi.area_km2[gid]  # the inventory's own area
            assert float(r["sigma_unobserved_2021"]) == pytest.approx(unseen / 12 ** 0.5,
                                                                      rel=2e-2, abs=1e-5)
            filled += 0 < unseen
        else:
            assert r["area_km2_2021"] == "" and r["years_used"] == "2018" and r["flags"]
            assert r["rate_ci90_low"] == ""  # one year: no rate
            left_out += 1
    assert filled >= 1 and left_out >= 1
    # The total goes on without the glaciers it cannot fill, and names them.
    assert rows["total"]["area_km2_2021"] != "" and "leaves out" in rows["total"]["flags"]


def test_the_table_corrects_the_bias_and_keeps_the_level_error_out_of_the_rate():
    """change_table on constructed years: three separate glaciers with a known level error
    (mapped 12 m too wide all round) and year-to-year noise. The best area is the measured
    one less mu L; its interval holds the level sigma; the rates are one pooled statsmodels
    fit of the best areas (the level error neither in the weights nor in the standard error);
    the drift term is the bias's standard error times the outlines' slope."""
    import statsmodels.api as sm
    from scipy.stats import t as student

    from gee_export.common.outlines import Outlines
    from training.area_error import AreaErrorModel
    from training.change import YearEstimate, change_table

    geoms = [shapely.box(0, 0, 2000, 1000), shapely.box(5000, 0, 6000, 3000),
             shapely.box(9000, 0, 9500, 500), shapely.box(12000, 0, 12500, 600)]
    ref = Outlines(gpd.GeoDataFrame({"glacier_id": ["A", "B", "C", "D"],
                                     "area_km2": [2.0, 3.0, 0.25, 0.3]}, geometry=geoms,
                                    crs="EPSG:32647"), Path("ref.gpkg"), None, 0)
    years = np.array([2018, 2019, 2020, 2021], float)
    rng = np.random.default_rng(5)
    true = np.array([2.0, 3.0, 0.25])[:, None] - np.array([0.05, 0.02, 0.01])[:, None] * \
        (years - 2018)
    edge = np.array([6.0, 8.0, 2.0])[:, None] - np.array([0.1, 0.05, 0.02])[:, None] * \
        (years - 2018)
    measured = true + 0.012 * edge + 0.004 * rng.standard_normal(true.shape)
    # D vanishes, far from a line: it takes no part in the pooled scatter.
    measured = np.vstack([measured, 0.012 * np.array([2, 1.4, 0.8, 0]) + [0.3, 0.15, 0.05, 0]])
    edge = np.vstack([edge, [2, 1.4, 0.8, 0]])
    zeros = np.zeros(4)
    nan = np.full(4, np.nan)  # no ensemble, no TTA: the model term is not estimated
    estimates = [YearEstimate(int(y), measured[:, j], nan, nan, zeros,
                              np.full(4, 0.01), edge[:, j], np.ones(4), 1.0,
                              measured[:, j] - 0.02, measured[:, j] + 0.02, measured[None, :, j])
                 for j, y in enumerate(years)]
    model = AreaErrorModel(0.012, 0.001, 2e-5, 4e-6, 30, 40.0, 0.5)
    rows, pooled = change_table(ref, estimates, 1e-4, model)
    best = measured - 0.012 * edge
    for i, row in enumerate(rows[:3]):
        for j, y in enumerate(years.astype(int)):
            assert row[f"area_best_km2_{y}"] == pytest.approx(best[i, j], abs=1e-6)
            sigma = row[f"area_sigma_km2_{y}"]
            level = np.sqrt(2e-5 * edge[i, j] + 4e-6 * edge[i, j] ** 2)
            assert row[f"sigma_level_{y}"] == pytest.approx(level)
            assert sigma >= level and row[f"area_ci90_high_{y}"] == pytest.approx(
                row[f"area_best_km2_{y}"] + 1.6448536 * sigma, abs=2e-6)
    X = np.zeros((12, 6))
    for i in range(3):
        X[4 * i:4 * i + 4, 2 * i], X[4 * i:4 * i + 4, 2 * i + 1] = 1, years - years.mean()
    fit = sm.OLS(best[:3].ravel(), X).fit()
    assert pooled["dof"] == 6 and pooled["glaciers_pooled"] == 3 and pooled["year_sigma_km2"] == pytest.approx(
        np.sqrt(fit.scale), rel=1e-5)
    for i, row in enumerate(rows[:3]):
        assert row["rate_km2_per_year"] == pytest.approx(fit.params[2 * i + 1], abs=1e-9)
        assert row["rate_se_year_km2_per_year"] == pytest.approx(fit.bse[2 * i + 1], rel=1e-5)
        drift = 0.001 * abs(np.polyfit(years, edge[i], 1)[0])
        assert row["rate_se_drift_km2_per_year"] == pytest.approx(drift, rel=1e-6)
        se = row["rate_se_km2_per_year"]
        assert se == pytest.approx(np.sqrt(fit.bse[2 * i + 1] ** 2 + drift ** 2 + row[
            "rate_se_threshold_km2_per_year"] ** 2), rel=1e-5)
        assert row["rate_ci90_high"] - row["rate_km2_per_year"] == pytest.approx(
            student.ppf(0.95, 6) * se)
        assert row["significant"] == (row["rate_ci90_high"] < 0)
        assert row["rate_percent_per_year"] == pytest.approx(
            100 * row["rate_km2_per_year"] / best[i, 0])
    assert rows[2]["sigma_divide_2019"] == 0 and rows[0]["sigma_model_2018"] is None
    # D has vanished: its interval starts at no ice, not below it.
    assert rows[3]["area_best_km2_2021"] == 0 and rows[3]["area_ci90_low_2021"] == 0
    assert rows[3]["area_ci90_high_2021"] > 0.025
def _own_workspace(shared: Path, tmp_path: Path) -> Path:
    """A copy of the session's workspace without the products other tests make."""
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(shared, ws, ignore=shutil.ignore_patterns("predictions", "comparisons",
                                                              "stac"))
    return ws


def test_a_tta_change_lives_beside_the_plain_one(demo_years, tiny_run, tmp_path):
    """issue 31, item 5: --tta predicts into REGION-YEAR-tta and measures REGION-change-tta,
    leaving the plain predictions and change as they were; a refusal gives the whole command
    that remakes the prediction, and that command works as given."""
    import shlex

    from gee_export.common.cli import train
    from gee_export.common.layout import file_sha256

    shared, run = tiny_run
    ws = _own_workspace(shared, tmp_path)
    base = ["change", "--checkpoint", ws / "runs" / run.name / "best.pt", "--region", "demo",
            "--years", "2018-2019", "--workspace", ws]
    invoke(train, base + ["--quiet"])
    preds = ws / "predictions" / run.name
    plain = {p: file_sha256(p) for p in sorted(preds.glob("demo-*/*")) if p.is_file()}
    invoke(train, base + ["--tta", "--quiet"])
    assert {"demo-2018", "demo-2019", "demo-change", "demo-2018-tta", "demo-2019-tta",
            "demo-change-tta"} <= {p.name for p in preds.iterdir()}
    assert {p: file_sha256(p) for p in plain} == plain  # the plain change's ground kept
    made = json.loads((preds / "demo-2018-tta" / "prediction.json").read_text())
    assert made["parameters"]["config"]["tta"] is True
    assert invoke(train, base).output.count("nothing to do") == 3
    assert invoke(train, base + ["--tta"]).output.count("nothing to do") == 3
    # a prediction made otherwise (here: by other weights) is refused with a whole command
    made["parameters"]["checkpoint_sha256"] = "0" * 64
    (preds / "demo-2018-tta" / "prediction.json").write_text(json.dumps(made))
    res = invoke(train, base + ["--tta"], ok=False)
    line = res.output.strip().splitlines()[-1]
    assert res.exit_code == 1 and line.startswith("Error:") and res.output.count("Error:") == 1
    command = shlex.split(line.split("`")[1])
    assert command[:2] == ["train", "predict"] and "--tta" in command
    assert command[command.index("--name") + 1] == "demo-2018-tta"
    invoke(train, command[1:] + ["--quiet"])
    invoke(train, base + ["--tta", "--force", "--quiet"])  # the change of the remade year
    assert {p: file_sha256(p) for p in plain} == plain


def test_an_ensemble_is_checked_before_any_member_predicts(demo_years, tiny_run, tmp_path):
    import shutil

    import torch

    from gee_export.common.cli import train

    shared, run = tiny_run
    ws = _own_workspace(shared, tmp_path)
    first = ws / "runs" / run.name / "best.pt"
    ck = torch.load(first, weights_only=True)
    ck["config"]["tiles_id"] = "another tile set"
    (ws / "runs" / "other-tiles").mkdir()
    torch.save(ck, ws / "runs" / "other-tiles" / "best.pt")
    (ws / "runs" / "copy").mkdir()
    shutil.copy(first, ws / "runs" / "copy" / "best.pt")
    for other, said in (("other-tiles", "tiles: "), ("copy", "same checkpoint")):
        res = invoke(train, ["change", "--checkpoint", first, "--checkpoint",
                             ws / "runs" / other / "best.pt", "--region", "demo", "--years",
                             "2018-2019", "--workspace", ws, "--quiet"], ok=False)
        lines = [x for x in res.output.splitlines() if x.strip()]
        assert res.exit_code == 1 and len(lines) == 1, res.output
        assert "--checkpoint" in lines[0] and said in lines[0], lines[0]
        assert not (ws / "predictions").exists()  # nothing predicted first


def test_the_outline_that_takes_the_bias_leaves_speckle_and_divides_out():
    """A 1 km square glacier with a one-pixel hole and a one-pixel island, touching a
    neighbour over 1 km: its margin is its three free sides, pi/4 of them as a smooth line."""
    from training.change import SPECKLE_KM2, edge_km

    glacier = shapely.box(0, 0, 1000, 1000).difference(shapely.box(500, 500, 510, 510))
    speckled = shapely.union(glacier, shapely.box(3000, 0, 3010, 10))
    neighbour = shapely.box(1000, 0, 1500, 1000)
    km = edge_km({1: speckled, 2: neighbour}, 2, np.ones(2))
    assert km == pytest.approx([3.0 * np.pi / 4, 2.0 * np.pi / 4], abs=0.003)  # 1 m snap
    big_hole = shapely.box(0, 0, 1000, 1000).difference(shapely.box(400, 400, 600, 600))
    assert 0.04 > SPECKLE_KM2  # a 0.04 km^2 hole is a margin (a nunatak)
    assert edge_km({1: big_hole}, 1, np.ones(1))[0] == pytest.approx(4.8 * np.pi / 4)


def test_the_error_model_comes_from_a_prediction_made_alike_and_not_remade(tmp_path):
    """Beside a plain and a --tta prediction of the same model, each evaluated: a change of
    plain predictions takes the plain one's model, a --tta change the --tta one's, another
    checkpoint's neither; a prediction remade since its evaluation gives none."""
    from training.change import find_error_model

    run = tmp_path / "predictions" / "run"

    def product(name: str, sha: str, tta: bool, offset: float, evaluated_at: str = "1") -> dict:
        d = run / name
        d.mkdir(parents=True)
        m = {"kind": "prediction", "completed_at": "t1", "year": 2018, "parameters": {
            "checkpoint": "best.pt", "checkpoint_sha256": sha,
            "config": {"threshold": 0.5, "tta": tta, "device": "cpu"}}}
        (d / "prediction.json").write_text(json.dumps(m))
        model = {"offset_km": offset, "offset_se_km": 0.001, "var_per_km": 1e-5,
                 "var_per_km2": 1e-5, "pieces": 9, "length_km": 5.0, "threshold": 0.5}
        (d / "report.json").write_text(json.dumps({
            "kind": "evaluation", "evaluated_at": evaluated_at, "area_error_model": model,
            "parameters": {"prediction_completed_at": "t1"}}))
        return m

    plain = product("demo-2018", "a", False, 0.020)
    tta = product("demo-2018-tta", "a", True, 0.005)
    other = {**plain, "parameters": {**plain["parameters"], "checkpoint_sha256": "b"}}
    assert find_error_model(run / "demo-2019", plain)[0].offset_km == 0.020
    assert find_error_model(run / "demo-2019", plain)[1].startswith("demo-2018/report.json")
    assert find_error_model(run / "demo-2019-tta", tta)[0].offset_km == 0.005
    assert find_error_model(run / "x", other)[0] is None
    remade = json.loads((run / "demo-2018" / "prediction.json").read_text())
    (run / "demo-2018" / "prediction.json").write_text(json.dumps({**remade, "completed_at": "t2"}))
    assert find_error_model(run / "demo-2019", plain)[0] is None


def test_the_truth_check_fits_the_true_areas_over_the_years_the_estimate_used():
    """A glacier left out in 2021 (seen too little) is judged against the true rate over
    2018-2020, as its estimate was fitted, not over every year (-1.0 against -2.5 here)."""
    from training.change import _true_rate

    years = np.array([2018, 2019, 2020, 2021], float)
    truth = np.array([10.0, 9.0, 8.0, 2.0])
    row = {**{f"area_km2_{y}": 1.0 for y in (2018, 2019, 2020)}, "area_km2_2021": None,
           **{f"sigma_year_{y}": 0.1 for y in (2018, 2019, 2020, 2021)},
           **{f"sigma_unobserved_{y}": 0.0 for y in (2018, 2019, 2020, 2021)}}
    assert _true_rate(years, truth, row) == pytest.approx(-1.0)
    assert slope(years, truth) == pytest.approx(-2.5)
