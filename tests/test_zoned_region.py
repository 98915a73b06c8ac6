"""A region across a UTM zone line, through every stage: a real RGI glacier (Hintereisferner,
RGI 6) moved east along its own latitude so that 96 E (the line between zones 46 and 47) cuts
it, local sources drawn from its outline, then export -> tile -> train -> predict ->
evaluate. Moving a polygon along its latitude leaves its ellipsoidal area as it is (8.036
km^2), so the merged glacier has a known area on both sides of the line."""
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.features import rasterize
from shapely.affinity import translate

from gee_export.common.cli import prep, train
from gee_export.common.outlines import ellipsoidal_area_km2
from gee_export.common.utm import Strip, clip_to_strip, split_region, zone_parts
from gee_export.config import Normalization

DATA = Path(__file__).parent / "data" / "oggm"
LINE = 96.0  # zones 46 | 47
STEP = 1e-4  # degrees per source pixel (8 m x 11 m here)
ICE = {"B2": 7500, "B3": 8000, "B4": 7800, "B8": 7000, "B11": 500, "SCL": 11}
ROCK = {"B2": 1500, "B3": 1600, "B4": 1700, "B8": 2000, "B11": 2500, "SCL": 5}


def b3_normalized(dn: float) -> float:
    lo, hi = Normalization.fixed().ranges["B3"]
    return (dn / 10000 - lo) / (hi - lo)


SHRINK_M = 40.0  # 2019: the glacier 40 m smaller all round


@pytest.fixture(scope="module")
def straddling(tmp_path_factory):
    """Sources (EPSG:4326, 1e-4 degree pixels) of one glacier cut by 96 E, and its outline;
    in 2019 the same glacier SHRINK_M smaller all round."""
    root = tmp_path_factory.mktemp("zoned")
    hef = gpd.read_file(DATA / "Hintereisferner_RGI6.shp")
    w, s, e, n = hef.total_bounds
    moved = hef.set_geometry(hef.geometry.map(lambda g: translate(g, LINE - (w + e) / 2)))
    w, s, e, n = moved.total_bounds
    box = (w - 0.012, s - 0.012, e + 0.012, n + 0.012)
    utm = moved.estimate_utm_crs()
    shrunk = moved.to_crs(utm).buffer(-SHRINK_M).to_crs(moved.crs)
    sources = {}
    for year, glacier in ((2018, moved.geometry), (2019, shrunk)):
        sources[year] = root / f"src{year}"
        _write_sources(sources[year], glacier, box, year)
        moved[["RGIId", "Area", "geometry"]].to_file(sources[year] / "outlines.gpkg",
                                                     layer="glaciers")
    return root, sources, moved, box, gpd.GeoDataFrame(geometry=shrunk, crs=moved.crs)


def _write_sources(src: Path, glacier, box: tuple, year: int) -> None:
    src.mkdir()
    width, height = int(round((box[2] - box[0]) / STEP)), int(round((box[3] - box[1]) / STEP))
    t = Affine(STEP, 0, box[0], 0, -STEP, box[3])
    ice = rasterize(glacier, (height, width), transform=t).astype(bool)
    prof = dict(driver="GTiff", width=width, height=height, crs="EPSG:4326", transform=t)

    def write(name, bands, dtype, values):
        with rasterio.open(src / name, "w", count=len(bands), dtype=dtype, **prof) as f:
            for i, b in enumerate(bands, 1):
                f.write(np.where(ice, values[0][b], values[1][b]).astype(dtype), i)
                f.set_band_description(i, b)

    write(f"S2_{year}-08-01_L2A.tif", list(ICE), "uint16", (ICE, ROCK))
    write(f"S1_{year}-07-10_dB.tif", ["VV", "VH"], "float32",
          ({"VV": -16.0, "VH": -24.0}, {"VV": -8.0, "VH": -15.0}))
    dem = 3000 + 200 * np.linspace(0, 1, width)[None, :] * np.ones((height, 1))
    with rasterio.open(src / "DEM_SRTM.tif", "w", count=1, dtype="float32", **prof) as f:
        f.write(dem.astype("float32"), 1)


@pytest.fixture(scope="module")
def chain(straddling):
    """export -> tile -> train (one epoch) -> predict -> evaluate on the straddling region.
    The prediction's model is an oracle (ice where the stack's green reflectance is nearer the
    ice's than the rock's: a band the warp mixes linearly, so the edge lies where half a
    pixel is ice) read through the trained checkpoint's band statistics, so what is measured
    is the zones' geometry, not how well one epoch learned. Holes are kept (--max-hole 0):
    the glacier's nunataks are part of its RGI area."""
    from click.testing import CliRunner

    import training.predict.model as predict_module
    from training.models import build_model  # noqa: F401 (the checkpoint's real model)

    root, sources, moved, box, _ = straddling
    ws = root / "ws"
    runner = CliRunner()

    def run(group, args):
        r = runner.invoke(group, [str(a) for a in args])
        assert r.exit_code == 0, r.output + repr(r.exception)
        return r.output

    exported = "".join(run(prep, ["export", "--region", "straddle", "--bbox", *box, "--year",
                                  year, "--source-dir", src, "--cell-size", 256, "--workers", 1,
                                  "--workspace", ws, "--quiet"]) for year, src in sources.items())
    tiled = run(prep, ["tile", "--export", ws / "exports" / "straddle-2018", "--size", 128,
                       "--workers", 1, "--workspace", ws, "--quiet"])
    run(train, ["run", "--tiles", ws / "tiles" / "straddle-2018", "--preset", "tiny", "--epochs", 1,
                "--batch-size", 8, "--workers", 0, "--name", "oracle", "--workspace", ws,
                "--quiet"])
    import json

    tiles = json.loads((ws / "tiles" / "straddle-2018" / "manifest.json").read_text())
    stats = tiles["train_stats"]["bands"]["B3"]
    cut = (b3_normalized(ICE["B3"]) + b3_normalized(ROCK["B3"])) / 2
    real_load = predict_module.load_model

    class Oracle(__import__("torch").nn.Module):
        def __init__(self, meta):
            super().__init__()
            self.i = meta["band_names"].index("B3")
            self.cut = (cut - stats["mean"]) / stats["std"]

        def forward(self, x):
            logit = 50.0 * (x[:, self.i] - self.cut)
            return __import__("torch").stack([-logit, logit], 1)

    def oracle(checkpoint, device):
        _, meta = real_load(checkpoint, device)
        return Oracle(meta), meta

    predict_module.load_model = oracle
    checkpoint = ws / "runs" / "oracle" / "best.pt"
    try:
        predicted = run(train, ["predict", "--checkpoint", checkpoint, "--max-hole", 0,
                                "--workspace", ws, "--quiet"])  # the zoned export it trained on
        predicted += run(train, ["predict", "--checkpoint", checkpoint, "--export",
                                 ws / "exports" / "straddle-2019", "--max-hole", 0,
                                 "--workspace", ws, "--quiet"])
        changed = run(train, ["change", *(a for y in sources for a in (
            "--predictions", ws / "predictions" / "oracle" / f"straddle-{y}")), "--quiet"])
    finally:
        predict_module.load_model = real_load
    pred = ws / "predictions" / "oracle" / "straddle-2018"
    evaluated = run(train, ["evaluate", "--prediction", pred]) + changed
    (root / "chain_output.txt").write_text(exported + tiled + predicted + evaluated)
    return ws, pred, moved, exported + tiled + predicted + evaluated


def test_a_box_across_96e_is_exported_in_one_part_per_zone(chain):
    import json

    ws, _, _, out = chain
    zones = json.loads((ws / "exports" / "straddle-2018" / "zones.json").read_text())
    assert [p["zone"] for p in zones["parts"]] == ["46N", "47N"]
    crs = [json.loads((ws / "exports" / f"straddle-2018-utm{z}" / "export.json").read_text())
           ["parameters"]["grid"]["crs"] for z in ("46N", "47N")]
    assert crs == ["EPSG:32646", "EPSG:32647"]
    assert zones["complete"] and "zoned export complete" in out
    assert f"--export: {ws / 'exports' / 'straddle-2018'} (the model's training region" in out
    # one reference for the zoned products: every zone's glaciers once, in EPSG:4326
    merged = gpd.read_file(ws / "exports" / "straddle-2018" / "outlines.gpkg")
    assert merged.crs.to_epsg() == 4326 and len(merged) == 1


def test_a_zone_records_the_glaciers_on_its_grid_only(tmp_path):
    """Of three glaciers, one in each zone and one across the line, each zone's export
    records the two on its grid."""
    import json

    from shapely.geometry import box as lonlat_box

    from gee_export.common.grid import region_from_lonlat
    from gee_export.common.utm import split_region
    from gee_export.export import record_outlines
    from gee_export.stack import ExportDir

    frame = gpd.GeoDataFrame({"glacier_id": ["W", "X", "E"]}, geometry=[
        lonlat_box(95.5, 30.4, 95.51, 30.41), lonlat_box(95.99, 30.4, 96.01, 30.41),
        lonlat_box(96.49, 30.4, 96.5, 30.41)], crs="EPSG:4326")
    for part, ids in zip(split_region(region_from_lonlat("x", (95.4, 30.3, 96.6, 30.5))),
                         (["W", "X"], ["E", "X"])):
        d = tmp_path / part.zone
        d.mkdir()
        exp = ExportDir(d, {"region": part.to_dict(),
                            "parameters": {"grid": part.grid.to_dict()}})
        record_outlines(exp, frame.to_crs(part.crs), "test")
        assert sorted(gpd.read_file(d / "outlines.gpkg")["glacier_id"]) == ids
        assert json.dumps(exp.manifest["outlines"]["count"]) == "2"


def test_the_cut_glacier_is_one_polygon_with_the_sum_of_its_parts_area(chain):
    ws, pred, moved, _ = chain
    truth = float(ellipsoidal_area_km2(list(moved.geometry), "EPSG:4326")[0])
    assert truth == pytest.approx(8.036, abs=0.001)  # the RGI area, moved along its latitude
    merged = gpd.read_file(pred / "glaciers.gpkg", layer="glaciers")
    assert merged.crs.to_epsg() == 4326
    big = merged[merged["area_km2"] > 1]
    assert len(big) == 1  # one glacier again, across the line
    w, _, e, _ = big.total_bounds
    assert w < LINE < e
    area = float(big["area_km2"].iloc[0])
    assert area == pytest.approx(truth, rel=0.005)
    parts = [gpd.read_file(ws / "predictions" / "oracle" / f"straddle-2018-utm{z}" / "glaciers.gpkg",
                           layer="glaciers") for z in ("46N", "47N")]
    strips = [Strip(None, LINE), Strip(LINE, None)]
    pieces = [clip_to_strip(p[p["area_km2"] > 1], s) for p, s in zip(parts, strips)]
    sides = [float(ellipsoidal_area_km2(list(p.geometry), "EPSG:4326").sum()) for p in pieces]
    assert min(sides) > 2  # the line cuts it well inside
    assert area == pytest.approx(sum(sides), rel=1e-6)
    means = [float(p["mean_probability"].iloc[0]) for p in pieces]
    assert float(big["mean_probability"].iloc[0]) == pytest.approx(
        sum(m * a for m, a in zip(means, sides)) / sum(sides), rel=1e-9)
    assert means[0] != means[1]  # so the weighting is seen
    # each zone predicted beyond its line (its grid reaches 1 km past it): more than its side
    whole = [float(p[p["area_km2"] > 1]["area_km2"].sum()) for p in parts]
    assert all(a > side + 0.3 for a, side in zip(whole, sides))
    by_glacier = gpd.read_file(pred / "glaciers.gpkg", layer="by_glacier")
    assert list(by_glacier["glacier_id"]) == [moved["RGIId"].iloc[0]]
    assert float(by_glacier["area_km2"].iloc[0]) == pytest.approx(truth, rel=0.005)


def test_evaluation_adds_the_zones_up_once(chain):
    import json

    _, pred, moved, out = chain
    report = json.loads((pred / "report.json").read_text())
    (row,) = report["per_glacier"]["glaciers"]
    truth = float(ellipsoidal_area_km2(list(moved.geometry), "EPSG:4326")[0])
    assert row["glacier_id"] == moved["RGIId"].iloc[0]
    assert sorted(row["zones"]) == ["46N", "47N"]
    assert row["reference_km2"] == pytest.approx(truth, rel=0.005)
    assert row["predicted_km2"] == pytest.approx(truth, rel=0.005)
    assert row["observed_fraction"] == pytest.approx(1.0)
    assert not any(Path(z["report"]).is_absolute() for z in report["zones"])  # relocatable
    zone_reports = [json.loads((pred / z["report"]).read_text()) for z in report["zones"]]
    sides = [z["per_glacier"]["glaciers"][0]["reference_km2"] for z in zone_reports]
    assert min(sides) > 2 and sum(sides) == pytest.approx(row["reference_km2"])
    cms = sum(np.array(z["pixels"]["all"]["confusion_matrix"]) for z in zone_reports)
    assert report["pixels"]["all"]["confusion_matrix"] == cms.tolist()
    assert report["pixels"]["all"]["iou_glacier"] > 0.95
    # each zone found its own training tiles in the zoned tile set, on its own grid
    assert all(z["pixels"]["split"]["relation"] == "same scene" for z in zone_reports)
    assert report["pixels"]["training"]["pixels"] > 0 and report["pixels"]["held_out"]


def test_the_catalog_holds_every_zoned_product(chain):
    """The zoned export, tile set, predictions and change are items of their own (the merged
    glaciers.gpkg, with its QGIS style beside it, among the prediction's assets), derived from
    their zones' items; every href resolves."""
    import pystac

    ws, pred, _, _ = chain
    assert (pred / "glaciers.qml").is_file()
    for f in ws.rglob("*.json"):  # every manifest and report: relative within the workspace
        assert str(ws) not in f.read_text(), f
    cat = pystac.Catalog.from_file(str(ws / "stac" / "catalog.json"))
    items = {(i.collection_id, i.id): i for i in cat.get_items(recursive=True)}
    zoned = {("exports", "straddle-2018"): "outlines", ("tiles", "straddle-2018"): "index",
             ("predictions", "oracle-straddle-2018"): "outlines",
             ("predictions", "oracle-straddle-2019"): "outlines",
             ("changes", "oracle-straddle-change"): "change_csv"}
    for key, asset in zoned.items():
        assert key in items, (key, sorted(items))
        item = items[key]
        assert Path(item.assets[asset].get_absolute_href()).is_file()
        w, _, e, _ = item.bbox
        assert w < LINE < e  # over both zones
        assert len([link for link in item.links if link.rel == "derived_from"]) >= 2
    assert "style_glaciers" in items[("predictions", "oracle-straddle-2018")].assets
    for item in items.values():
        for key, a in item.assets.items():
            assert Path(a.get_absolute_href()).is_file(), (item.id, key)
        for link in item.links:
            if link.rel == "derived_from":
                assert Path(link.get_absolute_href()).is_file(), (item.id, link.href)


def test_zone_parts_of_boxes():
    assert [z for z, _ in zone_parts((95.5, 30, 96.5, 31))] == ["46N", "47N"]
    assert zone_parts((95.5, 30, 96.5, 31))[0][1] == Strip(None, 96.0)
    assert [z for z, _ in zone_parts((90.1, 30, 95.9, 31))] == ["46N"]
    assert [z for z, _ in zone_parts((65, 26, 105, 46))] == [f"{z}N" for z in range(41, 49)]
    assert [z for z, _ in zone_parts((-70, -40, -60, -30))] == ["19S", "20S"]
    # an edge on a zone line, or past it by less than a pixel, adds no zone
    assert [z for z, _ in zone_parts((90, 30, 96, 31))] == ["46N"]
    assert [z for z, _ in zone_parts((95.9, 30, 96.0000001, 30.1))] == ["46N"]
    assert [z for z, _ in zone_parts((95.9999999, 30, 96.1, 30.1))] == ["47N"]
    assert [z for z, _ in zone_parts((95.9, 30, 96.001, 30.1))] == ["46N", "47N"]


def test_each_part_grid_reaches_past_its_zone_line_and_stays_in_its_zone():
    from pyproj import Transformer

    from gee_export.common.grid import region_from_lonlat

    parts = split_region(region_from_lonlat("x", (95.5, 30.0, 96.5, 31.0)))
    assert [p.crs for p in parts] == ["EPSG:32646", "EPSG:32647"]
    for p, reach in zip(parts, (1, -1)):
        to_lon = Transformer.from_crs(p.crs, "EPSG:4326", always_xy=True)
        w, s, e, n = p.grid.bounds
        lons = [to_lon.transform(x, y)[0] for x in (w, e) for y in (s, n)]
        # at every corner the grid reaches at least 900 m beyond 96 E (1 km margin)
        beyond = [(lon - LINE) * reach for lon in (lons[2:] if reach > 0 else lons[:2])]
        assert min(beyond) * 111.32 * np.cos(np.radians(31)) > 0.9


def test_hma_dry_run_prints_a_plan_per_zone_and_in_total(cli, tmp_path):
    import json

    r = cli(prep, ["export", "--region", "hma", "--year", 2018, "--dry-run",
                   "--workspace", tmp_path])
    for z in range(41, 49):
        assert f"UTM zone {z}N: plan for hma on EPSG:326{z}" in r.output
    # without outlines no zone is known to hold glaciers, and the planned cells' planar km^2
    # (the zones' overlapping grids) are not the region's: each said for what it is
    assert "total over 8 UTM zones of the box (no outlines to choose them)" in r.output
    assert "upper bound" in r.output and "with glaciers" not in r.output
    assert "km^2 of planned cells (planar, on the zones' UTM grids" in r.output
    assert "computePixels requests" in r.output
    plan = json.loads(r.output[r.output.index("{"):])
    assert plan["total"]["cells"] == sum(z["cells"] for z in plan["zones"])
    assert plan["total"]["region_km2"] == pytest.approx(7.96e6, rel=0.005)  # the box's
    assert plan["total"]["area_km2"] > 1.1 * plan["total"]["region_km2"]  # the grids'
    assert f"the region itself is {plan['total']['region_km2']:.0f} km^2 on the ellipsoid" \
        in r.output
    assert plan["earth_engine"]["requests"] == plan["total"]["cells"]


def test_batch_dry_run_counts_queue_waves(cli, tmp_path):
    import json

    r = cli(prep, ["export", "--region", "hma", "--year", 2018, "--dry-run", "--to", "gcs",
                   "--bucket", "b", "--workspace", tmp_path])
    plan = json.loads(r.output[r.output.index("{"):])
    ee = plan["earth_engine"]
    assert ee["tasks"] == plan["total"]["cells"]
    assert ee["queue_waves"] == -(-ee["tasks"] // 3000) > 1


def test_crs_forces_one_grid_and_qilian_stays_one(cli, tmp_path):
    r = cli(prep, ["export", "--bbox", 95.5, 30, 96.5, 30.2, "--crs", "EPSG:32646", "--year",
                   2018, "--dry-run", "--workspace", tmp_path])
    assert "UTM zone" not in r.output and "EPSG:32646" in r.output
    r = cli(prep, ["export", "--region", "qilian", "--year", 2018, "--dry-run",
                   "--workspace", tmp_path])
    assert "UTM zone" not in r.output and "EPSG:32647" in r.output


def test_change_adds_the_zones_up_per_year(chain, straddling):
    """2018 -> 2019 with the glacier 40 m smaller all round: the zoned change measures each
    year's whole glacier once (each zone on its own strip) and writes a map per zone."""
    import csv

    ws, _, moved, _ = chain
    *_, shrunk = straddling
    truth = {2018: float(ellipsoidal_area_km2(list(moved.geometry), "EPSG:4326")[0]),
             2019: float(ellipsoidal_area_km2(list(shrunk.geometry), "EPSG:4326")[0])}
    out = ws / "predictions" / "oracle" / "straddle-change"
    with open(out / "change.csv", newline="") as f:
        rows = {r["glacier_id"]: r for r in csv.DictReader(f)}
    row = rows[moved["RGIId"].iloc[0]]
    for year, area in truth.items():
        assert float(row[f"area_km2_{year}"]) == pytest.approx(area, rel=0.005)
        assert float(row[f"observed_{year}"]) == pytest.approx(1.0)
    rate = float(row["rate_km2_per_year"])
    assert rate == pytest.approx(truth[2019] - truth[2018], rel=0.1) and rate < -0.5
    assert (out / "change-46N.tif").is_file() and (out / "change-47N.tif").is_file()
    outlines = gpd.read_file(out / "change.gpkg")
    assert outlines.crs.to_epsg() == 4326 and sorted(outlines["year"]) == [2018, 2019]
    for _, o in outlines.iterrows():
        w, _, e, _ = o.geometry.bounds
        assert w < LINE < e


def test_verify_repairs_a_zone_tile_and_links_the_zoned_set_to_it(chain, cli):
    """A tile damaged in place (the zoned set's hard link sees it too): `prep tile --verify`
    of the zoned set repairs the zone's file and links the set to the new one; before, a
    zone repaired on its own left the set on the damaged file while it said nothing to do."""
    import json
    import os

    from gee_export.common.layout import file_sha256

    ws = chain[0]
    zone, zoned = ws / "tiles" / "straddle-2018-utm46N", ws / "tiles" / "straddle-2018"
    tile = sorted((zone / "images").glob("*.tif"))[0]
    with open(tile, "r+b") as f:
        f.seek(1000)
        f.write(b"garbage")
    linked = zoned / "images" / "46N" / tile.name
    assert os.path.samefile(tile, linked)
    # the zone alone first: repaired under a new file, which the set no longer shares
    said = cli(prep, ["tile", "--name", zone.name, "--verify", "--workspace", ws]).output
    assert "making that again" in said and not os.path.samefile(tile, linked)
    said = cli(prep, ["tile", "--export", ws / "exports" / "straddle-2018", "--verify",
                      "--workspace", ws]).output
    assert "are not their zone's" in said and os.path.samefile(tile, linked)
    recorded = json.loads((zoned / "manifest.json").read_text())["files"]
    assert file_sha256(linked) == recorded[f"images/46N/{tile.name}"][1]
    assert "nothing to do" in cli(prep, ["tile", "--export", ws / "exports" / "straddle-2018",
                                         "--size", 128, "--workers", 1, "--workspace", ws]
                                  ).output
