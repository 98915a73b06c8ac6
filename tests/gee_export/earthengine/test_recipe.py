"""The recipe's graphs where executing them on the demo cannot reach: dates of other years,
the L1C option, the computePixels grid; and every graph only uses functions and arguments of
the function catalogue the client ships (what the server would accept). What the graphs
compute is tested by executing them (test_equivalence)."""
from __future__ import annotations

import geopandas as gpd
import pytest
from shapely.geometry import box

from gee_export.common.grid import Cell, iter_cells
from gee_export.config import Normalization, RecipeConfig
from gee_export.earthengine import recipe as R
from gee_export.regions import QILIAN
from tests.gee_export.earthengine.ee_double import calls, graph


@pytest.fixture
def aoi(ee_offline):
    return R.grid_rectangle(QILIAN.grid)


def test_s1_window_widens_after_sentinel_1b(aoi):
    for year, window in ((2019, ("2019-07-01", "2019-08-01")),
                         (2023, ("2023-06-15", "2023-08-16"))):
        tree = graph(R.s1_collection(aoi, RecipeConfig(year=year)))
        got = calls(tree, "Filter.dateRangeContains")[0].args["leftValue"].args
        assert (got["start"], got["end"]) == window


def test_l1c_option_uses_top_of_atmosphere_collection_and_no_scl(aoi):
    cfg = RecipeConfig(year=2018, s2_level="l1c")
    tree = graph(R.s2_scenes(aoi, cfg))
    assert calls(tree, "ImageCollection.load")[0].args["id"] == "COPERNICUS/S2_HARMONIZED"
    import ee

    assert not calls(graph(R.s2_keep(ee.Image("x"), cfg)), "Image.eq")  # no SCL term


def test_cell_grid_matches_cell_transform():
    grid = QILIAN.grid
    cell = list(iter_cells(grid, 768))[5]
    g = R.cell_grid(grid, cell)
    t = g["affineTransform"]
    assert g["crsCode"] == "EPSG:32647"
    assert (t["translateX"], t["translateY"]) == (grid.x0 + cell.col_off * 10,
                                                 grid.y0 - cell.row_off * 10)
    assert (t["scaleX"], t["scaleY"]) == (10.0, -10.0)
    assert g["dimensions"] == {"width": cell.width, "height": cell.height}


def _all_graphs(aoi):
    import ee

    cfg = RecipeConfig(year=2018)
    physical = R.physical_stack(aoi, cfg, "users/me/hma", -31.7)
    grid, cell = QILIAN.grid, Cell(0, 0, 0, 0, 256, 256)
    outlines = R.outlines_collection([box(grid.x0, grid.y0 - 900, grid.x0 + 900, grid.y0)],
                                     grid.crs)
    return [R.export_image(physical, Normalization.fixed(), R.qa_counts(aoi, cfg)),
            R.dem_offset_histogram("users/me/hma", grid, cell, grid, outlines),
            R.band_histograms(physical, grid, cell, {"VV": (-47.5, 22.5)}, 16),
            R.page(R.glims_outlines(aoi), 0, 10), R.inventory_sizes(aoi, cfg),
            R.page(R.footprints(R.s2_collection(aoi, cfg)), 0, 10),
            R.dem_source("users/me/hma"),
            R.export_task(physical, grid, cell, "gcs", "x", "p", bucket="b").config[
                "expression"], ee.Image(0)]


def test_every_graph_uses_only_the_catalogues_functions_and_arguments(aoi):
    import ee.apitestcase

    catalogue = ee.apitestcase.GetAlgorithms()
    seen = set()
    for obj in _all_graphs(aoi):
        stack = [graph(obj)]
        while stack:
            n = stack.pop()
            if hasattr(n, "name") and hasattr(n, "args"):
                if not n.name.startswith("<"):
                    assert n.name in catalogue, n.name
                    known = {a["name"] for a in catalogue[n.name]["args"]}
                    assert set(n.args) <= known, (n.name, set(n.args) - known)
                    seen.add(n.name)
                stack.extend(n.args.values())
            elif isinstance(n, (list, tuple)):
                stack.extend(n)
            elif isinstance(n, dict):
                stack.extend(n.values())
    assert len(seen) > 40


def test_glims_one_analysis_per_glacier_nearest_the_year():
    f = gpd.GeoDataFrame({"glac_id": ["G1", "G1", "G2", "G3"], "anlys_id": [1, 2, 3, 4],
                          "line_type": "glac_bound",
                          "src_date": ["2001-08-01", "2016-09-10", "1999-01-01", None],
                          "db_area": [1.0, 0.9, 2.0, 0.1]},
                         geometry=[box(0, 0, 1, 1)] * 4, crs="EPSG:4326")
    out = R.glims_glaciers(f, 2018).set_index("glac_id")
    assert out.loc["G1", "src_date"] == "2016-09-10"
    assert set(out.index) == {"G1", "G2", "G3"}
