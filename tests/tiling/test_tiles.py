"""Tiling on small generated rasters and polygons."""
import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner
from shapely.geometry import box

from gee_export.common.bands import BAND_NAMES
from gee_export.common.errors import GlacierError, InputError
from gee_export.common.grid import Cell, ExportGrid
from gee_export.stack import ExportDir, write_cell_tif
from tiling.split import GUARD, TRAIN, VAL, spatial_split
from tiling.tiles import TileConfig, make_tiles, tile_windows

CRS = "EPSG:32647"
GRID = ExportGrid(CRS, 400_000.0, 4_300_000.0, 256, 256)


def make_export(tmp_path, polygons, nodata_box=None, grid=GRID):
    """A complete export of random values on `grid` with `polygons` as outlines."""
    import geopandas as gpd

    ws = tmp_path / "ws"
    exp = ExportDir.open_or_create(ws, "t-2018", {"test": 1}, {"grid": grid.to_dict()})
    cell = Cell(0, 0, 0, 0, grid.height, grid.width)
    data = np.random.default_rng(0).random((11, grid.height, grid.width), dtype=np.float32)
    if nodata_box:
        r0, r1, c0, c1 = nodata_box
        data[:, r0:r1, c0:c1] = np.nan
    exp.set_plan([cell])
    write_cell_tif(exp.cell_file(cell), grid, cell, data)
    gpd.GeoDataFrame({"id": range(len(polygons))}, geometry=polygons, crs=CRS).to_file(
        exp.path / "outlines.gpkg")
    exp.finish()
    return ws, exp.path


def test_label_edge_area_and_nodata(tmp_path):
    x0, y0 = GRID.x0, GRID.y0
    # A glacier whose west edge runs at x0 + 100.4 px * 10 m: pixel column 100's centre
    # (100.5 px) lies inside, column 99's (99.5) outside.
    poly = box(x0 + 1004, y0 - 1500, x0 + 1804, y0 - 504)
    ws, exp = make_export(tmp_path, [poly], nodata_box=(0, 16, 0, 256))
    out = make_tiles(exp, ws, TileConfig(size=128, split="random", min_area_km2=0.0,
                                         min_valid=0.0), echo=lambda *a: None)
    with rasterio.open(out / "labels" / "t0000_0000.tif") as lb, \
            rasterio.open(out / "images" / "t0000_0000.tif") as im:
        lbl = lb.read(1)
        assert lb.transform == im.transform == GRID.transform
        assert im.descriptions == BAND_NAMES
    assert (lbl[:16] == 255).all()  # stack nodata -> 255
    row = 100  # inside the polygon's rows (51 .. 149)
    assert lbl[row, 99] == 0 and lbl[row, 100] == 1
    m = json.loads((out / "manifest.json").read_text())
    la = m["label_area"]
    # 80 px wide x 99.6 px tall; rasterized 80 x 100 (rows 51..150 centres inside 50.4..150)
    assert la["polygons_km2"] == pytest.approx(poly.area / 1e6, rel=1e-6)
    assert abs(la["relative_difference"]) < 0.01


def test_tile_windows_aligned_and_transforms(tmp_path):
    wins = list(tile_windows(GRID, 128, 64))
    assert [(w[2], w[3]) for w in wins][:3] == [(0, 0), (0, 64), (0, 128)]
    assert all(w[2] + 128 <= 256 and w[3] + 128 <= 256 for w in wins)
    ws, exp = make_export(tmp_path, [box(GRID.x0 + 100, GRID.y0 - 2000, GRID.x0 + 2000,
                                         GRID.y0 - 100)])
    out = make_tiles(exp, ws, TileConfig(size=64, split="random", min_area_km2=0),
                     echo=lambda *a: None)
    with rasterio.open(out / "images" / "t0001_0002.tif") as src:
        assert src.transform.c == GRID.x0 + 2 * 64 * 10 and src.transform.f == GRID.y0 - 640


def test_spatial_split_guard_gap_and_fraction():
    rows, cols = np.divmod(np.arange(400), 20)
    labels = spatial_split(rows, cols, 0.3, seed=1, block=4, guard=1,
                           glacier=np.random.default_rng(0).random(400))
    lab = np.array(labels)
    val = set(zip(rows[lab == VAL], cols[lab == VAL]))
    for r, c in zip(rows[lab == TRAIN], cols[lab == TRAIN]):
        assert all((r + dr, c + dc) not in val for dr in (-1, 0, 1) for dc in (-1, 0, 1))
    frac = (lab == VAL).sum() / ((lab == VAL).sum() + (lab == TRAIN).sum())
    assert 0.25 < frac < 0.4 and (lab == GUARD).any()
    assert spatial_split(rows, cols, 0.3, 1, 4, 1) == spatial_split(rows, cols, 0.3, 1, 4, 1)
    assert spatial_split(rows, cols, 0.3, 1, 4, 1) != spatial_split(rows, cols, 0.3, 2, 4, 1)


def test_demo_tiles_split_distance_and_index(demo_tiles):
    import geopandas as gpd

    ws, tiles = demo_tiles
    m = json.loads((tiles / "manifest.json").read_text())
    assert m["complete"] and m["split_distance_m"] >= 128 * 10
    idx = gpd.read_file(tiles / "index.gpkg")
    assert set(idx["split"]) <= {TRAIN, VAL, GUARD}
    assert m["splits"]["train"]["tiles"] == (idx["split"] == TRAIN).sum()
    assert set(m["train_stats"]["bands"]) == set(BAND_NAMES)
    assert (tiles / "overview.png").stat().st_size > 1000


def test_resume_after_interruption(tmp_path):
    ws, exp = make_export(tmp_path, [box(GRID.x0 + 100, GRID.y0 - 2000, GRID.x0 + 2000,
                                         GRID.y0 - 100)])
    cfg = TileConfig(size=64, split="random", min_area_km2=0)
    out = make_tiles(exp, ws, cfg, echo=lambda *a: None)
    ref = json.loads((out / "manifest.json").read_text())
    victim = out / "labels" / "t0000_0001.tif"
    victim.unlink()
    m = dict(ref, complete=False)
    (out / "manifest.json").write_text(json.dumps(m))
    make_tiles(exp, ws, cfg, echo=lambda *a: None)
    again = json.loads((out / "manifest.json").read_text())
    assert victim.is_file() and again["complete"]
    assert again["splits"] == ref["splits"] and again["train_stats"] == ref["train_stats"]


def test_bad_inputs(tmp_path):
    far = box(0, 0, 1000, 1000)
    ws, exp = make_export(tmp_path, [far])
    with pytest.raises(GlacierError, match="do not overlap the stack"):
        make_tiles(exp, ws, TileConfig(size=64, min_area_km2=0), echo=lambda *a: None)
    with pytest.raises(GlacierError, match="larger than the scene"):
        make_tiles(exp, ws, TileConfig(size=512), echo=lambda *a: None)
    with pytest.raises(GlacierError, match="strictly between 0 and 1"):
        make_tiles(exp, ws, TileConfig(size=64, val_fraction=1.2), echo=lambda *a: None)
    bad = tmp_path / "bad.gpkg"
    bad.write_text("not a geopackage")
    with pytest.raises(GlacierError, match="cannot be read"):
        make_tiles(exp, ws, TileConfig(size=64), outlines_path=bad, echo=lambda *a: None)
    assert not (ws / "tiles").exists() or not list((ws / "tiles").rglob("*.partial"))


def test_unit_histograms_match_numpy_histogram():
    from tiling.tiles import STAT_BINS, unit_histograms

    v = np.random.default_rng(3).random((11, 4000), dtype=np.float32)
    v[0, :4] = [0.0, 1.0, 0.9999999, 0.5]  # both ends and an exact bin edge
    want = np.stack([np.histogram(b, STAT_BINS, (0.0, 1.0))[0] for b in v])
    np.testing.assert_array_equal(unit_histograms(v), want)


QUIET = dict(echo=lambda *a: None, quiet=True)
SQUARE_KM = 1000.0  # side of a 1 km^2 square, m


def labels_of(out):
    with rasterio.open(out / "labels" / "t0000_0000.tif") as src:
        return src.read(1)


@pytest.mark.parametrize("rule, value", [("ignore", 255), ("background", 0), ("glacier", 1)])
def test_small_glaciers_get_their_own_label(tmp_path, rule, value):
    x0, y0 = GRID.x0, GRID.y0
    large = box(x0 + 100, y0 - 100 - SQUARE_KM, x0 + 100 + SQUARE_KM, y0 - 100)  # 1 km^2
    small = box(x0 + 1500, y0 - 1700, x0 + 1700, y0 - 1500)  # 0.04 km^2, rows/cols 150..169
    ws, exp = make_export(tmp_path, [large, small])
    out = make_tiles(exp, ws, TileConfig(size=256, split="random", small_glaciers=rule),
                     **QUIET)
    lbl = labels_of(out)
    assert (lbl[150:170, 150:170] == value).all()
    assert (lbl[10:110, 10:110] == 1).all()  # the large one is glacier whatever the rule
    small_px = {v: 400 if v == value else 0 for v in (0, 1, 255)}  # a hand count
    assert (lbl == 1).sum() == 100 * 100 + small_px[1]
    assert (lbl == 255).sum() == small_px[255]
    assert (lbl == 0).sum() == 256 * 256 - 100 * 100 - 400 + small_px[0]
    small_rec = json.loads((out / "manifest.json").read_text())["outlines"]["small"]
    assert small_rec["count"] == 1 and small_rec["label"] == rule
    assert small_rec["area_km2"] == pytest.approx(small.area / 1e6, rel=5e-3)  # ellipsoid ~ UTM


def test_auto_block_falls_back_until_the_split_works(tmp_path):
    # 5 x 3 tiles, as the demo scene at 512 px: blocks of 4 leave validation twice its share.
    grid = ExportGrid(CRS, 400_000.0, 4_300_000.0, 5 * 64, 3 * 64)
    poly = [box(grid.x0 + 50, grid.y0 - 1800, grid.x0 + 3000, grid.y0 - 50)]
    ws, exp = make_export(tmp_path, poly, grid=grid)
    out = make_tiles(exp, ws, TileConfig(size=64), **QUIET)
    m = json.loads((out / "manifest.json").read_text())
    share = m["counts"]["val"] / (m["counts"]["val"] + m["counts"]["train"])
    assert m["block_tiles"] < 4 and abs(share - 0.3) <= 0.1


def test_failed_split_leaves_nothing_that_blocks_the_rerun(tmp_path):
    grid = ExportGrid(CRS, 400_000.0, 4_300_000.0, 2 * 64, 64)  # two tiles: no guarded split
    ws, exp = make_export(tmp_path, [box(grid.x0 + 50, grid.y0 - 600, grid.x0 + 1200,
                                         grid.y0 - 50)], grid=grid)
    with pytest.raises(InputError, match="leaves one side empty"):
        make_tiles(exp, ws, TileConfig(size=64), **QUIET)
    assert not (ws / "tiles" / "t-2018").exists()
    out = make_tiles(exp, ws, TileConfig(size=64, split="random"), **QUIET)  # no --force
    assert json.loads((out / "manifest.json").read_text())["complete"]


def test_corrupt_or_missing_tiles_are_named_and_rewritten(tmp_path):
    ws, exp = make_export(tmp_path, [box(GRID.x0 + 100, GRID.y0 - 2000, GRID.x0 + 2000,
                                         GRID.y0 - 100)])
    cfg = TileConfig(size=64, split="random", min_area_km2=0)
    out = make_tiles(exp, ws, cfg, **QUIET)
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert len(files) == 2 * 16
    truncated, flipped, gone = (out / "images/t0001_0001.tif", out / "labels/t0002_0003.tif",
                                out / "images/t0003_0000.tif")

    def flip_a_byte():
        data = bytearray(flipped.read_bytes())
        data[len(data) // 2] ^= 0xFF
        flipped.write_bytes(bytes(data))

    truncated.write_bytes(truncated.read_bytes()[:1000])
    flip_a_byte()
    gone.unlink()
    said = []
    make_tiles(exp, ws, cfg, echo=said.append, quiet=True)  # a cheap check finds two ...
    assert "2 tile file(s) are corrupt or missing" in said[0]
    assert "images/t0001_0001.tif" in said[0] and "images/t0003_0000.tif: missing" in said[0]
    assert "1 tile(s) did not match their recorded checksums" in said[-2]  # ... the rerun all
    assert json.loads((out / "manifest.json").read_text())["files"] == files
    flip_a_byte()
    said.clear()
    make_tiles(exp, ws, cfg, echo=said.append, quiet=True)  # sizes only: not seen
    assert said[0].endswith("are complete; nothing to do")
    said.clear()
    make_tiles(exp, ws, cfg, echo=said.append, quiet=True, verify=True)
    assert "labels/t0002_0003.tif: checksum differs" in said[0]
    said.clear()
    make_tiles(exp, ws, cfg, echo=said.append, quiet=True, verify=True)
    assert said == ["tiles %s are complete; 32 files match their checksums; nothing to do" % out]
    assert json.loads((out / "manifest.json").read_text())["files"] == files  # same bytes


def test_moved_workspace_reruns_as_a_no_op(tmp_path):
    import shutil

    ws, exp = make_export(tmp_path, [box(GRID.x0 + 100, GRID.y0 - 2000, GRID.x0 + 2000,
                                         GRID.y0 - 100)])
    cfg = TileConfig(size=64, split="random", min_area_km2=0)
    make_tiles(exp, ws, cfg, **QUIET)
    moved = tmp_path / "elsewhere" / "ws2"
    shutil.move(ws, moved)
    said = []
    make_tiles(moved / "exports" / "t-2018", moved, cfg, echo=said.append, quiet=True)
    assert said == [f"tiles {moved / 'tiles' / 't-2018'} are complete; nothing to do"]


def test_invalid_outlines_are_repaired_and_counted(tmp_path):
    from shapely.geometry import Polygon

    x, y = GRID.x0 + 200, GRID.y0 - 200
    bowtie = Polygon([(x, y), (x + 1500, y - 1500), (x + 1500, y), (x, y - 1500)])
    assert not bowtie.is_valid
    ws, exp = make_export(tmp_path, [bowtie, box(x + 1800, y - 1500, x + 2300, y)])
    said = []
    make_tiles(exp, ws, TileConfig(size=64, split="random", min_area_km2=0), echo=said.append,
               quiet=True)
    assert any(s.startswith("repaired 1 invalid outline polygon(s) in ") for s in said), said
    m = json.loads((ws / "tiles" / exp.name / "manifest.json").read_text())
    # The repaired bow tie keeps both of its triangles: 2 x 1500^2 / 4 m^2, plus the box.
    assert m["label_area"]["polygons_km2"] == pytest.approx(2 * 1.5 ** 2 / 4 + 0.5 * 1.5,
                                                           rel=1e-6)


def test_a_damaged_manifest_is_replaced_with_force(tmp_path):
    from gee_export.common.errors import StateError

    ws, exp = make_export(tmp_path, [box(GRID.x0 + 100, GRID.y0 - 2000, GRID.x0 + 2000,
                                         GRID.y0 - 100)])
    cfg = TileConfig(size=64, split="random", min_area_km2=0)
    out = make_tiles(exp, ws, cfg, echo=lambda *a: None, quiet=True)
    (out / "manifest.json").write_text('{"format_version": 1, "kind": "til')
    with pytest.raises(StateError, match="not a valid JSON manifest.*rerun with --force"):
        make_tiles(exp, ws, cfg, echo=lambda *a: None, quiet=True)
    make_tiles(exp, ws, cfg, force=True, echo=lambda *a: None, quiet=True)
    assert json.loads((out / "manifest.json").read_text())["complete"]


def test_tiles_stay_current_when_a_cell_of_their_export_is_made_again(demo_tiles, tmp_path,
                                                                      cli):
    """A deleted cell exported again with the same options once made `prep tile` ask for
    --force: the export's completion time changed, though nothing else did."""
    import shutil

    from gee_export.common.cli import prep

    ws = tmp_path / "ws"
    shutil.copytree(demo_tiles[0], ws, ignore=shutil.ignore_patterns("runs", "predictions"))
    exp = ws / "exports" / "demo-2018"
    sorted((exp / "stack").glob("*.tif"))[0].unlink()
    export = ["export", "--region", "demo", "--year", 2018, "--demo-size", 512, "--cell-size",
              256, "--workspace", ws, "--quiet"]
    assert "making that again" in cli(prep, export).output
    tile = ["tile", "--export", exp, "--workspace", ws, "--size", 128, "--block-tiles", 1,
            "--quiet"]
    assert "are complete; nothing to do" in cli(prep, tile).output
    cli(prep, export + ["--force"])  # replaced: the tiles are of another export now
    res = CliRunner().invoke(prep, [str(a) for a in tile])
    assert res.exit_code == 1 and "made with other options (--export (made again since)" in res.output


def test_tiles_made_before_the_export_id_are_still_current(tmp_path):
    ws, exp = make_export(tmp_path, [box(GRID.x0 + 100, GRID.y0 - 2000, GRID.x0 + 2000,
                                         GRID.y0 - 100)])
    cfg = TileConfig(size=64, split="random", min_area_km2=0)
    out = make_tiles(exp, ws, cfg, **QUIET)
    m = json.loads((out / "manifest.json").read_text())
    p = m["parameters"]
    p["export_completed_at"] = json.loads((exp / "export.json").read_text())["completed_at"]
    del p["export_id"]
    (out / "manifest.json").write_text(json.dumps(m))
    said = []
    make_tiles(exp, ws, cfg, echo=said.append, quiet=True)
    assert said[0].endswith("are complete; nothing to do")
    # and before the outlines were identified by their features (by the file's checksum)
    from gee_export.common.layout import file_sha256

    p["outlines_sha256"] = file_sha256(exp / "outlines.gpkg")
    del p["outlines_features"]
    (out / "manifest.json").write_text(json.dumps(m))
    make_tiles(exp, ws, cfg, echo=said.append, quiet=True)
    assert said[-1].endswith("are complete; nothing to do")


def test_outlines_are_the_same_by_their_features_not_their_bytes(tmp_path):
    """issue 31, item 6: the export's outlines written again with the same features (new
    bytes, as `prep export --force` writes them) leave the tiles current; another id or
    another geometry does not, and is named."""
    import geopandas as gpd

    from gee_export.common.layout import file_sha256

    polygons = [box(GRID.x0 + 100, GRID.y0 - 2000, GRID.x0 + 2000, GRID.y0 - 100),
                box(GRID.x0 + 1500, GRID.y0 - 2400, GRID.x0 + 2300, GRID.y0 - 1900)]
    ws, exp = make_export(tmp_path, polygons)
    cfg = TileConfig(size=64, split="random", min_area_km2=0)
    make_tiles(exp, ws, cfg, **QUIET)
    frame, before = gpd.read_file(exp / "outlines.gpkg"), file_sha256(exp / "outlines.gpkg")
    (exp / "outlines.gpkg").unlink()
    frame.iloc[::-1].to_file(exp / "outlines.gpkg")  # the same features, in another order
    assert file_sha256(exp / "outlines.gpkg") != before
    said = []
    make_tiles(exp, ws, cfg, echo=said.append, quiet=True)
    assert said[-1].endswith("are complete; nothing to do"), said
    for changed in (frame.assign(id=[0, 7]), frame.set_geometry(frame.geometry.translate(10))):
        (exp / "outlines.gpkg").unlink()
        changed.to_file(exp / "outlines.gpkg")
        with pytest.raises(GlacierError, match=r"--outlines \(ids and geometries\)"):
            make_tiles(exp, ws, cfg, **QUIET)


def test_partial_tiles_left_by_a_kill_are_cleaned_by_the_next_run(tmp_path):
    ws, exp = make_export(tmp_path, [box(GRID.x0 + 100, GRID.y0 - 2000, GRID.x0 + 2000,
                                         GRID.y0 - 100)])
    cfg = TileConfig(size=64, split="random", min_area_km2=0)
    out = make_tiles(exp, ws, cfg, **QUIET)
    left = out / "images" / ".t0000_0001.4242.partial.tif"
    left.write_bytes(b"half a tile")
    said = []
    make_tiles(exp, ws, cfg, echo=said.append, quiet=True)
    assert said[0] == f"removed 1 unfinished file(s) an interrupted run left in {out}"
    assert not left.exists() and said[-1].endswith("nothing to do")


def test_verify_only_verifies_and_says_which_set(tmp_path):
    """`prep tile --verify` without --export once cut a new tile set for the newest export."""
    import shutil

    from gee_export.common.cli import prep

    ws, exp = make_export(tmp_path, [box(GRID.x0 + 100, GRID.y0 - 2000, GRID.x0 + 2000,
                                         GRID.y0 - 100)])
    out = make_tiles(exp, ws, TileConfig(size=64, split="random", min_area_km2=0), **QUIET)
    newer = exp.parent / "u-2019"
    shutil.copytree(exp, newer)  # a newer export, not tiled

    def verify(*args):
        return CliRunner().invoke(prep, ["tile", "--verify", "--workspace", str(ws), "--quiet",
                                         *map(str, args)])

    data = bytearray((out / "labels/t0001_0002.tif").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (out / "labels/t0001_0002.tif").write_bytes(bytes(data))
    res = verify()
    assert res.exit_code == 0, res.output
    assert res.output.splitlines()[0] == f"verifying {out}"
    assert "labels/t0001_0002.tif: checksum differs" in res.output
    assert sorted(p.name for p in (ws / "tiles").iterdir() if not p.name.startswith(".")) \
        == ["t-2018"]
    res = verify()
    assert "32 files match their checksums; nothing to do" in res.output

    make_tiles(newer, ws, TileConfig(size=128, split="random", min_area_km2=0), **QUIET)
    res = verify()
    assert res.exit_code == 1 and res.output.strip().splitlines() == [
        f"Error: --verify: 2 tile sets in {ws / 'tiles'} (t-2018, u-2019); choose one with "
        "--name"]
    assert verify("--name", "u-2019").output == (f"tiles {ws / 'tiles' / 'u-2019'} are "
                                                 "complete; 8 files match their checksums; "
                                                 "nothing to do\n")
    assert verify("--export", exp).output.startswith(f"verifying {out}")
    res = verify("--size", 64)
    assert res.exit_code == 1 and "--size: --verify checks a tile set with the parameters" \
        in res.output
    shutil.rmtree(ws / "tiles")
    res = verify()
    assert res.exit_code == 1 and "no complete tile set in" in res.output
    assert not [p for p in (ws / "tiles").glob("*") if not p.name.startswith(".")]


def test_verify_refuses_tiles_whose_inputs_changed(tmp_path):
    import geopandas as gpd

    from tiling.verify import verify_tiles

    ws, exp = make_export(tmp_path, [box(GRID.x0 + 100, GRID.y0 - 2000, GRID.x0 + 2000,
                                         GRID.y0 - 100)])
    out = make_tiles(exp, ws, TileConfig(size=64, split="random", min_area_km2=0), **QUIET)
    before = json.loads((out / "manifest.json").read_text())
    gpd.GeoDataFrame({"id": [0]}, geometry=[box(GRID.x0, GRID.y0 - 900, GRID.x0 + 900, GRID.y0)],
                     crs=CRS).to_file(exp / "outlines.gpkg")
    with pytest.raises(GlacierError, match=r"inputs changed since the tiles were cut "
                                           r"\(--outlines \(ids and geometries\): \w{12} -> "
                                           r"\w{12}\).*"
                                           r"prep tile --force"):
        verify_tiles(ws, **QUIET)
    assert json.loads((out / "manifest.json").read_text()) == before


def test_outlines_of_several_layers_and_stray_points(tmp_path):
    import geopandas as gpd
    from shapely.geometry import Point

    from gee_export.common.vectors import write_gpkg_layers
    from tiling.verify import verify_tiles

    ws, exp = make_export(tmp_path, [box(GRID.x0 + 100, GRID.y0 - 2000, GRID.x0 + 2000,
                                         GRID.y0 - 100)])
    glacier = box(GRID.x0 + 300, GRID.y0 - 1500, GRID.x0 + 1500, GRID.y0 - 300)
    inv = tmp_path / "inventory.gpkg"
    write_gpkg_layers({"old": gpd.GeoDataFrame(geometry=[glacier.buffer(200)], crs=CRS),
                       "new": gpd.GeoDataFrame(geometry=[glacier, Point(GRID.x0 + 50,
                                                                        GRID.y0 - 50)],
                                               crs=CRS)}, inv)
    cfg = TileConfig(size=64, split="random", min_area_km2=0)
    with pytest.raises(InputError, match=r"hold 2 layers \(old \(Polygon\), new \(Unknown\)\)"):
        make_tiles(exp, ws, cfg, inv, **QUIET)
    said = []
    out = make_tiles(exp, ws, cfg, inv, echo=said.append, quiet=True, outlines_layer="new")
    assert f"ignored 1 point(s) in {inv} (layer new): only polygons are glaciers" in said
    m = json.loads((out / "manifest.json").read_text())
    assert m["parameters"]["outlines_layer"] == "new" and m["outlines"]["layer"] == "new"
    assert m["outlines"]["ignored"] == {"point(s)": 1}
    assert m["outlines"]["area_km2"] == pytest.approx(1.2 * 1.2, rel=1e-3)  # the new layer's
    said.clear()
    verify_tiles(ws, echo=said.append, quiet=True)  # with the layer the set was cut from
    assert said[-1].endswith("files match their checksums; nothing to do")
