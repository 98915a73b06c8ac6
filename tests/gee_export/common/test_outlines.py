"""Outline files of several layers, and features that are no polygon."""
from __future__ import annotations

import warnings

import geopandas as gpd
import pytest
from shapely.geometry import LineString, Point, box

from gee_export.common.errors import InputError
from gee_export.common.outlines import read_outlines
from gee_export.common.vectors import write_gpkg_layers

CRS = "EPSG:32647"
X, Y = 400_000.0, 4_300_000.0


def frame(geoms, **cols):
    return gpd.GeoDataFrame({"glac_id": [f"G{i}" for i in range(len(geoms))], **cols},
                            geometry=geoms, crs=CRS)


def read_quietly(*args, **kw):
    """read_outlines, failing on any warning (pyogrio's 'More than one layer found')."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return read_outlines(*args, **kw)


@pytest.fixture
def several(tmp_path):
    """A GeoPackage whose first layer holds points; two polygon layers follow."""
    path = tmp_path / "inventory.gpkg"
    write_gpkg_layers({"stations": frame([Point(X, Y)]),
                       "rgi6": frame([box(X, Y, X + 500, Y + 500)]),
                       "rgi7": frame([box(X, Y, X + 400, Y + 400), box(X + 600, Y, X + 900, Y + 300)])},
                      path)
    return path


def test_several_polygon_layers_are_refused_naming_them(several):
    with pytest.raises(InputError) as e:
        read_quietly(several, CRS)
    assert str(e.value) == (f"outlines {several} hold 3 layers (stations (Point), rgi6 "
                            "(Polygon), rgi7 (Polygon)); name the one with the glacier polygons "
                            "with --outlines-layer")
    assert len(read_quietly(several, CRS, layer="rgi7")) == 2
    assert read_quietly(several, CRS, layer="rgi6").layer == "rgi6"
    with pytest.raises(InputError, match=r"--outlines-layer 'rgi8': outlines .* have no such "
                                         r"layer \(layers: stations \(Point\), rgi6"):
        read_quietly(several, CRS, layer="rgi8")


def test_the_only_polygon_layer_is_read_without_a_warning(tmp_path):
    """Once pyogrio read the first layer (points), warned, and said 'holds no polygon'."""
    path = tmp_path / "two.gpkg"
    write_gpkg_layers({"stations": frame([Point(X, Y)]),
                       "outlines": frame([box(X, Y, X + 500, Y + 500)])}, path)
    o = read_quietly(path, CRS)
    assert o.layer == "outlines" and o.ids == ["G0"] and not o.ignored


def test_our_own_glaciers_layer_is_the_default(tmp_path):
    """glaciers.gpkg of `train predict`: layers glaciers and by_glacier, glaciers first."""
    path = tmp_path / "glaciers.gpkg"
    write_gpkg_layers({"glaciers": frame([box(X, Y, X + 500, Y + 500)]),
                       "by_glacier": frame([box(X, Y, X + 100, Y + 100)] * 3)}, path)
    import pyogrio

    assert [n for n, _ in pyogrio.list_layers(path)][0] == "glaciers"  # what readers get
    assert len(read_quietly(path, CRS)) == 1


def test_points_and_lines_are_counted_not_dropped_silently(tmp_path):
    path = tmp_path / "mixed.gpkg"
    frame([box(X, Y, X + 500, Y + 500), Point(X, Y), Point(X + 9, Y), LineString([(X, Y),
                                                                              (X + 5, Y)])]
          ).to_file(path)
    o = read_quietly(path, CRS)
    assert len(o) == 1 and o.ignored == {"point(s)": 2, "line(s)": 1}
    assert o.notes() == [f"ignored 2 point(s), 1 line(s) in {path}: only polygons are glaciers"]
    only_points = tmp_path / "points.gpkg"
    frame([Point(X, Y), Point(X + 9, Y)]).to_file(only_points)
    with pytest.raises(InputError, match=r"holds no polygon \(2 point\(s\)\)"):
        read_quietly(only_points, CRS)
