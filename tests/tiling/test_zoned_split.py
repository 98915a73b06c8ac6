"""One split across UTM zones (issue 31): the box across 96 E of tests/test_zoned_region.py,
exported and tiled. The zones' grids overlap by about 2 km across the zone line; split apart,
zone 46N's five validation tiles lay 99.6 % on zone 47N's training tiles (81,563 of 81,920
pixels), and its evaluation called 144,442 pixels of 47N's training ground on 46N's grid
held out. Split once for all zones, and with every zone's training ground counted on each
zone's grid, both are 0."""
import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
from affine import Affine
from click.testing import CliRunner
from rasterio.features import rasterize
from shapely.affinity import translate

from gee_export.common.cli import prep
from gee_export.common.layout import base_manifest
from gee_export.common.tile_index import tiles_id
from gee_export.common.utm import Strip, StripMask
from tests.test_zoned_region import DATA, LINE, _write_sources
from training.evaluation import EvalConfig, evaluate_prediction
from training.heldout import GROUND_TRAINING, GROUND_VALIDATION, training_footprint

SIZE = 128


def run(args):
    r = CliRunner().invoke(prep, [str(a) for a in args])
    assert r.exit_code == 0, r.output + repr(r.exception)
    return r.output


@pytest.fixture(scope="module")
def zoned_tiles(tmp_path_factory):
    """The straddling glacier's 2018 export and its zoned tile set (no training needed)."""
    root = tmp_path_factory.mktemp("zoned-split")
    hef = gpd.read_file(DATA / "Hintereisferner_RGI6.shp")
    w, s, e, n = hef.total_bounds
    moved = hef.set_geometry(hef.geometry.map(lambda g: translate(g, LINE - (w + e) / 2)))
    w, s, e, n = moved.total_bounds
    box = (w - 0.012, s - 0.012, e + 0.012, n + 0.012)
    src, ws = root / "src", root / "ws"
    _write_sources(src, moved.geometry, box, 2018)
    moved[["RGIId", "Area", "geometry"]].to_file(src / "outlines.gpkg", layer="glaciers")
    run(["export", "--region", "straddle", "--bbox", *box, "--year", 2018, "--source-dir", src,
         "--cell-size", 256, "--workers", 1, "--workspace", ws, "--quiet"])
    said = run(["tile", "--export", ws / "exports" / "straddle-2018", "--size", SIZE,
                "--workers", 1, "--workspace", ws, "--quiet"])
    tiles = ws / "tiles" / "straddle-2018"
    return root, tiles, json.loads((tiles / "manifest.json").read_text()), src, said


def zone_rasters(tiles, zone):
    """On one zone's grid: its own validation tiles (from their windows), and every zone's
    and the other zones' training tiles rasterized by rasterio from the index's EPSG:4326
    footprints (pixel centres; every pixel touched)."""
    g = zone["grid"]
    shape, t = (g["height"], g["width"]), Affine(g["res"], 0, g["x0"], 0, -g["res"], g["y0"])
    index = gpd.read_file(tiles / "index.gpkg").to_crs(g["crs"])
    val = np.zeros(shape, bool)
    for _, r in index[(index["zone"] == zone["zone"]) & (index["split"] == "val")].iterrows():
        val[r.row_off:r.row_off + SIZE, r.col_off:r.col_off + SIZE] = True

    def train(frame, touched):
        f = frame[frame["split"] == "train"]
        return (rasterize(f.geometry, out_shape=shape, transform=t, all_touched=touched)
                .astype(bool) if len(f) else np.zeros(shape, bool))

    return val, train(index[index["zone"] != zone["zone"]], True), train(index, False)


def test_no_validation_pixel_of_any_zone_on_another_zones_training_tile(zoned_tiles):
    _, tiles, manifest, _, said = zoned_tiles
    index = gpd.read_file(tiles / "index.gpkg")
    assert sorted(set(index["zone"])) == ["46N", "47N"]
    on_training = {}
    for zone in manifest["zones"]:
        val, other_train, _ = zone_rasters(tiles, zone)
        on_training[zone["zone"]] = int((val & other_train).sum())
    assert on_training == {"46N": 0, "47N": 0}
    # Both sides of the split exist, and the guard gap holds across the zone line: no
    # training tile of one zone within one tile width (less half a pixel) of another zone's
    # validation tile; the zones' grids do overlap.
    utm = index.to_crs("EPSG:32647")
    val, train = utm[utm["split"] == "val"], utm[utm["split"] == "train"]
    assert len(val) and len(train)
    gaps = [min(v.geometry.distance(t.geometry) for _, t in train.iterrows()
                if t["zone"] != v["zone"]) for _, v in val.iterrows()]
    assert min(gaps) >= SIZE * 10 - 5
    z46, z47 = (utm[utm["zone"] == z].union_all() for z in ("46N", "47N"))
    assert z46.intersection(z47).area > 1e6  # over 1 km^2 of ground tiled by both zones
    assert "2 UTM zones" in said


def test_the_zones_record_one_split(zoned_tiles):
    """Each zone's tile set records the joint split (its parameters name every zone), and
    its manifest's counts are the index's."""
    _, tiles, manifest, _, _ = zoned_tiles
    index = gpd.read_file(tiles / "index.gpkg")
    for z in manifest["zones"]:
        part = json.loads((tiles.parent / f"straddle-2018-utm{z['zone']}" / "manifest.json")
                          .read_text())
        assert part["parameters"]["split_algorithm"] == 5
        assert sorted(part["parameters"]["zoned_split"]) == ["46N", "47N"]
        mine = index[index["zone"] == z["zone"]]
        assert {k: part["counts"][k] for k in ("train", "val", "guard")} == \
            {k: int((mine["split"] == k).sum()) for k in ("train", "val", "guard")}


def prediction_on(root, zone, tiles, manifest, outlines):
    """A perfect prediction on a zone's grid (1 on the outline's pixel centres), recorded as
    made by a model trained on the zoned tile set."""
    g = zone["grid"]
    t = Affine(g["res"], 0, g["x0"], 0, -g["res"], g["y0"])
    ref = gpd.read_file(outlines).to_crs(g["crs"])
    prob = rasterize(ref.geometry, out_shape=(g["height"], g["width"]), transform=t)
    out = root / "predictions" / "run" / f"prediction-{zone['zone']}"  # root: the workspace
    out.mkdir(parents=True)
    with rasterio.open(out / "probability.tif", "w", driver="GTiff", width=g["width"],
                       height=g["height"], count=1, dtype="float32", crs=g["crs"],
                       transform=t, nodata=np.nan) as f:
        f.write(prob.astype(np.float32), 1)
    m = base_manifest("prediction", complete=True, completed_at="now", grid=g, year=2018,
                      region="straddle", parameters={"config": {"threshold": 0.5}},
                      trained_on={"tiles": str(tiles), "tiles_id": tiles_id(manifest)})
    (out / "prediction.json").write_text(json.dumps(m))
    return out, m


def test_no_training_pixel_of_any_zone_counts_as_held_out(zoned_tiles):
    root, tiles, manifest, src, _ = zoned_tiles
    strips = {"46N": Strip(None, LINE), "47N": Strip(LINE, None)}
    for zone in manifest["zones"]:
        g = zone["grid"]
        pred, m = prediction_on(root, zone, tiles, manifest, src / "outlines.gpkg")
        ground = training_footprint(pred, m).ground(0, 0, g["height"], g["width"])
        _, _, train_any = zone_rasters(tiles, zone)
        assert int((train_any & (ground != GROUND_TRAINING)).sum()) == 0
        assert not ((ground == GROUND_VALIDATION) & zone_rasters(tiles, zone)[1]).any()
        # The evaluation of the zone's strip: its training pixels are every zone's training
        # ground there (the pixels of a tile edge that a footprint only touches aside).
        strip = strips[zone["zone"]]
        report = evaluate_prediction(pred, src / "outlines.gpkg", EvalConfig(min_area_km2=0.0),
                                     echo=lambda *_: None, strip=strip)
        t = Affine(g["res"], 0, g["x0"], 0, -g["res"], g["y0"])
        in_strip = StripMask(g["crs"], t, strip).window(0, 0, g["height"], g["width"])
        expected = int((train_any & in_strip).sum())
        got = report["pixels"]["training"]["pixels"]
        touched = int(((ground == GROUND_TRAINING) & in_strip).sum())
        assert expected <= got == touched
        assert got - expected <= 4 * SIZE * 4  # the touched edges of a few tiles at most
        assert got > 0


def test_a_random_split_of_zones_guards_across_the_line(zoned_tiles):
    """--split random draws tile by tile over all zones; a training tile that meets another
    zone's validation tile becomes guard."""
    root, tiles, _, _, _ = zoned_tiles
    ws = tiles.parent.parent
    run(["tile", "--export", ws / "exports" / "straddle-2018", "--size", SIZE, "--split",
         "random", "--seed", 42, "--name", "random", "--workers", 1, "--workspace", ws,
         "--quiet"])
    manifest = json.loads((ws / "tiles" / "random" / "manifest.json").read_text())
    index = gpd.read_file(ws / "tiles" / "random" / "index.gpkg")
    assert set(index["split"]) == {"train", "val", "guard"}
    for zone in manifest["zones"]:
        val, other_train, _ = zone_rasters(ws / "tiles" / "random", zone)
        assert val.any() and not (val & other_train).any()


def test_a_zone_left_without_training_tiles_pools_none():
    from tiling.tiles import _BandStats, _train_stats
    from tiling.zoned import pooled_stats

    zone = {"parameters": {"zoned_split": {"46N": "x", "47N": "y"}}}
    assert _train_stats(_BandStats(), zone) == {"pixels": 0, "bands": {}}
    with pytest.raises(Exception, match="no valid pixel"):
        _train_stats(_BandStats(), {"parameters": {}})  # a tile set of one zone needs some
    other = {"pixels": 10, "bands": {"B2": {"mean": 0.5, "std": 0.1}}}
    assert pooled_stats([{"pixels": 0, "bands": {}}, other]) == {
        "pixels": 10, "bands": {"B2": {"mean": 0.5, "std": pytest.approx(0.1)}}}


def test_a_single_zone_split_is_algorithm_4s():
    """The split of a tile set of one zone is unchanged (its labels as algorithm 4 drew them,
    computed with the code before the zones were split together), and records 4."""
    from tiling.split import spatial_split
    from tiling.tiles import SINGLE_ZONE_SPLIT_ALGORITHM, TileConfig, TileInputs

    rr, cc = np.meshgrid(np.arange(6), np.arange(7), indexing="ij")
    keep = (rr + 2 * cc) % 5 != 0
    rows, cols = rr[keep], cc[keep]
    glacier = ((rows * 3 + cols) % 4) / 4

    def drawn(seed, block):
        return "".join(s[0] for s in spatial_split(rows, cols, 0.3, seed, block, 1, glacier))

    assert drawn(7, 2) == "ttgvgttgvvgtttgggtggtttgvgttgvvgt"
    assert drawn(3, 1) == "gttttvgttttvgttgggttgvgggggvvgttv"
    assert SINGLE_ZONE_SPLIT_ALGORITHM == 4
    inputs = TileInputs.__new__(TileInputs)
    inputs.export_dir, inputs.export = Path("/ws/exports/x"), {"parameters": {}}
    from gee_export.common.outlines import read_outlines

    inputs.outlines, inputs.small = read_outlines(
        DATA / "Hintereisferner_RGI6.shp", "EPSG:32632").split_by_area(0.05)
    params = inputs.parameters(Path("/ws/tiles/x"), Path("/ws"), TileConfig())
    assert params["split_algorithm"] == 4 and "zoned_split" not in params
    zoned = inputs.parameters(Path("/ws/tiles/x"), Path("/ws"), TileConfig(), {"46N": "a"})
    assert zoned["split_algorithm"] == 5 and zoned["zoned_split"] == {"46N": "a"}
