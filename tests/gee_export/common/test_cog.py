"""Cloud-optimized GeoTIFFs: every raster writer leaves a file rio-cogeo accepts, with
overviews made the right way for its values, and the same pixels and metadata as before."""
from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine
from rio_cogeo.cogeo import cog_validate

from gee_export.common.cog import copy_as_cog, overview_factors, uncompressed, working_path
from gee_export.common.grid import Cell, ExportGrid
from gee_export.common.rasters import geotiff_profile, write_geotiff

T = Affine(10, 0, 385000, 0, -10, 4352000)


def _valid(path) -> None:
    ok, errors, warnings = cog_validate(str(path), quiet=True)
    assert ok and not errors and not warnings, (errors, warnings)


def test_overview_factors_halve_until_one_block():
    assert overview_factors(256, 256, 256) == []
    assert overview_factors(257, 10, 256) == [2]
    assert overview_factors(1000, 900, 256) == [2, 4]
    assert overview_factors(40000, 100, 256) == [2, 4, 8, 16, 32, 64, 128, 256]


def test_large_raster_is_a_cog_with_average_overviews_and_its_metadata(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.random((3, 700, 900), dtype=np.float32)
    data[:, :100, :100] = np.nan
    path = tmp_path / "cell.tif"
    write_geotiff(path, data, geotiff_profile(900, 700, 3, "float32", "EPSG:32647", T, np.nan),
                  ("a", "b", "c"), {"INFO": "x" * 3000})
    _valid(path)
    with rasterio.open(path) as f:
        assert f.overviews(1) == [2, 4]
        assert f.descriptions == ("a", "b", "c") and f.tags()["INFO"] == "x" * 3000
        assert f.profile["interleave"] == "band" and f.compression.name.lower() == "zstd"
        np.testing.assert_array_equal(f.read(), data)
        over = f.read(1, out_shape=(350, 450))  # the first overview
    # average of each 2x2 block, ignoring no data (NaN stays NaN only where all four are)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning, match="empty slice"):
        want = np.nanmean(data[0].reshape(350, 2, 450, 2), axis=(1, 3))
    np.testing.assert_allclose(over, want, rtol=1e-6)
    assert not list(tmp_path.glob(".*")), "the working copy is removed"


def test_class_cells_get_nearest_overviews(tmp_path):
    """dem_source (1 HMA, 2 SRTM) is a class map: an overview never invents 1.5."""
    from gee_export.stack import write_cell_tif

    grid = ExportGrid("EPSG:32647", 385000.0, 4352000.0, 600, 600)
    cell = Cell(0, 0, 0, 0, 600, 600)
    data = np.ones((1, 600, 600), np.float32)
    data[:, :, 1::2] = 2  # alternating columns: any averaging gives 1.5
    path = tmp_path / "dem_source.tif"
    write_cell_tif(path, grid, cell, data, names=("dem_source",))
    _valid(path)
    with rasterio.open(path) as f:
        assert f.overviews(1) == [2, 4]
        assert set(np.unique(f.read(1, out_shape=(300, 300)))) <= {1.0, 2.0}


def test_tiles_are_cogs_without_overviews(tmp_path):
    """512 px training tiles: read whole by the loader, so no overviews, header first."""
    data = np.zeros((1, 512, 512), np.uint8)
    path = tmp_path / "label.tif"
    write_geotiff(path, data, geotiff_profile(512, 512, 1, "uint8", "EPSG:32647", T, 255),
                  ("glacier",), resampling=None)
    _valid(path)
    with rasterio.open(path) as f:
        assert f.overviews(1) == [] and f.block_shapes[0] == (256, 256)


def test_copy_as_cog_of_a_working_copy(tmp_path):
    """What train predict does with its uncompressed working copy."""
    raw = tmp_path / "raw.tif"
    data = np.linspace(0, 1, 600 * 800, dtype=np.float32).reshape(1, 600, 800)
    profile = geotiff_profile(800, 600, 1, "float32", "EPSG:32647", T, np.nan)
    with rasterio.open(raw, "w", **uncompressed(profile)) as f:
        f.write(data)
    copy_as_cog(raw, tmp_path / "probability.tif", profile, "average", ["glacier_probability"])
    _valid(tmp_path / "probability.tif")
    with rasterio.open(tmp_path / "probability.tif") as f:
        assert f.descriptions == ("glacier_probability",) and f.overviews(1) == [2, 4]
        np.testing.assert_array_equal(f.read(), data)
        over = f.read(1, out_shape=(300, 400))
    np.testing.assert_allclose(over, data[0].reshape(300, 2, 400, 2).mean(axis=(1, 3)), rtol=1e-6)


def test_bad_resampling_is_refused(tmp_path):
    with pytest.raises(ValueError, match="average, nearest"):
        copy_as_cog(tmp_path / "x.tif", tmp_path / "y.tif", {}, "bilinear")


def test_working_path_is_a_partial_name(tmp_path):
    from gee_export.common.atomic import is_partial

    assert is_partial(working_path(tmp_path / "probability.tif"))
