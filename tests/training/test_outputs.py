"""Outputs that plug into what users already run: every raster a COG, a STAC catalog of the
workspace, outlines as GeoParquet, and QGIS styles beside the outputs."""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from xml.etree import ElementTree as ET

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from rio_cogeo.cogeo import cog_validate

from gee_export.common.cli import train
from gee_export.common.qml import CHANGE_GAINED, CHANGE_LOST, CHANGE_NODATA, CHANGE_STABLE
from gee_export.common.stac import update_catalog, write_catalog
from training.change_map import change_classes

SCHEMAS = Path(__file__).parents[1] / "data" / "stac_schemas"
# The fixture's model is trained for two epochs: its probabilities lie just around 0.5, so a
# threshold just below gives polygons to compare.
THRESHOLD = 0.49


@pytest.fixture(scope="module")
def outputs(tiny_run, demo_export, tmp_path_factory):
    """A prediction with both outline formats, evaluated: every stage has run once, in a copy
    of the session's workspace without the products other tests make by hand."""
    from tests.helpers import invoke

    shared, shared_run = tiny_run
    ws = tmp_path_factory.mktemp("outputs") / "ws"
    shutil.copytree(shared, ws, ignore=shutil.ignore_patterns("predictions", "comparisons",
                                                              "stac"))
    run, exp = ws / "runs" / shared_run.name, ws / "exports" / demo_export[1].name
    invoke(train, ["predict", "--checkpoint", run / "best.pt", "--export", exp, "--workspace", ws,
                   "--format", "both", "--name", "outputs", "--threshold", THRESHOLD, "--quiet"])
    pred = ws / "predictions" / run.name / "outputs"
    invoke(train, ["evaluate", "--prediction", pred])
    return ws, pred


def _catalog(ws: Path):
    import pystac

    return pystac.Catalog.from_file(str(ws / "stac" / "catalog.json"))


# -- COG ----------------------------------------------------------------------------------------

def test_every_raster_the_stages_write_is_a_cog(outputs):
    ws, pred = outputs
    tifs = [p for d in ("exports", "tiles", "predictions") for p in (ws / d).rglob("*.tif")]
    assert pred / "probability.tif" in tifs and any("/images/" in str(p) for p in tifs)
    bad = {str(p): cog_validate(str(p), quiet=True)[1:] for p in tifs
           if not cog_validate(str(p), quiet=True)[0]}
    assert not bad
    with rasterio.open(pred / "probability.tif") as f:
        assert f.overviews(1) == [2]  # 512 px: one level, down to one 256 px block


# -- GeoParquet ---------------------------------------------------------------------------------

def test_geoparquet_outlines_equal_the_geopackage(outputs):
    import pyarrow.parquet as pq

    _, pred = outputs
    gpkg = gpd.read_file(pred / "glaciers.gpkg", layer="glaciers")
    parquet = gpd.read_parquet(pred / "glaciers.parquet")
    assert len(gpkg) > 0 and list(parquet.columns) == list(gpkg.columns)
    assert parquet.crs == gpkg.crs
    assert gpkg.equals(parquet)
    assert b"geo" in pq.read_schema(pred / "glaciers.parquet").metadata  # GeoParquet metadata


def test_format_on_a_complete_prediction_adds_the_missing_file(outputs, tiny_run, demo_export,
                                                               cli):
    ws, run = tiny_run
    _, exp = demo_export
    args = ["predict", "--checkpoint", run / "best.pt", "--export", exp, "--workspace", ws,
            "--name", "outputs-gpkg", "--quiet"]
    cli(train, args)
    pred = ws / "predictions" / run.name / "outputs-gpkg"
    assert (pred / "glaciers.gpkg").is_file() and not (pred / "glaciers.parquet").exists()
    res = cli(train, args + ["--format", "parquet"])
    assert "writing the outlines as parquet" in res.output
    assert gpd.read_parquet(pred / "glaciers.parquet").equals(
        gpd.read_file(pred / "glaciers.gpkg", layer="glaciers"))
    res = cli(train, args + ["--format", "both"])
    assert "nothing to do" in res.output and "writing" not in res.output


def test_bad_format_is_one_error_line(cli, tmp_path):
    res = cli(train, ["predict", "--checkpoint", __file__, "--format", "shp"], ok=False)
    assert res.exit_code != 0
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and "--format" in errors[0]


# -- STAC ---------------------------------------------------------------------------------------

def test_catalog_round_trips_and_every_asset_exists(outputs):
    import pystac

    ws, pred = outputs
    cat = _catalog(ws)
    assert {c.id for c in cat.get_children()} == {"exports", "tiles", "predictions", "changes"}
    items = list(cat.get_items(recursive=True))
    for item in items:
        for key, asset in item.assets.items():
            assert Path(asset.get_absolute_href()).is_file(), (item.id, key, asset.href)
        for link in item.links:
            if link.rel == "derived_from":
                assert Path(link.get_absolute_href()).is_file(), (item.id, link.href)
    # pystac writes back what it read
    again = pystac.Item.from_dict(items[0].to_dict(), preserve_dict=False)
    assert again.to_dict() == items[0].to_dict()


def test_items_describe_cells_and_predictions(outputs, demo_export):
    ws, pred = outputs
    _, exp = demo_export
    export = json.loads((exp / "export.json").read_text())
    cat = _catalog(ws)
    cells = [i for i in cat.get_child("exports").get_items()  # other tests add other years
             if i.id.startswith("demo-2018-")]
    assert sorted(i.id for i in cells) == sorted(f"demo-2018-{c}" for c in export["cells"])
    cell = cells[0]
    assert cell.properties["synthetic"] is True
    assert cell.properties["proj:code"] == export["grid"]["crs"]
    assert cell.properties["start_datetime"] == "2018-07-01T00:00:00Z"  # the composite window
    assert cell.properties["end_datetime"] == "2018-09-30T23:59:59Z"
    data = cell.assets["data"]
    assert data.media_type == "image/tiff; application=geotiff; profile=cloud-optimized"
    assert len(data.extra_fields["raster:bands"]) == 11
    assert data.extra_fields["raster:bands"][0]["nodata"] == "nan"
    with rasterio.open(data.get_absolute_href()) as f:
        assert cell.properties["proj:transform"] == list(f.transform)[:6]
        assert cell.properties["proj:shape"] == list(f.shape)

    item = cat.get_child("predictions").get_item(f"tiny-fixture-{pred.name}")
    assert {"probability", "outlines", "outlines_parquet", "style_probability",
            "style_glaciers", "report_report"} <= set(item.assets)
    sources = {link.get_target_str().split("/")[-2] for link in item.links
               if link.rel == "derived_from"}
    assert {i.id for i in cells} <= sources
    assert any(link.rel == "derived_from" and link.href.endswith("best.pt")
               for link in item.links)
    tiles = cat.get_child("tiles").get_item("demo-2018")
    assert {"index", "manifest", "overview"} <= set(tiles.assets)


def test_catalog_is_relative_and_survives_a_move(outputs, tmp_path):
    ws, pred = outputs
    for f in ws.rglob("*.json"):  # the catalog, every manifest and every report
        assert str(ws) not in f.read_text(), f
    assert json.loads((pred / "report.json").read_text())["prediction"] == "."
    moved = tmp_path / "moved"
    shutil.copytree(ws, moved, ignore=shutil.ignore_patterns("*.pt", "sources"))
    cat = _catalog(moved)
    for item in cat.get_items(recursive=True):
        for asset in item.assets.values():
            assert Path(asset.get_absolute_href()).is_relative_to(moved)
            assert Path(asset.get_absolute_href()).is_file()


def test_items_validate_against_the_extension_schemas(outputs):
    """Offline, against the projection v2.0.0 and raster v1.1.0 schemas shipped in
    tests/data/stac_schemas (Apache-2.0)."""
    import jsonschema

    ws, _ = outputs
    validators = {}
    for f in SCHEMAS.glob("*.json"):
        schema = json.loads(f.read_text())
        validators[schema["$id"].rstrip("#")] = jsonschema.Draft7Validator(schema)
    n = 0
    for f in (ws / "stac").rglob("*.json"):
        d = json.loads(f.read_text())
        if d.get("type") != "Feature":
            continue
        assert set(d["stac_extensions"]) <= set(validators), d["stac_extensions"]
        for uri in d["stac_extensions"]:
            validators[uri].validate(d)
        n += 1
    assert n >= 6


def test_catalog_that_cannot_be_written_is_a_warning(tmp_path):
    (tmp_path / "stac").write_text("a file where the catalog goes")
    said = []
    assert update_catalog(tmp_path, said.append) is None
    assert len(said) == 1 and said[0].startswith("warning: the STAC catalog")


def test_a_product_the_catalog_cannot_read_is_left_out_and_named(outputs, tmp_path):
    ws, _ = outputs
    moved = tmp_path / "ws"
    shutil.copytree(ws, moved, ignore=shutil.ignore_patterns("*.pt", "sources"))
    odd = moved / "predictions" / "hand" / "made"
    odd.mkdir(parents=True)
    (odd / "prediction.json").write_text(json.dumps({"kind": "prediction", "complete": True}))
    said = []
    assert update_catalog(moved, said.append) == moved / "stac" / "catalog.json"
    assert len(said) == 1 and str(odd) in said[0] and "KeyError: 'export'" in said[0]
    ids = {i.id for i in _catalog(moved).get_items(recursive=True)}
    assert "tiny-fixture-outputs" in ids and "hand-made" not in ids


def test_rewrite_removes_what_is_gone_and_keeps_the_rest(outputs, tmp_path):
    ws, _ = outputs
    moved = tmp_path / "ws"
    shutil.copytree(ws, moved, ignore=shutil.ignore_patterns("*.pt", "sources"))
    shutil.rmtree(moved / "tiles")
    before = (moved / "stac" / "exports" / "collection.json").stat().st_mtime_ns
    write_catalog(moved)
    assert not (moved / "stac" / "tiles" / "demo-2018").exists()
    assert (moved / "stac" / "exports" / "collection.json").stat().st_mtime_ns == before
    assert not list(moved.glob(".stac-*"))


def test_a_rerun_with_nothing_to_do_drops_a_product_deleted_by_hand(outputs, tmp_path, cli):
    """No dangling href: a prediction removed by hand is gone from the catalog after any
    command on the workspace, a rerun with nothing to do included."""
    from gee_export.common.cli import prep

    ws, pred = outputs
    moved = tmp_path / "ws"
    shutil.copytree(ws, moved, ignore=shutil.ignore_patterns("sources"))
    gone = moved / "predictions" / pred.parent.name / pred.name
    assert f"{pred.parent.name}-{pred.name}" in {i.id for i in _catalog(moved).get_items(
        recursive=True)}
    shutil.rmtree(gone)
    said = cli(prep, ["tile", "--export", moved / "exports" / "demo-2018", "--size", 128,
                      "--block-tiles", 1, "--workspace", moved, "--quiet"]).output
    assert "nothing to do" in said
    items = list(_catalog(moved).get_items(recursive=True))
    assert f"{pred.parent.name}-{pred.name}" not in {i.id for i in items}
    for item in items:
        for asset in item.assets.values():
            assert Path(asset.get_absolute_href()).is_file(), (item.id, asset.href)


# -- QGIS styles --------------------------------------------------------------------------------

def test_styles_sit_beside_the_outputs_and_say_what_qgis_reads(outputs):
    _, pred = outputs
    prob = ET.parse(pred / "probability.qml").getroot()
    assert prob.tag == "qgis"
    r = prob.find("pipe/rasterrenderer")
    assert r.get("type") == "singlebandpseudocolor" and r.get("band") == "1"
    items = r.findall("rastershader/colorrampshader/item")
    values = [float(i.get("value")) for i in items]
    assert values == sorted(values) and values[0] == 0 and values[-1] == 1
    marked = [i for i in items if "threshold" in i.get("label")]
    assert len(marked) == 1 and float(marked[0].get("value")) == THRESHOLD
    below = items[values.index(max(v for v in values if v < THRESHOLD))]
    assert below.get("color") != marked[0].get("color")  # the ramp jumps at the threshold

    outl = ET.parse(pred / "glaciers.qml").getroot()
    rend = outl.find("renderer-v2")
    assert rend.get("type") == "graduatedSymbol"
    field = rend.get("attr")
    assert field in gpd.read_file(pred / "glaciers.gpkg", layer="glaciers").columns
    ranges = [(float(x.get("lower")), float(x.get("upper"))) for x in rend.findall("ranges/range")]
    assert ranges[0][0] == 0 and ranges[-1][1] == 1
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    names = {s.get("name") for s in rend.findall("symbols/symbol")}
    assert {x.get("symbol") for x in rend.findall("ranges/range")} == names


# -- change map ---------------------------------------------------------------------------------

def test_change_classes():
    first = np.array([[0.9, 0.9, 0.1, 0.1, np.nan, 0.9]], np.float32)
    last = np.array([[0.9, 0.1, 0.9, 0.1, 0.9, np.nan]], np.float32)
    np.testing.assert_array_equal(change_classes(first, 0.5, last, 0.5),
                                  [[CHANGE_STABLE, CHANGE_LOST, CHANGE_GAINED, 0,
                                    CHANGE_NODATA, CHANGE_NODATA]])
    # each year at its own threshold
    assert change_classes(first[:, :1], 0.95, last[:, :1], 0.5)[0, 0] == CHANGE_GAINED


@pytest.mark.slow
def test_change_writes_a_class_cog_its_style_and_a_catalog_item(outputs, demo_years, tiny_run,
                                                                cli):
    ws, pred = outputs
    _, run = tiny_run
    _, exports = demo_years
    cli(train, ["predict", "--checkpoint", run / "best.pt", "--export", exports[2],
                "--workspace", ws, "--name", "outputs-2020", "--threshold", THRESHOLD, "--quiet"])
    last = ws / "predictions" / run.name / "outputs-2020"
    cli(train, ["change", "--predictions", pred, "--predictions", last, "--workspace", ws,
                "--name", "outputs-change", "--quiet"])
    out = ws / "predictions" / run.name / "outputs-change"
    ok, errors, warnings = cog_validate(str(out / "change.tif"), quiet=True)
    assert ok and not errors and not warnings
    with rasterio.open(out / "change.tif") as c, rasterio.open(pred / "probability.tif") as a, \
            rasterio.open(last / "probability.tif") as b:
        classes = c.read(1)
        np.testing.assert_array_equal(classes, change_classes(a.read(1), THRESHOLD, b.read(1),
                                                              THRESHOLD))
        assert {CHANGE_STABLE, CHANGE_LOST, CHANGE_GAINED} <= set(np.unique(classes))
        assert c.nodata == CHANGE_NODATA
        assert c.overviews(1) == [2]  # classes: nearest (GDAL's takes each block's first)
        np.testing.assert_array_equal(c.read(1, out_shape=(c.height // 2, c.width // 2)),
                                      classes[::2, ::2])
    palette = ET.parse(out / "change.qml").getroot().findall("pipe/rasterrenderer/colorPalette/"
                                                             "paletteEntry")
    assert {int(e.get("value")): e.get("label") for e in palette} == {
        CHANGE_STABLE: "ice in both years (stable)", CHANGE_LOST: "ice lost",
        CHANGE_GAINED: "ice gained"}
    item = _catalog(ws).get_child("changes").get_item(f"{run.name}-outputs-change")
    assert {"change", "style_change", "manifest", "change_csv", "change_gpkg",
            "change_png"} <= set(item.assets)  # each file its own asset
    assert item.properties["start_datetime"] == "2018-07-01T00:00:00Z"
    assert item.properties["end_datetime"] == "2020-09-30T23:59:59Z"
    sources = {link.get_target_str().split("/")[-2] for link in item.links
               if link.rel == "derived_from"}
    assert sources == {f"{run.name}-outputs", f"{run.name}-outputs-2020"}
