"""The demo export through the CLI: products, resume, grid alignment, bad input."""
import json

import numpy as np
import pytest
import rasterio
from click.testing import CliRunner

from gee_export.common.bands import BAND_NAMES
from gee_export.common.cli import prep


def test_demo_export_products(demo_export):
    ws, exp = demo_export
    m = json.loads((exp / "export.json").read_text())
    assert m["complete"] and m["synthetic"] and m["format_version"] == 1
    assert abs(m["dem"]["offset_m"] - (-31.7)) < 0.5  # the generator's geoid undulation
    assert m["images"]["s2_count"] >= 1 and m["images"]["s1_count"] == 2
    assert set(m["cells"]) == {p.stem for p in (exp / "stack").glob("*.tif")}
    with rasterio.open(exp / "stack.vrt") as src:
        assert src.descriptions == BAND_NAMES and src.crs.to_epsg() == 32647
        assert src.transform.c % 10 == 0 and src.transform.f % 10 == 0
        a = src.read(masked=False)
    valid = np.isfinite(a)
    assert valid.any(axis=0).mean() > 0.5
    assert (a[valid] >= 0).all() and (a[valid] <= 1).all()
    assert (valid.all(axis=0) == valid.any(axis=0)).all()  # nodata in all bands at once
    assert not list(exp.rglob("*.partial"))


def test_rerun_skips_and_resume_finishes(demo_export, tmp_path, cli):
    ws, exp = demo_export
    res = cli(prep, ["export", "--region", "demo", "--year", 2018, "--demo-size", 512,
                        "--cell-size", 256, "--workspace", ws, "--quiet"])
    assert "nothing to do" in res.output
    # Simulate a kill midway: one cell lost, manifest says incomplete.
    ws2 = tmp_path / "ws2"
    import shutil

    shutil.copytree(ws, ws2, ignore=shutil.ignore_patterns("tiles"))
    exp2 = ws2 / "exports" / "demo-2018"
    m = json.loads((exp2 / "export.json").read_text())
    m["complete"] = False
    victim = sorted(m["cells"])[0]
    m["cells"][victim]["state"] = "pending"
    (exp2 / "export.json").write_text(json.dumps(m))
    (exp2 / "stack" / f"{victim}.tif").unlink()
    (exp2 / "stack.vrt").unlink()
    before = (exp / "stack" / f"{victim}.tif")
    cli(prep, ["export", "--region", "demo", "--year", 2018, "--demo-size", 512,
                  "--cell-size", 256, "--workspace", ws2, "--quiet"])
    m2 = json.loads((exp2 / "export.json").read_text())
    assert m2["complete"] and (exp2 / "stack.vrt").is_file()
    with rasterio.open(before) as a, rasterio.open(exp2 / "stack" / f"{victim}.tif") as b:
        assert np.array_equal(a.read(), b.read(), equal_nan=True)


def test_two_years_align_pixel_for_pixel(demo_export, cli):
    ws, exp = demo_export
    cli(prep, ["export", "--region", "demo", "--year", 2019, "--demo-size", 512,
                  "--cell-size", 256, "--workspace", ws, "--quiet"])
    with rasterio.open(exp / "stack.vrt") as a, \
            rasterio.open(ws / "exports" / "demo-2019" / "stack.vrt") as b:
        assert a.transform == b.transform and a.shape == b.shape and a.crs == b.crs
        # same terrain, different weather: elevation equal, optical not identical
        ea, eb = a.read(11), b.read(11)
        both = np.isfinite(ea) & np.isfinite(eb)
        assert both.mean() > 0.9 and np.allclose(ea[both], eb[both])
        assert not np.array_equal(a.read(3), b.read(3), equal_nan=True)


def test_dry_run_qilian_needs_no_network(tmp_path, cli):
    res = cli(prep, ["export", "--region", "qilian", "--year", 2018, "--dry-run",
                        "--workspace", tmp_path])
    assert "EPSG:32647" in res.output and "cells" in res.output
    plan = json.loads(res.output[res.output.index("{"):])
    assert plan["cells"] > 1000 and plan["pixels"] > 2e9


@pytest.mark.parametrize("args,msg", [
    (["--region", "atlantis", "--year", 2018], "unknown region 'atlantis'"),
    (["--region", "demo", "--year", 2015], "2017"),
    (["--region", "demo", "--year", 2018, "--s2-window", "13-01", "14-01"], "MM-DD"),
    (["--bbox", 93, 37, 94, 38, "--year", 2018, "--crs", "EPSG:4326", "--dry-run"],
     "--crs 'EPSG:4326' (WGS 84) is a geographic CRS in degrees"),
    (["--bbox", -122, 37, -121, 38, "--year", 2018, "--crs", "EPSG:2227", "--dry-run"],
     "--crs 'EPSG:2227' (NAD83 / California zone 3 (ftUS)) is a projected CRS in US survey "
     "foot, not metres"),
    (["--bbox", 93, 37, 94, 38, "--year", 2018, "--crs", "EPSG:4978", "--dry-run"],
     "--crs 'EPSG:4978' (WGS 84) is a geocentric"),
    (["--bbox", -179.5, 50, 179.5, 51, "--year", 2018, "--dry-run"],
     "spans 359 degrees of longitude"),
    (["--region", "demo", "--year", 2018, "--orbit", "ascending"],
     "--orbit ascending: local Sentinel-1 files (S1_<date>*.tif) do not record their orbit"),
    (["--region", "qilian", "--year", 2018, "--demo-seed", 7, "--dry-run"],
     "--demo-seed and --demo-size are for --region demo"),
])
def test_export_bad_input_one_line(tmp_path, args, msg):
    res = CliRunner().invoke(prep, ["export", *map(str, args), "--workspace", str(tmp_path)])
    assert res.exit_code != 0
    assert msg in res.output and "Traceback" not in res.output
    assert len(res.output.strip().splitlines()) == 1


def test_a_region_file_crossing_the_antimeridian_is_refused_like_a_bbox(tmp_path):
    """A polygon over the antimeridian, as GeoJSON writers split it (RFC 7946: one part on
    each side), once planned a world-wide grid of 795,223 cells."""
    import geopandas as gpd
    from shapely.geometry import MultiPolygon, box

    f = tmp_path / "aleutians.geojson"
    gpd.GeoDataFrame(geometry=[MultiPolygon([box(179, 51, 180, 52), box(-180, 51, -179, 52)])],
                     crs="EPSG:4326").to_file(f)
    res = CliRunner().invoke(prep, ["export", "--region-file", str(f), "--year", "2018",
                                    "--dry-run", "--workspace", str(tmp_path)])
    assert res.exit_code == 1, res.output
    assert res.output.strip().splitlines() == [
        "Error: aleutians.geojson: spans 360 degrees of longitude (-180 to 180), more than "
        "180: a region crossing the antimeridian (180 degrees) is refused, as --bbox refuses "
        "it; export one region on each side of it"]


def test_workspace_that_is_a_file(tmp_path):
    f = tmp_path / "ws"
    f.write_text("")
    res = CliRunner().invoke(prep, ["tile", "--workspace", str(f)])
    assert res.exit_code != 0 and "is a file" in res.output


def test_tile_before_export_names_the_command(tmp_path):
    res = CliRunner().invoke(prep, ["tile", "--workspace", str(tmp_path)])
    assert res.exit_code != 0 and "prep export" in res.output


def test_foreign_manifest(tmp_path):
    d = tmp_path / "exports" / "x-2018"
    d.mkdir(parents=True)
    (d / "export.json").write_text(json.dumps({"format_version": 99, "kind": "export"}))
    res = CliRunner().invoke(prep, ["tile", "--export", str(d), "--workspace", str(tmp_path)])
    assert res.exit_code != 0 and "format_version 99" in res.output


def test_every_option_documented():
    for name, cmd in prep.commands.items():
        for p in cmd.params:
            if p.name != "help":
                assert p.help, f"prep {name} {p.name} has no help"


def test_dry_run_without_outlines_says_it_is_an_upper_bound(tmp_path, cli):
    res = cli(prep, ["export", "--region", "qilian", "--year", 2018, "--dry-run",
                     "--workspace", tmp_path])
    assert "GLIMS" in res.output and "upper bound" in res.output
    assert not list(tmp_path.iterdir())  # a dry run writes nothing


def test_demo_sources_are_made_only_when_needed_and_said_so(demo_export, tmp_path, cli):
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(demo_export[0], ws, ignore=shutil.ignore_patterns("tiles", "runs",
                                                                      "predictions"))
    args = ["export", "--region", "demo", "--year", 2018, "--demo-size", 512, "--cell-size",
            256, "--workspace", ws, "--quiet"]
    res = cli(prep, args)
    assert res.output.startswith("using SYNTHETIC demo sources") and "nothing to do" in res.output
    shutil.rmtree(ws / "sources")
    res = cli(prep, args)  # complete export, sources gone: they are not made again
    assert "generating" not in res.output and "are not needed" in res.output
    assert not (ws / "sources").exists() or not list((ws / "sources").iterdir())
    res = cli(prep, args[:4] + ["2021"] + args[5:])  # a new year: made, and said so
    assert res.output.startswith("generating SYNTHETIC demo sources")


def test_a_damaged_cell_of_a_complete_export_is_made_again(demo_export, tmp_path, cli):
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(demo_export[0], ws, ignore=shutil.ignore_patterns("tiles", "runs",
                                                                      "predictions"))
    exp = ws / "exports" / "demo-2018"
    victim = sorted((exp / "stack").glob("*.tif"))[0]
    good = victim.read_bytes()
    victim.write_bytes(good[:200])  # truncated by a disk error
    res = CliRunner().invoke(prep, ["tile", "--export", str(exp), "--workspace", str(ws)])
    assert res.exit_code == 1 and "rerun `prep export` with the same options" in res.output
    res = cli(prep, ["export", "--region", "demo", "--year", 2018, "--demo-size", 512,
                     "--cell-size", 256, "--workspace", ws, "--quiet"])
    assert "1 cell(s) missing, unreadable or off their grid" in res.output
    with rasterio.open(victim) as a, rasterio.open(demo_export[1] / "stack" / victim.name) as b:
        assert np.array_equal(a.read(), b.read(), equal_nan=True)
    assert json.loads((exp / "export.json").read_text())["complete"]
    assert "nothing to do" in cli(prep, ["export", "--region", "demo", "--year", 2018,
                                         "--demo-size", 512, "--cell-size", 256,
                                         "--workspace", ws, "--quiet"]).output


def test_a_cell_in_another_crs_is_made_again(demo_export, tmp_path, cli):
    """A stack cell in the wrong CRS was detected by `prep tile` while `prep export` said
    'complete; nothing to do'."""
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(demo_export[0], ws, ignore=shutil.ignore_patterns("tiles", "runs",
                                                                      "predictions"))
    exp = ws / "exports" / "demo-2018"
    victim = sorted((exp / "stack").glob("*.tif"))[1]
    with rasterio.open(victim) as src:
        profile, data, names = src.profile, src.read(), src.descriptions
    victim.unlink()
    with rasterio.open(victim, "w", **dict(profile, crs="EPSG:32646")) as dst:
        dst.write(data)
        dst.descriptions = names
    res = CliRunner().invoke(prep, ["tile", "--export", str(exp), "--workspace", str(ws)])
    assert res.exit_code == 1 and "is in EPSG:32646" in res.output
    assert "rerun `prep export` with the same options" in res.output
    args = ["export", "--region", "demo", "--year", 2018, "--demo-size", 512, "--cell-size",
            256, "--workspace", ws, "--quiet"]
    res = cli(prep, args)
    assert f"1 cell(s) missing, unreadable or off their grid ({victim.stem})" in res.output
    with rasterio.open(victim) as a, rasterio.open(demo_export[1] / "stack" / victim.name) as b:
        assert a.crs == b.crs and a.transform == b.transform
        assert np.array_equal(a.read(), b.read(), equal_nan=True)
    assert "nothing to do" in cli(prep, args).output


def test_partial_files_left_by_a_kill_are_cleaned_by_the_next_run(demo_export, tmp_path, cli):
    import shutil

    ws = tmp_path / "ws"
    shutil.copytree(demo_export[0], ws, ignore=shutil.ignore_patterns("tiles", "runs",
                                                                      "predictions"))
    exp = ws / "exports" / "demo-2018"
    left = [exp / "stack" / ".r000c001.31337.partial.tif", exp / ".export.31337.partial.json"]
    for p in left:
        p.write_bytes(b"half a file")
    res = cli(prep, ["export", "--region", "demo", "--year", 2018, "--demo-size", 512,
                     "--cell-size", 256, "--workspace", ws, "--quiet"])
    assert f"removed 2 unfinished file(s) an interrupted run left in {exp}" in res.output
    assert "nothing to do" in res.output and not any(p.exists() for p in left)


def test_outlines_layer_chooses_among_several(tmp_path, cli):
    import geopandas as gpd
    from shapely.geometry import Point, box

    from gee_export.common.vectors import write_gpkg_layers
    from gee_export.demo.scene import demo_region

    g = demo_region(512).grid
    x, y = g.x0 + 1000, g.y0 - 1000
    inv = tmp_path / "inventory.gpkg"
    write_gpkg_layers({"a": gpd.GeoDataFrame(geometry=[box(x, y - 500, x + 500, y)], crs=g.crs),
                       "b": gpd.GeoDataFrame(geometry=[box(x, y - 500, x + 500, y), Point(x, y)],
                                             crs=g.crs)}, inv)
    args = ["export", "--region", "demo", "--year", "2018", "--demo-size", "512", "--dry-run",
            "--workspace", str(tmp_path), "--outlines", str(inv)]
    res = CliRunner().invoke(prep, args)
    assert res.exit_code == 1 and res.output.strip().splitlines() == [
        f"Error: outlines {inv} hold 2 layers (a (Polygon), b (Unknown)); name the one with "
        "the glacier polygons with --outlines-layer"]
    res = cli(prep, args + ["--outlines-layer", "b"])
    assert '"outlines": "inventory.gpkg buffered by 1000 m"' in res.output
    assert f"ignored 1 point(s) in {inv} (layer b): only polygons are glaciers" in res.output
    res = CliRunner().invoke(prep, args + ["--outlines-layer", "c"])
    assert res.exit_code == 1 and "--outlines-layer 'c': outlines" in res.output


def test_a_grid_stretched_far_from_its_meridian_says_so(cli):
    """UTM's scale at an edge, against the spherical closed form k0 / sqrt(1 - (cos lat sin
    dlon)^2): Qilian's west edge lies 5.6 degrees from EPSG:32647's meridian (0.26 %); a
    region within 3 degrees of its own zone's meridian says nothing."""
    import math

    from gee_export.common.grid import region_from_lonlat, scale_warning
    from gee_export.regions import QILIAN

    line = scale_warning(QILIAN)
    k = 0.9996 / math.sqrt(1 - (math.cos(math.radians(37.3)) * math.sin(math.radians(5.6))) ** 2)
    assert f"{100 * (k - 1):.2f} %" in line and "5.6 degrees" in line and "west" in line
    assert scale_warning(region_from_lonlat("near", (96.5, 30, 101.5, 31))) is None
    far = scale_warning(region_from_lonlat("far", (103, 30, 104, 31), "EPSG:32647"))
    assert "east edge lies 5.0 degrees" in far
    res = cli(prep, ["export", "--region", "qilian", "--year", 2018, "--dry-run"])
    assert res.output.startswith("warning: region qilian: its west edge lies 5.6 degrees")



def test_another_demo_seed_is_another_region_with_its_own_truth(tmp_path, cli):
    """--demo-seed 7 makes region demo-s7: its own sources and export beside the default
    scene's, whose glaciers and true areas are the seed's own."""
    from gee_export.demo.scene import DemoScene

    cli(prep, ["export", "--region", "demo", "--demo-seed", 7, "--demo-size", 512, "--year",
               2019, "--workspace", tmp_path, "--quiet"])
    exp = json.loads((tmp_path / "exports" / "demo-s7-2019" / "export.json").read_text())
    assert exp["region"]["name"] == "demo-s7"
    assert (tmp_path / "sources" / "demo512-s7-2019").is_dir()
    truth = exp["synthetic_truth"]["glacier_area_km2"]
    assert truth == DemoScene(7, 512).glacier_area_km2(2019)
    assert truth != DemoScene(size=512).glacier_area_km2(2019)
